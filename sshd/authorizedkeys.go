package sshd

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// keyOptions are the options of one authorized_keys line (sshd(8),
// "AUTHORIZED_KEYS FILE FORMAT"). Options porthole has no use for
// (no-X11-forwarding, no-user-rc, environment=, tunnel=, …) are parsed and
// ignored: the features they restrict do not exist here. A value sshd
// refuses (tunnel="x") makes the line unusable all the same.
type keyOptions struct {
	CertAuthority  bool
	Command        string // command=: forced command; HasCommand tells "" from absent
	HasCommand     bool
	From           []string // from=: patterns the client address must match
	Principals     []string // principals=: for cert-authority lines; nil without the option
	PermitOpen     []string // permitopen=: host:port pairs -L may reach (see permitEntry)
	PermitListen   []string // permitlisten=: [host:]port pairs -R may bind
	ExpiryTime     time.Time
	NoPortForward  bool
	NoPTY          bool
	NoAgentForward bool
	NoTouch        bool // no-touch-required, passed to x/crypto for sk keys
	VerifyRequired bool // verify-required: not supported, so a security key is refused
}

// authorizedKey is one parsed line.
type authorizedKey struct {
	Key        gossh.PublicKey
	Comment    string
	Options    keyOptions
	HasOptions bool // the line has options (a trusted user CA keys line must not)
	Line       int  // its number in the file
}

// Bounds on reading authorized_keys and trusted user CA keys files, which
// are read at every login.
const (
	// maxKeysLine is the longest line read. A longer line is skipped (with
	// an error naming its number, never its content) and the lines after
	// it are read. An RSA key of 16384 bits, the largest OpenSSH makes, is
	// a line of under 3 KiB; OpenSSH itself long refused lines over 8 KiB.
	maxKeysLine = 1 << 20

	// maxKeysFile is how much of one file is read: 4 MiB, some 5,000
	// RSA-4096 or 40,000 ed25519 lines, far beyond what a device is given,
	// while a file that grew by mistake cannot take a small device's memory
	// at every login. Lines after the limit are ignored, with an error.
	maxKeysFile = 4 << 20
)

// errLineTooLong and errFileTooLarge are wrapped by parseAuthorizedKeys'
// errors for a line over maxKeysLine and for data beyond maxKeysFile.
// Their texts spell the limits out (TestSentinelTexts checks them against the
// constants): fmt.Errorf, like errors.New, would be code run at start.
var (
	errLineTooLong  error = &errorString{"line longer than 1048576 bytes"}
	errFileTooLarge error = &errorString{"more than 4194304 bytes; the rest is ignored"}
)

// lineError is an error about one line of an authorized_keys file. Neither
// it nor the error it wraps quotes the line, since the server logs these
// errors, and a file the user cannot make lead elsewhere
// (/etc/porthole/authorized_keys, 0600) is read with the server's
// permissions, root's, which the log's readers may lack (loadKeysFile; a
// user's ~/.ssh/authorized_keys, which could be a link, is read as the
// user). They name the line's number and the kind of problem.
type lineError struct {
	_    [0]func() // not comparable: no equality function in the binary (docs/size.md)
	Line int
	Err  error
}

func (e *lineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *lineError) Unwrap() error { return e.Err }

// parseAuthorizedKeys parses authorized_keys data. Lines that do not parse,
// or are longer than maxKeysLine, are returned as *lineError and otherwise
// skipped, as sshd does. At most maxKeysFile bytes are read: a line that
// does not end within them is dropped, with an error wrapping
// errFileTooLarge.
func parseAuthorizedKeys(r io.Reader) ([]authorizedKey, []error) {
	var keys []authorizedKey
	var errs []error
	stop, truncated, err := eachLine(r, maxKeysFile, maxKeysLine, func(n int, line []byte, tooLong bool) {
		if tooLong {
			errs = append(errs, &lineError{Line: n, Err: errLineTooLong})
			return
		}
		text := string(line)
		if n == 1 {
			// A Windows editor's UTF-8 byte order mark: the first key,
			// often the administrator's, would be refused for it.
			text = strings.TrimPrefix(text, "\uFEFF")
		}
		text = strings.TrimSpace(text)
		if text == "" || text[0] == '#' {
			return
		}
		k, err := parseAuthorizedKeyLine(text)
		if err != nil {
			errs = append(errs, &lineError{Line: n, Err: err})
			return
		}
		k.Line = n
		keys = append(keys, k)
	})
	switch {
	case truncated:
		errs = append(errs, &lineError{Line: stop, Err: errFileTooLarge})
	case err != nil:
		errs = append(errs, &lineError{Line: stop, Err: err})
	}
	return keys, errs
}

