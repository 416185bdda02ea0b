#!/usr/bin/env bash
# Where a message's CPU goes: a sampling profile of the server over a steady 1:1 run's
# sending window (issue 27's budget, ARCHITECTURE.md "Where a message's user-space CPU goes").
#
#   perf/profile-steady.sh BIN_DIR [RATE] [SECONDS] [OUT]
#
# The same run as ab-steady.sh (server alone on CPU 0, one shard, plaintext; the farm on
# CPU 1, 1,000 connections, 64 B messages; defaults 2,000 msgs/s for 8 s), with
# `perf record -e cpu-clock -g` (a software clock: no PMU needed) on the server for the
# sending window. Prints the user-space symbols by their share of the server's samples
# (self time) and keeps the data in OUT (default /tmp/profile-steady.data) for
# `perf report -i OUT`. SERVER_ARGS adds server flags (default: --coalesce-us 0); TLS=1 runs
# the same over TLS (the server's dev certificate, which the farm trusts).
set -euo pipefail
bin=$1 rate=${2:-2000} secs=${3:-8} data_out=${4:-/tmp/profile-steady.data} port=7499
data=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$data"' EXIT
# shellcheck disable=SC2086 # the flags are words
tls_server=(--no-tls) tls_farm=()
if [ "${TLS:-}" = 1 ]; then tls_server=() tls_farm=(--tls --data-dir "$data"); fi
SWITCHBOARD_LOAD_TEST_SECRET=s taskset -c 0 "$bin/switchboard" --shards 1 "${tls_server[@]}" \
    --no-admin --data-dir "$data" --listen "127.0.0.1:$port" \
    --prelogin-conns-per-prefix 1000000 ${SERVER_ARGS:---coalesce-us 0} >"$data/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do grep -qs listening "$data/server.log" && break; sleep 0.1; done
SWITCHBOARD_LOAD_TEST_SECRET=s taskset -c 1 "$bin/farm" --proto switchboard \
    --server "127.0.0.1:$port" --conns 1000 --threads 1 --mode steady --rate "$rate" \
    --duration "$secs" "${tls_farm[@]}" >"$data/farm.log" 2>&1 &
farm=$!
for _ in $(seq 600); do grep -qs "sending started" "$data/farm.log" && break; sleep 0.05; done
perf record -q -e cpu-clock -F 4999 -g -p "$server" -o "$data_out" -- sleep "$secs" 2>/dev/null
wait "$farm"
grep -E "delivery latency" "$data/farm.log" | tail -1
echo "# samples in user space vs kernel (server, sending window):"
perf report -i "$data_out" --no-children --sort dso --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -8
echo "# user-space symbols, self share of all the server's samples:"
perf report -i "$data_out" --no-children --sort symbol --stdio 2>/dev/null |
    grep -E "^ +[0-9].*\[\.\]" | head -40
