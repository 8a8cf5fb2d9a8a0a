package tunneld

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

// readFrame reads one WebSocket message of ws as one tunnel frame.
func readFrame(t *testing.T, ws *websocket.Conn) (*tunnel.Message, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, b, err := ws.Read(ctx)
	if err != nil {
		return nil, err
	}
	var m tunnel.Message
	if err := tunnel.NewFrameReader(bytes.NewReader(b)).Next(&m); err != nil {
		t.Fatalf("frame %x: %v", b, err)
	}
	return &m, nil
}

func writeFrame(t *testing.T, ws *websocket.Conn, m *tunnel.Message) {
	t.Helper()
	b, err := tunnel.AppendFrame(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.Write(context.Background(), websocket.MessageBinary, b); err != nil {
		t.Fatal(err)
	}
}

// A restart of tunneld cuts both sides, which reconnect with their client
// tokens; a destination that keeps its local connections across a reconnect
// (aws-c-iot, so Device Client and the Greengrass component: spec §3.8) goes
// on sending DATA for the stream the source started before the restart.
// Before it, tunneld relays that DATA (the rule of spec §1.5 wants a
// STREAM_START for its service first, and there was one); after it, the
// stream table was forgotten and the destination was closed with 1008 for it.
func TestDataOfAStreamStartedBeforeARestart(t *testing.T) {
	const srcCT, dstCT = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "ffffffff-bbbb-cccc-dddd-eeeeeeeeeeee"
	dir := t.TempDir()
	ts := startServer(t, Config{DataDir: dir})
	out := ts.open(t, "dev1", "SSH")
	connect := func(ts *testServer) (src, dst *websocket.Conn) {
		t.Helper()
		dst, status, body := dialWS(t, ts.addr, "destination", out.DestinationAccessToken, dstCT)
		if status != 101 {
			t.Fatalf("destination: %d %s", status, body)
		}
		src, status, body = dialWS(t, ts.addr, "source", out.SourceAccessToken, srcCT)
		if status != 101 {
			t.Fatalf("source: %d %s", status, body)
		}
		for _, ws := range []*websocket.Conn{src, dst} {
			if m, err := readFrame(t, ws); err != nil || m.Type != tunnel.TypeServiceIDs {
				t.Fatalf("first frame %v, %v; want SERVICE_IDS", m, err)
			}
		}
		return src, dst
	}
	src, dst := connect(ts)
	writeFrame(t, src, &tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH", ConnectionID: 1})
	if m, err := readFrame(t, dst); err != nil || m.Type != tunnel.TypeStreamStart {
		t.Fatalf("destination got %v, %v; want the STREAM_START", m, err)
	}
	ts.shutdown(t)

	ts = startServer(t, Config{DataDir: dir})
	src, dst = connect(ts)
	data := &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", ConnectionID: 1, Payload: []byte("still here")}
	writeFrame(t, dst, data)
	if m, err := readFrame(t, src); err != nil || m.Type != tunnel.TypeData || string(m.Payload) != "still here" {
		t.Errorf("after a restart, the source got %v, %v for the destination's DATA of a stream started before it; want it relayed", m, err)
		if _, err := readFrame(t, dst); err != nil {
			t.Logf("the destination: %v", err)
		}
	}
}
