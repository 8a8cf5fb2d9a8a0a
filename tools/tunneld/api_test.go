package tunneld

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestOpenDescribeListClose(t *testing.T) {
	ts := startServer(t, Config{Region: "eu-west-1", AccountID: "111122223333"})
	before := time.Now().Add(-time.Second)
	m := ts.mustCall(t, "OpenTunnel", `{"description":"first","tags":[{"key":"env","value":"lab"}],
		"destinationConfig":{"thingName":"dev1","services":["SSH","WEB"]},"timeoutConfig":{"maxLifetimeTimeoutMinutes":30}}`)
	id, _ := m["tunnelId"].(string)
	if !regexp.MustCompile(`^[0-9a-f-]{36}$`).MatchString(id) {
		t.Fatalf("tunnelId = %q, want a UUID", id)
	}
	if want := "arn:aws:iot:eu-west-1:111122223333:tunnel/" + id; m["tunnelArn"] != want {
		t.Errorf("tunnelArn = %v, want %s", m["tunnelArn"], want)
	}
	src, _ := m["sourceAccessToken"].(string)
	dst, _ := m["destinationAccessToken"].(string)
	if len(src) < 40 || len(dst) < 40 || src == dst {
		t.Errorf("tokens %d and %d characters, equal %v: want two distinct long tokens", len(src), len(dst), src == dst)
	}

	d := ts.mustCall(t, "DescribeTunnel", map[string]string{"tunnelId": id})["tunnel"].(map[string]any)
	for k, want := range map[string]any{
		"tunnelId": id, "status": "OPEN", "description": "first",
		"destinationConfig": map[string]any{"thingName": "dev1", "services": []any{"SSH", "WEB"}},
		"timeoutConfig":     map[string]any{"maxLifetimeTimeoutMinutes": 30.0},
		"tags":              []any{map[string]any{"key": "env", "value": "lab"}},
	} {
		if fmt.Sprint(d[k]) != fmt.Sprint(want) {
			t.Errorf("tunnel.%s = %v, want %v", k, d[k], want)
		}
	}
	for _, k := range []string{"sourceConnectionState", "destinationConnectionState"} {
		cs, _ := d[k].(map[string]any)
		if cs["status"] != "DISCONNECTED" {
			t.Errorf("%s = %v, want DISCONNECTED", k, cs)
		}
		if at, _ := cs["lastUpdatedAt"].(float64); at < float64(before.Unix()) {
			t.Errorf("%s.lastUpdatedAt = %v, want epoch seconds after %v", k, cs["lastUpdatedAt"], before.Unix())
		}
	}
	if at, _ := d["createdAt"].(float64); at < float64(before.Unix()) || at > float64(time.Now().Unix()+1) {
		t.Errorf("createdAt = %v, want epoch seconds of now", d["createdAt"])
	}

	// A second tunnel, for another thing, without a lifetime: the default 720.
	id2 := ts.mustCall(t, "OpenTunnel", `{"destinationConfig":{"thingName":"dev2","services":["SSH"]}}`)["tunnelId"].(string)
	d2 := ts.mustCall(t, "DescribeTunnel", map[string]string{"tunnelId": id2})["tunnel"].(map[string]any)
	if fmt.Sprint(d2["timeoutConfig"]) != "map[maxLifetimeTimeoutMinutes:720]" {
		t.Errorf("default timeoutConfig = %v, want 720 minutes", d2["timeoutConfig"])
	}
	l := ts.mustCall(t, "ListTunnels", `{}`)["tunnelSummaries"].([]any)
	if len(l) != 2 || l[0].(map[string]any)["tunnelId"] != id2 || l[1].(map[string]any)["tunnelId"] != id {
		t.Errorf("ListTunnels = %v, want the two tunnels, newest first", l)
	}
	l = ts.mustCall(t, "ListTunnels", `{"thingName":"dev1"}`)["tunnelSummaries"].([]any)
	if len(l) != 1 || l[0].(map[string]any)["tunnelId"] != id || l[0].(map[string]any)["description"] != "first" {
		t.Errorf("ListTunnels(dev1) = %v, want the first tunnel", l)
	}

	ts.mustCall(t, "CloseTunnel", map[string]string{"tunnelId": id})
	ts.mustCall(t, "CloseTunnel", map[string]string{"tunnelId": id}) // again: no error
	d = ts.mustCall(t, "DescribeTunnel", map[string]string{"tunnelId": id})["tunnel"].(map[string]any)
	if d["status"] != "CLOSED" {
		t.Errorf("status after CloseTunnel = %v, want CLOSED", d["status"])
	}
	if status, m := ts.call(t, "RotateTunnelAccessToken", map[string]string{"tunnelId": id, "clientMode": "ALL"}); status != 400 || m["__type"] != ErrTypeInvalidRequest {
		t.Errorf("rotating a closed tunnel: %d %v, want InvalidRequestException", status, m)
	}
	ts.mustCall(t, "CloseTunnel", map[string]any{"tunnelId": id2, "delete": true})
	if status, m := ts.call(t, "DescribeTunnel", map[string]string{"tunnelId": id2}); status != 400 || m["__type"] != ErrTypeResourceNotFound {
		t.Errorf("describing a deleted tunnel: %d %v, want ResourceNotFoundException", status, m)
	}
}

