package console

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/tools/tunneld"
)

// TestControlPlaneAPI opens and closes a tunnel over HTTP, as porthole-console
// --control-plane does, against a tunneld that verifies SigV4 signatures; then
// against one without credentials, which wants only the header's shape.
func TestControlPlaneAPI(t *testing.T) {
	t.Run("signed", func(t *testing.T) {
		testControlPlaneAPI(t, map[string]string{"AKIDPORTHOLE": "s3cr3t"}, Credentials{AccessKeyID: "AKIDPORTHOLE", SecretAccessKey: "s3cr3t"}, "")
	})
	t.Run("session token", func(t *testing.T) {
		testControlPlaneAPI(t, map[string]string{"AKIDPORTHOLE": "s3cr3t"}, Credentials{AccessKeyID: "AKIDPORTHOLE", SecretAccessKey: "s3cr3t", SessionToken: "sess/ion+token"}, "")
	})
	t.Run("wrong secret", func(t *testing.T) {
		testControlPlaneAPI(t, map[string]string{"AKIDPORTHOLE": "s3cr3t"}, Credentials{AccessKeyID: "AKIDPORTHOLE", SecretAccessKey: "guess"}, "InvalidSignatureException")
	})
	t.Run("unsigned", func(t *testing.T) {
		testControlPlaneAPI(t, nil, Credentials{}, "")
	})
	t.Run("unsigned against credentials", func(t *testing.T) {
		testControlPlaneAPI(t, map[string]string{"AKIDPORTHOLE": "s3cr3t"}, Credentials{}, "UnrecognizedClientException")
	})
}

func testControlPlaneAPI(t *testing.T, creds map[string]string, c Credentials, wantErr string) {
	td, err := tunneld.New(tunneld.Config{Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); td.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		td.Shutdown(ctx)
		<-done
	}()

	api := &ControlPlaneAPI{URL: "http://" + ln.Addr().String(), Credentials: c}
	ctx := context.Background()
	id, tok, err := api.OpenTunnel(ctx, "dev1", []string{"SSH", "HTTP"}, 30*time.Minute, newAttempt())
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("OpenTunnel = %v, want %s", err, wantErr)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if id == "" || tok.IsZero() {
		t.Fatalf("OpenTunnel = %q, %v", id, tok)
	}
	d, err := td.DescribeTunnel(ctx, &tunneld.DescribeTunnelInput{TunnelID: id})
	if err != nil {
		t.Fatal(err)
	}
	if d.Tunnel.DestinationConfig.ThingName != "dev1" || len(d.Tunnel.DestinationConfig.Services) != 2 ||
		d.Tunnel.TimeoutConfig.MaxLifetimeTimeoutMinutes != 30 {
		t.Fatalf("the tunnel opened: %+v", d.Tunnel)
	}
	// Nobody has joined as the destination.
	if joined, err := api.DestinationConnected(ctx, id); joined || err != nil {
		t.Fatalf("DestinationConnected = %v, %v; want false", joined, err)
	}
	if err := api.CloseTunnel(ctx, id); err != nil {
		t.Fatal(err)
	}
	if d, _ := td.DescribeTunnel(ctx, &tunneld.DescribeTunnelInput{TunnelID: id}); d.Tunnel.Status != tunneld.StatusClosed {
		t.Fatalf("status after CloseTunnel: %s", d.Tunnel.Status)
	}
	// The service's errors come back with their type and message.
	err = api.CloseTunnel(ctx, "no-such-tunnel")
	if err == nil || !strings.Contains(err.Error(), "ResourceNotFoundException") {
		t.Fatalf("CloseTunnel(unknown) = %v, want ResourceNotFoundException", err)
	}
	if _, err := api.DestinationConnected(ctx, "no-such-tunnel"); err == nil || !strings.Contains(err.Error(), "ResourceNotFoundException") {
		t.Fatalf("DestinationConnected(unknown) = %v, want ResourceNotFoundException", err)
	}
}

// TestCredentialsNotPrinted: formatting credentials never shows the secret key.
func TestCredentialsNotPrinted(t *testing.T) {
	if s := fmt.Sprintf("%v %+v %#v", Credentials{AccessKeyID: "A", SecretAccessKey: "S3CR3T"}, ControlPlaneAPI{Credentials: Credentials{SecretAccessKey: "S3CR3T"}},
		Credentials{SecretAccessKey: "S3CR3T"}); strings.Contains(s, "S3CR3T") {
		t.Fatalf("a secret key printed: %s", s)
	}
}