// eachLine calls fn with each line of r (numbered from 1, without its
// newline) until EOF, reading at most maxFile bytes: a line longer than
// maxLine is passed with tooLong set and not kept whole, and a line that does
// not end within maxFile is not passed (truncated). stop is the number of the
// line where reading stopped on truncation or a read error.
func eachLine(r io.Reader, maxFile int64, maxLine int, fn func(n int, line []byte, tooLong bool)) (stop int, truncated bool, err error) {
	br := bufio.NewReader(io.LimitReader(r, maxFile+1))
	var buf []byte
	var read int64
	for n := 1; ; n++ {
		line, size, tooLong, err := readLine(br, buf[:0], maxLine)
		buf = line
		if err == io.EOF {
			return n, false, nil
		}
		if read += int64(size); read > maxFile {
			return n, true, nil
		}
		if err != nil {
			return n, false, err
		}
		fn(n, line, tooLong)
	}
}

// readLine reads one line into buf and returns it without its newline,
// along with the number of bytes consumed. A line longer than limit is read
// to its end but not kept: tooLong is set and line holds at most limit bytes
// of it plus one buffer's worth. err is io.EOF only when there was no line
// left; a last line without a newline is a line.
func readLine(br *bufio.Reader, buf []byte, limit int) (line []byte, size int, tooLong bool, err error) {
	line = buf
	for {
		chunk, err := br.ReadSlice('\n')
		size += len(chunk)
		if !tooLong {
			line = append(line, chunk...)
			if len(bytes.TrimSuffix(line, []byte("\n"))) > limit {
				tooLong = true
			}
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF && size > 0:
			err = nil
		}
		return bytes.TrimSuffix(line, []byte("\n")), size, tooLong, err
	}
}

// isKeyType reports whether s names an SSH public key (or certificate) type.
func isKeyType(s string) bool {
	switch {
	case strings.HasPrefix(s, "ssh-"), strings.HasPrefix(s, "ecdsa-sha2-"),
		strings.HasPrefix(s, "sk-ssh-"), strings.HasPrefix(s, "sk-ecdsa-"),
		strings.HasPrefix(s, "rsa-sha2-"):
		return !strings.Contains(s, "=")
	}
	return false
}

// parseAuthorizedKeyLine parses "[options] type base64 [comment]".
func parseAuthorizedKeyLine(line string) (k authorizedKey, err error) {
	line = strings.TrimSpace(line)
	first, _, _ := strings.Cut(line, " ")
	first, _, _ = strings.Cut(first, "\t")
	if !isKeyType(first) {
		opts, rest, err := splitOptions(line)
		if err != nil {
			return k, err
		}
		if k.Options, err = parseKeyOptions(opts); err != nil {
			return k, err
		}
		k.HasOptions = true
		line = strings.TrimLeft(rest, " \t")
	}
	fields := strings.Fields(line)
	if len(fields) < 2 {
		return k, fmt.Errorf("want key type and key, got %d fields", len(fields))
	}
	blob, err := base64.StdEncoding.DecodeString(fields[1])
	if err != nil {
		return k, wrapErr("key data", err) // names an offset only
	}
	key, err := gossh.ParsePublicKey(blob)
	if err != nil {
		// x/crypto's errors quote what they found in the data.
		return k, errors.New("key data: not an SSH public key")
	}
	if key.Type() != fields[0] {
		// key.Type() is one x/crypto knows; fields[0] could be anything.
		return k, errors.New("key type does not match the key data (" + key.Type() + ")")
	}
	k.Key = key
	if len(fields) > 2 {
		k.Comment = strings.Join(fields[2:], " ")
	}
	return k, nil
}

