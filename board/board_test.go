package board

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest/hostenv"
	"github.com/porthole-iot/porthole/tools/tunneld"
)

func loadConf(t *testing.T, name string) Conf {
	t.Helper()
	c, err := Load(".", name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// boards lists the board folders, or those named in PORTHOLE_BOARDS (comma
// separated; make board BOARD=... sets it).
func boards(t *testing.T) []string {
	if env := os.Getenv("PORTHOLE_BOARDS"); env != "" {
		return strings.Split(env, ",")
	}
	names := Names(".")
	if len(names) == 0 {
		t.Fatal("no board folders (qemu-*/board.conf)")
	}
	return names
}

// need skips (or, under CI=true, fails) when a program the test runs is missing.
func need(t *testing.T, progs ...string) {
	t.Helper()
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			msg := fmt.Sprintf("%s not found: the board test needs it (tools/deps.sh board installs the Debian packages)", p)
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
}

// TestBoards boots every QEMU board and, end to end: the agent in the guest
// reaches the host's broker and tunneling service at 10.0.2.2, the host opens a
// tunnel and notifies the board's thing, the host's porthole connect and the
// OpenSSH client log in through it, check uname -m, move 4 MiB with sftp both
// ways and power the board off. Boot-to-subscribed time, RSS (smaps_rollup) and VmSize are
// logged, not asserted.
func TestBoards(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU boards for minutes; not with -short")
	}
	if os.Getenv("PORTHOLE_BOARD_TEST") != "1" {
		// make test runs this stage on its own after the others (and make board
		// for one board), so that the boards do not share the two cores with
		// the race-enabled unit tests of ./...
		t.Skip("set PORTHOLE_BOARD_TEST=1 to boot the QEMU boards (make test and make board do)")
	}
	need(t, "cpio", "readelf", "apt-get", "dpkg-deb", "gzip", "ssh", "sftp")
	names := boards(t)
	h := newHost(t)
	for _, name := range names {
		c := loadConf(t, name)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			need(t, c.Emulator())
			runBoard(t, h, c)
		})
	}
}

