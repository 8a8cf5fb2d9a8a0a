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
# go test's whole output goes to a file, and the lines with the figures to the
# terminal as they come. The run's status is go test's: a benchmark that failed
# (a transfer whose hash differs, a stack that did not start) fails make bench,
# and then the whole output is shown, with the failure's reason the filter hides.
out=$(mktemp)
trap 'rm -f "$out"' EXIT
set +e +o pipefail
go test -run '^$' -bench "${BENCH:-^BenchmarkStack\$}" -benchtime 1x -count "${COUNT:-1}" -timeout 60m -v ./tools/bench/ 2>&1 | tee "$out" |
	grep --line-buffered -E '^(Benchmark|ok|FAIL|PASS)|RATIO|MEMORY|--- FAIL|bench_test.go'
status=${PIPESTATUS[0]}
set -e -o pipefail
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) after the run"
if [ "$status" -ne 0 ]; then
	echo
	echo "run.sh: go test failed (exit status $status); its whole output:"
	cat "$out"
	exit "$status"
fi
