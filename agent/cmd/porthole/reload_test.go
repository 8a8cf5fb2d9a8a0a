package main

import (
	"bufio"
	"bytes"
	"encoding/pem"
	"errors"
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

	"golang.org/x/crypto/bcrypt"

	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
)

// agentProcess runs `porthole agent -c path` in this process, with the log
// (which the agent writes to os.Stderr) captured.
type agentProcess struct {
	mu   sync.Mutex
	log  bytes.Buffer
	code chan int
}

func (p *agentProcess) logged() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

func (p *agentProcess) waitLog(t *testing.T, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(p.logged(), want) {
			return
		}
	}
	t.Fatalf("the agent's log never said %q:\n%s", want, p.logged())
}

func startAgent(t *testing.T, path string) *agentProcess {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = w
	p := &agentProcess{code: make(chan int, 1)}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			p.mu.Lock()
			p.log.Write(buf[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() { p.code <- run([]string{"agent", "-c", path}, strings.NewReader(""), io.Discard, io.Discard) }()
	t.Cleanup(func() {
		select {
		case <-p.code:
		default:
			syscall.Kill(os.Getpid(), syscall.SIGTERM)
			<-p.code
		}
		os.Stderr = stderr
		w.Close()
		<-copied
		r.Close()
	})
	p.waitLog(t, "porthole agent started")
	return p
}

// A SIGHUP with a config that the agent would refuse at its next start (and
// that `check-config -start`, which init scripts gate the start on, refuses)
// keeps the running config and says why. It was taken: its service map
// applied, and only "needs a restart" said, a restart that then fails (exit 1).
func TestReloadRefusesConfigTheAgentWouldNotStartWith(t *testing.T) {
	path, _ := deviceConfig(t)
	p := startAgent(t, path)
	b, _ := os.ReadFile(path)
	// A directory without a certificate: one not there yet is a warning
	// (TestReloadWithFilesNotThereYet).
	os.WriteFile(path, append(b, "[tunnel]\nca_file = \""+t.TempDir()+"\"\n"...), 0o600)
	if code, _, errs := runCmd(t, nil, "check-config", "-start", "-c", path); code != exitUsage {
		t.Fatalf("check-config -start on the new config: exit %d (%s), want %d", code, errs, exitUsage)
	}
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	p.waitLog(t, "reload")
	time.Sleep(100 * time.Millisecond)
	if got := p.logged(); !strings.Contains(got, "reload refused") || !strings.Contains(got, "tunnel.ca_file") {
		t.Errorf("after SIGHUP with a config the agent cannot start with, the log says:\n%s\nwant the reload refused, naming tunnel.ca_file", got)
	}
}

// A reload (SIGHUP) while the MQTT certificate files on disk do not load (a
// rotation caught halfway, a key put in place encrypted) applies what a
// reload applies ([services], log.level, who may log in) and says at WARN
// that the files do not load: a reload does not read them, and the running
// listener keeps the pair it has. It was refused ("reload refused: config
// invalid"): an ssh.password_hashes entry taken away was not applied. A
// config that names other files, which would stop the next start, is still
// refused.
func TestReloadWithIdentityFilesNotLoading(t *testing.T) {
	dir := t.TempDir()
	dev := writeDevice(t, dir)
	p := startAgent(t, dev.path)
	_, otherKey := mqtttest.NewPKI(t).Client(t, "other")
	other, err := os.ReadFile(otherKey)
	if err != nil {
		t.Fatal(err)
	}
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("x")})
	const warned = "certificate files do not load:"
	for i, tc := range []struct {
		name string
		key  []byte
		want string
	}{
		{"the new key beside the old certificate", other, "private key does not match public key"},
		{"a key encrypted", encrypted, "is encrypted with a passphrase"},
	} {
		if err := os.WriteFile(dev.key, tc.key, 0o600); err != nil {
			t.Fatal(err)
		}
		syscall.Kill(os.Getpid(), syscall.SIGHUP)
		reloads := func(log string) int {
			return strings.Count(log, "reloaded the service map") + strings.Count(log, "reload refused")
		}
		for deadline := time.Now().Add(10 * time.Second); reloads(p.logged()) <= i && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		got := p.logged()
		if strings.Contains(got, "reload refused") || strings.Count(got, "reloaded the service map") != i+1 {
			t.Fatalf("%s: after SIGHUP the log says:\n%s\nwant the reload applied", tc.name, got)
		}
		if strings.Count(got, warned) != i+1 || !strings.Contains(got, tc.want) {
			t.Errorf("%s: after SIGHUP the log says:\n%s\nwant a warning %q... %q", tc.name, got, warned, tc.want)
		}
	}
	// Another key file, encrypted: the restart the reload would ask for
	// would fail (exit 1).
	bad := filepath.Join(dir, "other.key")
	os.WriteFile(bad, encrypted, 0o600)
	b, _ := os.ReadFile(dev.path)
	os.WriteFile(dev.path, bytes.Replace(b, []byte(`"`+dev.key+`"`), []byte(`"`+bad+`"`), 1), 0o600)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	p.waitLog(t, "reload refused")
	if got := p.logged(); !strings.Contains(got, "config: mqtt.key_file: "+bad+" is encrypted") {
		t.Errorf("after SIGHUP with mqtt.key_file naming an encrypted key, the log says:\n%s\nwant the reload refused, naming it", got)
	}
}

