package toml

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	bstoml "github.com/BurntSushi/toml"
	"github.com/google/go-cmp/cmp"
)

// config has agent.Config's keys and field types, and an extra table with the
// rest of what Unmarshal decodes: sized integers and a table in a table.
type config struct {
	ThingName string            `toml:"thing_name"`
	DataDir   string            `toml:"data_dir"`
	MQTT      mqtt              `toml:"mqtt"`
	Tunnel    tunnel            `toml:"tunnel"`
	Services  map[string]string `toml:"services"`
	SSH       ssh               `toml:"ssh"`
	Log       logConfig         `toml:"log"`
	Extra     extra             `toml:"extra"`
}

type mqtt struct {
	Endpoint   string `toml:"endpoint"`
	CAFile     string `toml:"ca_file"`
	CertFile   string `toml:"cert_file"`
	KeyFile    string `toml:"key_file"`
	ClientID   string `toml:"client_id"`
	KeepAlive  dur    `toml:"keepalive"`
	Session    dur    `toml:"session_expiry"`
	EventTopic string `toml:"event_topic"`
}

type tunnel struct {
	Endpoint               string `toml:"endpoint"`
	CAFile                 string `toml:"ca_file"`
	InsecureSkipVerify     bool   `toml:"insecure_skip_verify"`
	AllowInsecureWebSocket bool   `toml:"allow_insecure_websocket"`
	HTTPSProxy             string `toml:"https_proxy"`
	MaxTunnels             int    `toml:"max_tunnels"`
	MaxConnections         int    `toml:"max_connections"`
	PingInterval           dur    `toml:"ping_interval"`
}

type ssh struct {
	Listen             string            `toml:"listen"`
	AuthorizedKeys     []string          `toml:"authorized_keys"`
	TrustedUserCAKeys  []string          `toml:"trusted_user_ca_keys"`
	PasswordHashes     map[string]string `toml:"password_hashes"`
	HostKeys           []string          `toml:"host_keys"`
	AcceptEnv          []string          `toml:"accept_env"`
	PermitLocalForward []string          `toml:"permit_local_forward"`
	AllowRemoteForward bool              `toml:"allow_remote_forward"`
	AgentForwarding    bool              `toml:"agent_forwarding"`
	AuditCommandLines  bool              `toml:"audit_command_lines"`
	Ciphers            []string          `toml:"ciphers"`
	IdleTimeout        dur               `toml:"idle_timeout"`
	MaxSessionTime     dur               `toml:"max_session_time"`
	MaxSessions        int               `toml:"max_sessions"`
	MaxForwards        int               `toml:"max_forwards"`
	MaxAuthTries       int               `toml:"max_auth_tries"`
	LoginGraceTime     dur               `toml:"login_grace_time"`
}

type logConfig struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

type extra struct {
	I8    int8   `toml:"i8"`
	U16   uint16 `toml:"u16"`
	I64   int64  `toml:"i64"`
	Inner inner  `toml:"inner"`
}

type inner struct {
	Name string            `toml:"name"`
	On   bool              `toml:"on"`
	Tags map[string]string `toml:"tags"`
	List []string          `toml:"list"`
	Wait dur               `toml:"wait"`
}

// dur decodes like agent.Duration.
type dur time.Duration

func (d *dur) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("bad duration %q (want e.g. \"30s\")", b)
	}
	*d = dur(v)
	return nil
}

