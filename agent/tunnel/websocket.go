package tunnel

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/porthole-iot/porthole/agent/tunnel/internal/tlsbatch"
)

// The device binary speaks WebSocket (RFC 6455) through this small client instead of
// a library: a WebSocket library brings net/http with it, which costs the device
// about 1.4 MB (PLATFORM.md, docs/size.md). It implements what the tunnel needs and
// nothing more: the client handshake (directly or through an HTTP CONNECT proxy),
// binary messages, fragmentation, ping/pong and the close handshake. Tests run it
// against coder/websocket's server.

// wsGUID is the key-accept suffix of RFC 6455 §1.3.
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// WebSocket opcodes (RFC 6455 §5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa
)

// CloseError is a Close frame received from the service.
type CloseError struct {
	_      [0]func() // not comparable: no equality function in the binary (docs/size.md)
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("tunnel: WebSocket closed by the service: %d %s", e.Code, e.Reason)
}

// handshakeRequest is the client's upgrade request.
type handshakeRequest struct {
	url         *url.URL
	header      [][2]string // extra headers, in order
	subprotocol string
	tls         *tls.Config // nil for ws://
	proxy       *url.URL    // nil: direct
	proxyTLS    *tls.Config // for an https:// proxy: always verifies
	secrets     []string    // the tokens in header: never quoted in an error
}

// handshakeResponse is what the service answered.
type handshakeResponse struct {
	status int
	header map[string][]string // canonical lower-case keys
	body   string              // up to 1 KiB, for refusals
}

