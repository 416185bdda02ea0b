#!/usr/bin/env bash
# The saturation sweep (issue 27): one shard, rising rates, the highest rate whose delivery
# p99 stays ≤ 10 ms, for Switchboard and for mosquitto at QoS 1 and QoS 0, in one run.
#
#   perf/saturation.sh BIN_DIR [SECONDS] [RATES]
#
# BIN_DIR holds `switchboard` and `farm` (a `target/release`). Defaults: 6 s windows,
# RATES="10000 15000 20000 25000 30000 40000 60000 80000 100000 130000". Each rate runs every system
# still in the sweep once (order rotated per rate), through `perf/ab-coalesce.sh` (the same
# set-up: the server alone on CPU 0, the farm on CPU 1, 1,000 connections, 64 B 1:1
# messages, loopback only; TLS=1 and FARM_ARGS pass through). A system leaves the sweep
# after two rates in a row above the bound (one noisy run does not end it), so the run is
# bounded: at most |RATES| × 3 runs. SB_FLAGS adds Switchboard flags (default: none, its
# defaults). The farm is one thread on one core unless FARM_CPUS/FARM_THREADS say otherwise
# (ab-coalesce.sh): where it cannot keep up, every system's p99 grows alike, so a ceiling
# shared by all three systems is the farm's, not theirs.
#
# Prints each run, then per system the highest passing rate and the ratios of Switchboard's
# to mosquitto's (issue 27's targets: ≥ 1.5× QoS 1, ≥ 1.2× QoS 0).
set -euo pipefail
bin=$1 secs=${2:-6} rates=${3:-10000 15000 20000 25000 30000 40000 60000 80000 100000 130000}
P99_BOUND_US=10000
here=$(dirname "$0")
declare -A best=() misses=() best_p50=()
systems=(switchboard mosquitto mosquitto0)
echo "# $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg); ${secs}s windows; p99 bound ${P99_BOUND_US} µs; $([ "${TLS:-}" = 1 ] && echo TLS || echo plaintext)"
echo "# system rate user_us/msg sys_us/msg ctx/msg p50_us p99_us verdict"
i=0
for rate in $rates; do
    i=$((i + 1))
    n=${#systems[@]}
    for j in $(seq 0 $((n - 1))); do
        s=${systems[$(((i + j) % n))]}
        [ "${misses[$s]:-0}" -ge 2 ] && continue
        case $s in
        switchboard) line=$(NO_MOSQUITTO=1 VARIANTS="switchboard=${SB_FLAGS:-}" "$here/ab-coalesce.sh" "$bin" "$secs" 1 "$rate" | grep "^switchboard $rate ") || true ;;
        *) line=$(NO_MOSQUITTO=1 VARIANTS="$s" "$here/ab-coalesce.sh" "$bin" "$secs" 1 "$rate" | grep "^$s $rate ") || true ;;
        esac
        # A run that did not start or where nothing arrived counts as over the bound.
        [ -n "$line" ] || line="$s $rate - - - - -"
        p50=$(awk '{print $6}' <<<"$line") p99=$(awk '{print $7}' <<<"$line")
        if [ "$p99" != - ] && [ "$p99" -le "$P99_BOUND_US" ]; then
            verdict=ok misses[$s]=0
            [ "$rate" -gt "${best[$s]:-0}" ] && best[$s]=$rate best_p50[$s]=$p50
        else
            verdict=over misses[$s]=$((${misses[$s]:-0} + 1))
        fi
        echo "$line $verdict"
    done
done
echo "# highest rate with p99 ≤ ${P99_BOUND_US} µs (p50 there):"
for s in "${systems[@]}"; do echo "$s ${best[$s]:-0} (${best_p50[$s]:--} µs)"; done
sb=${best[switchboard]:-0}
for m in mosquitto mosquitto0; do
    awk -v a="$sb" -v b="${best[$m]:-0}" -v m="$m" \
        'BEGIN { printf "switchboard ÷ %s: %s\n", m, (b > 0 ? sprintf("%.2f", a / b) : "-") }'
done
echo "# $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
