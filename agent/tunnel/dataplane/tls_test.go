package dataplane

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

// tlsServer serves s over TLS the way tunneld does: BatchingListener under
// crypto/tls, and ConnContext so that a cut closes the *tls.Conn.
func tlsServer(t *testing.T, s *Server) (url string, client *http.Client, stop func()) {
	hs := httptest.NewUnstartedServer(s)
	hs.Config.ConnContext = s.ConnContext
	hs.Listener = BatchingListener(hs.Listener)
	hs.StartTLS()
	return "wss" + strings.TrimPrefix(hs.URL, "https"), hs.Client(), func() { s.Close(); hs.Close() }
}

func dialTLS(url string, hc *http.Client, mode, token, clientToken string) (*websocket.Conn, error) {
	h := http.Header{}
	h.Set("access-token", token)
	if clientToken != "" {
		h.Set("client-token", clientToken)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url+"/tunnel?local-proxy-mode="+mode, &websocket.DialOptions{
		HTTPClient: hc, HTTPHeader: h, Subprotocols: []string{SubprotocolV3}})
	return ws, err
}

// stallTLS connects side of tun over TLS, never reads, and has the service queue
// frames for it until its writer blocks on the full socket; done is closed once
// the service no longer takes them.
func stallTLS(t *testing.T, url string, hc *http.Client, tun *Tunnel, side Side, clientToken string) (ws *websocket.Conn, done chan struct{}) {
	ws, err := dialTLS(url, hc, side.String(), tun.Side(side).Token, clientToken)
	if err != nil {
		t.Fatal(err)
	}
	if err := tun.WaitConnects(context.Background(), side, 1); err != nil {
		t.Fatal(err)
	}
	done = make(chan struct{})
	go func() {
		defer close(done)
		payload := make([]byte, 60000)
		for tun.Send(side, &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: payload}) == nil {
		}
	}()
	return ws, done
}

// Server.Close (tunneld's Shutdown and Close) cuts every WebSocket. Over TLS a
// cut of a client that has stopped reading closed the *tls.Conn, whose
// close_notify waited out its 5 s write deadline behind the writer's blocked
// socket write: 3 stalled clients held Close for 15 s.
func TestServerCloseDoesNotWaitForStalledTLSClients(t *testing.T) {
	s := &Server{Logger: testLogger(t)}
	url, hc, stop := tlsServer(t, s)
	var dones []chan struct{}
	for range 3 {
		tun, err := s.OpenTunnel(TunnelConfig{Services: []string{"SSH"}})
		if err != nil {
			t.Fatal(err)
		}
		ws, done := stallTLS(t, url, hc, tun, Destination, "")
		defer ws.CloseNow()
		dones = append(dones, done)
	}
	time.Sleep(2 * time.Second) // socket buffers and queues fill
	start := time.Now()
	stop()
	if d := time.Since(start); d >= 5*time.Second {
		t.Errorf("Server.Close with 3 stalled TLS clients took %v, as long as a close_notify's deadline or more", d.Round(100*time.Millisecond))
	}
	for _, d := range dones {
		<-d
	}
}

// A side reconnecting with its client token while its old connection has
// stopped reading (a device whose old link died silently) gets its 101 without
// waiting for the cut of the connection it replaces, which happens inside the
// handshake.
func TestReconnectNotHeldByStalledTLSConnection(t *testing.T) {
	s := &Server{Logger: testLogger(t)}
	url, hc, stop := tlsServer(t, s)
	defer stop()
	tun, err := s.OpenTunnel(TunnelConfig{Services: []string{"SSH"}})
	if err != nil {
		t.Fatal(err)
	}
	ct := strings.Repeat("c", 32)
	old, done := stallTLS(t, url, hc, tun, Destination, ct)
	defer old.CloseNow()
	time.Sleep(2 * time.Second) // socket buffers and queue fill
	start := time.Now()
	ws, err := dialTLS(url, hc, "destination", tun.Side(Destination).Token, ct)
	d := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	ws.CloseNow()
	if d >= 4*time.Second { // close_notify's deadline is 5 s; the handshake takes milliseconds
		t.Errorf("reconnect with the client token took %v: the replaced connection's cut held up the handshake", d.Round(100*time.Millisecond))
	}
	<-done
}
