package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
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
	os.WriteFile(path, append(b, "[tunnel]\nca_file = \"/nonexistent/ca.pem\"\n"...), 0o600)
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

// check-config -start, which init scripts run from wherever the operator ran
// them, and the agent, which its init system starts in /, read the same
// config the same way: a file given by a relative path (mqtt.cert_file =
// "device.pem.crt" beside the config) named another file for each working
// directory, so check-config said ok in /etc/porthole and the agent, started
// in /, exited 1. Such a path is refused, naming the key, wherever it runs.
func TestRelativeFilePathsRefusedWhereverCheckConfigRuns(t *testing.T) {
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
	for _, dir := range []string{filepath.Dir(dev.path), "/"} {
		t.Chdir(dir)
		code, _, errs := runCmd(t, nil, "check-config", "-start", "-c", dev.path)
		if code != exitUsage || !strings.Contains(errs, "mqtt.ca_file") || !strings.Contains(errs, "absolute") {
			t.Errorf("check-config -start in %s: exit %d, stderr %q; want %d and mqtt.ca_file refused as not absolute", dir, code, errs, exitUsage)
		}
	}
}
