#!/bin/bash
# tools/bench/budgets.sh OUT: the memory and throughput budgets for make size.
# Runs tools/bench's BenchmarkStack with the linux-amd64 device binary of make
# cross (dist/porthole-linux-amd64) as the agent, GOMAXPROCS=1 as the packages
# start it, and only what the budgets need: the sftp and scp uploads through the
# tunnel and direct, and the agent's memory idle and with 10 sessions and an
# upload. Its go test -v output goes to OUT for tools/sizereport -bench, which
# prints the verdicts. Under a minute; PORTHOLE_BENCH_MIB (default 64) sizes the
# uploads. Needs root, Mosquitto and OpenSSH (tools/deps.sh bench installs them);
# without them it says what is missing, writes an empty OUT and exits 0, so make
# size still reports the binaries' sizes.
set -euo pipefail
out=$(realpath -m "${1:?usage: tools/bench/budgets.sh OUT}")
cd "$(dirname "$0")/../.."
: >"$out"

bin=dist/porthole-linux-amd64
missing=()
[ -x "$bin" ] || missing+=("$bin (make cross)")
for p in mosquitto ssh sftp scp; do
	command -v "$p" >/dev/null || missing+=("$p (tools/deps.sh bench)")
done
[ "$(id -u)" = 0 ] || missing+=("root (the stack logs operators in as root)")
if [ ${#missing[@]} -gt 0 ]; then
	echo "budgets.sh: memory and throughput not measured; missing: ${missing[*]}" >&2
	exit 0
fi

echo "budgets.sh: BenchmarkStack, ${PORTHOLE_BENCH_MIB:-64} MiB uploads, agent $bin with GOMAXPROCS=1 ($(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg))" >&2
PORTHOLE_STACK_BIN=$PWD/$bin PORTHOLE_BENCH_AGENT_ENV=GOMAXPROCS=1 PORTHOLE_BENCH_MIB=${PORTHOLE_BENCH_MIB:-64} \
	go test -run '^$' -bench '^BenchmarkStack$/^((sftp|scp)-put|memory)$' -benchtime 1x -count 1 -timeout 10m -v ./tools/bench/ >"$out" 2>&1 || {
	echo "budgets.sh: BenchmarkStack failed:" >&2
	tail -20 "$out" >&2
	exit 1
}