// splitOptions splits the leading options of a line into their raw texts and
// returns the rest of the line. Commas and spaces inside double quotes belong
// to the value; \" is a quote inside a value. An empty option (",,", or a
// comma before the space ending the options: "no-pty, ssh-ed25519 …") is
// skipped, as sshd's sshauthopt_parse skips it.
func splitOptions(line string) (opts []string, rest string, err error) {
	var cur strings.Builder
	inQuote := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\\' && inQuote && i+1 < len(line) && line[i+1] == '"':
			cur.WriteString(`\"`)
			i++
		case c == '"':
			inQuote = !inQuote
			cur.WriteByte(c)
		case !inQuote && c == ',':
			if cur.Len() > 0 {
				opts = append(opts, cur.String())
			}
			cur.Reset()
		case !inQuote && (c == ' ' || c == '\t'):
			if cur.Len() > 0 {
				opts = append(opts, cur.String())
			}
			return opts, line[i:], nil
		default:
			cur.WriteByte(c)
		}
	}
	if inQuote {
		return nil, "", errors.New("unterminated quote in options")
	}
	return nil, "", errors.New("options without a key")
}

// optionValue splits name="value" into its lower-cased name and unquoted value.
func optionValue(opt string) (name, value string, hasValue bool, err error) {
	name, v, ok := strings.Cut(opt, "=")
	name = strings.ToLower(name)
	if !ok {
		return name, "", false, nil
	}
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return name, "", true, errors.New("option " + name + ": value must be double-quoted")
	}
	return name, strings.ReplaceAll(v[1:len(v)-1], `\"`, `"`), true, nil
}

// keyOption tells whether parseKeyOptions knows the option name, and whether
// it takes a value.
func keyOption(name string) (takesValue, known bool) {
	for _, o := range keyOptionTable {
		if o.name == name {
			return o.takesValue, true
		}
	}
	return false, false
}

// keyOptionTable is what keyOption knows: a table in data, where a switch
// on the names was 1.4 KB of code.
var keyOptionTable = [...]struct {
	name       string
	takesValue bool
}{
	{"command", true}, {"from", true}, {"principals", true}, {"permitopen", true},
	{"permitlisten", true}, {"expiry-time", true}, {"environment", true}, {"tunnel", true},
	{"cert-authority", false}, {"restrict", false}, {"pty", false}, {"no-pty", false},
	{"port-forwarding", false}, {"no-port-forwarding", false},
	{"agent-forwarding", false}, {"no-agent-forwarding", false},
	{"x11-forwarding", false}, {"no-x11-forwarding", false},
	{"user-rc", false}, {"no-user-rc", false}, {"touch-required", false},
	{"no-touch-required", false}, {"verify-required", false}, {"no-verify-required", false},
}

// errUnknownOption lists the options there are rather than naming the one
// found, which is text of the file (see lineError).
var errUnknownOption error = &errorString{"unknown option (options are " + keyOptionNames + ")"}

// keyOptionNames are the names keyOption knows, for errUnknownOption.
const keyOptionNames = "agent-forwarding, cert-authority, command, environment, expiry-time, from, " +
	"no-agent-forwarding, no-port-forwarding, no-pty, no-touch-required, no-user-rc, no-verify-required, no-x11-forwarding, " +
	"permitlisten, permitopen, port-forwarding, principals, pty, restrict, touch-required, tunnel, user-rc, verify-required, x11-forwarding"

