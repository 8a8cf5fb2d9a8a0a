package tunneld

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
)

// awsJSON encodes v as the AWS CLI (botocore: json.dumps) does: a space after
// every ':' and ',', and every character outside ASCII escaped, one outside
// the BMP as a surrogate pair (12 bytes for a character of 4 bytes).
func awsJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	inString, escaped := false, false
	for _, r := range string(b) {
		switch {
		case r > 0x7f:
			for _, u := range utf16.Encode([]rune{r}) {
				fmt.Fprintf(&out, `\u%04x`, u)
			}
			continue
		case inString && escaped:
			escaped = false
		case inString && r == '\\':
			escaped = true
		case r == '"':
			inString = !inString
		case !inString && (r == ':' || r == ','):
			out.WriteRune(r)
			out.WriteByte(' ')
			continue
		}
		out.WriteRune(r)
	}
	return out.Bytes()
}

// largestValid returns the largest valid request of each operation, as the AWS
// CLI encodes it, from tunneld's checks (validate.go): names of 128 characters,
// 3 services, 200 tags of 128 and 256 letters outside the BMP, a description of
// 2048 of them, a nextToken of 4096, a resourceArn of 1011 bytes that each
// escape to 6.
func largestValid(t *testing.T) map[string][]byte {
	const letter = "\U00020000" // CJK Extension B: a letter (\p{L}) outside the BMP
	name := func(c string) string { return strings.Repeat(c, 128) }
	id := strings.Repeat("a", 128)
	dest := &DestinationConfig{ThingName: name("t"), Services: []string{name("a"), name("b"), name("c")}}
	tags := make([]Tag, maxTags)
	keys := make([]string, maxTags)
	for i := range tags {
		keys[i] = string(rune(0x20001+i)) + strings.Repeat(letter, maxTagKey-1)
		tags[i] = Tag{Key: keys[i], Value: strings.Repeat(letter, maxTagValue)}
	}
	arn := strings.Repeat("\x01", 1011)
	return map[string][]byte{
		"OpenTunnel": awsJSON(t, OpenTunnelInput{Description: strings.Repeat(letter, maxDescription), Tags: tags,
			DestinationConfig: dest, TimeoutConfig: &TimeoutConfig{MaxLifetimeTimeoutMinutes: maxLifetimeMinutes}}),
		"CloseTunnel":             awsJSON(t, map[string]any{"tunnelId": id, "delete": false}),
		"DescribeTunnel":          awsJSON(t, DescribeTunnelInput{TunnelID: id}),
		"ListTunnels":             awsJSON(t, ListTunnelsInput{ThingName: name("t"), MaxResults: maxListResults, NextToken: strings.Repeat("a", 4096)}),
		"RotateTunnelAccessToken": awsJSON(t, RotateTunnelAccessTokenInput{TunnelID: id, ClientMode: ClientModeDestination, DestinationConfig: dest}),
		"TagResource":             awsJSON(t, TagResourceInput{ResourceArn: arn, Tags: tags}),
		"UntagResource":           awsJSON(t, UntagResourceInput{ResourceArn: arn, TagKeys: keys}),
		"ListTagsForResource":     awsJSON(t, ListTagsForResourceInput{ResourceArn: arn}),
	}
}