// get is the answer's header k, "" if it has none. Not inlined (agent/tunnel
// keeps inlining, device.gcflags): its eight callers would each carry a copy.
//
//go:noinline
func (r *handshakeResponse) get(k string) string {
	if v := r.header[strings.ToLower(k)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// wsConn is an established client WebSocket.
type wsConn struct {
	conn        net.Conn
	br          *bufio.Reader
	subprotocol string
	onPong      func()

	wmu   sync.Mutex // one frame at a time
	wbuf  []byte
	out   io.Writer // conn, or under TLS one write per frame (tlsbatch)
	rng   *mrand.ChaCha8
	close sync.Once
	// closeSent is set by the first Close frame sent: an endpoint sends one
	// (RFC 6455 §5.5.1), and the service's answer to closeSoon's gets none.
	closeSent atomic.Bool
	// peerClose is the service's Close frame, once received: a write that
	// fails after it (the reader closed the socket) fails with it, not with
	// "use of closed network connection", which would read as a lost link.
	peerClose atomic.Pointer[CloseError]

	// Read side, owned by the single reader.
	remaining int64 // bytes left in the current data frame
	inMessage bool  // a fragmented data message is in progress
	msgLen    int64 // bytes of the current message so far
	readErr   error
}

// dialWebSocket connects, upgrades and returns the connection, or the service's
// refusal as *handshakeResponse with a non-101 status and a nil conn.
func dialWebSocket(ctx context.Context, req *handshakeRequest) (*wsConn, *handshakeResponse, error) {
	host := req.url.Host
	d := net.Dialer{Control: dialControl}
	var conn net.Conn
	var err error
	if req.proxy != nil {
		conn, err = dialViaProxy(ctx, &d, req.proxy, host, req.proxyTLS)
	} else {
		conn, err = d.DialContext(ctx, "tcp", host)
	}
	if err != nil {
		return nil, nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	raw := conn // for the timeout: conn is replaced by its TLS connection
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	fail := func(err error) (*wsConn, *handshakeResponse, error) {
		conn.Close()
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, err
	}
	if req.tls != nil {
		tc := req.tls.Clone()
		name := tc.ServerName
		if name == "" {
			name, _, _ = net.SplitHostPort(host)
			name = strings.Trim(name, "[]")
		}
		pinServerName(tc, name)
		t := tls.Client(tlsbatch.New(conn), tc)
		if err := t.HandshakeContext(ctx); err != nil {
			return fail(err)
		}
		conn = t
	}
	var keyBytes [16]byte
	rand.Read(keyBytes[:])
	key := base64.StdEncoding.EncodeToString(keyBytes[:])
	head := "GET " + req.url.RequestURI() + " HTTP/1.1\r\nHost: " + hostHeader(req.url) + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: " + req.subprotocol + "\r\n"
	for _, h := range req.header {
		head += h[0] + ": " + h[1] + "\r\n"
	}
	if _, err := io.WriteString(conn, head+"\r\n"); err != nil {
		return fail(fmt.Errorf("sending upgrade request: %w", err))
	}
	br := bufio.NewReaderSize(conn, 16<<10)
	// What the error quotes of a malformed answer must not show the tokens,
	// should the service (or what answers in its place) echo the request.
	resp, err := readResponse(br, req.secrets...)
	if err != nil {
		return fail(fmt.Errorf("reading upgrade response: %w", err))
	}
	if resp.status != 101 {
		resp.body = readBody(br, resp)
		conn.Close()
		return nil, resp, nil
	}
	if !headerHasToken(resp.get("Upgrade"), "websocket") || !headerHasToken(resp.get("Connection"), "upgrade") {
		return fail(errors.New("WebSocket protocol violation: 101 without Upgrade: websocket"))
	}
	sum := sha1.Sum([]byte(key + wsGUID))
	if resp.get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		return fail(errors.New("WebSocket protocol violation: wrong Sec-WebSocket-Accept"))
	}
	if resp.get("Sec-WebSocket-Extensions") != "" {
		return fail(errors.New("WebSocket protocol violation: an extension the client did not offer"))
	}
	conn.SetDeadline(time.Time{})
	var seed [32]byte
	rand.Read(seed[:])
	c := newWSConn(conn, br, seed)
	c.subprotocol = resp.get("Sec-WebSocket-Protocol")
	return c, resp, nil
}

// newWSConn is the WebSocket on conn once its handshake is done; br reads conn.
// Under TLS, frames are written through tlsbatch: one system call each.
func newWSConn(conn net.Conn, br *bufio.Reader, maskSeed [32]byte) *wsConn {
	out := io.Writer(conn)
	if t, ok := conn.(*tls.Conn); ok {
		out = tlsbatch.Writer(t)
	}
	return &wsConn{conn: conn, out: out, br: br, rng: mrand.NewChaCha8(maskSeed)}
}

func hostHeader(u *url.URL) string {
	h, p, err := net.SplitHostPort(u.Host)
	if err != nil {
		return u.Host
	}
	if i := strings.IndexByte(h, '%'); i >= 0 {
		h = h[:i] // a zone is this host's own, never sent (RFC 6874 §4)
	}
	if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	if u.Scheme == "wss" && p == "443" || u.Scheme == "ws" && p == "80" {
		return h
	}
	return h + ":" + p
}

// ProxyError is a failure to reach or handshake with the HTTPS proxy itself
// (its name, its address, its TLS, or its refusal of CONNECT), as opposed to
// the tunneling service behind it: a caller that stops on a certificate or DNS
// error says which.
type ProxyError struct {
	_      [0]func() // not comparable: no equality function in the binary (docs/size.md)
	Err    error
	Status int // the proxy's answer to CONNECT, if it refused it (407: credentials)
}

func (e *ProxyError) Error() string { return e.Err.Error() }
func (e *ProxyError) Unwrap() error { return e.Err }

// dialViaProxy opens a tunnel to target through an HTTP(S) proxy with CONNECT
// (spec §2.7), sending Basic credentials from the proxy URL. An https:// proxy
// is reached with tlsConf (nil: TLS 1.2+ and the system roots), which must
// verify it: InsecureSkipVerify, the service's, is no part of it.
func dialViaProxy(ctx context.Context, d *net.Dialer, proxy *url.URL, target string, tlsConf *tls.Config) (net.Conn, error) {
	conn, err := d.DialContext(ctx, "tcp", proxy.Host)
	if err != nil {
		return nil, &ProxyError{Err: fmt.Errorf("connecting to the proxy: %w", err)}
	}
	raw := conn // for the timeout: conn is replaced by its TLS connection
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if proxy.Scheme == "https" {
		pc := &tls.Config{MinVersion: tls.VersionTLS12}
		if tlsConf != nil {
			pc = tlsConf.Clone()
		}
		pinServerName(pc, proxy.Hostname())
		t := tls.Client(conn, pc)
		if err := t.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, &ProxyError{Err: fmt.Errorf("TLS to the proxy: %w", err)}
		}
		conn = t
	}
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	// What the answer's quoted parts must not show (the error is logged and
	// published): the credentials as sent, and decoded, should the peer echo them.
	var secrets []string
	if u := proxy.User; u != nil {
		pass, _ := u.Password()
		basic := base64.StdEncoding.EncodeToString([]byte(u.Username() + ":" + pass))
		req += "Proxy-Authorization: Basic " + basic + "\r\n"
		secrets = []string{basic, pass, u.Username()}
	}
	req += "\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		return nil, fmt.Errorf("proxy: %w", err)
	}
	br := bufio.NewReader(conn)
	resp, err := readResponse(br, secrets...)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("proxy: %w", err)
	}
	if resp.status < 200 || resp.status > 299 {
		conn.Close()
		err := fmt.Errorf("proxy refused CONNECT: %d", resp.status)
		if resp.status == 407 {
			offered := resp.header["proxy-authenticate"]
			for i := range offered {
				offered[i] = redact(offered[i], secrets)
			}
			err = fmt.Errorf("%w Proxy Authentication Required: %s", err, proxyAuthHint(proxy.User != nil, offered))
		}
		return nil, &ProxyError{Err: err, Status: resp.status}
	}
	if br.Buffered() > 0 {
		conn.Close()
		return nil, errors.New("proxy sent data before the tunnel was up")
	}
	return conn, nil
}

