package tunneltest

import (
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

func TestHandshakeResponse(t *testing.T) {
	s := NewServer(t)
	tun := s.OpenTunnel()
	offer := []string{"foo", SubprotocolV2, SubprotocolV3}
	c := dial(t, s, dialOpts{Mode: "source", Token: tun.SourceToken, Subprotocols: offer, ClientToken: "abcdefabcdefabcdefabcdefabcdefab"})
	if got := c.Resp.Header.Get("Sec-WebSocket-Protocol"); got != SubprotocolV2 {
		t.Errorf("Sec-WebSocket-Protocol = %q, want %q (first supported offer)", got, SubprotocolV2)
	}
	id := c.Resp.Header.Get("channel-id")
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(id) {
		t.Errorf("channel-id = %q, want a UUIDv4", id)
	}
	c.WantServiceIDs()
	hs := s.Handshakes()
	want := Handshake{Path: "/tunnel", Mode: "source", AccessToken: tun.SourceToken, ClientToken: "abcdefabcdefabcdefabcdefabcdefab",
		Subprotocols: offer, Status: 101, Subprotocol: SubprotocolV2, ChannelID: id}
	got := hs[0]
	got.Header = nil
	if got.Path != want.Path || got.Mode != want.Mode || got.AccessToken != want.AccessToken || got.ClientToken != want.ClientToken ||
		!slices.Equal(got.Subprotocols, want.Subprotocols) || got.Status != want.Status || got.Subprotocol != want.Subprotocol || got.ChannelID != want.ChannelID {
		t.Errorf("Handshakes()[0] = %+v, want %+v", got, want)
	}
	if hs[0].Header.Get("Access-Token") != tun.SourceToken {
		t.Errorf("Handshake.Header lacks the access-token header")
	}
	if len(tun.SourceToken) < 40 || tun.SourceToken == tun.DestinationToken {
		t.Errorf("tokens %q, %q: want distinct, 40+ chars", tun.SourceToken, tun.DestinationToken)
	}
}

func TestFailHandshakes(t *testing.T) {
	s := NewServer(t)
	tun := s.OpenTunnel("SSH")
	s.FailHandshakes(2, http.StatusServiceUnavailable, "busy")
	for i := 0; i < 2; i++ {
		_, resp, err := dialRaw(t, s, dialOpts{Mode: "source", Token: tun.SourceToken})
		if err == nil || resp == nil || resp.StatusCode != 503 {
			t.Fatalf("dial %d: %v, %v, want 503", i, err, resp)
		}
		if b, _ := io.ReadAll(resp.Body); string(b) != "busy" {
			t.Errorf("body = %q, want %q", b, "busy")
		}
	}
	// The token was not consumed by the failed attempts.
	dial(t, s, dialOpts{Mode: "source", Token: tun.SourceToken}).WantServiceIDs("SSH")
	var got []int
	for _, h := range s.Handshakes() {
		got = append(got, h.Status)
	}
	if len(got) != 3 || got[0] != 503 || got[1] != 503 || got[2] != 101 {
		t.Errorf("statuses = %v, want [503 503 101]", got)
	}
}

func TestSingleUseToken(t *testing.T) {
	s := NewServer(t)
	s.Logf = t.Logf
	tun := s.OpenTunnel("SSH")
	c := dial(t, s, dialOpts{Mode: "source", Token: tun.SourceToken})
	c.WantServiceIDs("SSH")
	for _, connected := range []bool{true, false} {
		if !connected {
			c.WS.CloseNow()
		}
		_, resp, err := dialRaw(t, s, dialOpts{Mode: "source", Token: tun.SourceToken})
		if err == nil {
			t.Fatalf("second use of the token succeeded")
		}
		if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 400 || string(b) != BodyTokenUsed {
			t.Errorf("reuse: %d %q, want 400 %q", resp.StatusCode, b, BodyTokenUsed)
		}
		// With a client token now is too late.
		_, resp, _ = dialRaw(t, s, dialOpts{Mode: "source", Token: tun.SourceToken, ClientToken: "abcdefabcdefabcdefabcdefabcdefab"})
		if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 400 || string(b) != BodyTokenUsed {
			t.Errorf("reuse with client token: %d %q, want 400 %q", resp.StatusCode, b, BodyTokenUsed)
		}
	}
	if n := tun.Connects(Source); n != 1 {
		t.Errorf("Connects(Source) = %d, want 1", n)
	}
}

func TestClientTokenReconnect(t *testing.T) {
	const ct = "11111111-2222-3333-4444-555555555555"
	s := NewServer(t)
	s.Logf = t.Logf
	tun := s.OpenTunnel("SSH")
	first := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken, ClientToken: ct})
	first.WantServiceIDs("SSH")

	// Wrong client token, and none: refused with the documented bodies.
	for _, tc := range []struct{ ct, body string }{
		{"99999999-2222-3333-4444-555555555555", BodyClientTokenMismatch},
		{"", BodyTokenUsed},
	} {
		_, resp, err := dialRaw(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken, ClientToken: tc.ct})
		if err == nil {
			t.Fatalf("reconnect with client token %q succeeded", tc.ct)
		}
		if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 400 || string(b) != tc.body {
			t.Errorf("client token %q: %d %q, want 400 %q", tc.ct, resp.StatusCode, b, tc.body)
		}
	}
	// The same client token on the other side's token is taken.
	_, resp, err := dialRaw(t, s, dialOpts{Mode: "source", Token: tun.SourceToken, ClientToken: ct})
	if err == nil || resp.StatusCode != 400 {
		t.Errorf("client token reused with another access token: %v, want 400", err)
	}

	// Same access token and client token while connected: replaces the old one.
	second := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken, ClientToken: ct})
	second.WantServiceIDs("SSH")
	first.WantCut()
	if n := tun.Connects(Destination); n != 2 {
		t.Errorf("Connects(Destination) = %d, want 2", n)
	}
	// And after a disconnect.
	second.WS.CloseNow()
	third := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken, ClientToken: ct})
	third.WantServiceIDs("SSH")
	if !tun.Connected(Destination) || tun.Connects(Destination) != 3 {
		t.Errorf("Connected, Connects = %v, %d, want true, 3", tun.Connected(Destination), tun.Connects(Destination))
	}
}