// parseKeyOptions interprets raw options. Unknown options make the line
// invalid, as in sshd: a restriction the server does not understand must not
// be dropped silently. Errors name an option only once it is known to be one.
func parseKeyOptions(raw []string) (o keyOptions, err error) {
	// restrict and no-pty (and the like) take away, pty, port-forwarding
	// and agent-forwarding give back, in the order written, as sshd
	// applies them: the last one wins, so "pty,restrict" has no pty and
	// "no-pty,pty" (or "restrict,no-pty,pty") has one.
	var hasFrom, hasPrincipals, hasExpiry bool
	for _, opt := range raw {
		name, val, hasVal, err := optionValue(opt)
		takesVal, known := keyOption(name)
		switch {
		case !known:
			return o, errUnknownOption
		case err != nil:
			return o, err
		case hasVal && !takesVal:
			return o, errors.New("option " + name + " takes no value")
		case !hasVal && takesVal:
			return o, errors.New("option " + name + " needs a value")
		}
		no := strings.HasPrefix(name, "no-") // no-pty and the like
		switch name {
		case "cert-authority":
			o.CertAuthority = true
		case "command":
			// sshd refuses a line with two of command=, from= or
			// principals=: which one holds would be a guess.
			if o.HasCommand {
				return o, errors.New(`multiple "command" options`)
			}
			o.Command, o.HasCommand = val, true
		case "from":
			if hasFrom {
				return o, errors.New(`multiple "from" options`)
			}
			hasFrom = true
			o.From = splitList(val)
			if err := checkFromList(o.From); err != nil {
				return o, err
			}
		case "principals":
			if hasPrincipals {
				return o, errors.New(`multiple "principals" options`)
			}
			hasPrincipals = true
			// Never nil: principals="" allows no principal, where no
			// principals= at all allows the login name. As in sshd
			// (match_list), an entry is matched as written (" root"
			// is not root), and the list ends at its first empty entry
			// and after 40 entries: sshd refuses root for
			// principals="other,,root", which this took.
			o.Principals = []string{}
			for _, p := range splitList(val) {
				if p == "" || len(o.Principals) == 40 {
					break
				}
				o.Principals = append(o.Principals, p)
			}
		case "permitopen":
			v, err := permitEntry(val, false)
			if err != nil {
				return o, wrapErr("option permitopen", err)
			}
			o.PermitOpen = append(o.PermitOpen, v)
		case "permitlisten":
			v, err := permitEntry(val, true)
			if err != nil {
				return o, wrapErr("option permitlisten", err)
			}
			o.PermitListen = append(o.PermitListen, v)
		case "expiry-time":
			t, err := parseExpiry(val)
			if err != nil {
				return o, err
			}
			// The earliest of several wins, as in sshd.
			if !hasExpiry || t.Before(o.ExpiryTime) {
				o.ExpiryTime = t
			}
			hasExpiry = true
		case "no-port-forwarding", "port-forwarding":
			o.NoPortForward = no
		case "no-pty", "pty":
			o.NoPTY = no
		case "no-agent-forwarding", "agent-forwarding":
			o.NoAgentForward = no
		case "tunnel":
			if !validTunnel(val) {
				return o, errors.New("option tunnel: invalid tun device") // sshd's words
			}
		case "restrict":
			o.NoPTY, o.NoPortForward, o.NoAgentForward = true, true, true
		case "no-touch-required", "touch-required":
			o.NoTouch = no
		case "no-verify-required", "verify-required":
			o.VerifyRequired = !no
		}
		// environment=, (no-)x11-forwarding and (no-)user-rc are parsed and
		// ignored: what they set or restrict does not exist here (see
		// keyOptions). They have no case: one of five names was 268 B of code.
	}
	return o, nil
}

// validTunnel reports whether v is a tun device as sshd's a2tun reads it:
// "any" in any case, or a number from 0 to 2147483645 as strtonum reads it
// (leading white space and a sign allowed, nothing after it). sshd refuses
// the line for another value; porthole has no tun forwarding and ignores a
// valid one.
func validTunnel(v string) bool {
	if strings.EqualFold(v, "any") {
		return true
	}
	n, err := strconv.ParseInt(strings.TrimLeft(v, " \t\n\v\f\r"), 10, 64)
	return err == nil && n >= 0 && n <= 0x7ffffffd
}

// errFromHostBits refuses a from= (or source-address) CIDR block with bits
// set past its prefix length, "10.1.2.3/8": sshd takes it for an error
// (addrmatch.c, "inconsistent mask length") and refuses the key, where
// masking it would allow a whole network the writer may not have meant.
var errFromHostBits error = &errorString{"option from: a CIDR block has bits set past its prefix length"}

// checkFromList refuses what sshd's from= refuses: an empty entry and a
// CIDR block with host bits set. The error does not quote the entry (see
// lineError).
func checkFromList(patterns []string) error {
	for _, p := range patterns {
		p = strings.TrimPrefix(p, "!")
		if p == "" {
			return errors.New("option from: empty pattern")
		}
		pfx, ok, err := parseCIDR(p)
		if err != nil {
			return err
		}
		if ok && pfx != pfx.Masked() {
			return errFromHostBits
		}
	}
	return nil
}

