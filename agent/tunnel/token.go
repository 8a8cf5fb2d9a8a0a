package tunnel

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/porthole-iot/porthole/agent/internal/syntax"
)

// Token is a secret: an access token (CAT) or a client token. It never prints
// itself: String, GoString, LogValue and MarshalText all give a short fingerprint, so a
// Token can sit in a config struct that is logged or dumped. The zero Token is empty.
type Token struct{ secret string }

// maxAccessToken is the longest access token accepted (spec §1.3, as localproxy).
const maxAccessToken = 4096

// NewAccessToken checks s as an access token: non-empty, at most 4096 bytes, no
// control characters (spec §1.3).
func NewAccessToken(s string) (Token, error) {
	if s == "" {
		return Token{}, errors.New("tunnel: access token is empty")
	}
	if len(s) > maxAccessToken {
		return Token{}, fmt.Errorf("tunnel: access token is %d bytes, longer than %d", len(s), maxAccessToken)
	}
	for _, c := range []byte(s) {
		if c < 0x20 || c == 0x7f {
			return Token{}, errors.New("tunnel: access token contains a control character")
		}
	}
	return Token{s}, nil
}

// NewClientToken checks s as a client token: 32–128 characters of [a-zA-Z0-9-]
// (spec §1.3).
func NewClientToken(s string) (Token, error) {
	if !syntax.Name(s, 32, 128, "-") {
		return Token{}, fmt.Errorf("tunnel: client token must be 32-128 characters of [a-zA-Z0-9-], got %d characters", len(s))
	}
	return Token{s}, nil
}

// GenerateClientToken returns a random UUIDv4 client token.
func GenerateClientToken() Token {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("tunnel: crypto/rand: " + err.Error()) // crypto/rand never fails on Linux ≥ 3.17
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return Token{h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]}
}

// IsZero reports whether t is empty.
func (t Token) IsZero() bool { return t.secret == "" }

// Reveal returns the secret itself, for the one place that must send it.
func (t Token) Reveal() string { return t.secret }

// Fingerprint is a short, stable, non-reversible label for logs: the first 8 hex
// digits of the token's SHA-256.
func (t Token) Fingerprint() string {
	if t.secret == "" {
		return "none"
	}
	sum := sha256.Sum256([]byte(t.secret))
	return hex.EncodeToString(sum[:4])
}

// String is the token's fingerprint, "token:" and 8 hex digits. Not inlined
// (agent/tunnel keeps inlining, device.gcflags): its callers would each carry
// a copy.
//
//go:noinline
func (t Token) String() string { return "token:" + t.Fingerprint() }

func (t Token) GoString() string              { return "tunnel.Token{" + t.Fingerprint() + "}" }
func (t Token) LogValue() slog.Value          { return slog.StringValue(t.String()) }
func (t Token) MarshalText() ([]byte, error)  { return []byte(t.String()), nil }
func (t Token) Format(f fmt.State, verb rune) { fmt.Fprint(f, t.String()) }

// redactTokens replaces each of toks found in s by its fingerprint (String),
// and so 8 or more of a token's first characters at the end of s: a
// refusal's body is cut at 1 KiB (readBody), which can fall inside a token
// the endpoint echoed.
func redactTokens(s string, toks ...Token) string {
	for _, t := range toks {
		r := t.Reveal()
		if t.IsZero() || len(r) < 8 { // a shorter one (tests) would match ordinary text
			continue
		}
		s = strings.ReplaceAll(s, r, t.String())
		for k := min(len(r)-1, len(s)); k >= 8; k-- {
			if strings.HasSuffix(s, r[:k]) {
				s = s[:len(s)-k] + t.String()
				break
			}
		}
	}
	return s
}
