package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// trace is a qemu -d in_asm log of a few blocks, as qemu writes them.
const trace = `----------------
IN: a
0x00010100:  lui	at,0x2
0x00010104:  jr	ra
0x00010108:  nop

----------------
IN: straddle
0x0001ff80:  addiu	sp,sp,-8
0x00020010:  jr	ra

----------------
IN: 
0x00021ff0:  nop

----------------
IN: c
0x00050120:  jr	ra
0x00010100:  lui	at,0x2
0x7fff0000:  syscall
`

func TestAnalyze(t *testing.T) {
	a := Func{"a", 0x10100, 0x100}
	straddle := Func{"straddle", 0x1ff00, 0x200} // across the window boundary 0x20000
	c := Func{"c", 0x50100, 0x40}
	idle := Func{"idle", 0x30000, 0x1000} // not run
	funcs := []Func{c, idle, straddle, a}
	addrs, err := readTrace(strings.NewReader(trace))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		start, end uint64
		addrs      []uint64
		want       Layout
	}{{
		name: "trace", start: 0x10000, end: 0x58000, addrs: addrs,
		want: Layout{Start: 0x10000, End: 0x58000, Windows: 5, Funcs: 3,
			Touched: []Window{
				{Addr: 0x10000, Pages: 2, Funcs: []Func{a, straddle}},
				// 0x21ff0 is in no function: its page counts all the same.
				{Addr: 0x20000, Pages: 2, Funcs: []Func{straddle}},
				{Addr: 0x50000, Pages: 1, Funcs: []Func{c}},
			},
			Untouched: []Gap{
				{Addr: 0x30000, Before: 0x30000 - 0x21ff4, BeforeFunc: "0x21ff0", After: 0x50120 - 0x40000, AfterFunc: "c"},
				{Addr: 0x40000, Before: 0x40000 - 0x21ff4, BeforeFunc: "0x21ff0", After: 0x120, AfterFunc: "c"},
			},
		},
	}, {
		// The segment starts inside a window (0x10100 is before it: left out);
		// the last window is partial and nothing runs after it.
		name: "edges", start: 0x10f00, end: 0x20004, addrs: []uint64{0x1fffc, 0x10100},
		want: Layout{Start: 0x10f00, End: 0x20004, Windows: 2, Funcs: 1,
			Touched:   []Window{{Addr: 0x10000, Pages: 1, Funcs: []Func{straddle}}},
			Untouched: []Gap{{Addr: 0x20000, Before: 0, BeforeFunc: "straddle", After: -1}},
		},
	}, {
		name: "nothing run", start: 0x10000, end: 0x10004,
		want: Layout{Start: 0x10000, End: 0x10004, Windows: 1,
			Untouched: []Gap{{Addr: 0x10000, Before: -1, After: -1}}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := analyze(funcs, tc.start, tc.end, tc.addrs)
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("analyze (-want +got):\n%s", d)
			}
		})
	}
}

func TestPrintLayout(t *testing.T) {
	l := analyze([]Func{{"github.com/porthole-iot/porthole/sshd.(*Server).start", 0x10000, 0x40}}, 0x10000, 0x30000, []uint64{0x10000})
	var b bytes.Buffer
	printLayout(&b, l, 2)
	for _, want := range []string{
		"2 windows of 64 KiB, 1 touched",
		"0x20000  before 65532 B (sshd.(*Server).start)  after -",
		"0x10000     64  github.com/porthole-iot/porthole/sshd.(*Server).start",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("printLayout wrote\n%s\nwant a line with %q", b.String(), want)
		}
	}
}

// TestSmallProgram traces a small mipsle program (not the agent, which takes
// longer) to check readBinary and readTrace against what go build and qemu write.
// Without qemu-mipsel-static it skips, but fails under CI=true: make test
// installs it (tools/deps.sh qemu).
func TestSmallProgram(t *testing.T) {
	qemu, err := exec.LookPath("qemu-mipsel-static")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("qemu-mipsel-static not installed (tools/deps.sh qemu): %v", err)
		}
		t.Skipf("qemu-mipsel-static not installed (tools/deps.sh qemu): %v", err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte("package main\n\nfunc main() { println(\"hi\") }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bin, log := filepath.Join(dir, "hi"), filepath.Join(dir, "trace")
	build := exec.Command("go", "build", "-o", bin, src)
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=mipsle", "GOMIPS=softfloat")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", build.Args, err, out)
	}
	if out, err := exec.Command(qemu, "-d", "in_asm", "-D", log, bin).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", qemu, bin, err, out)
	}
	funcs, start, end, err := readBinary(bin)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	addrs, err := readTrace(f)
	if err != nil {
		t.Fatal(err)
	}
	l := analyze(funcs, start, end, addrs)
	var ran bool
	for _, w := range l.Touched {
		for _, f := range w.Funcs {
			ran = ran || f.Name == "main.main"
		}
	}
	if !ran || len(l.Touched) == 0 || l.Windows < len(l.Touched) {
		t.Errorf("main.main ran: %v; %d windows, %d touched; want main.main among the functions run", ran, l.Windows, len(l.Touched))
	}
}