// TestControlPlaneErrorRedacted: what answers in the control plane's place (a
// proxy's or load balancer's error page) may echo the request, its
// X-Amz-Security-Token among the headers; the error, which the console logs
// and shows on the page, quotes neither the session token nor the secret key,
// and at most 512 bytes of the answer.
func TestControlPlaneErrorRedacted(t *testing.T) {
	creds := Credentials{AccessKeyID: "AKIDPORTHOLE", SecretAccessKey: "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY",
		SessionToken: "FwoGZXIvYXdzEJr//////////wEaDOtoken+session/0123456789=="}
	for _, tc := range []struct {
		name   string
		status int
		answer func(w http.ResponseWriter, r *http.Request)
	}{
		{"a page echoing the headers", http.StatusBadGateway, func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "X-Amz-Security-Token: %s\nsecret %s\n", r.Header.Get("X-Amz-Security-Token"), creds.SecretAccessKey)
			for k, v := range r.Header {
				fmt.Fprintf(w, "%s: %s\n", k, strings.Join(v, ","))
			}
			w.Write(bytes.Repeat([]byte("padding "), 1<<13))
		}},
		{"a JSON message quoting the token", http.StatusForbidden, func(w http.ResponseWriter, r *http.Request) {
			json.NewEncoder(w).Encode(map[string]string{"__type": "UnrecognizedClientException",
				"message": "token " + r.Header.Get("X-Amz-Security-Token") + " invalid" + strings.Repeat(".", 1<<12)})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("X-Amz-Security-Token") != creds.SessionToken {
					t.Errorf("X-Amz-Security-Token %q, want the session token", r.Header.Get("X-Amz-Security-Token"))
				}
				w.WriteHeader(tc.status)
				tc.answer(w, r)
			}))
			defer srv.Close()
			api := &ControlPlaneAPI{URL: srv.URL, Client: srv.Client(), Credentials: creds}
			_, _, err := api.OpenTunnel(context.Background(), "dev1", []string{"SSH"}, 0, newAttempt())
			if err == nil {
				t.Fatal("OpenTunnel succeeded")
			}
			msg := err.Error()
			if strings.Contains(msg, creds.SessionToken) || strings.Contains(msg, creds.SecretAccessKey) {
				t.Errorf("the error quotes a secret: %s", msg)
			}
			if !strings.Contains(msg, "[redacted]") || !strings.Contains(msg, http.StatusText(tc.status)) {
				t.Errorf("the error = %s, want the status and [redacted]", msg)
			}
			if len(msg) > 600 {
				t.Errorf("the error is %d bytes, want the answer cut to 512", len(msg))
			}
		})
	}
}