func TestServiceIDsOnConnect(t *testing.T) {
	for _, tc := range []struct {
		proto    string
		services []string
	}{
		{SubprotocolV3, []string{"SSH", "WEB", "VNC"}},
		{SubprotocolV2, []string{"SSH"}},
		{SubprotocolV3, nil},
		{SubprotocolV1, []string{"SSH"}},
	} {
		t.Run(tc.proto+"/"+strings.Join(tc.services, ","), func(t *testing.T) {
			s := NewServer(t)
			tun := s.OpenTunnel(tc.services...)
			dst := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken, Subprotocols: []string{tc.proto}})
			src := dial(t, s, dialOpts{Mode: "source", Token: tun.SourceToken})
			src.WantServiceIDs(tc.services...)
			if tc.proto != SubprotocolV1 {
				dst.WantServiceIDs(tc.services...)
			}
			// A V1 client gets no SERVICE_IDS: its first frame is the relayed one.
			svc := ""
			if len(tc.services) > 0 && tc.proto != SubprotocolV1 {
				svc = tc.services[0]
			}
			src.Send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: svc})
			if m := dst.MustNext(); m.Type != tunnel.TypeStreamStart {
				t.Errorf("destination got %v, want the relayed STREAM_START", m)
			}
		})
	}
}

func TestDataplaneAccessors(t *testing.T) {
	s := NewServer(t)
	tun := s.OpenTunnel("SSH")
	if s.Handler().Tunnel(tun.ID) != tun.Dataplane() {
		t.Errorf("Handler().Tunnel(%s) is not Tunnel.Dataplane()", tun.ID)
	}
	if st := tun.Dataplane().Side(Source); st.Token != tun.SourceToken || st.Used {
		t.Errorf("Dataplane().Side(Source) = %+v, want the source token, unused", st)
	}
}
