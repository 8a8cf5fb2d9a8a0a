package main

import (
	"strings"
	"testing"
)

func TestSymbolPackage(t *testing.T) {
	for _, tc := range []struct{ sym, want string }{
		{"crypto/tls.(*Conn).readRecordOrCCS", "crypto/tls"},
		{"github.com/porthole-iot/porthole/agent.(*Config).Validate", "github.com/porthole-iot/porthole/agent"},
		{"vendor/golang.org/x/net/idna.idnaValues", "vendor/golang.org/x/net/idna"},
		{"type:*github.com/gliderlabs/ssh.Server", "github.com/gliderlabs/ssh"},
		{"go:itab.*os.File,io.Reader", "os"},
		{"runtime.mallocgc", "runtime"},
		{"go:func.*", "(runtime tables)"},
		{"runtime.findfunctab", "(runtime tables)"},
		{"unicode.map.init.2", "unicode"},
		{"slices.Sort[go.shape.int]", "slices"},
		{"type:map[string]int", "(types)"},
		{"gopkg.in/yaml%2ev3.Marshal", "gopkg.in/yaml%2ev3"},
	} {
		if got := symbolPackage(tc.sym); got != tc.want {
			t.Errorf("symbolPackage(%q) = %q, want %q", tc.sym, got, tc.want)
		}
	}
}

func TestPackageSizes(t *testing.T) {
	nm := `  10 300 T crypto/tls.(*Conn).Read
  20 100 T crypto/tls.init
  30 250 D runtime.mheap_
  40 0 T runtime.text
  50 1000 D crypto/internal/fips140/drbg.memory
  60 5 U external
`
	inFile := func(addr uint64) bool { return addr != 0x50 }
	pkgs, total := packageSizes(strings.NewReader(nm), inFile)
	if total != 650 {
		t.Errorf("total = %d, want 650", total)
	}
	if len(pkgs) != 2 || pkgs[0].pkg != "crypto/tls" || pkgs[0].bytes != 400 || pkgs[1].pkg != "runtime" {
		t.Errorf("packageSizes = %+v, want crypto/tls 400 then runtime 250", pkgs)
	}
}
