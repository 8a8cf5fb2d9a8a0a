//go:build linux

package agent

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/porthole-iot/porthole/agent/internal/toml"
	"github.com/porthole-iot/porthole/agent/notify"
	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/sshd"
)

// BuiltinSSH is the service target that means the embedded SSH server.
const BuiltinSSH = "builtin"

// Config is the agent's configuration, read from a TOML file (see
// porthole.example.toml for every key; agent/internal/toml says which TOML:
// v1.0 without floats, dates and arrays of tables). Durations are
// strings like "30s". Private keys are referenced by path only; password
// hashes and a proxy's password are the only secrets written in it.
type Config struct {
	// ThingName is the AWS IoT thing this device is (required).
	ThingName string `toml:"thing_name"`
	// DataDir keeps the SSH host key and the state of live tunnels.
	// Default /var/lib/porthole.
	DataDir string `toml:"data_dir"`

	MQTT     MQTTConfig        `toml:"mqtt"`
	Tunnel   TunnelConfig      `toml:"tunnel"`
	Services map[string]string `toml:"services"`
	SSH      SSHConfig         `toml:"ssh"`
	Log      LogConfig         `toml:"log"`

	// adjusted says, for Warnings, which durations given are used as another
	// value: "0s" as the default (SetDuration), a value MQTT or the tunnel
	// cannot use as the nearest it can (setDefaults).
	adjusted []string
	// notServed names, for Warnings, the ssh.host_keys the server leaves out
	// (checkHostKeys, so check-config; the agent's start logs them through sshd),
	// and, before them, host keys not there yet: a host key in data_dir that
	// cannot be made yet, an ssh.host_keys file.
	notServed []string
	// identity says, for Warnings, why the MQTT identity files, or else
	// tunnel.ca_file, do not load yet (notify.ErrNotReady), as CheckStart
	// found; "" if they do.
	identity string
	// readable is the file LoadConfig read, and its mode, when group or
	// others may read it (Warnings).
	readable struct {
		_    [0]func() // not comparable: no equality function in the binary (docs/size.md)
		path string
		mode os.FileMode
	}
}

