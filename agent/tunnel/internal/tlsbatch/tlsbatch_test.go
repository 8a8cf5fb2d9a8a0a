package tlsbatch

import (
	"bytes"
	"net"
	"testing"
)

// recordingConn records every Write it gets.
type recordingConn struct {
	net.Conn
	writes [][]byte
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

// TestConn: between begin and end, writes are gathered and sent as one,
// in order; outside, they pass straight through.
func TestConn(t *testing.T) {
	under := &recordingConn{}
	b := New(under)
	b.Write([]byte("alert"))
	b.begin()
	for _, r := range []string{"rec1", "rec2", "rec3"} {
		if n, err := b.Write([]byte(r)); n != len(r) || err != nil {
			t.Fatalf("batched write = %d, %v", n, err)
		}
	}
	if len(under.writes) != 1 {
		t.Fatalf("records reached the socket before end: %q", under.writes)
	}
	if err := b.end(); err != nil {
		t.Fatal(err)
	}
	b.Write([]byte("after"))
	want := []string{"alert", "rec1rec2rec3", "after"}
	if len(under.writes) != len(want) {
		t.Fatalf("writes %q, want %q", under.writes, want)
	}
	for i, w := range want {
		if string(under.writes[i]) != w {
			t.Errorf("write %d = %q, want %q", i, under.writes[i], w)
		}
	}
	if err := b.end(); err != nil || len(under.writes) != 3 {
		t.Errorf("an empty batch wrote: %v, %q", err, under.writes)
	}
}
