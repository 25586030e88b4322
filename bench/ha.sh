#!/usr/bin/env bash
# The origin high-availability part of `make bench` (issue #14), also
# `make bench-ha`: creates/s and p50/p99 at 1, 16 and 64 clients with
# -ack local and -ack replicated on R1 and R3 (three in-process servers),
# the R3 case at 64 clients with the servers as child processes next to
# two raw JetStream references on the same cluster (CPU per create on
# each side), and the takeover time (leader SIGKILL → first write
# accepted by the standby) with the default lease settings, and whether
# the leader keeps its lease when the lease bucket's stream leader is
# SIGKILLed. Writes bench/results/ha-latest.md.
#
#   BENCH_HA_BENCHTIME   creates per benchmark case (default 3000x)
#   BENCH_HA_TRIALS      failovers for the takeover figure (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
GO=${GO:-go}
benchtime=${BENCH_HA_BENCHTIME:-3000x}
trials=${BENCH_HA_TRIALS:-5}
mkdir -p bench/results
out=bench/results/ha-latest.md
tmp=$(mktemp)
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
{
  echo "# Origin HA benchmarks"
  echo
  echo "$(date -u +%FT%TZ), $(nproc) cores, load average $(loadavg) at the start."
  echo
  echo "## Creates: -ack local and replicated, R1 and R3 (in-process servers)"
  echo
  echo "\`go test -run '^\$' -bench 'BenchmarkCreateAck\$' -benchtime $benchtime ./origin/\`"
  echo
  echo '```'
  $GO test -run '^$' -bench 'BenchmarkCreateAck$' -benchtime "$benchtime" ./origin/ 2>&1 | grep -E '^Benchmark|^(ok|FAIL)'
  echo '```'
  echo
  echo "## R3 at 64 clients, servers as processes, with raw JetStream references (load average $(loadavg))"
  echo
  echo "\`go test -run '^\$' -bench 'BenchmarkCreateAckProcs' -benchtime $benchtime ./origin/\`"
  echo
  echo '```'
  $GO test -run '^$' -bench 'BenchmarkCreateAckProcs' -benchtime "$benchtime" ./origin/ 2>&1 | grep -E '^Benchmark|^(ok|FAIL)'
  echo '```'
  echo
  echo "## Takeover with the default lease (TTL 15 s, renew 2 s, stop after 10 s), $trials failovers (load average $(loadavg))"
  echo
  echo "\`LINKPOP_HA_DEFAULT_LEASE=1 LINKPOP_FAILOVER_TRIALS=$trials go test -count=1 -timeout 60m -run '^TestFailover\$' -v ./origin/\`"
  echo
  echo '```'
  LINKPOP_HA_DEFAULT_LEASE=1 LINKPOP_FAILOVER_TRIALS="$trials" $GO test -count=1 -timeout 60m -run '^TestFailover$' -v ./origin/ 2>&1 |
    grep -E 'failovers|trial [0-9]+: |^--- |^(ok|FAIL)' || true
  echo '```'
  echo
  echo "## The lease bucket's stream leader SIGKILLed under load, default lease (load average $(loadavg))"
  echo
  echo "\`LINKPOP_HA_DEFAULT_LEASE=1 go test -count=1 -timeout 10m -run '^TestLeaseBucketLeaderKilled\$' -v ./origin/\`"
  echo
  echo '```'
  LINKPOP_HA_DEFAULT_LEASE=1 $GO test -count=1 -timeout 10m -run '^TestLeaseBucketLeaderKilled$' -v ./origin/ 2>&1 |
    grep -E 'SIGKILLed|kept its lease|took over|^--- |^(ok|FAIL)' || true
  echo '```'
  echo
  echo "Load average at the end: $(loadavg)."
} | tee "$tmp"
mv "$tmp" "$out"
echo "bench: wrote $out" >&2