// TestControlPlaneAPIConnections: the console asks DescribeTunnel every 2 s
// for every tunnel it opened. Each call must not leave a connection (an FD and
// two goroutines) open behind it: calls reuse one, or close theirs.
func TestControlPlaneAPIConnections(t *testing.T) {
	td, err := tunneld.New(tunneld.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	hs := &http.Server{Handler: td, ConnState: func(c net.Conn, st http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		switch st {
		case http.StateNew:
			open[c] = true
		case http.StateClosed, http.StateHijacked:
			delete(open, c)
		}
	}}
	done := make(chan struct{})
	go func() { defer close(done); hs.Serve(ln) }()
	defer func() {
		hs.Close()
		<-done
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		td.Shutdown(ctx)
	}()

	api := &ControlPlaneAPI{URL: "http://" + ln.Addr().String()}
	ctx := context.Background()
	id, _, err := api.OpenTunnel(ctx, "dev1", []string{"SSH"}, 30*time.Minute, newAttempt())
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if _, err := api.DestinationConnected(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	n := len(open)
	mu.Unlock()
	if n > 1 {
		t.Fatalf("after 21 control-plane calls, %d connections are open to the control plane, want at most 1", n)
	}
}

// signingRegion is a RoundTripper that keeps the region of a request's SigV4
// credential scope and answers nothing.
type signingRegion struct{ region string }

func (s *signingRegion) RoundTrip(r *http.Request) (*http.Response, error) {
	// Credential=AKID/DATE/REGION/SERVICE/aws4_request
	_, cred, _ := strings.Cut(r.Header.Get("Authorization"), "Credential=")
	if f := strings.Split(cred, "/"); len(f) > 2 {
		s.region = f[2]
	}
	return nil, errors.New("not sent")
}

// TestControlPlaneAPIRegion: AWS's control plane answers only requests signed
// for the region in its host, which is what an unset Region means there.
func TestControlPlaneAPIRegion(t *testing.T) {
	// The requests go to rt, which sends nothing. Were Client not used, the
	// one built instead goes through https_proxy: one Go's resolver refuses
	// without asking DNS (a label ending in -), so that nothing would reach
	// AWS's control planes named here.
	t.Setenv("https_proxy", "http://x-.invalid:3128")
	t.Setenv("no_proxy", "")
	t.Setenv("NO_PROXY", "")
	for _, tc := range []struct{ url, region, want string }{
		{"https://api.tunneling.iot.eu-west-1.amazonaws.com", "", "eu-west-1"},
		{"https://api.tunneling.iot.cn-north-1.amazonaws.com.cn/", "", "cn-north-1"},
		{"https://API.Tunneling.IoT.ap-south-1.amazonaws.com.:443", "", "ap-south-1"},
		{"https://api.tunneling.iot.eu-west-1.amazonaws.com", "eu-west-2", "eu-west-2"},
		{"https://127.0.0.1:8443", "", "us-east-1"},
		{"https://api.tunneling.iot.example.com", "", "us-east-1"},
		{"https://api.tunneling.iot.a.b.amazonaws.com", "", "us-east-1"},
	} {
		rt := &signingRegion{}
		api := &ControlPlaneAPI{URL: tc.url, Region: tc.region, Client: &http.Client{Transport: rt}}
		api.CloseTunnel(context.Background(), "t")
		if rt.region != tc.want {
			t.Errorf("ControlPlaneAPI{URL: %s, Region: %q} signed for %q, want %q", tc.url, tc.region, rt.region, tc.want)
		}
	}
}

// TestDestinationConnectedAnswers: the device is connected only while the
// tunnel is OPEN and its destination CONNECTED; an answer without a tunnel (a
// proxy's, a service's of another API) is an error, not a crash of the
// console's device watch.
func TestDestinationConnectedAnswers(t *testing.T) {
	for _, tc := range []struct {
		name, answer string
		want, err    bool
	}{
		{"open and connected", `{"tunnel":{"status":"OPEN","destinationConnectionState":{"status":"CONNECTED"}}}`, true, false},
		{"open, not connected", `{"tunnel":{"status":"OPEN","destinationConnectionState":{"status":"DISCONNECTED"}}}`, false, false},
		{"open, no destination state", `{"tunnel":{"status":"OPEN"}}`, false, false},
		{"closed, still connected", `{"tunnel":{"status":"CLOSED","destinationConnectionState":{"status":"CONNECTED"}}}`, false, false},
		{"no tunnel", `{}`, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/x-amz-json-1.1")
				w.Write([]byte(tc.answer))
			}))
			defer srv.Close()
			api := &ControlPlaneAPI{URL: srv.URL, Client: srv.Client()}
			joined, err := api.DestinationConnected(context.Background(), "t1")
			if joined != tc.want || (err != nil) != tc.err {
				t.Errorf("DestinationConnected with %s = %v, %v; want %v, error %v", tc.answer, joined, err, tc.want, tc.err)
			}
		})
	}
}

// TestOpenTunnelWithoutSourceToken: an OpenTunnel answer without a source
// token is an error, not a tunnel the console would join with no token.
func TestOpenTunnelWithoutSourceToken(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.Write([]byte(`{"tunnelId":"t1","destinationAccessToken":"AQGAAXh-dest"}`))
	}))
	defer srv.Close()
	api := &ControlPlaneAPI{URL: srv.URL, Client: srv.Client()}
	if id, tok, err := api.OpenTunnel(context.Background(), "dev1", []string{"SSH"}, time.Hour, newAttempt()); err == nil {
		t.Errorf("OpenTunnel answered without a source token = %q, %v, nil; want an error", id, tok)
	}
}

// TestControlPlaneErrorTypeAsAWSSendsIt: AWS may name its error in the
// X-Amzn-ErrorType header only, or as a shape id with a namespace and a URL
// suffix. The console still takes a refusal for one (no search for a tunnel
// after it), and a ResourceNotFoundException for a tunnel gone.
func TestControlPlaneErrorTypeAsAWSSendsIt(t *testing.T) {
	for _, tc := range []struct {
		name, header, body string
		refused, notFound  bool
	}{
		{"header only", "LimitExceededException:http://internal.amazon.com/coral/com.amazonaws.iot.tunneling/", `{"message":"too many tunnels"}`, true, false},
		{"namespaced __type", "", `{"__type":"com.amazonaws.iot.tunneling#ResourceNotFoundException","message":"no such tunnel"}`, true, true},
		{"bare __type", "", `{"__type":"ResourceNotFoundException","message":"no such tunnel"}`, true, true},
		{"code only", "", `{"code":"ResourceNotFoundException","message":"no such tunnel"}`, true, true},
		{"a list in the header", "ResourceNotFoundException,LimitExceededException", `{}`, true, true},
		{"a proxy's page", "", `<html>400 Bad Request</html>`, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.header != "" {
					w.Header().Set("X-Amzn-ErrorType", tc.header)
				}
				w.WriteHeader(http.StatusBadRequest)
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			api := &ControlPlaneAPI{URL: srv.URL, Client: srv.Client()}
			_, _, err := api.OpenTunnel(context.Background(), "dev1", []string{"SSH"}, 0, newAttempt())
			if err == nil {
				t.Fatal("OpenTunnel succeeded")
			}
			if got := errors.Is(err, ErrRefused); got != tc.refused {
				t.Errorf("errors.Is(%v, ErrRefused) = %v, want %v", err, got, tc.refused)
			}
			if got := isNotFound(err); got != tc.notFound {
				t.Errorf("isNotFound(%v) = %v, want %v", err, got, tc.notFound)
			}
		})
	}
}

