package tunneld

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// Control-plane request bodies. The body is read before its signature is
// checked (the signature covers its hash), so a client that only knows an
// access key ID (key IDs are not secret: logs, CI settings) has what it sends
// read and held. What it can hold is bounded in three ways:
//
//   - each operation has its own limit, the largest valid request of that
//     operation with room to spare (bodyLimits); a body over it is refused
//     without being read;
//   - up to freeBody is read for any request;
//   - a body over freeBody, which only OpenTunnel, TagResource and
//     UntagResource can have (many tags), needs a share of largeBodyBudget,
//     shared by all requests, for as long as it is held; when the budget is
//     spent the request is refused at once with ThrottlingException, which the
//     AWS SDKs and CLI retry.
//
// So connections (Config.MaxConnections) × freeBody, plus largeBodyBudget, is
// the most that bodies hold at once, where every connection could hold the
// largest body (1 MiB) before.
//
// "Valid" is as the AWS CLI sends it: botocore escapes every character outside
// ASCII (\uXXXX, and a pair of them, 12 bytes, for one outside the BMP), and
// tunneld's checks count characters, so the largest valid body is made of such
// characters: letters outside the BMP, say, which the tag pattern allows
// (TestLargestValidRequestsFit builds each one).
const (
	// freeBody is what any request may have read without a share of
	// largeBodyBudget: the largest valid request of every operation but
	// OpenTunnel, TagResource and UntagResource fits in a quarter of it
	// (smallBodyLimit), and OpenTunnel and TagResource with 50 tags (AWS's
	// tags-per-resource quota) of ASCII, some 23 KB, fit in it.
	freeBody = 64 << 10
	// largeBodyBudget is the most that bodies over freeBody hold at once: four
	// of the largest.
	largeBodyBudget = 4 << 20
	// smallBodyLimit is the limit of the operations without tags: the largest
	// valid ListTagsForResource (a 1011-byte resourceArn, every byte escaped:
	// 6 KB) and ListTunnels (a 4096-byte nextToken: 4.3 KB) are the biggest.
	smallBodyLimit = 16 << 10
)

// bodyLimits is the largest body read for each operation: above the largest
// valid request of the operation, and a round number. Operations not listed
// (and unknown ones) have smallBodyLimit.
var bodyLimits = map[string]int64{
	// 200 tags of 128 and 256 letters outside the BMP (12 bytes each,
	// escaped), a description of 2048 such letters, a destinationConfig with
	// a thingName and 3 services of 128: 957 KB.
	"OpenTunnel": 1 << 20,
	// The same 200 tags and a resourceArn of 1011 bytes, escaped: 934 KB.
	"TagResource": 1 << 20,
	// 200 keys of 128 such letters and the resourceArn: 317 KB.
	"UntagResource": 512 << 10,
}

// bodyLimit is the largest body read for operation op.
func bodyLimit(op string) int64 {
	if n, ok := bodyLimits[op]; ok {
		return n
	}
	return smallBodyLimit
}

// bodyBudget is largeBodyBudget: the bytes that bodies over freeBody may hold.
type bodyBudget struct {
	mu   sync.Mutex
	used int64
	max  int64
}

// take takes n bytes of the budget, or reports that they are not left.
func (b *bodyBudget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max {
		return false
	}
	b.used += n
	return true
}

// give returns n bytes taken.
func (b *bodyBudget) give(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// readBody reads r's body for operation op within its limit (bodyLimit), and
// returns it with a function that gives back what it took of the budget, to
// call when the body is no longer held. A body over the limit is refused
// (SerializationException, as before), unread if its Content-Length says so;
// one over freeBody when the budget is spent is refused with
// ThrottlingException. Either answer closes the connection without reading
// the rest of the body (hangUp).
func (s *Server) readBody(r *http.Request, op string) ([]byte, func(), error) {
	limit := bodyLimit(op)
	if r.ContentLength > limit {
		return nil, nil, tooLarge(op, limit, fmt.Sprintf("of %d bytes is ", r.ContentLength))
	}
	free := min(limit, freeBody)
	var taken int64
	release := func() { s.bodies.give(taken) }
	if r.ContentLength > free {
		if !s.bodies.take(r.ContentLength) {
			return nil, nil, throttled()
		}
		taken = r.ContentLength
	}
	// With a Content-Length, the body reader ends there: the first read is
	// the whole body. Without one (chunked), the part past free needs its
	// share of the budget before it is read: the most it can be, the limit.
	body, err := io.ReadAll(io.LimitReader(r.Body, max(free, taken)+1))
	if err == nil && int64(len(body)) > free && taken == 0 {
		if !s.bodies.take(limit) {
			return nil, nil, throttled()
		}
		taken = limit
		var rest []byte
		rest, err = io.ReadAll(io.LimitReader(r.Body, limit+1-int64(len(body))))
		body = append(body, rest...)
	}
	if err != nil {
		release()
		return nil, nil, &APIError{Type: ErrTypeSerialization, Message: "reading the request body: " + err.Error()}
	}
	if int64(len(body)) > limit {
		release()
		return nil, nil, tooLarge(op, limit, "is ")
	}
	return body, release, nil
}

func tooLarge(op string, limit int64, size string) *APIError {
	return &APIError{Type: ErrTypeSerialization, abandon: true,
		Message: fmt.Sprintf("request body %sover the limit of %s requests, %d bytes, which is above the largest valid one", size, op, limit)}
}

func throttled() *APIError {
	return &APIError{Type: ErrTypeThrottling, Status: http.StatusTooManyRequests, abandon: true,
		Message: "Rate exceeded: too many large request bodies are being read at once; retry later"}
}

// hangUp answers status and body, with the headers set in w, on a request
// whose body is left unread, and closes the connection without reading the
// rest of the body; false if it could not take the connection over (the
// caller answers as usual). net/http would read up to 256 KiB of the body
// before or after the answer, to use the connection again, for as long as the
// client takes to send it (up to the read timeout), or, told not to, close at
// once, and a client still sending would see its connection reset rather than
// the answer. So, as net/http's closeWriteAndWait after a MaxBytesReader: the
// answer, the write side shut, and the connection closed lingerBeforeClose
// later (at once if the server stops) without a read.
func (s *Server) hangUp(w http.ResponseWriter, status int, body []byte) bool {
	s.lingerMu.Lock()
	if s.lingerEnded {
		s.lingerMu.Unlock()
		return false
	}
	s.lingering.Add(1)
	s.lingerMu.Unlock()
	defer s.lingering.Done()
	h := w.Header().Clone()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetWriteDeadline(time.Now().Add(lingerBeforeClose))
	resp := &http.Response{StatusCode: status, ProtoMajor: 1, ProtoMinor: 1, Header: h, Close: true,
		ContentLength: int64(len(body)), Body: io.NopCloser(bytes.NewReader(body))}
	if resp.Write(brw) != nil || brw.Flush() != nil {
		return true
	}
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite() // a TLS connection sends its close_notify
	}
	t := time.NewTimer(lingerBeforeClose)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ctx.Done():
	}
	return true
}

// endLingering makes hangUp answer as usual from now on, and waits for those
// lingering: net/http does not wait for hijacked connections.
func (s *Server) endLingering() {
	s.lingerMu.Lock()
	s.lingerEnded = true
	s.lingerMu.Unlock()
	s.lingering.Wait()
}

// lingerBeforeClose is how long hangUp waits after its answer before it closes
// the connection: net/http's rstAvoidanceDelay.
const lingerBeforeClose = 500 * time.Millisecond
