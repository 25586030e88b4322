#!/usr/bin/env bash
# `make bench`: measure linkpop against its references side by side and
# write bench/results/<timestamp>.{json,md} and latest.{json,md}.
#
#   BENCH_FULL=1         long version: 10M links, 20 s runs, 5 rounds
#   BENCH_QUICK=1        `make bench-quick`: 100k links, 2 s runs, no golink,
#                        no linkpop-analytics, redirect and writes only (≤ 5 min)
#   BENCH_N=N            links (default 1,000,000; 10,000,000 with BENCH_FULL)
#   BENCH_SKIP_GOLINK=1  do not build or measure tailscale's golink
#   BENCH_SKIP_HA=1      skip the origin-HA part (bench/ha.sh, `make bench-ha`)
#   BENCH_ARGS="..."     extra benchctl flags (see: bench/.cache/bin/benchctl -h)
#
# Installs wrk, nginx-light, redis-server and postgresql with apt when
# they are missing (as root),
# builds every binary into bench/.cache/bin, builds golink v1.0.0 once in a
# throwaway module (bench/.cache/golink-build) and caches it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
GO=${GO:-go}
CACHE=bench/.cache
BIN=$CACHE/bin
mkdir -p "$BIN" bench/results

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v redis-server >/dev/null || need+=(redis-server)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bench: installing ${need[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "bench: ${need[*]} missing and cannot install (not root or no apt): those parts are skipped" >&2
  fi
fi

echo "bench: building binaries into $BIN" >&2
$GO build -o "$BIN/" ./cmd/... ./bench/cmd/...

if [ "${BENCH_QUICK:-}" = 1 ]; then
  BENCH_SKIP_GOLINK=1
  BENCH_N=${BENCH_N:-100000}
fi

# golink: `go install ...@v1.0.0` fails on this proxy (no version list, no
# checksum-database entry); a throwaway module that requires it works.
if [ "${BENCH_SKIP_GOLINK:-}" != 1 ] && [ ! -x "$BIN/golink" ]; then
  echo "bench: building tailscale golink v1.0.0 (first run only, a few minutes)" >&2
  gb=$CACHE/golink-build
  mkdir -p "$gb"
  if ! (
    cd "$gb"
    [ -f go.mod ] || $GO mod init probe >/dev/null 2>&1
    export GONOSUMDB=github.com/tailscale/golink GOFLAGS="-mod=mod -buildvcs=false"
    $GO get github.com/tailscale/golink@v1.0.0 &&
      $GO build -o ../bin/golink github.com/tailscale/golink/cmd/golink
  ) >"$gb/build.log" 2>&1; then
    echo "bench: golink could not be built (see $gb/build.log); it is reported as not measured" >&2
    rm -f "$BIN/golink"
  fi
fi

args=(-bin "$BIN" -cache "$CACHE" -out bench/results)
cmdline="make bench"
[ "${BENCH_FULL:-}" = 1 ] && args+=(-full) && cmdline="BENCH_FULL=1 $cmdline"
if [ "${BENCH_QUICK:-}" = 1 ]; then
  args+=(-links "$BENCH_N" -duration 2s -write-duration 2s -systems linkpop,bare302,nginx,redis-pg -sections redirect,writes)
  cmdline="BENCH_N=$BENCH_N make bench-quick"
else
  [ -n "${BENCH_N:-}" ] && args+=(-links "$BENCH_N") && cmdline="BENCH_N=$BENCH_N $cmdline"
  [ "${BENCH_SKIP_GOLINK:-}" = 1 ] && args+=(-skip-golink) && cmdline="BENCH_SKIP_GOLINK=1 $cmdline"
fi
# shellcheck disable=SC2206
[ -n "${BENCH_ARGS:-}" ] && args+=($BENCH_ARGS) && cmdline="BENCH_ARGS='$BENCH_ARGS' $cmdline"

# benchctl stops every server it starts (and the kernel kills them if it
# dies: Pdeathsig); its own PID is the only one this script ends.
"$BIN/benchctl" "${args[@]}" -command "$cmdline (bench/run.sh → benchctl ${args[*]})" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid' INT TERM
wait $pid
trap - INT TERM

# The origin-HA figures (go benchmarks and the failover test), not in the
# quick version.
if [ "${BENCH_QUICK:-}" != 1 ] && [ "${BENCH_SKIP_HA:-}" != 1 ]; then
  ./bench/ha.sh
fi
