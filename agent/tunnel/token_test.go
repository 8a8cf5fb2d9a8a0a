package tunnel

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestTokenNeverPrints(t *testing.T) {
	const secret = "AQGAAXiQ-secret-access-token-value"
	tok, err := NewAccessToken(secret)
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "token", tok, "ptr", &tok)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "token", tok, "cfg", Config{AccessToken: tok, ClientToken: tok})
	j, _ := json.Marshal(struct{ T Token }{tok})
	outs := []string{
		fmt.Sprint(tok), fmt.Sprintf("%v %+v %#v %s %q %x", tok, tok, tok, tok, tok, tok),
		fmt.Sprintf("%+v", Config{AccessToken: tok}), fmt.Sprintf("%#v", Config{AccessToken: tok}),
		logged.String(), string(j),
		tok.GoString(), tok.String(), // called directly, not only through fmt (whose Format wins)
	}
	for _, out := range outs {
		if strings.Contains(out, secret) || strings.Contains(out, "secret-access") {
			t.Errorf("token leaked: %s", out)
		}
	}
	if !strings.Contains(fmt.Sprint(tok), tok.Fingerprint()) || len(tok.Fingerprint()) != 8 {
		t.Errorf("String() = %q, want a fingerprint of 8 hex digits", tok.String())
	}
	if tok.Reveal() != secret {
		t.Errorf("Reveal() = %q", tok.Reveal())
	}
}

func TestNewAccessToken(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // "" = valid
	}{
		{"abc", ""},
		{strings.Repeat("a", 4096), ""},
		{"", "empty"},
		{strings.Repeat("a", 4097), "longer than 4096"},
		{"abc\ndef", "control character"},
		{"abc\x7f", "control character"},
	} {
		_, err := NewAccessToken(tc.in)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("NewAccessToken(%.20q) = %v, want %q", tc.in, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "abc") {
			t.Errorf("error %v repeats the token", err)
		}
	}
}

func TestClientToken(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok := GenerateClientToken()
		if _, err := NewClientToken(tok.Reveal()); err != nil {
			t.Fatalf("generated client token %v invalid: %v", tok, err)
		}
		s := tok.Reveal()
		if len(s) != 36 || s[14] != '4' || !strings.ContainsRune("89ab", rune(s[19])) {
			t.Fatalf("not a UUIDv4: %s", s)
		}
		if seen[s] {
			t.Fatal("duplicate client token")
		}
		seen[s] = true
	}
	for _, bad := range []string{"short", strings.Repeat("a", 31), strings.Repeat("a", 129), strings.Repeat("a", 31) + "_", strings.Repeat("é", 20)} {
		if _, err := NewClientToken(bad); err == nil {
			t.Errorf("NewClientToken(%q) accepted", bad)
		}
	}
	for _, good := range []string{strings.Repeat("a", 32), strings.Repeat("A-9", 42) + "zz"} {
		if _, err := NewClientToken(good); err != nil {
			t.Errorf("NewClientToken(%q) = %v, want it accepted (32-128 characters)", good, err)
		}
	}
}

// TestRedactTokensCutBody: a refusal's body is cut at 1 KiB, which can fall
// inside a token the endpoint echoed: what is left of it is redacted too.
func TestRedactTokensCutBody(t *testing.T) {
	tok, err := NewAccessToken("AQGAAXh0aGUtc2VjcmV0LXRva2VuLWZvci10aGUtdGVzdA")
	if err != nil {
		t.Fatal(err)
	}
	r := tok.Reveal()
	for _, tc := range []struct{ in, want string }{
		{"bad token " + r + " here", "bad token " + tok.String() + " here"},
		{"bad token " + r[:20], "bad token " + tok.String()},
		{"bad token " + r[:8], "bad token " + tok.String()},
		{"bad token " + r[:7], "bad token " + r[:7]}, // too short to tell from text
		{"bad token " + r + " and " + r[:len(r)-1], "bad token " + tok.String() + " and " + tok.String()},
	} {
		if got := redactTokens(tc.in, tok); got != tc.want {
			t.Errorf("redactTokens(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
