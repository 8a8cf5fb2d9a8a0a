package agent

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
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
	c, err := ParseConfig(b)
	if err != nil {
		t.Fatalf("porthole.example.toml: %v", err)
	}
	if c.ThingName != "my-router" || c.Services["SSH"] != BuiltinSSH || time.Duration(c.MQTT.KeepAlive) != time.Minute ||
		c.Tunnel.MaxTunnels != 4 || time.Duration(c.SSH.LoginGraceTime) != 2*time.Minute {
		t.Fatalf("example config decoded to %+v", c)
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
		{"dotted key", "tunnel.max_tunnels = 4", "config: line 1: dotted key tunnel.max_tunnels: not supported"},
		{"bad service name", "[services]\n\"bad name\" = \"builtin\"", "services.bad name"},
		{"bad target", "[services]\nWEB = \"localhost\"", "services.WEB"},
		{"relative unix", "[services]\nWEB = \"unix:run/x\"", "services.WEB"},
		{"ws without flag", "[tunnel]\nendpoint = \"ws://h:1\"", "tunnel.endpoint"},
		{"too many tunnels", "[tunnel]\nmax_tunnels = 1000", "tunnel.max_tunnels"},
		{"forward policy", "[ssh]\npermit_local_forward = [\"everywhere\"]", "ssh.permit_local_forward"},
		{"unknown cipher", "[ssh]\nciphers = [\"aes128-cbc\"]", "ssh.ciphers"},
		{"empty cipher list", "[ssh]\nciphers = []", "ssh.ciphers"},
		{"password hash", "[ssh]\npassword_hashes = { root = \"secret\" }", "ssh.password_hashes.root"},
		{"log level", "[log]\nlevel = \"loud\"", "log.level"},
		{"event topic", "[mqtt]\nevent_topic = \"a/#\"", "mqtt.event_topic"},
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