// parseCIDR reads "addr/bits" as sshd's addr_pton_cidr does (the address by
// parseAddr, bits by strtoul, so "/08" is 8): ok is false for an entry that
// is not one (a wildcard pattern), err set for a length the address family
// cannot have.
func parseCIDR(p string) (netip.Prefix, bool, error) {
	a, b, _ := strings.Cut(p, "/")
	addr, err := parseAddr(a)
	if err != nil || b == "" || b[0] < '0' || b[0] > '9' { // sshd's test before strtoul
		return netip.Prefix{}, false, nil
	}
	n, err := strconv.Atoi(b)
	if err != nil || n > 128 {
		return netip.Prefix{}, false, nil // sshd: a parse error, so a pattern
	}
	if n > addr.BitLen() {
		return netip.Prefix{}, false, errors.New("option from: a CIDR block has a mask length its address family cannot have")
	}
	return netip.PrefixFrom(addr, n), true, nil
}

// errNotAddr is parseAddr's error. It does not quote the entry: see lineError.
var errNotAddr error = &errorString{"not an IP address"}

// parseAddr reads an address of from= or source-address as sshd's addr_pton
// does, with getaddrinfo(3) and AI_NUMERICHOST: an IPv6 address as
// inet_pton(3) reads it (netip), an IPv4 address as inet_aton(3): one to four
// numbers, each decimal, octal with a leading 0 or hexadecimal with 0x, the
// last filling the bytes left. So 127.1, 127.000.000.001, 0177.0.0.1 and
// 2130706433 are 127.0.0.1, as for OpenSSH 9.2's sshd (and ssh-keygen, which
// puts them in certificates as written), and 0127.0.0.1 is 87.0.0.1. Read as
// netip reads them, they were wildcard patterns that matched nothing: "127.1"
// allowed no one, and "!127.1,*" let 127.0.0.1 in.
func parseAddr(s string) (netip.Addr, error) {
	if strings.IndexByte(s, ':') >= 0 {
		return netip.ParseAddr(s)
	}
	var parts [4]uint64
	n := 0
	for {
		if n == len(parts) || s == "" || s[0] < '0' || s[0] > '9' {
			return netip.Addr{}, errNotAddr
		}
		base, digits := uint64(10), s
		if len(s) > 1 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
			base, digits = 16, s[2:]
		} else if s[0] == '0' {
			base = 8
		}
		var v uint64
		i := 0
		for ; i < len(digits); i++ {
			d := uint64(36) // no digit
			switch c := digits[i] | 0x20; {
			case '0' <= digits[i] && digits[i] <= '9':
				d = uint64(digits[i] - '0')
			case 'a' <= c && c <= 'f':
				d = uint64(c-'a') + 10
			}
			if d >= base {
				break
			}
			if v = v*base + d; v > 0xffffffff {
				return netip.Addr{}, errNotAddr
			}
		}
		if i == 0 { // "0x" alone: strtoul reads the 0, and the x is left over
			return netip.Addr{}, errNotAddr
		}
		parts[n], n, s = v, n+1, digits[i:]
		if s == "" {
			break
		}
		if s[0] != '.' {
			return netip.Addr{}, errNotAddr
		}
		s = s[1:]
	}
	// Every number but the last is a byte; the last fills the bytes left.
	last := parts[n-1]
	if last > 0xffffffff>>(8*(n-1)) {
		return netip.Addr{}, errNotAddr
	}
	for i := range n - 1 {
		if parts[i] > 0xff {
			return netip.Addr{}, errNotAddr
		}
		last |= parts[i] << (24 - 8*i)
	}
	return netip.AddrFrom4([4]byte{byte(last >> 24), byte(last >> 16), byte(last >> 8), byte(last)}), nil
}

// splitList splits a from=, principals= or source-address list at its
// commas, as sshd does (strsep in addr_match_list and
// addr_match_cidr_list, match_list): nothing is trimmed, so an entry with a
// space matches nothing ("10.0.0.1, 127.0.0.1" does not allow 127.0.0.1),
// and empty entries are kept (an empty from= or source-address entry makes
// the whole list invalid).
func splitList(v string) []string {
	return strings.Split(v, ",")
}

// errBadExpiry does not quote the value: see lineError.
var errBadExpiry error = &errorString{"option expiry-time: want YYYYMMDD[HHMM[SS]][Z|UTC]"}

