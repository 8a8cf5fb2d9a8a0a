package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porthole-iot/porthole/tools/internal/stack"
	"github.com/porthole-iot/porthole/tools/internal/testenv"
	"github.com/porthole-iot/porthole/tools/tunneld"
)

func TestMain(m *testing.M) { os.Exit(stack.Tests(m).Run()) }

// sizeMiB is the transfer size: PORTHOLE_BENCH_MIB, default 256 (the size).
func sizeMiB() int {
	if n, err := strconv.Atoi(os.Getenv("PORTHOLE_BENCH_MIB")); err == nil && n > 0 {
		return n
	}
	return 256
}

// payloadDir is where transfers read and write: tmpfs when there is one, so the
// disk does not take part in the comparison. In the tests' own mount namespace
// (stack.Tests, as root) it is a tmpfs of its own, mounted in the directory
// that the namespace's parent process removes when the run ends: the kernel
// frees it with the namespace, also when the run ends without its clean-ups
// (Ctrl-C, go test -timeout), which left 3 × PORTHOLE_BENCH_MIB of files in
// /dev/shm, in RAM until a reboot. Elsewhere it is a directory in /dev/shm.
func payloadDir(b *testing.B) string {
	if home := testenv.OwnHome(); home != "" {
		d, err := os.MkdirTemp(filepath.Dir(home), "bench-payload")
		if err != nil {
			b.Fatal(err)
		}
		if err := unix.Mount("tmpfs", d, "tmpfs", 0, "mode=0700"); err != nil {
			b.Fatalf("a tmpfs for the transfers at %s: %v", d, err)
		}
		b.Cleanup(func() {
			unix.Unmount(d, 0)
			os.Remove(d)
		})
		return d
	}
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	d, err := os.MkdirTemp(base, "porthole-bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// bulkServer is a TCP service on the "device" that writes 1 MiB of known data to
// each connection and closes it.
func bulkServer(b *testing.B, data []byte) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.Write(data)
				c.Close()
			}()
		}
	}()
	b.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// BenchmarkStack runs the whole path once (Mosquitto, tunneld, the agent binary,
