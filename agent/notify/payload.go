package notify

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"unicode"
)

// Limits on a notification payload (spec/secure-tunneling.md §4).
const (
	// MaxPayloadSize is the largest notify payload accepted. A real one is a
	// few hundred bytes; anything this large is rejected before parsing.
	MaxPayloadSize = 16 << 10
	// MaxTokenSize is the longest client access token accepted.
	MaxTokenSize = 4096
	// MaxServices is the most services one tunnel may name
	// (destinationConfig.services has 1 to 3 entries).
	MaxServices = 3
	// ModeDestination is the only client mode a device accepts.
	ModeDestination = "destination"
)

// ErrInvalidNotification is wrapped by every error of [ParseNotification].
var ErrInvalidNotification = errors.New("notify: invalid notification")

// Notification is one tunnel notification for this device: the destination
// client access token of a newly opened (or rotated) tunnel, its region and
// the services it carries.
//
// ClientAccessToken is a bearer secret. A Notification never prints it: its
// String, GoString, Format, LogValue and MarshalJSON methods show a SHA-256
// fingerprint instead (see [Notification.TokenFingerprint]). Read the field
// directly to use it.
type Notification struct {
	ClientAccessToken string   // the destination CAT; never logged
	ClientMode        string   // always "destination" after ParseNotification
	Region            string   // the tunnel's region, used to build the endpoint
	Services          []string // 1 to 3 service identifiers, e.g. "SSH"
}

// TokenFingerprint returns "sha256:" and the first 8 bytes of the SHA-256
// of the access token in hex: enough to correlate log lines, useless to an
// attacker. It returns "none" for an empty token.
func (n Notification) TokenFingerprint() string {
	return Fingerprint(n.ClientAccessToken)
}

// Fingerprint is the redacted form of a secret used in log lines.
func Fingerprint(secret string) string {
	if secret == "" {
		return "none"
	}
	sum := sha256.Sum256([]byte(secret))
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// String returns a one-line description with the token redacted.
func (n Notification) String() string {
	return fmt.Sprintf("notification{mode=%s region=%s services=%s token=%s}",
		n.ClientMode, n.Region, strings.Join(n.Services, ","), n.TokenFingerprint())
}

// GoString is like String, for %#v.
func (n Notification) GoString() string {
	return fmt.Sprintf("notify.Notification{ClientAccessToken:%q, ClientMode:%q, Region:%q, Services:%#v}",
		n.TokenFingerprint(), n.ClientMode, n.Region, n.Services)
}

// Format makes every fmt verb (%v, %+v, %s, %q, %x, …) print the redacted
// form, so no verb can reach the token through reflection.
func (n Notification) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = fmt.Fprint(f, n.GoString())
		return
	}
	_, _ = fmt.Fprint(f, n.String())
}

// LogValue implements [slog.LogValuer] with the token redacted.
func (n Notification) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("mode", n.ClientMode),
		slog.String("region", n.Region),
		slog.Any("services", n.Services),
		slog.String("token", n.TokenFingerprint()),
	)
}

// MarshalJSON writes the notification with the token replaced by its
// fingerprint. It is meant for events and logs; it cannot be parsed back
// into a usable notification.
func (n Notification) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Token    string   `json:"clientAccessTokenFingerprint"`
		Mode     string   `json:"clientMode"`
		Region   string   `json:"region"`
		Services []string `json:"services"`
	}{n.TokenFingerprint(), n.ClientMode, n.Region, n.Services})
}