// MQTTConfig is the connection to AWS IoT Core (or another MQTT v5 broker).
type MQTTConfig struct {
	// Endpoint is host[:port]: port 8883 (default) for mutual TLS, 443 with ALPN
	// x-amzn-mqtt-ca.
	Endpoint string `toml:"endpoint"`
	CAFile   string `toml:"ca_file"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// ClientID defaults to the thing name (as AWS IoT policies expect).
	ClientID string `toml:"client_id"`
	// KeepAlive between the client and the broker, whole seconds (setDefaults
	// rounds a fraction up). Default 60s.
	KeepAlive SetDuration `toml:"keepalive"`
	// SessionExpiry is how long the broker keeps the session (the notify
	// subscription and the notifications queued for it) while the device is
	// offline, whole seconds up to 4294967294s. Default 1h (notify's). A
	// tunnel lives up to 12 h and its notification is published once: a
	// device offline longer than this misses it. AWS IoT Core keeps a session
	// no longer than the account's persistent-session limit (1 h unless raised).
	SessionExpiry SetDuration `toml:"session_expiry"`
	// EventTopic, if set, receives JSON events at QoS 1 (QoS 0 to a broker
	// that takes no more): tunnel and stream lifecycle, SSH audit records,
	// rejected notifications.
	EventTopic string `toml:"event_topic"`
}

// TunnelConfig shapes the destination sessions.
type TunnelConfig struct {
	// Endpoint overrides the data-plane host that the notification's region
	// implies: host[:port], or a wss:// URL.
	Endpoint string `toml:"endpoint"`
	// CAFile is an extra CA (file or directory) for the data plane's TLS.
	CAFile string `toml:"ca_file"`
	// InsecureSkipVerify turns TLS verification of the tunneling service (the
	// data plane) off. Never in production. An https:// proxy's certificate is
	// verified all the same.
	InsecureSkipVerify bool `toml:"insecure_skip_verify"`
	// AllowInsecureWebSocket permits a ws:// Endpoint (labs and tests only).
	AllowInsecureWebSocket bool `toml:"allow_insecure_websocket"`
	// HTTPSProxy is http[s]://[user:pass@]host[:port]; empty means the
	// https_proxy/HTTPS_PROXY environment variables.
	HTTPSProxy string `toml:"https_proxy"`
	// MaxTunnels is how many destination sessions may run at once. Default 4.
	MaxTunnels int `toml:"max_tunnels"`
	// MaxConnections per service of one tunnel. Default 128.
	MaxConnections int `toml:"max_connections"`
	// PingInterval of the WebSocket, 1s to 1h (setDefaults takes the nearest).
	// Default 20s.
	PingInterval SetDuration `toml:"ping_interval"`
}

// SSHConfig configures the embedded SSH server.
type SSHConfig struct {
	// Listen, if set, also serves SSH on this TCP address (e.g. "127.0.0.1:2222").
	// Default: no listener; SSH is reachable only through tunnels.
	Listen string `toml:"listen"`
	// AuthorizedKeys files (%h home, %u user). Default
	// ["/etc/porthole/authorized_keys"].
	AuthorizedKeys []string `toml:"authorized_keys"`
	// TrustedUserCAKeys files: CAs whose user certificates may log in.
	TrustedUserCAKeys []string `toml:"trusted_user_ca_keys"`
	// PasswordHashes maps users to bcrypt hashes; empty means no passwords.
	PasswordHashes map[string]string `toml:"password_hashes"`
	// HostKeys are extra host key files; the ed25519 key in DataDir is used
	// unless one of them is ed25519 (a server presents one key of each type).
	HostKeys []string `toml:"host_keys"`
	// AcceptEnv patterns of client environment variables. Default ["LANG", "LC_*"].
	AcceptEnv []string `toml:"accept_env"`
	// PermitLocalForward lists what ssh -L may reach: "loopback" (the
	// default), "any", or addresses, CIDR prefixes and host:port entries.
	// An empty list turns local forwarding off.
	PermitLocalForward []string `toml:"permit_local_forward"`
	// AllowRemoteForward turns ssh -R on, listening on loopback only.
	AllowRemoteForward bool `toml:"allow_remote_forward"`
	// AgentForwarding turns ssh -A on.
	AgentForwarding bool `toml:"agent_forwarding"`
	// AuditCommandLines puts the whole command line of each ssh command in
	// the session audit events and log lines (default: the program's name
	// only, since arguments may hold secrets).
	AuditCommandLines bool `toml:"audit_command_lines"`
	// Ciphers, if set, are the only SSH ciphers offered, e.g.
	// ["chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com"]. Default: the
	// SSH library's list, without ChaCha20 on x86-64 CPUs with AES-NI (where AES
	// is several times faster).
	Ciphers []string `toml:"ciphers"`
	// IdleTimeout, MaxSessionTime: 0 means none. MaxSessions default 10,
	// MaxForwards (forwarded connections at once) default 32.
	IdleTimeout    Duration `toml:"idle_timeout"`
	MaxSessionTime Duration `toml:"max_session_time"`
	MaxSessions    int      `toml:"max_sessions"`
	MaxForwards    int      `toml:"max_forwards"`
	MaxAuthTries   int      `toml:"max_auth_tries"`
	LoginGraceTime Duration `toml:"login_grace_time"`
}

// LogConfig selects the log output on stderr.
type LogConfig struct {
	_      [0]func() // not comparable: no equality function in the binary (docs/size.md)
	Level  string    `toml:"level"`  // debug, info (default), warn, error
	Format string    `toml:"format"` // text (default) or json
}

// Duration is a time.Duration written as "90s" in TOML.
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("bad duration %q (want e.g. \"30s\", \"5m\")", b)
	}
	if v < 0 {
		return fmt.Errorf("negative duration %q", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration as Go does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// SetDuration is a Duration whose zero, given, is told from one left out:
// for the MQTT keep alive and the WebSocket ping, "0s" reads as "off", which
// they do not offer (the agent needs them to notice a dead connection); it
// takes the default, as left out, and Warnings says so. (A warning, not an
// error: a fielded device with it would not start after an upgrade.)
type SetDuration Duration

// zeroGiven is a SetDuration given as zero, until setDefaults.
const zeroGiven = SetDuration(-1)

// zeroed turns zeroGiven into zero, for the default, adding key's warning to
// warnings.
func (d *SetDuration) zeroed(key string, warnings []string) []string {
	if *d != zeroGiven {
		return warnings
	}
	*d = 0
	return append(warnings, key+` "0s" does not turn it off: the default is used (leave the key out)`)
}

// UnmarshalText parses b as Duration does; zero is zeroGiven.
func (d *SetDuration) UnmarshalText(b []byte) error {
	if err := (*Duration)(d).UnmarshalText(b); err != nil {
		return err
	}
	if *d == 0 {
		*d = zeroGiven
	}
	return nil
}

// maxConfigSize bounds the config file; the example with every key is 9 KiB.
const maxConfigSize = 1 << 20

// LoadConfig reads, defaults and validates a config file. Errors name the key.
// A config that group or others may write is refused: whoever can change it
// decides who logs in and what the tunnel reaches.
func LoadConfig(path string) (*Config, error) {
	b, fi, err := notify.ReadRegularFile(path, maxConfigSize)
	if err != nil {
		return nil, wrapErr("reading config", err)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("config: %s is writable by group or others (mode %04o): whoever can change it decides who logs in (chmod go-w)", path, fi.Mode().Perm())
	}
	// Its owner may chmod it and write it: root or the agent's user, as for
	// data_dir.
	if uid, foreign := foreignOwner(fi, os.Geteuid()); foreign {
		return nil, fmt.Errorf("config: %s belongs to uid %d, not to root or the agent's user (uid %d): whoever can change it decides who logs in (chown)", path, uid, os.Geteuid())
	}
	c, err := ParseConfig(b)
	if err == nil && fi.Mode().Perm()&0o044 != 0 {
		c.readable.path, c.readable.mode = path, fi.Mode().Perm()
	}
	return c, err
}

// ParseConfig decodes TOML, rejects unknown keys, applies defaults and
// validates. A decoding error reads "config: line N: ...".
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	if err := toml.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("config: %w%s", err, keyPlace(err))
	}
	c.setDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// keyPlace says where a key that err calls unknown belongs, when it is a key
// of the config in another place: a key below a [table] line belongs to that
// table, so thing_name appended at the end of a file is log.thing_name.
func keyPlace(err error) string {
	var pe *toml.ParseError
	if !errors.As(err, &pe) {
		return ""
	}
	full, ok := strings.CutPrefix(pe.Err.Error(), "unknown key ")
	if !ok {
		return ""
	}
	name := full[strings.LastIndex(full, ".")+1:]
	var tables []string
	top := false
	ct := reflect.TypeOf((*Config)(nil)).Elem() // not TypeFor: an instantiation for Config alone
	for i := range ct.NumField() {
		f := ct.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		switch {
		case tag == name && f.Type.Kind() != reflect.Struct && f.Type.Kind() != reflect.Map:
			top = true
		case f.Type.Kind() == reflect.Struct:
			for j := range f.Type.NumField() {
				if t, _, _ := strings.Cut(f.Type.Field(j).Tag.Get("toml"), ","); t == name && tag+"."+name != full {
					tables = append(tables, "["+tag+"]")
				}
			}
		}
	}
	switch {
	case top && full != name:
		return ": " + name + " is a top-level key: put it above the first [table] line (the keys below one are that table's)"
	case len(tables) > 0:
		return ": " + name + " is a key of " + strings.Join(tables, " or ") + " (the keys below a [table] line are that table's)"
	}
	return ""
}

func (c *Config) setDefaults() {
	if c.DataDir == "" {
		c.DataDir = "/var/lib/porthole"
	}
	if c.MQTT.ClientID == "" {
		c.MQTT.ClientID = c.ThingName
	}
	c.adjusted = c.MQTT.KeepAlive.zeroed("mqtt.keepalive", nil)
	c.adjusted = c.Tunnel.PingInterval.zeroed("tunnel.ping_interval", c.adjusted)
	// "0s" would ask the broker to keep no session: the notifications of
	// tunnels opened while the device is offline would be lost.
	c.adjusted = c.MQTT.SessionExpiry.zeroed("mqtt.session_expiry", c.adjusted)
	if c.MQTT.KeepAlive == 0 {
		c.MQTT.KeepAlive = SetDuration(60 * time.Second)
	}
	if c.MQTT.SessionExpiry == 0 {
		c.MQTT.SessionExpiry = SetDuration(notify.DefaultSessionExpiry)
	}
	// Older builds ran with a keep alive that is not whole seconds (1500ms
	// was sent as 1 s) and with any ping interval: such a value takes the
	// nearest one that works, with a warning, as "0s" does. A keep alive past
	// 65535 s stays an error (Validate): those builds refused it too.
	if k := time.Duration(c.MQTT.KeepAlive); k > 0 && k%time.Second != 0 && k < 65535*time.Second {
		// Not k.Truncate: 200 B of code the device binary has no other use for.
		c.MQTT.KeepAlive = SetDuration(k - k%time.Second + time.Second)
		c.adjusted = append(c.adjusted, "mqtt.keepalive "+k.String()+" is not whole seconds (MQTT counts them): "+time.Duration(c.MQTT.KeepAlive).String()+" is used")
	}
	if p := time.Duration(c.Tunnel.PingInterval); p != 0 && (p < time.Second || p > time.Hour) {
		c.Tunnel.PingInterval = SetDuration(min(max(p, time.Second), time.Hour))
		c.adjusted = append(c.adjusted, "tunnel.ping_interval "+p.String()+" is not from 1s to 1h: "+time.Duration(c.Tunnel.PingInterval).String()+" is used")
	}
	if c.Tunnel.MaxTunnels == 0 {
		c.Tunnel.MaxTunnels = 4
	}
	for user, h := range c.SSH.PasswordHashes {
		// Not refused: an older build started with it, late (it waited for a
		// hash of that cost), and served key logins.
		if cost, err := bcrypt.Cost([]byte(h)); err == nil && cost > maxHashCost {
			delete(c.SSH.PasswordHashes, user)
			c.adjusted = append(c.adjusted, "ssh.password_hashes."+user+": bcrypt cost "+strconv.Itoa(cost)+" is not used (at most "+
				strconv.Itoa(maxHashCost)+": "+costNote+"); "+user+" cannot log in by password")
		}
	}
	if c.Services == nil {
		c.Services = map[string]string{"SSH": BuiltinSSH}
	}
	if c.SSH.AuthorizedKeys == nil {
		c.SSH.AuthorizedKeys = []string{"/etc/porthole/authorized_keys"}
	}
	if c.SSH.AcceptEnv == nil {
		c.SSH.AcceptEnv = []string{"LANG", "LC_*"}
	}
	if c.SSH.PermitLocalForward == nil {
		c.SSH.PermitLocalForward = []string{"loopback"}
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
}

// Validate checks every setting; the error names the key and the problem.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.ThingName == "" {
		bad("thing_name", "required")
	} else if placeholder(c.ThingName) {
		bad("thing_name", "%q is still the example's placeholder: set the device's AWS IoT thing name", c.ThingName)
	} else if tunnel.ValidateServiceID(c.ThingName) != nil /* the same syntax as service ids */ {
		bad("thing_name", "%q: want 1-128 characters of [a-zA-Z0-9:_-]", c.ThingName)
	}
	if !filepath.IsAbs(c.DataDir) {
		bad("data_dir", "%q must be an absolute path", c.DataDir)
	}
	if c.MQTT.Endpoint == "" {
		bad("mqtt.endpoint", "required (e.g. \"xxxx-ats.iot.eu-west-1.amazonaws.com:8883\")")
	} else if placeholderEndpoint(c.MQTT.Endpoint) {
		bad("mqtt.endpoint", "%q is still the example's placeholder: set the account's endpoint (aws iot describe-endpoint --endpoint-type iot:Data-ATS)", c.MQTT.Endpoint)
	}
	for _, f := range []struct{ key, path string }{{"mqtt.ca_file", c.MQTT.CAFile}, {"mqtt.cert_file", c.MQTT.CertFile}, {"mqtt.key_file", c.MQTT.KeyFile}} {
		if f.path == "" {
			bad(f.key, "required: mutual TLS needs the CA, the device certificate and its key")
		}
	}
	// MQTT's keep alive is a count of whole seconds (1-65535 here): a fraction
	// would be cut off without a word (setDefaults rounds one up below 65535 s).
	if k := time.Duration(c.MQTT.KeepAlive); k%time.Second != 0 || k < time.Second || k > 65535*time.Second {
		bad("mqtt.keepalive", "%v: want whole seconds from 1s to 65535s", k)
	}
	// A new key, refused outside what MQTT's Session Expiry Interval can say
	// (whole seconds; 4294967295 is "never", which notify does not ask for).
	if s := time.Duration(c.MQTT.SessionExpiry); s%time.Second != 0 || s < time.Second || s > 4294967294*time.Second {
		bad("mqtt.session_expiry", "%v: want whole seconds from 1s to 4294967294s", s)
	}
	if err := notify.CheckTopicName(c.MQTT.EventTopic); c.MQTT.EventTopic != "" && err != nil {
		// MQTT refuses NUL in a topic name: every event would be refused; a
		// broker may close the connection for a control character, and paho
		// sends the event again on every reconnect (notify.CheckTopicName).
		bad("mqtt.event_topic", "%q %v", c.MQTT.EventTopic, err)
	} else if strings.HasPrefix(c.MQTT.EventTopic, "$aws/things/") {
		// A thing's reserved topics (tunnels, shadow, jobs): the notify topic would
		// feed the agent its own events, and AWS IoT disconnects a client that
		// publishes where it may not. ($aws/rules/RULE/..., Basic Ingest, is fine.)
		bad("mqtt.event_topic", "%q is one of the thing's reserved topics ($aws/things/...); use a topic of your own, e.g. \"porthole/events/%s\"", c.MQTT.EventTopic, c.ThingName)
	}
	if c.Tunnel.Endpoint != "" {
		if strings.HasPrefix(c.Tunnel.Endpoint, "ws://") && !c.Tunnel.AllowInsecureWebSocket {
			bad("tunnel.endpoint", "ws:// needs tunnel.allow_insecure_websocket = true")
		} else if err := tunnel.ValidateEndpoint(c.Tunnel.Endpoint, "", c.Tunnel.AllowInsecureWebSocket); err != nil {
			bad("tunnel.endpoint", "%v", untunneled(err))
		}
	}
	if c.Tunnel.HTTPSProxy != "" {
		if _, err := tunnel.ParseProxyURL(c.Tunnel.HTTPSProxy); err != nil {
			bad("tunnel.https_proxy", "%v", untunneled(err))
		}
	}
	// setDefaults takes the nearest of these; a Config built in code may not.
	if p := time.Duration(c.Tunnel.PingInterval); p != 0 && (p < time.Second || p > time.Hour) {
		bad("tunnel.ping_interval", "%v: want 1s to 1h", p)
	}
	if c.Tunnel.MaxTunnels < 0 || c.Tunnel.MaxTunnels > 64 {
		bad("tunnel.max_tunnels", "%d: want 1-64 (0 or left out: 4)", c.Tunnel.MaxTunnels)
	}
	if c.Tunnel.MaxConnections < 0 {
		bad("tunnel.max_connections", "%d must not be negative (0 or left out: 128)", c.Tunnel.MaxConnections)
	}
	if len(c.Services) == 0 {
		bad("services", "at least one service is needed")
	}
	names := make([]string, 0, len(c.Services))
	for name := range c.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		target := c.Services[name]
		if err := tunnel.ValidateServiceID(name); err != nil {
			bad("services."+name, "bad service name: want 1-128 characters of [a-zA-Z0-9:_-]")
			continue
		}
		if target == BuiltinSSH {
			continue
		}
		if err := tunnel.ValidateTarget(target); err != nil {
			// The check says what is wrong: the syntax, the host, the port
			// or the socket path.
			bad("services."+name, "%s%s", err.Error()[len("tunnel: target "):], tunnel.IPv6Hint(target, "[fd00::1]:22"))
		}
	}
	if c.SSH.Listen != "" {
		// A port of 1-65535, or a service name as net.Listen and OpenSSH's
		// ListenAddress take it ("127.0.0.1:ssh", which older builds listened
		// with): an empty or 0 one would listen on a port the kernel picks, and
		// a bad one would fail at every start (exit 2, which init systems
		// restart) where check-config said ok.
		_, port, err := net.SplitHostPort(c.SSH.Listen)
		if n, perr := net.LookupPort("tcp", port); err != nil || perr != nil || n == 0 {
			bad("ssh.listen", "%q: want host:port with a port of 1-65535 or a service name%s", c.SSH.Listen, tunnel.IPv6Hint(c.SSH.Listen, "[::1]:2222"))
		}
	}
	// An empty name failed at start with a message that named neither the
	// key nor a file ("reading host key : stat : no such file or
	// directory"). (An empty ssh.authorized_keys or trusted_user_ca_keys
	// entry fails only the logins it would serve, and is left to them: a
	// config an older agent ran with must not stop the device's start.)
	if slices.Contains(c.SSH.HostKeys, "") {
		bad("ssh.host_keys", "an empty file name")
	}
	// The SSH library takes a negative limit as none at all.
	if c.SSH.MaxSessions < 0 {
		bad("ssh.max_sessions", "%d must not be negative (0 or left out: 10)", c.SSH.MaxSessions)
	}
	if c.SSH.MaxForwards < 0 {
		bad("ssh.max_forwards", "%d must not be negative (0 or left out: 32)", c.SSH.MaxForwards)
	}
	if c.SSH.MaxAuthTries < 0 {
		bad("ssh.max_auth_tries", "%d must not be negative (0 or left out: 6)", c.SSH.MaxAuthTries)
	}
	if _, err := localForwardPolicy(c.SSH.PermitLocalForward); err != nil {
		bad("ssh.permit_local_forward", "%v", err)
	}
	if c.SSH.Ciphers != nil {
		if err := sshd.CheckCiphers(c.SSH.Ciphers); err != nil {
			bad("ssh.ciphers", "%v", err)
		}
	}
	users := make([]string, 0, len(c.SSH.PasswordHashes))
	for user := range c.SSH.PasswordHashes {
		users = append(users, user)
	}
	sort.Strings(users)
	for _, user := range users {
		if user == "" {
			bad("ssh.password_hashes", "an empty user name")
			continue
		}
		// bcrypt's own errors may quote a byte of the hash: say only what is
		// wanted. sshd's check, which its setup makes: bcrypt.Cost takes
		// hashes no password matches (too short or long, characters bcrypt
		// does not write), and check-config said ok to a config the agent
		// then refused.
		if _, err := sshd.HashCost(c.SSH.PasswordHashes[user]); err != nil {
			bad("ssh.password_hashes."+user, "not a bcrypt hash ($2a$, $2b$ or $2y$, a cost of 4-31, 60 characters)")
		}
	}
	if _, err := c.Log.level(); err != nil {
		bad("log.level", "%v", err)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", "%q: want text or json", c.Log.Format)
	}
	return errors.Join(errs...)
}

// maxHashCost is the highest bcrypt cost of ssh.password_hashes that is used
// (setDefaults leaves out the others, with a warning). The agent makes a hash
// of the highest cost among them before it starts (so that a login as a user
// without one takes as long), and each password login checks one: at cost 21
// that is minutes on the fastest CPU, past any login's grace time (no password
// login could succeed, and each try held the one password check for that
// long), and days at 31, which bcrypt allows. A build that took such a cost
// started that late: it waited for that hash, and no signal ended the wait.
const maxHashCost = 20

// slowHashCost is the bcrypt cost above which the agent says that its start and
// each password login wait for the hash: seconds at 12 on a router's CPU,
// doubling with each step.
const slowHashCost = 12

// costNote says what a hash's cost costs.
const costNote = "the agent makes a hash of that cost before it starts, and each password login checks one: on a router's CPU cost 10 takes about a second, and each step doubles it"

func (l LogConfig) level() (slog.Level, error) {
	switch strings.ToLower(l.Level) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q: want debug, info, warn or error", l.Level)
}

// NewLogger builds the agent's logger on w from the log settings. Its level is
// level, set from l; a reload sets it again (SetLevel).
func (l LogConfig) NewLogger(w io.Writer, level *slog.LevelVar) *slog.Logger {
	l.SetLevel(level)
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "json" {
		opts.ReplaceAttr = printableAttr
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// printableAttr quotes, for the JSON format, a string that encoding/json would
// write with runes a terminal or log viewer acts on: C1 controls (U+009B
// starts an escape sequence on some terminals), bidi overrides (U+202E
// reorders what a viewer shows) and other non-graphic runes, from clients (a
// user name, a client's version, an error). It is Go-quoted whole, as the
// text format quotes, and so is a string that starts with a quote: a value
// that starts with one is a quoted one, and a newline sent by a client stays
// apart from a backslash and an n.
func printableAttr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		a.Value = slog.StringValue(jsonQuoted(a.Value.String()))
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok {
			a.Value = slog.StringValue(jsonQuoted(err.Error()))
		}
	}
	return a
}

func jsonQuoted(s string) string {
	if p := tunnel.Printable(s); p != s {
		return `"` + p + `"` // strconv.QuoteToGraphic(s)
	}
	if strings.HasPrefix(s, `"`) {
		return string(strconv.AppendQuote(nil, s))
	}
	return s
}

