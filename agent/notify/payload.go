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

	"github.com/porthole-iot/porthole/agent/internal/jsonlite"
	"github.com/porthole-iot/porthole/agent/internal/syntax"
)

// Limits on a notification payload (spec/secure-tunneling.md §4).
const (
	// MaxPayloadSize is the largest notify payload accepted. A real one is a
	// few hundred bytes; anything this large is rejected before parsing.
	MaxPayloadSize = 16 << 10
	// MaxTokenSize is the longest client access token accepted.
	MaxTokenSize = 4096
	// MaxServices is the most services one tunnel may name. AWS's quota is
	// 3 per tunnel, but an account may have it raised (spec §3.4, §7): a
	// device that refused more would never join such a tunnel, whose source
	// (porthole connect) takes up to as many. The services it does not serve
	// get their streams reset.
	MaxServices = 64
	// ModeDestination is the only client mode a device accepts.
	ModeDestination = "destination"
)

// ErrInvalidNotification is wrapped by every error of [ParseNotification].
var ErrInvalidNotification error = &errorString{"notify: invalid notification"}

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
	Services          []string // 1 to MaxServices service identifiers, e.g. "SSH"
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
	return "notification{mode=" + n.ClientMode + " region=" + n.Region + " services=" + strings.Join(n.Services, ",") +
		" token=" + n.TokenFingerprint() + "}"
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
// 1 to [MaxServices] distinct identifiers matching [a-zA-Z0-9:_-]{1,128}. Payloads over
// [MaxPayloadSize] are rejected before parsing. Errors wrap
// [ErrInvalidNotification], name the field and never contain the token.
func ParseNotification(payload []byte) (Notification, error) {
	if len(payload) > MaxPayloadSize {
		return Notification{}, invalid("payload is %d bytes, over the %d-byte limit", len(payload), MaxPayloadSize)
	}
	doc, err := jsonlite.Parse(payload)
	if err != nil {
		return Notification{}, syntaxError("payload", err)
	}
	switch doc.Kind() {
	case jsonlite.Object:
	case jsonlite.Null:
		return Notification{}, invalid("payload is null, want a JSON object")
	default:
		return Notification{}, invalid("payload: got JSON %s, want object", doc.Kind())
	}
	var token, mode, region, services jsonlite.Value // zero (null) if missing
	for _, m := range doc.Members() {
		// Keys match exactly; of a repeated key the last wins, as it did
		// when encoding/json decoded the payload.
		switch m.Key {
		case "clientAccessToken":
			token = m.Value
		case "clientMode":
			mode = m.Value
		case "region":
			region = m.Value
		case "services":
			services = m.Value
		}
	}

	var n Notification
	if n.ClientAccessToken, err = stringField(token, "clientAccessToken"); err != nil {
		return Notification{}, err
	}
	if err := checkToken(n.ClientAccessToken); err != nil {
		return Notification{}, err
	}
	if n.ClientMode, err = stringField(mode, "clientMode"); err != nil {
		return Notification{}, err
	}
	if n.ClientMode != ModeDestination {
		return Notification{}, invalid("clientMode is %s, want %q", quoteShort(n.ClientMode), ModeDestination)
	}
	if n.Region, err = stringField(region, "region"); err != nil {
		return Notification{}, err
	}
	if !syntax.Name(n.Region, 1, 64, "._-") {
		return Notification{}, invalid("region %s is not a region name ([a-zA-Z0-9._-]{1,64})", quoteShort(n.Region))
	}
	if n.Services, err = servicesField(services); err != nil {
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

// stringField returns v, the value of key, as a non-empty string.
func stringField(v jsonlite.Value, key string) (string, error) {
	switch v.Kind() {
	case jsonlite.Null:
		return "", invalid("%s is missing", key)
	case jsonlite.String:
	default:
		return "", invalid("%s: got JSON %s, want string", key, v.Kind())
	}
	s := v.Text()
	if s == "" {
		return "", invalid("%s is empty", key)
	}
	return s, nil
}

func servicesField(v jsonlite.Value) ([]string, error) {
	switch v.Kind() {
	case jsonlite.Null:
		return nil, invalid("services is missing")
	case jsonlite.Array:
	default:
		return nil, invalid("services: got JSON %s, want array of strings", v.Kind())
	}
	var svcs []string
	for _, e := range v.Elements() {
		switch e.Kind() {
		case jsonlite.String, jsonlite.Null: // null is "", refused below
			svcs = append(svcs, e.Text())
		default:
			return nil, invalid("services: got JSON %s, want string", e.Kind())
		}
	}
	if len(svcs) == 0 || len(svcs) > MaxServices {
		return nil, invalid("services has %d entries, want 1 to %d", len(svcs), MaxServices)
	}
	for i, s := range svcs {
		if !syntax.Name(s, 1, 128, ":_-") {
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

// syntaxError reports a payload that is not JSON without echoing input:
// encoding/json's own messages are safe today, but only the position is kept
// here so that no future message can carry part of a token.
func syntaxError(field string, err error) error {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return invalid("%s is not valid JSON (syntax error at byte %d)", field, syn.Offset)
	}
	return invalid("%s is not valid JSON", field)
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