// proxyAuthHint says why a proxy answered 407, from whether credentials were
// sent and the schemes it offers (Proxy-Authenticate).
func proxyAuthHint(sent bool, offered []string) string {
	var schemes []string
	for _, o := range offered {
		scheme, _, _ := strings.Cut(o, " ")
		if strings.EqualFold(scheme, "Basic") {
			schemes = nil
			break
		}
		schemes = append(schemes, Printable(truncate(scheme, 32)))
	}
	switch {
	case len(schemes) > 0:
		return "it asks for " + strings.Join(schemes, " or ") + " authentication, and porthole sends Basic only"
	case sent:
		return "it refused the user name and password of the proxy URL"
	}
	return "it wants a user name and password: put them in the proxy URL (http://USER:PASSWORD@host:port)"
}

// maxResponseHeader bounds an upgrade or CONNECT response's head.
const maxResponseHeader = 16 << 10

// readResponse parses an HTTP/1.x status line and headers (no body). A malformed
// line is quoted in the error, truncated, with secrets taken out first.
func readResponse(br *bufio.Reader, secrets ...string) (*handshakeResponse, error) {
	total := 0
	line := func() (string, error) {
		var s []byte
		for {
			frag, isPrefix, err := br.ReadLine()
			if err != nil {
				return "", err
			}
			total += len(frag) + 2
			if total > maxResponseHeader {
				return "", errors.New("response head too large")
			}
			s = append(s, frag...)
			if !isPrefix {
				return string(s), nil
			}
		}
	}
	status, err := line()
	if err != nil {
		return nil, err
	}
	proto, rest, ok := strings.Cut(status, " ")
	if !ok || !strings.HasPrefix(proto, "HTTP/1.") {
		return nil, malformedLine("status", status, secrets)
	}
	codeStr, _, _ := strings.Cut(rest, " ")
	code, err := strconv.Atoi(codeStr)
	if err != nil || len(codeStr) != 3 || code < 100 {
		return nil, malformedLine("status", status, secrets)
	}
	r := &handshakeResponse{status: code, header: map[string][]string{}}
	for {
		l, err := line()
		if err != nil {
			return nil, err
		}
		if l == "" {
			return r, nil
		}
		k, v, ok := strings.Cut(l, ":")
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			return nil, malformedLine("header", l, secrets)
		}
		k = strings.ToLower(k)
		r.header[k] = append(r.header[k], strings.TrimSpace(v))
	}
}