// SetLevel sets v to the configured level (Validate has checked it).
func (l LogConfig) SetLevel(v *slog.LevelVar) {
	lvl, _ := l.level()
	v.Set(lvl)
}

// localForwardPolicy turns permit_local_forward entries into a policy function.
func localForwardPolicy(entries []string) (func(user string, dest netip.AddrPort) bool, error) {
	var prefixes []netip.Prefix
	var addrPorts []netip.AddrPort
	var zoned []netip.Addr
	loopback, anyDest := false, false
	for _, e := range entries {
		switch {
		case e == "loopback":
			loopback = true
		case e == "any":
			anyDest = true
		default:
			if ap, err := netip.ParseAddrPort(e); err == nil {
				addrPorts = append(addrPorts, ap)
			} else if p, err := netip.ParsePrefix(e); err == nil {
				// The destination is checked unmapped (sshd's resolve):
				// ::ffff:a.b.c.d/N is the IPv4 block a.b.c.d/(N-96).
				if p.Addr().Is4In6() && p.Bits() >= 96 {
					p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
				}
				prefixes = append(prefixes, p)
			} else if a, err := netip.ParseAddr(e); err == nil {
				a = a.Unmap()
				if a.Zone() != "" {
					// That address on that link only (a prefix drops the zone).
					zoned = append(zoned, a)
					continue
				}
				prefixes = append(prefixes, netip.PrefixFrom(a, a.BitLen()))
			} else {
				return nil, fmt.Errorf("entry %q: want loopback, any, an address, a CIDR prefix or address:port (an IPv6 address:port in brackets: [fe80::1%%eth0]:22)", e)
			}
		}
	}
	return func(_ string, dest netip.AddrPort) bool {
		a := dest.Addr().Unmap()
		if anyDest || loopback && a.IsLoopback() {
			return true
		}
		// A link-local destination is dialled with its zone (fe80::1%br-lan),
		// which Contains never matches: a prefix or an address without a
		// zone allows it on any link, one with a zone on that link.
		for _, p := range prefixes {
			if p.Contains(a.WithZone("")) {
				return true
			}
		}
		for _, z := range zoned {
			if z == a {
				return true
			}
		}
		for _, ap := range addrPorts {
			if e := ap.Addr().Unmap(); (e == a || e.Zone() == "" && e == a.WithZone("")) && ap.Port() == dest.Port() {
				return true
			}
		}
		return false
	}, nil
}