func TestListPagination(t *testing.T) {
	ts := startServer(t, Config{})
	var ids []string
	for range 5 {
		ids = append(ids, ts.open(t, "dev1", "SSH").TunnelID)
		time.Sleep(2 * time.Millisecond) // distinct creation times
	}
	var got []string
	next := ""
	for pages := 0; ; pages++ {
		in := map[string]any{"maxResults": 2}
		if next != "" {
			in["nextToken"] = next
		}
		m := ts.mustCall(t, "ListTunnels", in)
		for _, s := range m["tunnelSummaries"].([]any) {
			got = append(got, s.(map[string]any)["tunnelId"].(string))
		}
		next, _ = m["nextToken"].(string)
		if next == "" {
			if pages != 2 {
				t.Errorf("%d pages, want 3", pages+1)
			}
			break
		}
	}
	for i := range ids {
		if got[len(got)-1-i] != ids[i] {
			t.Fatalf("pages = %v, want %v newest first", got, ids)
		}
	}
}

func TestRotate(t *testing.T) {
	ts := startServer(t, Config{})
	out := ts.open(t, "dev1", "SSH")
	m := ts.mustCall(t, "RotateTunnelAccessToken", map[string]string{"tunnelId": out.TunnelID, "clientMode": "SOURCE"})
	if m["tunnelArn"] != out.TunnelArn || m["sourceAccessToken"] == out.SourceAccessToken || m["sourceAccessToken"] == nil || m["destinationAccessToken"] != nil {
		t.Errorf("rotate SOURCE = %v, want a new source token only", m)
	}
	m = ts.mustCall(t, "RotateTunnelAccessToken", map[string]any{"tunnelId": out.TunnelID, "clientMode": "DESTINATION",
		"destinationConfig": map[string]any{"thingName": "dev9", "services": []string{"SSH"}}})
	if m["destinationAccessToken"] == nil || m["destinationAccessToken"] == out.DestinationAccessToken || m["sourceAccessToken"] != nil {
		t.Errorf("rotate DESTINATION = %v, want a new destination token only", m)
	}
	d, _ := ts.DescribeTunnel(context.Background(), &DescribeTunnelInput{TunnelID: out.TunnelID})
	if d.Tunnel.DestinationConfig.ThingName != "dev9" {
		t.Errorf("thingName after rotation = %q, want dev9", d.Tunnel.DestinationConfig.ThingName)
	}
	m = ts.mustCall(t, "RotateTunnelAccessToken", map[string]string{"tunnelId": out.TunnelID, "clientMode": "ALL"})
	if m["destinationAccessToken"] == nil || m["sourceAccessToken"] == nil {
		t.Errorf("rotate ALL = %v, want both tokens", m)
	}
}

func TestTags(t *testing.T) {
	ts := startServer(t, Config{})
	out := ts.open(t, "", "SSH")
	ts.mustCall(t, "TagResource", map[string]any{"resourceArn": out.TunnelArn, "tags": []Tag{{"a", "1"}, {"b", "2"}}})
	ts.mustCall(t, "TagResource", map[string]any{"resourceArn": out.TunnelArn, "tags": []Tag{{"a", "3"}}})
	ts.mustCall(t, "UntagResource", map[string]any{"resourceArn": out.TunnelArn, "tagKeys": []string{"b"}})
	m := ts.mustCall(t, "ListTagsForResource", map[string]any{"resourceArn": out.TunnelArn})
	if fmt.Sprint(m["tags"]) != "[map[key:a value:3]]" {
		t.Errorf("tags = %v, want a=3", m["tags"])
	}
	if status, m := ts.call(t, "ListTagsForResource", map[string]any{"resourceArn": out.TunnelArn + "x"}); status != 400 || m["__type"] != ErrTypeResourceNotFound {
		t.Errorf("unknown ARN: %d %v", status, m)
	}
	// A tag's value is required, though it may be empty: one left out (or null)
	// is refused, as AWS's model has it, and changes nothing.
	for _, body := range []string{
		`{"resourceArn":"` + out.TunnelArn + `","tags":[{"key":"c","value":"4"},{"key":"d"}]}`,
		`{"resourceArn":"` + out.TunnelArn + `","tags":[{"key":"d","value":null}]}`,
	} {
		if status, m := ts.call(t, "TagResource", body); status != 400 || m["__type"] != ErrTypeInvalidRequest || m["message"] != "tags[1].value is required" && m["message"] != "tags[0].value is required" {
			t.Errorf("TagResource %s: %d %v, want tags[…].value is required", body, status, m)
		}
	}
	if status, m := ts.call(t, "OpenTunnel", `{"tags":[{"key":"d"}]}`); status != 400 || m["__type"] != ErrTypeInvalidRequest {
		t.Errorf("OpenTunnel with a tag without its value: %d %v", status, m)
	}
	if m := ts.mustCall(t, "ListTunnels", map[string]any{}); len(m["tunnelSummaries"].([]any)) != 1 {
		t.Errorf("a refused OpenTunnel opened a tunnel: %v", m)
	}
	m = ts.mustCall(t, "ListTagsForResource", map[string]any{"resourceArn": out.TunnelArn})
	if fmt.Sprint(m["tags"]) != "[map[key:a value:3]]" {
		t.Errorf("after refused TagResource calls, tags = %v, want a=3", m["tags"])
	}
	ts.mustCall(t, "TagResource", `{"resourceArn":"`+out.TunnelArn+`","tags":[{"key":"e","value":""}]}`)
}

