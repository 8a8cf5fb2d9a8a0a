package notify

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// testToken looks like a real client access token: long and base64-ish, so
// a test that finds it in output finds a real leak.
const testToken = "AQGAAXiTcR2sHcVh2VbT0e4ZGdE7CWs1AAEAAQI5MzhlZDQ0OC1mZjcxLTRlZTktOWU4My0xZGFmNmY4N2YyMmUAG"

type parseCase struct {
	name    string
	payload string
	want    Notification
	wantErr string // substring of the error; "" means success
}

var parseCases = []parseCase{
	{
		name:    "example from the spec",
		payload: `{"clientAccessToken":"` + testToken + `","clientMode":"destination","region":"us-east-1","services":["SSH"]}`,
		want:    Notification{ClientAccessToken: testToken, ClientMode: "destination", Region: "us-east-1", Services: []string{"SSH"}},
	},
	{
		name:    "three services and unknown fields ignored",
		payload: `{"tunnelId":"x","clientAccessToken":"` + testToken + `","clientMode":"destination","region":"eu-west-1","services":["SSH","VNC","http:8080"],"extra":{"a":[1,2]}}`,
		want:    Notification{ClientAccessToken: testToken, ClientMode: "destination", Region: "eu-west-1", Services: []string{"SSH", "VNC", "http:8080"}},
	},
	{
		// AWS's quota of 3 services per tunnel may be raised (spec §3.4).
		name:    "four services, a raised quota",
		payload: `{"clientAccessToken":"` + testToken + `","clientMode":"destination","region":"eu-west-1","services":["SSH","VNC","WEB","RDP"]}`,
		want:    Notification{ClientAccessToken: testToken, ClientMode: "destination", Region: "eu-west-1", Services: []string{"SSH", "VNC", "WEB", "RDP"}},
	},
	{
		name:    "whitespace around",
		payload: " \n{ \"clientAccessToken\" : \"" + testToken + "\", \"clientMode\": \"destination\", \"region\": \"local\", \"services\": [ \"SSH\" ] }\n",
		want:    Notification{ClientAccessToken: testToken, ClientMode: "destination", Region: "local", Services: []string{"SSH"}},
	},
	{name: "empty payload", payload: ``, wantErr: "payload is not valid JSON"},
	{name: "not JSON", payload: `clientAccessToken=` + testToken, wantErr: "payload is not valid JSON"},
	{name: "truncated", payload: `{"clientAccessToken":"` + testToken, wantErr: "payload is not valid JSON"},
	{name: "array", payload: `["` + testToken + `"]`, wantErr: "payload: got JSON array, want object"},
	{name: "null", payload: `null`, wantErr: "payload is null"},
	{name: "empty object", payload: `{}`, wantErr: "clientAccessToken is missing"},
	{
		name:    "token missing",
		payload: `{"clientMode":"destination","region":"us-east-1","services":["SSH"]}`,
		wantErr: "clientAccessToken is missing",
	},
	{
		name:    "token null",
		payload: `{"clientAccessToken":null,"clientMode":"destination","region":"us-east-1","services":["SSH"]}`,
		wantErr: "clientAccessToken is missing",
	},
	{
		name:    "token empty",
		payload: `{"clientAccessToken":"","clientMode":"destination","region":"us-east-1","services":["SSH"]}`,
		wantErr: "clientAccessToken is empty",
	},
	{
		name:    "token a number",
		payload: `{"clientAccessToken":12345678901234,"clientMode":"destination","region":"us-east-1","services":["SSH"]}`,
		wantErr: "clientAccessToken: got JSON number, want string",
	},
	{
		name:    "token with a newline",
		payload: `{"clientAccessToken":"` + testToken + `\n","clientMode":"destination","region":"us-east-1","services":["SSH"]}`,
		wantErr: "clientAccessToken has a control character at byte 89",
	},
	{
		name:    "token with NUL",
		payload: `{"clientAccessToken":"` + testToken[:10] + `\u0000` + testToken[10:] + `","clientMode":"destination","region":"us-east-1","services":["SSH"]}`,
		wantErr: "clientAccessToken has a control character at byte 10",
	},
	{
		name:    "token with DEL",
		payload: `{"clientAccessToken":"abc\u007fdef","clientMode":"destination","region":"us-east-1","services":["SSH"]}`,
		wantErr: "clientAccessToken has a control character at byte 3",
	},
	{
		name:    "token with a C1 control",
		payload: `{"clientAccessToken":"abc\u0085def","clientMode":"destination","region":"us-east-1","services":["SSH"]}`,
		wantErr: "clientAccessToken has a control character at byte 3",
	},
	{
		name:    "token not ASCII",
		payload: "{\"clientAccessToken\":\"abc\xffdef\",\"clientMode\":\"destination\",\"region\":\"us-east-1\",\"services\":[\"SSH\"]}",
		wantErr: "clientAccessToken has a non-ASCII character at byte 3",
	},
	{
		name:    "token with a Latin-1 letter",
		payload: `{"clientAccessToken":"abc\u00e9def","clientMode":"destination","region":"us-east-1","services":["SSH"]}`,
		wantErr: "clientAccessToken has a non-ASCII character at byte 3",
	},
	{
		name:    "token too long",
		payload: `{"clientAccessToken":"` + strings.Repeat(testToken, 50) + `","clientMode":"destination","region":"us-east-1","services":["SSH"]}`,
		wantErr: "clientAccessToken is 4450 bytes, over the 4096-byte limit",
	},
	{
		name:    "key case differs",
		payload: `{"ClientAccessToken":"` + testToken + `","clientMode":"destination","region":"us-east-1","services":["SSH"]}`,
		wantErr: "clientAccessToken is missing",
	},
	{
		name:    "source mode",
		payload: `{"clientAccessToken":"` + testToken + `","clientMode":"source","region":"us-east-1","services":["SSH"]}`,
		wantErr: `clientMode is "source", want "destination"`,
	},
	{
		name:    "mode upper case",
		payload: `{"clientAccessToken":"` + testToken + `","clientMode":"DESTINATION","region":"us-east-1","services":["SSH"]}`,
		wantErr: `clientMode is "DESTINATION", want "destination"`,
	},
	{
		name:    "mode missing",
		payload: `{"clientAccessToken":"` + testToken + `","region":"us-east-1","services":["SSH"]}`,
		wantErr: "clientMode is missing",
	},
	{
		name:    "region missing",
		payload: `{"clientAccessToken":"` + testToken + `","clientMode":"destination","services":["SSH"]}`,
		wantErr: "region is missing",
	},
	{
		name:    "region empty",
		payload: `{"clientAccessToken":"` + testToken + `","clientMode":"destination","region":"","services":["SSH"]}`,
		wantErr: "region is empty",
	},
	{
		name:    "region with a slash",
		payload: `{"clientAccessToken":"` + testToken + `","clientMode":"destination","region":"evil.example/x","services":["SSH"]}`,
		wantErr: `region "evil.example/x" is not a region name`,
	},
	{
		name:    "services missing",
		payload: `{"clientAccessToken":"` + testToken + `","clientMode":"destination","region":"us-east-1"}`,
		wantErr: "services is missing",
	},
	{
		name:    "services empty",
		payload: `{"clientAccessToken":"` + testToken + `","clientMode":"destination","region":"us-east-1","services":[]}`,
		wantErr: "services has 0 entries, want 1 to 64",
	},
	{
		name:    "65 services",
		payload: `{"clientAccessToken":"` + testToken + `","clientMode":"destination","region":"us-east-1","services":["S` + strings.Repeat(`","S`, 64) + `"]}`,
		wantErr: "services has 65 entries, want 1 to 64",
	},
	{
		name:    "services a string",
		payload: `{"clientAccessToken":"` + testToken + `","clientMode":"destination","region":"us-east-1","services":"SSH"}`,
		wantErr: "services: got JSON string, want array of strings",
	},
	{
		name:    "service a number",
		payload: `{"clientAccessToken":"` + testToken + `","clientMode":"destination","region":"us-east-1","services":[22]}`,
		wantErr: "services: got JSON number, want string",
	},
	{
		name:    "service empty",
		payload: `{"clientAccessToken":"` + testToken + `","clientMode":"destination","region":"us-east-1","services":["SSH",""]}`,
		wantErr: `services[1] "" is not a service identifier`,
	},
	{
		name:    "service with a space",
		payload: `{"clientAccessToken":"` + testToken + `","clientMode":"destination","region":"us-east-1","services":["S SH"]}`,
		wantErr: `services[0] "S SH" is not a service identifier`,
	},
	{
		name:    "service too long",
		payload: `{"clientAccessToken":"` + testToken + `","clientMode":"destination","region":"us-east-1","services":["` + strings.Repeat("a", 129) + `"]}`,
		wantErr: `services[0] "aaaa`,
	},
	{
		name:    "duplicate service",
		payload: `{"clientAccessToken":"` + testToken + `","clientMode":"destination","region":"us-east-1","services":["SSH","VNC","SSH"]}`,
		wantErr: `services[2] "SSH" is a duplicate`,
	},
	{
		name:    "over 16 KiB",
		payload: `{"clientAccessToken":"` + testToken + `","clientMode":"destination","region":"us-east-1","services":["SSH"],"pad":"` + strings.Repeat(" ", 16<<10) + `"}`,
		wantErr: "payload is 16573 bytes, over the 16384-byte limit",
	},
}

