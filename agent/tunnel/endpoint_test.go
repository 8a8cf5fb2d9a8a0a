package tunnel

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

func TestTunnelURL(t *testing.T) {
	for _, tc := range []struct {
		endpoint, region string
		mode             Mode
		insecure         bool
		want             string // or "error: substring"
	}{
		{"", "us-east-1", ModeDestination, false, "wss://data.tunneling.iot.us-east-1.amazonaws.com:443/tunnel?local-proxy-mode=destination"},
		{"", "cn-north-1", ModeSource, false, "wss://data.tunneling.iot.cn-north-1.amazonaws.com.cn:443/tunnel?local-proxy-mode=source"},
		{"", "cn-northwest-1", ModeSource, false, "wss://data.tunneling.iot.cn-northwest-1.amazonaws.com.cn:443/tunnel?local-proxy-mode=source"},
		{"Tunnel.Example.COM", "", ModeSource, false, "wss://tunnel.example.com:443/tunnel?local-proxy-mode=source"},
		{"127.0.0.1:8443", "us-east-1", ModeSource, false, "wss://127.0.0.1:8443/tunnel?local-proxy-mode=source"},
		{"[::1]:8443", "", ModeSource, false, "wss://[::1]:8443/tunnel?local-proxy-mode=source"},
		{"wss://h.example:9", "", ModeSource, false, "wss://h.example:9/tunnel?local-proxy-mode=source"},
		{"https://h.example", "", ModeSource, false, "wss://h.example:443/tunnel?local-proxy-mode=source"},
		{"ws://127.0.0.1:80", "", ModeSource, true, "ws://127.0.0.1:80/tunnel?local-proxy-mode=source"},
		{"ws://127.0.0.1:80", "", ModeSource, false, "error: explicit insecure"},
		{"ftp://h", "", ModeSource, false, "error: scheme"},
		{"wss://h/x", "", ModeSource, false, "error: path"},
		{"wss://u:p@h", "", ModeSource, false, "error: user name or password"},
		{"h_bad", "", ModeSource, false, "error: not a valid"},
		{"wss://h.example:84433", "", ModeSource, false, "error: port \"84433\" is not a number from 1 to 65535"},
		{"h.example:0", "", ModeSource, false, "error: port \"0\""},
		{"wss://h.example:", "", ModeSource, false, "error: port \"\""},
		{"[::1]:65536", "", ModeSource, false, "error: port \"65536\""},
		{"[0]:1", "", ModeSource, false, "error: not a valid host[:port]"},
		{"[127.0.0.1]:443", "", ModeSource, false, "error: not a valid host[:port]"},
		{"", "US_EAST", ModeSource, false, "error: region"},
		{"", "", ModeSource, false, "error: neither"},
		{"h", "", "both", false, "error: mode"},
	} {
		u, err := tunnelURL(tc.endpoint, tc.region, tc.mode, tc.insecure)
		if want, ok := strings.CutPrefix(tc.want, "error: "); ok {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("tunnelURL(%q, %q) = %v, %v; want error %q", tc.endpoint, tc.region, u, err, want)
			}
			continue
		}
		if err != nil || u.String() != tc.want {
			t.Errorf("tunnelURL(%q, %q) = %v, %v; want %s", tc.endpoint, tc.region, u, err, tc.want)
		}
	}
}

