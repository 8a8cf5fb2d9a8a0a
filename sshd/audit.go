package sshd

import (
	"time"
)

// EventType says what an audit Event records.
type EventType string

// The audit event types.
const (
	EventLoginSuccess EventType = "login-success" // a client authenticated
	EventLoginFailure EventType = "login-failure" // an authentication attempt or a connection was refused
	EventSessionStart EventType = "session-start" // a shell, command or subsystem started
	EventSessionEnd   EventType = "session-end"   // it ended; see Bytes*, ExitStatus, ExitSignal
	EventForward      EventType = "forward"       // a port forwarding channel or listener was opened or refused
)

// Event is one audit record. Fields that do not apply to a Type are zero.
// Events never carry passwords or private keys.
type Event struct {
	Type      EventType
	Time      time.Time
	Remote    string // the connection's remote address as a label; for a tunnel stream whatever its net.Conn reports
	SessionID string // hex SSH session identifier, shared by all events of one connection after key exchange
	User      string // the login name the client asked for

	// Logins.
	Method         string // "publickey", "password", "none"; empty when refused before authentication
	KeyFingerprint string // SHA256 fingerprint of the public key (for a certificate: of the certified key)
	CertID         string // key ID of a user certificate
	CertSerial     uint64
	Reason         string // why a login, session or forward was refused or ended early

	// Sessions.
	Kind       string // "shell", "exec", "subsystem", "scp"
	Command    string // the command as sent by the client (or the forced command), or the subsystem name
	PTY        bool
	BytesIn    int64 // bytes from the client (stdin)
	BytesOut   int64 // bytes to the client (stdout and stderr)
	ExitStatus int   // exit status; -1 if the session ended by a signal or without one
	ExitSignal string
	Duration   time.Duration

	// Forwards.
	Direction string // "local" (ssh -L, direct-tcpip), "remote" (ssh -R, tcpip-forward), "agent"
	Dest      string // host:port asked for
	Allowed   bool
}

// audit fills in the time and hands e to the Audit callback, if any.
func (s *Server) audit(e Event) {
	if e.Time.IsZero() {
		e.Time = s.clock()
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