// A reload (SIGHUP) with a tunnel.ca_file or an ssh.host_keys file not there
// yet (storage mounted later) is applied, as check-config -start passes it:
// a reload reads neither, and the next start exits 2 until they are there,
// which init systems restart. It says so at WARN, naming each.
func TestReloadWithFilesNotThereYet(t *testing.T) {
	path, _ := deviceConfig(t)
	p := startAgent(t, path)
	storage := filepath.Join(t.TempDir(), "persist")
	ca, key := filepath.Join(storage, "ca.pem"), filepath.Join(storage, "ssh_host_ecdsa_key")
	b, _ := os.ReadFile(path)
	os.WriteFile(path, append(b, "[tunnel]\nca_file = \""+ca+"\"\n[ssh]\nhost_keys = [\""+key+"\"]\n"...), 0o600)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	p.waitLog(t, "reload")
	time.Sleep(100 * time.Millisecond)
	got := p.logged()
	if strings.Contains(got, "reload refused") || !strings.Contains(got, "reloaded the service map") {
		t.Fatalf("after SIGHUP the log says:\n%s\nwant the reload applied", got)
	}
	for _, want := range []string{"tunnel.ca_file: stat " + ca, "ssh.host_keys: reading host key " + key} {
		if !strings.Contains(got, want) {
			t.Errorf("after SIGHUP the log says:\n%s\nwant a warning %q", got, want)
		}
	}
	if n := strings.Count(got, "exit (2) at start"); n != 2 {
		t.Errorf("after SIGHUP the log says:\n%s\nwant 2 warnings that the agent will exit (2) at start, got %d", got, n)
	}
}

// check-config -start, which init scripts run from wherever the operator ran
// them, and the agent, which its init system starts in /, read the same
// config the same way: a file given by a relative path (mqtt.cert_file =
// "device.pem.crt" beside the config) names another file for each working
// directory, so check-config said ok in /etc/porthole and the agent, started
// in /, exited 1. Such a path is read as builds before 8a87b9f read it (which
// a fielded device may run on), with a warning naming the key and the working
// directory wherever check-config runs; where the file is not, it is refused.
func TestRelativeFilePathsWarnedWhereverCheckConfigRuns(t *testing.T) {
	dev := writeDevice(t, t.TempDir())
	b, _ := os.ReadFile(dev.path)
	s := string(b)
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(line, " = "); ok && strings.HasSuffix(k, "_file") {
			p := strings.Trim(v, `"`)
			link := filepath.Join(filepath.Dir(dev.path), filepath.Base(p))
			os.Symlink(p, link)
			s = strings.Replace(s, line, k+" = "+strconv.Quote(filepath.Base(p)), 1)
		}
	}
	os.WriteFile(dev.path, []byte(s), 0o600)
	for _, tc := range []struct {
		dir  string
		code int
		want string
	}{
		{filepath.Dir(dev.path), 0, `mqtt.ca_file "ca.pem" is a relative path: it is read from the working directory (` + filepath.Dir(dev.path) + `)`},
		{"/", exitUsage, "mqtt.ca_file: open ca.pem: no such file or directory"},
	} {
		t.Chdir(tc.dir)
		code, _, errs := runCmd(t, nil, "check-config", "-start", "-c", dev.path)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("check-config -start in %s: exit %d, stderr %q; want %d and %q", tc.dir, code, errs, tc.code, tc.want)
		}
	}
}

