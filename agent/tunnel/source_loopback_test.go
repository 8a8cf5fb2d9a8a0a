package tunnel_test

import (
	"log/slog"
	"net"
	"strconv"
	"testing"

	"github.com/porthole-iot/porthole/agent/internal/testlog"
	"github.com/porthole-iot/porthole/agent/tunnel"
)

// A mapping with no host ("SSH=2222", "2222", ":2222") or localhost listens on
// 127.0.0.1 and on [::1] with the same port: clients that try localhost by ::1 first (curl,
// browsers, ssh where /etc/hosts names ::1 localhost) went to whichever local
// user had taken [::1] with that port. A mapping that names its host gets that
// host only, and a [::1] port another program holds is said once.
func TestHostlessMappingTakesIPv6LoopbackToo(t *testing.T) {
	if l, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skip("no IPv6 loopback:", err)
	} else {
		l.Close()
	}
	addr := echoServer(t, 0x51)
	start := func(listen string) (local string, logged *testlog.Lines) {
		h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}, noSource: true})
		logged = new(testlog.Lines)
		src := &tunnel.Source{Config: tunnel.Config{Endpoint: h.srv.URL, AllowInsecureWebSocket: true, AccessToken: mustToken(t, h.tun.SourceToken),
			Logger: slog.New(slog.NewTextHandler(logged, nil))}, Listen: map[string]string{"SSH": listen}}
		return runSource(t, src, "SSH"), logged
	}
	for _, listen := range []string{"0", ":0", "localhost:0"} {
		local, _ := start(listen)
		_, port, _ := net.SplitHostPort(local)
		openEcho(t, net.JoinHostPort("::1", port), 0x51) // served through the tunnel
	}

	local, _ := start("127.0.0.1:0")
	_, port, _ := net.SplitHostPort(local)
	if l, err := net.Listen("tcp", net.JoinHostPort("::1", port)); err != nil {
		t.Errorf("a mapping to 127.0.0.1 took [::1]:%s as well: %v", port, err)
	} else {
		l.Close()
	}

	squat, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer squat.Close()
	taken := strconv.Itoa(squat.Addr().(*net.TCPAddr).Port)
	if l, err := net.Listen("tcp", "127.0.0.1:"+taken); err != nil {
		t.Skipf("127.0.0.1:%s is taken too: %v", taken, err)
	} else {
		l.Close()
	}
	local, logged := start(taken)
	openEcho(t, local, 0x51)
	if logged.Count("another program's") != 1 {
		t.Errorf("with [::1]:%s another program's: want one line that says so:\n%s", taken, logged.String())
	}
}