// placeholder reports whether s is the "CHANGE-ME" of a shipped config
// (buildroot/package/porthole/porthole.toml), which porthole.mk replaces only
// when the image's config names a value.
func placeholder(s string) bool { return strings.Contains(strings.ToUpper(s), "CHANGE-ME") }

// placeholderEndpoint reports whether endpoint is a shipped config's
// placeholder: CHANGE-ME, or the x's of porthole.example.toml and of
// Validate's own example ("xxxx-ats.iot.…"). The agent would otherwise retry
// its DNS look-up for good, and an init script's check-config call say OK.
func placeholderEndpoint(endpoint string) bool {
	if placeholder(endpoint) {
		return true
	}
	host := endpoint[strings.Index(endpoint, "://")+1:] // -1+1: the whole string
	host = strings.TrimLeft(host, "/")
	label, _, _ := strings.Cut(host, ".")
	label = strings.TrimSuffix(strings.ToLower(label), "-ats")
	return len(label) >= 4 && strings.Trim(label, "x") == ""
}

// maxCAFile bounds each file of tunnel.ca_file, as notify bounds the MQTT
// ones: a bundle of every public root is about 220 KiB.
const maxCAFile = 1 << 20

// checkTunnelCA reads tunnel.ca_file as the tunnel's dialer does at each
// connection (agent/tunnel, Config.tlsConfig): a PEM file or a directory of
// them, holding at least one certificate. Without this a wrong path is found
// only when a tunnel opens, and then every tunnel fails and is retried for
// good; at start it is a configuration error (exit 1), like a wrong
// mqtt.ca_file. As for that one, a file or directory not there yet (by an
// absolute path), or no certificate but in a file empty or cut before its
// -----END line (notify.FileError), is notify.ErrNotReady: exit 2, which init
// systems restart, until the storage it is on is mounted or the file written.
// Files are read within maxCAFile and must be regular, so that a FIFO in a
// directory cannot hang the check.
func checkTunnelCA(path string) error {
	if path == "" {
		return nil
	}
	fail := func(err error) error { return wrapErr("config: tunnel.ca_file", err) }
	// notReady is the first file not there or not written whole: said when
	// no other file holds a certificate.
	var notReady *notify.ConfigError
	files, err := tunnel.CAFiles(path)
	if err != nil {
		if notReady = notify.FileError("", path, nil, err); !errors.Is(notReady, notify.ErrNotReady) {
			return fail(err)
		}
		files = nil
	}
	found := false
	for _, f := range files {
		b, _, err := notify.ReadRegularFile(f, maxCAFile)
		if err != nil {
			return fail(err)
		}
		if notReady == nil {
			notReady = notify.FileError("", f, b, nil)
		}
		// One certificate is what the dialer needs; parsing every root of a
		// system bundle would cost megabytes of heap for nothing.
		for rest := b; !found; {
			var block *pem.Block
			if block, rest = pem.Decode(rest); block == nil {
				break
			}
			if block.Type == "CERTIFICATE" {
				_, err := x509.ParseCertificate(block.Bytes)
				found = err == nil
			}
		}
	}
	switch {
	case found:
		return nil
	case notReady != nil:
		return &keyError{key: "tunnel.ca_file", ce: notReady}
	}
	return fail(errors.New("no PEM certificate in " + path))
}

