#!/bin/bash
# tools/bench/run.sh: the whole-path benchmarks of docs/benchmarks.md, with the
# facts about the machine they ran on. Needs root, Mosquitto and OpenSSH (make deps).
#   COUNT=3 tools/bench/run.sh            # three runs of everything
#   PORTHOLE_BENCH_MIB=64 tools/bench/run.sh
#   PORTHOLE_BENCH_AGENT_ENV="GOMEMLIMIT=off" tools/bench/run.sh   # the agent without its GC default
#   PORTHOLE_BENCH_AGENT_CPUS=0.5 tools/bench/run.sh  # the agent held to half a CPU, as a device
#   BENCH='BenchmarkStack/(sftp|scp)' tools/bench/run.sh  # only the transfers
#   PORTHOLE_BENCH_PLAIN_WS=1 tools/bench/run.sh     # ws:// between the proxies and tunneld: the tunnel without its two extra TLS hops
set -euo pipefail
cd "$(dirname "$0")/../.."
echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "commit:  $(git describe --always --dirty 2>/dev/null || echo unknown)"
echo "machine: $(uname -srm), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(free -g | awk '/Mem:/ {print $2}') GiB"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) before the run"
echo "go:      $(go version)"
echo "ssh:     $(ssh -V 2>&1)"
echo "size:    ${PORTHOLE_BENCH_MIB:-256} MiB per transfer; agent env: ${PORTHOLE_BENCH_AGENT_ENV:-(defaults)}; agent CPU limit: ${PORTHOLE_BENCH_AGENT_CPUS:-none}; data plane: $([ "${PORTHOLE_BENCH_PLAIN_WS:-}" = 1 ] && echo 'ws:// (no TLS)' || echo 'wss://')"
echo
go test -run '^$' -bench "${BENCH:-^BenchmarkStack\$}" -benchtime 1x -count "${COUNT:-1}" -timeout 60m -v ./tools/bench/ 2>&1 |
	grep -E '^(Benchmark|ok|FAIL|PASS)|RATIO|MEMORY|--- FAIL|bench_test.go' || true
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) after the run"
