package tunnel_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

// TestStopWhileDialingResetsTarget: the destination stops (the agent is shut
// down) while it dials the target of a connection a client has started to
// upload through. The target, which may have accepted the connection by
// then, must see a reset, never an accepted connection that ends cleanly
// with no byte in it: an empty upload that looks complete. "while dialling"
// is a stop that comes as the TCP connect is made, which net's dialer then
// closed with a FIN; "once dialled" one that comes after Targets returned
// the connection, before the destination took it.
func TestStopWhileDialingResetsTarget(t *testing.T) {
	for _, c := range []struct {
		name string
		dial func(ctx context.Context, tg tunnel.Targets, dialing func()) (net.Conn, error)
	}{
		{"while dialling", func(ctx context.Context, tg tunnel.Targets, dialing func()) (net.Conn, error) {
			return tunnel.DialServiceConnecting(ctx, tg, "SSH", func(ctx context.Context) {
				dialing()
				<-ctx.Done() // the connect is made after the stop
			})
		}},
		{"once dialled", func(ctx context.Context, tg tunnel.Targets, dialing func()) (net.Conn, error) {
			c, err := tg.DialService(ctx, "SSH")
			if err == nil {
				dialing()
				<-ctx.Done() // handed over after the stop
			}
			return c, err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			target, ended := drainTarget(t, 30*time.Second)
			tg := tunnel.Targets{"SSH": target}
			dialing := make(chan struct{})
			var once sync.Once
			src, dst := startSidesDialing(t, tunnel.DialerFunc(func(ctx context.Context, _ string) (net.Conn, error) {
				return c.dial(ctx, tg, func() { once.Do(func() { close(dialing) }) })
			}))
			conn, err := net.Dial("tcp", src.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write([]byte("the start of an upload"))
			select {
			case <-dialing:
			case <-time.After(30 * time.Second):
				t.Fatal("the destination did not dial the target within 30 s")
			}
			dst.stop()
			select {
			case r := <-ended:
				if !errors.Is(r.err, syscall.ECONNRESET) {
					t.Fatalf("the target's input ended with %v after %d bytes; want ECONNRESET", r.err, r.n)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the target got no connection, or its input did not end")
			}
		})
	}
}

// TestTargetsConnectionClosesCleanly: a connection Targets has dialled ends
// with a FIN when it is closed, not with the reset its dial is made to end
// with (SO_LINGER 0 until the dial returns): a target that reads to the end
// sees a whole upload.
func TestTargetsConnectionClosesCleanly(t *testing.T) {
	target, ended := drainTarget(t, 30*time.Second)
	c, err := tunnel.Targets{"SSH": target}.DialService(context.Background(), "SSH")
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("hello"))
	c.Close()
	select {
	case r := <-ended:
		if r.err != nil || r.n != 5 {
			t.Fatalf("the target read %d bytes and then %v; want 5 and a clean end", r.n, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the target's input did not end")
	}
}
