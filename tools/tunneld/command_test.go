package tunneld

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
)

func TestHelpExplainsEveryFlag(t *testing.T) {
	var buf bytes.Buffer
	if _, err := ParseFlags([]string{"--help"}, &buf); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("ParseFlags(--help) = %v, want flag.ErrHelp", err)
	}
	help := buf.String()
	for _, f := range []string{"listen", "tls-cert", "tls-key", "data-dir", "region", "mqtt-broker", "mqtt-ca", "mqtt-cert",
		"mqtt-key", "mqtt-client-id", "print-addr", "bandwidth", "max-open-tunnels", "allow-unsigned", "credentials", "v"} {
		if !strings.Contains(help, "  -"+f+" ") && !strings.Contains(help, "  -"+f+"\n") && !strings.Contains(help, "  -"+f+"\t") {
			t.Errorf("--help does not explain -%s", f)
		}
	}
	for _, s := range []string{"Exit codes", "--endpoint-url", "$aws/things/<thing>/tunnels/notify",
		fmt.Sprintf("at least 1 (default %d)", DefaultMaxOpenTunnels)} {
		if !strings.Contains(help, s) {
			t.Errorf("--help does not mention %q", s)
		}
	}
}

func TestParseFlagsErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--tls-cert", "c.pem"},
		{"--mqtt-ca", "ca.pem"},
		{"extra"},
		{"--no-such-flag"},
	} {
		if _, err := ParseFlags(args, io.Discard); err == nil {
			t.Errorf("ParseFlags(%q) succeeded, want a usage error", args)
		}
	}
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"--max-open-tunnels", "-1"}, "-max-open-tunnels"},
		{[]string{"--max-open-tunnels", "0"}, "-max-open-tunnels"}, // not a silent 100
		{[]string{"--bandwidth", "-5"}, "-bandwidth"},
	} {
		var stderr strings.Builder
		_, err := ParseFlags(tc.args, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("ParseFlags(%q) = %v, want a usage error naming %s", tc.args, err, tc.flag)
		}
		if !strings.Contains(stderr.String(), tc.flag) || !strings.Contains(stderr.String(), "Usage:") {
			t.Errorf("ParseFlags(%q) printed %q, want the error naming %s and the usage", tc.args, stderr.String(), tc.flag)
		}
	}
	for _, cfg := range []Config{{MaxOpenTunnels: -1}, {Bandwidth: -5}} {
		if s, err := New(cfg); err == nil {
			s.Close()
			t.Errorf("New(%+v) succeeded, want an error", cfg)
		}
	}
	o, err := ParseFlags([]string{"--listen", "127.0.0.1:0", "--region", "eu-west-1", "--bandwidth", "1000", "--max-open-tunnels", "1"}, io.Discard)
	if err != nil || o.Listen != "127.0.0.1:0" || o.Region != "eu-west-1" || o.Bandwidth != 1000 || o.MaxTunnels != 1 {
		t.Errorf("ParseFlags = %+v, %v", o, err)
	}
	if o, err := ParseFlags(nil, io.Discard); err != nil || o.MaxTunnels != DefaultMaxOpenTunnels {
		t.Errorf("ParseFlags() = %+v, %v; want --max-open-tunnels %d", o, err, DefaultMaxOpenTunnels)
	}
}

// pipeWriter hides the pipe's other methods from Run.
type pipeWriter struct{ w *io.PipeWriter }

func (p pipeWriter) Write(b []byte) (int, error) { return p.w.Write(b) }

func TestRunPrintsAddrAndServesTLS(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	cert, key := pki.Server(t, "tunneld")
	o, err := ParseFlags([]string{"--listen", "127.0.0.1:0", "--print-addr", "--tls-cert", cert, "--tls-key", key,
		"--data-dir", t.TempDir(), "--allow-unsigned"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, o, pipeWriter{pw}, tlogWriter{t})
		pw.Close()
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v after cancel, want nil", err)
		}
	}()
	addrc := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(pr).ReadString('\n')
		addrc <- strings.TrimSpace(line)
		io.Copy(io.Discard, pr)
	}()
	var addr string
	select {
	case addr = <-addrc:
	case <-time.After(10 * time.Second):
		t.Fatal("no address printed")
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientTLS(t)}}
	req, _ := http.NewRequest("POST", "https://"+addr+"/", strings.NewReader(`{}`))
	req.Header.Set("X-Amz-Target", "IoTSecuredTunneling.ListTunnels")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	client.CloseIdleConnections()
	if resp.StatusCode != 200 || resp.Proto != "HTTP/1.1" {
		t.Errorf("ListTunnels over HTTPS: %d %s, want 200 over HTTP/1.1", resp.StatusCode, resp.Proto)
	}
}

func TestReadCredentials(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := dir + "/creds"
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := readCredentials(write("# lab\nAKID1 secret1\n\n  AKID2\tsecret2  \n"))
	if err != nil || len(got) != 2 || got["AKID1"] != "secret1" || got["AKID2"] != "secret2" {
		t.Errorf("readCredentials = %v, %v", got, err)
	}
	for _, body := range []string{"", "# only a comment\n", "AKID1\n", "AKID1 SECRETVALUE extra\n"} {
		if _, err := readCredentials(write(body)); err == nil {
			t.Errorf("readCredentials(%q) succeeded, want an error", body)
		} else if strings.Contains(err.Error(), "SECRETVALUE") {
			t.Errorf("readCredentials error %q quotes the file", err)
		}
	}
}
