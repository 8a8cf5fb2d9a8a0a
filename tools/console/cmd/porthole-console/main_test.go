package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// The TLS flags go together, and a certificate or key that cannot be read or
// does not match is a usage error that names the flags, before anything listens.
func TestTLSFlags(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", missing}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-key", missing}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-cert", missing, "--tls-key", missing}, "--tls-cert/--tls-key: open " + missing},
	} {
		var out, errs bytes.Buffer
		args := append([]string{"--listen", "127.0.0.1:0", "--host-keys", filepath.Join(dir, "hk.json")}, tc.args...)
		if code := run(args, &out, &errs); code != 1 || !strings.Contains(errs.String(), tc.want) {
			t.Errorf("run %q = %d, %q; want 1 and %q", tc.args, code, errs.String(), tc.want)
		}
	}
}

// A word before the flags is refused: flag stops parsing at it, and the flags
// after it would be ignored.
func TestStrayArgument(t *testing.T) {
	var out, errs bytes.Buffer
	if code := run([]string{"serve", "--listen", "0.0.0.0:1"}, &out, &errs); code != 1 || !strings.Contains(errs.String(), `unexpected argument "serve"`) {
		t.Errorf("run serve --listen … = %d, %q; want 1 and the word named", code, errs.String())
	}
}