// porthole connect, OpenSSH) and measures, as sub-benchmarks, what the issue asks
// for. Run it with -benchtime=1x (tools/bench/run.sh does); PORTHOLE_BENCH_MIB
// shrinks the transfers.
func BenchmarkStack(b *testing.B) {
	mib := sizeMiB()
	bulk := make([]byte, 1<<20)
	rand.Read(bulk)
	bulkAddr := bulkServer(b, bulk)
	// PORTHOLE_BENCH_AGENT_ENV (space-separated NAME=VALUE) reaches only the agent,
	// e.g. "GOGC=100 GOMEMLIMIT=off" to compare the agent's GC defaults.
	s := stack.Start(b, stack.Options{Services: []string{fmt.Sprintf("BULK = %q", bulkAddr)},
		Env:            strings.Fields(os.Getenv("PORTHOLE_BENCH_AGENT_ENV")),
		PlainWebSocket: os.Getenv("PORTHOLE_BENCH_PLAIN_WS") == "1",
		LogLevel:       "info"}) // a debug line per frame would be measured too
	b.Logf("agent pid %d; direct sshd at %s", s.Agent.Process.Pid, s.SSHAddr)
	if cpus := agentCPUs(b); cpus > 0 {
		limitCPU(b, s.Agent.Process.Pid, cpus)
	}
	time.Sleep(2 * time.Second) // let start-up garbage be collected
	idle := s.AgentProc()

	open := s.OpenTunnel("SSH", "BULK")
	ports, _, stopConnect := s.ConnectServices(open, "SSH", "BULK")
	defer stopConnect()
	tunnelPort := ports["SSH"]
	s.MustSSH(tunnelPort, "true") // warm: the stream path and the host key
	time.Sleep(2 * time.Second)
	oneTunnel := s.AgentProc()

	dir := payloadDir(b)
	src := filepath.Join(dir, "src.bin")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, int64(mib)<<20); err != nil {
		b.Fatal(err)
	}
	f.Close()
	want := hashFile(b, src)

	connectPID := s.ConnectPIDs()[0]
	type result struct {
		mibps   float64
		cpuPerM float64 // agent CPU ms per MiB
	}
	results := map[string]result{}
	for _, tool := range []string{"sftp", "scp"} {
		for _, dirn := range []string{"put", "get"} {
			for _, path := range []string{"tunnel", "direct"} {
				name := tool + "-" + dirn + "/" + path
				b.Run(name, func(b *testing.B) {
					port := tunnelPort
					if path == "direct" {
						port = s.DirectPort()
					}
					var total time.Duration
					var cpu, connCPU, selfCPU, childCPU time.Duration
					for range b.N {
						remote := filepath.Join(dir, "remote.bin")
						back := filepath.Join(dir, "back.bin")
						os.Remove(back)
						if dirn == "get" {
							copyFile(b, src, remote)
						} else {
							os.Remove(remote)
						}
						before := s.AgentProc().CPU
						connBefore := procCPU(b, connectPID)
						self0, child0 := rusage()
						start := time.Now()
						transfer(b, s, tool, dirn, port, src, remote, back, dir)
						total += time.Since(start)
						cpu += s.AgentProc().CPU - before
						connCPU += procCPU(b, connectPID) - connBefore
						self1, child1 := rusage()
						selfCPU += self1 - self0
						childCPU += child1 - child0
						got := remote
						if dirn == "get" {
							got = back
						}
						if hashFile(b, got) != want {
							b.Fatalf("%s: file differs after the transfer", name)
						}
					}
					r := result{mibps: float64(mib*b.N) / total.Seconds(), cpuPerM: float64(cpu.Milliseconds()) / float64(mib*b.N)}
					results[name] = r
					b.ReportMetric(r.mibps, "MiB/s")
					b.ReportMetric(r.cpuPerM, "agent-cpu-ms/MiB")
					perMiB := func(d time.Duration) float64 { return float64(d.Milliseconds()) / float64(mib*b.N) }
					b.ReportMetric(perMiB(connCPU), "connect-cpu-ms/MiB")
					b.ReportMetric(perMiB(selfCPU), "tunneld-cpu-ms/MiB")
					b.ReportMetric(perMiB(childCPU), "client-cpu-ms/MiB")
				})
			}
		}
	}
	for _, tool := range []string{"sftp", "scp"} {
		for _, dirn := range []string{"put", "get"} {
			t, d := results[tool+"-"+dirn+"/tunnel"], results[tool+"-"+dirn+"/direct"]
			if d.mibps > 0 {
				b.Logf("RATIO %s-%s tunnel/direct = %.1f/%.1f MiB/s = %.3f", tool, dirn, t.mibps, d.mibps, t.mibps/d.mibps)
			}
		}
	}

	for _, path := range []string{"tunnel", "direct"} {
		b.Run("ssh-true/"+path, func(b *testing.B) {
			port := tunnelPort
			if path == "direct" {
				port = s.DirectPort()
			}
			median(b, 10, func() time.Duration { t0 := time.Now(); s.MustSSH(port, "true"); return time.Since(t0) })
		})
	}

	// Stream open → first byte: connect to the source's local port of the BULK
	// service, wait for its first byte (STREAM_START, the agent's TCP dial, the
	// service's first write back through the tunnel). Not SSH: sshd counts a
	// connection closed before login as a failed one and rate-limits its source.
	b.Run("stream-first-byte/tunnel", func(b *testing.B) { firstByte(b, "127.0.0.1:"+ports["BULK"]) })
	b.Run("stream-first-byte/direct", func(b *testing.B) { firstByte(b, bulkAddr) })

	// Notification → destination connected: OpenTunnel publishes on Mosquitto, the
	// agent dials tunneld; polled every millisecond.
	b.Run("notify-to-connected", func(b *testing.B) {
		median(b, 10, func() time.Duration {
			start := time.Now()
			out, err := s.TD().OpenTunnel(context.Background(), &tunneld.OpenTunnelInput{
				DestinationConfig: &tunneld.DestinationConfig{ThingName: stack.Thing, Services: []string{"SSH"}}})
			if err != nil {
				b.Fatal(err)
			}
			for !s.DestinationConnected(out.TunnelID) {
				if time.Since(start) > 30*time.Second {
					b.Fatal("agent did not connect")
				}
				time.Sleep(time.Millisecond)
			}
			d := time.Since(start)
			s.TD().CloseTunnel(context.Background(), &tunneld.CloseTunnelInput{TunnelID: out.TunnelID})
			time.Sleep(200 * time.Millisecond)
			return d
		})
	})

	// 128 simultaneous connections on one service (V3), each reading 1 MiB.
	b.Run("v3-128x1MiB", func(b *testing.B) {
		bulkSum := sha256.Sum256(bulk)
		for range b.N {
			const n = 128
			durs := make([]time.Duration, n)
			errs := make(chan error, n)
			start := time.Now()
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					t0 := time.Now()
					c, err := net.Dial("tcp", "127.0.0.1:"+ports["BULK"])
					if err != nil {
						errs <- err
						return
					}
					defer c.Close()
					h := sha256.New()
					if _, err := io.Copy(h, c); err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(h.Sum(nil), bulkSum[:]) {
						errs <- fmt.Errorf("connection %d: data differs", i)
						return
					}
					durs[i] = time.Since(t0)
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			sort.Slice(durs, func(i, j int) bool { return durs[i] < durs[j] })
			b.ReportMetric(float64(n)/elapsed.Seconds(), "MiB/s")
			b.ReportMetric(float64(durs[n*99/100].Milliseconds()), "p99-ms")
			b.ReportMetric(float64(durs[n/2].Milliseconds()), "p50-ms")
		}
	})

	// Memory with 10 SSH sessions and one transfer running: nine sessions logged
	// in and held open through the whole upload, which is the tenth.
	b.Run("memory", func(b *testing.B) {
		var loaded stack.Proc
		var loadedCPU time.Duration // the agent's, during the upload
		for range b.N {
			held := holdSessions(b, s, tunnelPort, 9)
			up := filepath.Join(dir, "mem.bin")
			os.Remove(up)
			// Sampled before the upload starts, every 100 ms and once it has
			// ended, so that an upload shorter than a period still has a peak.
			peak := s.AgentProc()
			cpu0 := peak.CPU
			done := make(chan struct{})
			go func() {
				defer close(done)
				transfer(b, s, "sftp", "put", tunnelPort, src, up, "", dir)
			}()
			for waiting := true; waiting; {
				select {
				case <-done:
					waiting = false
				case <-time.After(100 * time.Millisecond):
				}
				if p := s.AgentProc(); p.RSS > peak.RSS {
					peak = p
				}
			}
			loadedCPU += s.AgentProc().CPU - cpu0
			held.release(b)
			if hashFile(b, up) != want {
				b.Fatal("memory: the upload beside the nine sessions differs")
			}
			loaded = peak
		}
		b.ReportMetric(float64(idle.RSS)/(1<<20), "idle-RSS-MiB")
		b.ReportMetric(float64(oneTunnel.RSS)/(1<<20), "tunnel-RSS-MiB")
		b.ReportMetric(float64(loaded.RSS)/(1<<20), "loaded-RSS-MiB")
		b.ReportMetric(float64(loadedCPU.Milliseconds())/float64(mib*b.N), "loaded-agent-cpu-ms/MiB")
		b.Logf("MEMORY idle RSS %s (anon %s, file %s); one idle tunnel %s (anon %s, file %s); 10 sessions + sftp peak %s (anon %s, file %s)",
			stack.MiB(idle.RSS), stack.MiB(idle.RSSAnon), stack.MiB(idle.RSSFile),
			stack.MiB(oneTunnel.RSS), stack.MiB(oneTunnel.RSSAnon), stack.MiB(oneTunnel.RSSFile),
			stack.MiB(loaded.RSS), stack.MiB(loaded.RSSAnon), stack.MiB(loaded.RSSFile))
	})
	s.StopAgent()
}