// certWarnWindow is how long before mqtt.cert_file expires check-config and
// the agent's start warn about it.
const certWarnWindow = 30 * 24 * time.Hour

// certValidity reads the device certificate (the first in mqtt.cert_file) and
// says what is wrong with its dates at now: expired is set once NotAfter has
// passed (the broker refuses the certificate, and the agent retries for good);
// warn when it expires within certWarnWindow or is not valid yet. With now
// before built, the binary's build time, nothing is said: the device's clock
// has not been set yet (no RTC, no NTP reply so far), and every certificate
// would look expired or not yet valid. A clock years ahead (an RTC with
// garbage, a typo in date -s) has no such floor to be told by; but then every
// CA of mqtt.ca_file has expired too, where a device certificate that really
// expired has its CA still valid (AWS IoT's run to 2049, Amazon Root CA 1 to
// 2038): that is a warning about the clock, not an error, as NTP may yet set
// it.
//
//lint:ignore ST1008 two findings, each with its own use: expired stops, warn is logged
func certValidity(certFile, caFile string, now, built time.Time) (expired error, warn string) {
	if now.Before(built) {
		return nil, ""
	}
	certs := readCerts(certFile)
	if len(certs) == 0 {
		return nil, "" // New has read it already; the error is its
	}
	cert := certs[0]
	switch {
	case !now.Before(cert.NotAfter):
		var last time.Time // when the last CA of caFile expires
		for _, ca := range readCerts(caFile) {
			if ca.NotAfter.After(last) {
				last = ca.NotAfter
			}
		}
		if !last.IsZero() && !now.Before(last) {
			return nil, "the clock says " + utc(now) + ", after mqtt.cert_file " + certFile + " expired (" + utc(cert.NotAfter) +
				") and after every CA certificate in mqtt.ca_file " + caFile + " expired (the last on " + utc(last) +
				"): the clock looks wrong (ahead); set it (NTP, RTC), or, if it is right, renew both"
		}
		return errors.New(certFile + " expired on " + utc(cert.NotAfter) + " (the clock says " + utc(now) +
			"): the broker refuses it; renew the device certificate"), ""
	case now.Before(cert.NotBefore):
		return nil, "mqtt.cert_file " + certFile + " is not valid before " + utc(cert.NotBefore) + " (the clock says " + utc(now) +
			"): the broker refuses it until then"
	case cert.NotAfter.Sub(now) < certWarnWindow:
		return nil, fmt.Sprintf("mqtt.cert_file %s expires on %s, less than %d days from now: renew it (in place: the agent uses the new file from its next connection to the broker)",
			certFile, utc(cert.NotAfter), certWarnWindow/(24*time.Hour))
	}
	return nil, ""
}

