package dataplane

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testServer serves a Server on loopback for one test.
type testServer struct {
	*Server
	URL string
	hs  *httptest.Server
}

// testTunnel is a tunnel with its first tokens at hand.
type testTunnel struct {
	*Tunnel
	SourceToken, DestinationToken string
}

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	s := &testServer{Server: &Server{KeepHandshakes: -1, Logger: testLogger(t)}}
	s.hs = httptest.NewUnstartedServer(s.Server)
	s.hs.Config.ConnContext = s.Server.ConnContext
	s.hs.Start()
	s.URL = "ws://" + strings.TrimPrefix(s.hs.URL, "http://")
	t.Cleanup(s.Close)
	return s
}

func (s *testServer) Close() {
	s.Server.Close()
	s.hs.Close()
}

func (s *testServer) OpenTunnel(services ...string) *testTunnel {
	tun, err := s.Server.OpenTunnel(TunnelConfig{Services: services})
	if err != nil {
		panic(err)
	}
	return &testTunnel{tun, tun.Side(Source).Token, tun.Side(Destination).Token}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, nil))
}

type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// dialOpts describes one raw client handshake.
type dialOpts struct {
	path         string // default /tunnel
	query        string // default local-proxy-mode=<mode>
	mode         string
	token        string
	clientToken  string
	subprotocols []string // default V3
	header       http.Header
}

// client is a raw WebSocket client that reads tunnel frames.
type client struct {
	t    *testing.T
	ws   *websocket.Conn
	resp *http.Response
	ms   *messageStream
	fr   *tunnel.FrameReader
	msgs int // binary messages read so far
}

func dialRaw(t *testing.T, s *testServer, o dialOpts) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	path, query := o.path, o.query
	if path == "" {
		path = "/tunnel"
	}
	if query == "" {
		query = "local-proxy-mode=" + o.mode
	}
	h := o.header.Clone()
	if h == nil {
		h = make(http.Header)
	}
	if o.token != "" {
		h.Add("access-token", o.token)
	}
	if o.clientToken != "" {
		h.Add("client-token", o.clientToken)
	}
	sp := o.subprotocols
	if sp == nil {
		sp = []string{SubprotocolV3}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, s.URL+path+"?"+query, &websocket.DialOptions{
		HTTPHeader:   h,
		Subprotocols: sp,
	})
	if ws != nil {
		ws.SetReadLimit(tunnel.MaxWebSocketMessage)
		t.Cleanup(func() { ws.CloseNow() })
	}
	return ws, resp, err
}

// dial connects and fails the test if the handshake is refused.
func dial(t *testing.T, s *testServer, o dialOpts) *client {
	t.Helper()
	ws, resp, err := dialRaw(t, s, o)
	if err != nil {
		body := ""
		if resp != nil && resp.Body != nil {
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
		}
		t.Fatalf("dial %s: %v (%s)", o.mode, err, body)
	}
	c := &client{t: t, ws: ws, resp: resp}
	c.ms = &messageStream{ctx: context.Background(), ws: ws}
	c.fr = tunnel.NewFrameReader(countingReader{c})
	return c
}

type countingReader struct{ c *client }

func (r countingReader) Read(p []byte) (int, error) {
	if r.c.ms.r == nil {
		r.c.msgs++
	}
	return r.c.ms.Read(p)
}

// next reads the next frame; Payload is copied.
func (c *client) next() (*tunnel.Message, error) {
	c.t.Helper()
	// The message reader keeps the context it was opened with, so a stuck read is
	// ended by closing the connection rather than by a per-call context.
	timer := time.AfterFunc(5*time.Second, func() {
		c.t.Errorf("read timed out")
		c.ws.CloseNow()
	})
	defer timer.Stop()
	var m tunnel.Message
	if err := c.fr.Next(&m); err != nil {
		return nil, err
	}
	if m.Payload != nil {
		m.Payload = append([]byte(nil), m.Payload...)
	}
	return &m, nil
}

func (c *client) mustNext() *tunnel.Message {
	c.t.Helper()
	m, err := c.next()
	if err != nil {
		c.t.Fatalf("reading a frame: %v", err)
	}
	return m
}

// send writes frames as one binary message.
func (c *client) send(ms ...*tunnel.Message) {
	c.t.Helper()
	var b []byte
	for _, m := range ms {
		var err error
		if b, err = tunnel.AppendFrame(b, m); err != nil {
			c.t.Fatalf("AppendFrame(%v): %v", m, err)
		}
	}
	c.sendRaw(b)
}

func (c *client) sendRaw(b []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageBinary, b); err != nil {
		c.t.Fatalf("writing: %v", err)
	}
}

// closed reads until the connection ends and returns the read error.
func (c *client) closed() error {
	c.t.Helper()
	for {
		if _, err := c.next(); err != nil {
			return err
		}
	}
}

// wantClose checks that the server closed with a Close frame of status code.
func (c *client) wantClose(code websocket.StatusCode) string {
	c.t.Helper()
	err := c.closed()
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != code {
		c.t.Fatalf("connection ended with %v, want a Close frame with status %d", err, code)
	}
	return ce.Reason
}

// wantCut checks that the connection ended without a Close frame.
func (c *client) wantCut() {
	c.t.Helper()
	err := c.closed()
	if websocket.CloseStatus(err) != -1 || errors.Is(err, context.DeadlineExceeded) {
		c.t.Fatalf("connection ended with %v, want a cut without Close frame", err)
	}
}

// wantServiceIDs reads the SERVICE_IDS frame a V2/V3 client gets first.
func (c *client) wantServiceIDs(services ...string) {
	c.t.Helper()
	m := c.mustNext()
	if m.Type != tunnel.TypeServiceIDs || !equal(m.AvailableServiceIDs, services) {
		c.t.Fatalf("first frame = %v, want SERVICE_IDS %q", m, services)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// pair opens a tunnel with services and connects both sides (V3), past SERVICE_IDS.
func pair(t *testing.T, services ...string) (*testServer, *testTunnel, *client, *client) {
	t.Helper()
	s := newTestServer(t)
	tun := s.OpenTunnel(services...)
	dst := dial(t, s, dialOpts{mode: "destination", token: tun.DestinationToken})
	dst.wantServiceIDs(services...)
	src := dial(t, s, dialOpts{mode: "source", token: tun.SourceToken})
	src.wantServiceIDs(services...)
	return s, tun, src, dst
}
