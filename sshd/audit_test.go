package sshd

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// The audit record is published as the "ssh" object of the agent's events: its
// keys are snake_case as the events' own, zero fields are left out (but not an
// exit status of 0 or a refused forward), and durations read as the events' do.
func TestEventJSON(t *testing.T) {
	at := time.Date(2026, 11, 30, 18, 53, 28, 0, time.UTC)
	for _, tc := range []struct {
		name string
		e    Event
		want string
	}{
		{"login failure", Event{Type: EventLoginFailure, Time: at, Remote: "tunnel", User: "root", Method: "publickey", KeyFingerprint: "SHA256:abc", Reason: "key not in authorized_keys"},
			`{"type":"login-failure","time":"2026-11-30T18:53:28Z","remote":"tunnel","user":"root","method":"publickey","key_fingerprint":"SHA256:abc","reason":"key not in authorized_keys"}`},
		{"session end, status 0", Event{Type: EventSessionEnd, SessionID: "ab", Kind: "exec", Command: "cat", PTY: true, BytesIn: 5, BytesOut: 7, Duration: 1234567890 * time.Nanosecond},
			`{"type":"session-end","session_id":"ab","kind":"exec","command":"cat","pty":true,"bytes_in":5,"bytes_out":7,"exit_status":0,"duration":"1.235s"}`},
		{"session end by a signal", Event{Type: EventSessionEnd, ExitStatus: -1, ExitSignal: "TERM"},
			`{"type":"session-end","exit_signal":"TERM","exit_status":-1}`},
		{"session start", Event{Type: EventSessionStart, Kind: "shell"},
			`{"type":"session-start","kind":"shell"}`},
		{"refused forward", Event{Type: EventForward, Direction: "local", Dest: "10.0.0.1:22"},
			`{"type":"forward","direction":"local","dest":"10.0.0.1:22","allowed":false}`},
		{"certificate", Event{Type: EventLoginSuccess, CertID: "op@example", CertSerial: 42, CAFingerprint: "SHA256:ca"},
			`{"type":"login-success","cert_id":"op@example","cert_serial":42,"ca_fingerprint":"SHA256:ca"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.e)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Errorf("Marshal(%+v) =\n%s\nwant\n%s", tc.e, b, tc.want)
			}
		})
	}
}

var commandNameTests = []struct{ in, want string }{
	{"cat; exit 2", "cat"},
	{"curl -u user:pass https://example.com", "curl"},
	{"  /usr/bin/mysql -psecret", "/usr/bin/mysql"},
	{"sftp", "sftp"},
	{"scp -t /tmp", "scp"},
	{"echo|sh", "echo"},
	{"TOKEN=s3cret ./deploy", ""},
	{"'my prog' arg", ""},
	{"$(cat /secret)", ""},
	{"pa\\ss", ""},
	{"ls\x00x", ""},
	{"", ""},
	{string(make([]byte, 65)), ""},
	{"a123456789012345678901234567890123456789012345678901234567890123 x", "a123456789012345678901234567890123456789012345678901234567890123"},
	{"a1234567890123456789012345678901234567890123456789012345678901234", ""},
	{"\tls\n-l", "ls"},
	{"ls\r -l", ""},
	{"ls\x1b[2J", ""},
	{"caf\xc3\xa9 x", ""},
	{"sh -c 'echo secret'", "sh"},
	{"(cd /tmp && ls)", ""},
	{"git@host:repo,x>out", "git@host:repo,x"},
}

// Audit records keep the program of a command line, never its arguments.
func TestCommandName(t *testing.T) {
	for _, tc := range commandNameTests {
		if got := commandName(tc.in); got != tc.want {
			t.Errorf("commandName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// commandNameReference is commandName's comment read word by word: the first
// word ends at a shell blank (space, tab, newline) or operator character
// (; & | < > ( )), and is kept if it is 1 to maxCommandName bytes of letters,
// digits and . _ - + / @ : , only.
func commandNameReference(cmdline string) string {
	word := strings.TrimLeft(cmdline, " \t\n")
	if i := strings.IndexAny(word, " \t\n;&|<>()"); i >= 0 {
		word = word[:i]
	}
	if word == "" || len(word) > maxCommandName {
		return ""
	}
	for _, c := range []byte(word) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._-+/@:,", c) >= 0) {
			return ""
		}
	}
	return word
}

// FuzzCommandName: what an audit record keeps of a command line is its first
// word as commandNameReference gives it: at most maxCommandName bytes, no
// control character or anything but the plain characters of a program's
// path, and nothing after the word.
func FuzzCommandName(f *testing.F) {
	for _, tc := range commandNameTests {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, cmdline string) {
		got := commandName(cmdline)
		if want := commandNameReference(cmdline); got != want {
			t.Errorf("commandName(%q) = %q, want %q", cmdline, got, want)
		}
		if len(got) > maxCommandName || strings.IndexFunc(got, func(r rune) bool { return r < 0x21 || r > 0x7e }) >= 0 {
			t.Errorf("commandName(%q) = %q: over %d bytes, or not printable ASCII", cmdline, got, maxCommandName)
		}
	})
}

// A client that has not logged in chooses its user name and a certificate's
// key ID, up to an SSH packet (256 KiB): the events and the log lines keep at
// most maxClientString bytes of each (events go on to an MQTT topic).
func TestHugeUserNameClipped(t *testing.T) {
	e := newEnv(t, nil)
	huge := strings.Repeat("u", 200<<10)
	e.refuse(huge, gossh.PublicKeys(e.key))
	waitFor(t, "the login failure event", func() bool { return len(e.eventsOf(EventLoginFailure)) > 0 })
	for _, ev := range e.eventsOf(EventLoginFailure) {
		if len(ev.User) > maxClientString || !strings.HasPrefix(ev.User, "uuu") || len(ev.Reason) > maxClientString {
			t.Errorf("login failure event: user of %d bytes, reason of %d; want at most %d", len(ev.User), len(ev.Reason), maxClientString)
		}
	}
	checkLogLinesClipped(t, e)
}

// Every event of a connection after key exchange carries its session_id
// (Event.SessionID), so an operator can tie a forward to the login that made
// it: forwards, allowed and refused, local and remote, too.
func TestForwardEventsCarrySessionID(t *testing.T) {
	echo := echoServer(t)
	e := newEnv(t, allowRemoteForward)
	c := e.login("root")
	want := hex.EncodeToString(c.SessionID())
	if fc, err := c.Dial("tcp", echo); err != nil {
		t.Fatal(err)
	} else {
		fc.Close()
	}
	if fc, err := c.Dial("tcp", "192.0.2.1:80"); err == nil {
		fc.Close()
		t.Fatal("forward to 192.0.2.1 allowed")
	}
	if l, err := c.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	} else {
		l.Close()
	}
	waitFor(t, "three forward events", func() bool { return len(e.eventsOf(EventForward)) >= 3 })
	for _, ev := range e.eventsOf(EventForward) {
		if ev.SessionID != want {
			t.Errorf("%s forward to %s (allowed %v): session_id %q, want %q (the login's)", ev.Direction, ev.Dest, ev.Allowed, ev.SessionID, want)
		}
	}
}

// Audit times are UTC, as the agent's events around them ("time" ends in Z):
// a device whose local zone is not UTC must not mix zones in one record.
func TestAuditTimeIsUTC(t *testing.T) {
	// A device clock in a zone of its own (/etc/localtime), through the
	// server's clock seam: time.Local itself is not touched, which other
	// goroutines read.
	cet := time.FixedZone("CET", 3600)
	e := newEnv(t, func(_ *testEnv, s *Server) { s.now = func() time.Time { return time.Now().In(cet) } })
	e.login("root")
	waitFor(t, "the login event", func() bool { return len(e.eventsOf(EventLoginSuccess)) > 0 })
	ev := e.eventsOf(EventLoginSuccess)[0]
	b, _ := json.Marshal(ev)
	if ev.Time.Location() != time.UTC {
		t.Errorf("login event time in %v: %s", ev.Time.Location(), b)
	}
}

// A refused remote forward's bind address is the client's, up to an SSH packet:
// its log line keeps at most maxClientString bytes of it, as its event does.
func TestHugeRemoteForwardBindClipped(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	huge := strings.Repeat("b", 200<<10)
	ok, _, err := c.SendRequest("tcpip-forward", true, gossh.Marshal(struct {
		Addr string
		Port uint32
	}{huge, 8080}))
	if err != nil || ok {
		t.Fatalf("tcpip-forward with a huge bind address: ok %v, err %v; want refused", ok, err)
	}
	waitFor(t, "the forward event", func() bool { return len(e.eventsOf(EventForward)) > 0 })
	checkLogLinesClipped(t, e)
}

// fakeConnMetadata is what x/crypto hands AuthLogCallback.
type fakeConnMetadata struct{ user string }

func (m fakeConnMetadata) User() string          { return m.user }
func (m fakeConnMetadata) SessionID() []byte     { return []byte{1, 2, 3} }
func (m fakeConnMetadata) ClientVersion() []byte { return []byte("SSH-2.0-x") }
func (m fakeConnMetadata) ServerVersion() []byte { return []byte("SSH-2.0-y") }
func (m fakeConnMetadata) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1}
}
func (m fakeConnMetadata) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 22}
}

// The method name of a USERAUTH_REQUEST is the client's, before it has logged
// in, up to an SSH packet (256 KiB): x/crypto passes it as is to
// AuthLogCallback (ssh/server.go: `default: authErr = fmt.Errorf("ssh: unknown
// method %q", ...)`, then AuthLogCallback(s, userAuthReq.Method, authErr)).
// The event's method, as its user and reason, keeps at most maxClientString
// bytes, and so does the log line: a 200 KiB event is over AWS IoT's 128 KB
// message limit (see the agent's TestHugeSSHUserNameDoesNotWedgeMQTT).
func TestHugeAuthMethodClipped(t *testing.T) {
	e := newEnv(t, nil)
	huge := strings.Repeat("m", 200<<10)
	st := &connState{remote: "192.0.2.1:1", src: "192.0.2.1"}
	e.srv.authLog(st, fakeConnMetadata{"root"}, huge, fmt.Errorf("ssh: unknown method %q", huge))
	evs := e.eventsOf(EventLoginFailure)
	if len(evs) != 1 {
		t.Fatalf("%d login failure events, want 1", len(evs))
	}
	if ev := evs[0]; len(ev.Method) > maxClientString || len(ev.Reason) > maxClientString {
		t.Errorf("login failure event: method of %d bytes, reason of %d; want at most %d", len(ev.Method), len(ev.Reason), maxClientString)
	}
	checkLogLinesClipped(t, e)
}

// stalledSigner is a key whose signature never comes (a hardware key waiting
// for a touch).
type stalledSigner struct {
	gossh.Signer
	block chan struct{}
}

func (s stalledSigner) Sign(r io.Reader, data []byte) (*gossh.Signature, error) {
	<-s.block
	return nil, errors.New("no touch")
}

// Every event of a connection after its key exchange carries its session_id
// (docs: porthole.example.toml, "session_id (on every event of a connection
// after its key exchange"), so that a SIEM can tie a login failure to the
// connection's other events: the one of a connection closed at the login grace
// time, after its key exchange, too.
func TestGraceTimeEventCarriesSessionID(t *testing.T) {
	e := newEnv(t, func(_ *testEnv, s *Server) { s.LoginGraceTime = 300 * time.Millisecond })
	block := make(chan struct{})
	dialed := make(chan error, 1)
	go func() {
		c, err := e.dial("root", gossh.PublicKeys(stalledSigner{e.key, block}))
		if err == nil {
			c.Close()
		}
		dialed <- err
	}()
	waitFor(t, "the login failure event", func() bool { return len(e.eventsOf(EventLoginFailure)) > 0 })
	close(block)
	// The signer fails once let go: the dial's error is the client's own and
	// says nothing of the server. It is waited for, not left running.
	if err := <-dialed; err == nil {
		t.Error("a login whose signer failed was let in")
	}
	for _, ev := range e.eventsOf(EventLoginFailure) {
		if ev.SessionID == "" || ev.User == "" {
			b, _ := json.Marshal(ev)
			t.Errorf("login failure after the key exchange without session_id or user: %s", b)
		}
	}
}

// A session the server ends at MaxSessionTime (or IdleTimeout) says so in its
// session-end event (Event.Reason: "why a login, session or forward was
// refused or ended early"): a SIEM seeing only exit_signal HUP cannot tell the
// server's limit from a client that hung up.
func TestSessionEndSaysServerLimit(t *testing.T) {
	// The limit runs from the accept; 2 s leaves room for a login and an exec
	// under emulation (500 ms did not, once, under qemu-mips in CI).
	e := newEnv(t, func(_ *testEnv, s *Server) { s.MaxSessionTime = 2 * time.Second })
	c := e.login("root")
	sess := openSession(t, c)
	if err := sess.Start("sleep 30"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the session end event", func() bool { return len(e.eventsOf(EventSessionEnd)) > 0 })
	ev := e.eventsOf(EventSessionEnd)[0]
	if !strings.Contains(ev.Reason, "maximum session time") {
		b, _ := json.Marshal(ev)
		t.Errorf("session ended at MaxSessionTime, event: %s", b)
	}
}

// A subsystem name is the client's, up to an SSH packet: the log line of its
// refusal keeps at most maxClientString bytes of it, as the other lines that
// quote the client do.
func TestHugeSubsystemNameClipped(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	sess := openSession(t, c)
	if err := sess.RequestSubsystem(strings.Repeat("s", 200<<10)); err == nil {
		t.Fatal("a subsystem of 200 KiB was started")
	}
	checkLogLinesClipped(t, e)
}

// checkLogLinesClipped fails for a log line of e longer than the clipped
// client strings (maxClientString each) leave room for.
func checkLogLinesClipped(t *testing.T, e *testEnv) {
	t.Helper()
	e.logs.mu.Lock()
	defer e.logs.mu.Unlock()
	for _, l := range e.logs.lines {
		if len(l) > 2*maxClientString+512 {
			t.Errorf("a log line of %d bytes: %.200s…", len(l), l)
		}
	}
}

// Each login-failure event names the key and reason of its own attempt.
// x/crypto refuses some attempts before the server's checks see them (an RSA
// key signing with ssh-rsa, SHA-1; a password while password login is off), and
// their events named the key and reason of the attempt before: the RSA key's
// refusal carried the fingerprint of the unauthorized key offered first. Such
// an event has x/crypto's reason and no key (the library gives its log callback
// none); a key that was queried and then signed with is named, refused or not.
func TestRefusalNamesItsOwnAttempt(t *testing.T) {
	t.Run("ssh-rsa signature after a refused key", func(t *testing.T) {
		e := newEnv(t, nil)
		other := newSigner(t)
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := gossh.NewSignerFromKey(k)
		if err != nil {
			t.Fatal(err)
		}
		sha1Only, err := gossh.NewSignerWithAlgorithms(rs.(gossh.AlgorithmSigner), []string{gossh.KeyAlgoRSA})
		if err != nil {
			t.Fatal(err)
		}
		e.writeAuthorizedKeys("root", authorizedLine("", rs.PublicKey()))
		e.refuse("root", gossh.PublicKeys(other, sha1Only))
		waitFor(t, "two login failure events", func() bool { return len(e.eventsOf(EventLoginFailure)) >= 2 })
		want := []Event{
			{Type: EventLoginFailure, Method: "publickey", KeyFingerprint: gossh.FingerprintSHA256(other.PublicKey()), Reason: "key not in authorized_keys"},
			{Type: EventLoginFailure, Method: "publickey", Reason: `ssh: algorithm "ssh-rsa" not accepted`},
		}
		checkRefusals(t, e.eventsOf(EventLoginFailure), want)
	})
	t.Run("password while password login is off", func(t *testing.T) {
		e := newEnv(t, nil)
		st := &connState{remote: "192.0.2.1:1", src: "192.0.2.1"}
		st.setKey(keyInfo(newSigner(t).PublicKey()), "key not in authorized_keys")
		e.srv.authLog(st, fakeConnMetadata{"root"}, "publickey", errors.New("permission denied"))
		e.srv.authLog(st, fakeConnMetadata{"root"}, "password", errors.New("ssh: password auth not configured"))
		// The key's refusal waits for the connection's end (reportKeyRefusals).
		checkRefusals(t, e.eventsOf(EventLoginFailure), []Event{
			{Type: EventLoginFailure, Method: "password", Reason: "ssh: password auth not configured"},
		})
	})
	t.Run("the same key offered twice", func(t *testing.T) {
		// x/crypto answers the second offer from its cache, without asking
		// the server's checks again: the event still names the key.
		e := newEnv(t, nil)
		other := newSigner(t)
		e.refuse("root", gossh.PublicKeysCallback(func() ([]gossh.Signer, error) { return []gossh.Signer{other, other}, nil }))
		waitFor(t, "two login failure events", func() bool { return len(e.eventsOf(EventLoginFailure)) >= 2 })
		refused := Event{Type: EventLoginFailure, Method: "publickey", KeyFingerprint: gossh.FingerprintSHA256(other.PublicKey()), Reason: "key not in authorized_keys"}
		checkRefusals(t, e.eventsOf(EventLoginFailure), []Event{refused, refused})
	})
	t.Run("key queried, then signed with", func(t *testing.T) {
		e := newEnv(t, nil)
		other := newSigner(t)
		c, err := e.dial("root", gossh.PublicKeys(other, e.key))
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		waitFor(t, "the login event", func() bool { return len(e.eventsOf(EventLoginSuccess)) == 1 })
		if ev := e.eventsOf(EventLoginSuccess)[0]; ev.KeyFingerprint != gossh.FingerprintSHA256(e.key.PublicKey()) {
			t.Errorf("login with the second key offered names key %s, want %s", ev.KeyFingerprint, gossh.FingerprintSHA256(e.key.PublicKey()))
		}
	})
}

// checkRefusals compares the type, method, key and reason of login failure
// events.
func checkRefusals(t *testing.T, got, want []Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d login failure events, want %d: %+v", len(got), len(want), got)
	}
	for i, g := range got {
		w := want[i]
		if g.Type != w.Type || g.Method != w.Method || g.KeyFingerprint != w.KeyFingerprint || g.Reason != w.Reason {
			t.Errorf("event %d: %s method=%q key=%q reason=%q; want %s method=%q key=%q reason=%q",
				i, g.Type, g.Method, g.KeyFingerprint, g.Reason, w.Type, w.Method, w.KeyFingerprint, w.Reason)
		}
	}
}