// readCerts parses the certificates of the PEM file path, up to the first
// that does not parse.
func readCerts(path string) []*x509.Certificate {
	b, _, err := notify.ReadRegularFile(path, maxCAFile)
	if err != nil {
		return nil
	}
	var certs []*x509.Certificate
	for rest := b; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			return certs
		}
		if block.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return certs
			}
			certs = append(certs, cert)
		}
	}
}

// checkCertificate is Check's test of the device certificate's dates. It is an
// error there, where the agent only warns (startWarnings): at start the agent
// keeps running, since a provisioning process may renew the file on disk (read
// again before the next connection to the broker); check-config is asked whether
// the device can work as it is, and it cannot.
func checkCertificate(cfg *Config) error {
	if expired, _ := certValidity(cfg.MQTT.CertFile, cfg.MQTT.CAFile, time.Now(), BuildTime()); expired != nil {
		return wrapErr("config: mqtt.cert_file", expired)
	}
	return nil
}

// relativeWarnings names the files given by relative paths. They are read from
// the agent's working directory, as builds before 8a87b9f (which refused them)
// read them and a fielded device may run on them; but check-config, run from
// wherever an operator or init script is, reads other files then. It also
// names a path that starts or ends with a space, as one pasted from a web
// page or a document may (a no-break space, U+00A0, as well): the agent uses
// that name, space and all, and a data_dir so made a new host key in a new
// directory.
func relativeWarnings(cfg *Config) []string {
	var out []string
	wd, _ := os.Getwd()
	add := func(key, p string) {
		why := ""
		switch {
		case strings.TrimSpace(p) != p:
			why = " starts or ends with a space (pasted with it?): that name, space and all, is the one used"
		case p != "" && !filepath.IsAbs(p) && key != "ssh.authorized_keys":
			why = " is a relative path: it is read from the working directory (" + wd + "), which check-config may not share; write it absolute"
		default:
			return
		}
		out = append(out, key+" "+strconv.Quote(p)+why)
	}
	add("data_dir", cfg.DataDir)
	for _, p := range cfg.SSH.AuthorizedKeys {
		add("ssh.authorized_keys", p) // relative to each user's home, as sshd's
	}
	add("mqtt.ca_file", cfg.MQTT.CAFile)
	add("mqtt.cert_file", cfg.MQTT.CertFile)
	add("mqtt.key_file", cfg.MQTT.KeyFile)
	add("tunnel.ca_file", cfg.Tunnel.CAFile)
	for i, p := range cfg.SSH.HostKeys {
		add("ssh.host_keys["+strconv.Itoa(i)+"]", p)
	}
	for i, p := range cfg.SSH.TrustedUserCAKeys {
		add("ssh.trusted_user_ca_keys["+strconv.Itoa(i)+"]", p)
	}
	return out
}