// readBody reads up to 1 KiB of a refusal's body (chunked, Content-Length or
// until close). A chunked body is decoded, and read only to its last chunk: the
// server may keep the connection open after it, and reading on would wait for
// the handshake timeout. So would reading a 1xx, 204 or 304 answer's, which
// has none, whatever its headers say (RFC 9112 §6.3).
func readBody(br *bufio.Reader, r *handshakeResponse) string {
	if r.status < 200 || r.status == 204 || r.status == 304 {
		return ""
	}
	if headerHasToken(strings.Join(r.header["transfer-encoding"], ","), "chunked") {
		return Printable(strings.TrimSpace(string(readChunked(br, 1024))))
	}
	n := int64(1024)
	if cl, err := strconv.ParseInt(r.get("Content-Length"), 10, 64); err == nil && cl < n {
		n = cl
	}
	if n <= 0 {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(br, n))
	return Printable(strings.TrimSpace(string(b)))
}

// readChunked decodes up to limit bytes of a chunked body (RFC 9112 §7.1),
// stopping at its last chunk, at limit, or at the first malformed line.
func readChunked(br *bufio.Reader, limit int) []byte {
	var b []byte
	for len(b) < limit {
		line, err := br.ReadSlice('\n')
		if err != nil {
			break
		}
		size, _, _ := strings.Cut(strings.TrimSpace(string(line)), ";")
		n, err := strconv.ParseUint(strings.TrimSpace(size), 16, 32)
		if err != nil || n == 0 {
			break
		}
		// n is compared as it is: int(n) is negative on 32-bit devices
		// for sizes from 0x80000000 (a panic in make).
		want := int(min(n, uint64(limit-len(b))))
		chunk := make([]byte, want)
		got, _ := io.ReadFull(br, chunk)
		b = append(b, chunk[:got]...)
		if got < want || uint64(want) < n {
			break
		}
		if _, err := br.Discard(2); err != nil { // the chunk's CRLF
			break
		}
	}
	return b
}

// Printable is text from the service (a refusal's body, a Close reason, a
// header, an error naming what its certificate holds) made safe for a terminal: control characters, invalid UTF-8 and
// other non-printable runes become \x.. or \u.... escapes, so that a hostile
// endpoint (or anyone in its path under --insecure-skip-verify) cannot send
// escape sequences to the operator's terminal through an error message.
func Printable(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsGraphic(r) }) && utf8.ValidString(s) {
		return s
	}
	q := strconv.QuoteToGraphic(s)
	return q[1 : len(q)-1]
}

// malformedLine is readResponse's error for a status or header line (what)
// that does not parse: the line quoted, cut short, without secrets.
func malformedLine(what, line string, secrets []string) error {
	return fmt.Errorf("malformed %s line %q", what, truncate(redact(line, secrets), 64))
}

// redact replaces each of secrets in s, in order (the longer ones first). It
// comes before truncate: a secret cut at the end would not match.
func redact(s string, secrets []string) string {
	for _, x := range secrets {
		if x != "" {
			s = strings.ReplaceAll(s, x, "[redacted]")
		}
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func headerHasToken(v, token string) bool {
	for _, t := range strings.Split(v, ",") {
		if strings.EqualFold(strings.TrimSpace(t), token) {
			return true
		}
	}
	return false
}

// writeFrame sends one masked frame (clients always mask, RFC 6455 §5.3).
func (c *wsConn) writeFrame(op byte, payload []byte) error {
	return c.writeFrameWith(op, framePayload(payload).appendTo)
}

// framePayload is a frame's payload as writeFrame sends it. writeFrame passes
// a method value, not a closure: it is inlined where it is called, and a
// closure would be compiled once for each caller (docs/size.md).
type framePayload []byte

func (p framePayload) appendTo(b []byte) ([]byte, error) { return append(b, p...), nil }

// maxFrameHeader is the longest client frame header: 2 octets, an 8-octet length
// and the 4-octet mask key.
const maxFrameHeader = 14

// writeFrameWith sends one masked frame whose payload appendPayload appends to the
// frame buffer, so that a tunnel message is encoded where it is sent from: no
// copy, and no frame-sized buffer held by each writer that waits for the lock.
// If appendPayload fails, nothing is sent.
func (c *wsConn) writeFrameWith(op byte, appendPayload func([]byte) ([]byte, error)) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	// The payload goes after room for the longest header; the header is then
	// written right before the payload.
	b := append(c.wbuf[:0], make([]byte, maxFrameHeader)...)
	b, err := appendPayload(b)
	if err != nil {
		return err
	}
	payload := b[maxFrameHeader:]
	var h [maxFrameHeader]byte
	hdr := append(h[:0], 0x80|op)
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n <= 0xffff:
		hdr = append(hdr, 0x80|126, byte(n>>8), byte(n))
	default:
		hdr = append(hdr, 0x80|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	var key [4]byte
	binary.LittleEndian.PutUint32(key[:], uint32(c.rng.Uint64()))
	hdr = append(hdr, key[:]...)
	mask(payload, key)
	frame := b[maxFrameHeader-len(hdr):]
	copy(frame, hdr)
	if _, err = c.out.Write(frame); err != nil {
		if ce := c.peerClose.Load(); ce != nil {
			err = ce
		}
	}
	if cap(b) <= 2*MaxWebSocketMessage {
		c.wbuf = b
	}
	return err
}

// mask XORs b with key as RFC 6455 §5.3 says (octet i with key[i mod 4]), eight
// octets at a time: the octet loop ran at ~500 MB/s here (BenchmarkMask), about
// 2 ms of CPU per MiB the agent or porthole connect sent; this runs at ~12 GB/s.
func mask(b []byte, key [4]byte) {
	k := uint64(binary.LittleEndian.Uint32(key[:]))
	k |= k << 32
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k)
		b = b[8:]
	}
	for i := range b {
		b[i] ^= key[i&3]
	}
}

