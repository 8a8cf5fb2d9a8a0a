// Package wstest is a raw WebSocket client of the Secure Tunneling data plane for
// tests of its service side (agent/tunnel/dataplane and tunneltest): it dials with
// any handshake, sends crafted frames and reads frames back, so that tests can
// break the rules the real client keeps.
package wstest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/internal/wsstream"
)

// Opts describes one handshake.
type Opts struct {
	Path         string // default /tunnel
	Query        string // default local-proxy-mode=<Mode>
	Mode         string
	Token        string
	ClientToken  string
	Subprotocols []string // default aws.iot.securetunneling-3.0
	Header       http.Header
}

// Client reads tunnel frames from a raw WebSocket.
type Client struct {
	T    *testing.T
	WS   *websocket.Conn
	Resp *http.Response
	Msgs int // binary messages read so far

	ms *wsstream.Stream
	fr *tunnel.FrameReader
}

// DialRaw performs the handshake against url (ws://host:port) and returns what the
// server answered; the connection is closed when the test ends.
func DialRaw(t *testing.T, url string, o Opts) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	path, query := o.Path, o.Query
	if path == "" {
		path = "/tunnel"
	}
	if query == "" {
		query = "local-proxy-mode=" + o.Mode
	}
	h := o.Header.Clone()
	if h == nil {
		h = make(http.Header)
	}
	if o.Token != "" {
		h.Add("access-token", o.Token)
	}
	if o.ClientToken != "" {
		h.Add("client-token", o.ClientToken)
	}
	sp := o.Subprotocols
	if sp == nil {
		sp = []string{tunnel.V3.Subprotocol()}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, url+path+"?"+query, &websocket.DialOptions{HTTPHeader: h, Subprotocols: sp})
	if ws != nil {
		ws.SetReadLimit(tunnel.MaxWebSocketMessage)
		t.Cleanup(func() { ws.CloseNow() })
	}
	return ws, resp, err
}

// Dial connects and fails the test if the handshake is refused.
func Dial(t *testing.T, url string, o Opts) *Client {
	t.Helper()
	ws, resp, err := DialRaw(t, url, o)
	if err != nil {
		body := ""
		if resp != nil && resp.Body != nil {
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
		}
		t.Fatalf("dial %s: %v (%s)", o.Mode, err, body)
	}
	c := &Client{T: t, WS: ws, Resp: resp, ms: &wsstream.Stream{Ctx: context.Background(), WS: ws}}
	c.fr = tunnel.NewFrameReader(countingReader{c})
	return c
}

type countingReader struct{ c *Client }

func (r countingReader) Read(p []byte) (int, error) {
	if !r.c.ms.InMessage() {
		r.c.Msgs++
	}
	return r.c.ms.Read(p)
}

// Next reads the next frame; Payload is copied.
func (c *Client) Next() (*tunnel.Message, error) {
	c.T.Helper()
	// The message reader keeps the context it was opened with, so a stuck read is
	// ended by closing the connection rather than by a per-call context.
	timer := time.AfterFunc(5*time.Second, func() {
		c.T.Errorf("read timed out")
		c.WS.CloseNow()
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

// MustNext is Next that fails the test on an error.
func (c *Client) MustNext() *tunnel.Message {
	c.T.Helper()
	m, err := c.Next()
	if err != nil {
		c.T.Fatalf("reading a frame: %v", err)
	}
	return m
}

// Send writes frames as one binary message.
func (c *Client) Send(ms ...*tunnel.Message) {
	c.T.Helper()
	var b []byte
	for _, m := range ms {
		var err error
		if b, err = tunnel.AppendFrame(b, m); err != nil {
			c.T.Fatalf("AppendFrame(%v): %v", m, err)
		}
	}
	c.SendRaw(b)
}

// SendRaw writes b as one binary message.
func (c *Client) SendRaw(b []byte) {
	c.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.WS.Write(ctx, websocket.MessageBinary, b); err != nil {
		c.T.Fatalf("writing: %v", err)
	}
}

// Closed reads until the connection ends and returns the read error.
func (c *Client) Closed() error {
	c.T.Helper()
	for {
		if _, err := c.Next(); err != nil {
			return err
		}
	}
}

// WantClose checks that the server closed with a Close frame of status code and
// returns its reason.
func (c *Client) WantClose(code websocket.StatusCode) string {
	c.T.Helper()
	err := c.Closed()
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != code {
		c.T.Fatalf("connection ended with %v, want a Close frame with status %d", err, code)
	}
	return ce.Reason
}

// WantCut checks that the connection ended without a Close frame.
func (c *Client) WantCut() {
	c.T.Helper()
	err := c.Closed()
	if websocket.CloseStatus(err) != -1 || errors.Is(err, context.DeadlineExceeded) {
		c.T.Fatalf("connection ended with %v, want a cut without Close frame", err)
	}
}

// WantServiceIDs reads the SERVICE_IDS frame a V2/V3 client gets first.
func (c *Client) WantServiceIDs(services ...string) {
	c.T.Helper()
	m := c.MustNext()
	if m.Type != tunnel.TypeServiceIDs || !slices.Equal(m.AvailableServiceIDs, services) {
		c.T.Fatalf("first frame = %v, want SERVICE_IDS %q", m, services)
	}
}

// Pair connects both sides of a tunnel of the data plane at url (V3) and reads
// their SERVICE_IDS.
func Pair(t *testing.T, url, sourceToken, destinationToken string, services ...string) (src, dst *Client) {
	t.Helper()
	dst = Dial(t, url, Opts{Mode: "destination", Token: destinationToken})
	dst.WantServiceIDs(services...)
	src = Dial(t, url, Opts{Mode: "source", Token: sourceToken})
	src.WantServiceIDs(services...)
	return src, dst
}

// RawFrame builds a frame from hand-encoded fields, for bytes AppendFrame refuses
// or would encode differently.
func RawFrame(fields ...[]byte) []byte {
	body := slices.Concat(fields...)
	return append([]byte{byte(len(body) >> 8), byte(len(body))}, body...)
}

// VarintField and BytesField encode one protobuf field.
func VarintField(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
}

func BytesField(num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), v)
}
