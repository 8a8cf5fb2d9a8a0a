package tunnel

import (
	"errors"
	"testing"
	"time"
)

// TestRefusedMixedFormatDoesNotHoldTheReader: the WebSocket reader refuses
// a STREAM_START in another format while connections are open, a protocol
// error, with a STREAM_RESET that it writes itself, so that it reaches the
// service before the Close that ends the session. A service that had
// stopped reading held the reader on that write with no bound: the device's
// destination has no idle or pong timeout, so its session, its local
// connections frozen and no reconnect, lasted until the dead-path timeout
// (Linux 5.11 on) or the agent stopped.
func TestRefusedMixedFormatDoesNotHoldTheReader(t *testing.T) {
	agentEnd, _ := tcpPair(t)
	ws, service := Pipe()
	defer service.Close()
	s := sessionOver(ws)
	defer s.teardown()
	startLink(s, agentEnd)

	// The service reads nothing: what the WebSocket takes is full.
	if _, err := ws.Write(make([]byte, pipeUnread)); err != nil {
		t.Fatal(err)
	}
	refused := make(chan error, 1)
	go func() {
		refused <- (&Destination{}).handle(s, &Message{Type: TypeStreamStart, StreamID: 2}) // V1 format
	}()
	select {
	case err := <-refused:
		if !errors.Is(err, ErrProtocol) {
			t.Errorf("handling a V1 STREAM_START in a V3 session with a connection open: %v; want a protocol error", err)
		}
	case <-time.After(10 * time.Second):
		service.Close() // the write fails: the reader returns
		<-refused
		t.Errorf("the WebSocket reader still waited to write the refused stream's STREAM_RESET after 10 s")
	}
}