func runBoard(t *testing.T, h *host, c Conf) {
	start := time.Now()
	dir := t.TempDir()

	// The device binary, built like make cross builds it.
	bin := filepath.Join(dir, "porthole")
	build, err := c.GoBuild(context.Background(), bin, "board-test")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build for %s: %v\n%s", c.GOARCH, err, out)
	}
	st, _ := os.Stat(bin)
	experiment := "GOEXPERIMENT unset"
	if info, err := buildinfo.ReadFile(bin); err == nil {
		for _, s := range info.Settings {
			if s.Key == "GOEXPERIMENT" {
				experiment = "GOEXPERIMENT=" + s.Value
			}
		}
	}
	t.Logf("porthole for %s %s (%s): %d bytes", c.GOARCH, c.GOENV, experiment, st.Size())

	overlay := filepath.Join(dir, "overlay")
	writeOverlay(t, h, c.Name, overlay)
	out := filepath.Join(dir, "out")
	if b, err := exec.Command("./build.sh", c.Name, bin, overlay, out).CombinedOutput(); err != nil {
		t.Fatalf("build.sh %s: %v\n%s", c.Name, err, b)
	} else {
		t.Logf("%s", bytes.TrimSpace(b))
	}
	t.Logf("image built in %v", time.Since(start).Round(time.Millisecond))

	// Boot, following the serial console.
	ctx, cancel := context.WithTimeout(context.Background(), c.BootTimeout+4*time.Minute)
	defer cancel()
	fwd, directPort := "", 0
	if benchMiB() > 0 {
		directPort = freePort(t)
		fwd = strconv.Itoa(directPort)
	}
	qemu := exec.CommandContext(ctx, "./boot.sh", c.Name, out, fwd, c.KernelArgs)
	qemu.WaitDelay = 5 * time.Second
	qemu.SysProcAttr = orphanKill() // boot.sh execs QEMU: the signal is QEMU's
	console, err := qemu.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	qemu.Stderr = qemu.Stdout
	booted := time.Now()
	if err := qemu.Start(); err != nil {
		t.Fatalf("boot.sh %s: %v", c.Name, err)
	}
	ready := make(chan struct{})
	idleMem := make(chan string, 1) // the first "agent memory" line after ready
	exited := make(chan struct{})
	var lines sync.WaitGroup
	lines.Add(1)
	go func() {
		defer lines.Done()
		var once sync.Once
		subscribed := false
		sc := bufio.NewScanner(console)
		for sc.Scan() {
			line := sc.Text()
			t.Logf("[%s %6.1fs] %s", c.Name, time.Since(booted).Seconds(), line)
			if strings.Contains(line, "notify subscription granted") {
				once.Do(func() { close(ready) })
				subscribed = true
			}
			if _, m, ok := strings.Cut(line, "board: agent memory "); ok && subscribed {
				select {
				case idleMem <- m:
				default:
				}
			}
		}
	}()
	go func() {
		lines.Wait()
		qemu.Wait()
		close(exited)
	}()
	defer func() {
		cancel()
		<-exited
	}()

	select {
	case <-ready:
		t.Logf("%s: boot to agent subscribed: %v", c.Name, time.Since(booted).Round(100*time.Millisecond))
	case <-exited:
		t.Fatalf("%s: QEMU exited before the agent subscribed", c.Name)
	case <-time.After(c.BootTimeout):
		t.Fatalf("%s: agent not subscribed %v after boot (see the console above)", c.Name, c.BootTimeout)
	}

	// The idle figure of the memory budget: the agent with its MQTT session and
	// no tunnel, from board.sh's report on the console (every 5 s, unless a
	// lost timer interrupt holds its sleep: see guestStall).
	const idleReport = 40 * time.Second
	select {
	case m := <-idleMem:
		t.Logf("%s: agent memory, idle (MQTT session, no tunnel): %s", c.Name, m)
	case <-time.After(idleReport):
		t.Logf("%s: no agent memory report on the console within %v of the subscription", c.Name, idleReport)
	}

	// Open a tunnel for this thing (tunneld notifies the device through the
	// broker), wait for the device's side, then connect as the operator.
	open, err := h.tunnels.OpenTunnel(ctx, &tunneld.OpenTunnelInput{Description: "board test " + c.Name,
		DestinationConfig: &tunneld.DestinationConfig{ThingName: c.Name, Services: []string{"SSH"}}})
	if err != nil {
		t.Fatalf("OpenTunnel: %v", err)
	}
	defer h.tunnels.CloseTunnel(context.Background(), &tunneld.CloseTunnelInput{TunnelID: open.TunnelID})
	// Connect the operator's side once the device's is up: a source that connects
	// first loses its first STREAM_START to the data plane ("peer not connected"),
	// and then its later connections never reach the destination either (seen
	// with tunneltest; reported to the agent/tunnel owner).
	if err := waitDestination(ctx, h, open.TunnelID, 2*guestStall); err != nil {
		t.Fatalf("%s: the agent did not connect the tunnel's destination side: %v", c.Name, err)
	}
	t.Logf("%s: tunnel destination connected %v after boot", c.Name, time.Since(booted).Round(100*time.Millisecond))
	tokenFile := filepath.Join(dir, "source-token")
	if err := os.WriteFile(tokenFile, []byte(open.SourceAccessToken), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	connect := exec.CommandContext(ctx, h.porthole, "connect", "--endpoint", h.dataURL,
		"--allow-insecure-websocket", "--token-file", tokenFile, "-L", fmt.Sprintf("SSH=127.0.0.1:%d", port))
	connect.Env = append(hostenv.WithoutProxies(os.Environ()), "XDG_CACHE_HOME="+filepath.Join(dir, "cache"))
	connect.Stdout = testWriter{t, c.Name + " connect"}
	connect.Stderr = connect.Stdout
	connect.WaitDelay = 5 * time.Second
	connect.SysProcAttr = orphanKill()
	if err := connect.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		connect.Process.Kill()
		connect.Wait()
	}()

	ssh := func(timeout time.Duration, command string) (string, error) {
		cctx, ccancel := context.WithTimeout(ctx, timeout)
		defer ccancel()
		cmd := exec.CommandContext(cctx, "ssh", append(sshOpts(h, port), "root@127.0.0.1", command)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		b, err := cmd.Output()
		if err != nil {
			return string(b), fmt.Errorf("ssh %q: %v: %s", command, err, bytes.TrimSpace(stderr.Bytes()))
		}
		return string(b), nil
	}

	// The first login waits for the destination to connect through the tunnel.
	var uname string
	deadline := time.Now().Add(2 * guestStall)
	for {
		uname, err = ssh(guestStall, "uname -m")
		if err == nil || time.Now().After(deadline) {
			break
		}
		t.Logf("%s: login not yet: %v", c.Name, err)
		time.Sleep(2 * time.Second)
	}
	if err != nil {
		t.Fatalf("%s: login through the tunnel: %v", c.Name, err)
	}
	t.Logf("%s: first login through the tunnel %v after boot", c.Name, time.Since(booted).Round(100*time.Millisecond))
	if got := strings.TrimSpace(uname); got != c.UnameM {
		t.Errorf("%s: uname -m = %q, want %q", c.Name, got, c.UnameM)
	}

	mem, err := ssh(guestStall, `for p in $(pidof porthole); do echo "pid $p $(grep -E '^(Rss|Anonymous):' /proc/$p/smaps_rollup | tr -s ' \t\n' ' ')(smaps_rollup); status $(grep -E '^(VmPeak|VmSize|VmHWM|VmRSS)' /proc/$p/status | tr -s ' \t\n' ' ')"; done; `+
		`echo "vm.overcommit_memory=$(cat /proc/sys/vm/overcommit_memory) $(grep -E '^(MemTotal|CommitLimit|Committed_AS)' /proc/meminfo | tr -s ' \t\n' ' ')"`)
	if err != nil {
		t.Errorf("%s: memory figures: %v", c.Name, err)
	}
	for _, l := range strings.Split(strings.TrimSpace(mem), "\n") {
		t.Logf("%s: agent memory: %s", c.Name, l)
	}

	// 4 MiB with sftp, up and back down, checked by hash on both ends.
	blob := make([]byte, 4<<20)
	rand.Read(blob)
	local := filepath.Join(dir, "blob")
	if err := os.WriteFile(local, blob, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(blob)
	want := hex.EncodeToString(sum[:])
	batch := filepath.Join(dir, "batch")
	back := filepath.Join(dir, "blob.back")
	os.WriteFile(batch, []byte(fmt.Sprintf("put %s /tmp/blob\nget /tmp/blob %s\n", local, back)), 0o600)
	sctx, scancel := context.WithTimeout(ctx, 3*time.Minute)
	defer scancel()
	sftpStart := time.Now()
	sftp := exec.CommandContext(sctx, "sftp", append(append([]string{"-P", strconv.Itoa(port)}, sftpOpts(h)...), "-b", batch, "root@127.0.0.1")...)
	if b, err := sftp.CombinedOutput(); err != nil {
		t.Fatalf("%s: sftp: %v\n%s", c.Name, err, b)
	}
	t.Logf("%s: sftp put+get of 4 MiB: %v", c.Name, time.Since(sftpStart).Round(100*time.Millisecond))
	remote, err := ssh(guestStall, "sha256sum /tmp/blob")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(remote + " ")[0]; got != want {
		t.Errorf("%s: sha256 on the board = %s, want %s", c.Name, got, want)
	}
	if b, err := os.ReadFile(back); err != nil || sha256.Sum256(b) != sum {
		t.Errorf("%s: the file fetched back differs (read error %v)", c.Name, err)
	}

	if n := benchMiB(); n > 0 {
		loadedMemory(t, h, c.Name, port, batch, ssh)
		benchBoard(t, h, c.Name, dir, n, port, directPort, ssh)
	}

	// Power off; QEMU exits (-no-reboot). A guest can stall for seconds while
	// four emulated boards share two host cores (CI once saw 15 s without a
	// console line and the guest clock stepping back): an ssh that timed out
	// before poweroff ran hung its session up, so it is tried again.
	for attempt := 1; ; attempt++ {
		if _, err := ssh(30*time.Second, "poweroff -f"); err != nil {
			t.Logf("%s: poweroff, attempt %d: %v", c.Name, attempt, err)
		}
		select {
		case <-exited:
			t.Logf("%s: powered off; whole run %v", c.Name, time.Since(start).Round(100*time.Millisecond))
			return
		case <-time.After(30 * time.Second):
		}
		if attempt == 3 {
			t.Errorf("%s: QEMU still running after %d poweroff -f, 30 s apart", c.Name, attempt)
			return
		}
	}
}

// orphanKill has a child killed with the test process, also when that ends
// without its clean-ups (go test -timeout panics, which this stage's 12 minutes
// for four boards can meet): a QEMU guest and porthole connect were left
// running, adopted by init, QEMU with a share of a core and its host forward.
func orphanKill() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// waitDestination polls DescribeTunnel until the destination side is connected.
func waitDestination(ctx context.Context, h *host, id string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		out, err := h.tunnels.DescribeTunnel(ctx, &tunneld.DescribeTunnelInput{TunnelID: id})
		if err != nil {
			return err
		}
		if cs := out.Tunnel.DestinationConnectionState; cs != nil && cs.Status == tunneld.StatusConnected {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("destination still not connected after %v", d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func writeOverlay(t *testing.T, h *host, thing, dir string) {
	t.Helper()
	listen := ""
	if benchMiB() > 0 {
		// Direct SSH for the comparison, reachable only through QEMU's host
		// forward on the host's loopback (boot.sh).
		listen = `listen = "0.0.0.0:22"`
	}
	etc := filepath.Join(dir, "etc", "porthole")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := h.pki.Client(t, thing)
	copyFile(t, h.caFile, filepath.Join(etc, "ca.pem"), 0o644)
	copyFile(t, certFile, filepath.Join(etc, "device.pem.crt"), 0o644)
	copyFile(t, keyFile, filepath.Join(etc, "device.pem.key"), 0o600)
	if err := os.WriteFile(filepath.Join(etc, "authorized_keys"), h.authKeys, 0o600); err != nil {
		t.Fatal(err)
	}
	_, tport, _ := net.SplitHostPort(strings.TrimPrefix(h.dataURL, "ws://"))
	cfg := fmt.Sprintf(`# written by board_test.go
thing_name = %q
data_dir = "/var/lib/porthole"

[mqtt]
endpoint = "10.0.2.2:%d"
ca_file = "/etc/porthole/ca.pem"
cert_file = "/etc/porthole/device.pem.crt"
key_file = "/etc/porthole/device.pem.key"

[tunnel]
endpoint = "ws://10.0.2.2:%s"
allow_insecure_websocket = true

[services]
SSH = "builtin"

[ssh]
authorized_keys = ["/etc/porthole/authorized_keys"]
%s

[log]
level = "info"
`, thing, h.mqttPort, tport, listen)
	if err := os.WriteFile(filepath.Join(etc, "porthole.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// guestStall bounds a step that waits for a guest. QEMU 7.2's Malta loses
// timer interrupts: the guest then freezes for one wrap of its count
// register, ~25.8 s (PLATFORM.md), and sometimes two or three times in a row
// (a lone mipsel board froze for 26 s while nine sessions were opened, and
// once for 34.7 s and then 51.7 s, when a login gave up at 60 s; its clock
// stepped back too). ARM guests do not stall, so the bound costs them nothing.
const guestStall = 90 * time.Second

// commonOpts are the OpenSSH client's options for the boards, without the
// machine's ssh_config or ssh-agent. ConnectTimeout also bounds the banner
// exchange (guestStall).
func commonOpts(h *host) []string {
	return []string{"-F", "/dev/null", "-o", "IdentityAgent=none", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
		"-o", "LogLevel=ERROR", "-o", fmt.Sprintf("ConnectTimeout=%d", int(guestStall.Seconds())), "-i", h.sshKey, "-o", "IdentitiesOnly=yes"}
}

func sshOpts(h *host, port int) []string {
	return append([]string{"-p", strconv.Itoa(port)}, commonOpts(h)...)
}

func sftpOpts(h *host) []string { return commonOpts(h) }

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// loadedMemory measures the agent's memory under the load of the memory budget
// (DESIGN.md: 10 SSH sessions and a file transfer): nine logins through the tunnel
// that each hold a session open, and the 4 MiB sftp put and get of batch as the
// tenth, all at once. It logs the agent's peak RSS (VmHWM, which on these MIPS
// kernels is exact; docs/size.md) and its RSS once the sessions have ended.
//
// The sftp starts once all nine sessions have said they are up, and they stay
// open until it has ended: a guest that stalls (guestStall) while they log in
// had the sftp run before them, after a fixed wait, and the peak was then not
// the scenario's. VmHWM is reset first (clear_refs 5, Linux 4.0), so that it is
// this scenario's peak, not the agent's since it started.
func loadedMemory(t *testing.T, h *host, name string, port int, batch string, ssh func(time.Duration, string) (string, error)) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := ssh(guestStall, `for p in $(pidof porthole); do echo 5 >/proc/$p/clear_refs; done`); err != nil {
		t.Errorf("%s: resetting the agent's VmHWM: %v", name, err)
	}
	type session struct {
		stdin io.Closer
		ended chan error // its ssh's exit, after it printed "held"
	}
	var sessions []session
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // a failure below ends the sessions
	up := make(chan error, 9)
	start := time.Now()
	for range 9 {
		cmd := exec.CommandContext(ctx, "ssh", append(sshOpts(h, port), "root@127.0.0.1", "echo up; read x; echo held")...)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ended := make(chan error, 1)
		sessions = append(sessions, session{stdin, ended})
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := bufio.NewReader(stdout)
			line, _ := r.ReadString('\n')
			if line == "up\n" {
				up <- nil
			}
			rest, _ := io.ReadAll(r)
			err := cmd.Wait()
			if err == nil && string(rest) != "held\n" {
				err = fmt.Errorf("it printed %q", line+string(rest))
			}
			if msg := bytes.TrimSpace(stderr.Bytes()); err != nil && len(msg) > 0 {
				err = fmt.Errorf("%v: %s", err, msg)
			}
			if line != "up\n" {
				up <- fmt.Errorf("held session did not log in: %v", err)
			}
			ended <- err
		}()
	}
	for range 9 {
		select {
		case err := <-up:
			if err != nil {
				t.Fatalf("%s: loaded memory: %v", name, err)
			}
		case <-time.After(2 * guestStall):
			t.Fatalf("%s: loaded memory: the nine sessions not all logged in after %v", name, 2*guestStall)
		}
	}
	t.Logf("%s: nine sessions logged in through the tunnel in %v", name, time.Since(start).Round(100*time.Millisecond))
	out, err := exec.CommandContext(ctx, "sftp", append(append([]string{"-P", strconv.Itoa(port)}, sftpOpts(h)...), "-b", batch, "root@127.0.0.1")...).CombinedOutput()
	if err != nil {
		t.Errorf("%s: loaded memory: sftp beside the sessions: %v: %s", name, err, out)
	}
	early := map[int]bool{}
	for i, s := range sessions {
		select {
		case err := <-s.ended:
			t.Errorf("%s: loaded memory: held session %d ended before the sftp did: %v", name, i, err)
			early[i] = true
		default:
		}
		s.stdin.Close()
	}
	for i, s := range sessions {
		if early[i] {
			continue
		}
		select {
		case err := <-s.ended:
			if err != nil {
				t.Errorf("%s: loaded memory: held session %d: %v", name, i, err)
			}
		case <-time.After(guestStall):
			t.Errorf("%s: loaded memory: held session %d still open %v after its stdin ended", name, i, guestStall)
		}
	}
	mem, err := ssh(guestStall, `for p in $(pidof porthole); do echo "pid $p peak $(grep -E '^VmHWM' /proc/$p/status | tr -s ' \t\n' ' ')now $(grep -E '^(Rss|Anonymous):' /proc/$p/smaps_rollup | tr -s ' \t\n' ' ')"; done`)
	if err != nil {
		t.Errorf("%s: memory figures: %v", name, err)
	}
	t.Logf("%s: agent memory, 9 sessions + sftp put/get of 4 MiB: %s", name, strings.TrimSpace(mem))
}

// benchMiB is PORTHOLE_BOARD_BENCH_MIB: with it, each board also measures scp
// throughput through the tunnel against direct SSH to the same agent (QEMU's host
// forward to the agent's [ssh] listen), a device-bound comparison: the emulated
// CPU is the bottleneck. 0 (unset) skips it; make test does not set it. Run one
// board at a time (PORTHOLE_BOARDS) so that the boards do not share the host's CPUs.
func benchMiB() int {
	n, _ := strconv.Atoi(os.Getenv("PORTHOLE_BOARD_BENCH_MIB"))
	return max(n, 0)
}

// benchBoard moves n MiB with scp up and down, through the tunnel (port) and
// directly (directPort), checks every transfer by hash and logs MiB/s, the ratio
// and the agent's CPU time per MiB as the guest kernel counts it. Both swing with
// the host's load (up to 2x from run to run on a 2-core host), so compare builds
// or settings over several runs made back to back. The CPU figure includes one
// SSH login besides the transfer's (the reading of the counters), the same for
// every figure.
func benchBoard(t *testing.T, h *host, name, dir string, n, port, directPort int, ssh func(time.Duration, string) (string, error)) {
	blob := make([]byte, n<<20)
	rand.Read(blob)
	sum := sha256.Sum256(blob)
	local := filepath.Join(dir, "bench")
	if err := os.WriteFile(local, blob, 0o600); err != nil {
		t.Fatal(err)
	}
	rate, cpu := map[string]float64{}, map[string]float64{}
	for _, dirn := range []string{"put", "get"} {
		for _, path := range []struct {
			name string
			port int
		}{{"tunnel", port}, {"direct", directPort}} {
			back := filepath.Join(dir, "bench.back")
			os.Remove(back)
			args := append([]string{"-P", strconv.Itoa(path.port)}, commonOpts(h)...)
			if dirn == "put" {
				args = append(args, local, "root@127.0.0.1:/tmp/bench")
			} else {
				args = append(args, "root@127.0.0.1:/tmp/bench", back)
			}
			cpu0 := agentCPU(t, name, ssh)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			t0 := time.Now()
			out, err := exec.CommandContext(ctx, "scp", args...).CombinedOutput()
			d := time.Since(t0)
			cancel()
			if err != nil {
				t.Fatalf("%s: scp %s %s: %v\n%s", name, dirn, path.name, err, out)
			}
			cpu[dirn+"/"+path.name] = (agentCPU(t, name, ssh) - cpu0).Seconds() * 1000 / float64(n)
			if dirn == "get" {
				if b, err := os.ReadFile(back); err != nil || sha256.Sum256(b) != sum {
					t.Fatalf("%s: scp get %s: the file differs (read error %v)", name, path.name, err)
				}
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				out, err := exec.CommandContext(ctx, "ssh", append(sshOpts(h, port), "root@127.0.0.1", "sha256sum /tmp/bench")...).Output()
				cancel()
				if got := strings.Fields(string(out) + " ")[0]; err != nil || got != hex.EncodeToString(sum[:]) {
					t.Fatalf("%s: scp put %s: sha256 on the board %q (%v)", name, path.name, got, err)
				}
			}
			rate[dirn+"/"+path.name] = float64(n) / d.Seconds()
		}
		t.Logf("%s: BENCH scp %s %d MiB: tunnel %.2f MiB/s, direct %.2f MiB/s, ratio %.2f; agent CPU tunnel %.0f ms/MiB, direct %.0f ms/MiB", name, dirn, n,
			rate[dirn+"/tunnel"], rate[dirn+"/direct"], rate[dirn+"/tunnel"]/rate[dirn+"/direct"], cpu[dirn+"/tunnel"], cpu[dirn+"/direct"])
	}
}

// agentCPU is the agent's user and system CPU time so far, read over SSH from
// /proc/PID/stat (fields 14 and 15, in the kernel's USER_HZ ticks of 10 ms).
func agentCPU(t *testing.T, name string, ssh func(time.Duration, string) (string, error)) time.Duration {
	t.Helper()
	out, err := ssh(guestStall, `cut -d' ' -f14,15 /proc/$(pidof porthole)/stat`)
	f := strings.Fields(out)
	if err != nil || len(f) != 2 {
		t.Fatalf("%s: the agent's CPU time: %q (%v)", name, out, err)
	}
	utime, err1 := strconv.Atoi(f[0])
	stime, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		t.Fatalf("%s: the agent's CPU time: %q", name, out)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
