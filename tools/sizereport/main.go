// Command sizereport prints the size of the cross-built device binaries against
// their budgets, and the biggest Go packages of one unstripped binary from the
// linker's symbol sizes (go tool nm -size). With -bench, it also prints the
// memory and throughput budgets from a run of tools/bench's BenchmarkStack
// (tools/bench/budgets.sh writes one).
//
// It is a host tool run by `make size`; it is never linked into the device binary.
//
//	sizereport -dist dist -nm bin/size/porthole-linux-mipsle -top 15 -bench bin/size/bench.txt
//
// Budgets are targets, not assertions (DESIGN.md): the exit status is 0 whether
// they hold or not, unless -strict is given, then 1 when one is over; 2 when the
// report cannot be made.
package main

import (
	"bufio"
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// budgets are the stripped file-size budgets in MiB (DESIGN.md, "Budgets").
var budgets = map[string]float64{
	"linux-mipsle": 8.0,
	"linux-armv7":  7.5,
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sizereport", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dist := fs.String("dist", "dist", "directory holding porthole-<target> binaries")
	nmBin := fs.String("nm", "", "unstripped binary whose packages to rank (empty: no package table)")
	top := fs.Int("top", 15, "packages to list")
	strict := fs.Bool("strict", false, "exit 1 when a budget is exceeded")
	bench := fs.String("bench", "", "go test -v output of tools/bench's BenchmarkStack (tools/bench/budgets.sh): print the memory and throughput budgets")
	next := fs.String("next", "", "directory holding the budgeted porthole-<target> binaries built with another Go (make size's NEXT_GO): print their sizes too")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	rows, err := targets(*dist)
	if err != nil {
		fmt.Fprintf(stderr, "sizereport: %v (run make cross)\n", err)
		return 2
	}
	fmt.Fprintf(stdout, "%s: built with %s\n", *dist, builtWith(rows))
	over := printTargets(stdout, rows)
	if *next != "" {
		fmt.Fprintf(stdout, "\n%s (make size's NEXT_GO: the newest Go measured besides go.mod's): ", *next)
		if rows, err := targets(*next); err != nil {
			fmt.Fprintf(stdout, "not measured: %v\n", err)
		} else {
			fmt.Fprintf(stdout, "built with %s\n", builtWith(rows))
			if printTargets(stdout, rows) {
				over = true
			}
		}
	}
	if *nmBin != "" {
		out, err := exec.Command("go", "tool", "nm", "-size", *nmBin).Output()
		if err != nil {
			fmt.Fprintf(stderr, "sizereport: go tool nm -size %s: %v\n", *nmBin, err)
			return 2
		}
		inFile, pclntab, err := fileRanges(*nmBin)
		if err != nil {
			fmt.Fprintf(stderr, "sizereport: %v\n", err)
			return 2
		}
		pkgs, total := packageSizes(bytes.NewReader(out), inFile)
		fmt.Fprintf(stdout, "\nbiggest packages of %s: linker symbol sizes (go tool nm -size, unstripped build),\n"+
			"symbols with file contents only (.bss/.noptrbss left out); symbols total %.2f MiB,\n"+
			"plus %.2f MiB of function tables (.gopclntab) the linker does not charge to packages\n",
			filepath.Base(*nmBin), mib(total), mib(pclntab))
		printPackages(stdout, pkgs, total, *top)
	}
	if *bench != "" {
		b, err := os.ReadFile(*bench)
		if err != nil && !os.IsNotExist(err) {
			fmt.Fprintf(stderr, "sizereport: %v\n", err)
			return 2
		}
		fmt.Fprintf(stdout, "\nmemory and throughput (tools/bench/budgets.sh: the linux-amd64 device binary on this host,\n"+
			"GOMAXPROCS=1 as packaged; the QEMU boards' idle figures come from make test's board stage, docs/size.md)\n")
		if printBenchBudgets(stdout, parseBench(bytes.NewReader(b))) {
			over = true
		}
	}
	if over && *strict {
		return 1
	}
	return 0
}

type target struct {
	name  string
	path  string
	bytes int64
}

// builtWith names the Go release and GOEXPERIMENT the binaries were built with,
// from their build information; several when they differ.
func builtWith(rows []target) string {
	var seen []string
	for _, r := range rows {
		what := "a Go unknown (no build information)"
		if bi, err := buildinfo.ReadFile(r.path); err == nil {
			what, _, _ = strings.Cut(bi.GoVersion, "-X:") // the experiments follow
			for _, s := range bi.Settings {
				if s.Key == "GOEXPERIMENT" && s.Value != "" {
					what += ", GOEXPERIMENT=" + s.Value
				}
			}
		}
		if !slices.Contains(seen, what) {
			seen = append(seen, what)
		}
	}
	return strings.Join(seen, "; ")
}

func targets(dir string) ([]target, error) {
	files, err := filepath.Glob(filepath.Join(dir, "porthole-linux-*"))
	if err != nil {
		return nil, err
	}
	var rows []target
	for _, f := range files {
		if strings.HasSuffix(f, ".tar.gz") || strings.HasSuffix(f, ".ipk") {
			continue
		}
		st, err := os.Stat(f)
		if err != nil {
			return nil, err
		}
		if !st.Mode().IsRegular() {
			continue
		}
		rows = append(rows, target{strings.TrimPrefix(filepath.Base(f), "porthole-"), f, st.Size()})
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("no porthole-linux-* binaries in %s", dir)
	}
	return rows, nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// printTargets writes the size table and reports whether a budget is exceeded.
func printTargets(w io.Writer, rows []target) (over bool) {
	fmt.Fprintf(w, "%-16s %10s %8s %8s  %s\n", "target", "bytes", "MiB", "budget", "verdict")
	for _, r := range rows {
		budget, verdict := "-", "-"
		if b, ok := budgets[r.name]; ok {
			budget = strconv.FormatFloat(b, 'f', 1, 64)
			verdict = "ok"
			if d := r.bytes - int64(b*(1<<20)); d > 0 {
				verdict = fmt.Sprintf("OVER by %.2f MiB", mib(d))
				if d < 1<<20/100 {
					verdict = fmt.Sprintf("OVER by %d B", d)
				}
				over = true
			}
		}
		fmt.Fprintf(w, "%-16s %10d %8.2f %8s  %s\n", r.name, r.bytes, mib(r.bytes), budget, verdict)
	}
	return over
}

type pkgSize struct {
	pkg   string
	bytes int64
}

// fileRanges returns a predicate telling whether an address lies in a section
// with file contents (not NOBITS: Go 1.26 reserves a 32 MiB zero block in
// .noptrbss that costs no flash), and the size of .gopclntab.
func fileRanges(path string) (func(addr uint64) bool, int64, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	type span struct{ lo, hi uint64 }
	var nobits []span
	var pclntab int64
	for _, s := range f.Sections {
		if s.Type == elf.SHT_NOBITS {
			nobits = append(nobits, span{s.Addr, s.Addr + s.Size})
		}
		if s.Name == ".gopclntab" {
			pclntab = int64(s.Size)
		}
	}
	return func(addr uint64) bool {
		for _, sp := range nobits {
			if addr >= sp.lo && addr < sp.hi {
				return false
			}
		}
		return true
	}, pclntab, nil
}

// packageSizes sums go tool nm -size output ("addr size type name") by package,
// counting only symbols for which inFile (nil: all) holds.
func packageSizes(r io.Reader, inFile func(addr uint64) bool) ([]pkgSize, int64) {
	sums := map[string]int64{}
	var total int64
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			continue
		}
		size, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || size == 0 {
			continue
		}
		if f[2] == "U" || f[2] == "B" || f[2] == "b" {
			continue
		}
		if addr, err := strconv.ParseUint(f[0], 16, 64); err == nil && inFile != nil && !inFile(addr) {
			continue
		}
		name := strings.Join(f[3:], " ")
		sums[symbolPackage(name)] += size
		total += size
	}
	pkgs := make([]pkgSize, 0, len(sums))
	for p, s := range sums {
		pkgs = append(pkgs, pkgSize{p, s})
	}
	sort.Slice(pkgs, func(i, j int) bool {
		if pkgs[i].bytes != pkgs[j].bytes {
			return pkgs[i].bytes > pkgs[j].bytes
		}
		return pkgs[i].pkg < pkgs[j].pkg
	})
	return pkgs, total
}