// TestTagLimitPerTunnel: a tunnel holds at most 200 tags, however they came; a
// refused TagResource changes nothing.
func TestTagLimitPerTunnel(t *testing.T) {
	ts := startServer(t, Config{})
	full := ts.mustCall(t, "OpenTunnel", `{"tags":`+tagsJSON(200, "k")+`}`)
	arn := full["tunnelArn"].(string)
	status, m := ts.call(t, "TagResource", `{"resourceArn":"`+arn+`","tags":[{"key":"k0","value":"new"},{"key":"one-more","value":""}]}`)
	if status != 400 || m["__type"] != ErrTypeInvalidRequest || !strings.Contains(fmt.Sprint(m["message"]), "201 tags") {
		t.Errorf("201st tag: %d %v, want InvalidRequestException", status, m)
	}
	ts.mustCall(t, "TagResource", `{"resourceArn":"`+arn+`","tags":[{"key":"k199","value":"replaced"}]}`) // replacing is fine
	tags := ts.mustCall(t, "ListTagsForResource", map[string]any{"resourceArn": arn})["tags"].([]any)
	if len(tags) != 200 || fmt.Sprint(tags[0]) != "map[key:k0 value:v]" || fmt.Sprint(tags[199]) != "map[key:k199 value:replaced]" {
		t.Errorf("after the refused TagResource: %d tags, first %v, last %v", len(tags), tags[0], tags[len(tags)-1])
	}

	half := ts.mustCall(t, "OpenTunnel", `{"tags":`+tagsJSON(100, "a")+`}`)
	if status, m := ts.call(t, "TagResource", `{"resourceArn":"`+half["tunnelArn"].(string)+`","tags":`+tagsJSON(101, "b")+`}`); status != 400 || m["__type"] != ErrTypeInvalidRequest {
		t.Errorf("100 tags and 101 more: %d %v, want InvalidRequestException", status, m)
	}
	ts.mustCall(t, "TagResource", `{"resourceArn":"`+half["tunnelArn"].(string)+`","tags":`+tagsJSON(100, "b")+`}`)
}

// tagsJSON is a JSON list of n tags keyed prefix0, prefix1, ... with value "v".
func tagsJSON(n int, prefix string) string {
	tags := make([]string, n)
	for i := range tags {
		tags[i] = fmt.Sprintf(`{"key":"%s%d","value":"v"}`, prefix, i)
	}
	return "[" + strings.Join(tags, ",") + "]"
}

func TestLimitExceeded(t *testing.T) {
	ts := startServer(t, Config{MaxOpenTunnels: 2})
	ts.open(t, "", "SSH")
	out := ts.open(t, "", "SSH")
	status, m := ts.call(t, "OpenTunnel", `{}`)
	if status != 400 || m["__type"] != ErrTypeLimitExceeded || m["message"] == "" {
		t.Errorf("third tunnel: %d %v, want LimitExceededException", status, m)
	}
	ts.mustCall(t, "CloseTunnel", map[string]string{"tunnelId": out.TunnelID})
	ts.mustCall(t, "OpenTunnel", `{}`) // closed tunnels do not count
}

