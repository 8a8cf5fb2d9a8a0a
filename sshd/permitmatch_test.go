package sshd

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

// permitReference reads a permitopen= (or, with listen, permitlisten=) value
// as sshd's auth-options.c does (handle_permit: hpdelim2, cleanhostname,
// a2port), written out plainly: a permitlisten= value without a colon is "*:"
// and it; a value that begins with "[" is a host in brackets, closed by the
// first "]", then ":" or "/" and the port; any other value is split at its
// first ":" or "/". Brackets around the whole host are taken off, others are
// part of it. The port is "*" (any, given as -1), a number from 1 to 65535
// or a service name. ok is false for what sshd refuses (porthole reads some of
// that: see splitHostPortPattern).
func permitReference(value string, listen bool) (host string, port int, ok bool) {
	if listen && !strings.Contains(value, ":") {
		value = "*:" + value
	}
	var p string
	if strings.HasPrefix(value, "[") {
		end := strings.IndexByte(value, ']')
		if end < 0 || end+1 == len(value) || value[end+1] != ':' && value[end+1] != '/' {
			return "", 0, false
		}
		host, p = value[:end+1], value[end+2:]
	} else if i := strings.IndexAny(value, ":/"); i >= 0 {
		host, p = value[:i], value[i+1:]
	} else {
		return "", 0, false
	}
	if len(host) >= 2 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	if p == "*" {
		return host, -1, true
	}
	n, err := net.LookupPort("tcp", p)
	if err != nil || n < 1 || n > 65535 {
		return "", 0, false
	}
	return host, n, true
}

// permitRead is how porthole read value (permitEntry's reading, before the
// entry is written): the host, and the port as permitReference gives it.
func permitRead(value string, listen bool) (host string, port int) {
	host, p := "*", value
	if !listen || strings.Contains(value, ":") {
		host, p, _ = splitHostPortPattern(value)
	}
	if p == "*" {
		return host, -1
	}
	n, _ := net.LookupPort("tcp", p)
	return host, n
}

// permitReferenceMatch is whether a request for host and port passes the
// value as permitReference reads it: permitopen='s host is "*" or the
// requested one as it is spelt; permitlisten='s is a pattern the requested
// host, in lower case, must match (sshd's remote_open_match).
func permitReferenceMatch(refHost string, refPort int, listen bool, host string, port uint32) bool {
	if refPort != -1 && uint32(refPort) != port {
		return false
	}
	if listen {
		return matchPatternRegexp(strings.ToLower(host), refHost)
	}
	return refHost == "*" || refHost == host
}

// TestPermitBrackets: a permitopen= or permitlisten= host in brackets ends
// at its first "]", which ":" or "/" must follow, and only a pair of brackets
// around the whole host is taken off, as sshd reads them (hpdelim2,
// cleanhostname); a line sshd refuses is refused. Before, a "[" at the start
// and a "]" at the end were each taken off on their own, and again when the
// entry was matched: "]:22" allowed the host "" and "[[h]:22" the host "h".
func TestPermitBrackets(t *testing.T) {
	for _, tc := range []struct {
		opt     string
		allowed []string // host:port requests the line allows
		refused []string // and some it does not
	}{
		{opt: `permitopen="[::1]:22"`, allowed: []string{"::1:22"}, refused: []string{"[::1]:22", "::1:23"}},
		{opt: `permitopen="[::1]/22"`, allowed: []string{"::1:22"}},
		{opt: `permitopen="fd00::1:22"`, allowed: []string{"fd00::1:22"}},
		{opt: `permitopen="]:22"`, allowed: []string{"]:22"}, refused: []string{":22"}},
		{opt: `permitopen="h]:22"`, allowed: []string{"h]:22"}, refused: []string{"h:22"}},
		{opt: `permitopen="[/]/22"`, allowed: []string{"/:22"}},
		{opt: `permitopen="[[h]:22"`, allowed: []string{"[h:22"}, refused: []string{"h:22"}},
		{opt: `permitopen="[]:22"`, allowed: []string{":22"}},
		{opt: `permitopen="[h:22"`},
		{opt: `permitopen="[h]x:22"`},
		{opt: `permitopen="[h]"`},
		{opt: `permitlisten="[::1]:8080"`, allowed: []string{"::1:8080"}, refused: []string{"::2:8080"}},
		{opt: `permitlisten="]:8080"`, allowed: []string{"]:8080"}, refused: []string{":8080"}},
		{opt: `permitlisten="[[*]:8080"`, allowed: []string{"[h:8080"}, refused: []string{"h:8080"}},
		{opt: `permitlisten="[h:8080"`},
	} {
		o, err := parseKeyOptions([]string{tc.opt})
		if tc.allowed == nil {
			if err == nil {
				t.Errorf("%s accepted (as %q %q); sshd refuses it", tc.opt, o.PermitOpen, o.PermitListen)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.opt, err)
			continue
		}
		match := func(hostPort string) bool {
			i := strings.LastIndexByte(hostPort, ':')
			port, _ := strconv.Atoi(hostPort[i+1:])
			if o.PermitListen != nil {
				return permitListenMatch(o.PermitListen, hostPort[:i], uint32(port))
			}
			return permitOpenMatch(o.PermitOpen, hostPort[:i], uint32(port))
		}
		for _, r := range tc.allowed {
			if !match(r) {
				t.Errorf("%s (kept as %q %q) refuses %s", tc.opt, o.PermitOpen, o.PermitListen, r)
			}
		}
		for _, r := range tc.refused {
			if match(r) {
				t.Errorf("%s (kept as %q %q) allows %s", tc.opt, o.PermitOpen, o.PermitListen, r)
			}
		}
	}
}

