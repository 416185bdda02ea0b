#!/usr/bin/env bash
# Heap calls per message: libc's malloc, realloc and free counted by uprobes on the server over
# a steady 1:1 run's sending window (issue 27's allocation budget; exact counts, unlike CPU
# time on a shared machine).
#
#   perf/allocs-steady.sh BIN_DIR [RATE] [SECONDS]
#
# The same run as ab-steady.sh (server alone on CPU 0, one shard, plaintext,
# --coalesce-us 0; the farm on CPU 1, 1,000 connections, 64 B messages; defaults 2,000
# msgs/s for 5 s). Needs the uprobes once per boot (root): `perf probe -x LIBC malloc`, and
# the same for realloc and free, where LIBC is the server's libc.so.6; added here when
# missing. Prints each call's count per offered message.
set -euo pipefail
bin=$1 rate=${2:-2000} secs=${3:-5} port=7599
libc=$(ldd "$bin/switchboard" | awk '/libc\.so\.6/ { print $3 }')
for f in malloc realloc free; do
    perf probe -l 2>/dev/null | grep -q "probe_libc:$f " || perf probe -q -x "$libc" "$f"
done
data=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$data"' EXIT
SWITCHBOARD_LOAD_TEST_SECRET=s taskset -c 0 "$bin/switchboard" --shards 1 --no-tls --no-admin \
    --data-dir "$data" --listen "127.0.0.1:$port" --prelogin-conns-per-prefix 1000000 \
    --coalesce-us 0 >"$data/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do grep -qs listening "$data/server.log" && break; sleep 0.1; done
SWITCHBOARD_LOAD_TEST_SECRET=s taskset -c 1 "$bin/farm" --proto switchboard \
    --server "127.0.0.1:$port" --conns 1000 --threads 1 --mode steady --rate "$rate" \
    --duration "$secs" >"$data/farm.log" 2>&1 &
farm=$!
for _ in $(seq 600); do grep -qs "sending started" "$data/farm.log" && break; sleep 0.05; done
perf stat -x, -e probe_libc:malloc,probe_libc:realloc,probe_libc:free -p "$server" \
    -- sleep "$secs" 2>&1 |
    awk -F, -v n=$((rate * secs)) '$3 ~ /probe_libc/ { sub("probe_libc:", "", $3); printf "%s per message: %.2f\n", $3, $1 / n }'
wait "$farm"
