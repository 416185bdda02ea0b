#!/usr/bin/env bash
# One steady 1:1 run against a Switchboard build, for A/B comparisons of two builds by hand
# (alternate them: `for i in 1 2 3; do for d in OLD NEW; do perf/ab-steady.sh $d 2000 8; done; done`).
#
#   perf/ab-steady.sh BIN_DIR RATE SECONDS [PORT]
#
# BIN_DIR holds `switchboard` and `farm` (a `target/release` of either build). The server runs
# alone on CPU 0 (one shard, plaintext, load-test logins), the farm on CPU 1 (1,000
# connections, 64 B messages, recipients ack). Prints the server's CPU per message over the
# sending window (/proc/PID/stat: user + system) and the farm's latency lines. Bounded: the
# farm stops after SECONDS, the server is killed after it. Builds from before the load-test
# secret left the command line need OLD_SECRET_FLAG=1; SERVER_ARGS adds server flags
# (e.g. SERVER_ARGS="--coalesce-us 0").
set -euo pipefail
bin=$1 rate=$2 secs=$3 port=${4:-7399}
data=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$data"' EXIT
if [ "${OLD_SECRET_FLAG:-}" = 1 ]; then
    taskset -c 0 "$bin/switchboard" --shards 1 --no-tls --no-admin --data-dir "$data" \
        --listen "127.0.0.1:$port" --load-test-secret s >"$data/server.log" 2>&1 &
else
    SWITCHBOARD_LOAD_TEST_SECRET=s taskset -c 0 "$bin/switchboard" --shards 1 --no-tls \
        --no-admin --data-dir "$data" --listen "127.0.0.1:$port" \
        --prelogin-conns-per-prefix 1000000 ${SERVER_ARGS:-} >"$data/server.log" 2>&1 &
fi
server=$!
for _ in $(seq 100); do grep -q listening "$data/server.log" && break; sleep 0.1; done
cpu() { awk '{print $14 + $15}' "/proc/$server/stat"; }
SWITCHBOARD_LOAD_TEST_SECRET=s taskset -c 1 "$bin/farm" --proto switchboard \
    --server "127.0.0.1:$port" --conns 1000 --threads 1 --mode steady --rate "$rate" \
    --duration "$secs" >"$data/farm.log" 2>&1 &
farm=$!
for _ in $(seq 600); do grep -q "sending started" "$data/farm.log" && break; sleep 0.05; done
c0=$(cpu); sleep "$secs"; c1=$(cpu)
wait "$farm"
awk -v c0="$c0" -v c1="$c1" -v tk="$(getconf CLK_TCK)" -v n="$((rate * secs))" \
    -v label="$bin rate=$rate" \
    'BEGIN { printf "%s server_cpu_us_per_msg=%.1f\n", label, (c1 - c0) / tk * 1e6 / n }'
grep -E "delivery latency|lost" "$data/farm.log" | tail -2
