package sshd

import (
	"encoding/json"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"
)

// EventType says what an audit Event records.
type EventType string

// The audit event types.
const (
	EventLoginSuccess EventType = "login-success" // a client authenticated
	EventLoginFailure EventType = "login-failure" // an authentication attempt or a connection was refused
	EventSessionStart EventType = "session-start" // a shell, command or subsystem started
	EventSessionEnd   EventType = "session-end"   // it ended; see Bytes*, ExitStatus, ExitSignal
	// A session channel (past MaxSessions), or its shell, exec or subsystem
	// request, was refused; see Reason. It has no session-start or -end.
	EventSessionRefused EventType = "session-refused"
	EventForward        EventType = "forward" // a port forwarding channel or listener was opened or refused
)

// Event is one audit record. Fields that do not apply to a Type are zero.
// Events never carry passwords or private keys, nor command arguments unless
// Server.AuditCommandLines asks for them (CommandLine).
//
// Its JSON form (the "ssh" object of the agent's events) has snake_case keys,
// leaves out zero fields, except exit_status on session-end and allowed on
// forward, where zero is the answer, and writes Duration as the agent's events
// do ("1.234s"). It is written, not read: Event has no UnmarshalJSON, so a
// consumer decodes it into a struct of its own (with Event, exit_status,
// duration and allowed are lost).
type Event struct {
	_ [0]func() // not comparable: no equality functions for Event and eventFields in the binary (docs/size.md)

	Type      EventType `json:"type"`
	Time      time.Time `json:"time,omitzero"`
	Remote    string    `json:"remote,omitempty"`     // the connection's remote address as a label; for a tunnel stream whatever its net.Conn reports
	SessionID string    `json:"session_id,omitempty"` // hex SSH session identifier, shared by all events of one connection after key exchange
	User      string    `json:"user,omitempty"`       // the login name the client asked for

	// Logins.
	Method         string `json:"method,omitempty"`          // "publickey", "password", "none"; empty when refused before authentication
	KeyFingerprint string `json:"key_fingerprint,omitempty"` // SHA256 fingerprint of the public key (for a certificate: of the certified key)
	CertID         string `json:"cert_id,omitempty"`         // key ID of a user certificate
	CertSerial     uint64 `json:"cert_serial,omitempty"`
	CAFingerprint  string `json:"ca_fingerprint,omitempty"` // SHA256 fingerprint of the CA that signed a user certificate, as KeyFingerprint
	Reason         string `json:"reason,omitempty"`         // why a login, session or forward was refused or ended early; on a session-end also a home the session could not run in

	// Sessions.
	Kind string `json:"kind,omitempty"` // "shell", "exec", "subsystem", "scp"
	// Command is the program an exec or scp session ran (see commandName: the
	// first word of the command line, never its arguments), or the subsystem
	// name. Empty for a shell, or when the first word is not a plain name.
	Command string `json:"command,omitempty"`
	// CommandLine is the whole command line of an exec request as the client
	// sent it (for a forced command, the one it asked for), at most
	// maxCommandLine bytes, only with Server.AuditCommandLines: it holds
	// whatever secrets users type into arguments.
	CommandLine string        `json:"command_line,omitempty"`
	PTY         bool          `json:"pty,omitempty"`
	BytesIn     int64         `json:"bytes_in,omitempty"`  // bytes from the client (stdin)
	BytesOut    int64         `json:"bytes_out,omitempty"` // bytes to the client (stdout and stderr)
	ExitStatus  int           `json:"-"`                   // exit status; -1 if the session ended by a signal or without one
	ExitSignal  string        `json:"exit_signal,omitempty"`
	Duration    time.Duration `json:"-"`

	// Forwards.
	Direction string `json:"direction,omitempty"` // "local" (ssh -L, direct-tcpip), "remote" (ssh -R, tcpip-forward), "agent", "tun" (ssh -w), "x11" (ssh -X, -Y); tun and x11 are always refused, with no Dest
	Dest      string `json:"dest,omitempty"`      // host:port asked for (a Unix socket forward's path; ssh -A's socket); for an allowed local forward followed by the address dialled in parentheses: "localhost:80 (127.0.0.1:80)"
	Allowed   bool   `json:"-"`
}

