package sshd

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/sys/unix"
)

// A fixed ed25519 public key for table tests.
const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

var authorizedKeyTests = []struct {
	line    string
	want    keyOptions
	comment string
	wantErr bool
}{
	{line: testKey + " user@host", comment: "user@host"},
	{line: testKey},
	{line: `no-pty,no-port-forwarding ` + testKey + " c", want: keyOptions{NoPTY: true, NoPortForward: true}, comment: "c"},
	{line: `command="echo \"hi, there\"",from="10.0.0.0/8,!10.1.0.0/16" ` + testKey,
		want: keyOptions{Command: `echo "hi, there"`, HasCommand: true, From: []string{"10.0.0.0/8", "!10.1.0.0/16"}}},
	{line: `restrict,pty ` + testKey, want: keyOptions{NoPortForward: true, NoAgentForward: true}},
	{line: `cert-authority,principals="a,b" ` + testKey, want: keyOptions{CertAuthority: true, Principals: []string{"a", "b"}}},
	{line: `permitopen="localhost:80",permitopen="[::1]:*" ` + testKey, want: keyOptions{PermitOpen: []string{"localhost:80", "::1:*"}}},
	{line: `expiry-time="20300102Z" ` + testKey, want: keyOptions{ExpiryTime: time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC)}},
	// sshd's hpdelim2 takes "/" for the colon, and parse_absolute_time a
	// UTC suffix in any case as well as Z.
	{line: `permitopen="localhost/80",permitopen="[::1]/*",permitlisten="[::1]/8080" ` + testKey,
		want: keyOptions{PermitOpen: []string{"localhost:80", "::1:*"}, PermitListen: []string{"::1:8080"}}},
	{line: `expiry-time="203001021230UTC" ` + testKey, want: keyOptions{ExpiryTime: time.Date(2030, 1, 2, 12, 30, 0, 0, time.UTC)}},
	{line: `expiry-time="20300102utc" ` + testKey, want: keyOptions{ExpiryTime: time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC)}},
	{line: `expiry-time="20300102z" ` + testKey, want: keyOptions{ExpiryTime: time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC)}},
	{line: `expiry-time="UTC" ` + testKey, wantErr: true},
	{line: `expiry-time="20300102ZUTC" ` + testKey, wantErr: true},
	// touch-required and verify-required, with or without "no-": the last
	// one holds (sshd's opt_flag).
	{line: `no-touch-required,touch-required ` + testKey},
	{line: `touch-required,no-touch-required ` + testKey, want: keyOptions{NoTouch: true}},
	{line: `verify-required,no-verify-required ` + testKey},
	{line: `no-verify-required,verify-required ` + testKey, want: keyOptions{VerifyRequired: true}},
	{line: `no-x11-forwarding,no-user-rc,environment="A=B",no-agent-forwarding ` + testKey, want: keyOptions{NoAgentForward: true}},
	{line: `NO-PTY ` + testKey, want: keyOptions{NoPTY: true}},
	// As in sshd, the last of restrict, no-X and X holds.
	{line: `no-pty,pty,no-port-forwarding,port-forwarding,no-agent-forwarding,agent-forwarding ` + testKey},
	{line: `restrict,no-pty,pty ` + testKey, want: keyOptions{NoPortForward: true, NoAgentForward: true}},
	{line: `pty,no-pty ` + testKey, want: keyOptions{NoPTY: true}},
	{line: `no-pty,restrict,pty ` + testKey, want: keyOptions{NoPortForward: true, NoAgentForward: true}},
	{line: `bogus-option ` + testKey, wantErr: true},
	{line: `command=unquoted ` + testKey, wantErr: true},
	{line: `command="unterminated ` + testKey, wantErr: true},
	{line: `no-pty="x" ` + testKey, wantErr: true},
	{line: `from ` + testKey, wantErr: true},
	{line: `permitopen="nohostport" ` + testKey, wantErr: true},
	{line: `permitopen="[::1]" ` + testKey, wantErr: true},
	// A colon outside brackets splits as before the "/" was taken: a CIDR
	// written by mistake keeps its key usable (its entry matches nothing).
	{line: `permitopen="10.0.0.0/8:80" ` + testKey, want: keyOptions{PermitOpen: []string{"10.0.0.0/8:80"}}},
	{line: `permitopen="fd00::1/80" ` + testKey, wantErr: true},
	{line: `permitopen="host/" ` + testKey, wantErr: true},
	{line: `expiry-time="2030" ` + testKey, wantErr: true},
	// sshd skips an empty option (checked against sshd 9.2).
	{line: `no-pty,,no-agent-forwarding ` + testKey, want: keyOptions{NoPTY: true, NoAgentForward: true}},
	{line: `no-pty, ` + testKey + " c", want: keyOptions{NoPTY: true}, comment: "c"},
	{line: "no-pty,\t" + testKey, want: keyOptions{NoPTY: true}},
	{line: `,no-pty ` + testKey, want: keyOptions{NoPTY: true}},
	{line: `no-pty ,pty ` + testKey, wantErr: true},
	// tunnel= as sshd's a2tun reads it (checked against sshd 9.2): "any"
	// or a number 0-2147483645, white space and a sign before it allowed.
	{line: `tunnel="0" ` + testKey},
	{line: `tunnel="ANY" ` + testKey},
	{line: `tunnel=" +05" ` + testKey},
	{line: `tunnel="2147483645" ` + testKey},
	{line: `tunnel="x" ` + testKey, wantErr: true},
	{line: `tunnel="" ` + testKey, wantErr: true},
	{line: `tunnel="-1" ` + testKey, wantErr: true},
	{line: `tunnel="5 " ` + testKey, wantErr: true},
	{line: `tunnel="0x5" ` + testKey, wantErr: true},
	{line: `tunnel="2147483646" ` + testKey, wantErr: true},
	{line: "ssh-ed25519", wantErr: true},
	{line: "ssh-ed25519 !!!notbase64", wantErr: true},
	{line: "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl", wantErr: true},
	{line: "no-pty", wantErr: true},
}

