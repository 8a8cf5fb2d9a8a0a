package tunnel

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestListenErrorKeepsItsCause: a -L port another program holds ends Run with
// ErrListen wrapping the bind error, so that a caller can tell a port in use
// from one the system refuses (Windows' WSAEACCES for a port in a range
// Hyper-V, WSL or Docker reserved, whose text reads as a lack of rights) and
// name the remedy (porthole's listenHint).
func TestListenErrorKeepsItsCause(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	src := &Source{Config: Config{Endpoint: "127.0.0.1:1", AllowInsecureWebSocket: true}, Listen: map[string]string{"SSH": port}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = src.Run(ctx)
	if !errors.Is(err, ErrListen) {
		t.Fatalf("Run: %v, want ErrListen", err)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Run's ErrListen does not wrap the bind error: errors.Is(err, EADDRINUSE) is false for %q", err)
	}
}