func TestParseNotification(t *testing.T) {
	for _, tc := range parseCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseNotification([]byte(tc.payload))
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseNotification = %v, want error %q", got, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("ParseNotification error = %q, want it to contain %q", err, tc.wantErr)
				}
				if !errors.Is(err, ErrInvalidNotification) {
					t.Errorf("error %q does not wrap ErrInvalidNotification", err)
				}
				if strings.Contains(err.Error(), testToken[:16]) {
					t.Errorf("error %q contains the token", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseNotification: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseNotification mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestNotificationRedacted prints, logs and marshals a notification every
// way a caller might, and checks the token never shows.
func TestNotificationRedacted(t *testing.T) {
	n := Notification{ClientAccessToken: testToken, ClientMode: "destination", Region: "us-east-1", Services: []string{"SSH"}}
	fp := n.TokenFingerprint()
	if !strings.HasPrefix(fp, "sha256:") || len(fp) != len("sha256:")+16 {
		t.Fatalf("TokenFingerprint = %q, want sha256: and 16 hex digits", fp)
	}

	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3v"} {
		outs = append(outs, fmt.Sprintf(verb, n), fmt.Sprintf(verb, &n), fmt.Sprintf(verb, []Notification{n}))
	}
	outs = append(outs, n.String(), n.GoString(), fmt.Sprint(n), fmt.Sprintln(map[string]Notification{"n": n}))
	js, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(js))
	js, err = json.Marshal(struct{ N *Notification }{&n})
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(js))

	var buf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&buf, nil), slog.NewJSONHandler(&buf, nil)} {
		log := slog.New(h)
		log.Info("n", "notification", n)
		log.Info("n", "notification", &n)
		log.Info("n", slog.Any("notification", n))
	}
	outs = append(outs, buf.String())

	for _, out := range outs {
		if strings.Contains(out, testToken[:12]) {
			t.Errorf("output contains the token: %s", out)
		}
	}
	if !strings.Contains(buf.String(), fp) || !strings.Contains(buf.String(), "us-east-1") {
		t.Errorf("log output lacks the fingerprint or the region: %s", buf.String())
	}
	if s := fmt.Sprintf("%v", n); !strings.Contains(s, fp) || !strings.Contains(s, "SSH") {
		t.Errorf("%%v = %q, want the fingerprint and the services", s)
	}
}