func TestParseAuthorizedKeyLine(t *testing.T) {
	for _, tc := range authorizedKeyTests {
		got, err := parseAuthorizedKeyLine(tc.line)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseAuthorizedKeyLine(%q) error = %v, want error %v", tc.line, err, tc.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if diff := cmp.Diff(tc.want, got.Options); diff != "" {
			t.Errorf("parseAuthorizedKeyLine(%q) options (-want +got):\n%s", tc.line, diff)
		}
		if got.Comment != tc.comment || got.Key.Type() != gossh.KeyAlgoED25519 {
			t.Errorf("parseAuthorizedKeyLine(%q) = comment %q type %s", tc.line, got.Comment, got.Key.Type())
		}
	}
}

func TestParseAuthorizedKeysFile(t *testing.T) {
	data := "# comment\n\n" + testKey + " a\nbroken line\n  no-pty " + testKey + " b\n"
	keys, errs := parseAuthorizedKeys(strings.NewReader(data))
	if len(keys) != 2 || len(errs) != 1 || !strings.Contains(errs[0].Error(), "line 4") {
		t.Fatalf("parseAuthorizedKeys = %d keys, errors %v; want 2 keys and an error on line 4", len(keys), errs)
	}
	if !keys[1].Options.NoPTY || keys[1].Comment != "b" {
		t.Errorf("second key = %+v", keys[1])
	}
}

func FuzzAuthorizedKeyLine(f *testing.F) {
	for _, tc := range authorizedKeyTests {
		f.Add(tc.line)
	}
	f.Fuzz(func(t *testing.T, line string) {
		k, err := parseAuthorizedKeyLine(line)
		if err != nil {
			return
		}
		if k.Key == nil {
			t.Fatalf("parseAuthorizedKeyLine(%q) returned no key and no error", line)
		}
		// A restriction parsed once must survive a round trip through the
		// Permissions encoding.
		r := restrictionsOf(permsFor("publickey", authInfo{}, k.Options))
		if r.noPTY != k.Options.NoPTY || r.noForward != k.Options.NoPortForward || r.hasForce != k.Options.HasCommand || r.forceCommand != k.Options.Command {
			t.Fatalf("restrictions of %q lost in encoding: %+v vs %+v", line, r, k.Options)
		}
	})
}

// TestParseErrorsQuoteNothing: an error about a line names the kind of
// problem but quotes nothing of the line. The server reads a user's
// authorized_keys as root and logs these errors, and the file may be a link
// to a file only root may read.
func TestParseErrorsQuoteNothing(t *testing.T) {
	keyData := strings.Fields(testKey)[1]
	unknownAlgo := base64.StdEncoding.EncodeToString(gossh.Marshal(struct{ Algo string }{"hunter2"}))
	for _, tc := range []struct {
		line string
		want string // in the error
	}{
		{"hunter2 " + testKey, "unknown option (options are "},
		{"Hunter2,no-pty " + testKey, "unknown option"},
		{`hunter2="x" ` + testKey, "unknown option"},
		{`hunter2=x ` + testKey, "unknown option"},
		{`command=hunter2 ` + testKey, "option command: value must be double-quoted"},
		{`no-pty="hunter2" ` + testKey, "option no-pty takes no value"},
		{`permitopen="hunter2" ` + testKey, "option permitopen: not host:port"},
		{`expiry-time="hunter2" ` + testKey, "option expiry-time: want YYYYMMDD"},
		{`expiry-time="2030hunter2x" ` + testKey, "option expiry-time: want YYYYMMDD"},
		{"ssh-hunter2 " + keyData, "key type does not match the key data (ssh-ed25519)"},
		{"ssh-ed25519 " + unknownAlgo, "key data: not an SSH public key"},
		{"ssh-ed25519 hunter2", "key data: illegal base64 data at input byte"},
	} {
		_, err := parseAuthorizedKeyLine(tc.line)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(strings.ToLower(err.Error()), "hunter") {
			t.Errorf("parseAuthorizedKeyLine(%q) error = %v, want %q and nothing of the line", tc.line, err, tc.want)
		}
	}
}