// symbolPackage maps a linker symbol to the Go package it belongs to. Type
// descriptors, itabs and closures are charged to the package named first in the
// symbol; runtime tables (go:, runtime.pclntab ...) to "(runtime tables)".
func symbolPackage(sym string) string {
	s := sym
	for _, p := range []string{"type:.eq.", "type:.hash.", "type:", "go:itab.", "go:info.", "go:cuinfo.", "gclocals·", "go.shape."} {
		s = strings.TrimPrefix(s, p)
	}
	s = strings.TrimLeft(s, "*[]0123456789")
	for _, p := range []string{"map[", "map.", "func(", "struct {", "interface {", "noalg.", "chan ", "[]"} {
		if strings.HasPrefix(s, p) {
			return "(types)"
		}
	}
	if strings.HasPrefix(s, "go:") || strings.HasPrefix(s, "runtime.") && isTable(s) {
		return "(runtime tables)"
	}
	// The package path ends at the first dot after the last slash before any
	// bracket or parenthesis (generic instances, method receivers).
	end := len(s)
	if i := strings.IndexAny(s, "[("); i >= 0 {
		end = i
	}
	head := s[:end]
	slash := strings.LastIndex(head, "/")
	dot := strings.Index(head[slash+1:], ".")
	if dot < 0 {
		if slash < 0 {
			return "(other)"
		}
		return head
	}
	return head[:slash+1+dot]
}

