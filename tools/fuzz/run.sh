#!/bin/sh
# Runs every fuzz target in the module for FUZZTIME each, JOBS targets at a
# time sharing the CPUs, and prints one summary line per target
# (executions, new interesting inputs, result). Logs go to LOGDIR.
#
#   tools/fuzz/run.sh                 # 10s each, 1 at a time
#   FUZZTIME=10m JOBS=2 tools/fuzz/run.sh
#
# New interesting inputs stay in Go's fuzz cache ($(go env GOCACHE)/fuzz);
# a failing input is written to the package's testdata/fuzz by go test.
set -eu
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-10s}
JOBS=${JOBS:-1}
# Workers per target: the CPUs shared among the jobs.
PAR=$(( $(nproc) / JOBS ))
[ "$PAR" -ge 1 ] || PAR=1
LOGDIR=${LOGDIR:-$(mktemp -d "${TMPDIR:-/tmp}/porthole-fuzz.XXXXXX")}
mkdir -p "$LOGDIR"
cd "$(dirname "$0")/../.."

list=$LOGDIR/targets
: >"$list"
: >"$LOGDIR/summary"
# A package whose tests do not build is a failure, not a package without targets;
# a module whose packages cannot be listed is one too (the loop would see none).
pkgs=$($GO list ./...)
for pkg in $pkgs; do
	if ! $GO test -list '^Fuzz' "$pkg" >"$LOGDIR/listing" 2>&1; then
		cat "$LOGDIR/listing" >&2
		echo "FAIL ${pkg#github.com/porthole-iot/porthole/}: its fuzz targets cannot be listed (the tests do not build?)" | tee -a "$LOGDIR/summary"
		continue
	fi
	grep '^Fuzz' "$LOGDIR/listing" | while read -r f; do
		echo "$pkg $f" >>"$list"
	done
done
if [ ! -s "$list" ]; then
	echo "fuzz: no fuzz target found" >&2
	exit 1
fi
echo "fuzz: $(wc -l <"$list") targets, $FUZZTIME each, $JOBS at a time with $PAR workers each, logs in $LOGDIR"

# Each job takes every JOBS-th line, so the queues are fixed and need no lock.
job=0
while [ "$job" -lt "$JOBS" ]; do
	(
		awk -v n="$JOBS" -v j="$job" 'NR % n == j' "$list" | while read -r pkg f; do
			log=$LOGDIR/$(echo "$pkg" | tr / _).$f.log
			if $GO test -run '^$' -fuzz "^$f\$" -fuzztime "$FUZZTIME" -timeout 0 -parallel "$PAR" "$pkg" >"$log" 2>&1; then
				res=ok
			else
				res=FAIL
			fi
			echo "$res ${pkg#github.com/porthole-iot/porthole/} $f: $(grep '^fuzz:' "$log" | tail -1 || true)" | tee -a "$LOGDIR/summary"
		done
	) &
	job=$((job + 1))
done
wait
if grep -q '^FAIL' "$LOGDIR/summary"; then
	echo "fuzz: failures (logs in $LOGDIR; a failing input is saved under its package's testdata/fuzz):"
	grep '^FAIL' "$LOGDIR/summary"
	exit 1
fi