// heldSessions are SSH sessions logged in through the tunnel that stay open
// until release.
type heldSessions struct {
	stdin []io.Closer
	ended []chan sessionEnd
}

// sessionEnd is how a held session's ssh ended, what it printed on stdout,
// and on stderr.
type sessionEnd struct {
	err         error
	out, stderr string
}

// holdSessions logs n sessions in through port at once and returns when each
// has said so; they then wait for their stdin to end. The memory scenario's
// figure is the agent's with these sessions open: one that did not log in, or
// that ended early, would make it smaller than the scenario it names.
func holdSessions(b *testing.B, s *stack.Stack, port string, n int) *heldSessions {
	ctx, cancel := context.WithCancel(context.Background())
	h := &heldSessions{}
	var wg sync.WaitGroup
	b.Cleanup(func() { cancel(); wg.Wait() }) // sessions left by a failed benchmark
	type login struct {
		i  int
		ok bool // it said it is up; else its ssh ended first
	}
	logins := make(chan login, n)
	start := time.Now()
	for i := range n {
		cmd := exec.CommandContext(ctx, "ssh", append(s.SSHOpts(), "-p", port, "root@127.0.0.1", "echo up; read x; echo held")...)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			b.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		ended := make(chan sessionEnd, 1)
		h.stdin, h.ended = append(h.stdin, stdin), append(h.ended, ended)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := bufio.NewReader(stdout)
			line, _ := r.ReadString('\n')
			logins <- login{i, line == "up\n"}
			rest, _ := io.ReadAll(r)
			err := cmd.Wait()
			ended <- sessionEnd{err, line + string(rest), stderr.String()}
		}()
	}
	for range n {
		select {
		case l := <-logins:
			if !l.ok {
				e := <-h.ended[l.i]
				b.Fatalf("memory: session %d did not log in: %v: %q %q", l.i, e.err, e.out, e.stderr)
			}
		case <-time.After(60 * time.Second):
			b.Fatalf("memory: not all of the %d sessions logged in within 60 s", n)
		}
	}
	b.Logf("memory: %d sessions logged in, in %v", n, time.Since(start).Round(time.Millisecond))
	return h
}