func TestValidation(t *testing.T) {
	ts := startServer(t, Config{})
	open := ts.open(t, "dev1", "SSH")
	long := strings.Repeat("a", 129)
	tests := []struct {
		op, body, wantType, wantMsg string
	}{
		{"OpenTunnel", `{"destinationConfig":{"thingName":"dev 1","services":["SSH"]}}`, ErrTypeInvalidRequest, "thingName"},
		{"OpenTunnel", `{"destinationConfig":{"thingName":"` + long + `","services":["SSH"]}}`, ErrTypeInvalidRequest, "thingName"},
		{"OpenTunnel", `{"destinationConfig":{"thingName":"dev1","services":[]}}`, ErrTypeInvalidRequest, "at least one"},
		{"OpenTunnel", `{"destinationConfig":{"thingName":"dev1"}}`, ErrTypeInvalidRequest, "at least one"},
		{"OpenTunnel", `{"destinationConfig":{"services":["A","B","C","D"]}}`, ErrTypeInvalidRequest, "more than the 3"},
		{"OpenTunnel", `{"destinationConfig":{"services":["SSH","SSH"]}}`, ErrTypeInvalidRequest, "twice"},
		{"OpenTunnel", `{"destinationConfig":{"services":["S/H"]}}`, ErrTypeInvalidRequest, "services[0]"},
		{"OpenTunnel", `{"destinationConfig":{"services":["` + long + `"]}}`, ErrTypeInvalidRequest, "services[0]"},
		{"OpenTunnel", `{"timeoutConfig":{"maxLifetimeTimeoutMinutes":721}}`, ErrTypeInvalidRequest, "1-720"},
		{"OpenTunnel", `{"timeoutConfig":{"maxLifetimeTimeoutMinutes":-1}}`, ErrTypeInvalidRequest, "1-720"},
		{"OpenTunnel", `{"description":"a\u0007b"}`, ErrTypeInvalidRequest, "description"},
		{"OpenTunnel", `{"description":""}`, ErrTypeInvalidRequest, "description must not be empty"},
		{"OpenTunnel", `{"timeoutConfig":{"maxLifetimeTimeoutMinutes":0}}`, ErrTypeInvalidRequest, "timeoutConfig.maxLifetimeTimeoutMinutes must be at least 1"},
		{"OpenTunnel", `{"destinationConfig":{"thingName":"","services":["SSH"]}}`, ErrTypeInvalidRequest, "destinationConfig.thingName must not be empty"},
		{"RotateTunnelAccessToken", `{"tunnelId":"` + open.TunnelID + `","clientMode":"DESTINATION","destinationConfig":{"thingName":"","services":["SSH"]}}`, ErrTypeInvalidRequest, "destinationConfig.thingName must not be empty"},
		{"ListTunnels", `{"thingName":""}`, ErrTypeInvalidRequest, "thingName must not be empty"},
		{"ListTunnels", `{"maxResults":0}`, ErrTypeInvalidRequest, "maxResults must be at least 1"},
		{"ListTunnels", `{"maxResults":-0}`, ErrTypeInvalidRequest, "maxResults must be at least 1, got -0"},
		{"OpenTunnel", `{"timeoutConfig":{"maxLifetimeTimeoutMinutes":-0}}`, ErrTypeInvalidRequest, "maxLifetimeTimeoutMinutes must be at least 1"},
		{"ListTunnels", `{"nextToken":""}`, ErrTypeInvalidRequest, "nextToken must not be empty"},
		{"OpenTunnel", `{"tags":[]}`, ErrTypeInvalidRequest, "tags"},
		{"OpenTunnel", `{"tags":[{"key":"","value":"x"}]}`, ErrTypeInvalidRequest, "tags[0].key"},
		{"OpenTunnel", `{"tags":[{"key":"k","value":"a\nb"}]}`, ErrTypeInvalidRequest, "tags[0].value"},
		{"OpenTunnel", `{"tags":[{"key":"` + long + `","value":"x"}]}`, ErrTypeInvalidRequest, "tags[0].key"},
		{"OpenTunnel", `{"tags":[{"key":"k","value":"` + strings.Repeat("v", 257) + `"}]}`, ErrTypeInvalidRequest, "tags[0].value"},
		{"OpenTunnel", `{"tags":` + tagsJSON(201, "k") + `}`, ErrTypeInvalidRequest, "1-200"},
		{"OpenTunnel", `{"tags":[{"key":"a","value":"1"},{"key":"b","value":""},{"key":"a","value":"2"}]}`, ErrTypeInvalidRequest, `"a" twice`},
		{"OpenTunnel", `{"tags":[{"key":"aws:createdBy","value":"x"}]}`, ErrTypeInvalidRequest, "reserved prefix"},
		{"OpenTunnel", `{"tags":[{"key":"k","value":"x"},{"key":"AwS:x","value":"x"}]}`, ErrTypeInvalidRequest, "tags[1].key"},
		{"TagResource", `{"resourceArn":"` + open.TunnelArn + `","tags":[{"key":"a","value":"1"},{"key":"a","value":"1"}]}`, ErrTypeInvalidRequest, "twice"},
		{"TagResource", `{"resourceArn":"` + open.TunnelArn + `","tags":[{"key":"aws:x","value":"1"}]}`, ErrTypeInvalidRequest, "reserved prefix"},
		{"UntagResource", `{"resourceArn":"` + open.TunnelArn + `"}`, ErrTypeInvalidRequest, "tagKeys is required"},
		{"UntagResource", `{"resourceArn":"` + open.TunnelArn + `","tagKeys":[""]}`, ErrTypeInvalidRequest, "tagKeys[0]"},
		{"UntagResource", `{"resourceArn":"` + open.TunnelArn + `","tagKeys":["a","` + long + `"]}`, ErrTypeInvalidRequest, "tagKeys[1]"},
		{"UntagResource", `{"resourceArn":"` + open.TunnelArn + `","tagKeys":["a\nb"]}`, ErrTypeInvalidRequest, "tagKeys[0]"},
		{"UntagResource", `{"resourceArn":"` + open.TunnelArn + `","tagKeys":` + keysJSON(201) + `}`, ErrTypeInvalidRequest, "0-200"},
		{"OpenTunnel", `{"timeoutConfig":{"maxLifetimeTimeoutMinutes":"ten"}}`, ErrTypeSerialization, "decode"},
		{"OpenTunnel", `[]`, ErrTypeSerialization, "decode"},
		{"OpenTunnel", `{} {}`, ErrTypeSerialization, "after"},
		{"OpenTunnel", `"x"`, ErrTypeSerialization, ""},
		{"DescribeTunnel", `{}`, ErrTypeInvalidRequest, "tunnelId is required"},
		{"DescribeTunnel", `{"tunnelId":"a/b"}`, ErrTypeInvalidRequest, "tunnelId must match"},
		{"DescribeTunnel", `{"tunnelId":"` + long + `"}`, ErrTypeInvalidRequest, "tunnelId must match"},
		{"DescribeTunnel", `{"tunnelId":"no-such-tunnel"}`, ErrTypeResourceNotFound, "not found"},
		{"CloseTunnel", `{"tunnelId":"no-such-tunnel"}`, ErrTypeResourceNotFound, "not found"},
		{"CloseTunnel", `{"tunnelId":"` + open.TunnelID + `","delete":"yes"}`, ErrTypeSerialization, ""},
		{"RotateTunnelAccessToken", `{"tunnelId":"` + open.TunnelID + `"}`, ErrTypeInvalidRequest, "clientMode is required"},
		{"RotateTunnelAccessToken", `{"tunnelId":"` + open.TunnelID + `","clientMode":"BOTH"}`, ErrTypeInvalidRequest, "SOURCE, DESTINATION or ALL"},
		{"RotateTunnelAccessToken", `{"tunnelId":"` + open.TunnelID + `","clientMode":"SOURCE","destinationConfig":{"services":["SSH"]}}`, ErrTypeInvalidRequest, "SOURCE"},
		{"RotateTunnelAccessToken", `{"tunnelId":"` + open.TunnelID + `","clientMode":"ALL","destinationConfig":{"services":["WEB"]}}`, ErrTypeInvalidRequest, "cannot be changed"},
		{"RotateTunnelAccessToken", `{"tunnelId":"no-such-tunnel","clientMode":"ALL"}`, ErrTypeResourceNotFound, "not found"},
		{"ListTunnels", `{"maxResults":0.5}`, ErrTypeSerialization, ""},
		{"ListTunnels", `{"maxResults":101}`, ErrTypeInvalidRequest, "maxResults"},
		{"ListTunnels", `{"nextToken":"a b"}`, ErrTypeInvalidRequest, "nextToken"},
		{"ListTunnels", `{"nextToken":"abc"}`, ErrTypeInvalidRequest, "nextToken"},
		{"ListTunnels", `{"nextToken":"2"}`, ErrTypeInvalidRequest, "nextToken"},                                    // an old offset
		{"ListTunnels", `{"nextToken":"` + (cursor{id: "a b"}).encode() + `"}`, ErrTypeInvalidRequest, "nextToken"}, // bad tunnel ID
		{"ListTunnels", `{"nextToken":"AgAAAAAAAAAAYQ"}`, ErrTypeInvalidRequest, "nextToken"},                       // version 2
		{"ListTunnels", `{"thingName":"a b"}`, ErrTypeInvalidRequest, "thingName"},
		{"TagResource", `{"resourceArn":"` + open.TunnelArn + `"}`, ErrTypeInvalidRequest, "tags"},
		{"TagResource", `{"resourceArn":"","tags":[{"key":"a","value":"b"}]}`, ErrTypeInvalidRequest, "resourceArn"},
		{"TagResource", `{"resourceArn":"` + strings.Repeat("a", 1012) + `","tags":[{"key":"a","value":"b"}]}`, ErrTypeInvalidRequest, "resourceArn must be 1-1011"},
		{"UntagResource", `{"resourceArn":"arn:aws:iot:us-east-1:1:tunnel/x","tagKeys":[]}`, ErrTypeResourceNotFound, ""},
		{"DeleteTunnel", `{}`, ErrTypeUnknownOperation, "DeleteTunnel"},
	}
	for _, tc := range tests {
		t.Run(tc.op+" "+tc.body[:min(len(tc.body), 60)], func(t *testing.T) {
			status, m := ts.call(t, tc.op, tc.body)
			msg, _ := m["message"].(string)
			if status != http.StatusBadRequest || m["__type"] != tc.wantType || !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("%s %s = %d %v, want 400 %s mentioning %q", tc.op, tc.body, status, redact(m), tc.wantType, tc.wantMsg)
			}
		})
	}
}

