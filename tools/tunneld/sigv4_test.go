package tunneld

import (
	"net/http"
	"testing"
	"time"
)

// The get-vanilla case of the AWS SigV4 test suite.
func TestSigV4Vanilla(t *testing.T) {
	s := &Server{cfg: Config{
		Credentials: map[string]string{"AKIDEXAMPLE": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"},
		now:         func() time.Time { return time.Date(2015, 8, 30, 12, 36, 0, 0, time.UTC) },
	}}
	const sig = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
	for _, tc := range []struct {
		name, auth, wantType string
		now                  time.Time
	}{
		{"valid", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + sig, "", time.Time{}},
		{"wrong signature", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + sig[1:] + "0", ErrTypeInvalidSignature, time.Time{}},
		{"other region", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + sig, ErrTypeInvalidSignature, time.Time{}},
		{"unknown key", "AWS4-HMAC-SHA256 Credential=AKIDOTHER/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + sig, ErrTypeUnrecognizedClient, time.Time{}},
		{"host not signed", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=x-amz-date, Signature=" + sig, ErrTypeInvalidSignature, time.Time{}},
		{"expired", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + sig, ErrTypeInvalidSignature, time.Date(2015, 8, 30, 12, 52, 0, 0, time.UTC)},
		{"no credential", "AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date, Signature=" + sig, ErrTypeIncompleteSigature, time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.now.IsZero() {
				defer func(f func() time.Time) { s.cfg.now = f }(s.cfg.now)
				s.cfg.now = func() time.Time { return tc.now }
			}
			r, _ := http.NewRequest("GET", "https://example.amazonaws.com/", nil)
			r.Host = "example.amazonaws.com"
			r.Header.Set("X-Amz-Date", "20150830T123600Z")
			r.Header.Set("Authorization", tc.auth)
			err := s.checkAuth(r, nil)
			if tc.wantType == "" {
				if err != nil {
					t.Fatalf("checkAuth = %v, want nil", err)
				}
				return
			}
			ae, ok := err.(*APIError)
			if !ok || ae.Type != tc.wantType || ae.status() != http.StatusForbidden {
				t.Errorf("checkAuth = %v, want 403 %s", err, tc.wantType)
			}
		})
	}
}

// TestSignV4: SignV4 gives the get-vanilla vector's Authorization, and what it
// signs (a POST with a body and a session token) is what the server accepts.
func TestSignV4(t *testing.T) {
	now := time.Date(2015, 8, 30, 12, 36, 0, 0, time.UTC)
	req, _ := http.NewRequest(http.MethodGet, "https://example.amazonaws.com/", nil)
	SignV4(req, nil, "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "", "us-east-1", "service", now)
	want := "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, " +
		"Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
	if got := req.Header.Get("Authorization"); got != want {
		t.Fatalf("Authorization = %q\nwant %q", got, want)
	}

	s := &Server{cfg: Config{Credentials: map[string]string{"AKID": "secret"}, now: func() time.Time { return now }}}
	body := []byte(`{"description":"x"}`)
	req, _ = http.NewRequest(http.MethodPost, "http://127.0.0.1:1/", nil)
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "IoTSecuredTunneling.OpenTunnel")
	SignV4(req, body, "AKID", "secret", "session", "us-east-1", "IoTSecuredTunneling", now)
	if err := s.checkAuth(req, body); err != nil {
		t.Fatalf("the server refused SignV4's request: %v", err)
	}
	if err := s.checkAuth(req, []byte(`{"description":"y"}`)); err == nil {
		t.Fatal("the server accepted a changed body")
	}
}