func TestMatchFrom(t *testing.T) {
	for _, tc := range []struct {
		ip       string
		patterns []string
		want     bool
	}{
		{"127.0.0.1", []string{"127.0.0.1"}, true},
		{"127.0.0.1", []string{"127.0.0.0/8"}, true},
		{"10.2.3.4", []string{"10.*"}, true},
		{"10.2.3.4", []string{"10.?.3.4"}, true},
		{"10.22.3.4", []string{"10.?.3.4"}, false},
		{"10.1.2.3", []string{"10.0.0.0/8", "!10.1.0.0/16"}, false},
		{"10.2.2.3", []string{"10.0.0.0/8", "!10.1.0.0/16"}, true},
		{"192.168.1.1", []string{"10.0.0.0/8"}, false},
		{"::1", []string{"::1/128"}, true},
		{"::ffff:127.0.0.1", []string{"127.0.0.1"}, true},
		{"127.0.0.1", []string{"localhost"}, false}, // no DNS
		// An address is compared as one, however it is spelt, as sshd does: a
		// negated one written otherwise than Go prints it must still refuse.
		{"2001:db8::66", []string{"2001:DB8::66"}, true},
		{"2001:db8::66", []string{"2001:0db8::66"}, true},
		{"2001:db8::66", []string{"2001:db8:0:0:0:0:0:66"}, true},
		{"2001:db8::66", []string{"!2001:0db8::66", "2001:db8::/32"}, false},
		{"2001:db8::66", []string{"!2001:DB8::66", "*"}, false},
		{"::1", []string{"!0:0:0:0:0:0:0:1", "*"}, false},
		{"2001:db8::66", []string{"!2001:DB8:*", "*"}, false}, // wildcards ignore case
		{"2001:db8::67", []string{"2001:db8::66"}, false},
		{"fe80::1%eth0", []string{"!fe80::1", "*"}, false}, // a zone names the interface, not the address
		{"fe80::1%eth0", []string{"!fe80::/64", "*"}, false},
		{"fe80::1%eth0", []string{"fe80::1%eth0"}, true},
		{"fe80::1%eth0", []string{"fe80::1%eth1"}, false},
		{"", []string{"*"}, false}, // not an IP connection
		// Addresses as sshd reads them, with inet_aton(3) (parseAddr); OpenSSH
		// 9.2's sshd lets 127.0.0.1 in with each but 0127.0.0.1 (87.0.0.1),
		// and refuses it with the negated ones, which let it in as patterns.
		{"127.0.0.1", []string{"127.1"}, true},
		{"127.0.0.1", []string{"127.000.000.001"}, true},
		{"127.0.0.1", []string{"0177.0.0.1"}, true},
		{"127.0.0.1", []string{"0x7f.1"}, true},
		{"127.0.0.1", []string{"2130706433"}, true},
		{"127.0.0.1", []string{"127.1/32"}, true},
		{"127.0.0.1", []string{"0127.0.0.1"}, false},
		{"127.0.0.1", []string{"!127.1", "*"}, false},
		{"127.0.0.1", []string{"!0x7f.0.0.1", "*"}, false},
		{"127.0.0.1", []string{"!127.1/8", "*"}, false}, // bits past the prefix: invalid
	} {
		var ip netip.Addr
		if tc.ip != "" {
			ip = netip.MustParseAddr(tc.ip)
		}
		if got := matchFrom(ip, tc.patterns); got != tc.want {
			t.Errorf("matchFrom(%s, %q) = %v, want %v", tc.ip, tc.patterns, got, tc.want)
		}
	}
}

// TestParseAddr: IPv4 addresses as inet_aton(3) reads them (glibc's, as
// sshd's getaddrinfo with AI_NUMERICHOST does), IPv6 ones as netip does.
func TestParseAddr(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "": not an address
	}{
		{"127.0.0.1", "127.0.0.1"},
		{"127.1", "127.0.0.1"},
		{"127.0.1", "127.0.0.1"},
		{"127.000.000.001", "127.0.0.1"},
		{"0177.0.0.01", "127.0.0.1"},
		{"0x7F.0X0.0x00.0x1", "127.0.0.1"},
		{"2130706433", "127.0.0.1"},
		{"0xffffffff", "255.255.255.255"},
		{"4294967295", "255.255.255.255"},
		{"10.65535", "10.0.255.255"},
		{"255.255.255.255", "255.255.255.255"}, // 255 is a byte: every part may hold it
		{"0xff.0377.255.1", "255.255.255.1"},
		{"10.16777215", "10.255.255.255"},
		{"10.1.65535", "10.1.255.255"},
		{"0", "0.0.0.0"},
		{"0127.0.0.1", "87.0.0.1"},
		{"::1", "::1"},
		{"2001:DB8::1", "2001:db8::1"},
		{"fe80::1%eth0", "fe80::1%eth0"},
		{"", ""},
		{"4294967296", ""},
		{"10.16777216", ""},
		{"10.1.65536", ""},
		{"1.2.3.256", ""},
		{"256.1", ""},
		{"08", ""},
		{"0x", ""},
		{"0x.1", ""},
		{"0xg", ""},
		{"1..2", ""},
		{"1.2.3.4.", ""},
		{".1.2.3", ""},
		{"1.2.3.4.5", ""},
		{" 1.2.3.4", ""},
		{"1.2.3.4 ", ""},
		{"+1.2.3.4", ""},
		{"1.-2.3.4", ""},
		{"99999999999999999999999", ""},
		{"localhost", ""},
		{"1.2.3.*", ""},
	} {
		got, err := parseAddr(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("parseAddr(%q) = %v, want an error", tc.in, got)
			}
		} else if err != nil || got.String() != tc.want {
			t.Errorf("parseAddr(%q) = %v, %v, want %s", tc.in, got, err, tc.want)
		}
	}
}

