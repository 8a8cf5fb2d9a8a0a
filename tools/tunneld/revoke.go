package tunneld

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"

	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
)

// Rotation revokes a token for good: RotateTunnelAccessToken closes the WebSocket
// of each rotated side (it was made with the revoked token) with a Close frame,
// status 1008 and CloseReasonTokenRotated, and a client that reconnects with the
// revoked token anyway is refused with BodyTokenRotated rather than the data
// plane's generic "not valid", so that porthole connect, the lab and the agent's
// events can say the token was rotated.
//
// Spec §4 leaves open what AWS does with a side connected when its token is
// rotated. Operators rotate to revoke a leaked token, and a holder of the leaked
// token that stays connected would make the rotation worthless, so tunneld takes
// the safe reading: the side is shut out. A Close frame is the honest way to say
// so: clients take it as the end of the token (spec §3.8: localproxy ends, and
// porthole's agent and connect end the session, with the frame's reason, without
// retrying), where a bare TCP close reads as a network failure, which every
// client answers by reconnecting with the revoked token. dataplane.Tunnel.RevokeClose
// does it in the same step as the rotation (a client quick with the new token is
// never the one closed), drops what was queued for the side, and cuts the
// connection if the close has not completed within a short grace (a client that
// has stopped reading holds neither the rotation nor the connection). The other
// side, if connected, gets SESSION_RESET: its streams were relayed to the revoked
// side and are dead.

// CloseReasonTokenRotated is the reason of the Close frame (status 1008, policy
// violation) that a side connected with a token revoked by RotateTunnelAccessToken
// gets.
const CloseReasonTokenRotated = "The access token was rotated (RotateTunnelAccessToken) and is no longer valid."

// BodyTokenRotated is the 400 body of a data-plane handshake with an access token
// revoked by RotateTunnelAccessToken, while its tunnel is open.
const BodyTokenRotated = "Invalid access token: The access token was rotated (RotateTunnelAccessToken) and is no longer valid; connect with the new one."

// maxRevokedPerTunnel bounds the revoked tokens remembered per tunnel: enough
// for the clients of the last few rotations; older ones get the generic answer.
const maxRevokedPerTunnel = 8

// tokenKey identifies a revoked token without keeping the token itself. It is
// saved with its tunnel, in hex, so that the refusal is the same after a
// restart; a revoked token is worth nothing, but its key needs no more care
// than the live tokens beside it.
type tokenKey [sha256.Size]byte

func keyOfToken(token string) tokenKey { return sha256.Sum256([]byte(token)) }

func (k tokenKey) MarshalText() ([]byte, error) { return hex.AppendEncode(nil, k[:]), nil }

func (k *tokenKey) UnmarshalText(b []byte) error {
	if n, err := hex.Decode(k[:], b); err != nil || n != len(k) || len(b) != hex.EncodedLen(len(k)) {
		return fmt.Errorf("revoked token key %.80q: want %d hex digits", b, hex.EncodedLen(len(k)))
	}
	return nil
}

// revokeLocked remembers token as revoked by a rotation of r.
func (s *Server) revokeLocked(r *record, token string) {
	if token != "" {
		s.rememberRevokedLocked(r, keyOfToken(token))
	}
}

// restoreRevokedLocked registers the revoked tokens r was saved with, keeping
// the newest maxRevokedPerTunnel of them, as revokeLocked does.
func (s *Server) restoreRevokedLocked(r *record) {
	keys := r.Revoked
	r.Revoked = nil
	for _, k := range keys {
		s.rememberRevokedLocked(r, k)
	}
}

func (s *Server) rememberRevokedLocked(r *record, k tokenKey) {
	if _, ok := s.revoked[k]; ok {
		return // a repeat in a hand-edited file; trimming it would drop the other
	}
	if s.revoked == nil {
		s.revoked = make(map[tokenKey]string)
	}
	s.revoked[k] = r.ID
	r.Revoked = append(r.Revoked, k)
	if n := len(r.Revoked) - maxRevokedPerTunnel; n > 0 {
		for _, old := range r.Revoked[:n] {
			delete(s.revoked, old)
		}
		r.Revoked = slices.Delete(r.Revoked, 0, n)
	}
}

// forgetRevokedLocked drops r's revoked tokens, when r is forgotten.
func (s *Server) forgetRevokedLocked(r *record) {
	for _, k := range r.Revoked {
		delete(s.revoked, k)
	}
	r.Revoked = nil
}

// refuseRevoked answers a data-plane handshake that carries exactly one access
// token, revoked by a rotation of an open tunnel, with 400 BodyTokenRotated, and
// reports whether it did. Anything else is left to the data plane.
func (s *Server) refuseRevoked(w http.ResponseWriter, r *http.Request, remote string) bool {
	tokens := r.Header.Values("access-token")
	for _, c := range r.Cookies() {
		if c.Name == "awsiot-tunnel-token" {
			tokens = append(tokens, c.Value)
		}
	}
	if len(tokens) != 1 {
		return false
	}
	s.mu.Lock()
	id, ok := s.revoked[keyOfToken(tokens[0])]
	open := ok && s.tunnels[id] != nil && s.tunnels[id].Status == StatusOpen
	s.mu.Unlock()
	if !open {
		return false
	}
	channel := dataplane.NewUUID() // error responses carry one too (spec §2.2)
	s.log.Info("handshake refused: access token rotated", "plane", "data", "tunnel", id,
		"mode", clip(r.URL.Query().Get("local-proxy-mode"), clipped), "token", fingerprint(tokens[0]), "remote", remote, "channel", channel)
	w.Header().Set("channel-id", channel)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusBadRequest)
	_, _ = w.Write([]byte(BodyTokenRotated))
	return true
}