// FuzzParseNotification checks that the parser never panics, that what it
// accepts satisfies the rules, and that no error carries the token.
func FuzzParseNotification(f *testing.F) {
	for _, tc := range parseCases {
		f.Add([]byte(tc.payload))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		n, err := ParseNotification(payload)
		if err != nil {
			if !errors.Is(err, ErrInvalidNotification) {
				t.Fatalf("error %q does not wrap ErrInvalidNotification", err)
			}
			var raw struct {
				Token string `json:"clientAccessToken"`
			}
			if json.Unmarshal(payload, &raw) == nil && len(raw.Token) >= 8 && strings.Contains(err.Error(), raw.Token) {
				t.Fatalf("error %q contains the token", err)
			}
			return
		}
		if len(payload) > MaxPayloadSize {
			t.Fatalf("accepted a %d-byte payload", len(payload))
		}
		if n.ClientMode != ModeDestination || n.Region == "" || n.ClientAccessToken == "" ||
			len(n.ClientAccessToken) > MaxTokenSize || !isPrintableASCII(n.ClientAccessToken) {
			t.Fatalf("accepted %#v", n)
		}
		if len(n.Services) < 1 || len(n.Services) > MaxServices {
			t.Fatalf("accepted %d services", len(n.Services))
		}
		seen := map[string]bool{}
		for _, s := range n.Services {
			if !serviceRE.MatchString(s) || seen[s] {
				t.Fatalf("accepted service %q in %q", s, n.Services)
			}
			seen[s] = true
		}
		if s := fmt.Sprint(n); len(n.ClientAccessToken) >= 8 && strings.Contains(s, n.ClientAccessToken) {
			t.Fatalf("String shows the token: %s", s)
		}
	})
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// serviceRE is the reference for the service id syntax that syntax.Name implements.
var serviceRE = regexp.MustCompile(`^[a-zA-Z0-9:_-]{1,128}$`)

