// Package bench measures the whole porthole path against direct SSH to the same
// server: throughput (sftp, scp), latency, agent memory, 128 V3 connections and
// agent CPU per MiB. It has no non-test code; run it with tools/bench/run.sh (or
// `make bench`), which prints the figures that go in docs/benchmarks.md.
package bench