func TestProxyFor(t *testing.T) {
	target, _ := url.Parse("wss://data.tunneling.iot.eu-west-1.amazonaws.com:443/tunnel")
	local, _ := url.Parse("wss://10.1.2.3:443/tunnel")
	// A link-local endpoint, tunnel.endpoint = "[fe80::1%br-lan]:443".
	zoned, _ := url.Parse("wss://[fe80::1%25br-lan]:443/tunnel")
	for _, tc := range []struct {
		name   string
		env    map[string]string
		target *url.URL
		want   string // "" = direct, "error: ..."
	}{
		{"none", nil, target, ""},
		{"upper", map[string]string{"HTTPS_PROXY": "http://proxy:8080"}, target, "http://proxy:8080"},
		{"lower wins", map[string]string{"HTTPS_PROXY": "http://a:1", "https_proxy": "http://b:2"}, target, "http://b:2"},
		{"no scheme, default port", map[string]string{"https_proxy": "proxy.corp"}, target, "http://proxy.corp:3128"},
		{"https proxy with auth", map[string]string{"https_proxy": "https://u%40x:p%3Aw@proxy:443"}, target, "https://u%40x:p%3Aw@proxy:443"},
		{"ipv6", map[string]string{"https_proxy": "http://[fd00::1]:3128"}, target, "http://[fd00::1]:3128"},
		{"bad scheme", map[string]string{"https_proxy": "socks5://p:1"}, target, "error: scheme"},
		{"port zero", map[string]string{"https_proxy": "http://p:0"}, target, "error: port: want 1-65535"},
		{"path", map[string]string{"https_proxy": "http://p:1/proxy.pac"}, target, "error: must be only"},
		{"query", map[string]string{"https_proxy": "http://p:1?x=1"}, target, "error: must be only"},
		{"no_proxy suffix", map[string]string{"https_proxy": "p:1", "NO_PROXY": ".amazonaws.com"}, target, ""},
		{"no_proxy bare domain", map[string]string{"https_proxy": "p:1", "no_proxy": "amazonaws.com"}, target, ""},
		{"no_proxy other", map[string]string{"https_proxy": "p:1", "no_proxy": "example.com,foo"}, target, "http://p:1"},
		{"no_proxy star-dot domain", map[string]string{"https_proxy": "p:1", "no_proxy": "*.amazonaws.com"}, target, ""},
		{"no_proxy star-dot other", map[string]string{"https_proxy": "p:1", "no_proxy": "*.example.com"}, target, "http://p:1"},
		// A name matches itself and its subdomains, not every name it ends:
		// "zonaws.com" is not amazonaws.com's.
		{"no_proxy partial name", map[string]string{"https_proxy": "p:1", "no_proxy": "zonaws.com,*.zonaws.com,.zonaws.com"}, target, "http://p:1"},
		{"no_proxy star", map[string]string{"https_proxy": "p:1", "no_proxy": "*"}, target, ""},
		{"no_proxy cidr", map[string]string{"https_proxy": "p:1", "no_proxy": "10.0.0.0/8"}, local, ""},
		{"no_proxy ip", map[string]string{"https_proxy": "p:1", "no_proxy": "10.1.2.3"}, local, ""},
		{"no_proxy port match", map[string]string{"https_proxy": "p:1", "no_proxy": "10.1.2.3:443"}, local, ""},
		{"no_proxy port mismatch", map[string]string{"https_proxy": "p:1", "no_proxy": "10.1.2.3:8443"}, local, "http://p:1"},
		{"no_proxy cidr, zoned endpoint", map[string]string{"https_proxy": "p:1", "no_proxy": "fe80::/10"}, zoned, ""},
		{"no_proxy ip, zoned endpoint", map[string]string{"https_proxy": "p:1", "no_proxy": "fe80::1"}, zoned, ""},
		{"no_proxy ip with the zone", map[string]string{"https_proxy": "p:1", "no_proxy": "fe80::1%br-lan"}, zoned, ""},
		{"no_proxy ip with another zone", map[string]string{"https_proxy": "p:1", "no_proxy": "fe80::1%eth0"}, zoned, "http://p:1"},
		{"no_proxy other cidr, zoned endpoint", map[string]string{"https_proxy": "p:1", "no_proxy": "fd00::/8"}, zoned, "http://p:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := proxyFor(tc.target, func(k string) string { return tc.env[k] })
			if want, ok := strings.CutPrefix(tc.want, "error: "); ok {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("proxyFor = %v, %v; want error %q", got, err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s := ""
			if got != nil {
				s = got.String()
			}
			if s != tc.want {
				t.Fatalf("proxyFor = %q, want %q", s, tc.want)
			}
		})
	}
}

// TestProxyErrorHidesPassword: a proxy URL that does not parse is refused
// without quoting any of it. A # / or ? in a password that is not
// percent-encoded ends the user info, and url.Parse's error then quotes what
// it took for the port: part of the password.
func TestProxyErrorHidesPassword(t *testing.T) {
	for _, raw := range []string{
		"http://user:s3cret@[::1",
		"http://admin:s3cr#etPass@proxy.example:3128",
		"http://admin:s3cret/x@proxy:3128",
		"admin:s3cret?@proxy",
		"admin:s3cret://x@proxy",          // url.Parse takes "admin" for the scheme
		"http://admin:99999/s3cret@proxy", // and here "99999" for the port
	} {
		_, err := proxyFor(&url.URL{Host: "h:443"}, func(k string) string {
			if k == "https_proxy" {
				return raw
			}
			return ""
		})
		if err == nil || strings.Contains(err.Error(), "s3c") || strings.Contains(err.Error(), "admin") || strings.Contains(err.Error(), "999") {
			t.Errorf("proxyFor with https_proxy %q: error = %v; want an error without the user name or password", raw, err)
		}
	}
}

// A proxy URL with white space around it or an IPv6 zone's % not written %25
// is refused with a hint at that, not at the user name and password it does
// not have; what was accepted before still is.
func TestProxyURLSyntaxHints(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{"http://proxy.corp:3128 ", "white space"},
		{" http://proxy.corp:3128", "white space"},
		{" proxy.corp:3128", "white space"},
		{"http://proxy.corp:3128\n", "white space"},
		{"http://[fe80::1%eth0]:3128", "%25"},
		{"http://user:pw@[fe80::1%eth0]:3128", "%25"},
		{"http://us%er:pw@proxy.corp:3128", "percent-encode special characters in the user name and password"},
		{"http://[fe80::1%25eth0]:3128", ""},
		{"http://[fe80::1%25eth0]", ""},
		{"http://u%40x:p%3Aw@[fd00::1]:3128", ""},
	} {
		_, err := ParseProxyURL(tc.raw)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("ParseProxyURL(%q) = %v, want %q", tc.raw, err, tc.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{base: time.Second, max: 120 * time.Second}
	for i := range 40 {
		d := b.next()
		limit := time.Second << min(i, 30)
		if limit > 120*time.Second {
			limit = 120 * time.Second
		}
		if d < 0 || d > limit {
			t.Fatalf("attempt %d: %v outside [0, %v]", i, d, limit)
		}
	}
	b.reset()
	if d := b.next(); d > time.Second {
		t.Fatalf("after reset: %v > 1s", d)
	}
}

func TestTargets(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
	}()
	sock := t.TempDir() + "/s"
	uln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer uln.Close()
	go func() {
		c, err := uln.Accept()
		if err == nil {
			c.Close()
		}
	}()
	tg := Targets{"WEB": ln.Addr().String(), "SOCK": "unix:" + sock}
	if err := tg.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, svc := range []string{"WEB", "SOCK"} {
		c, err := tg.DialService(context.Background(), svc)
		if err != nil {
			t.Fatalf("DialService(%s): %v", svc, err)
		}
		c.Close()
	}
	if _, err := tg.DialService(context.Background(), "SSH"); err == nil {
		t.Fatal("DialService(SSH) with no target succeeded")
	}
	// A service id may hold a colon ("localhost:22" is one): it names a
	// service, never an address to dial.
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	if c, err := tg.DialService(context.Background(), "localhost:"+port); !errors.Is(err, ErrUnknownService) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("DialService(localhost:%s) with no such service = %v, want ErrUnknownService", port, err)
	}
	for _, bad := range []Targets{{"WEB": "nohost"}, {"WEB": ":80"}, {"WEB": "h:port"}, {"WEB": "h:ssh"}, {"WEB": "h:0"}, {"WEB": "unix:rel"}, {"bad name": "h:1"}, {"": "h:1"}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("Validate(%v) accepted", bad)
		}
	}
}

