package lab

import (
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

// An operator behind a corporate proxy has https_proxy in the shell that runs
// `make lab`, and a no_proxy without 127.0.0.1. The lab is all on loopback,
// which that proxy cannot reach: the agent (a child process), the source side
// and the console (in process) go direct, and the printed command lines carry
// a no_proxy that makes porthole connect go direct too.
func TestLabBypassesOperatorProxy(t *testing.T) {
	for _, k := range []string{"https_proxy", "HTTPS_PROXY"} {
		t.Setenv(k, "http://proxy.corp.example:3128")
	}
	t.Setenv("no_proxy", "")
	t.Setenv("NO_PROXY", ".corp.example")
	t.Setenv("PORTHOLE_LAB_TEST", "kept")
	const tdHost = "127.0.0.1:8443"
	target := &url.URL{Scheme: "wss", Host: tdHost}

	cmd := agentCommand("porthole", "porthole.toml")
	if cmd.Env == nil {
		t.Error("the agent inherits the lab's environment, https_proxy and all")
	}
	for _, kv := range cmd.Env {
		if k, _, _ := strings.Cut(kv, "="); strings.EqualFold(k, "https_proxy") {
			t.Errorf("the agent's environment has %s", kv)
		}
	}
	if !slices.Contains(cmd.Env, "PORTHOLE_LAB_TEST=kept") {
		t.Errorf("the agent's environment lost the rest of the lab's")
	}

	tok, _ := tunnel.NewAccessToken("t")
	for name, proxy := range map[string]func(*url.URL) (*url.URL, error){
		"source side": sourceConfig(tdHost, tok, "", nil).Proxy,
		"console":     consoleConfig(nil, Info{}, nil, tdHost, nil).Proxy,
	} {
		if proxy == nil {
			t.Errorf("%s: Proxy is nil, which means https_proxy", name)
		} else if u, err := proxy(target); u != nil || err != nil {
			t.Errorf("%s: Proxy(%s) = %v, %v; want direct", name, target, u, err)
		}
	}

	line := connectCommand("/bin/porthole", tdHost, "/lab/ca.pem", 2223)
	prefix, rest, _ := strings.Cut(line, " ")
	v, ok := strings.CutPrefix(prefix, "no_proxy=")
	if !ok || !strings.HasPrefix(rest, "/bin/porthole connect ") {
		t.Fatalf("connect line %q; want it to start with no_proxy=", line)
	}
	t.Setenv("no_proxy", v)
	if u, err := tunnel.EnvironmentProxy(tdHost, "", false); u != nil || err != nil {
		t.Errorf("with the printed line's no_proxy=%s porthole connect uses the proxy %v, %v", v, u, err)
	}

	// Without a proxy in the environment the line is as it was.
	t.Setenv("https_proxy", "")
	t.Setenv("HTTPS_PROXY", "")
	if got := connectCommand("/bin/porthole", tdHost, "/lab/ca.pem", 2223); !strings.HasPrefix(got, "/bin/porthole connect ") {
		t.Errorf("connect line without a proxy: %q", got)
	}
}