// ping sends a ping; its pong is reported through onPong.
func (c *wsConn) ping(payload []byte) error { return c.writeFrame(opPing, payload) }

// Read returns the payload bytes of binary messages as one stream (spec §1.2),
// answering pings and enforcing the per-message limit on the way. A Close frame
// gives *CloseError; a text message is a protocol error.
func (c *wsConn) Read(p []byte) (int, error) {
	if c.readErr != nil {
		return 0, c.readErr
	}
	for c.remaining == 0 {
		if err := c.nextFrame(); err != nil {
			c.readErr = err
			return 0, err
		}
	}
	if int64(len(p)) > c.remaining {
		p = p[:c.remaining]
	}
	n, err := c.br.Read(p)
	c.remaining -= int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		c.readErr = err
	}
	return n, err
}

// nextFrame reads frame headers until a data frame with payload starts; control
// frames are handled here.
func (c *wsConn) nextFrame() error {
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return err
	}
	fin, op := h[0]&0x80 != 0, h[0]&0x0f
	if h[0]&0x70 != 0 {
		return c.fail(1002, "reserved bits set")
	}
	if h[1]&0x80 != 0 {
		return c.fail(1002, "masked frame from the server")
	}
	n := int64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return err
		}
		n = int64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return err
		}
		u := binary.BigEndian.Uint64(b[:])
		if u > 1<<62 {
			return c.fail(1002, "frame length out of range")
		}
		n = int64(u)
	}
	switch op {
	case opPing, opPong, opClose:
		if n > 125 || !fin {
			return c.fail(1002, "bad control frame")
		}
		var buf [125]byte
		if _, err := io.ReadFull(c.br, buf[:n]); err != nil {
			return err
		}
		return c.control(op, buf[:n])
	case opText:
		return c.fail(1003, "text frames are not part of the protocol")
	case opBinary:
		if c.inMessage {
			return c.fail(1002, "new message inside a fragmented one")
		}
		c.msgLen = 0
	case opContinuation:
		if !c.inMessage {
			return c.fail(1002, "continuation without a message")
		}
	default:
		return c.fail(1002, "unknown opcode")
	}
	c.inMessage = !fin
	c.msgLen += n
	if c.msgLen > MaxWebSocketMessage {
		return c.fail(1009, "message too big")
	}
	c.remaining = n
	return nil
}