var permitMatchSeeds = []struct {
	value  string
	listen bool
	host   string
	port   uint32
}{
	{"localhost:22", false, "localhost", 22},
	{"localhost:ssh", false, "localhost", 22},
	{"localhost:0022", false, "localhost", 22},
	{"[::1]:*", false, "::1", 8080},
	{"[::1]/80", false, "::1", 80},
	{"*:80", false, "example.com", 80},
	{"fd00::1:80", false, "fd00::1", 80},
	{"10.0.0.0/8:80", false, "10.0.0.0/8", 80},
	{"localhost/80", false, "localhost", 80},
	{":80", false, "", 80},
	{"[abc]:80", false, "abc", 80},
	{"8080", true, "LocalHost", 8080},
	{"ssh", true, "", 22},
	{"localhost:8080", true, "LocalHost", 8080},
	{"127.0.0.*:8080", true, "127.0.1.1", 8080},
	{"127.0.0.?:*", true, "127.0.0.1", 0},
	{":8080", true, "", 8080},
	{"[::1]/8080", true, "::1", 8080},
	{"*.*.example.com:443", true, "a.b.example.com", 443},
}

// FuzzPermitMatch: a permitopen= or permitlisten= value that sshd reads,
// porthole reads (permitEntry) as the same host and port; and whatever value
// porthole reads allows a forward (permitOpenMatch, permitListenMatch) exactly
// when that host and port do (permitReferenceMatch), for the fuzzed request and
// for the value's own host, which a random request seldom hits: the entry the
// value is kept as means at match time what the value meant when it was read.
func FuzzPermitMatch(f *testing.F) {
	for _, s := range permitMatchSeeds {
		f.Add(s.value, s.listen, s.host, s.port)
	}
	f.Fuzz(func(t *testing.T, value string, listen bool, host string, port uint32) {
		if len(value) > 256 || len(host) > 256 || strings.Contains(value, "\n") {
			return // an authorized_keys line holds no newline
		}
		entry, err := permitEntry(value, listen)
		refHost, refPort, sshdReads := permitReference(value, listen)
		if err != nil {
			if sshdReads {
				t.Errorf("permitEntry(%q, %v): %v; sshd reads it as host %q, port %d", value, listen, err, refHost, refPort)
			}
			return
		}
		readHost, readPort := permitRead(value, listen)
		if sshdReads && (readHost != refHost || readPort != refPort) {
			t.Errorf("permitEntry(%q, %v) read host %q, port %d; sshd reads host %q, port %d", value, listen, readHost, readPort, refHost, refPort)
		}
		match := permitOpenMatch
		if listen {
			match = permitListenMatch
		}
		requests := []struct {
			host string
			port uint32
		}{{host, port}, {readHost, port}, {readHost, uint32(readPort)}}
		for _, r := range requests {
			if got, want := match([]string{entry}, r.host, r.port), permitReferenceMatch(readHost, readPort, listen, r.host, r.port); got != want {
				t.Errorf("value %q (listen %v, kept as %q), request %q port %d: match = %v, want %v (read as host %q, port %d)",
					value, listen, entry, r.host, r.port, got, want, readHost, readPort)
			}
		}
	})
}