// signedCall posts body to op, signed with AKID/secret, and returns the status
// and the error type.
func signedCall(t *testing.T, ts *testServer, op string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+ts.addr+"/", bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("X-Amz-Target", targetPrefix+op)
	SignV4(req, body, "AKID", "secret", "", DefaultRegion, SigningName, time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Amzn-ErrorType")
}

// TestLargestValidRequestsFit: the largest valid request of every operation is
// under its body limit, with room, and is read, its signature verified and
// decoded: the limits refuse no request that tunneld took before they were
// lowered from 1 MiB for all. The largest OpenTunnel opens its tunnel; the
// others name tunnels and ARNs that do not exist (ResourceNotFoundException,
// after the body), ListTunnels a nextToken that is not one of this server's.
func TestLargestValidRequestsFit(t *testing.T) {
	ts := startServer(t, Config{Credentials: map[string]string{"AKID": "secret"}})
	for op, body := range largestValid(t) {
		t.Run(op, func(t *testing.T) {
			in, err := decodeRequest(op, body)
			if err != nil {
				t.Fatal(err)
			}
			if v, ok := in.(interface{ validate() error }); ok {
				if err := v.validate(); err != nil {
					t.Fatalf("the largest valid %s is not valid: %v", op, err)
				}
			}
			limit := bodyLimit(op)
			t.Logf("%s: %d bytes, limit %d", op, len(body), limit)
			if int64(len(body)) > limit*95/100 {
				t.Errorf("the largest valid %s is %d bytes, within 5%% of its limit %d", op, len(body), limit)
			}
			if _, big := bodyLimits[op]; !big && len(body) > freeBody/4 {
				t.Errorf("the largest valid %s is %d bytes, over a quarter of freeBody %d: give it a limit in bodyLimits", op, len(body), freeBody)
			}
			status, typ := signedCall(t, ts, op, body)
			switch {
			case op == "OpenTunnel" && status != 200:
				t.Fatalf("the largest valid OpenTunnel (%d bytes) answered %d %s, want 200", len(body), status, typ)
			case op == "ListTunnels" && typ != ErrTypeInvalidRequest: // its nextToken is no cursor of this server
				t.Errorf("the largest valid ListTunnels (%d bytes) answered %d %s, want InvalidRequestException", len(body), status, typ)
			case op != "OpenTunnel" && op != "ListTunnels" && typ != ErrTypeResourceNotFound:
				t.Errorf("the largest valid %s (%d bytes) answered %d %s, want ResourceNotFoundException", op, len(body), status, typ)
			}
		})
	}
	out, err := ts.ListTunnels(t.Context(), nil)
	if err != nil || len(out.TunnelSummaries) != 1 {
		t.Fatalf("ListTunnels = %v, %v; want the tunnel opened", out, err)
	}
	d, err := ts.DescribeTunnel(t.Context(), &DescribeTunnelInput{TunnelID: out.TunnelSummaries[0].TunnelID})
	if err != nil || len(d.Tunnel.Tags) != maxTags || len([]rune(d.Tunnel.Description)) != maxDescription {
		t.Fatalf("the largest OpenTunnel's tunnel: %v", err)
	}
}

// rawHeaders sends a control-plane request's headers (and extra) on a new
// connection, and returns it with a reader of its answers.
func rawHeaders(t *testing.T, addr, op, headers, extra string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nX-Amz-Target: %s%s\r\n"+
		"Authorization: AWS4-HMAC-SHA256 Credential=AKID/20261130/us-east-1/IoTSecuredTunneling/aws4_request, SignedHeaders=host, Signature=00\r\n"+
		"%s\r\n%s", addr, contentType, targetPrefix, op, headers, extra)
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) // the read timeout is 30 s
	return c, bufio.NewReader(c)
}

// wantRefusedAndClosed reads an answer of status and error type, then the end
// of the connection: the server hangs up without waiting for the rest of the
// body, which the client never sends.
func wantRefusedAndClosed(t *testing.T, br *bufio.Reader, status int, typ string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer while the body is not all sent: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != status || resp.Header.Get("X-Amzn-ErrorType") != typ {
		t.Fatalf("answer %s %s %s, want %d %s", resp.Status, resp.Header.Get("X-Amzn-ErrorType"), b, status, typ)
	}
	t.Logf("%s %s", resp.Status, b)
	// Closed: io.EOF, or a reset when the server closes with some of the
	// body unread in its socket before this reads the EOF.
	if n, err := br.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after the answer: read %d, %v; want the connection closed, not waiting for the rest of the body", n, err)
	}
}