// startWarnings are the Warnings about files and the system: the device
// certificate's dates, a data directory that cannot be made or written, no CA
// to check the tunneling service's certificate with, and SSH login files that
// cannot serve.
func startWarnings(cfg *Config) []string {
	out := relativeWarnings(cfg)
	expired, warn := certValidity(cfg.MQTT.CertFile, cfg.MQTT.CAFile, time.Now(), BuildTime())
	if expired != nil {
		// check-config refuses it (checkCertificate); the agent runs on and says so.
		warn = "mqtt.cert_file " + expired.Error() + "; renew it in place: the agent reads it again before its next connection to the broker"
	}
	if warn != "" {
		out = append(out, warn)
	}
	if w := dataDirWarning(cfg.DataDir); w != "" {
		out = append(out, w)
	}
	if cfg.Tunnel.CAFile == "" && !cfg.Tunnel.InsecureSkipVerify && !(cfg.Tunnel.AllowInsecureWebSocket && tunnel.PlainEndpoint(cfg.Tunnel.Endpoint)) &&
		!systemRoots() {
		out = append(out, "tunnel.ca_file is not set and the system has no CA certificates where Go looks for them (SSL_CERT_FILE, "+
			"/etc/ssl/certs/ca-certificates.crt and its other usual places, SSL_CERT_DIR or /etc/ssl/certs): every tunnel will fail "+
			"its check of the service's certificate (signed by unknown authority); set tunnel.ca_file (AWS IoT Secure Tunneling: "+
			"Amazon Root CA 1, as mqtt.ca_file) or install the CA certificates (OpenWrt: ca-bundle)")
	}
	return append(out, loginWarnings(cfg)...)
}

