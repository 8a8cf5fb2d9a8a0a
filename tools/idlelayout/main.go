// Command idlelayout reports which 64 KiB windows of the device binary's code an
// idle agent touches. On the mipsel board the kernel maps a binary's code in
// 64 KiB fault-around windows around each page run, so the idle agent's RSS
// (budget: 8 MiB) grows by 64 KiB whenever a few bytes of start-time code land in
// a window of their own (docs/size.md, "Idle layout").
//
// It builds the mipsle device binary unstripped (the device's flags, as make size
// does), or takes -bin; starts the lab's MQTT broker with mutual TLS in process
// (tools/lab, as porthole-lab --no-agent); runs `porthole agent` with the boards'
// configuration under qemu-mipsel-static -d in_asm; kills it with SIGKILL 3 s after
// its notify subscription is granted; and maps the instructions run to the
// functions, 4 KiB pages and 64 KiB windows of the text segment.
//
// It prints how many text windows are touched; each untouched window with its
// margins ("before": bytes of code that could be added before it until the last
// code run before it moves in, and in which function that code is; "after": the
// same for the first code run after it, for code removed before it); and, for each
// touched window of at most -pages pages, the functions run in it (address, size,
// name): a window touched for a few functions is one that moving them (a file name
// sorts a package's code) could free. Files go to -state, kept for a rerun of the
// analysis with -bin and -trace.
//
// It is a developer tool run by `make idle-layout`; it needs qemu-user-static
// (tools/deps.sh qemu), not root, and is never linked into the device binary.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "idlelayout:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("idlelayout", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bin := fs.String("bin", "", "an unstripped device `binary` built already (default: build the mipsle one into -state)")
	trace := fs.String("trace", "", "analyze this qemu -d in_asm `log` of -bin instead of running the agent")
	state := fs.String("state", "", "`directory` for the binary, the lab's certificates, the agent's files and the trace (default: idlelayout in the user cache directory)")
	qemu := fs.String("qemu", "qemu-mipsel-static", "the qemu-user `program` matching the binary")
	pages := fs.Int("pages", 2, "list the functions of the touched windows with at most `n` pages touched")
	wait := fs.Duration("wait", 3*time.Second, "how long the agent stays idle after its subscription before it is killed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *trace != "" && *bin == "" {
		return fmt.Errorf("-trace needs the -bin it was made with")
	}
	if *trace == "" {
		if *state == "" {
			cache, err := os.UserCacheDir()
			if err != nil {
				return err
			}
			*state = filepath.Join(cache, "porthole", "idlelayout")
		}
		dir, err := privateDir(*state)
		if err != nil {
			return err
		}
		if *bin == "" {
			*bin = filepath.Join(dir, "porthole-linux-mipsle")
			fmt.Fprintf(stderr, "building %s\n", *bin)
			if err := buildDevice(ctx, *bin); err != nil {
				return err
			}
		}
		*trace = filepath.Join(dir, "idle.trace")
		fmt.Fprintf(stderr, "tracing the idle agent into %s\n", *trace)
		if err := traceIdle(ctx, idleRun{bin: *bin, dir: dir, trace: *trace, qemu: *qemu, wait: *wait}); err != nil {
			return err
		}
	}
	funcs, start, end, err := readBinary(*bin)
	if err != nil {
		return err
	}
	f, err := os.Open(*trace)
	if err != nil {
		return err
	}
	addrs, err := readTrace(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("reading %s: %w", *trace, err)
	}
	printLayout(stdout, analyze(funcs, start, end, addrs), *pages)
	return nil
}

func printLayout(w io.Writer, l Layout, pages int) {
	fmt.Fprintf(w, "text %#x-%#x: %d windows of 64 KiB, %d touched by the idle agent (%d functions run)\n",
		l.Start, l.End, l.Windows, len(l.Touched), l.Funcs)
	fmt.Fprintf(w, "untouched: %d (before, after: bytes to the code run nearest to it, and its function)\n", len(l.Untouched))
	for _, g := range l.Untouched {
		fmt.Fprintf(w, "  %#x  before %s  after %s\n", g.Addr, margin(g.Before, g.BeforeFunc), margin(g.After, g.AfterFunc))
	}
	fmt.Fprintf(w, "touched for at most %d pages:\n", pages)
	for _, win := range l.Touched {
		if win.Pages > pages {
			continue
		}
		fmt.Fprintf(w, "  %#x  %d page(s)\n", win.Addr, win.Pages)
		for _, f := range win.Funcs {
			fmt.Fprintf(w, "    %#x %6d  %s\n", f.Addr, f.Size, f.Name)
		}
	}
}

func margin(n int64, fn string) string {
	if n < 0 {
		return "-"
	}
	return fmt.Sprintf("%d B (%s)", n, shortName(fn))
}

// shortName drops a function name's import path up to its last element.
func shortName(name string) string {
	if i := strings.LastIndex(name, "/"); i >= 0 && !strings.ContainsAny(name[:i], "([") {
		return name[i+1:]
	}
	return name
}