func TestAuthAndRouting(t *testing.T) {
	ts := startServer(t, Config{})
	post := func(target, auth string) (int, string) {
		req, _ := http.NewRequest("POST", "http://"+ts.addr+"/", strings.NewReader("{}"))
		if target != "" {
			req.Header.Set("X-Amz-Target", target)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("X-Amzn-ErrorType")
	}
	good := "AWS4-HMAC-SHA256 Credential=AKID/20261130/us-east-1/IoTSecuredTunneling/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc"
	for _, tc := range []struct {
		target, auth string
		status       int
		errType      string
	}{
		{"IoTSecuredTunneling.ListTunnels", good, 200, ""},
		{"IoTSecuredTunneling.ListTunnels", "", 403, ErrTypeMissingAuthToken},
		{"IoTSecuredTunneling.ListTunnels", "Basic dXNlcjpwdw==", 403, ErrTypeIncompleteSigature},
		{"IoTSecuredTunneling.ListTunnels", "AWS4-HMAC-SHA256 Credential=AKID/x, Signature=abc", 403, ErrTypeIncompleteSigature},
		{"", good, 400, ErrTypeUnknownOperation},
		{"DynamoDB_20120810.ListTables", good, 400, ErrTypeUnknownOperation},
	} {
		if status, typ := post(tc.target, tc.auth); status != tc.status || typ != tc.errType {
			t.Errorf("target %q auth %q: %d %q, want %d %q", tc.target, tc.auth, status, typ, tc.status, tc.errType)
		}
	}
	resp, err := http.Get("http://" + ts.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("GET / = %d, want 404", resp.StatusCode)
	}
	// A plain GET of /tunnel reaches the data plane, which wants a WebSocket.
	resp, err = http.Get("http://" + ts.addr + "/tunnel?local-proxy-mode=source")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 || resp.Header.Get("channel-id") == "" {
		t.Errorf("GET /tunnel = %d (channel-id %q), want a data-plane 400", resp.StatusCode, resp.Header.Get("channel-id"))
	}

	unsigned := startServer(t, Config{AllowUnsigned: true})
	ts = unsigned
	if status, _ := post("IoTSecuredTunneling.ListTunnels", ""); status != 200 {
		t.Errorf("AllowUnsigned: %d, want 200", status)
	}

	// With Credentials, AllowUnsigned is ignored (--allow-unsigned's help): a
	// request without a signature, or with one not shaped like SigV4, is refused
	// as without AllowUnsigned, not let through unverified.
	ts = startServer(t, Config{AllowUnsigned: true, Credentials: map[string]string{"AKID": "secret"}})
	for _, tc := range []struct{ auth, errType string }{
		{"", ErrTypeMissingAuthToken},
		{"Basic dXNlcjpwdw==", ErrTypeIncompleteSigature},
	} {
		if status, typ := post("IoTSecuredTunneling.ListTunnels", tc.auth); status != 403 || typ != tc.errType {
			t.Errorf("AllowUnsigned with Credentials, Authorization %q: %d %s, want 403 %s", tc.auth, status, typ, tc.errType)
		}
	}
}

// TestForeignHostRefusedWithoutCredentials: without Credentials, a control-plane
// request whose Host names neither the server's address nor localhost is
// refused: a web page that rebound its DNS name to a tunneld on 127.0.0.1
// could otherwise open tunnels and read their tokens (its browser sends any
// headers to what is, for it, the same origin). With Credentials the page
// cannot sign, and any name the client signs works.
func TestForeignHostRefusedWithoutCredentials(t *testing.T) {
	post := func(ts *testServer, host string, sign map[string]string) (int, string) {
		t.Helper()
		body := []byte(`{"destinationConfig":{"thingName":"router1","services":["SSH"]}}`)
		req, _ := http.NewRequest("POST", "http://"+ts.addr+"/", bytes.NewReader(body))
		req.Host = host
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("X-Amz-Target", targetPrefix+"OpenTunnel")
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=a/20260101/us-east-1/IoTSecuredTunneling/aws4_request, SignedHeaders=host, Signature=0")
		for id, secret := range sign {
			SignV4(req, body, id, secret, "", "us-east-1", SigningName, time.Now())
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("X-Amzn-ErrorType")
	}
	for _, cfg := range []Config{{}, {AllowUnsigned: true}} {
		ts := startServer(t, cfg)
		port := ts.addr[strings.LastIndex(ts.addr, ":")+1:]
		for _, tc := range []struct {
			host   string
			status int
		}{
			{ts.addr, 200},
			{"localhost:" + port, 200},
			{"LocalHost:" + port, 200},
			{"[::1]:" + port, 200},
			{"rebind.attacker.example:" + port, 403},
			{"rebind.attacker.example", 403},
			{"localhost:1", 403},
			{"10.0.0.1:" + port, 403},
		} {
			if status, typ := post(ts, tc.host, nil); status != tc.status || status == 403 && typ != ErrTypeAccessDenied {
				t.Errorf("AllowUnsigned %v, Host %q: %d %s, want %d", cfg.AllowUnsigned, tc.host, status, typ, tc.status)
			}
		}
	}
	creds := map[string]string{"AKID": "secret"}
	ts := startServer(t, Config{Credentials: creds})
	if status, typ := post(ts, "tunneld.example:443", creds); status != 200 {
		t.Errorf("with Credentials, a signed request naming another host: %d %s, want 200", status, typ)
	}
}

// TestListPaginationIsStable pages while tunnels are opened and closed between
// pages: with an offset for nextToken, each open shifted the list and repeated a
// tunnel, each deletion skipped one.
func TestListPaginationIsStable(t *testing.T) {
	for _, tc := range []struct {
		name  string
		clock *fakeClock // nil: the real clock; a stopped clock: every tunnel ties on time
	}{
		{"distinct times", nil},
		{"equal times", &fakeClock{t: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{}
			if tc.clock != nil {
				cfg.now = tc.clock.now
			}
			ts := startServer(t, cfg)
			want := map[string]bool{} // open before the first page
			for range 10 {
				want[ts.open(t, "dev1", "SSH").TunnelID] = true
			}
			seen := map[string]int{}
			var listed []string
			next := ""
			for pages := 0; ; pages++ {
				if pages > 20 {
					t.Fatalf("still paging after %d pages: %v", pages, listed)
				}
				in := map[string]any{"maxResults": 3}
				if next != "" {
					in["nextToken"] = next
				}
				m := ts.mustCall(t, "ListTunnels", in)
				for _, s := range m["tunnelSummaries"].([]any) {
					id := s.(map[string]any)["tunnelId"].(string)
					seen[id]++
					listed = append(listed, id)
				}
				if next, _ = m["nextToken"].(string); next == "" {
					break
				}
				// Between pages: two tunnels opened, and the last one listed
				// deleted (its key must still place the next page).
				ts.open(t, "dev1", "SSH")
				ts.open(t, "dev1", "SSH")
				last := listed[len(listed)-1]
				if err := ts.CloseTunnel(context.Background(), &CloseTunnelInput{TunnelID: last, Delete: true}); err != nil {
					t.Fatal(err)
				}
			}
			for id, n := range seen {
				if n != 1 {
					t.Errorf("tunnel %s listed %d times, want once (pages %v)", id, n, listed)
				}
			}
			for id := range want {
				if seen[id] == 0 {
					t.Errorf("tunnel %s, open before the first page, never listed (pages %v)", id, listed)
				}
			}
		})
	}
}

// keysJSON is a JSON array of n distinct tag keys.
func keysJSON(n int) string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%q", fmt.Sprint("k", i))
	}
	return "[" + strings.Join(keys, ",") + "]"
}

