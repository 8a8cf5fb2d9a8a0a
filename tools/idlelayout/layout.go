package main

import (
	"bufio"
	"cmp"
	"debug/elf"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
)

const (
	pageSize   = 4 << 10  // what the kernel maps per fault at least
	windowSize = 64 << 10 // the board's fault-around window (fault_around_bytes)
	// insnSize is the length of an executed instruction, which the trace does not
	// give: 4 on MIPS and ARM; on other machines the margins are off by a few bytes.
	insnSize = 4
)

// A Func is a function of the binary's symbol table.
type Func struct {
	Name       string
	Addr, Size uint64
}

// A Window is a 64 KiB text window the idle agent touched.
type Window struct {
	Addr  uint64
	Pages int    // 4 KiB pages of it touched
	Funcs []Func // the functions that ran code in it, by address
}

// A Gap is a text window the idle agent did not touch, and how far the code run
// nearest to it is: Before is how many bytes of code could be added before the
// window until the last instruction run before it moves in, After how many could
// go until the first one after it does. Each is -1 if no code ran on that side;
// BeforeFunc and AfterFunc name those instructions' functions.
type Gap struct {
	Addr                  uint64
	Before, After         int64
	BeforeFunc, AfterFunc string
}

// A Layout is which windows of the text segment [Start, End) the idle agent
// touched.
type Layout struct {
	Start, End uint64
	Windows    int // the segment's 64 KiB windows
	Funcs      int // functions that ran
	Touched    []Window
	Untouched  []Gap
}

// analyze maps the addresses of executed instructions to funcs, 4 KiB pages and
// the 64 KiB windows of the text segment [start, end). Addresses outside it
// (qemu's signal trampolines, the vDSO) are left out.
func analyze(funcs []Func, start, end uint64, addrs []uint64) Layout {
	funcs = slices.Clone(funcs)
	slices.SortFunc(funcs, func(a, b Func) int { return cmp.Compare(a.Addr, b.Addr) })
	var run []uint64
	for _, a := range addrs {
		if a >= start && a < end {
			run = append(run, a)
		}
	}
	slices.Sort(run)
	run = slices.Compact(run)
	// funcOf returns the index of the function holding a, or -1.
	funcOf := func(a uint64) int {
		i := sort.Search(len(funcs), func(i int) bool { return funcs[i].Addr > a }) - 1
		if i >= 0 && a < funcs[i].Addr+funcs[i].Size {
			return i
		}
		return -1
	}
	name := func(a uint64) string {
		if i := funcOf(a); i >= 0 {
			return funcs[i].Name
		}
		return fmt.Sprintf("%#x", a)
	}

	l := Layout{Start: start, End: end}
	pages := map[uint64]map[uint64]bool{} // window → pages touched
	inWindow := map[uint64]map[int]bool{} // window → functions run in it
	ran := map[int]bool{}
	for _, a := range run {
		w := a &^ (windowSize - 1)
		if pages[w] == nil {
			pages[w], inWindow[w] = map[uint64]bool{}, map[int]bool{}
		}
		pages[w][a&^(pageSize-1)] = true
		if i := funcOf(a); i >= 0 {
			inWindow[w][i], ran[i] = true, true
		}
	}
	l.Funcs = len(ran)
	for w := start &^ (windowSize - 1); w < end; w += windowSize {
		l.Windows++
		if pages[w] != nil {
			win := Window{Addr: w, Pages: len(pages[w])}
			for _, i := range slices.Sorted(maps.Keys(inWindow[w])) {
				win.Funcs = append(win.Funcs, funcs[i])
			}
			l.Touched = append(l.Touched, win)
			continue
		}
		g := Gap{Addr: w, Before: -1, After: -1}
		i := sort.Search(len(run), func(i int) bool { return run[i] >= w })
		if i > 0 {
			g.Before, g.BeforeFunc = int64(w-(run[i-1]+insnSize)), name(run[i-1])
		}
		if i < len(run) {
			g.After, g.AfterFunc = int64(run[i]-(w+windowSize)), name(run[i])
		}
		l.Untouched = append(l.Untouched, g)
	}
	return l
}

// readTrace returns the addresses of the instructions in a qemu -d in_asm log:
// the lines "0x00012345:  insn" (each block is logged once, when translated).
func readTrace(r io.Reader) ([]uint64, error) {
	seen := map[uint64]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "0x") {
			continue
		}
		hex, _, ok := strings.Cut(line[2:], ":")
		if !ok {
			continue
		}
		a, err := strconv.ParseUint(hex, 16, 64)
		if err != nil {
			return nil, fmt.Errorf("trace line %q: %w", line, err)
		}
		seen[a] = true
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var addrs []uint64
	for a := range seen {
		addrs = append(addrs, a)
	}
	return addrs, nil
}

// readBinary returns the functions of an unstripped ELF binary and its text
// segment (the loadable one that is executable).
func readBinary(path string) (funcs []Func, start, end uint64, err error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, 0, 0, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 {
			start, end = p.Vaddr, p.Vaddr+p.Memsz
			break
		}
	}
	if end == 0 {
		return nil, 0, 0, fmt.Errorf("%s: no executable PT_LOAD segment", path)
	}
	syms, err := f.Symbols()
	if err != nil {
		return nil, 0, 0, fmt.Errorf("%s: %w (build it without -s)", path, err)
	}
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Size > 0 {
			funcs = append(funcs, Func{Name: s.Name, Addr: s.Value, Size: s.Size})
		}
	}
	return funcs, start, end, nil
}
