package tunneld

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// SigV4 verification of control-plane requests, used when Config.Credentials is set
// (AWS Signature Version 4, header form; the API's signing name is
// IoTSecuredTunneling).

const (
	ErrTypeInvalidSignature   = "InvalidSignatureException"
	ErrTypeUnrecognizedClient = "UnrecognizedClientException"
)

// SigningName is the service in the credential scope of a request to this API: the
// metadata "signingName" of its model (botocore data/iotsecuretunneling/2018-10-05/
// service-2.json), which the AWS CLI and SDKs sign with.
const SigningName = "IoTSecuredTunneling"

// maxClockSkew is how far X-Amz-Date may be from the server's clock, as at AWS.
const maxClockSkew = 15 * time.Minute

// sigV4Auth is a parsed Authorization header.
type sigV4Auth struct {
	accessKey, date, region, service string
	signedHeaders                    []string
	signature                        string
}

func parseSigV4(h string) (*sigV4Auth, error) {
	rest, ok := strings.CutPrefix(h, "AWS4-HMAC-SHA256 ")
	if !ok {
		return nil, &APIError{Type: ErrTypeIncompleteSigature, Message: "Authorization header requires the AWS4-HMAC-SHA256 scheme", Status: http.StatusForbidden}
	}
	a := &sigV4Auth{}
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			f := strings.Split(v, "/")
			if len(f) != 5 || f[4] != "aws4_request" {
				return nil, &APIError{Type: ErrTypeIncompleteSigature, Message: "Credential must be AKID/DATE/REGION/SERVICE/aws4_request", Status: http.StatusForbidden}
			}
			a.accessKey, a.date, a.region, a.service = f[0], f[1], f[2], f[3]
		case "SignedHeaders":
			a.signedHeaders = strings.Split(v, ";")
		case "Signature":
			a.signature = v
		}
	}
	for name, v := range map[string]bool{"Credential": a.accessKey != "", "SignedHeaders": len(a.signedHeaders) > 0, "Signature": a.signature != ""} {
		if !v {
			return nil, &APIError{Type: ErrTypeIncompleteSigature, Message: "Authorization header requires a '" + name + "' parameter", Status: http.StatusForbidden}
		}
	}
	return a, nil
}

// errUnrecognizedClient is AWS's answer to an access key it does not know.
func errUnrecognizedClient() *APIError {
	return &APIError{Type: ErrTypeUnrecognizedClient, Message: "The security token included in the request is invalid.", Status: http.StatusForbidden}
}

// verifySigV4 checks the request's signature over body with the configured secret.
func (s *Server) verifySigV4(r *http.Request, a *sigV4Auth, body []byte) error {
	secret, ok := s.cfg.Credentials[a.accessKey]
	if !ok {
		return errUnrecognizedClient()
	}
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse("20060102T150405Z", amzDate)
	if err != nil || amzDate[:8] != a.date { // parsed: 16 bytes
		return &APIError{Type: ErrTypeIncompleteSigature, Message: "X-Amz-Date is missing, malformed or not the credential's date", Status: http.StatusForbidden}
	}
	// The scope names where the signature may be used: a request signed for
	// another region or service is not for this one, even with a valid signature.
	region, service := s.cfg.Region, s.cfg.signingName
	if region == "" {
		region = DefaultRegion
	}
	if service == "" {
		service = SigningName
	}
	scope := a.date + "/" + region + "/" + service + "/aws4_request"
	switch {
	case a.region != region:
		return &APIError{Type: ErrTypeInvalidSignature, Message: fmt.Sprintf("Credential should be scoped to a valid region, not '%s'; want the scope %s", a.region, scope), Status: http.StatusForbidden}
	case a.service != service:
		return &APIError{Type: ErrTypeInvalidSignature, Message: fmt.Sprintf("Credential should be scoped to correct service: '%s', not '%s'; want the scope %s", service, a.service, scope), Status: http.StatusForbidden}
	}
	if d := s.now().Sub(t); d > maxClockSkew || d < -maxClockSkew {
		return &APIError{Type: ErrTypeInvalidSignature, Message: "Signature expired: " + amzDate + " is more than 15 minutes from the server's time", Status: http.StatusForbidden}
	}
	if h := r.Header.Get("X-Amz-Content-Sha256"); h != "" && h != "UNSIGNED-PAYLOAD" && h != hexSHA256(body) {
		return &APIError{Type: ErrTypeInvalidSignature, Message: "X-Amz-Content-Sha256 does not match the body", Status: http.StatusForbidden}
	}
	if !slices.Contains(a.signedHeaders, "host") {
		return &APIError{Type: ErrTypeInvalidSignature, Message: "the host header must be signed", Status: http.StatusForbidden}
	}
	want := signature(secret, amzDate, a.region, a.service, canonicalRequest(r, a.signedHeaders, body))
	if !hmac.Equal([]byte(want), []byte(a.signature)) {
		return &APIError{Type: ErrTypeInvalidSignature, Message: "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.", Status: http.StatusForbidden}
	}
	return nil
}

