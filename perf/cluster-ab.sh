#!/usr/bin/env bash
# Cross-box against in-box: the CPU and latency of a message between two boxes of a cluster
# next to one that stays in a box (issue 24's bench), on this machine.
#
#   perf/cluster-ab.sh BIN_DIR RATE SECONDS [CONNS]
#
# BIN_DIR holds `switchboard` and `farm` (a `target/release`). Two runs, each with its own
# nats-server (JetStream, a temp store) so both pay for NATS being up:
#   in-box:    one box (`--cluster`), every user on it: no message leaves the box;
#   cross-box: three boxes; the farm spreads users round robin and follows redirects, so each
#              user lives on its home box and a uniform peer is on another box 2/3 of the time.
# Each run prints the CPU summed over every process (boxes + nats-server) per message over the
# sending window (/proc/PID/stat: user + system) and the farm's latency lines; the cross-box
# run also prints the cost of a cross-box message alone, taking the in-box share at the in-box
# run's price. One shard per box, plaintext, load-test logins. Bounded: the farm stops after
# SECONDS; every process is killed at exit.
set -euo pipefail
bin=$1 rate=$2 secs=$3 conns=${4:-999}
nats=$(command -v nats-server || echo /usr/sbin/nats-server)
root=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$root"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cpu_all() { local t=0; for p in "$@"; do t=$((t + $(cpu_of "$p"))); done; echo "$t"; }

# PERF_RECORD=DIR also records a profile of each process of the cross-box run
# (DIR/proc0.data is nats-server, procN.data box N; read with `perf report -i`).
#
# run BOXES: starts nats-server and BOXES boxes, runs the farm, prints one line of numbers.
run() {
    local boxes=$1 dir="$root/run$1"
    mkdir -p "$dir"
    local np; np=$(free_port)
    "$nats" -js -sd "$dir/js" -a 127.0.0.1 -p "$np" >"$dir/nats.log" 2>&1 &
    local natspid=$!; pids+=("$natspid")
    for _ in $(seq 100); do grep -q "Server is ready" "$dir/nats.log" && break; sleep 0.1; done
    local run_pids=("$natspid") servers=() admins=()
    for b in $(seq "$boxes"); do
        local port; port=$(free_port)
        mkdir -p "$dir/box$b"
        local aport; aport=$(free_port); admins+=("127.0.0.1:$aport")
        SWITCHBOARD_LOAD_TEST_SECRET=s "$bin/switchboard" --shards 1 --no-tls --admin "127.0.0.1:$aport" \
            --data-dir "$dir/box$b" --listen "127.0.0.1:$port" \
            --prelogin-conns-per-prefix 1000000 \
            --cluster "nats://127.0.0.1:$np" --box-id "box$b" --advertise "127.0.0.1:$port" \
            ${SERVER_ARGS:-} >"$dir/box$b/server.log" 2>&1 &
        local p=$!; pids+=("$p"); run_pids+=("$p"); servers+=("127.0.0.1:$port")
        for _ in $(seq 100); do grep -q listening "$dir/box$b/server.log" && break; sleep 0.1; done
    done
    local list; list=$(IFS=,; echo "${servers[*]}")
    SWITCHBOARD_LOAD_TEST_SECRET=s "$bin/farm" --proto switchboard --server "$list" \
        --conns "$conns" --threads 1 --mode steady --rate "$rate" --duration "$secs" \
        >"$dir/farm.log" 2>&1 &
    local farm=$!; pids+=("$farm")
    for _ in $(seq 600); do grep -q "sending started" "$dir/farm.log" && break; sleep 0.05; done
    local before=() p
    for p in "${run_pids[@]}"; do before+=("$(cpu_of "$p")"); done
    if [ -n "${PERF_RECORD:-}" ] && [ "$boxes" -gt 1 ]; then
        # A profile of each process over the window (software cpu-clock; no PMU needed).
        mkdir -p "$PERF_RECORD"
        for i in "${!run_pids[@]}"; do
            perf record -q -e cpu-clock -g -o "$PERF_RECORD/proc$i.data" -p "${run_pids[$i]}" \
                -- sleep "$secs" >/dev/null 2>&1 &
        done
    fi
    local c0 c1; c0=$(cpu_all "${run_pids[@]}"); sleep "$secs"; c1=$(cpu_all "${run_pids[@]}")
    # Each process's share: nats-server first, then the boxes.
    local i share="" tk; tk=$(getconf CLK_TCK)
    for i in "${!run_pids[@]}"; do
        share+=" $(awk -v a="${before[$i]}" -v b="$(cpu_of "${run_pids[$i]}")" -v tk="$tk" \
            -v n="$((rate * secs))" 'BEGIN { printf "%.1f", (b - a) / tk * 1e6 / n }')"
    done
    wait "$farm" || true
    local us_per_msg
    us_per_msg=$(awk -v c0="$c0" -v c1="$c1" -v tk="$(getconf CLK_TCK)" -v n="$((rate * secs))" \
        'BEGIN { printf "%.1f", (c1 - c0) / tk * 1e6 / n }')
    echo "boxes=$boxes rate=$rate cpu_us_per_msg_all_processes=$us_per_msg (nats-server, box1..: $share)"
    grep -E "delivery latency|lost|redirect" "$dir/farm.log" | tail -3
    if [ "$boxes" -gt 1 ]; then
        # Direct requests and what they carried (every box; statistics publish once a second).
        sleep 1.5
        local a reqs=0 items=0
        for a in "${admins[@]}"; do
            local m; m=$(curl -s "http://$a/metrics" || true)
            reqs=$((reqs + $(awk '/^switchboard_cluster_direct_batches_out_total[{ ]/{v+=$NF} END{print v+0}' <<<"$m")))
            items=$((items + $(awk '/^switchboard_cluster_direct_batched_out_total[{ ]/{v+=$NF} END{print v+0}' <<<"$m")))
        done
        awk -v r="$reqs" -v i="$items" 'BEGIN { printf "direct requests %d carrying %d messages and receipts (%.2f each)\n", r, i, (r ? i / r : 0) }'
    fi
    for p in "${run_pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    LAST=$us_per_msg
}

run 1; inbox=$LAST
run 3; mixed=$LAST
# Two thirds of the three-box run's messages cross boxes; the rest cost what an in-box one does.
awk -v i="$inbox" -v m="$mixed" 'BEGIN {
    cross = (m - i / 3) * 3 / 2
    printf "in-box %.1f us/msg, cross-box %.1f us/msg (derived), ratio %.2f (target <= 2)\n", i, cross, cross / i
}'