func isTable(s string) bool {
	switch s {
	case "runtime.pclntab", "runtime.epclntab", "runtime.findfunctab", "runtime.rodata",
		"runtime.types", "runtime.itablinks", "runtime.typelink", "runtime.noptrdata", "runtime.data",
		"runtime.bss", "runtime.noptrbss", "runtime.text", "runtime.etext":
		return true
	}
	return false
}

func printPackages(w io.Writer, pkgs []pkgSize, total int64, n int) {
	fmt.Fprintf(w, "%4s %10s %8s %6s  %s\n", "rank", "bytes", "MiB", "share", "package")
	for i, p := range pkgs {
		if i == n {
			break
		}
		fmt.Fprintf(w, "%4d %10d %8.2f %5.1f%%  %s\n", i+1, p.bytes, mib(p.bytes), 100*float64(p.bytes)/float64(total), p.pkg)
	}
}

// benchFigures are the budgeted figures of one BenchmarkStack run.
type benchFigures struct {
	idleRSS, loadedRSS float64 // MiB; -1: the run did not produce it
	ratios             []ratio // as they came; a name logged again keeps its place, with the later value
}

// ratio is one transfer's tunnel/direct MiB/s, e.g. "sftp-put".
type ratio struct {
	name  string
	value float64
}

// parseBench reads go test -v -bench output of BenchmarkStack: the memory
// sub-benchmark's idle-RSS-MiB and loaded-RSS-MiB metrics and the RATIO lines
// the benchmark logs ("RATIO sftp-put tunnel/direct = 63.4/108.1 MiB/s = 0.587").
func parseBench(r io.Reader) benchFigures {
	f := benchFigures{idleRSS: -1, loadedRSS: -1}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, w := range fields {
			if w == "RATIO" && i+6 < len(fields) && fields[i+2] == "tunnel/direct" {
				if v, err := strconv.ParseFloat(fields[len(fields)-1], 64); err == nil {
					name := fields[i+1]
					if j := slices.IndexFunc(f.ratios, func(r ratio) bool { return r.name == name }); j >= 0 {
						f.ratios[j].value = v
					} else {
						f.ratios = append(f.ratios, ratio{name, v})
					}
				}
			}
		}
		if len(fields) == 0 || !strings.HasPrefix(fields[0], "BenchmarkStack/memory") {
			continue
		}
		for i := 1; i+1 < len(fields); i++ {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				continue
			}
			switch fields[i+1] {
			case "idle-RSS-MiB":
				f.idleRSS = v
			case "loaded-RSS-MiB":
				f.loadedRSS = v
			}
		}
	}
	return f
}

// Memory and throughput budgets (DESIGN.md, "Budgets").
const (
	idleBudgetMiB   = 8.0
	loadedBudgetMiB = 16.0
	ratioBudget     = 0.90
)

// printBenchBudgets writes the memory and throughput rows and reports whether
// one is missed; a figure the run did not produce is "not measured".
func printBenchBudgets(w io.Writer, f benchFigures) (over bool) {
	row := func(name, measured, target, verdict string) {
		fmt.Fprintf(w, "%-44s %10s %10s  %s\n", name, measured, target, verdict)
	}
	row("budget", "measured", "target", "verdict")
	mem := func(name string, v, budget float64) {
		target := fmt.Sprintf("<= %.1f", budget)
		switch {
		case v < 0:
			row(name, "-", target, "not measured")
		case v > budget:
			row(name, fmt.Sprintf("%.2f MiB", v), target, fmt.Sprintf("OVER by %.2f MiB", v-budget))
			over = true
		default:
			row(name, fmt.Sprintf("%.2f MiB", v), target, "ok")
		}
	}
	mem("agent idle RSS", f.idleRSS, idleBudgetMiB)
	mem("agent RSS, 10 SSH sessions + an sftp upload", f.loadedRSS, loadedBudgetMiB)
	target := fmt.Sprintf(">= %.2f", ratioBudget)
	if len(f.ratios) == 0 {
		row("throughput, tunnel/direct SSH", "-", target, "not measured")
	}
	for _, r := range f.ratios {
		verdict := "ok"
		if r.value < ratioBudget {
			verdict = fmt.Sprintf("MISSED by %.2f", ratioBudget-r.value)
			over = true
		}
		row("throughput "+r.name+", tunnel/direct SSH", fmt.Sprintf("%.3f", r.value), target, verdict)
	}
	return over
}
