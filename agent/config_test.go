package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/porthole-iot/porthole/agent/notify"
)

const minimalConfig = `
thing_name = "dev-1"
data_dir = "/tmp/porthole-test"
[mqtt]
endpoint = "broker:8883"
ca_file = "/ca.pem"
cert_file = "/dev.crt"
key_file = "/dev.key"
`

func TestExampleConfigParses(t *testing.T) {
	b, err := os.ReadFile("porthole.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	// Its endpoint is a placeholder that must be set (TestPlaceholdersRefused).
	b = []byte(strings.Replace(string(b), "xxxxxxxxxxxxxx-ats", "a1b2c3d4e5f6g7-ats", 1))
	c, err := ParseConfig(b)
	if err != nil {
		t.Fatalf("porthole.example.toml: %v", err)
	}
	if c.ThingName != "my-router" || c.Services["SSH"] != BuiltinSSH || time.Duration(c.MQTT.KeepAlive) != time.Minute ||
		c.Tunnel.MaxTunnels != 4 || time.Duration(c.SSH.LoginGraceTime) != 2*time.Minute || c.SSH.AuditCommandLines {
		t.Fatalf("example config decoded to %+v", c)
	}
}

// TestExampleConfigHasEveryKey: porthole.example.toml is where the README sends
// users for every key and its default. Each key of Config is in it, set or as a
// commented "# key = value" line under its table, and the commented ones, set
// as written, are keys the agent takes with values it takes: a key added,
// renamed or dropped in the code without the example is found here, which
// TestExampleConfigParses, reading the set keys only, does not see.
func TestExampleConfigHasEveryKey(t *testing.T) {
	b, err := os.ReadFile("porthole.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	ct := reflect.TypeFor[Config]()
	for i := range ct.NumField() {
		f := ct.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		switch {
		case tag == "":
		case f.Type.Kind() == reflect.Struct:
			for j := range f.Type.NumField() {
				if sub, _, _ := strings.Cut(f.Type.Field(j).Tag.Get("toml"), ","); sub != "" {
					want = append(want, tag+"."+sub)
				}
			}
		default: // a value, or a map such as [services], a table of its own
			want = append(want, tag)
		}
	}
	tableLine := regexp.MustCompile(`^\[([a-z_]+)\]$`)
	keyLine := regexp.MustCompile(`^(# ?)?([a-z_]+) = `)
	found := map[string]bool{}
	table := ""
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if m := tableLine.FindStringSubmatch(l); m != nil {
			table = m[1]
			found[table] = true
			continue
		}
		m := keyLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		key := m[2]
		if table != "" {
			key = table + "." + key
		}
		found[key] = true
		lines[i] = strings.TrimPrefix(l, m[1]) // "# key = value" set as written
	}
	for _, k := range want {
		if !found[k] {
			t.Errorf("porthole.example.toml lacks %s, a key of the config (set, or as a commented %q line)", k, "# "+k[strings.LastIndex(k, ".")+1:]+" = …")
		}
	}
	// The example's endpoint and password hash are placeholders a user replaces.
	h, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	set := strings.Replace(strings.Join(lines, "\n"), "xxxxxxxxxxxxxx-ats", "a1b2c3d4e5f6g7-ats", 1)
	set = strings.Replace(set, `"$2y$10$..."`, strconv.Quote(string(h)), 1)
	if _, err := ParseConfig([]byte(set)); err != nil {
		t.Errorf("porthole.example.toml with its commented keys set as written: %v", err)
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := ParseConfig([]byte(minimalConfig))
	if err != nil {
		t.Fatal(err)
	}
	if c.MQTT.ClientID != "dev-1" || c.Tunnel.MaxTunnels != 4 || c.Services["SSH"] != BuiltinSSH || len(c.Services) != 1 ||
		c.SSH.AuthorizedKeys[0] != "/etc/porthole/authorized_keys" || c.Log.Level != "info" || c.SSH.PermitLocalForward[0] != "loopback" {
		t.Fatalf("defaults: %+v", c)
	}
}

// TestEventTopicAWSLimits: with AWS IoT Core's endpoint, an event topic past
// its limits (256 bytes, 7 slashes, not counting Basic Ingest's
// $aws/rules/RULE/) loses every event: a warning says so. Not a refusal, as
// for a $ topic (TestReservedEventTopicWarned): builds before 4630f16 started
// with one, and a device with it would stop starting after an upgrade. Other
// brokers take MQTT's limits.
func TestEventTopicAWSLimits(t *testing.T) {
	const aws = "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com:8883"
	long := "porthole/events/" + strings.Repeat("x", 241) // 257 bytes
	for _, tc := range []struct {
		endpoint, topic, want string
	}{
		{aws, "fleet/eu/site-12/building-3/floor-2/rack-7/router/dev-1/events", "has 8 slashes"},
		{"mqtts://A1B2-ats.iot.cn-north-1.amazonaws.com.cn:8883", "a/b/c/d/e/f/g/h/i", "has 8 slashes"},
		{aws, long, "is 257 bytes long"},
		{aws, "a/b/c/d/e/f/g/h", ""},
		{aws, "$aws/rules/porthole_events/a/b/c/d/e/f/g/h", ""},
		{aws, "$aws/rules/porthole_events/" + long[1:], ""},
		{aws, "porthole/events/" + strings.Repeat("x", 240), ""},
		{"broker:8883", "fleet/eu/site-12/building-3/floor-2/rack-7/router/dev-1/events", ""},
		{"broker:8883", long, ""},
	} {
		in := strings.Replace(minimalConfig, `endpoint = "broker:8883"`, `endpoint = "`+tc.endpoint+`"`, 1)
		c, err := ParseConfig([]byte(strings.Replace(in, "[mqtt]\n", "[mqtt]\nevent_topic = \""+tc.topic+"\"\n", 1)))
		if err != nil {
			t.Errorf("%s, event_topic %q: %v, want it taken", tc.endpoint, tc.topic, err)
			continue
		}
		w := strings.Join(Warnings(c), "\n")
		if got := strings.Contains(w, "mqtt.event_topic"); got != (tc.want != "") || !strings.Contains(w, tc.want) {
			t.Errorf("%s, event_topic %q: warnings %q, want one naming mqtt.event_topic: %q", tc.endpoint, tc.topic, w, tc.want)
		}
	}
}

// TestListenServiceNamePort: ssh.listen with a service name for its port
// ("127.0.0.1:ssh"), which net.Listen and OpenSSH's ListenAddress take, listened
// on port 22 in the builds before 21c87fb; refused since, a device with it
// stopped starting after an upgrade.
func TestListenServiceNamePort(t *testing.T) {
	c, err := ParseConfig([]byte(minimalConfig + "[ssh]\nlisten = \"127.0.0.1:ssh\"\n"))
	if err != nil {
		t.Fatalf("ssh.listen \"127.0.0.1:ssh\": %v", err)
	}
	if c.SSH.Listen != "127.0.0.1:ssh" {
		t.Errorf("ssh.listen = %q, want it as given", c.SSH.Listen)
	}
}

// TestZeroDurationsWarned: MQTT's keep alive of 0 is "off", which neither the
// keep alive nor the WebSocket ping offers; "0s" was taken for the default
// without a word, and check-config said ok. It still is (a refusal would keep
// a fielded device with it from starting after an upgrade), with a warning.
func TestZeroDurationsWarned(t *testing.T) {
	in := strings.Replace(minimalConfig, "[mqtt]\n", "[mqtt]\nkeepalive = \"0s\"\n", 1) + "[tunnel]\nping_interval = \"0s\"\n"
	c, err := ParseConfig([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(c.MQTT.KeepAlive) != time.Minute || c.Tunnel.PingInterval != 0 {
		t.Errorf("keepalive %v, ping_interval %v; want the defaults (60s, and 0 for the tunnel's 20s)", time.Duration(c.MQTT.KeepAlive), time.Duration(c.Tunnel.PingInterval))
	}
	w := strings.Join(Warnings(c), "\n")
	for _, key := range []string{"mqtt.keepalive", "tunnel.ping_interval"} {
		if !strings.Contains(w, key+` "0s" does not turn it off: the default is used`) {
			t.Errorf("no warning for %s = \"0s\": %q", key, w)
		}
	}
	c, _ = ParseConfig([]byte(minimalConfig))
	if w := strings.Join(Warnings(c), "\n"); strings.Contains(w, "0s") {
		t.Errorf("a warning for keys left out: %q", w)
	}
}

// TestSessionExpiry: mqtt.session_expiry sets how long the broker keeps the
// session (a tunnel lives 12 h; its notification is published once); left
// out it is notify's 1 h, and "0s", which MQTT reads as "no session", is the
// default with a warning, as for the keep alive.
func TestSessionExpiry(t *testing.T) {
	for _, tc := range []struct {
		line    string
		want    time.Duration
		warning string
	}{
		{"", notify.DefaultSessionExpiry, ""},
		{"session_expiry = \"12h\"", 12 * time.Hour, ""},
		{"session_expiry = \"4294967294s\"", 4294967294 * time.Second, ""},
		{"session_expiry = \"0s\"", notify.DefaultSessionExpiry, `mqtt.session_expiry "0s" does not turn it off`},
	} {
		c, err := ParseConfig([]byte(strings.Replace(minimalConfig, "[mqtt]\n", "[mqtt]\n"+tc.line+"\n", 1)))
		if err != nil {
			t.Errorf("%q: %v", tc.line, err)
			continue
		}
		if got := time.Duration(c.MQTT.SessionExpiry); got != tc.want {
			t.Errorf("%q: session_expiry %v, want %v", tc.line, got, tc.want)
		}
		if w := strings.Join(Warnings(c), "\n"); tc.warning != "" && !strings.Contains(w, tc.warning) || tc.warning == "" && strings.Contains(w, "session_expiry") {
			t.Errorf("%q: warnings %q, want %q", tc.line, w, tc.warning)
		}
	}
}

// TestOlderReleaseValuesStillStart: a keep alive that is not whole seconds
// (sent as 1 s for 1500ms before fd1a78a) and a ping interval outside 1s-1h
// (used as given before 9854167) were refused since: a device with one stopped
// starting after an upgrade. As "0s" (TestZeroDurationsWarned), they take the
// nearest value that works, with a warning naming it.
func TestOlderReleaseValuesStillStart(t *testing.T) {
	for _, tc := range []struct {
		extra, warning  string
		keepAlive, ping time.Duration
	}{
		{"[mqtt]\nkeepalive = \"1500ms\"", "mqtt.keepalive 1.5s is not whole seconds (MQTT counts them): 2s is used", 2 * time.Second, 0},
		{"[mqtt]\nkeepalive = \"200ms\"", "mqtt.keepalive 200ms is not whole seconds (MQTT counts them): 1s is used", time.Second, 0},
		{"[tunnel]\nping_interval = \"500ms\"", "tunnel.ping_interval 500ms is not from 1s to 1h: 1s is used", time.Minute, time.Second},
		{"[tunnel]\nping_interval = \"2h\"", "tunnel.ping_interval 2h0m0s is not from 1s to 1h: 1h0m0s is used", time.Minute, time.Hour},
	} {
		in := minimalConfig + tc.extra
		if strings.HasPrefix(tc.extra, "[mqtt]\n") {
			in = strings.Replace(minimalConfig, "[mqtt]\n", tc.extra+"\n", 1)
		}
		c, err := ParseConfig([]byte(in))
		if err != nil {
			t.Errorf("%q: %v", tc.extra, err)
			continue
		}
		if k, p := time.Duration(c.MQTT.KeepAlive), time.Duration(c.Tunnel.PingInterval); k != tc.keepAlive || p != tc.ping {
			t.Errorf("%q: keepalive %v, ping_interval %v; want %v, %v", tc.extra, k, p, tc.keepAlive, tc.ping)
		}
		if w := strings.Join(Warnings(c), "\n"); !strings.Contains(w, tc.warning) {
			t.Errorf("%q: warnings %q, want %q", tc.extra, w, tc.warning)
		}
	}
}

// TestReservedEventTopicWarned: AWS IoT Core refuses a publish to its
// reserved ($) topics, or ends the connection; only Basic Ingest's
// $aws/rules/RULE/ takes a device's. check-config said ok. A warning: a
// refusal would keep a fielded device with it from starting after an upgrade.
func TestReservedEventTopicWarned(t *testing.T) {
	const aws = "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com:8883"
	for _, tc := range []struct {
		endpoint, topic string
		warned          bool
	}{
		{aws, "$aws/events/porthole/dev-1", true},
		{aws, "$porthole/events/dev-1", true},
		{aws, "$aws/rules/porthole_events", false},
		{aws, "$aws/rules/porthole_events/dev-1", false},
		{aws, "porthole/events/dev-1", false},
		{"broker:8883", "$porthole/events/dev-1", false},
	} {
		in := strings.Replace(minimalConfig, `endpoint = "broker:8883"`, `endpoint = "`+tc.endpoint+`"`, 1)
		c, err := ParseConfig([]byte(strings.Replace(in, "[mqtt]\n", "[mqtt]\nevent_topic = \""+tc.topic+"\"\n", 1)))
		if err != nil {
			t.Fatalf("%s, %s: %v", tc.endpoint, tc.topic, err)
		}
		w := strings.Join(Warnings(c), "\n")
		if got := strings.Contains(w, "mqtt.event_topic "+strconv.Quote(tc.topic)+" starts with $: AWS IoT Core reserves"); got != tc.warned {
			t.Errorf("%s, event_topic %q: warned %v, want %v: %q", tc.endpoint, tc.topic, got, tc.warned, w)
		}
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct{ name, extra, want string }{
		// Decoding errors (agent/internal/toml) give the line: extra lines go
		// before minimalConfig (line 1 on) or after it (line 9 on).
		{"unknown key", "bogus = 1", "config: line 1: unknown key bogus"},
		{"unknown nested key", "[tunnel]\nmax_tunnel = 3", "config: line 10: unknown key tunnel.max_tunnel"},
		{"unknown table", "[tunnels]\nmax_tunnels = 3", "config: line 9: unknown table [tunnels]"},
		{"bad duration", "[tunnel]\nping_interval = \"soon\"", `config: line 10: tunnel.ping_interval: bad duration "soon"`},
		{"syntax", "[mqtt\n", "config: line 9: want ] after a table name"},
		{"duplicate key", "[mqtt]\nendpoint = \"b:1\"", "config: line 6: duplicate key mqtt.endpoint (first on line 5)"},
		{"string for an integer", "[tunnel]\nmax_tunnels = \"4\"", "config: line 10: tunnel.max_tunnels: want an integer, got a string"},
		{"float", "[tunnel]\nmax_tunnels = 4.0", "config: line 10: tunnel.max_tunnels: floats are not supported"},
		{"unknown dotted key", "tunnel.max_tunnel = 4", "config: line 1: unknown key tunnel.max_tunnel"},
		{"bad service name", "[services]\n\"bad name\" = \"builtin\"", "services.bad name"},
		{"bad target", "[services]\nWEB = \"localhost\"", "services.WEB"},
		{"relative unix", "[services]\nWEB = \"unix:run/x\"", "services.WEB"},
		{"ws without flag", "[tunnel]\nendpoint = \"ws://h:1\"", "tunnel.endpoint"},
		{"too many tunnels", "[tunnel]\nmax_tunnels = 1000", "tunnel.max_tunnels"},
		{"one tunnel over the limit", "[tunnel]\nmax_tunnels = 65", "tunnel.max_tunnels: 65: want 1-64"},
		{"log format", "[log]\nformat = \"JSON\"", `log.format: "JSON": want text or json`},
		{"forward policy", "[ssh]\npermit_local_forward = [\"everywhere\"]", "ssh.permit_local_forward"},
		{"unknown cipher", "[ssh]\nciphers = [\"aes128-cbc\"]", "ssh.ciphers"},
		{"empty cipher list", "[ssh]\nciphers = []", "ssh.ciphers"},
		{"password hash", "[ssh]\npassword_hashes = { root = \"secret\" }", "ssh.password_hashes.root"},
		{"log level", "[log]\nlevel = \"loud\"", "log.level"},
		{"event topic", "[mqtt]\nevent_topic = \"a/#\"", "mqtt.event_topic"},
		{"event topic with NUL", "[mqtt]\nevent_topic = \"a/\\u0000\"", "mqtt.event_topic: \"a/\\x00\" must not contain wildcards (+ #) or NUL"},
		// Mosquitto closes the connection of a client that publishes to a topic
		// with a control character or a Unicode non-character (MQTT 5.0
		// §1.5.4), and paho resends the message on every reconnect: the device
		// would never stay connected.
		{"event topic with a tab", "[mqtt]\nevent_topic = \"porthole/events/dev-1\\t\"", "mqtt.event_topic: \"porthole/events/dev-1\\t\" has a control character"},
		{"event topic with a non-character", "[mqtt]\nevent_topic = \"a/\\uFFFF\"", "mqtt.event_topic: \"a/\\uffff\" has a Unicode non-character"},
		{"event topic is the notify topic", "[mqtt]\nevent_topic = \"$aws/things/dev-1/tunnels/notify\"", "mqtt.event_topic: \"$aws/things/dev-1/tunnels/notify\" is one of the thing's reserved topics"},
		{"empty host key name", "[ssh]\nhost_keys = [\"/etc/ssh/k\", \"\"]", "ssh.host_keys: an empty file name"},
		{"negative max_sessions", "[ssh]\nmax_sessions = -1", "ssh.max_sessions: -1 must not be negative"},
		{"negative max_forwards", "[ssh]\nmax_forwards = -1", "ssh.max_forwards: -1 must not be negative"},
		{"negative max_auth_tries", "[ssh]\nmax_auth_tries = -5", "ssh.max_auth_tries: -5 must not be negative"},
		{"negative max_tunnels", "[tunnel]\nmax_tunnels = -1", "tunnel.max_tunnels: -1: want 1-64 (0 or left out: 4)"},
		{"negative max_connections", "[tunnel]\nmax_connections = -1", "tunnel.max_connections: -1 must not be negative (0 or left out: 128)"},
		{"bcrypt prefix, garbage after", "[ssh]\npassword_hashes = { root = \"$2y$secret\" }", "ssh.password_hashes.root"},
		// bcrypt.Cost takes these, and no password matches them: sshd's setup
		// refuses them, and check-config said ok.
		{"hash with a trailing space", "[ssh]\npassword_hashes = { root = \"$2y$10$abcdefghijklmnopqrstuuJ4zbq3eTo8Vq3I2tgu0UI2t7PvIVuLm \" }", "ssh.password_hashes.root: not a bcrypt hash"},
		{"hash with a character bcrypt does not write", "[ssh]\npassword_hashes = { root = \"$2y$10$abcdefghijklmnopqrstuuJ4zbq3eTo8Vq3I2tgu0UI2t7PvIVu!m\" }", "ssh.password_hashes.root: not a bcrypt hash"},
		{"password for no user", "[ssh]\npassword_hashes = { \"\" = \"$2y$10$abcdefghijklmnopqrstuuJ4zbq3eTo8Vq3I2tgu0UI2t7PvIVuLm\" }", "ssh.password_hashes: an empty user name"},
		{"target port 0", "[services]\nWEB = \"localhost:0\"", "services.WEB"},
		{"endpoint not a host", "[tunnel]\nendpoint = \"a b\"", "tunnel.endpoint"},
		{"endpoint scheme", "[tunnel]\nendpoint = \"ftp://h:1\"", "tunnel.endpoint"},
		{"proxy bad escape", "[tunnel]\nhttps_proxy = \"http://%zz\"", "tunnel.https_proxy"},
		{"proxy socks", "[tunnel]\nhttps_proxy = \"socks5://127.0.0.1:1080\"", "tunnel.https_proxy: proxy URL scheme \"socks5\""},
		{"proxy no host", "[tunnel]\nhttps_proxy = \"http://:3128\"", "tunnel.https_proxy"},
		{"proxy port", "[tunnel]\nhttps_proxy = \"http://p:99999\"", "tunnel.https_proxy"},
		{"proxy path", "[tunnel]\nhttps_proxy = \"http://p:3128/x\"", "tunnel.https_proxy"},
		{"listen port too big", "[ssh]\nlisten = \"127.0.0.1:99999\"", "ssh.listen: \"127.0.0.1:99999\": want host:port with a port of 1-65535"},
		{"listen port negative", "[ssh]\nlisten = \"127.0.0.1:-1\"", "ssh.listen"},
		{"listen port empty", "[ssh]\nlisten = \"127.0.0.1:\"", "ssh.listen"},
		{"listen port 0", "[ssh]\nlisten = \":0\"", "ssh.listen"},
		{"listen port unknown name", "[ssh]\nlisten = \":no-such-service\"", "ssh.listen"},
		{"keepalive too long", "[mqtt]\nkeepalive = \"65536s\"", "mqtt.keepalive"},
		{"keepalive too long, not whole seconds", "[mqtt]\nkeepalive = \"65535500ms\"", "mqtt.keepalive: 18h12m15.5s: want whole seconds from 1s to 65535s"},
		{"keepalive negative, not whole seconds", "[mqtt]\nkeepalive = \"-1500ms\"", "mqtt.keepalive: negative duration"},
		{"session_expiry not whole seconds", "[mqtt]\nsession_expiry = \"1500ms\"", "mqtt.session_expiry: 1.5s: want whole seconds from 1s to 4294967294s"},
		{"session_expiry never expiring", "[mqtt]\nsession_expiry = \"4294967295s\"", "mqtt.session_expiry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := minimalConfig
			// Keys of a table must follow it: put the extra lines in the right table.
			if strings.HasPrefix(tc.extra, "[mqtt]\n") {
				in = strings.Replace(minimalConfig, "[mqtt]\n", tc.extra+"\n", 1)
			} else if strings.HasPrefix(tc.extra, "[") {
				in = minimalConfig + tc.extra
			} else {
				in = tc.extra + "\n" + minimalConfig
			}
			_, err := ParseConfig([]byte(in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseConfig error = %v, want it to mention %q", err, tc.want)
			}
			if strings.Contains(tc.extra, "secret") && strings.Contains(err.Error(), "secret") {
				t.Fatalf("error repeats the password hash value: %v", err)
			}
		})
	}
	for _, listen := range []string{"127.0.0.1:2222", ":22", "[::1]:65535"} {
		if _, err := ParseConfig([]byte(minimalConfig + "[ssh]\nlisten = \"" + listen + "\"\n")); err != nil {
			t.Errorf("ssh.listen %q refused: %v", listen, err)
		}
	}
	for _, proxy := range []string{"127.0.0.1:3128", "http://user:pw@proxy.example:8080", "https://proxy.example", "proxy.example"} {
		if _, err := ParseConfig([]byte(minimalConfig + "[tunnel]\nhttps_proxy = \"" + proxy + "\"\n")); err != nil {
			t.Errorf("https_proxy %q refused: %v", proxy, err)
		}
	}
	if _, err := ParseConfig([]byte("data_dir = \"rel\"")); err == nil ||
		!strings.Contains(err.Error(), "thing_name: required") || !strings.Contains(err.Error(), "data_dir") || !strings.Contains(err.Error(), "mqtt.endpoint") {
		t.Fatalf("empty config: %v, want every missing key named", err)
	}
}

func TestLocalForwardPolicy(t *testing.T) {
	p, err := localForwardPolicy([]string{"loopback", "192.168.1.0/24", "10.0.0.5:80", "fd00::1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dest string
		want bool
	}{
		{"127.0.0.1:22", true}, {"[::1]:22", true}, {"192.168.1.9:443", true}, {"192.168.2.9:443", false},
		{"10.0.0.5:80", true}, {"10.0.0.5:81", false}, {"[fd00::1]:9", true}, {"8.8.8.8:53", false},
		{"[::ffff:127.0.0.1]:22", true},
	} {
		if got := p("root", netip.MustParseAddrPort(tc.dest)); got != tc.want {
			t.Errorf("policy(%s) = %v, want %v", tc.dest, got, tc.want)
		}
	}
	none, _ := localForwardPolicy(nil)
	if none("root", netip.MustParseAddrPort("127.0.0.1:22")) {
		t.Error("empty policy allows loopback")
	}
}

// TestLocalForwardIPv6WithoutBrackets: an entry refused shows the bracketed
// form of an IPv6 address:port. "fd00::1:80" and "fe80::1%eth0:80", which
// older builds took as an address (the second with a zone no interface has),
// are still accepted.
func TestLocalForwardIPv6WithoutBrackets(t *testing.T) {
	_, err := ParseConfig([]byte(minimalConfig + "[ssh]\npermit_local_forward = [\"fd00::1]:80\"]\n"))
	if err == nil || !strings.Contains(err.Error(), "ssh.permit_local_forward") || !strings.Contains(err.Error(), "in brackets: [fe80::1%eth0]:22") {
		t.Errorf("fd00::1]:80: %v, want an error showing the brackets", err)
	}
	for _, e := range []string{"fe80::1%eth0", "fe80::1%2", "[fe80::1%eth0]:80", "fd00::1:80", "fe80::1%eth0:80", "fd00::/8"} {
		if _, err := ParseConfig([]byte(minimalConfig + "[ssh]\npermit_local_forward = [" + strconv.Quote(e) + "]\n")); err != nil {
			t.Errorf("%s refused: %v", e, err)
		}
	}
}

// TestLoadConfigRefusesOddFiles: a config path that is not a small regular file
// gets an error at once, without reading it all or waiting on it.
func TestLoadConfigRefusesOddFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(big, []byte(minimalConfig+"#"+strings.Repeat("x", maxConfigSize)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{fifo, "is not a regular file"},
		{dir, "is not a regular file"},
		{"/dev/zero", "is not a regular file"},
		{big, "is larger than 1024 KiB"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		done := make(chan error, 1)
		go func() { _, err := LoadConfig(tc.path); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadConfig(%s) = %v, want an error with %q", tc.path, err, tc.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("LoadConfig(%s) still reading after 5s", tc.path)
		}
	}
}

// TestLogLevelReloads: the logger's level follows SetLevel, which the agent calls
// on SIGHUP with the new config's log.level.
func TestLogLevelReloads(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var level slog.LevelVar
	log := LogConfig{Level: "info", Format: "text"}.NewLogger(f, &level)
	log.Debug("hidden")
	LogConfig{Level: "debug"}.SetLevel(&level)
	log.Debug("shown")
	b, _ := os.ReadFile(f.Name())
	if strings.Contains(string(b), "hidden") || !strings.Contains(string(b), "shown") {
		t.Fatalf("log after the level changed to debug:\n%s", b)
	}
}

// TestLogFormatsEscapeClientText: what a client chose (a user name, its
// version, text an error quotes) reaches neither format's lines raw when it
// holds a C1 control, a bidi override or an escape sequence; encoding/json
// alone writes the first two as they are.
func TestLogFormatsEscapeClientText(t *testing.T) {
	const hostile = "root\u202egol.\u009b2J\x1b[31m"
	for _, format := range []string{"text", "json"} {
		var b bytes.Buffer
		var level slog.LevelVar
		log := LogConfig{Level: "info", Format: format}.NewLogger(&b, &level)
		log.With("remote", hostile).Warn("refused "+hostile, "user", hostile, "error", fmt.Errorf("ssh: %s", hostile), "clean", "plain-value")
		out := b.String()
		if strings.ContainsAny(out, "\u202e\u009b\x1b") {
			t.Errorf("%s: a raw control or bidi override in %q", format, out)
		}
		if n := strings.Count(out, "u202e"); n != 4 {
			t.Errorf("%s: %d of 4 places (message, a With attribute, a string, an error) keep the override escaped: %q", format, n, out)
		}
		if !strings.Contains(out, "plain-value") {
			t.Errorf("%s: a plain value changed: %q", format, out)
		}
		if format == "json" && !json.Valid(b.Bytes()) {
			t.Errorf("not JSON: %q", out)
		}
	}
}

// TestJSONLogValuesStayApart: in the JSON format a value is written as it is,
// or, when it holds a control character or what a viewer acts on, Go-quoted
// whole; so a client's newline stays apart from a backslash and an n, and a
// value that starts with a quote is a quoted one: strconv.Unquote gives back
// what the client sent.
func TestJSONLogValuesStayApart(t *testing.T) {
	values := map[string]string{
		"newline":   "echo hi\nrm -rf /",
		"backslash": `echo hi\nrm -rf /`,
		"bidi":      "a \"q\" \u202e",
		"quoted":    `"x"`,
		"invalid":   "a\xffb",
	}
	var b bytes.Buffer
	var level slog.LevelVar
	log := LogConfig{Level: "info", Format: "json"}.NewLogger(&b, &level)
	var args []any
	for k, v := range values {
		args = append(args, k, v)
	}
	log.Info("m", args...)
	var got map[string]string
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("%q: %v", b.String(), err)
	}
	for k, v := range values {
		logged := got[k]
		if k == "backslash" {
			if logged != v {
				t.Errorf("%s: logged %q, want %q as it is", k, logged, v)
			}
			continue
		}
		if back, err := strconv.Unquote(logged); err != nil || back != v {
			t.Errorf("%s: logged %q, want %q Go-quoted", k, logged, v)
		}
	}
}

// TestAuditCommandLinesReachesSSHServer: [ssh] audit_command_lines is off by
// default and, set, turns the embedded server's AuditCommandLines on.
func TestAuditCommandLinesReachesSSHServer(t *testing.T) {
	for _, c := range []struct {
		extra string
		want  bool
	}{{"", false}, {"\n[ssh]\naudit_command_lines = true\n", true}} {
		cfg, err := ParseConfig([]byte(minimalConfig + c.extra))
		if err != nil {
			t.Fatal(err)
		}
		s, err := newSSHServer(cfg, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if s.AuditCommandLines != c.want {
			t.Errorf("config %q: AuditCommandLines = %v, want %v", c.extra, s.AuditCommandLines, c.want)
		}
	}
}

// TestTruncatedPasswordHashRefused: a bcrypt hash is 60 characters, as the
// check's own message says. One cut short by a character (a bad paste) passes
// bcrypt.Cost, so the config was accepted, and then no password ever matched
// it: password logins failed as "wrong password" with nothing to say why.
func TestTruncatedPasswordHashRefused(t *testing.T) {
	h, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	short := string(h[:59])
	if bcrypt.CompareHashAndPassword([]byte(short), []byte("pw")) == nil {
		t.Fatal("the truncated hash still matches; the test's premise is gone")
	}
	_, err = ParseConfig([]byte(minimalConfig + "[ssh]\npassword_hashes = { root = \"" + short + "\" }\n"))
	if err == nil || !strings.Contains(err.Error(), "ssh.password_hashes.root") {
		t.Fatalf("ParseConfig with a 59-character hash: %v, want an error naming ssh.password_hashes.root", err)
	}
}

// A key written below the wrong [table] line, as when one appends
// thing_name = "..." at the end of the example (below [log]), is an unknown
// key of that table: the error says where the key belongs, since "unknown key
// log.thing_name" reads as if thing_name were not a key at all.
func TestMisplacedKeySaysWhereItBelongs(t *testing.T) {
	const base = "data_dir = \"/var/lib/porthole\"\n[mqtt]\nendpoint = \"b:8883\"\n"
	for _, tc := range []struct{ name, in, want string }{
		{"top-level key below a table", base + "[log]\nlevel = \"info\"\nthing_name = \"dev\"\n",
			"unknown key log.thing_name: thing_name is a top-level key: put it above the first [table] line"},
		{"key of another table", "thing_name = \"dev\"\n[ssh]\nendpoint = \"b:8883\"\n",
			"unknown key ssh.endpoint: endpoint is a key of [mqtt] or [tunnel]"},
		{"table key at the top", "thing_name = \"dev\"\nendpoint = \"b:8883\"\n",
			"unknown key endpoint: endpoint is a key of [mqtt] or [tunnel]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseConfig = %v, want %q", err, tc.want)
			}
		})
	}
	// A key that is nowhere keeps the plain error.
	if _, err := ParseConfig([]byte("thing_name = \"dev\"\n[mqtt]\nendpont = \"b\"\n")); err == nil ||
		!strings.HasSuffix(err.Error(), "unknown key mqtt.endpont") {
		t.Errorf("ParseConfig with a misspelt key = %v", err)
	}
}

// tunnel.endpoint with an IPv6 address and a port but no brackets was taken,
// and every tunnel dialled [::1:8443]:443; check-config said ok.
func TestTunnelEndpointIPv6WithoutBrackets(t *testing.T) {
	base := "thing_name = \"dev\"\n[mqtt]\nendpoint = \"b:8883\"\nca_file = \"/ca\"\ncert_file = \"/c\"\nkey_file = \"/k\"\n[tunnel]\n"
	for _, ep := range []string{"::1:8443", "wss://::1:8443"} {
		_, err := ParseConfig([]byte(base + "endpoint = \"" + ep + "\"\n"))
		if err == nil || !strings.Contains(err.Error(), "tunnel.endpoint") || !strings.Contains(err.Error(), "brackets") {
			t.Errorf("tunnel.endpoint %q: %v, want an error saying an IPv6 address needs brackets", ep, err)
		}
	}
	for _, ep := range []string{"[::1]:8443", "wss://[::1]:8443", "[::1]"} {
		if _, err := ParseConfig([]byte(base + "endpoint = \"" + ep + "\"\n")); err != nil {
			t.Errorf("tunnel.endpoint %q: %v", ep, err)
		}
	}
}

// TestForwardPolicyMappedEntries: sshd checks the destination as an
// IPv4 address (it unmaps ::ffff:a.b.c.d), so an IPv4-mapped entry of
// ssh.permit_local_forward must allow its IPv4 address, as a mapped
// address:port entry already does, instead of silently allowing nothing.
func TestForwardPolicyMappedEntries(t *testing.T) {
	dest := netip.MustParseAddrPort("10.0.0.5:22")
	for _, e := range []string{"[::ffff:10.0.0.5]:22", "::ffff:10.0.0.5", "::ffff:10.0.0.0/120"} {
		permit, err := localForwardPolicy([]string{e})
		if err != nil {
			t.Fatal(err)
		}
		if !permit("root", dest) {
			t.Errorf("entry %q refuses %v", e, dest)
		}
		if permit("root", netip.MustParseAddrPort("10.0.1.5:22")) {
			t.Errorf("entry %q allows 10.0.1.5", e)
		}
	}
}

// TestForwardPolicyLinkLocalZones: a link-local destination can only be
// dialled with its zone (ssh -L 8080:[fe80::1%br-lan]:80), and sshd checks
// it with the zone on. An address or prefix entry of
// ssh.permit_local_forward for it allowed nothing: netip's Contains is false
// for every zoned address, and the entry's own zone was dropped.
func TestForwardPolicyLinkLocalZones(t *testing.T) {
	for _, tc := range []struct {
		entry, dest string
		want        bool
	}{
		{"fe80::/10", "[fe80::1%lo]:80", true},
		{"fe80::1", "[fe80::1%lo]:80", true},
		{"fe80::1%lo", "[fe80::1%lo]:80", true},
		{"fe80::1%lo", "[fe80::1%eth0]:80", false},
		{"fe80::/10", "[fd00::1]:80", false},
		{"fd00::/8", "[fe80::1%lo]:80", false},
	} {
		permit, err := localForwardPolicy([]string{tc.entry})
		if err != nil {
			t.Fatal(err)
		}
		if got := permit("root", netip.MustParseAddrPort(tc.dest)); got != tc.want {
			t.Errorf("entry %q, destination %s: allowed %v, want %v", tc.entry, tc.dest, got, tc.want)
		}
	}
}

// TestServiceAndListenIPv6WithoutBrackets: a service target or ssh.listen
// written "fd00::5:22" was refused with "want host:port", which it looks
// like; tunnel.endpoint, mqtt.endpoint and https_proxy say that an IPv6
// address needs brackets.
func TestServiceAndListenIPv6WithoutBrackets(t *testing.T) {
	base := "thing_name = \"dev\"\n[mqtt]\nendpoint = \"b:8883\"\nca_file = \"/ca\"\ncert_file = \"/c\"\nkey_file = \"/k\"\n"
	for key, in := range map[string]string{
		"services.web": "[services]\nweb = \"fd00::5:80\"\n",
		"ssh.listen":   "[ssh]\nlisten = \"::1:2222\"\n",
	} {
		_, err := ParseConfig([]byte(base + in))
		if err == nil || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "brackets") {
			t.Errorf("%s: %v, want an error saying an IPv6 address needs brackets", key, err)
		}
	}
	for _, in := range []string{"[services]\nweb = \"[fd00::5]:80\"\n", "[ssh]\nlisten = \"[::1]:2222\"\n"} {
		if _, err := ParseConfig([]byte(base + in)); err != nil {
			t.Errorf("%q: %v", in, err)
		}
	}
}

// TestServiceTargetHostAndPort: a target with a bad port was refused without
// saying the port was what was wrong. A host no dial reaches (a space, a
// slash, an empty zone) is taken, as older builds took it: refused, it would
// cut a device off.
func TestServiceTargetHostAndPort(t *testing.T) {
	for in, want := range map[string]string{
		":22":           "has no usable host name",
		"localhost:ssh": `port "ssh" is not a number from 1 to 65535`,
		"localhost:0":   `port "0" is not a number from 1 to 65535`,
		"localhost":     `want "builtin", "host:port" or "unix:/path"`,
	} {
		_, err := ParseConfig([]byte(minimalConfig + "[services]\nweb = " + strconv.Quote(in) + "\n"))
		if err == nil || !strings.Contains(err.Error(), "services.web: ") || !strings.Contains(err.Error(), want) {
			t.Errorf("target %q: %v, want %q", in, err, want)
		}
	}
	for _, in := range []string{"localhost:22", "my_host.lan:22", "10.0.0.1:80", "[fe80::1%eth0]:22", "[fd00::1]:22", "unix:/run/x.sock", "bad host:22", "[::1%]:22"} {
		if _, err := ParseConfig([]byte(minimalConfig + "[services]\nweb = " + strconv.Quote(in) + "\n")); err != nil {
			t.Errorf("target %q refused: %v", in, err)
		}
	}
}

// A tunnel.endpoint given with a password (a proxy URL put there by mistake,
// wss://user:pass@host) is refused: the error, which goes to the log, syslog
// and check-config's output, must not repeat the password, as
// tunnel.https_proxy's errors do not.
func TestTunnelEndpointPasswordNotInConfigError(t *testing.T) {
	const secret = "S3cretPassw0rd"
	for _, endpoint := range []string{
		"wss://user:" + secret + "@tunnel.example.com",
		"http://user:" + secret + "@proxy.example.com:3128",
		"https://user:" + secret + "%zz@proxy.example.com:3128",
	} {
		_, err := ParseConfig([]byte(minimalConfig + "[tunnel]\nendpoint = " + strconv.Quote(endpoint) + "\n"))
		if err == nil {
			t.Errorf("tunnel.endpoint = %q accepted", endpoint)
		} else if strings.Contains(err.Error(), secret) {
			t.Errorf("tunnel.endpoint = %q: the error holds the password:\n%v", endpoint, err)
		}
	}
}

// An address:port entry without a zone allows that address on any link, as
// the address and prefix entries do; one with a zone, on that link only.
func TestForwardPolicyLinkLocalAddrPort(t *testing.T) {
	for _, tc := range []struct {
		entry, dest string
		want        bool
	}{
		{"[fe80::1]:80", "[fe80::1%lo]:80", true},
		{"[fe80::1%lo]:80", "[fe80::1%lo]:80", true},
		{"[fe80::1%lo]:80", "[fe80::1%eth0]:80", false},
		{"[fe80::1]:80", "[fe80::1%lo]:81", false},
	} {
		permit, err := localForwardPolicy([]string{tc.entry})
		if err != nil {
			t.Fatal(err)
		}
		if got := permit("root", netip.MustParseAddrPort(tc.dest)); got != tc.want {
			t.Errorf("entry %q, destination %s: allowed %v, want %v", tc.entry, tc.dest, got, tc.want)
		}
	}
}

// TestDottedKeysOfOlderReleases: the first builds (8d1c2f9, 2026-11-30) read
// the config with BurntSushi/toml, which takes TOML v1.0's dotted keys;
// agent/internal/toml (c64aa89) refused them, so a device configured with one
// stopped starting after an upgrade.
func TestDottedKeysOfOlderReleases(t *testing.T) {
	const hash = "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"
	for _, tc := range []struct {
		in, want string
		got      func(*Config) string
	}{
		{minimalConfig + "[ssh]\npassword_hashes.root = \"" + hash + "\"\n", hash, func(c *Config) string { return c.SSH.PasswordHashes["root"] }},
		{"log.level = \"debug\"\n" + minimalConfig, "debug", func(c *Config) string { return c.Log.Level }},
	} {
		c, err := ParseConfig([]byte(tc.in))
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
		} else if got := tc.got(c); got != tc.want {
			t.Errorf("%q decoded to %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Files by relative paths, which builds before 8a87b9f read from the agent's
// working directory: a device running on such a config must start after an
// upgrade, warned that check-config, run elsewhere, reads other files.
func TestRelativeFilePathsWarned(t *testing.T) {
	in := strings.Replace(minimalConfig, `ca_file = "/ca.pem"`, `ca_file = "etc/ca.pem"`, 1) +
		"[ssh]\nhost_keys = [\"keys/extra\"]\ntrusted_user_ca_keys = [\"ca.pub\"]\n"
	c, err := ParseConfig([]byte(in))
	if err != nil {
		t.Fatalf("relative file paths, which older releases started with: %v", err)
	}
	w := strings.Join(Warnings(c), "\n")
	for _, key := range []string{`mqtt.ca_file "etc/ca.pem"`, `ssh.host_keys[0] "keys/extra"`, `ssh.trusted_user_ca_keys[0] "ca.pub"`} {
		if !strings.Contains(w, key+" is a relative path") {
			t.Errorf("no warning for %s in:\n%s", key, w)
		}
	}
}

// TestShortSSHTimeoutsWarned: an SSH timeout of milliseconds (a unit slip,
// "2ms" for "2m") cuts every login through a tunnel; check-config and the
// start warn of it, and of nothing at the defaults or at 10s.
func TestShortSSHTimeoutsWarned(t *testing.T) {
	for _, key := range []string{"login_grace_time", "idle_timeout", "max_session_time"} {
		c, err := ParseConfig([]byte(minimalConfig + "[ssh]\n" + key + " = \"2ms\"\n"))
		if err != nil {
			t.Fatal(err)
		}
		if w := strings.Join(Warnings(c), "\n"); !strings.Contains(w, "ssh."+key+" 2ms is under 10s") {
			t.Errorf("%s = \"2ms\": no warning in %q", key, w)
		}
		c, _ = ParseConfig([]byte(minimalConfig + "[ssh]\n" + key + " = \"10s\"\n"))
		if w := strings.Join(Warnings(c), "\n"); strings.Contains(w, "ssh."+key) {
			t.Errorf("%s = \"10s\": warned %q", key, w)
		}
	}
	c, _ := ParseConfig([]byte(minimalConfig))
	if w := strings.Join(Warnings(c), "\n"); strings.Contains(w, "under 10s") {
		t.Errorf("a warning at the defaults: %q", w)
	}
}

// A config that group or others may write is refused, whichever of the two may:
// whoever can change it decides who logs in. Read permission is only a warning
// (Warnings), so those modes load.
func TestLoadConfigRefusesWritableModes(t *testing.T) {
	for _, tc := range []struct {
		mode    os.FileMode
		refused bool
	}{
		{0o600, false},
		{0o640, false},
		{0o644, false},
		{0o620, true},
		{0o660, true},
		{0o602, true},
		{0o666, true},
	} {
		p := filepath.Join(t.TempDir(), "porthole.toml")
		if err := os.WriteFile(p, []byte(minimalConfig), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, tc.mode); err != nil { // not WriteFile's mode: the umask would clear bits
			t.Fatal(err)
		}
		_, err := LoadConfig(p)
		switch {
		case tc.refused && (err == nil || !strings.Contains(err.Error(), "writable by group or others")):
			t.Errorf("LoadConfig of a config with mode %04o = %v, want it refused as writable by group or others", tc.mode, err)
		case !tc.refused && err != nil:
			t.Errorf("LoadConfig of a config with mode %04o = %v, want it loaded", tc.mode, err)
		}
	}
}