// TestBodyOverLimitRefusedUnread: a body over its operation's limit is
// refused with SerializationException, as before, and the connection is closed
// without reading the rest: before its Content-Length is read when that is
// over, after limit+1 bytes of a chunked body.
func TestBodyOverLimitRefusedUnread(t *testing.T) {
	ts := startServer(t, Config{})
	for _, op := range []string{"ListTunnels", "CloseTunnel", "UntagResource", "OpenTunnel"} {
		t.Run(op+"/Content-Length", func(t *testing.T) {
			_, br := rawHeaders(t, ts.addr, op, fmt.Sprintf("Content-Length: %d\r\n", bodyLimit(op)+1), "{")
			wantRefusedAndClosed(t, br, http.StatusBadRequest, ErrTypeSerialization)
		})
	}
	t.Run("ListTunnels/chunked", func(t *testing.T) {
		n := bodyLimit("ListTunnels") + 10
		_, br := rawHeaders(t, ts.addr, "ListTunnels", "Transfer-Encoding: chunked\r\n",
			fmt.Sprintf("%x\r\n{%s\r\n", n, strings.Repeat(" ", int(n-1)))) // no last chunk
		wantRefusedAndClosed(t, br, http.StatusBadRequest, ErrTypeSerialization)
	})
}

// TestLargeBodiesShareABudget: bodies over freeBody share largeBodyBudget.
// Clients that know an access key ID but cannot sign (the signature is checked
// after the body) hold it all with four bodies of 1 MiB, declared and never
// sent; a fifth large body is refused at once with ThrottlingException
// (unread), while small requests are served; when one of the four goes, a
// large valid request is served again. Before, every connection had up to
// 1 MiB of body read and held.
func TestLargeBodiesShareABudget(t *testing.T) {
	ts := startServer(t, Config{Credentials: map[string]string{"AKID": "secret"}})
	var holders []net.Conn
	for range largeBodyBudget / bodyLimit("OpenTunnel") {
		c, _ := rawHeaders(t, ts.addr, "OpenTunnel", fmt.Sprintf("Content-Length: %d\r\n", bodyLimit("OpenTunnel")), "{")
		holders = append(holders, c)
	}
	eventuallyTrue(t, func() bool {
		ts.bodies.mu.Lock()
		defer ts.bodies.mu.Unlock()
		return ts.bodies.used == largeBodyBudget
	})
	_, br := rawHeaders(t, ts.addr, "TagResource", fmt.Sprintf("Content-Length: %d\r\n", freeBody+1), "{")
	wantRefusedAndClosed(t, br, http.StatusTooManyRequests, ErrTypeThrottling)

	if status, typ := signedCall(t, ts, "ListTunnels", []byte(`{"maxResults": 5}`)); status != 200 {
		t.Fatalf("a small request while the budget is spent: %d %s, want 200", status, typ)
	}
	tags := make([]Tag, maxTags) // in ASCII: 84 KB, over freeBody
	for i := range tags {
		tags[i] = Tag{Key: fmt.Sprintf("%03d%s", i, strings.Repeat("k", maxTagKey-3)), Value: strings.Repeat("v", maxTagValue)}
	}
	big := awsJSON(t, OpenTunnelInput{Tags: tags})
	if len(big) <= freeBody {
		t.Fatalf("the large request is %d bytes, not over freeBody", len(big))
	}
	if status, typ := signedCall(t, ts, "OpenTunnel", big); status != http.StatusTooManyRequests || typ != ErrTypeThrottling {
		t.Fatalf("a large valid request while the budget is spent: %d %s, want 429 %s", status, typ, ErrTypeThrottling)
	}
	holders[0].Close()
	eventually(t, func() error {
		if status, typ := signedCall(t, ts, "OpenTunnel", big); status != 200 {
			return fmt.Errorf("a large valid request after a holder went: %d %s", status, typ)
		}
		return nil
	})
}
