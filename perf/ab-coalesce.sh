#!/usr/bin/env bash
# The coalescing A/B (issue 27): Switchboard's wait variants side by side with mosquitto QoS 1,
# alternating within each round, at several rates; prints every run and then the medians.
#
#   perf/ab-coalesce.sh BIN_DIR [SECONDS] [ROUNDS] [RATES]
#
# BIN_DIR holds `switchboard` and `farm` (a `target/release`). Defaults: 8 s windows, 3 rounds,
# RATES="2000 5000 20000". VARIANTS (env) lists the Switchboard variants as name=server flags,
# separated by `;` (default below); `mosquitto` is added unless NO_MOSQUITTO=1. EXTRA_BIN_DIR
# runs the variants named `base:*` from another build (e.g. main's). FARM_ARGS adds farm flags
# to every run: FARM_ARGS="--send-tick-ms 1" sends in bursts once a millisecond, like a driver
# on a 1 ms timer wheel (tokio's), instead of each send at its own time. TLS=1 runs everything
# over TLS: a P-256 certificate for localhost made here with openssl (in the temp dir), given
# to Switchboard (--cert/--key) and to mosquitto (a TLS listener), trusted by the farm (--ca).
# A Switchboard variant's flags may end with ` -- FARM FLAGS` for its own farm (e.g.
# "acks-only=-- --read-ratio 0": mosquitto's farm never sends reads, MQTT has none).
# A variant named `mosquitto0` runs mosquitto at QoS 0 (VARIANTS may name it; it is not added).
# FARM_CPUS (default 1) and FARM_THREADS (default 1) give the farm more cores on a bigger box:
# on this 2-CPU VM one farm thread tops out near 20,000–30,000 msgs/s (its own limit).
# PERF_SPLIT=1 takes the user/kernel split from `perf record -e cpu-clock -F 4999` samples of
# the server over the window (user = samples outside the kernel) instead of /proc's
# utime/stime, which are charged a 10 ms tick at a time and swing ±50 % at 2,000/s.
#
# Each run: the server alone on CPU 0 (Switchboard: one shard, plaintext, load-test logins;
# mosquitto: its Debian package, persistence off), the farm on CPU 1 (1,000 connections, one
# thread, 64 B messages at RATE in total, evenly spaced, recipients ack). Sampled over the
# sending window only (`farm: sending started` + SECONDS): the server's user and kernel CPU
# per offered message (/proc/PID/stat utime, stime), its context switches per message (every
# thread's voluntary + involuntary, /proc/PID/task/*/status), and the farm's delivery p50 and
# p99 (scheduled send → delivery, whole run).
set -euo pipefail
bin=$1 secs=${2:-8} rounds=${3:-3} rates=${4:-2000 5000 20000}
variants=${VARIANTS:-"wait-0=--coalesce-us 0;wait-250=--coalesce-us 250 --coalesce always;adaptive=--coalesce-us 250 --coalesce adaptive"}
port=7399
tk=$(getconf CLK_TCK)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
tls_sb=(--no-tls) tls_farm=() tls_mosq=""
if [ "${TLS:-}" = 1 ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -addext basicConstraints=critical,CA:FALSE \
        -keyout "$out/key.pem" -out "$out/cert.pem" 2>/dev/null
    # mosquitto started as root loads them after dropping to its own user.
    chmod a+x "$out" && chmod a+r "$out/key.pem" "$out/cert.pem"
    tls_sb=(--cert "$out/cert.pem" --key "$out/key.pem") tls_farm=(--ca "$out/cert.pem")
    tls_mosq=$(printf 'certfile %s\nkeyfile %s\n' "$out/cert.pem" "$out/key.pem")
fi

ctx() { # context switches of every thread of $1
    cat /proc/"$1"/task/*/status 2>/dev/null |
        awk '/^(voluntary|nonvoluntary)_ctxt_switches/ { n += $2 } END { print n + 0 }'
}

# One run: NAME RATE; prints "NAME RATE user_us sys_us ctx p50 p99".
run_one() {
    local name=$1 rate=$2 data server farm farm_extra=""
    data=$(mktemp -d)
    port=$((port + 1))
    if [ "$name" = mosquitto ] || [ "$name" = mosquitto0 ]; then
        printf 'listener %s 127.0.0.1\n%s\nallow_anonymous true\npersistence false\nmax_connections -1\nmax_queued_messages 100000\nset_tcp_nodelay true\n' \
            "$port" "$tls_mosq" >"$data/m.conf"
        taskset -c 0 mosquitto -c "$data/m.conf" >"$data/server.log" 2>&1 &
        server=$!
        for _ in $(seq 100); do ss -ltn | grep -q ":$port " && break; sleep 0.1; done
        proto=(--proto mqtt --qos 1)
        [ "$name" = mosquitto ] || proto=(--proto mqtt --qos 0)
    else
        local flags=${name#*=} dir=$bin
        # "server flags -- farm flags": what follows " -- " goes to this variant's farm.
        case " $flags " in *" -- "*)
            flags=" $flags " farm_extra=${flags#* -- } flags=${flags%% -- *} ;;
        esac
        name=${name%%=*}
        case $name in base:*) dir=${EXTRA_BIN_DIR:?base:* variants need EXTRA_BIN_DIR} ;; esac
        # shellcheck disable=SC2086 # the flags are words
        SWITCHBOARD_LOAD_TEST_SECRET=s taskset -c 0 "$dir/switchboard" --shards 1 "${tls_sb[@]}" \
            --no-admin --data-dir "$data" --listen "127.0.0.1:$port" \
            --prelogin-conns-per-prefix 1000000 $flags >"$data/server.log" 2>&1 &
        server=$!
        for _ in $(seq 100); do grep -qs listening "$data/server.log" && break; sleep 0.1; done
        proto=(--proto switchboard)
    fi
    SWITCHBOARD_LOAD_TEST_SECRET=s taskset -c "${FARM_CPUS:-1}" "$bin/farm" "${proto[@]}" \
        --server "127.0.0.1:$port" --conns 1000 --threads "${FARM_THREADS:-1}" --mode steady --rate "$rate" \
        --duration "$secs" "${tls_farm[@]}" ${FARM_ARGS:-} $farm_extra >"$data/farm.log" 2>&1 &
    farm=$!
    for _ in $(seq 600); do grep -qs "sending started" "$data/farm.log" && break; sleep 0.05; done
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$server/stat")
    c0=$(ctx "$server")
    local per_s=$tk
    if [ "${PERF_SPLIT:-}" = 1 ]; then
        per_s=4999 u0=0 s0=0
        perf record -q -e cpu-clock -F "$per_s" -p "$server" -o "$data/split.data" \
            -- sleep "$secs" 2>/dev/null
        read -r u1 s1 < <(perf report -i "$data/split.data" --stdio --sort dso -F sample,dso \
            -g none 2>/dev/null | awk '/^#/ || NF < 2 { next }
                { if ($2 == "[kernel.kallsyms]") k += $1; else u += $1 } END { print u + 0, k + 0 }')
    else
        sleep "$secs"
        read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$server/stat")
    fi
    c1=$(ctx "$server")
    wait "$farm" || true
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    awk -v name="$name" -v rate="$rate" -v n="$((rate * secs))" -v tk="$per_s" \
        -v u="$((u1 - u0))" -v s="$((s1 - s0))" -v c="$((c1 - c0))" \
        '/delivery latency/ { p50 = $5; p99 = $7 }
         /^messages sent/ { delivered = $7 }
         END { if (delivered == 0) p50 = p99 = "" # nothing arrived: the run failed
                printf "%s %s %.1f %.1f %.2f %s %s\n", name, rate, u / tk * 1e6 / n,
               s / tk * 1e6 / n, c / n, p50 == "" ? "-" : p50, p99 == "" ? "-" : p99 }' \
        "$data/farm.log"
    rm -rf "$data"
}

IFS=';' read -r -a list <<<"$variants"
[ "${NO_MOSQUITTO:-}" = 1 ] || list+=(mosquitto)
echo "# $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg); ${secs}s windows, $rounds rounds; farm: ${FARM_ARGS:-evenly spaced sends}; $([ "${TLS:-}" = 1 ] && echo TLS || echo plaintext); user/kernel from $([ "${PERF_SPLIT:-}" = 1 ] && echo "perf samples" || echo /proc)"
echo "# variant rate user_us/msg sys_us/msg ctx/msg p50_us p99_us"
for rate in $rates; do
    for r in $(seq "$rounds"); do
        # Rotate the order each round, so no variant always runs first.
        for i in $(seq 0 $((${#list[@]} - 1))); do
            run_one "${list[$(((i + r) % ${#list[@]}))]}" "$rate" | tee -a "$out/runs"
        done
    done
done
echo "# medians by rate, side by side (CPU µs per offered message; ÷ mosquitto where it ran):"
sort -k2,2n -k1,1 "$out/runs" | awk '
    function med(a, n,   i, j, t) {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function flush() {
        if (!n) return
        rows++; R[rows] = k2; V[rows] = k1; N[rows] = n
        MU[rows] = med(U, n); MS[rows] = med(S, n); MT[rows] = med(T, n)
        MC[rows] = med(C, n); MP[rows] = med(P, n); MQ[rows] = med(Q, n)
        if (k1 == "mosquitto") { mosq_t[k2] = MT[rows]; mosq_p[k2] = MP[rows] }
        n = 0
    }
    { if ($1 != k1 || $2 != k2) { flush(); k1 = $1; k2 = $2 }
      n++; U[n] = $3; S[n] = $4; T[n] = $3 + $4; C[n] = $5; P[n] = $6; Q[n] = $7 }
    END {
        flush()
        printf "%-14s %6s %6s %7s %7s %8s %6s %7s %8s %8s %4s\n", "variant", "rate", "user",
            "kernel", "total", "÷mosq", "ctx", "p50", "÷mosq", "p99", "runs"
        for (i = 1; i <= rows; i++) {
            rt = (R[i] in mosq_t && mosq_t[R[i]] > 0) ? sprintf("%.2f", MT[i] / mosq_t[R[i]]) : "-"
            rp = (R[i] in mosq_p && mosq_p[R[i]] > 0) ? sprintf("%.2f", MP[i] / mosq_p[R[i]]) : "-"
            printf "%-14s %6s %6.1f %7.1f %7.1f %8s %6.2f %7d %8s %8d %4d\n", V[i], R[i], MU[i],
                MS[i], MT[i], rt, MC[i], MP[i], rp, MQ[i], N[i]
        }
    }'
echo "# $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