// FuzzParseAddr: parseAddr reads every address netip reads (dotted quads
// without leading zeros, IPv6) as netip does, and never panics.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "127.1", "0x7f.1", "0177.0.0.1", "2130706433", "::1", "1.2.3.4.5", "0x", "08"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseAddr(s)
		if want, werr := netip.ParseAddr(s); werr == nil && (err != nil || got != want) {
			t.Errorf("parseAddr(%q) = %v, %v, want %v as netip.ParseAddr", s, got, err, want)
		}
	})
}

func TestAuthorizedKeysPaths(t *testing.T) {
	s := &Server{AuthorizedKeysFiles: []string{"%h/.ssh/authorized_keys", "/etc/keys/%u", ".ssh/more", "/x/100%%"}}
	got := s.authorizedKeysPaths(&account{Name: "bob", Home: "/home/bob"})
	want := []string{"/home/bob/.ssh/authorized_keys", "/etc/keys/bob", "/home/bob/.ssh/more", "/x/100%"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("authorizedKeysPaths (-want +got):\n%s", diff)
	}
}

func TestParseAuthorizedKeysOverlongLines(t *testing.T) {
	long := strings.Repeat("A", maxKeysLine+1)
	for _, tc := range []struct {
		name     string
		data     string
		keys     int
		longLine []int // line numbers reported as too long
	}{
		{"at the limit", testKey + " " + strings.Repeat("c", maxKeysLine-len(testKey)-1) + "\n" + testKey + "\n", 2, nil},
		{"one over", testKey + " a\n" + long + "\n" + testKey + " b\n", 2, []int{2}},
		{"first line", long + "\n" + testKey + " b\n", 1, []int{1}},
		{"two, with CRLF", long + "\r\n" + long + long + "\r\n" + testKey + " b\r\n", 1, []int{1, 2}},
		{"last line, no newline", testKey + " a\n" + long, 1, []int{2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, errs := parseAuthorizedKeys(strings.NewReader(tc.data))
			var got []int
			for _, err := range errs {
				var le *lineError
				if !errors.Is(err, errLineTooLong) || !errors.As(err, &le) {
					t.Errorf("unexpected error %.200v", err)
					continue
				}
				if strings.Contains(err.Error(), "AAAA") {
					t.Errorf("error quotes the line: %.200v", err)
				}
				got = append(got, le.Line)
			}
			if len(keys) != tc.keys || !slices.Equal(got, tc.longLine) {
				t.Errorf("parseAuthorizedKeys = %d keys, over-long lines %v; want %d keys, %v", len(keys), got, tc.keys, tc.longLine)
			}
		})
	}
}

func TestParseAuthorizedKeysSizeLimit(t *testing.T) {
	key := testKey + " k\n"
	// upTo is a key line followed by comment lines, n bytes in all.
	upTo := func(n int) string {
		fill := "# " + strings.Repeat("f", 1000) + "\n"
		var b strings.Builder
		b.WriteString(key)
		for b.Len()+len(fill)+2 <= n {
			b.WriteString(fill)
		}
		b.WriteString(strings.Repeat("#", n-b.Len()-1) + "\n")
		return b.String()
	}
	// The second key line straddles the limit: neither it nor anything
	// after it may be used.
	data := upTo(maxKeysFile-len(key)/2) + key + key
	keys, errs := parseAuthorizedKeys(strings.NewReader(data))
	if len(keys) != 1 || len(errs) != 1 || !errors.Is(errs[0], errFileTooLarge) {
		t.Errorf("parseAuthorizedKeys of %d bytes = %d keys, errors %v; want the first key and errFileTooLarge", len(data), len(keys), errs)
	}
	// A file of exactly maxKeysFile bytes is read whole, its last line
	// without a newline too.
	data = upTo(maxKeysFile-len(key)+1) + strings.TrimSuffix(key, "\n")
	if keys, errs := parseAuthorizedKeys(strings.NewReader(data)); len(data) != maxKeysFile || len(keys) != 2 || len(errs) != 0 {
		t.Errorf("parseAuthorizedKeys of %d bytes (limit %d) = %d keys, errors %v; want 2 keys", len(data), maxKeysFile, len(keys), errs)
	}
}

// The unknown-option error names options keyOption knows, sorted.
func TestKeyOptionNames(t *testing.T) {
	names := strings.Split(keyOptionNames, ", ")
	if !slices.IsSorted(names) {
		t.Errorf("keyOptionNames is not sorted: %q", names)
	}
	for _, n := range names {
		if _, known := keyOption(n); !known {
			t.Errorf("keyOptionNames lists %q, which keyOption does not know", n)
		}
	}
	for _, n := range []string{"", "no-agent", "permit-open", "x11", "Command"} {
		if _, known := keyOption(n); known {
			t.Errorf("keyOption knows %q", n)
		}
	}
}