// A burst of SIGHUPs (reload_config run in a loop by a provisioning job, a
// config tool that reloads after every key) must not crowd out the SIGTERM
// that follows: signals shared one channel of 4, which package signal does not
// block on, so with the burst's reloads still queued the SIGTERM was dropped
// and the agent ran on until the init system's SIGKILL, which saves no
// tunnel and ends no session cleanly.
//
// A reload reads the config and every file it names (tunnel.ca_file may be a
// directory such as /etc/ssl/certs); here a directory of many CA files makes
// one take the milliseconds it takes on a router's CPU and flash.
func TestReloadBurstDoesNotLoseSIGTERM(t *testing.T) {
	dev := writeDevice(t, t.TempDir())
	ca, _ := os.ReadFile(dev.ca)
	cas := t.TempDir()
	for i := range 2000 {
		os.WriteFile(filepath.Join(cas, fmt.Sprintf("ca%d.pem", i)), ca, 0o644)
	}
	b, _ := os.ReadFile(dev.path)
	os.WriteFile(dev.path, append(b, "[tunnel]\nca_file = \""+cas+"\"\n"...), 0o600)
	p := startAgent(t, dev.path)
	for range 200 {
		syscall.Kill(os.Getpid(), syscall.SIGHUP)
		time.Sleep(200 * time.Microsecond)
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	defer func() { t.Logf("reloads: %d", strings.Count(p.logged(), "reloaded the service map")) }()
	select {
	case code := <-p.code:
		p.code <- code // for startAgent's cleanup
	case <-time.After(8 * time.Second):
		t.Fatalf("the agent still runs 8 s after a SIGTERM that followed a burst of SIGHUPs:\n%s", p.logged())
	}
}

// A SIGHUP that comes while the agent starts (an init system's reload right
// after its start: OpenWrt's reload_config after a first uci commit, a
// provisioning job's `systemctl reload`) killed the agent: its handler was
// installed only after the config had been read and the agent built, and
// until then Go's default for SIGHUP is to exit. systemd does not restart a
// service that a SIGHUP ended (a clean signal for Restart=on-failure), and the
// SysV script none at all, so the device stayed off the network. The test
// sends the SIGHUP when the agent opens its config file.
func TestSIGHUPDuringStartDoesNotKill(t *testing.T) {
	path, _ := deviceConfig(t)
	in, err := syscall.InotifyInit1(syscall.IN_CLOEXEC)
	if err != nil {
		t.Skip("inotify:", err)
	}
	defer syscall.Close(in)
	if _, err := syscall.InotifyAddWatch(in, path, syscall.IN_OPEN); err != nil {
		t.Fatal(err)
	}
	cmd, lines := childPorthole(t, "agent", "-c", path)
	buf := make([]byte, 4096)
	if _, err := syscall.Read(in, buf); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	var logged []string
	timeout := time.After(10 * time.Second)
	for started := false; !started; {
		select {
		case l, ok := <-lines:
			if !ok {
				err := cmd.Wait()
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
						t.Fatalf("the agent was killed by %v while starting:\n%s", ws.Signal(), strings.Join(logged, "\n"))
					}
				}
				t.Fatalf("the agent ended while starting (%v):\n%s", err, strings.Join(logged, "\n"))
			}
			logged = append(logged, l)
			started = strings.Contains(l, "porthole agent started")
		case <-timeout:
			t.Fatalf("the agent did not start in 10 s:\n%s", strings.Join(logged, "\n"))
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	for l := range lines {
		logged = append(logged, l)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("after SIGTERM: %v, want exit 0:\n%s", err, strings.Join(logged, "\n"))
	}
}

// The agent's log output (its stderr, a pipe to a logger) goes away: the
// agent goes on, as logWriter promises of a destination that stops taking
// lines. Go kills a program whose write to fd 2 fails with EPIPE unless it
// handles SIGPIPE: the next line (a reload's, here) ended the agent, every
// login it served with it, without its stop.
func TestAgentSurvivesLogPipeClosed(t *testing.T) {
	path, _ := deviceConfig(t)
	cmd, r := startChild(t, "agent", "-c", path)
	exited := make(chan *os.ProcessState, 1)
	go func() { st, _ := cmd.Process.Wait(); exited <- st }()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "porthole agent started") {
			break
		}
	}
	r.Close() // the logger goes away
	time.Sleep(200 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGHUP) // a reload, which logs a line
	select {
	case st := <-exited:
		t.Fatalf("the agent exited when its log output went away: %v", st)
	case <-time.After(2 * time.Second):
	}
}

// A SIGHUP with a new ssh.listen whose port another daemon holds (the
// router's dropbear on :22) is taken with "needs a restart", and check-config
// -start, which init scripts run before that restart, says ok. The restarted
// agent exited 2 before it connected to the broker, and again at each respawn
// for as long as the port stayed taken: no tunnel reached the device to mend
// its config. It now runs, and says at ERROR what it cannot listen on.
func TestRestartWithSSHListenTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	path, _ := deviceConfig(t)
	p := startAgent(t, path)
	b, _ := os.ReadFile(path)
	os.WriteFile(path, append(b, "[ssh]\nlisten = \""+addr+"\"\n"...), 0o600)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	p.waitLog(t, "need a restart")
	if code, _, errs := runCmd(t, nil, "check-config", "-start", "-c", path); code != 0 {
		t.Fatalf("check-config -start with ssh.listen taken: exit %d (%s), want 0", code, errs)
	}
	// The restart the reload asked for.
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	code := <-p.code
	p.code <- code // for startAgent's cleanup
	p = startAgent(t, path)
	p.waitLog(t, "ssh.listen: cannot listen")
	for _, line := range strings.Split(p.logged(), "\n") {
		if strings.Contains(line, "ssh.listen: cannot listen") && (!strings.Contains(line, "level=ERROR") || !strings.Contains(line, addr)) {
			t.Errorf("the log line does not say at ERROR which address cannot be listened on: %s", line)
		}
	}
	// An agent that logs the error and then exits is the defect too: it is
	// given a second to do so.
	select {
	case code := <-p.code:
		p.code <- code
		t.Errorf("the restarted agent exited %d with ssh.listen %s taken:\n%s", code, addr, p.logged())
	case <-time.After(time.Second):
	}
}