// TestParseNotificationSizeLimits: a payload of MaxPayloadSize bytes and a
// token of MaxTokenSize bytes are read; one byte more of either is refused.
func TestParseNotificationSizeLimits(t *testing.T) {
	payload := func(tok string, size int) []byte {
		b := []byte(`{"clientAccessToken":"` + tok + `","clientMode":"destination","region":"us-east-1","services":["SSH"]}`)
		if pad := size - len(b); pad > 0 {
			b = append(b[:len(b)-1], []byte(`,"pad":"`+strings.Repeat("x", max(pad-len(`,"pad":""`), 0))+`"}`)...)
		}
		return b
	}
	tok := strings.Repeat("a", MaxTokenSize)
	if _, err := ParseNotification(payload(tok, 0)); err != nil {
		t.Errorf("token of %d bytes: %v", MaxTokenSize, err)
	}
	if _, err := ParseNotification(payload(tok+"a", 0)); err == nil || !strings.Contains(err.Error(), "over the 4096-byte limit") {
		t.Errorf("token of %d bytes: %v, want refused", MaxTokenSize+1, err)
	}
	if b := payload("t", MaxPayloadSize); len(b) != MaxPayloadSize {
		t.Fatalf("test payload of %d bytes, want %d", len(b), MaxPayloadSize)
	} else if _, err := ParseNotification(b); err != nil {
		t.Errorf("payload of %d bytes: %v", len(b), err)
	}
	if b := payload("t", MaxPayloadSize+1); len(b) != MaxPayloadSize+1 {
		t.Fatalf("test payload of %d bytes, want %d", len(b), MaxPayloadSize+1)
	} else if _, err := ParseNotification(b); err == nil || !strings.Contains(err.Error(), "over the") {
		t.Errorf("payload of %d bytes: %v, want refused", len(b), err)
	}
}
