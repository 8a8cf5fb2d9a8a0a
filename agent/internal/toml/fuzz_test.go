package toml

import (
	"bytes"
	"errors"
	"os"
	"testing"
)

// FuzzUnmarshal is the differential test: whatever Unmarshal accepts,
// github.com/BurntSushi/toml accepts too and decodes to the same struct, with
// no key left undecoded. What Unmarshal rejects, it rejects with a
// *ParseError on a line the document has.
func FuzzUnmarshal(f *testing.F) {
	for _, tc := range decodeTests {
		f.Add([]byte(tc.in))
	}
	for _, tc := range errorTests {
		f.Add([]byte(tc.in))
	}
	for _, path := range seedFiles {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var got config
		err := Unmarshal(in, &got)
		if err == nil {
			sameAsBurntSushi(t, in, got)
			return
		}
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Line < 1 || pe.Line > 1+bytes.Count(in, []byte("\n")) {
			t.Fatalf("Unmarshal(%q) = %v, want a *ParseError on one of its lines", in, err)
		}
	})
}

// FuzzUnmarshalLines is the same differential test on documents built from in,
// three bytes a line: which header or key/value pair (config's keys, so that
// many documents are accepted), which value for it, which line ending. Byte
// mutations seldom keep a document valid; this explores what its tables mean:
// implied and repeated tables, inline tables, dotted keys, duplicates.
func FuzzUnmarshalLines(f *testing.F) {
	f.Add([]byte{9, 0, 0, 18, 1, 1, 3, 0, 2, 19, 2, 0, 4, 0, 0, 20, 1, 0})
	f.Add([]byte{6, 0, 0, 26, 2, 1, 5, 0, 0, 25, 3, 0, 7, 0, 1, 31, 2, 2})
	f.Add([]byte{33, 0, 0, 34, 4, 0, 45, 1, 1, 5, 0, 0, 37, 0, 0, 38, 1, 2, 0, 0, 0, 10, 4, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		doc := lines(in)
		var got config
		if err := Unmarshal(doc, &got); err == nil {
			sameAsBurntSushi(t, doc, got)
		}
	})
}

// lineShapes are headers and key/value pairs; a capital letter at the end
// stands for a value from that pool of values.
var lineShapes = []string{
	"[mqtt]", "[tunnel]", "[services]", "[ssh]", "[ssh . 'password_hashes']", "[extra]", "[extra.inner]",
	`[ "extra".inner.tags ]`, "[log]",
	"thing_name = S", "endpoint = S", "keepalive = D", "max_tunnels = I", "insecure_skip_verify = B",
	"ping_interval = D", "SSH = S", `"a b" = S`, "root = S", "listen = S", "accept_env = A",
	"password_hashes = M", "max_sessions = I", "i8 = I", "u16 = I", "i64 = I", "inner = T", "name = S",
	"on = B", "tags = M", "list = A", "wait = D", "services = M", "mqtt = T",
	// Dotted keys, at the top and in tables.
	"log.level = S", "ssh.password_hashes.root = S", "password_hashes.root = S", `password_hashes . 'a b' = S`,
	"inner.name = S", `"inner".tags.a = S`, "extra.inner.on = B", "tags.a = S", "services.SSH = S", "mqtt.endpoint = S",
	"extra.inner = T", "inner.tags = M", "ssh . listen = S", "extra.i8 = I",
}

var valuePools = map[byte][]string{
	'S': {`"a\tb\u00e9\U0001F600"`, `'C:\x'`, "\"\"\"\nx\\\n  y\"\"\"", "'''\n'q'''''", `""`, `"\"\\\b"`, "\"\"\"a\r\nb\"\"\"\"\""},
	'D': {`"1s"`, `'2m'`, `"""3h"""`, "'''\n4ms'''", "0", "0x0"},
	'I': {"0x7f", "-1_000", "0o17", "0b1", "+9", "-0", "65535"},
	'B': {"true", "false"},
	'A': {"[]", `["a", 'b',]`, "[\n  \"a\", # c\n\n]", `[ """x""" ]`},
	'M': {"{}", `{ root = "x", "a b" = 'y' }`, `{ 'SSH' = "builtin" }`, `{ a.b = "x" }`},
	'T': {"{}", `{ name = "n", tags = { a = "b" }, list = [] }`, `{ endpoint = "e", keepalive = "1s" }`, `{ on = true }`,
		`{ tags.a = "b", tags . "c d" = 'e', name = "n" }`, `{ inner.name = "n", inner.on = true }`},
}

var lineEnds = []string{"\n", "\r\n", " # c\n", "\n\n"}

func lines(in []byte) []byte {
	var doc bytes.Buffer
	for ; len(in) >= 3; in = in[3:] {
		line := lineShapes[int(in[0])%len(lineShapes)]
		if pool := valuePools[line[len(line)-1]]; pool != nil {
			line = line[:len(line)-1] + pool[int(in[1])%len(pool)]
		}
		doc.WriteString(line + lineEnds[int(in[2])%len(lineEnds)])
	}
	return doc.Bytes()
}