// sameAsBurntSushi fails t unless github.com/BurntSushi/toml decodes in to
// exactly got, with no key left over.
func sameAsBurntSushi(t testing.TB, in []byte, got config) {
	t.Helper()
	var want config
	md, err := bstoml.NewDecoder(bytes.NewReader(in)).Decode(&want)
	if err != nil {
		t.Fatalf("Unmarshal accepted %q; BurntSushi/toml: %v", in, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		t.Fatalf("Unmarshal accepted %q; BurntSushi/toml left keys undecoded: %v", in, und)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("Unmarshal(%q) differs from BurntSushi/toml (-BurntSushi +Unmarshal):\n%s", in, diff)
	}
}

var decodeTests = []struct {
	name string
	in   string
	want config
}{
	{"empty", "", config{}},
	{"comments and blank lines", "# a\n\n  \t# b\n\n", config{}},
	{"no newline at the end", `thing_name = "a"`, config{ThingName: "a"}},
	{"comment at the end", "thing_name = \"a\" # c\n# end", config{ThingName: "a"}},
	{"comment right after a value", "thing_name = \"a\"#c\n[mqtt]#c\n", config{ThingName: "a"}},
	{"CRLF", "thing_name = \"a\"\r\n# c\r\n\r\n[mqtt]\r\nendpoint = \"b\"\r\n", config{ThingName: "a", MQTT: mqtt{Endpoint: "b"}}},
	{"byte order mark", "\uFEFFthing_name = \"a\"", config{ThingName: "a"}},
	{"indented", "  thing_name = \"a\"\n\t[mqtt]\n\t\tendpoint\t=\t\"b\"", config{ThingName: "a", MQTT: mqtt{Endpoint: "b"}}},
	{"quoted keys", "\"thing_name\" = \"a\"\n'data_dir' = \"/d\"", config{ThingName: "a", DataDir: "/d"}},
	{"basic string escapes", `thing_name = "\b\t\n\f\r\"\\\u00e9\U0001F600\u0000/"`, config{ThingName: "\b\t\n\f\r\"\\é😀\x00/"}},
	{"tab and Unicode in strings", "thing_name = \"a\tb\u00e9\"\ndata_dir = 'c\td€'", config{ThingName: "a\tbé", DataDir: "c\td€"}},
	{"literal string", `thing_name = 'C:\path\"x"'`, config{ThingName: `C:\path\"x"`}},
	{"empty strings", "thing_name = \"\"\ndata_dir = ''", config{}},
	{"multi-line basic string", "thing_name = \"\"\"\none\n  two\\tthree\"\"\"", config{ThingName: "one\n  two\tthree"}},
	{"multi-line basic string, CRLF", "thing_name = \"\"\"\r\none\r\ntwo\"\"\"", config{ThingName: "one\r\ntwo"}},
	{"multi-line basic string, line-ending backslash", "thing_name = \"\"\"a \\  \n\n   \t b\\\n\"\"\"", config{ThingName: "a b"}},
	{"multi-line basic string, escaped backslash at line end", "thing_name = \"\"\"a\\\\\nb\"\"\"", config{ThingName: "a\\\nb"}},
	{"multi-line basic string, quotes", `thing_name = """a""b"c"" """ # x` + "\n" + `data_dir = """"x""""`, config{ThingName: `a""b"c"" `, DataDir: `"x"`}},
	{"multi-line basic string, five quotes", `thing_name = """x"""""`, config{ThingName: `x""`}},
	{"multi-line basic string, empty", `thing_name = """"""`, config{}},
	{"multi-line literal string", "thing_name = '''\nC:\\x\\\n'b'''''", config{ThingName: "C:\\x\\\n'b''"}},
	{"multi-line literal string, only one newline trimmed", "thing_name = '''\n\nx'''", config{ThingName: "\nx"}},
	{"integers", "[tunnel]\nmax_tunnels = +4\nmax_connections = -0\n[extra]\ni8 = -128\nu16 = 65_535\ni64 = 0x7FFF_ffff_FFFF_ffff",
		config{Tunnel: tunnel{MaxTunnels: 4}, Extra: extra{I8: -128, U16: 65535, I64: math.MaxInt64}}},
	{"integer bases", "[extra]\ni8 = 0o17\nu16 = 0b1_0000_0000\ni64 = -9_223_372_036_854_775_808",
		config{Extra: extra{I8: 15, U16: 256, I64: math.MinInt64}}},
	{"integers with leading zeros in other bases", "[extra]\ni8 = 0x00\nu16 = 0o0017\ni64 = 0b0001", config{Extra: extra{U16: 15, I64: 1}}},
	{"booleans", "[tunnel]\ninsecure_skip_verify = true\nallow_insecure_websocket = false", config{Tunnel: tunnel{InsecureSkipVerify: true}}},
	{"durations", "[mqtt]\nkeepalive = \"90s\"\n[tunnel]\nping_interval = '1m'", config{MQTT: mqtt{KeepAlive: dur(90 * time.Second)}, Tunnel: tunnel{PingInterval: dur(time.Minute)}}},
	{"integer for a duration", "[mqtt]\nkeepalive = 0", config{MQTT: mqtt{KeepAlive: 0}}},
	{"arrays", "[ssh]\naccept_env = [ \"LANG\", 'LC_*', \"\"\"A\"\"\", '''B''' ]\nhost_keys = []\nciphers = [\"x\",]",
		config{SSH: ssh{AcceptEnv: []string{"LANG", "LC_*", "A", "B"}, HostKeys: []string{}, Ciphers: []string{"x"}}}},
	{"array over lines with comments", "[ssh]\naccept_env = [ # first\n  \"a\", # one\n\n  # two\n  \"b\"\n  ,\n  \"c\", # trailing comma\n] # done\nlisten = \"l\"",
		config{SSH: ssh{AcceptEnv: []string{"a", "b", "c"}, Listen: "l"}}},
	{"empty array over lines", "[ssh]\nhost_keys = [\n# none\n]", config{SSH: ssh{HostKeys: []string{}}}},
	{"map table", "[services]\nSSH = \"builtin\"\n\"my svc\" = 'unix:/x'\n'' = \"e\"\n0 = \"zero\"\n-a- = \"dash\"",
		config{Services: map[string]string{"SSH": "builtin", "my svc": "unix:/x", "": "e", "0": "zero", "-a-": "dash"}}},
	{"empty map table", "[services]", config{Services: map[string]string{}}},
	{"inline table for a map", "[ssh]\npassword_hashes = { root = \"$2y$10$x\", \"a b\" = 'c' , 'q'='r'}",
		config{SSH: ssh{PasswordHashes: map[string]string{"root": "$2y$10$x", "a b": "c", "q": "r"}}}},
	{"empty inline table", "[ssh]\npassword_hashes = {}\n[extra]\ninner = { }", config{SSH: ssh{PasswordHashes: map[string]string{}}}},
	{"inline table for a struct", "[extra]\ninner = { name = \"n\", on = true, tags = { a = \"b\" }, list = [\"x\",\n\"y\"], wait = \"1s\" }",
		config{Extra: extra{Inner: inner{Name: "n", On: true, Tags: map[string]string{"a": "b"}, List: []string{"x", "y"}, Wait: dur(time.Second)}}}},
	{"inline table with a multi-line string", "[services]\n[ssh]\npassword_hashes = { a = '''\nx\ny''' }", config{Services: map[string]string{}, SSH: ssh{PasswordHashes: map[string]string{"a": "x\ny"}}}},
	{"whole config as inline tables", "mqtt = { endpoint = \"e\" }\nservices = { SSH = \"builtin\" }",
		config{MQTT: mqtt{Endpoint: "e"}, Services: map[string]string{"SSH": "builtin"}}},
	{"dotted table headers", "[ ssh . \"password_hashes\" ]\nroot = \"h\"\n[ssh]\nlisten = \"l\"\n['extra'.inner.tags]\n[extra.inner]\nname = \"n\"\n[extra]\ni8 = 1",
		config{SSH: ssh{Listen: "l", PasswordHashes: map[string]string{"root": "h"}}, Extra: extra{I8: 1, Inner: inner{Name: "n", Tags: map[string]string{}}}}},
	{"dotted keys", "log.level = \"debug\"\nssh . 'password_hashes'.\"a.b\" = \"h\"\nssh.password_hashes.root = \"r\"\nextra.inner.tags.x = \"y\"",
		config{Log: logConfig{Level: "debug"}, SSH: ssh{PasswordHashes: map[string]string{"a.b": "h", "root": "r"}}, Extra: extra{Inner: inner{Tags: map[string]string{"x": "y"}}}}},
	{"dotted keys in tables", "[ssh]\npassword_hashes.root = \"r\"\n[extra]\ninner.name = \"n\"\ninner.tags.a = \"b\"\ninner.on = true\n[services]\n\"x\" = \"y\"",
		config{SSH: ssh{PasswordHashes: map[string]string{"root": "r"}}, Extra: extra{Inner: inner{Name: "n", On: true, Tags: map[string]string{"a": "b"}}}, Services: map[string]string{"x": "y"}}},
	{"table below tables of dotted keys", "extra.i8 = 1\n[extra.inner]\nname = \"n\"", config{Extra: extra{I8: 1, Inner: inner{Name: "n"}}}},
	{"dotted keys in inline tables", "extra = { inner.name = \"n\", inner.tags.a = 'b', i8 = 2 }\nssh = { password_hashes.root = \"r\" }",
		config{Extra: extra{I8: 2, Inner: inner{Name: "n", Tags: map[string]string{"a": "b"}}}, SSH: ssh{PasswordHashes: map[string]string{"root": "r"}}}},
	{"same key in different tables", "[mqtt]\nendpoint = \"a\"\n[tunnel]\nendpoint = \"b\"", config{MQTT: mqtt{Endpoint: "a"}, Tunnel: tunnel{Endpoint: "b"}}},
}

func TestUnmarshal(t *testing.T) {
	for _, tc := range decodeTests {
		t.Run(tc.name, func(t *testing.T) {
			var got config
			if err := Unmarshal([]byte(tc.in), &got); err != nil {
				t.Fatalf("Unmarshal(%q) = %v", tc.in, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Unmarshal(%q) (-want +got):\n%s", tc.in, diff)
			}
			sameAsBurntSushi(t, []byte(tc.in), got)
		})
	}
}

// seedFiles are the config files porthole ships or writes: the fuzz target
// starts from them and each must decode as BurntSushi/toml decodes it.
var seedFiles = []string{
	"../../porthole.example.toml",
	"../../../buildroot/package/porthole/porthole.toml",
	"testdata/lab.toml",       // tools/lab agentConfig
	"testdata/lab-board.toml", // tools/lab buildImage
	"testdata/openwrt.toml",   // tools/pkg/openwrt/porthole.init render, as in tools/pkg's TestUCIRender
}

func TestConfigFiles(t *testing.T) {
	for _, path := range seedFiles {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var got config
		if err := Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if got.ThingName == "" || got.Services["SSH"] != "builtin" || len(got.SSH.AuthorizedKeys) == 0 {
			t.Errorf("%s decoded to %+v", path, got)
		}
		sameAsBurntSushi(t, b, got)
	}
}

// secret stands for a password hash: no error may repeat it.
const secret = "s3cret"

var errorTests = []struct {
	name, in, want string
}{
	{"unknown key", "thing_name = \"a\"\nbogus = 1", "line 2: unknown key bogus"},
	{"unknown key in a table", "[mqtt]\nendpont = \"x\"", "line 2: unknown key mqtt.endpont"},
	{"unknown key in an inline table", "[extra]\ninner = { nme = \"x\" }", "line 2: unknown key extra.inner.nme"},
	{"keys are case-sensitive", "Thing_Name = \"a\"", "line 1: unknown key Thing_Name"},
	{"unknown quoted key", "[mqtt]\n\"a b\" = 1", `line 2: unknown key mqtt."a b"`},
	{"unknown table", "[mqttt]", "line 1: unknown table [mqttt]"},
	{"unknown table in a table", "\n[mqtt.tls]", "line 2: unknown table [mqtt.tls]"},
	{"unknown table with a table in it", "[bogus.x]", "line 1: unknown table [bogus]"},
	{"table for a string", "[mqtt.endpoint]", "line 1: mqtt.endpoint: want a string, got a table"},
	{"table in a map", "[services.web]", "line 1: services.web: want a string, got a table"},
	{"duplicate key", "[ssh]\nlisten = \"a\"\nlisten = \"b\"", "line 3: duplicate key ssh.listen (first on line 2)"},
	{"duplicate key, quoted", "thing_name = \"a\"\n'thing_name' = \"b\"", "line 2: duplicate key thing_name (first on line 1)"},
	{"duplicate map key", "[services]\nA = \"x\"\n\"A\" = \"y\"", "line 3: duplicate key services.A (first on line 2)"},
	{"duplicate key in an inline table", "[ssh]\npassword_hashes = { a = \"x\", a = \"y\" }", "line 2: duplicate key ssh.password_hashes.a (first on line 2)"},
	{"duplicate table", "[ssh]\n[mqtt]\n[ssh]", "line 3: duplicate table [ssh] (first on line 1)"},
	{"duplicate table, implied first", "[extra.inner]\n[extra]\n[extra]", "line 3: duplicate table [extra] (first on line 2)"},
	{"duplicate nested table", "[ssh.password_hashes]\n[ssh]\n[ssh.password_hashes]", "line 3: duplicate table [ssh.password_hashes] (first on line 1)"},
	{"table after inline table", "[ssh]\npassword_hashes = {}\n[ssh.password_hashes]", "line 3: [ssh.password_hashes]: ssh.password_hashes was already set on line 2"},
	{"table in inline table", "extra = {}\n[extra.inner]", "line 2: [extra.inner]: extra was already set on line 1"},
	{"key after table", "[ssh.password_hashes]\n[ssh]\npassword_hashes = {}", "line 3: duplicate key ssh.password_hashes (first on line 1)"},
	{"key for implied table", "[extra.inner]\n[extra]\ninner = {}", "line 3: duplicate key extra.inner (first on line 1)"},
	{"string for an integer", "[tunnel]\n\nmax_tunnels = \"4\"", "line 3: tunnel.max_tunnels: want an integer, got a string"},
	{"integer for a string", "thing_name = 1", "line 1: thing_name: want a string, got an integer"},
	{"string for a boolean", "[tunnel]\ninsecure_skip_verify = \"true\"", "line 2: tunnel.insecure_skip_verify: want a boolean, got a string"},
	{"array for a string", "thing_name = [\"a\"]", "line 1: thing_name: want a string, got an array"},
	{"table for a string value", "thing_name = {}", "line 1: thing_name: want a string, got a table"},
	{"string for a table", "mqtt = \"x\"", "line 1: mqtt: want a table, got a string"},
	{"string for an array", "[ssh]\naccept_env = \"LANG\"", "line 2: ssh.accept_env: want an array of strings, got a string"},
	{"integer in an array", "[ssh]\naccept_env = [\"LANG\", 1]", "line 2: ssh.accept_env: want an array of strings, got an integer in it"},
	{"array in an array", "[ssh]\naccept_env = [[\"LANG\"]]", "line 2: ssh.accept_env: want an array of strings, got an array in it"},
	{"integer in a map", "[ssh]\npassword_hashes = { root = 1 }", "line 2: ssh.password_hashes.root: want a string, got an integer"},
	{"TextUnmarshaler error", "[mqtt]\nkeepalive = \"x\"", `line 2: mqtt.keepalive: bad duration "x" (want e.g. "30s")`},
	{"integer the TextUnmarshaler refuses", "[mqtt]\nkeepalive = 30", `line 2: mqtt.keepalive: bad duration "30" (want e.g. "30s")`},
	{"int8 overflow", "[extra]\ni8 = 128", "line 2: extra.i8: 128 is out of range for int8"},
	{"uint16 overflow", "[extra]\nu16 = 65536", "line 2: extra.u16: 65536 is out of range for uint16"},
	{"negative unsigned", "[extra]\nu16 = -1", "line 2: extra.u16: -1 is out of range for uint16"},
	{"int64 overflow", "[extra]\ni64 = 9223372036854775808", "line 2: extra.i64: integer out of range (64 bits)"},
	{"hex overflow", "[extra]\ni64 = 0x8000000000000000", "line 2: extra.i64: integer out of range (64 bits)"},
	{"leading zero", "[extra]\ni64 = 01", "line 2: extra.i64: invalid integer"},
	{"signed zero with leading zero", "[extra]\ni64 = -00", "line 2: extra.i64: invalid integer"},
	{"double underscore", "[extra]\ni64 = 1__0", "line 2: extra.i64: invalid integer"},
	{"leading underscore", "[extra]\ni64 = 0x_1", "line 2: extra.i64: invalid integer"},
	{"trailing underscore", "[extra]\ni64 = 1_", "line 2: extra.i64: invalid integer"},
	{"sign and hex", "[extra]\ni64 = +0x1", "line 2: extra.i64: invalid integer"},
	{"capital prefix", "[extra]\ni64 = 0X1", "line 2: extra.i64: invalid integer"},
	{"bad hex digit", "[extra]\ni64 = 0xg", "line 2: extra.i64: invalid integer"},
	{"bad octal digit", "[extra]\ni64 = 0o8", "line 2: extra.i64: invalid integer"},
	{"bad binary digit", "[extra]\ni64 = 0b2", "line 2: extra.i64: invalid integer"},
	{"empty prefix", "[extra]\ni64 = 0x", "line 2: extra.i64: invalid integer"},
	{"lone sign", "[extra]\ni64 = -", "line 2: extra.i64: invalid integer"},
	{"float", "[extra]\ni64 = 1.5", "line 2: extra.i64: floats are not supported"},
	{"float exponent", "[extra]\ni64 = 1e3", "line 2: extra.i64: floats are not supported"},
	{"float with underscores", "[extra]\ni64 = -1_0.0_1", "line 2: extra.i64: floats are not supported"},
	{"inf", "[extra]\ni64 = inf", "line 2: extra.i64: floats are not supported"},
	{"negative nan", "[extra]\ni64 = -nan", "line 2: extra.i64: floats are not supported"},
	{"date", "thing_name = 1979-05-27", "line 1: thing_name: dates and times are not supported"},
	{"date-time", "thing_name = 1979-05-27T07:32:00Z", "line 1: thing_name: dates and times are not supported"},
	{"date and time with a space", "thing_name = 1979-05-27 07:32:00", "line 1: thing_name: dates and times are not supported"},
	{"time", "thing_name = 07:32:00", "line 1: thing_name: dates and times are not supported"},
	// Addresses, durations and names left unquoted start with a digit but
	// are no dates, floats or integers: they need quotes.
	{"unquoted address", "thing_name = 0.0.0.0:2222", "line 1: thing_name: invalid value: strings need quotes, booleans are true or false"},
	{"unquoted IPv4 address", "thing_name = 192.168.1.1", "line 1: thing_name: invalid value: strings need quotes, booleans are true or false"},
	{"unquoted duration", "[mqtt]\nkeepalive = 60s", "line 2: mqtt.keepalive: invalid value: strings need quotes, booleans are true or false"},
	{"unquoted name with an e", "thing_name = 2024-router", "line 1: thing_name: invalid value: strings need quotes, booleans are true or false"},
	{"unquoted name with dashes", "thing_name = 0001-gw-lab", "line 1: thing_name: invalid value: strings need quotes, booleans are true or false"},
	{"unquoted negative name", "thing_name = -router", "line 1: thing_name: invalid value: strings need quotes, booleans are true or false"},
	{"unquoted string", "[ssh.password_hashes]\nroot = " + secret, "line 2: ssh.password_hashes.root: invalid value: strings need quotes, booleans are true or false"},
	{"capitalised boolean", "[tunnel]\ninsecure_skip_verify = True", "line 2: tunnel.insecure_skip_verify: invalid value: strings need quotes, booleans are true or false"},
	{"missing value", "thing_name =", "line 1: thing_name: want a value, got the end of the file"},
	{"value on the next line", "thing_name =\n\"a\"", "line 1: thing_name: want a value, got '\\n'"},
	{"missing =", "thing_name \"a\"", "line 1: want = after a key, got '\"'"},
	{"= on the next line", "thing_name\n= \"a\"", "line 1: want = after a key, got '\\n'"},
	{"missing key", "= \"a\"", "line 1: want a key, got '='"},
	{"two pairs on a line", "thing_name = \"a\" data_dir = \"b\"", "line 1: want the end of the line, got 'd'"},
	{"unknown dotted key", "\nmqtt.endpont = \"x\"", "line 2: unknown key mqtt.endpont"},
	{"unknown table of a dotted key", "mqtt.tls.on = true", "line 1: unknown table mqtt.tls"},
	{"dotted key into a string", "thing_name.x = \"x\"", "line 1: thing_name: want a string, got a table"},
	{"dotted key into a map's string", "[services]\n1.2 = \"x\"", "line 2: services.1: want a string, got a table"},
	{"duplicate dotted key", "[ssh]\npassword_hashes.root = \"a\"\n\"password_hashes\" . root = \"b\"", "line 3: duplicate key ssh.password_hashes.root (first on line 2)"},
	{"dotted key past a value", "extra.i8 = 1\nextra.i8.x = 2", "line 2: extra.i8.x: extra.i8 was already set on line 1"},
	{"dotted key into an inline table", "[extra]\ninner = {}\ninner.name = \"n\"", "line 3: extra.inner.name: extra.inner was already set on line 2"},
	{"dotted key into a defined table", "[extra.inner]\n[extra]\ninner.name = \"n\"", "line 3: extra.inner.name: dotted keys cannot add to table extra.inner, made by the [table] line on line 1"},
	{"dotted key into an implied table", "[extra.inner.tags]\n[extra]\ninner.name = \"n\"", "line 3: extra.inner.name: dotted keys cannot add to table extra.inner, made by the [table] line on line 1"},
	{"table of dotted keys defined again", "log.level = \"debug\"\n[log]", "line 2: duplicate table [log] (first on line 1)"},
	{"nested table of dotted keys defined again", "[extra]\ninner.tags.a = \"b\"\n[extra.inner]", "line 3: duplicate table [extra.inner] (first on line 2)"},
	{"dotted key with a trailing dot", "log. = 1", "line 1: want a key, got '='"},
	{"dotted key with two dots", "log..level = 1", "line 1: want a key, got '.'"},
	{"dotted key on two lines", "log.\nlevel = 1", "line 1: want a key, got '\\n'"},
	{"dotted key in an inline table into its table", "extra = { inner = {}, inner.name = \"n\" }", "line 1: extra.inner.name: extra.inner was already set on line 1"},
	{"unterminated string", "[ssh.password_hashes]\nroot = \"" + secret, "line 2: ssh.password_hashes.root: unterminated string"},
	{"newline in a string", "thing_name = \"a\nb\"", "line 1: thing_name: unterminated string"},
	{"unterminated literal string", "thing_name = '" + secret + "\n'", "line 1: thing_name: unterminated string"},
	{"unterminated multi-line string", "thing_name = \"\"\"a\n\n\"\"", "line 3: thing_name: unterminated string"},
	{"unterminated multi-line literal string", "thing_name = '''a\n", "line 2: thing_name: unterminated string"},
	{"unterminated key", "\"thing_name = 1", "line 1: unterminated string"},
	{"invalid escape", "thing_name = \"" + secret + `\q"`, "line 1: thing_name: invalid escape: backslash and 'q'"},
	{"TOML 1.1 escape", `thing_name = "\e"`, "line 1: thing_name: invalid escape: backslash and 'e'"},
	{"TOML 1.1 hex escape", `thing_name = "\x41"`, "line 1: thing_name: invalid escape: backslash and 'x'"},
	{"backslash and space", `thing_name = "a\ "`, "line 1: thing_name: invalid escape: backslash and ' '"},
	{"backslash at the end", "thing_name = \"a\\", "line 1: thing_name: unterminated string"},
	{"line-ending backslash in a single-line string", "thing_name = \"a\\\nb\"", "line 1: thing_name: invalid escape: backslash and '\\n'"},
	{"backslash and space not ending a line", "thing_name = \"\"\"a\\  b\"\"\"", "line 1: thing_name: invalid escape: backslash and ' '"},
	{"short \\u", `thing_name = "\u12"`, `line 1: thing_name: invalid escape \u: want 4 hex digits of a Unicode scalar value`},
	{"\\u at the end", `thing_name = "\u12`, `line 1: thing_name: invalid escape \u: want 4 hex digits of a Unicode scalar value`},
	{"\\u with a sign", `thing_name = "\u+123"`, `line 1: thing_name: invalid escape \u: want 4 hex digits of a Unicode scalar value`},
	{"surrogate", `thing_name = "\uD800"`, `line 1: thing_name: invalid escape \u: want 4 hex digits of a Unicode scalar value`},
	{"beyond Unicode", `thing_name = "\U00110000"`, `line 1: thing_name: invalid escape \U: want 8 hex digits of a Unicode scalar value`},
	{"control character in a string", "thing_name = \"" + secret + "\x01\"", `line 1: thing_name: control character '\x01' in a string`},
	{"DEL in a literal string", "thing_name = 'a\x7f'", `line 1: thing_name: control character '\x7f' in a string`},
	{"control character in a multi-line string", "thing_name = '''\x00'''", `line 1: thing_name: control character '\x00' in a string`},
	{"carriage return in a multi-line string", "thing_name = \"\"\"a\rb\"\"\"", "line 1: thing_name: carriage return without a line feed in a string"},
	{"carriage return after a line-ending backslash", "thing_name = \"\"\"a\\\n\rb\"\"\"", "line 2: thing_name: carriage return without a line feed in a string"},
	{"carriage return in a single-line string", "thing_name = \"a\rb\"", "line 1: thing_name: unterminated string"},
	{"six quotes", `thing_name = """a""""""`, "line 1: thing_name: too many quotes at the end of a string"},
	{"control character in a comment", "# a\x01b", `line 1: control character '\x01' in a comment`},
	{"DEL in a comment", "thing_name = \"a\" # \x7f", `line 1: control character '\x7f' in a comment`},
	{"lone carriage return", "thing_name = \"a\"\rdata_dir = \"b\"", `line 1: want the end of the line, got '\r'`},
	{"carriage return in a comment", "# a\rb\n", `line 1: control character '\r' in a comment`},
	{"invalid UTF-8", "thing_name = \"a\"\n\n# \xff\xfe", "line 3: invalid UTF-8 (save the file as UTF-8)"},
	{"invalid UTF-8 in a string", "thing_name = \"\xc3\"", "line 1: invalid UTF-8 (save the file as UTF-8)"},
	{"UTF-16LE", "\xff\xfet\x00h\x00", "line 1: the file is saved as UTF-16 (as Windows PowerShell's > and Notepad's \"Unicode\" save one), not UTF-8: save it as UTF-8"},
	{"UTF-16BE", "\xfe\xff\x00t\x00h", "line 1: the file is saved as UTF-16 (as Windows PowerShell's > and Notepad's \"Unicode\" save one), not UTF-8: save it as UTF-8"},
	{"UTF-16LE without a byte order mark", "t\x00h\x00", "line 1: the file is saved as UTF-16 (as Windows PowerShell's > and Notepad's \"Unicode\" save one), not UTF-8: save it as UTF-8"},
	{"unterminated array", "[ssh]\naccept_env = [\"a\",\n", "line 3: ssh.accept_env: want a value, got the end of the file"},
	{"array without commas", "[ssh]\naccept_env = [\"a\" \"b\"]", "line 2: ssh.accept_env: want , or ] in an array, got '\"'"},
	{"array with a leading comma", "[ssh]\naccept_env = [,\"a\"]", "line 2: ssh.accept_env: want a value, got ','"},
	{"array with two commas", "[ssh]\naccept_env = [\"a\",,]", "line 2: ssh.accept_env: want a value, got ','"},
	{"arrays nested too deeply", "[ssh]\naccept_env = " + strings.Repeat("[", 40), "line 2: ssh.accept_env: arrays and inline tables nested too deeply"},
	{"newline in an inline table", "[ssh]\npassword_hashes = { a = \"b\"\n}", "line 2: ssh.password_hashes: newline in an inline table"},
	{"newline at the start of an inline table", "[ssh]\npassword_hashes = {\na = \"b\" }", "line 2: ssh.password_hashes: want a key, got '\\n'"},
	{"trailing comma in an inline table", "[ssh]\npassword_hashes = { a = \"b\", }", "line 2: ssh.password_hashes: want a key, got '}'"},
	{"unterminated inline table", "[ssh]\npassword_hashes = { a = \"b\"", "line 2: ssh.password_hashes: want , or } in an inline table, got the end of the file"},
	{"comment in an inline table", "[ssh]\npassword_hashes = { a = \"b\" # c\n}", "line 2: ssh.password_hashes: want , or } in an inline table, got '#'"},
	{"array of tables", "[[services]]", "line 1: arrays of tables [[...]] are not supported"},
	{"unterminated header", "[mqtt\nendpoint = \"a\"", "line 1: want ] after a table name, got '\\n'"},
	{"empty header", "[]", "line 1: want a key, got ']'"},
	{"header with a trailing dot", "[mqtt.]", "line 1: want a key, got ']'"},
	{"text after a header", "[mqtt] endpoint = \"a\"", "line 1: want the end of the line, got 'e'"},
	{"line after a multi-line string", "thing_name = \"\"\"a\nb\n\"\"\"\nbogus = 1", "line 4: unknown key bogus"},
	{"line after a multi-line array", "[ssh]\naccept_env = [\n\"a\",\n]\nbogus = 1", "line 5: unknown key ssh.bogus"},
}

func TestUnmarshalErrors(t *testing.T) {
	for _, tc := range errorTests {
		t.Run(tc.name, func(t *testing.T) {
			var c config
			err := Unmarshal([]byte(tc.in), &c)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("Unmarshal(%q) = %v, want %s", tc.in, err, tc.want)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Errorf("Unmarshal(%q) = %T, want a *ParseError", tc.in, err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("Unmarshal(%q) = %v: repeats a value", tc.in, err)
			}
		})
	}
}

func TestParseErrorUnwraps(t *testing.T) {
	type withText struct {
		T text `toml:"t"`
	}
	var v withText
	err := Unmarshal([]byte("\nt = \"x\""), &v)
	var pe *ParseError
	if !errors.Is(err, errText) || !errors.As(err, &pe) || pe.Line != 2 {
		t.Fatalf("Unmarshal = %v, want a *ParseError on line 2 wrapping %v", err, errText)
	}
}

var errText = errors.New("no")

type text struct{}

func (*text) UnmarshalText([]byte) error { return errText }

func TestUnmarshalTargets(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    any
		want string
	}{
		{"not a pointer", config{}, "toml: Unmarshal needs a non-nil pointer to a struct, not toml.config"},
		{"nil pointer", (*config)(nil), "toml: Unmarshal needs a non-nil pointer to a struct, not *toml.config"},
		{"pointer to a map", &map[string]string{}, "toml: Unmarshal needs a non-nil pointer to a struct, not *map[string]string"},
		{"float", &struct {
			F float64 `toml:"f"`
		}{}, "toml: field struct { F float64 \"toml:\\\"f\\\"\" }.F: type float64 is not supported"},
		{"nested", &struct {
			A struct {
				M map[string]int `toml:"m"`
			} `toml:"a"`
		}{}, "toml: field struct { M map[string]int \"toml:\\\"m\\\"\" }.M: type map[string]int is not supported"},
		{"slice of ints", &struct {
			S []int `toml:"s"`
		}{}, "toml: field struct { S []int \"toml:\\\"s\\\"\" }.S: type []int is not supported"},
		{"pointer", &struct {
			P *string `toml:"p"`
		}{}, "toml: field struct { P *string \"toml:\\\"p\\\"\" }.P: type *string is not supported"},
		{"unexported", &struct {
			u string `toml:"u"`
		}{}, "toml: field struct { u string \"toml:\\\"u\\\"\" }.u has a toml tag but is not exported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Unmarshal([]byte("f = 1.5"), tc.v)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("Unmarshal = %v, want %s", err, tc.want)
			}
		})
	}
	// Untagged and "-" fields are not keys, whatever their type.
	var v struct {
		F float64
		G float64 `toml:"-"`
		S string  `toml:"s,omitempty"`
	}
	if err := Unmarshal([]byte(`s = "x"`), &v); err != nil || v.S != "x" {
		t.Fatalf("Unmarshal = %v, %+v", err, v)
	}
	if err := Unmarshal([]byte(`F = 1`), &v); err == nil || err.Error() != "line 1: unknown key F" {
		t.Fatalf("Unmarshal of an untagged field's name = %v", err)
	}
}