// parseExpiry parses expiry-time's YYYYMMDD[HHMM[SS]], in UTC when suffixed
// with Z or UTC (in any case) and otherwise in the server's local time zone,
// like sshd's parse_absolute_time.
func parseExpiry(v string) (time.Time, error) {
	loc := localZone()
	for _, utc := range [...]string{"Z", "UTC"} {
		if n := len(v) - len(utc); n > 0 && strings.EqualFold(v[n:], utc) {
			loc = time.UTC
			v = v[:n]
			break
		}
	}
	var layout string
	switch len(v) {
	case 8:
		layout = "20060102"
	case 12:
		layout = "200601021504"
	case 14:
		layout = "20060102150405"
	default:
		return time.Time{}, errBadExpiry
	}
	t, err := time.ParseInLocation(layout, v, loc)
	if err != nil {
		return time.Time{}, errBadExpiry // time's error quotes v
	}
	return t, nil
}

// localZone is the server's local time zone as the libc sees it: sshd reads
// expiry-time with mktime(3) and sftp-server dates "ls -l" lines with
// localtime(3). It is time.Local except where TZ holds a POSIX rule
// (TZ=CET-1CEST,M3.5.0,M10.5.0/3, as devices without zone files set it, and
// session.go passes on): Go reads TZ only as a zone file's name and, finding
// none, silently takes UTC. The rule is then read by wrapping it as the footer
// of a TZif file with no transitions, which Go applies to all times. time.Local
// itself is left alone: the rest of the process may rely on it.
var localZone = sync.OnceValue(func() *time.Location { return zoneFromTZ(os.Getenv("TZ"), time.Local) })

// zoneFromTZ is localZone for the value tz of TZ and Go's reading local of it.
func zoneFromTZ(tz string, local *time.Location) *time.Location {
	// Go fell back to UTC (its Local is then named so) for a name it found no
	// file of; "", ":..." and "/..." it read as libc does, or as UTC.
	if tz == "" || tz[0] == ':' || tz[0] == '/' || tz == "UTC" || local.String() != "UTC" {
		return local
	}
	// A TZif version 2 file (RFC 8536): a version 1 header and data block,
	// the same again for version 2 (no transitions, no leap seconds, one
	// local time type: offset 0, not DST, the empty abbreviation), then the
	// footer with the rule.
	// The 15 reserved bytes are written out: strings.Repeat would bring 1.5 KB
	// of code into the device binary for them.
	header := "TZif2" + "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" + // magic, version, reserved
		"\x00\x00\x00\x00" + "\x00\x00\x00\x00" + "\x00\x00\x00\x00" + // isutcnt, isstdcnt, leapcnt
		"\x00\x00\x00\x00" + "\x00\x00\x00\x01" + "\x00\x00\x00\x01" // timecnt, typecnt, charcnt
	block := "\x00\x00\x00\x00" + "\x00" + "\x00" + // ttinfo: utoff, isdst, desigidx
		"\x00" // the abbreviations
	data := header + block + header + block + "\n" + tz + "\n"
	loc, err := time.LoadLocationFromTZData(tz, []byte(data))
	if err != nil {
		return local
	}
	return loc
}

// errPermitPort refuses a permitopen= or permitlisten= port that is not one,
// as sshd does ("invalid permission port"): the key is not usable.
var errPermitPort error = &errorString{"port must be *, 1-65535 or a service name"}

// permitEntry checks a permitopen= (or, with bare, permitlisten=) value and
// returns it as "host:port", the host out of its brackets and the port as a
// decimal number: sshd reads the port with a2port, so "022" and "ssh" are
// port 22 there too. A permitlisten= value without a host (a bare port) is
// kept as it is: any host. entryHostPort splits the entry again.
func permitEntry(val string, bare bool) (string, error) {
	if bare && !strings.Contains(val, ":") {
		return permitPort(val)
	}
	host, port, err := splitHostPortPattern(val)
	if err != nil {
		return "", err
	}
	if port, err = permitPort(port); err != nil {
		return "", err
	}
	return host + ":" + port, nil
}

// permitPort is a permit list port as a decimal number, or "*".
func permitPort(p string) (string, error) {
	if p == "*" {
		return p, nil
	}
	if p != "" && strings.Trim(p, "0123456789") == "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return "", errPermitPort
		}
		return strconv.FormatUint(n, 10), nil
	}
	if p == "" || strings.Trim(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+") != "" {
		return "", errPermitPort
	}
	n, err := net.LookupPort("tcp", p)
	if err != nil || n <= 0 {
		return "", errPermitPort
	}
	return strconv.Itoa(n), nil
}