func TestParseListen(t *testing.T) {
	for _, tc := range []struct{ in, svc, addr, err string }{
		{"2222", "", "2222", ""},
		{"SSH=2222", "SSH", "2222", ""},
		{"WEB=0.0.0.0:8080", "WEB", "0.0.0.0:8080", ""},
		{"SSH=", "", "", "listen address"},
		{"bad name=1", "", "", "service id"},
		{"SSH=70000", "", "", "out of range (0-65535)"},
		{"SSH=h:x", "", "", "a port of 0-65535"},
		{"HTTP=::1:0", "", "", "an IPv6 address needs brackets, with the port after them: [::1]:8080"},
		{"HTTP=fe80::1%eth0:0", "", "", "an IPv6 address needs brackets"},
		{"HTTP=[::1]:0", "HTTP", "[::1]:0", ""},
	} {
		svc, addr, err := ParseListen(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseListen(%q) err = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || svc != tc.svc || addr != tc.addr {
			t.Errorf("ParseListen(%q) = %q, %q, %v", tc.in, svc, addr, err)
		}
	}
}

// FuzzOperatorInput: what an operator types or a host's environment holds (a
// -L mapping, a proxy URL) and what the service says back (made printable)
// never panics, and what is accepted is well formed.
func FuzzOperatorInput(f *testing.F) {
	for _, s := range []string{"2222", "SSH=0", "WEB=[::1]:8080", "SSH=99999", "a=b=c", "http://u:p@proxy:3128",
		"https://[::1]", "proxy.example.com", "socks5://x", "\x1b[31mred\r\n\xff", "http://%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if svc, addr, err := ParseListen(s); err == nil {
			if svc != "" && ValidateServiceID(svc) != nil {
				t.Fatalf("ParseListen(%q) accepted service %q", s, svc)
			}
			a, err := listenAddr(addr)
			if err != nil {
				t.Fatalf("ParseListen(%q) accepted %q, which listenAddr refuses: %v", s, addr, err)
			}
			_, port, err := net.SplitHostPort(a)
			if n, perr := strconv.ParseUint(port, 10, 16); err != nil || perr != nil || n > 65535 {
				t.Fatalf("ParseListen(%q) gave listen address %q", s, a)
			}
		}
		if u, err := ParseProxyURL(s); err == nil {
			if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
				t.Fatalf("ParseProxyURL(%q) = %v", s, u)
			}
		}
		p := Printable(s)
		if !utf8.ValidString(p) || strings.ContainsFunc(p, func(r rune) bool { return !unicode.IsGraphic(r) }) {
			t.Fatalf("Printable(%q) = %q", s, p)
		}
	})
}