// A reload right after the start (systemctl reload after systemctl start, a
// provisioning job) could reach the agent during Go's start-up, before main
// installs the SIGHUP handler, where Go's default for SIGHUP still kills it:
// systemd takes that as a clean end and does not restart it. No code in main
// can close that window, so the unit is Type=notify: systemd holds reloads
// back until the agent says READY=1 on $NOTIFY_SOCKET, which it does once it
// takes SIGHUP as a reload. The test plays systemd: it waits for READY=1,
// then reloads at once.
func TestAgentNotifiesReadyAfterSignalHandlers(t *testing.T) {
	path, _ := deviceConfig(t)
	sock := filepath.Join(t.TempDir(), "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	cmd, lines := childPorthole(t, "agent", "-c", path)
	l.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 256)
	n, err := l.Read(b)
	if err != nil || string(b[:n]) != "READY=1" {
		t.Fatalf("on NOTIFY_SOCKET: %q, %v; want READY=1", b[:n], err)
	}
	cmd.Process.Signal(syscall.SIGHUP) // systemctl reload, as soon as systemd lets it
	var logged []string
	for timeout := time.After(10 * time.Second); !strings.Contains(strings.Join(logged, "\n"), "reloaded"); {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the agent ended after READY=1 and a SIGHUP (%v):\n%s", cmd.Wait(), strings.Join(logged, "\n"))
			}
			logged = append(logged, l)
		case <-timeout:
			t.Fatalf("no reload in 10 s after READY=1 and a SIGHUP:\n%s", strings.Join(logged, "\n"))
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	for l := range lines {
		logged = append(logged, l)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("after SIGTERM: %v, want exit 0:\n%s", err, strings.Join(logged, "\n"))
	}
}

// notifyReady speaks to an abstract socket ('@'), and does nothing without
// NOTIFY_SOCKET.
func TestNotifyReady(t *testing.T) {
	name := "@porthole-test-" + strconv.Itoa(os.Getpid())
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t.Setenv("NOTIFY_SOCKET", name)
	if err := notifyReady(); err != nil {
		t.Fatalf("notifyReady on %s: %v", name, err)
	}
	l.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 256)
	if n, err := l.Read(b); err != nil || string(b[:n]) != "READY=1" {
		t.Errorf("on %s: %q, %v; want READY=1", name, b[:n], err)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := notifyReady(); err != nil {
		t.Errorf("notifyReady without NOTIFY_SOCKET: %v, want nil", err)
	}
}

// A NOTIFY_SOCKET that does not answer (not under systemd, a stale variable)
// never stops the agent: it says so once and runs.
func TestAgentRunsWithBrokenNotifySocket(t *testing.T) {
	path, _ := deviceConfig(t)
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "missing"))
	p := startAgent(t, path)
	if got := p.logged(); strings.Count(got, "cannot tell systemd") != 1 {
		t.Errorf("the agent's log:\n%s\nwant one warning that it cannot tell systemd it has started", got)
	}
}

// A reload (SIGHUP) with a password hash of a cost the agent does not use
// (above 20) says so, as the start does: it logged only "reloaded", and the
// user whose new hash it was could no longer log in by password, with
// nothing in the agent's log to say why (kill -HUP runs no check-config).
func TestReloadSaysPasswordHashNotUsed(t *testing.T) {
	path, _ := deviceConfig(t)
	p := startAgent(t, path)
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	costly := strings.Replace(string(hash), "$04$", "$21$", 1) // never checked: no need to wait for cost 21
	b, _ := os.ReadFile(path)
	os.WriteFile(path, append(b, fmt.Sprintf("[ssh]\npassword_hashes = { root = %q }\n", costly)...), 0o600)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	p.waitLog(t, "reload")
	time.Sleep(100 * time.Millisecond)
	got := p.logged()
	if !strings.Contains(got, "ssh.password_hashes.root: bcrypt cost 21 is not used") {
		t.Errorf("after SIGHUP with root's hash of cost 21, the log says:\n%s\nwant a warning that it is not used", got)
	}
}