// splitHostPortPattern splits a permitopen value "host:port", "[v6]:port" or
// with port "*"; sshd's hpdelim2 also takes a "/" for the colon ("host/port",
// "[v6]/port").
func splitHostPortPattern(v string) (host, port string, err error) {
	// The host may be empty (":8080"), as sshd's hpdelim2 takes it: a
	// permitlisten= entry for the "" an ssh -R "*:port" or ":port" asks for.
	// A host in brackets ends at the first "]", and ":" or "/" must follow
	// it, as in hpdelim2; other brackets are part of the host, as in sshd's
	// cleanhostname ("]:22" is the host "]"). A value with a colon outside
	// brackets is split at its last colon, as earlier builds split every
	// value: an unbracketed IPv6 address ("fd00::1:80"), which sshd refuses,
	// and "10.0.0.0/8:80", which matches no request, keep the meaning they
	// had; "/" splits the others.
	i := strings.LastIndexByte(v, ':')
	if strings.HasPrefix(v, "[") {
		i = strings.IndexByte(v, ']') + 1
		if i == 0 || i == len(v) || v[i] != ':' && v[i] != '/' {
			i = -1
		}
	} else if i < 0 {
		i = strings.IndexByte(v, '/')
	}
	if i < 0 || i == len(v)-1 {
		return "", "", errors.New("not host:port") // without v: see lineError
	}
	host, port = v[:i], v[i+1:]
	if v[0] == '[' {
		host = host[1 : i-1]
	}
	return host, port, nil
}

// entryHostPort splits an entry of a permit list, as permitEntry wrote it,
// at its last colon: "host:port" (the host as read, out of its brackets, and
// it may hold colons: "::1:22"; the port holds none), or a bare port for any
// host.
func entryHostPort(e string) (host, port string) {
	i := strings.LastIndexByte(e, ':')
	if i < 0 {
		return "*", e
	}
	return e[:i], e[i+1:]
}

// matchPattern matches s against an sshd-style pattern with * and ? (each a
// byte). Greedily, in one pass: each * first takes nothing, and when the rest
// fails to match, the last * takes one byte more and the rest is tried from
// there. Only the last * needs stretching: whatever an earlier * could take
// more, the last can take instead. So the cost is at most the product of
// the two lengths, where trying every length for every * (as sshd's match.c
// and earlier builds did) costs the subject's length to the power of the
// number of *, and both are the key owner's to choose (permitlisten=, from=).
func matchPattern(s, pat string) bool {
	i, j := 0, 0
	star, next := -1, 0 // the pattern after the last *, and where it resumes in s
	for i < len(s) {
		switch {
		case j < len(pat) && pat[j] == '*':
			j++
			star, next = j, i
		case j < len(pat) && (pat[j] == '?' || pat[j] == s[i]):
			i, j = i+1, j+1
		case star >= 0:
			next++
			i, j = next, star
		default:
			return false
		}
	}
	return strings.TrimLeft(pat[j:], "*") == ""
}

// matchFrom applies a from= pattern list to the client's address: a negated
// match (!pattern) refuses, otherwise one positive match is needed. As in
// sshd (addr_match_list), an entry that is an address or a CIDR block is
// compared as one, however it is spelt (2001:DB8::1, 2001:0db8::1 and
// 2001:db8:0:0:0:0:0:1 are one address); any other entry is a wildcard
// pattern matched, without regard to case, against the address's text.
// There is no DNS lookup, so host name patterns never match. A client without
// an IP address (a tunnel stream) never matches.
func matchFrom(remote netip.Addr, patterns []string) bool {
	if !remote.IsValid() {
		return false
	}
	remote = remote.Unmap()
	ip, bare := remote.String(), remote.WithZone("")
	matched := false
	for _, p := range patterns {
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(p, "!")
		var m bool
		if pfx, ok, err := parseCIDR(p); err != nil {
			return false
		} else if ok {
			if pfx != pfx.Masked() {
				return false // invalid, as in sshd: see errFromHostBits
			}
			m = pfx.Contains(bare)
		} else if a, err := parseAddr(p); err == nil {
			m = a == remote || a == bare
		} else {
			m = matchPattern(ip, strings.ToLower(p))
		}
		if m && neg {
			return false
		}
		matched = matched || m
	}
	return matched
}

// keysEqual compares public keys by their wire form.
func keysEqual(a, b gossh.PublicKey) bool {
	return bytes.Equal(a.Marshal(), b.Marshal())
}