// Member names are exact, as in AWS JSON 1.1: a known name in another case is an
// unknown member, ignored like any other (it neither fills the member nor trips its
// checks), and a member of the wrong type is refused naming the member, not a Go
// type.
func TestMemberNamesAreExact(t *testing.T) {
	ts := startServer(t, Config{})
	id := ts.mustCall(t, "OpenTunnel", `{"DestinationConfig":{"ThingName":"CaseDev","Services":["SSH"]},"Description":""}`)["tunnelId"].(string)
	d := ts.mustCall(t, "DescribeTunnel", map[string]string{"tunnelId": id})["tunnel"].(map[string]any)
	if d["destinationConfig"] != nil || d["description"] != nil {
		t.Errorf("tunnel opened with miscased members = %v, want neither destinationConfig nor description", d)
	}
	for _, tc := range []struct {
		op, body, wantType, wantMsg string
	}{
		{"DescribeTunnel", `{"TUNNELID":"nope"}`, ErrTypeInvalidRequest, "tunnelId is required"},
		{"DescribeTunnel", `{"tunnelID":"nope"}`, ErrTypeInvalidRequest, "tunnelId is required"},
		{"OpenTunnel", `{"destinationConfig":{"thingName":"dev1","Services":["SSH"]}}`, ErrTypeInvalidRequest, "at least one"},
		{"ListTunnels", `{"maxResults":"5"}`, ErrTypeSerialization, "maxResults must be an integer, got a string"},
		{"ListTunnels", `{"maxResults":1e400}`, ErrTypeSerialization, "maxResults must be an integer, got the number 1e400"},
		{"OpenTunnel", `{"tags":[{"key":1,"value":"v"}]}`, ErrTypeSerialization, "tags[0].key must be a string, got the number 1"},
		{"OpenTunnel", `{"destinationConfig":{"services":"SSH"}}`, ErrTypeSerialization, "destinationConfig.services must be a list, got a string"},
		{"OpenTunnel", `{"timeoutConfig":[]}`, ErrTypeSerialization, "timeoutConfig must be an object, got a list"},
		{"CloseTunnel", `{"tunnelId":"x","delete":"yes"}`, ErrTypeSerialization, "delete must be a boolean, got a string"},
		{"OpenTunnel", `[]`, ErrTypeSerialization, "must be a JSON object, got a list"},
	} {
		status, m := ts.call(t, tc.op, tc.body)
		msg, _ := m["message"].(string)
		if status != http.StatusBadRequest || m["__type"] != tc.wantType || !strings.Contains(msg, tc.wantMsg) ||
			strings.Contains(msg, "Go ") || strings.Contains(msg, "Input") {
			t.Errorf("%s %s = %d %v, want 400 %s saying %q, without Go names", tc.op, tc.body, status, m, tc.wantType, tc.wantMsg)
		}
	}
}

