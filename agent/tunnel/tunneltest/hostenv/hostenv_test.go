package hostenv

import (
	"os"
	"slices"
	"testing"
)

func TestClearAndWithoutProxies(t *testing.T) {
	for _, k := range []string{"https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"} {
		t.Setenv(k, "http://127.0.0.1:9")
	}
	t.Setenv("PROXY_KEEP", "1")
	env := []string{"HTTPS_PROXY=x", "no_proxy=y", "All_Proxy=z", "PATH=/bin", "https_proxy_note=keep"}
	if got, want := WithoutProxies(env), []string{"PATH=/bin", "https_proxy_note=keep"}; !slices.Equal(got, want) {
		t.Errorf("WithoutProxies = %q, want %q", got, want)
	}
	Clear()
	for _, kv := range os.Environ() {
		if len(WithoutProxies([]string{kv})) == 0 {
			t.Errorf("%s is still set after Clear", kv)
		}
	}
	if os.Getenv("PROXY_KEEP") != "1" {
		t.Error("Clear unset PROXY_KEEP")
	}
}