// TestAuthorizedKeysOptionsAsOpenSSH: lines whose options OpenSSH's sshd
// (auth-options.c, sshauthopt_parse; addrmatch.c) refuses or reads more
// strictly must not let the key in, or get a pty, here.
func TestAuthorizedKeysOptionsAsOpenSSH(t *testing.T) {
	e := newEnv(t, nil)
	k := e.key.PublicKey()
	for _, tc := range []struct {
		name, opts string
	}{
		// sshd: `multiple "from" clauses`, the line is refused. A from=
		// put in front of a line that has one must not be dropped.
		{name: "two from clauses", opts: `from="10.0.0.0/8",from="127.0.0.1"`},
		// sshd: `multiple "command" clauses`.
		{name: "two command clauses", opts: `command="echo first",command="echo second"`},
		// sshd: the earliest expiry-time wins.
		{name: "earliest expiry-time wins", opts: `expiry-time="20200101",expiry-time="29990101"`},
		// sshd: a CIDR block with bits set past the mask is an invalid
		// entry ("inconsistent mask length") and from= refuses the key.
		{name: "from CIDR with host bits", opts: `from="127.0.0.9/8"`},
		// sshd: an empty pattern list matches no address.
		{name: "empty from", opts: `from=""`},
		// sshd: "invalid tun device", the line is refused.
		{name: "tunnel not a tun device", opts: `tunnel="x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.writeAuthorizedKeys("root", authorizedLine(tc.opts, k))
			c, err := e.dial("root", gossh.PublicKeys(e.key))
			if err == nil {
				out, _, _ := run(t, c, "echo in", "")
				c.Close()
				t.Errorf("login with %s succeeded (ran: %q); OpenSSH refuses this line", tc.opts, strings.TrimSpace(out))
			}
		})
	}

	// sshd applies options in order: restrict after pty takes the pty away
	// again ("pty: permits tty allocation previously disabled by restrict").
	for _, opts := range []string{`pty,restrict`, `port-forwarding,restrict`} {
		got, err := parseAuthorizedKeyLine(strings.TrimSpace(authorizedLine(opts, k)))
		if err != nil {
			t.Fatalf("%s: %v", opts, err)
		}
		if !got.Options.NoPTY || !got.Options.NoPortForward {
			t.Errorf("%s: NoPTY=%v NoPortForward=%v, want both restricted (restrict comes last)", opts, got.Options.NoPTY, got.Options.NoPortForward)
		}
	}
	e.writeAuthorizedKeys("root", authorizedLine(`pty,restrict`, k))
	c := e.login("root")
	s := openSession(t, c)
	if err := s.RequestPty("xterm", 24, 80, nil); err == nil {
		t.Error("pty,restrict: pty-req granted; OpenSSH's restrict, coming after pty, refuses it")
	}
}

// TestLastFlagOptionWins: in sshd a later pty, port-forwarding or
// agent-forwarding undoes an earlier no-pty, no-port-forwarding or
// no-agent-forwarding (the last one wins), as it undoes restrict; and a
// comma before the key ("no-pty, ssh-ed25519 …") leaves the line usable.
func TestLastFlagOptionWins(t *testing.T) {
	e := newEnv(t, func(e *testEnv, s *Server) {
		s.PermitLocalForward = func(string, netip.AddrPort) bool { return true }
		s.AgentForwarding = true
	})
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	for _, tc := range []struct{ opts, check string }{
		{`no-pty,`, "login"}, // sshd skips the empty option before the key
		{`no-pty,pty`, "pty"},
		{`restrict,no-pty,pty`, "pty"},
		{`no-port-forwarding,port-forwarding`, "L"},
		{`no-agent-forwarding,agent-forwarding`, "A"},
	} {
		t.Run(tc.opts, func(t *testing.T) {
			e.writeAuthorizedKeys("root", authorizedLine(tc.opts, e.key.PublicKey()))
			c := e.login("root")
			defer c.Close()
			switch tc.check {
			case "pty":
				if err := openSession(t, c).RequestPty("xterm", 24, 80, nil); err != nil {
					t.Errorf("pty-req refused: %v; sshd grants it", err)
				}
			case "L":
				cc, err := c.Dial("tcp", target.Addr().String())
				if err != nil {
					t.Fatalf("-L refused: %v; sshd allows it", err)
				}
				cc.Close()
			case "A":
				if err := agent.RequestAgentForwarding(openSession(t, c)); err != nil {
					t.Errorf("agent forwarding refused: %v; sshd allows it", err)
				}
			}
		})
	}
}

// refLine is one line as eachLine should pass it.
type refLine struct {
	n       int
	line    string
	tooLong bool
}

// FuzzEachLine checks the bounded line reader under authorized_keys and the
// user files against a plain split: every line within maxFile bytes is
// passed, numbered from 1, whole unless longer than maxLine; a line that
// does not end within maxFile stops the reading as truncated.
func FuzzEachLine(f *testing.F) {
	f.Add([]byte("a\nbb\n\nccc"), uint16(3), uint16(10))
	f.Add([]byte("0123456789\n"), uint16(4), uint16(11))
	f.Add([]byte("0123456789\n"), uint16(4), uint16(10))
	f.Add([]byte("x\ny"), uint16(0), uint16(3))
	f.Add([]byte(strings.Repeat("z", 5000)+"\nshort\n"), uint16(4096), uint16(6000))
	f.Fuzz(func(t *testing.T, data []byte, maxLine, maxFile uint16) {
		var got []refLine
		stop, truncated, err := eachLine(bytes.NewReader(data), int64(maxFile), int(maxLine), func(n int, line []byte, tooLong bool) {
			l := refLine{n: n, tooLong: tooLong}
			if !tooLong {
				l.line = string(line)
			}
			got = append(got, l)
		})
		if err != nil {
			t.Fatalf("eachLine: %v", err)
		}
		var want []refLine
		wantTrunc, wantStop := false, 0
		read := 0
		rest := string(data)
		for n := 1; ; n++ {
			if rest == "" {
				wantStop = n
				break
			}
			line, after, nl := strings.Cut(rest, "\n")
			size := len(line)
			if nl {
				size++
			}
			if read += size; read > int(maxFile) {
				wantTrunc, wantStop = true, n
				break
			}
			l := refLine{n: n, tooLong: len(line) > int(maxLine)}
			if !l.tooLong {
				l.line = line
			}
			want = append(want, l)
			rest = after
		}
		if diff := cmp.Diff(want, got, cmp.AllowUnexported(refLine{})); diff != "" || truncated != wantTrunc || stop != wantStop {
			t.Fatalf("eachLine(%q, %d, %d): stop %d truncated %v, want %d %v; lines (-want +got):\n%s", data, maxFile, maxLine, stop, truncated, wantStop, wantTrunc, diff)
		}
	})
}

// FuzzParseAuthorizedKeys checks a whole authorized_keys file against its
// lines: each key is the one parseAuthorizedKeyLine gives for its line, and
// each other non-blank, non-comment line has an error naming it.
func FuzzParseAuthorizedKeys(f *testing.F) {
	var all []string
	for _, tc := range authorizedKeyTests {
		all = append(all, tc.line)
	}
	f.Add(strings.Join(all, "\n"))
	f.Add("# comment\n\n  " + testKey + " a\r\n" + "bogus line\n" + testKey)
	f.Add("\xef\xbb\xbf" + testKey + "\n")
	f.Fuzz(func(t *testing.T, data string) {
		keys, errs := parseAuthorizedKeys(strings.NewReader(data))
		bad := map[int]bool{}
		for _, err := range errs {
			var le *lineError
			if !errors.As(err, &le) {
				t.Fatalf("error %v names no line", err)
			}
			bad[le.Line] = true
		}
		lines := strings.Split(data, "\n")
		i := 0
		for n, line := range lines {
			if n == 0 {
				line = strings.TrimPrefix(line, "\uFEFF") // a Windows editor's byte order mark
			}
			text := strings.TrimSpace(line)
			if text == "" || text[0] == '#' {
				continue
			}
			want, err := parseAuthorizedKeyLine(text)
			if err != nil {
				if !bad[n+1] {
					t.Fatalf("line %d %q: no error, parseAuthorizedKeyLine says %v", n+1, line, err)
				}
				continue
			}
			if i >= len(keys) || keys[i].Line != n+1 {
				t.Fatalf("line %d %q: key missing from %d keys", n+1, line, len(keys))
			}
			if !bytes.Equal(keys[i].Key.Marshal(), want.Key.Marshal()) || !reflect.DeepEqual(keys[i].Options, want.Options) {
				t.Fatalf("line %d %q: key %+v, want %+v", n+1, line, keys[i], want)
			}
			i++
		}
		if i != len(keys) {
			t.Fatalf("%d keys from %d good lines", len(keys), i)
		}
	})
}

// TestFromInvalidMaskLengthRefused: sshd's addr_pton_cidr reads the mask
// length with strtoul ("/08" is 8) and returns -2 for one the address family
// cannot have ("127.0.0.0/33"), and addr_match_list then takes the whole
// from= list as invalid: the key is refused. netip.ParsePrefix refuses both
// spellings, so matchFrom took them for wildcard patterns that match
// nothing: a negated entry was dropped and "*" let every address in.
func TestFromInvalidMaskLengthRefused(t *testing.T) {
	e := newEnv(t, nil)
	for _, opts := range []string{`from="!127.0.0.0/33,*"`, `from="127.0.0.1/40,127.0.0.1"`, `from="!127.0.0.0/08,*"`} {
		e.writeAuthorizedKeys("root", authorizedLine(opts, e.key.PublicKey()))
		if err := e.checkRefused("root", gossh.PublicKeys(e.key)); err != nil {
			t.Errorf("from 127.0.0.1 with %s (sshd refuses this line, or the client's address): %v", opts, err)
		}
	}
}

// TestFromAndPrincipalsListsAsOpenSSH: sshd splits from=, principals= and
// a certificate's source-address at commas and trims nothing (addrmatch.c,
// match_list): an entry with a space matches nothing, and an empty from= or
// source-address entry makes the list invalid. These lines, trimmed, let a
// client from 127.0.0.1 (or a certificate for root) in here; sshd 9.2
// refuses each (checked with the OpenSSH differential harness).
func TestFromAndPrincipalsListsAsOpenSSH(t *testing.T) {
	ca := newSigner(t)
	e := newEnv(t, func(e *testEnv, s *Server) {
		p := filepath.Join(e.dir, "user_ca.pub")
		writeFile(t, p, authorizedLine("", ca.PublicKey()))
		s.TrustedUserCAKeysFiles = []string{p}
		s.MaxAuthFailures = 100 // every login here but the last two is refused
	})
	for _, opts := range []string{
		`from="10.0.0.1, 127.0.0.1"`,
		`from=" 127.0.0.1"`,
		`from="127.0.0.1/32 "`,
		"from=\"127.0.0.1\t\"",
		`from="127.0.0.1,"`,
		`from=",127.0.0.1"`,
	} {
		e.writeAuthorizedKeys("root", authorizedLine(opts, e.key.PublicKey()))
		if err := e.checkRefused("root", gossh.PublicKeys(e.key)); err != nil {
			t.Errorf("from 127.0.0.1 with %s (sshd refuses it): %v", opts, err)
		}
	}
	lineCA := newSigner(t)
	cert := newCert(t, lineCA, newSigner(t), nil) // principal root
	for _, opts := range []string{
		`cert-authority,principals=" root"`,
		`cert-authority,principals="other, root"`,
		`cert-authority,principals="root "`,
	} {
		e.writeAuthorizedKeys("root", authorizedLine(opts, lineCA.PublicKey()))
		if err := e.checkRefused("root", gossh.PublicKeys(cert)); err != nil {
			t.Errorf("certificate for root with %s (sshd refuses it): %v", opts, err)
		}
	}
	// sshd's addr_match_cidr_list refuses a source-address with a space
	// or an empty entry: the certificate is invalid.
	for _, sa := range []string{"10.0.0.1, 127.0.0.1", "127.0.0.1 ", "127.0.0.1,"} {
		c := newCert(t, ca, newSigner(t), func(c *gossh.Certificate) {
			c.CriticalOptions = map[string]string{"source-address": sa}
		})
		if err := e.checkRefused("root", gossh.PublicKeys(c)); err != nil {
			t.Errorf("certificate with source-address %q (sshd refuses it): %v", sa, err)
		}
	}

	// The other way round: an entry with a space does not match, so a
	// negated one does not refuse either, and "*" lets 127.0.0.1 in, as in
	// sshd. The same list without the space refuses it.
	e.writeAuthorizedKeys("root", authorizedLine(`from="!127.0.0.1 ,*"`, e.key.PublicKey()))
	c, err := e.dial("root", gossh.PublicKeys(e.key))
	if err != nil {
		t.Fatalf(`from="!127.0.0.1 ,*": login refused (%v); sshd accepts it`, err)
	}
	c.Close()
	e.writeAuthorizedKeys("root", authorizedLine(`cert-authority,principals="other,root"`, lineCA.PublicKey()))
	c, err = e.dial("root", gossh.PublicKeys(cert))
	if err != nil {
		t.Fatalf(`principals="other,root": certificate for root refused (%v)`, err)
	}
	c.Close()
}

// TestPrincipalsListEndsAtEmptyEntry: sshd matches principals= with
// match_list, which reads the list only up to its first empty entry (its
// loop stops at "p && *p != '\0'") and 40 entries at most: principals=",root"
// and "other,,root" allow no certificate for root, only what comes before the
// empty entry, and neither does root as the 41st entry.
func TestPrincipalsListEndsAtEmptyEntry(t *testing.T) {
	e := newEnv(t, func(e *testEnv, s *Server) { s.MaxAuthFailures = 100 })
	lineCA := newSigner(t)
	cert := newCert(t, lineCA, newSigner(t), nil) // principal root
	forty := strings.Repeat("other,", 40)
	for _, opts := range []string{
		`cert-authority,principals=",root"`,
		`cert-authority,principals="other,,root"`,
		`cert-authority,principals="` + forty + `root"`, // sshd reads 40 entries
	} {
		e.writeAuthorizedKeys("root", authorizedLine(opts, lineCA.PublicKey()))
		if err := e.checkRefused("root", gossh.PublicKeys(cert)); err != nil {
			t.Errorf("certificate for root with %s (sshd refuses it): %v", opts, err)
		}
	}
	for _, opts := range []string{
		`cert-authority,principals="root,,other"`,
		`cert-authority,principals="` + forty[len("other,"):] + `root"`,
	} {
		e.writeAuthorizedKeys("root", authorizedLine(opts, lineCA.PublicKey()))
		c, err := e.dial("root", gossh.PublicKeys(cert))
		if err != nil {
			t.Fatalf("%s: certificate for root refused (%v)", opts, err)
		}
		c.Close()
	}
}

// zonedConn is a TCP connection as the kernel hands one over from a
// link-local client: the remote address carries its zone.
// zonedConn is a connection from a link-local client, as the kernel reports
// one: with the interface as the address's zone.
type zonedConn struct{ net.Conn }

func (zonedConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 40000, Zone: "eth0"}
}

// from= rules with a zone match a link-local client on that link, as
// OpenSSH's do: the zone was dropped from the client's address, so a zoned
// entry never matched, and a negated one ("!fe80::1%eth0,*") let that client in.
func TestFromZonedLinkLocalClient(t *testing.T) {
	e := newEnv(t, nil)
	k := e.key.PublicKey()
	for _, tc := range []struct {
		opts    string
		loginOK bool
	}{
		{`from="fe80::1%eth0"`, true},
		{`from="!fe80::1%eth0,*"`, false},
		{`from="fe80::*%eth0"`, true},
	} {
		t.Run(tc.opts, func(t *testing.T) {
			e.writeAuthorizedKeys("root", authorizedLine(tc.opts, k))
			server, client := tcpPair(t)
			go e.srv.ServeConn(zonedConn{server})
			cc, chans, reqs, err := gossh.NewClientConn(client, "x", e.clientConfig("root", gossh.PublicKeys(e.key)))
			if err == nil {
				gossh.NewClient(cc, chans, reqs).Close()
			} else {
				client.Close()
			}
			if (err == nil) != tc.loginOK {
				t.Errorf("login from fe80::1%%eth0 with %s: err=%v, want ok=%v", tc.opts, err, tc.loginOK)
			}
		})
	}
}

// TestExpiryTimePOSIXZone: a device whose zone is set by a POSIX TZ string
// (no zone files; Go's time.Local is UTC then) reads an expiry-time without Z
// in that zone, as sshd's mktime(3) does: 20300101 is 2029-12-31 23:00 UTC in
// CET. sftp's "ls -l" lines (sftp-server's localtime(3)) are in it too.
func TestExpiryTimePOSIXZone(t *testing.T) {
	if !inChild() {
		_ = time.Local.String() // Go reads TZ at its first use: this process's Local stays
		t.Setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3")
		runChild(t, nil, nil)
		return
	}
	got, err := parseExpiry("20300101")
	if want := time.Date(2029, 12, 31, 23, 0, 0, 0, time.UTC); err != nil || !got.Equal(want) {
		t.Errorf(`TZ=%s: expiry-time="20300101" is %v, %v; want %v (local midnight in CET)`, os.Getenv("TZ"), got.UTC(), err, want)
	}
	mtime := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	st := unix.Stat_t{Mode: 0o100644, Nlink: 1, Size: 7}
	if got, want := longName("name", &st, mtime.Unix(), "0", "0", mtime.Add(time.Hour)), "Jan  1 01:00 name"; !strings.HasSuffix(got, want) {
		t.Errorf("TZ=%s: ls -l line of a file of %v is %q, want it to end in %q", os.Getenv("TZ"), mtime, got, want)
	}
}

// TestZoneFromTZ: a POSIX rule that Go fell back to UTC for is read, summer
// time included; a zone Go did read is kept.
func TestZoneFromTZ(t *testing.T) {
	const cet = "CET-1CEST,M3.5.0,M10.5.0/3"
	berlin := time.FixedZone("Europe/Berlin", 3600) // as if read from a zone file
	for _, tc := range []struct {
		tz     string
		local  *time.Location
		at     time.Time
		name   string
		offset int
	}{
		{cet, time.UTC, time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC), "CEST", 2 * 3600},
		{cet, time.UTC, time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC), "CET", 3600},
		{cet, berlin, time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC), "Europe/Berlin", 3600},
		{"UTC", time.UTC, time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC), "UTC", 0},
	} {
		name, offset := tc.at.In(zoneFromTZ(tc.tz, tc.local)).Zone()
		if name != tc.name || offset != tc.offset {
			t.Errorf("TZ=%s, Go's Local %v: %v is in %s%+d, want %s%+d", tc.tz, tc.local, tc.at, name, offset, tc.name, tc.offset)
		}
	}
}

// TestSentinelTexts checks the limits spelled out in the texts of
// errLineTooLong and errFileTooLarge (data, not code run at start) against
// the constants they name, as fmt.Errorf wrote them before.
func TestSentinelTexts(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errLineTooLong, fmt.Sprintf("line longer than %d bytes", maxKeysLine)},
		{errFileTooLarge, fmt.Sprintf("more than %d bytes; the rest is ignored", maxKeysFile)},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}

// TestAuthorizedKeysSavedOnWindows: a UTF-8 byte order mark before the first
// key (Notepad) does not cost that key, often the administrator's: it was
// refused as an unknown option, and check-config said nothing of it when
// another key followed.
func TestAuthorizedKeysSavedOnWindows(t *testing.T) {
	keys, errs := parseAuthorizedKeys(strings.NewReader("\ufeff" + testKey + " admin\r\n" + testKey + " other\r\n"))
	if len(keys) != 2 || len(errs) != 0 || keys[0].Comment != "admin" {
		t.Fatalf("with a byte order mark: %d keys, errors %v; want both keys", len(keys), errs)
	}
	// A mark after the first line is not one: that line is refused.
	if keys, errs := parseAuthorizedKeys(strings.NewReader(testKey + " a\n\ufeff" + testKey + " b\n")); len(keys) != 1 || len(errs) != 1 {
		t.Fatalf("a mark on line 2: %d keys, errors %v; want 1 key and 1 error", len(keys), errs)
	}
}
