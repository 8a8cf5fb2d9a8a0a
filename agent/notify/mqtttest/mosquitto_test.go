package mqtttest

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBrokerDiesWithTheTestProcess: a test process that ends without its
// clean-ups (go test -timeout panics) takes its broker with it, instead of
// leaving it running, adopted by init.
func TestBrokerDiesWithTheTestProcess(t *testing.T) {
	if os.Getenv("MQTTTEST_CHILD") == "1" {
		b := StartMosquitto(t)
		os.Stdout.WriteString("broker pid " + strconv.Itoa(b.Pid()) + "\n")
		os.Exit(3) // no clean-up runs
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBrokerDiesWithTheTestProcess$", "-test.count=1")
	// The child's temporary directories (its broker's keys) are under this
	// test's own, so they go too: the child exits without its clean-ups.
	cmd.Env = append(os.Environ(), "MQTTTEST_CHILD=1", "TMPDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if errors.Is(err, syscall.ENOEXEC) {
		t.Skipf("the test binary cannot re-exec itself here (qemu-user without binfmt_misc): %v", err)
	}
	_, after, ok := strings.Cut(string(out), "broker pid ")
	if !ok {
		if strings.Contains(string(out), "SKIP") {
			t.Skipf("the child skipped:\n%s", out)
		}
		t.Fatalf("the child started no broker: %v\n%s", err, out)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(after, "\n", 2)[0]))
	if pid <= 0 {
		t.Fatalf("no broker pid in %q", out)
	}
	for deadline := time.Now().Add(5 * time.Second); alive(pid); {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the broker (pid %d) still runs 5 s after its test process ended", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether process pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	return !strings.HasPrefix(s[strings.LastIndexByte(s, ')')+1:], " Z")
}