// sshKey is the config key that the sshd.Server field named by
// sshd.LoginProblem comes from.
func sshKey(field string) string {
	switch field {
	case "AuthorizedKeysFiles":
		return "ssh.authorized_keys"
	case "TrustedUserCAKeysFiles":
		return "ssh.trusted_user_ca_keys"
	case "PasswordHashes":
		return "ssh.password_hashes"
	}
	return "ssh"
}

// loginWarnings says, by sshd's own rules (sshd.Server.CheckLogins), which SSH
// login files a login would ignore or not find, for the users who may log in
// (every account when the agent runs as root, else its own), and whether no
// login method can work at all.
//
// These are warnings, even when no login can work, and not errors: keys are
// often put in place after the first boot (a provisioning job, an installer, a
// trusted CA added later), and sshd reads them at each login, so the agent needs
// no restart to let them in. An error would make the init scripts, which run
// check-config before the agent, keep it from starting, and with it the MQTT
// connection and the events that tell the fleet the device is there. So
// check-config prints them on stderr as "warning:" lines and exits 0, and the
// agent logs them at WARN at start.
func loginWarnings(cfg *Config) []string {
	srv, err := newSSHServer(cfg, nil, nil)
	if err != nil {
		return nil // Validate has refused it
	}
	return loginLines(srv.CheckLogins())
}

// loginLines are the warnings of CheckLogins' problems and ok.
func loginLines(problems []*sshd.LoginProblem, ok bool) []string {
	var out []string
	for _, p := range problems {
		out = append(out, sshKey(p.Field)+": "+p.Err.Error())
		// No account may log in: the keys and hashes are not what is missing.
		ok = ok || p.Field == "PasswdFile"
	}
	if !ok {
		out = append(out, "ssh: no login method can work: no usable authorized_keys file (ssh.authorized_keys), trusted user CA key "+
			"(ssh.trusted_user_ca_keys) or password hash (ssh.password_hashes); SSH logins are refused until one is in place "+
			"(files are read at each login: no restart is needed)")
	}
	return out
}

// BuildTime is when this binary was built (notify.BuildTime, set at link time);
// without it, 2026-01-01. A clock before it is a clock that was never set.
func BuildTime() time.Time {
	if t, err := time.Parse(time.RFC3339, notify.BuildTime); err == nil {
		return t
	}
	return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
}

// eventTopicWarning is why AWS IoT Core refuses the publishes to an event
// topic, or ends the connection for them: it reserves the topics starting with
// $ but for Basic Ingest's $aws/rules/RULE/, and takes at most 256 bytes and 7
// slashes after that prefix (AWS IoT Core quotas). A warning, not a refusal:
// only the events are lost, and a fielded device that an older build started
// with such a topic would not start after an upgrade.
func eventTopicWarning(topic, endpoint string) string {
	if !awsIoTEndpoint(endpoint) {
		return ""
	}
	rest, basicIngest := strings.CutPrefix(topic, "$aws/rules/")
	if basicIngest {
		_, rest, _ = strings.Cut(rest, "/")
	}
	const refused = " (not counting $aws/rules/RULE/) and refuses the events (or ends the connection)"
	switch {
	case strings.HasPrefix(topic, "$") && !basicIngest:
		return fmt.Sprintf("mqtt.event_topic %q starts with $: AWS IoT Core reserves such topics and refuses the events (or ends the connection); use $aws/rules/RULE/... (Basic Ingest) or a topic of your own", topic)
	case len(rest) > 256:
		return fmt.Sprintf("mqtt.event_topic %q is %d bytes long: AWS IoT Core takes at most 256"+refused, topic, len(rest))
	case strings.Count(rest, "/") > 7:
		return fmt.Sprintf("mqtt.event_topic %q has %d slashes: AWS IoT Core takes at most 7"+refused, topic, strings.Count(rest, "/"))
	}
	return ""
}

// awsIoTEndpoint reports whether the MQTT endpoint is AWS IoT Core's
// (NAME.iot.REGION.amazonaws.com, or .amazonaws.com.cn).
func awsIoTEndpoint(endpoint string) bool {
	e := strings.ToLower(endpoint)
	return strings.Contains(e, ".iot.") && strings.Contains(e, ".amazonaws.com")
}
