package tunneld

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The get-vanilla case of the AWS SigV4 test suite.
func TestSigV4Vanilla(t *testing.T) {
	s := &Server{cfg: Config{
		Credentials: map[string]string{"AKIDEXAMPLE": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"},
		now:         func() time.Time { return time.Date(2015, 8, 30, 12, 36, 0, 0, time.UTC) },
		signingName: "service", // the suite's scope is 20150830/us-east-1/service/aws4_request
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
		{"credential not ending in aws4_request", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws5_request, SignedHeaders=host;x-amz-date, Signature=" + sig, ErrTypeIncompleteSigature, time.Time{}},
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

// TestSigV4Scope: a request signed with a known key, but for another region or
// service, is refused as AWS refuses it, and the answer names the scope wanted.
func TestSigV4Scope(t *testing.T) {
	const secret = "porthole-scope-secret"
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name, serverRegion, region, service string
		wantMsg                             string // "" means accepted
	}{
		{"default region", "", "us-east-1", SigningName, ""},
		{"configured region", "eu-west-1", "eu-west-1", SigningName, ""},
		{"other region", "", "eu-west-1", SigningName, "not 'eu-west-1'; want the scope 20261130/us-east-1/IoTSecuredTunneling/aws4_request"},
		{"default region at a configured one", "eu-west-1", "us-east-1", SigningName, "want the scope 20261130/eu-west-1/IoTSecuredTunneling/aws4_request"},
		{"other service", "", "us-east-1", "iot", "'IoTSecuredTunneling', not 'iot'; want the scope 20261130/us-east-1/IoTSecuredTunneling/aws4_request"},
		{"endpoint prefix as service", "", "us-east-1", "api.tunneling.iot", "not 'api.tunneling.iot'"},
		{"service in lower case", "", "us-east-1", "iotsecuredtunneling", "not 'iotsecuredtunneling'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{cfg: Config{Region: tc.serverRegion, Credentials: map[string]string{"AKID": secret}, now: func() time.Time { return now }}}
			body := []byte(`{}`)
			req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:1/", nil)
			req.Header.Set("Content-Type", "application/x-amz-json-1.1")
			req.Header.Set("X-Amz-Target", "IoTSecuredTunneling.ListTunnels")
			SignV4(req, body, "AKID", secret, "", tc.region, tc.service, now)
			err := s.checkAuth(req, body)
			if tc.wantMsg == "" {
				if err != nil {
					t.Fatalf("checkAuth = %v, want nil", err)
				}
				return
			}
			ae, ok := err.(*APIError)
			if !ok || ae.Type != ErrTypeInvalidSignature || ae.status() != http.StatusForbidden || !strings.Contains(ae.Message, tc.wantMsg) {
				t.Fatalf("checkAuth = %v, want 403 %s mentioning %q", err, ErrTypeInvalidSignature, tc.wantMsg)
			}
			if strings.Contains(ae.Message, secret) || strings.Contains(ae.Message, "AKID") {
				t.Errorf("the error %q shows the credentials", ae.Message)
			}
		})
	}

	// Over HTTP, the refusal is AWS's JSON error.
	ts := startServer(t, Config{Region: "eu-west-1", Credentials: map[string]string{"AKID": secret}})
	body := []byte(`{}`)
	req, _ := http.NewRequest(http.MethodPost, "http://"+ts.addr+"/", bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("X-Amz-Target", targetPrefix+"ListTunnels")
	SignV4(req, body, "AKID", secret, "", "us-east-1", SigningName, time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	if msg, _ := m["message"].(string); resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Amzn-ErrorType") != ErrTypeInvalidSignature ||
		m["__type"] != ErrTypeInvalidSignature || !strings.Contains(msg, "/eu-west-1/IoTSecuredTunneling/aws4_request") {
		t.Errorf("signed for us-east-1 at an eu-west-1 server: %d %v, want 403 %s naming the eu-west-1 scope", resp.StatusCode, m, ErrTypeInvalidSignature)
	}
}

// FuzzSigV4 checks a control-plane request's Authorization header, which any
// caller sends: whatever it holds, the answer is a 403 APIError unless the
// request is signed with the configured secret, and a request SignV4 signed
// verifies.
func FuzzSigV4(f *testing.F) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s := &Server{cfg: Config{Credentials: map[string]string{"AKID": "secret"}, now: func() time.Time { return now }}}
	signed := func(body []byte) *http.Request {
		req, _ := http.NewRequest("POST", "http://localhost/", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-amz-json-1.1")
		req.Header.Set("X-Amz-Target", "IoTSecuredTunneling.ListTunnels")
		SignV4(req, body, "AKID", "secret", "", DefaultRegion, SigningName, now)
		return req
	}
	good := signed([]byte("{}")).Header.Get("Authorization")
	f.Add(good, []byte("{}"))
	f.Add(strings.Replace(good, "Signature=", "Signature=0", 1), []byte("{}"))
	f.Add("AWS4-HMAC-SHA256 Credential=AKID//"+DefaultRegion+"/"+SigningName+"/aws4_request, SignedHeaders=host, Signature=x", []byte(""))
	f.Add("AWS4-HMAC-SHA256 ,,,=", []byte("x"))
	f.Fuzz(func(t *testing.T, auth string, body []byte) {
		req := signed(body)
		if a, err := parseSigV4(req.Header.Get("Authorization")); err != nil {
			t.Fatalf("SignV4's header does not parse: %v", err)
		} else if err := s.verifySigV4(req, a, body); err != nil {
			t.Fatalf("SignV4's request does not verify: %v", err)
		}
		if auth == req.Header.Get("Authorization") {
			return
		}
		a, err := parseSigV4(auth)
		if err == nil {
			req.Header.Set("Authorization", auth)
			err = s.verifySigV4(req, a, body)
			if err == nil {
				want, _ := parseSigV4(signed(body).Header.Get("Authorization"))
				if a.signature != want.signature {
					t.Fatalf("Authorization %q verifies with signature %q, want %q", auth, a.signature, want.signature)
				}
				return
			}
		}
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusForbidden || ae.Type == "" {
			t.Fatalf("Authorization %q: %v, want a 403 APIError", auth, err)
		}
	})
}

// TestSigV4RefusalsWithValidSignature: each request carries a signature that
// is right for what it signed, so that only the rule named refuses it (a
// wrong signature would be refused whether or not the rule is checked).
func TestSigV4RefusalsWithValidSignature(t *testing.T) {
	const secret = "porthole-refusal-secret"
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	s := &Server{cfg: Config{Credentials: map[string]string{"AKID": secret}, now: func() time.Time { return now }}}
	body := []byte(`{}`)
	// sign signs r as made at at, with the given signed headers and the
	// credential's day (the X-Amz-Date's when "").
	sign := func(r *http.Request, at time.Time, signed []string, credDay string) {
		amzDate := at.Format("20060102T150405Z")
		r.Header.Set("X-Amz-Date", amzDate)
		if credDay == "" {
			credDay = amzDate[:8]
		}
		sig := signature(secret, amzDate, DefaultRegion, SigningName, canonicalRequest(r, signed, body))
		r.Header.Set("Authorization", fmt.Sprintf("AWS4-HMAC-SHA256 Credential=AKID/%s/%s/%s/aws4_request, SignedHeaders=%s, Signature=%s",
			credDay, DefaultRegion, SigningName, strings.Join(signed, ";"), sig))
	}
	newReq := func(url string) *http.Request {
		r, _ := http.NewRequest(http.MethodPost, url, nil)
		r.Header.Set("Content-Type", contentType)
		r.Header.Set("X-Amz-Target", targetPrefix+"ListTunnels")
		return r
	}
	all := []string{"content-type", "host", "x-amz-date", "x-amz-target"}
	for _, tc := range []struct {
		name    string
		req     func() *http.Request
		wantMsg string // "" means accepted
	}{
		{"valid", func() *http.Request { r := newReq("http://127.0.0.1:1/"); sign(r, now, all, ""); return r }, ""},
		{"valid, 14 minutes ahead", func() *http.Request {
			r := newReq("http://127.0.0.1:1/")
			sign(r, now.Add(14*time.Minute), all, "")
			return r
		}, ""},
		{"host not signed", func() *http.Request {
			r := newReq("http://127.0.0.1:1/")
			sign(r, now, []string{"content-type", "x-amz-date", "x-amz-target"}, "")
			return r
		}, "host header must be signed"},
		{"dated 20 minutes ahead", func() *http.Request {
			r := newReq("http://127.0.0.1:1/")
			sign(r, now.Add(20*time.Minute), all, "")
			return r
		}, "more than 15 minutes from the server's time"},
		{"dated 20 minutes ago", func() *http.Request {
			r := newReq("http://127.0.0.1:1/")
			sign(r, now.Add(-20*time.Minute), all, "")
			return r
		}, "more than 15 minutes from the server's time"},
		{"credential of another day", func() *http.Request {
			r := newReq("http://127.0.0.1:1/")
			sign(r, now, all, "20261129")
			return r
		}, "not the credential's date"},
		// The day in full: AWS refuses a credential scope of "2026" or
		// "202611", and so does a client that checks what it signs here.
		{"credential of a part of the day", func() *http.Request {
			r := newReq("http://127.0.0.1:1/")
			sign(r, now, all, "202611")
			return r
		}, "not the credential's date"},
		{"credential of the day and more", func() *http.Request {
			r := newReq("http://127.0.0.1:1/")
			sign(r, now, all, "20261130T")
			return r
		}, "not the credential's date"},
		{"query changed after signing", func() *http.Request {
			r := newReq("http://127.0.0.1:1/?maxResults=1")
			sign(r, now, all, "")
			r.URL.RawQuery = "maxResults=2"
			return r
		}, "signature we calculated does not match"},
		{"target changed after signing", func() *http.Request {
			r := newReq("http://127.0.0.1:1/")
			sign(r, now, all, "")
			r.Header.Set("X-Amz-Target", targetPrefix+"CloseTunnel")
			return r
		}, "signature we calculated does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.checkAuth(tc.req(), body)
			if tc.wantMsg == "" {
				if err != nil {
					t.Fatalf("checkAuth = %v, want nil", err)
				}
				return
			}
			ae, ok := err.(*APIError)
			if !ok || ae.status() != http.StatusForbidden || !strings.Contains(ae.Message, tc.wantMsg) {
				t.Fatalf("checkAuth = %v, want 403 mentioning %q", err, tc.wantMsg)
			}
		})
	}
}

// checkAuth is handleAPI's check of a request's authentication with its body
// read: checkAuthHeader, then the signature.
func (s *Server) checkAuth(r *http.Request, body []byte) error {
	a, err := s.checkAuthHeader(r)
	if err != nil || a == nil {
		return err
	}
	return s.verifySigV4(r, a, body)
}

// The AWS SigV4 test suite's get-header-value-trim: a signed header's value is
// trimmed and its runs of spaces made one in the canonical request, as the AWS
// CLI and SDKs sign it; a header the client sent with a double space was
// refused with a valid signature otherwise.
func TestSigV4HeaderValueTrim(t *testing.T) {
	s := &Server{cfg: Config{
		Credentials: map[string]string{"AKIDEXAMPLE": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"},
		now:         func() time.Time { return time.Date(2015, 8, 30, 12, 36, 0, 0, time.UTC) },
		signingName: "service",
	}}
	r, _ := http.NewRequest("GET", "https://example.amazonaws.com/", nil)
	r.Host = "example.amazonaws.com"
	r.Header.Set("My-Header1", " value1")
	r.Header.Set("My-Header2", ` "a   b   c"`)
	r.Header.Set("X-Amz-Date", "20150830T123600Z")
	r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "+
		"SignedHeaders=host;my-header1;my-header2;x-amz-date, Signature=acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736")
	if err := s.checkAuth(r, nil); err != nil {
		t.Fatalf("checkAuth of the suite's get-header-value-trim = %v, want nil", err)
	}
}