// ParseNotification decodes and validates a notify payload
// (spec/secure-tunneling.md §4):
//
//	{"clientAccessToken":"…","clientMode":"destination","region":"us-east-1","services":["SSH"]}
//
// Keys are matched exactly; unknown keys are ignored. clientMode must be
// "destination"; the token must be non-empty, at most [MaxTokenSize] bytes,
// ASCII and free of control characters; the region non-empty; services must hold
// 1 to 3 distinct identifiers matching [a-zA-Z0-9:_-]{1,128}. Payloads over
// [MaxPayloadSize] are rejected before parsing. Errors wrap
// [ErrInvalidNotification], name the field and never contain the token.
func ParseNotification(payload []byte) (Notification, error) {
	if len(payload) > MaxPayloadSize {
		return Notification{}, invalid("payload is %d bytes, over the %d-byte limit", len(payload), MaxPayloadSize)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(payload, &fields); err != nil {
		return Notification{}, jsonError("payload", err)
	}
	if fields == nil {
		return Notification{}, invalid("payload is null, want a JSON object")
	}

	var n Notification
	var err error
	if n.ClientAccessToken, err = stringField(fields, "clientAccessToken"); err != nil {
		return Notification{}, err
	}
	if err := checkToken(n.ClientAccessToken); err != nil {
		return Notification{}, err
	}
	if n.ClientMode, err = stringField(fields, "clientMode"); err != nil {
		return Notification{}, err
	}
	if n.ClientMode != ModeDestination {
		return Notification{}, invalid("clientMode is %s, want %q", quoteShort(n.ClientMode), ModeDestination)
	}
	if n.Region, err = stringField(fields, "region"); err != nil {
		return Notification{}, err
	}
	if !isName(n.Region, 1, 64, "._-") {
		return Notification{}, invalid("region %s is not a region name ([a-zA-Z0-9._-]{1,64})", quoteShort(n.Region))
	}
	if n.Services, err = servicesField(fields); err != nil {
		return Notification{}, err
	}
	return n, nil
}

func checkToken(tok string) error {
	if len(tok) > MaxTokenSize {
		return invalid("clientAccessToken is %d bytes, over the %d-byte limit", len(tok), MaxTokenSize)
	}
	for i, r := range tok {
		switch {
		case unicode.IsControl(r):
			return invalid("clientAccessToken has a control character at byte %d", i)
		case r > unicode.MaxASCII:
			// Tokens travel in an HTTP header; JSON turns invalid UTF-8
			// into U+FFFD, so this also catches a mangled token.
			return invalid("clientAccessToken has a non-ASCII character at byte %d", i)
		}
	}
	return nil
}

// stringField returns fields[key] as a non-empty string.
func stringField(fields map[string]json.RawMessage, key string) (string, error) {
	raw, ok := fields[key]
	if !ok || string(raw) == "null" {
		return "", invalid("%s is missing", key)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", jsonError(key, err)
	}
	if s == "" {
		return "", invalid("%s is empty", key)
	}
	return s, nil
}

func servicesField(fields map[string]json.RawMessage) ([]string, error) {
	raw, ok := fields["services"]
	if !ok || string(raw) == "null" {
		return nil, invalid("services is missing")
	}
	var svcs []string
	if err := json.Unmarshal(raw, &svcs); err != nil {
		return nil, jsonError("services", err)
	}
	if len(svcs) == 0 || len(svcs) > MaxServices {
		return nil, invalid("services has %d entries, want 1 to %d", len(svcs), MaxServices)
	}
	for i, s := range svcs {
		if !isName(s, 1, 128, ":_-") {
			return nil, invalid("services[%d] %s is not a service identifier ([a-zA-Z0-9:_-]{1,128})", i, quoteShort(s))
		}
		for _, prev := range svcs[:i] {
			if prev == s {
				return nil, invalid("services[%d] %q is a duplicate", i, s)
			}
		}
	}
	return svcs, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidNotification, fmt.Sprintf(format, args...))
}

// jsonError reports a decoding error without echoing input: encoding/json's
// own messages are safe today, but only positions and type names are kept
// here so that no future message can carry part of a token.
func jsonError(field string, err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return invalid("%s is not valid JSON (syntax error at byte %d)", field, syn.Offset)
	case errors.As(err, &typ):
		want := typ.Type.String()
		switch want {
		case "map[string]json.RawMessage":
			want = "object"
		case "[]string":
			want = "array of strings"
		}
		return invalid("%s: got JSON %s, want %s", field, typ.Value, want)
	default:
		return invalid("%s is not valid JSON", field)
	}
}

// quoteShort quotes a value for an error message, cut to 64 bytes so that a
// hostile payload cannot flood the log.
func quoteShort(s string) string {
	const max = 64
	if len(s) > max {
		return fmt.Sprintf("%q… (%d bytes)", s[:max], len(s))
	}
	return fmt.Sprintf("%q", s)
}