// Every state-changing call is logged at INFO with the caller's access key ID and
// remote address, refusals too, and data-plane handshakes with the remote address;
// tokens never.
func TestAuditLog(t *testing.T) {
	logs := &syncBuffer{}
	ts := startServer(t, Config{Logger: slog.New(slog.NewTextHandler(io.MultiWriter(logs, tlogWriter{t}), nil))})
	m := ts.mustCall(t, "OpenTunnel", `{"destinationConfig":{"services":["SSH"]}}`)
	id := m["tunnelId"].(string)
	secrets := []string{m["sourceAccessToken"].(string), m["destinationAccessToken"].(string)}
	arn := m["tunnelArn"].(string)
	ts.mustCall(t, "TagResource", map[string]any{"resourceArn": arn, "tags": []Tag{{"k", "v"}}})
	ts.mustCall(t, "UntagResource", map[string]any{"resourceArn": arn, "tagKeys": []string{"k"}})
	if _, status, _ := dialWS(t, ts.addr, "source", secrets[0], ""); status != 101 {
		t.Fatalf("source handshake: %d", status)
	}
	if _, status, _ := dialWS(t, ts.addr, "source", "not-a-token", ""); status != 400 {
		t.Fatalf("bad token handshake: %d", status)
	}
	r := ts.mustCall(t, "RotateTunnelAccessToken", map[string]string{"tunnelId": id, "clientMode": "ALL"})
	secrets = append(secrets, r["sourceAccessToken"].(string), r["destinationAccessToken"].(string))
	ts.mustCall(t, "CloseTunnel", map[string]string{"tunnelId": id})
	ts.call(t, "DescribeTunnel", map[string]string{"tunnelId": "no-such-tunnel"})

	out := logs.String()
	// Without Credentials no ID is known: "x" is logged as its fingerprint.
	caller := ` remote=127\.0\.0\.1:\d+ access_key=unknown:2d711642 signature_verified=false`
	for _, re := range []string{
		`level=INFO msg="tunnel opened" tunnel=` + id + `.*` + caller,
		`level=INFO msg="tunnel tagged" tunnel=` + id + ` keys="\[\\"k\\"\]"` + caller,
		`level=INFO msg="tunnel untagged" tunnel=` + id + ` keys="\[\\"k\\"\]"` + caller,
		`level=INFO msg="tokens rotated" tunnel=` + id + `.*` + caller,
		`level=INFO msg="tunnel closed" tunnel=` + id + `.*` + caller,
		`level=INFO msg="request refused" .*type=ResourceNotFoundException.*` + caller,
		`level=INFO msg=handshake plane=data status=101 mode=source token=\S+ channel=\S+ remote=127\.0\.0\.1:\d+`,
		`level=INFO msg=handshake plane=data status=400 mode=source token=\S+ channel=\S+ remote=127\.0\.0\.1:\d+`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("no log line matching %s", re)
		}
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("the log shows an access token")
		}
	}
}