// FuzzAnswerError: whatever answers in the control plane's place (the service,
// a proxy, a load balancer) with any status, X-Amzn-ErrorType header and body,
// the console's error quotes neither the secret key nor the session token,
// stays short, names a bare error type, and is the service's refusal
// (ErrRefused: nothing was done, no search) only for a 4xx with a type.
func FuzzAnswerError(f *testing.F) {
	creds := Credentials{AccessKeyID: "AKIDPORTHOLE", SecretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLE",
		SessionToken: "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJGMEQCIA+sess"}
	for _, seed := range []struct {
		code                 int
		header, body, reason string
	}{
		{400, "", `{"__type":"ResourceNotFoundException","message":"no tunnel"}`, ""},
		{400, "com.amazonaws.iotsecuretunneling#LimitExceededException:http://internal.amazon.com/", `{"message":"too many"}`, ""},
		{400, "", `{"code":"ns#ThrottlingException","__type":"Other","message":"Rate exceeded"}`, ""},
		{403, "", `{"__type":"UnrecognizedClientException","message":"token ` + creds.SessionToken + ` is invalid"}`, ""},
		{502, "", "<html>X-Amz-Security-Token: " + creds.SessionToken + "</html>", ""},
		{502, "", `{"error":"Bad Gateway","headers":{"X-Amz-Security-Token":"` + strings.ReplaceAll(creds.SessionToken, "/", `\/`) + `"}}`, ""},
		{502, "", "<a href=\"/retry?token=" + url.QueryEscape(creds.SessionToken) + "\">retry</a>", ""},
		{504, "", "<html><body>504 Gateway Time-out</body></html>", ""},
		{400, "A,B", `{"__type":"x","message":"` + strings.Repeat("é", 400) + creds.SecretAccessKey + `"}`, ""},
		{408, "", "", ""},
		{500, "", `{"__type":"InternalServerException"}`, ""},
		{502, "", "", "Bad Gateway (X-Amz-Security-Token: " + creds.SessionToken + ")"},
		{403, "", "", creds.SecretAccessKey},
		{502, "", "", strings.Repeat("Bad Gateway ", 1000)},
	} {
		f.Add(seed.code, seed.header, []byte(seed.body), cmp.Or(seed.reason, http.StatusText(seed.code)))
	}
	f.Fuzz(func(t *testing.T, code int, header string, body []byte, reason string) {
		if code < 100 || code > 999 {
			return
		}
		resp := &http.Response{StatusCode: code, Status: fmt.Sprintf("%d %s", code, reason), Header: http.Header{}}
		if header != "" {
			resp.Header.Set("X-Amzn-ErrorType", header)
		}
		e := answerError("OpenTunnel", resp, body, creds)
		msg := e.Error()
		for _, secret := range []string{creds.SecretAccessKey, creds.SessionToken} {
			for _, form := range []string{secret, strings.ReplaceAll(secret, "/", `\/`), url.QueryEscape(secret), url.PathEscape(secret)} {
				if strings.Contains(msg, form) {
					t.Fatalf("the error quotes a secret: %q", msg)
				}
			}
		}
		if max := len("OpenTunnel: ") + 2*len("…(cut)") + maxStatusText + 1 + maxErrorText; len(msg) > max {
			t.Errorf("the error is %d bytes, more than %d", len(msg), max)
		}
		if max := maxStatusText + len("…(cut)"); len(e.Status) > max {
			t.Errorf("the error's status is %d bytes, more than %d", len(e.Status), max)
		}
		if strings.ContainsAny(e.Type, ",:") || e.Type != strings.TrimSpace(e.Type) {
			t.Errorf("error type %q is not a bare name", e.Type)
		}
		if refused := code >= 400 && code < 500 && e.Type != ""; errors.Is(e, ErrRefused) != refused {
			t.Errorf("status %d, type %q: errors.Is(ErrRefused) = %v, want %v", code, e.Type, !refused, refused)
		}
	})
}