func (c *wsConn) control(op byte, payload []byte) error {
	switch op {
	case opPing:
		return c.writeFrame(opPong, payload)
	case opPong:
		if c.onPong != nil {
			c.onPong()
		}
		return nil
	}
	ce := &CloseError{Code: 1005}
	if len(payload) >= 2 {
		ce.Code = int(binary.BigEndian.Uint16(payload))
		ce.Reason = Printable(string(payload[2:]))
	}
	// Answer the close (RFC 6455 §5.5.1), then drop the connection: an empty
	// Close to an empty one, the code echoed if it may be sent, else 1002,
	// for a one-octet body or a code not for the wire (§7.4), and 1007 for a
	// reason that is not UTF-8 (§5.5.1, §8.1). The read ends as closed by
	// the service all the same.
	answer := payload[:min(len(payload), 2)]
	switch {
	case len(payload) == 1 || len(payload) >= 2 && !sendableCloseCode(ce.Code):
		answer = binary.BigEndian.AppendUint16(nil, 1002)
	case len(payload) > 2 && !utf8.Valid(payload[2:]):
		answer = binary.BigEndian.AppendUint16(nil, 1007)
	}
	c.peerClose.Store(ce)
	c.writeClose(answer)
	c.conn.Close()
	return ce
}

// sendableCloseCode reports whether a Close frame may carry code: one of RFC 6455
// §7.4.1's or the IANA registry's up to 1014, but for 1004 (reserved) and 1005
// and 1006 (which say there was no Close frame or no code), or one of §7.4.2's
// ranges for libraries and applications.
func sendableCloseCode(code int) bool {
	return code >= 1000 && code <= 1014 && code != 1004 && code != 1005 && code != 1006 ||
		code >= 3000 && code <= 4999
}

// fail closes the connection with code after a protocol violation by the server.
func (c *wsConn) fail(code int, reason string) error {
	c.closeWith(code, reason, 0)
	return protocolErrorf("WebSocket: %s", reason)
}

// closeWith sends a Close frame (best effort, bounded) and closes the
// connection. With drain > 0 it first reads and discards what the peer still
// sends, until the peer closes too or drain has passed: closing a socket with
// unread input resets it, and the peer may then lose frames it had not read
// yet (a STREAM_RESET written just before); waiting for its end also lets it
// read them before a reconnect replaces this connection. Draining needs the
// single reader to have stopped.
//
// Not inlined (agent/tunnel keeps inlining, device.gcflags): each caller would
// carry its own copy of the closure, ~600 B of code on linux/mipsle.
//
//go:noinline
func (c *wsConn) closeWith(code int, reason string, drain time.Duration) {
	c.close.Do(func() {
		if c.sendClose(code, reason) == nil && drain > 0 {
			c.conn.SetReadDeadline(time.Now().Add(drain))
			io.Copy(io.Discard, c.conn)
		}
		c.conn.Close()
	})
}

// closeSoon sends a Close frame and leaves the single reader to read what the
// peer still sends, until the peer closes too or wait has passed (a read
// deadline); the caller then closes the connection. Closing at once, with
// input unread, resets the connection, and the peer may lose the frames
// written just before (the resets of a source's last connection), as
// closeWith's drain explains. Used while the reader is still running.
func (c *wsConn) closeSoon(code int, reason string, wait time.Duration) {
	if c.sendClose(code, reason) != nil {
		c.closeNow()
		return
	}
	c.conn.SetReadDeadline(time.Now().Add(wait))
}

// sendClose writes a Close frame with code and reason, unless one was sent.
func (c *wsConn) sendClose(code int, reason string) error {
	p := binary.BigEndian.AppendUint16(nil, uint16(code))
	return c.writeClose(append(p, reason...))
}

// writeClose writes a Close frame with payload, giving it a second, unless one
// was sent (closeSent).
func (c *wsConn) writeClose(payload []byte) error {
	if c.closeSent.Swap(true) {
		return nil
	}
	c.writesWithin(time.Second)
	return c.writeFrame(opClose, payload)
}

// closeNow drops the connection without a close handshake.
func (c *wsConn) closeNow() {
	c.close.Do(func() { c.conn.Close() })
}

// writesWithin has the connection's writes, the one blocked now included,
// fail once d has passed: for the last frames before it is dropped. One
// function for its three callers: the deadline's making written out in each
// took ~150 B more code on linux/mipsle.
func (c *wsConn) writesWithin(d time.Duration) {
	c.conn.SetWriteDeadline(time.Now().Add(d))
}