// TestUnknownAccessKeyNotLogged: an operator who swapped AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY sends the secret key in the ID's place; the refusal's log
// line names that ID by fingerprint, never as sent. A configured ID is logged as
// it is.
func TestUnknownAccessKeyNotLogged(t *testing.T) {
	const id, secret = "AKIDEXAMPLE", "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY" // no '/': the Credential parses
	logs := &syncBuffer{}
	ts := startServer(t, Config{Credentials: map[string]string{id: secret},
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(logs, tlogWriter{t}), nil))})
	post := func(key, secret string) int {
		body := []byte(`{"tunnelId":"no-such-tunnel"}`)
		req, _ := http.NewRequest("POST", "http://"+ts.addr+"/", bytes.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("X-Amz-Target", targetPrefix+"DescribeTunnel")
		SignV4(req, body, key, secret, "", DefaultRegion, SigningName, time.Now())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if status := post(secret, id); status != http.StatusForbidden {
		t.Errorf("keys swapped: %d, want 403", status)
	}
	if status := post(id, secret); status != http.StatusBadRequest {
		t.Errorf("signed by the configured key: %d, want 400", status)
	}
	out := logs.String()
	sum := sha256.Sum256([]byte(secret))
	for _, re := range []string{
		`level=INFO msg="request refused" .*type=UnrecognizedClientException.* access_key=unknown:` + hex.EncodeToString(sum[:4]) + ` signature_verified=false`,
		`level=INFO msg="request refused" .*type=ResourceNotFoundException.* access_key=` + id + ` signature_verified=true`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("no log line matching %s", re)
		}
	}
	if strings.Contains(out, secret) {
		t.Errorf("the secret access key is in the log")
	}
}

// FuzzDecodeCursor decodes a ListTunnels nextToken, which any caller sends:
// one that is taken names a valid tunnel id and encodes back to a token that
// decodes the same.
func FuzzDecodeCursor(f *testing.F) {
	f.Add(cursor{created: time.Unix(1700000000, 5), id: "00000000-0000-4000-8000-000000000001"}.encode())
	f.Add(cursor{id: "a b"}.encode())
	f.Add("")
	f.Add("AQ")
	f.Add("AQAAAAAAAAAAYQ==")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := decodeCursor(tok)
		if err != nil {
			var ae *APIError
			if !errors.As(err, &ae) || ae.Type != ErrTypeInvalidRequest {
				t.Fatalf("decodeCursor(%q) = %v, want an InvalidRequestException", tok, err)
			}
			return
		}
		if checkTunnelID(c.id) != nil {
			t.Fatalf("decodeCursor(%q) took tunnel id %q", tok, c.id)
		}
		again, err := decodeCursor(c.encode())
		if err != nil || !again.created.Equal(c.created) || again.id != c.id || compareListOrder(c, again) != 0 {
			t.Fatalf("decodeCursor(%q) = %+v; encoded again it decodes to %+v, %v", tok, c, again, err)
		}
	})
}

// TestArnPartitionFollowsRegion: AWS ARNs carry the partition of their region
// (arn:aws-cn: in the China regions, arn:aws-us-gov: in GovCloud), and IoT
// Secure Tunneling runs in the China regions (spec §2.4). The tagging
// operations take the tunnel's ARN, and not the same one in another partition.
func TestArnPartitionFollowsRegion(t *testing.T) {
	for region, partition := range map[string]string{"cn-north-1": "aws-cn", "cn-northwest-1": "aws-cn",
		"us-gov-west-1": "aws-us-gov", "us-iso-east-1": "aws-iso", "us-isob-east-1": "aws-iso-b", "ap-east-1": "aws"} {
		ts := startServer(t, Config{Region: region})
		out := ts.open(t, "dev1", "SSH")
		if want := "arn:" + partition + ":iot:" + region + ":" + DefaultAccountID + ":tunnel/" + out.TunnelID; out.TunnelArn != want {
			t.Errorf("region %s: tunnelArn = %s, want %s", region, out.TunnelArn, want)
		}
		ts.mustCall(t, "TagResource", map[string]any{"resourceArn": out.TunnelArn, "tags": []Tag{{"a", "1"}}})
		rest := strings.SplitN(out.TunnelArn, ":", 3)[2] // iot:REGION:ACCOUNT:tunnel/ID
		other := "arn:aws-cn:" + rest
		if partition == "aws-cn" {
			other = "arn:aws:" + rest
		}
		if status, m := ts.call(t, "ListTagsForResource", map[string]any{"resourceArn": other}); status != 400 || m["__type"] != ErrTypeResourceNotFound {
			t.Errorf("region %s: ListTagsForResource(%s) = %d %v, want 400 %s", region, other, status, m, ErrTypeResourceNotFound)
		}
	}
}