// release ends the sessions' stdin and fails the benchmark if one had ended
// before, or does not end with "held" now.
func (h *heldSessions) release(b *testing.B) {
	for i, ended := range h.ended {
		select {
		case e := <-ended:
			b.Fatalf("memory: session %d ended before the upload did (%v): %q %q", i, e.err, e.out, e.stderr)
		default:
		}
	}
	for _, c := range h.stdin {
		c.Close()
	}
	for i, ended := range h.ended {
		select {
		case e := <-ended:
			if e.err != nil || e.out != "up\nheld\n" {
				b.Fatalf("memory: session %d: %v: %q %q", i, e.err, e.out, e.stderr)
			}
		case <-time.After(30 * time.Second):
			b.Fatalf("memory: session %d still open 30 s after its stdin ended", i)
		}
	}
}

// median runs f reps times per iteration and reports the median and the slowest.
func median(b *testing.B, reps int, f func() time.Duration) {
	var ds []time.Duration
	for range b.N {
		for range reps {
			ds = append(ds, f())
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(ds[len(ds)-1].Microseconds())/1000, "max-ms")
}

// procCPU is a process's user+system CPU time.
func procCPU(b testing.TB, pid int) time.Duration {
	p, err := stack.ReadProc(pid)
	if err != nil {
		b.Fatal(err)
	}
	return p.CPU
}

// rusage is this process's CPU (tunneld and the harness, idle during a
// transfer) and that of its waited-for children (ssh, sftp, scp).
func rusage() (self, children time.Duration) {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	children = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return self, children
}

func firstByte(b *testing.B, addr string) {
	median(b, 50, func() time.Duration {
		t0 := time.Now()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		var one [1]byte
		if _, err := io.ReadFull(c, one[:]); err != nil {
			b.Fatal(err)
		}
		d := time.Since(t0)
		c.Close()
		return d
	})
}

// transfer moves src to remote (put) or remote to back (get) with sftp or scp.
func transfer(b testing.TB, s *stack.Stack, tool, dirn, port, src, remote, back, dir string) {
	var cmd *exec.Cmd
	switch tool {
	case "sftp":
		batch := filepath.Join(dir, "batch."+dirn)
		line := fmt.Sprintf("put %s %s\n", src, remote)
		if dirn == "get" {
			line = fmt.Sprintf("get %s %s\n", remote, back)
		}
		if err := os.WriteFile(batch, []byte(line), 0o600); err != nil {
			b.Fatal(err)
		}
		cmd = exec.Command("sftp", append(s.SSHOpts(), "-P", port, "-b", batch, "root@127.0.0.1")...)
	case "scp":
		args := append(s.SSHOpts(), "-P", port)
		if dirn == "put" {
			args = append(args, src, "root@127.0.0.1:"+remote)
		} else {
			args = append(args, "root@127.0.0.1:"+remote, back)
		}
		cmd = exec.Command("scp", args...)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Errorf("%v: %v\n%s", cmd.Args, err, out)
	}
}

func hashFile(b *testing.B, p string) [32]byte {
	f, err := os.Open(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

func copyFile(b *testing.B, from, to string) {
	in, err := os.Open(from)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		b.Fatal(err)
	}
	out.Close()
}