// FuzzTunnelURL checks the endpoint an operator configures: one that
// validates must be dialable as it is, a host (a name or an IP address) and a
// port from 1 to 65535, and the proxy settings must treat that host
// consistently (NO_PROXY naming it, or "*", bypasses; nothing else does).
func FuzzTunnelURL(f *testing.F) {
	for _, s := range []string{"Tunnel.Example.COM", "127.0.0.1:8443", "[::1]:8443", "wss://h.example:9", "https://h.example",
		"ws://127.0.0.1:80", "::1", "[::1", "a]b", "h:0", "h:65536", "wss://u@h", "wss://h/x", "data.tunneling.iot.us-east-1.amazonaws.com",
		"[fe80::1%br-lan]:443", "wss://[::1%25lo]:9", "[1.2.3.4%x]:1", "[fe80::1%]:1"} {
		f.Add(s, "", true)
	}
	f.Add("", "us-east-1", false)
	f.Add("", "cn-north-1", false)
	f.Fuzz(func(t *testing.T, endpoint, region string, insecure bool) {
		u, err := tunnelURL(endpoint, region, ModeSource, insecure)
		if err != nil {
			if len(endpoint) < 300 && !strings.Contains(err.Error(), "tunnel: ") {
				t.Fatalf("tunnelURL(%q, %q) error %q has no prefix", endpoint, region, err)
			}
			return
		}
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil {
			t.Fatalf("tunnelURL(%q, %q) = %s: host %q does not split: %v", endpoint, region, u, u.Host, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			t.Fatalf("tunnelURL(%q, %q) = %s: port %q", endpoint, region, u, port)
		}
		if _, err := netip.ParseAddr(host); err != nil && (host == "" || !isName(host, 1, 253, ".-")) {
			t.Fatalf("tunnelURL(%q, %q) = %s: host %q is neither a name nor an IP address", endpoint, region, u, host)
		}
		if u.Scheme != "wss" && (u.Scheme != "ws" || !insecure) {
			t.Fatalf("tunnelURL(%q, %q, insecure %v) = %s", endpoint, region, insecure, u)
		}
		again, err := url.Parse(u.String())
		if err != nil || again.Host != u.Host || again.Scheme != u.Scheme {
			t.Fatalf("tunnelURL(%q, %q) = %s, which parses back as %v, %v", endpoint, region, u, again, err)
		}
		if !bypassProxy(u.Hostname(), u.Port(), host) || !bypassProxy(u.Hostname(), u.Port(), " *") ||
			!bypassProxy(u.Hostname(), u.Port(), "x.invalid,"+u.Host) || bypassProxy(u.Hostname(), u.Port(), "x.invalid, ,") {
			t.Fatalf("NO_PROXY is not applied consistently to %s", u)
		}
	})
}

// TestProxyIPv6WithoutBrackets: https_proxy=http://fd00::1:3128 (an IPv6
// proxy written without brackets) was refused with the hint to
// percent-encode the user name and password, which it has none of; the
// endpoint and the broker say that an IPv6 address needs brackets.
func TestProxyIPv6WithoutBrackets(t *testing.T) {
	for _, raw := range []string{"http://fd00::1:3128", "fd00::1:3128", "::1", "https://[::1]:3128:1"} {
		_, err := ParseProxyURL(raw)
		if raw == "https://[::1]:3128:1" {
			if err == nil {
				t.Errorf("ParseProxyURL(%q) = nil error", raw)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "brackets") {
			t.Errorf("ParseProxyURL(%q) = %v, want an error saying an IPv6 address needs brackets", raw, err)
		}
	}
}

// tunnel.endpoint names a self-hosted data plane by a link-local address as
// mqtt.endpoint may name the broker ("[fe80::1%br-lan]:8883", which notify
// dials with its zone and verifies without it); here ::1%lo, the one zoned
// address a test can listen on.
func TestEndpointZonedAddress(t *testing.T) {
	srv := tlsService(t, func(r *http.Request) int { return 0 })
	ln := ipv6TLSListener(t, srv)
	hs := &http.Server{Handler: srv.Config.Handler}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	tok, _ := NewAccessToken("t")
	for _, ep := range []string{"[::1]:" + port, "[::1%lo]:" + port, "wss://[::1%25lo]:" + port} {
		cfg := &Config{Endpoint: ep, AccessToken: tok, CAFile: writeCA(t, srv), Proxy: func(*url.URL) (*url.URL, error) { return nil, nil }}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := Dial(ctx, cfg, ModeSource)
		cancel()
		if err != nil {
			t.Errorf("Dial %s: %v", ep, err)
			continue
		}
		c.Close()
	}
}

// TestBackoffGrows: the waits grow with the attempts (spec §3.8): past the
// tenth, each is drawn from [0, 120s], so twenty of them add up to far more
// than twenty times the first wait's 1 s bound (the chance that they do not
// is below 10^-30).
func TestBackoffGrows(t *testing.T) {
	b := backoff{base: time.Second, max: 120 * time.Second}
	for range 10 {
		b.next()
	}
	var sum time.Duration
	for range 20 {
		sum += b.next()
	}
	if sum <= 20*time.Second {
		t.Fatalf("20 waits after 10 attempts add up to %v: the backoff does not grow", sum)
	}
}