// SignV4 signs req (header form) as the AWS CLI does: host, content-type and the
// x-amz-* headers are signed with the body's hash, in the scope
// day/region/service/aws4_request. It is verifySigV4's inverse, for the clients of
// this service (the lab's web console).
func SignV4(req *http.Request, body []byte, accessKey, secret, sessionToken, region, service string, now time.Time) {
	amzDate := now.UTC().Format("20060102T150405Z")
	req.Header.Set("X-Amz-Date", amzDate)
	if sessionToken != "" {
		req.Header.Set("X-Amz-Security-Token", sessionToken)
	}
	if req.Host == "" {
		req.Host = req.URL.Host
	}
	signed := []string{"host"}
	for k := range req.Header {
		if k := strings.ToLower(k); k == "content-type" || strings.HasPrefix(k, "x-amz-") {
			signed = append(signed, k)
		}
	}
	slices.Sort(signed)
	sig := signature(secret, amzDate, region, service, canonicalRequest(req, signed, body))
	req.Header.Set("Authorization", fmt.Sprintf("AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, Signature=%s",
		accessKey, amzDate[:8], region, service, strings.Join(signed, ";"), sig))
}

// signature is the SigV4 signature of a canonical request made at amzDate.
func signature(secret, amzDate, region, service, canonical string) string {
	day := amzDate[:8]
	sts := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + day + "/" + region + "/" + service + "/aws4_request\n" + hexSHA256([]byte(canonical))
	key := hmacSHA256([]byte("AWS4"+secret), day)
	for _, p := range []string{region, service, "aws4_request"} {
		key = hmacSHA256(key, p)
	}
	return hex.EncodeToString(hmacSHA256(key, sts))
}

// canonicalRequest is the SigV4 canonical form of r.
func canonicalRequest(r *http.Request, signed []string, body []byte) string {
	var b strings.Builder
	b.WriteString(r.Method + "\n")
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	b.WriteString(path + "\n")
	q := r.URL.Query()
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var qs []string
	for _, k := range keys {
		vs := slices.Clone(q[k])
		slices.Sort(vs)
		for _, v := range vs {
			qs = append(qs, sigEscape(k)+"="+sigEscape(v))
		}
	}
	b.WriteString(strings.Join(qs, "&") + "\n")
	for _, h := range signed {
		var vals []string
		if h == "host" {
			vals = []string{r.Host}
		} else {
			vals = slices.Clone(r.Header.Values(h)) // not the request's own slice
		}
		for i, v := range vals {
			vals[i] = strings.Join(strings.Fields(v), " ")
		}
		fmt.Fprintf(&b, "%s:%s\n", h, strings.Join(vals, ","))
	}
	b.WriteString("\n" + strings.Join(signed, ";") + "\n")
	if r.Header.Get("X-Amz-Content-Sha256") == "UNSIGNED-PAYLOAD" {
		b.WriteString("UNSIGNED-PAYLOAD")
	} else {
		b.WriteString(hexSHA256(body)) // the body's own hash: verifySigV4 refused a differing X-Amz-Content-Sha256 already
	}
	return b.String()
}

// sigEscape is URI encoding as SigV4 wants it: unreserved characters as they are,
// everything else %XX.
func sigEscape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
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
