package main

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
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

// benchOutput is go test -v -bench output of BenchmarkStack, shortened.
const benchOutput = `goos: linux
BenchmarkStack/sftp-put/tunnel-2         	       1	 937615444 ns/op	        72.50 MiB/s	         9.375 agent-cpu-ms/MiB
BenchmarkStack/sftp-put/direct-2         	       1	 664021948 ns/op	       105.7 MiB/s	         8.750 agent-cpu-ms/MiB
    bench_test.go:178: RATIO sftp-put tunnel/direct = 72.5/105.7 MiB/s = 0.686
    bench_test.go:178: RATIO scp-put tunnel/direct = 120.1/128.4 MiB/s = 0.935
BenchmarkStack/memory-2                  	       1	5012345678 ns/op	         3.100 loaded-agent-cpu-ms/MiB	        16.50 loaded-RSS-MiB	         7.712 idle-RSS-MiB	         8.200 tunnel-RSS-MiB
    bench_test.go:311: MEMORY idle RSS 7.7 MiB (anon 1.1 MiB, file 6.6 MiB); one idle tunnel 8.2 MiB
PASS
`

func TestBenchBudgets(t *testing.T) {
	f := parseBench(strings.NewReader(benchOutput))
	if f.idleRSS != 7.712 || f.loadedRSS != 16.5 {
		t.Errorf("idle %v, loaded %v MiB; want 7.712 and 16.5", f.idleRSS, f.loadedRSS)
	}
	if want := []ratio{{"sftp-put", 0.686}, {"scp-put", 0.935}}; !slices.Equal(f.ratios, want) {
		t.Errorf("ratios %v, want %v", f.ratios, want)
	}
	// A name logged again (a -count 2 run) keeps its place, with the later value.
	again := parseBench(strings.NewReader(benchOutput + "    bench_test.go:178: RATIO sftp-put tunnel/direct = 80.0/100.0 MiB/s = 0.800\n"))
	if want := []ratio{{"sftp-put", 0.8}, {"scp-put", 0.935}}; !slices.Equal(again.ratios, want) {
		t.Errorf("ratios with sftp-put again: %v, want %v", again.ratios, want)
	}
	var b strings.Builder
	if !printBenchBudgets(&b, f) {
		t.Error("a missed budget was not reported")
	}
	for _, want := range []string{
		"agent idle RSS                                 7.71 MiB     <= 8.0  ok\n",
		"OVER by 0.50 MiB\n",
		"throughput sftp-put, tunnel/direct SSH            0.686    >= 0.90  MISSED by 0.21\n",
		"throughput scp-put, tunnel/direct SSH             0.935    >= 0.90  ok\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}

	// A run that did not happen (no Mosquitto, not root) measures nothing and
	// misses nothing.
	b.Reset()
	if printBenchBudgets(&b, parseBench(strings.NewReader("--- SKIP: BenchmarkStack\n"))) {
		t.Error("nothing measured, yet a budget was reported missed")
	}
	if n := strings.Count(b.String(), "not measured"); n != 3 {
		t.Errorf("%d rows not measured, want 3:\n%s", n, b.String())
	}
}

// TestNextGo: run prints the budgets of the binaries another Go built (-next)
// below the main table, counts them for -strict, and says "not measured" when
// there are none.
func TestNextGo(t *testing.T) {
	dist, next := t.TempDir(), t.TempDir()
	file := func(dir, name string, size int64) {
		t.Helper()
		f, err := os.Create(filepath.Join(dir, "porthole-"+name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
	}
	file(dist, "linux-mipsle", 7733441)
	file(dist, "linux-armv7", 6750370)
	file(next, "linux-mipsle", 8388799) // Go 1.27.3 without nojsonv2
	file(next, "linux-armv7", 7471264)

	var out, errs strings.Builder
	if code := run([]string{"-dist", dist, "-next", next, "-strict"}, &out, &errs); code != 1 {
		t.Errorf("-strict with a -next binary over its budget: exit %d, want 1\n%s%s", code, out.String(), errs.String())
	}
	// Columns compared by words: their widths are the table's business.
	words := strings.Join(strings.Fields(out.String()), " ")
	main, rest, ok := strings.Cut(words, next+" (make size's NEXT_GO")
	if !ok {
		t.Fatalf("no table for -next:\n%s", out.String())
	}
	if !strings.Contains(main, dist+": built with a Go unknown (no build information)") {
		t.Errorf("main table's heading:\n%s", main)
	}
	for _, want := range []string{"linux-mipsle 7733441 7.38 8.0 ok", "linux-armv7 6750370 6.44 7.5 ok"} {
		if !strings.Contains(main, want) {
			t.Errorf("main table lacks %q:\n%s", want, main)
		}
	}
	for _, want := range []string{"linux-mipsle 8388799 8.00 8.0 OVER by 191 B", "linux-armv7 7471264 7.13 7.5 ok"} {
		if !strings.Contains(rest, want) {
			t.Errorf("-next's table lacks %q:\n%s", want, rest)
		}
	}

	out.Reset()
	if code := run([]string{"-dist", dist, "-next", filepath.Join(next, "missing"), "-strict"}, &out, &errs); code != 0 {
		t.Errorf("-next without binaries: exit %d, want 0\n%s%s", code, out.String(), errs.String())
	}
	if !strings.Contains(out.String(), "not measured: no porthole-linux-* binaries in ") {
		t.Errorf("-next without binaries:\n%s", out.String())
	}
}

// TestBuiltWith: the Go release and GOEXPERIMENT come from the binaries' build
// information (this test's own binary has some).
func TestBuiltWith(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(t.TempDir(), "porthole-linux-fake")
	if err := os.WriteFile(fake, []byte("not a Go binary"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := builtWith([]target{{path: self}, {path: self}})
	if want := runtime.Version(); got != want && !strings.HasPrefix(got, want+", GOEXPERIMENT=") {
		t.Errorf("builtWith(this test) = %q, want %s and its GOEXPERIMENT", got, want)
	}
	if got := builtWith([]target{{path: self}, {path: fake}}); !strings.HasSuffix(got, "; a Go unknown (no build information)") {
		t.Errorf("builtWith(this test, a file without build information) = %q", got)
	}
}