// eventFields is Event without its methods, for MarshalJSON.
type eventFields Event

// MarshalJSON writes the JSON form described at [Event].
func (e Event) MarshalJSON() ([]byte, error) {
	out := struct {
		eventFields
		ExitStatus *int   `json:"exit_status,omitempty"`
		Duration   string `json:"duration,omitempty"`
		Allowed    *bool  `json:"allowed,omitempty"`
	}{eventFields: eventFields(e)}
	if e.Type == EventSessionEnd {
		out.ExitStatus = &e.ExitStatus
	}
	if e.Duration != 0 {
		out.Duration = e.Duration.Round(time.Millisecond).String()
	}
	if e.Type == EventForward {
		out.Allowed = &e.Allowed
	}
	return json.Marshal(out)
}

// maxCommandName bounds commandName's answer.
const maxCommandName = 64

// commandName returns what an audit record keeps of a command line: its first
// word, if that is a plain program name or path of at most 64 bytes (letters,
// digits and . _ - + / @ : ,), else "". The arguments are never kept: users type
// secrets into them (curl -u user:pass, mysql -psecret), and audit records go to
// the log and, through the agent, to a cloud topic. OpenSSH does not log command
// lines at its default LogLevel either. A first word that assigns a variable
// (TOKEN=… cmd), is quoted or expands something gives "", so no part of it leaks.
func commandName(cmdline string) string {
	cmdline = strings.TrimLeft(cmdline, " \t\n")
	end := strings.IndexFunc(cmdline, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("._-+/@:,", r))
	})
	if end < 0 {
		end = len(cmdline)
	}
	if end == 0 || end > maxCommandName || end < len(cmdline) && !strings.ContainsRune(" \t\n;&|<>()", rune(cmdline[end])) {
		return "" // empty, too long, or followed by =, a quote, $, a backslash…
	}
	return cmdline[:end]
}

// maxCommandLine bounds Event.CommandLine: an audit record, one MQTT message
// with the others of its batch, stays small.
const maxCommandLine = 1024

// maxClientString bounds the other strings of an Event, and of the log lines
// beside it, that a client chooses: the user name, the authentication method's
// name and a certificate's key ID (before it has logged in), a forward's
// destination, and what a refusal quotes of them. An SSH packet can carry 256 KiB of each; events go to the log and,
// through the agent, to an MQTT topic whose broker may refuse (or disconnect
// for) a large message.
const maxClientString = 256

// clipCommandLine cuts a command line longer than maxCommandLine (see clip).
func clipCommandLine(s string) string { return clip(s, maxCommandLine) }

// clipClient cuts a client's string longer than maxClientString (see clip).
func clipClient(s string) string { return clip(s, maxClientString) }

// clip cuts s to at most max bytes at a rune boundary, ending it with "…"
// (within the bound) when something was cut.
func clip(s string, max int) string {
	if len(s) <= max {
		return s
	}
	const more = "…"
	end := max - len(more)
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return s[:end] + more
}

func (s *Server) log() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// audit fills in the time, clips the client's fields and hands a copy of e to
// the Audit callback, if any. It takes a pointer: a copy of the struct at each
// of its calls was more code.
func (s *Server) audit(ep *Event) {
	e := *ep
	if e.Time.IsZero() {
		e.Time = s.clock()
	}
	e.Time = e.Time.UTC() // as the agent's events: one zone in a record, whatever the device's
	for _, f := range []*string{&e.User, &e.Method, &e.CertID, &e.Reason, &e.Dest} {
		*f = clipClient(*f)
	}
	if s.Audit != nil {
		s.Audit(e)
	}
}

func (s *Server) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}
