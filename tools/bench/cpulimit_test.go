package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// agentCPUs is PORTHOLE_BENCH_AGENT_CPUS: the share of one CPU the agent may use
// (e.g. 0.5), or 0 for no limit. With a limit the agent is the bottleneck of both
// paths, as on a device, where the operator's machine and the tunneling service
// have CPU to spare; without one, every process of the path shares this host.
func agentCPUs(b *testing.B) float64 {
	s := os.Getenv("PORTHOLE_BENCH_AGENT_CPUS")
	if s == "" {
		return 0
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v <= 0 || v > 64 {
		b.Fatalf("PORTHOLE_BENCH_AGENT_CPUS=%q: want a number of CPUs such as 0.5", s)
	}
	return v
}

// limitCPU moves process pid into a new cgroup limited to cpus CPUs (cgroup v2
// cpu.max, or v1's cpu controller), and moves it back when the benchmark ends.
func limitCPU(b *testing.B, pid int, cpus float64) {
	const period = 100000 // µs
	quota := int(cpus * period)
	type layout struct{ root, limitFile, limit string }
	var l layout
	switch {
	case fileExists("/sys/fs/cgroup/cgroup.controllers"):
		l = layout{"/sys/fs/cgroup", "cpu.max", fmt.Sprintf("%d %d", quota, period)}
	case fileExists("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"):
		l = layout{"/sys/fs/cgroup/cpu", "cpu.cfs_quota_us", strconv.Itoa(quota)}
	default:
		b.Fatal("PORTHOLE_BENCH_AGENT_CPUS needs a cgroup cpu controller (/sys/fs/cgroup)")
	}
	dir := filepath.Join(l.root, fmt.Sprintf("porthole-bench-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatalf("limiting the agent's CPU (needs root): %v", err)
	}
	b.Cleanup(func() {
		// Back to the root group, then the group can go.
		os.WriteFile(filepath.Join(l.root, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
		os.Remove(dir)
	})
	if l.limitFile == "cpu.cfs_quota_us" {
		write(b, filepath.Join(dir, "cpu.cfs_period_us"), strconv.Itoa(period))
	}
	write(b, filepath.Join(dir, l.limitFile), l.limit)
	write(b, filepath.Join(dir, "cgroup.procs"), strconv.Itoa(pid))
	b.Logf("agent limited to %.2f CPU (%s)", cpus, dir)
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func write(b *testing.B, path, v string) {
	if err := os.WriteFile(path, []byte(v), 0); err != nil {
		b.Fatalf("limiting the agent's CPU: %v", err)
	}
}
