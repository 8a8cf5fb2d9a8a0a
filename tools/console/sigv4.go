package console

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"
)

// signV4 signs a control-plane request with AWS Signature Version 4 (header form),
// as the AWS CLI does for IoTSecuredTunneling: the headers it sends, the body's
// hash, the credential scope day/region/service/aws4_request.
func signV4(req *http.Request, body []byte, c Credentials, region, service string, now time.Time) {
	amzDate := now.UTC().Format("20060102T150405Z")
	day := amzDate[:8]
	req.Header.Set("X-Amz-Date", amzDate)
	if c.SessionToken != "" {
		req.Header.Set("X-Amz-Security-Token", c.SessionToken)
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	values := map[string]string{"host": host}
	for k := range req.Header {
		values[strings.ToLower(k)] = strings.Join(strings.Fields(req.Header.Get(k)), " ")
	}
	signed := make([]string, 0, len(values))
	for k := range values {
		if k == "host" || k == "content-type" || strings.HasPrefix(k, "x-amz-") {
			signed = append(signed, k)
		}
	}
	sort.Strings(signed)
	var canon strings.Builder
	path := req.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	fmt.Fprintf(&canon, "%s\n%s\n%s\n", req.Method, path, req.URL.RawQuery)
	for _, k := range signed {
		fmt.Fprintf(&canon, "%s:%s\n", k, values[k])
	}
	fmt.Fprintf(&canon, "\n%s\n%s", strings.Join(signed, ";"), hexSHA256([]byte(body)))

	scope := day + "/" + region + "/" + service + "/aws4_request"
	sts := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hexSHA256([]byte(canon.String()))
	key := hmacSHA256([]byte("AWS4"+c.SecretAccessKey), day)
	for _, p := range []string{region, service, "aws4_request"} {
		key = hmacSHA256(key, p)
	}
	req.Header.Set("Authorization", fmt.Sprintf("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
		c.AccessKeyID, scope, strings.Join(signed, ";"), hex.EncodeToString(hmacSHA256(key, sts))))
}

func hexSHA256(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}
