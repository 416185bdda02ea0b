#!/usr/bin/env bash
# bench-2m: preflight a real box (server or client) for 2M+ connections, then run the farm
# across processes and source addresses. Checks are read-only; each shortfall prints what
# to set. Usage:
#   perf/bench-2m.sh server                      # on the server box: checks only
#   perf/bench-2m.sh client SERVER:PORT CONNS PROCS SRC_FIRST-SRC_LAST [extra farm flags]
# Only point the farm at your own server. Every farm run is bounded by --duration.
# Start the server with SWITCHBOARD_LOAD_TEST_SECRET in its environment (never a flag) and
# --prelogin-conns-per-prefix raised (e.g. 1000000): the farm's source addresses share a
# few /24s and connect faster than the default 64 per shard can log in.
set -u
role=${1:-server}
want=${BENCH_2M_CONNS:-2000000}
fail=0
check() { # name actual minimum hint
    if [ "$2" -lt "$3" ]; then echo "SHORT  $1 = $2 (need >= $3): $4"; fail=1; else echo "ok     $1 = $2"; fi
}
nofile=$(ulimit -n)
[ "$nofile" = unlimited ] && nofile=999999999
check "ulimit -n" "$nofile" $((want + 1024)) "ulimit -n $((want + 1024)) (LimitNOFILE= in systemd)"
check "fs.nr_open" "$(cat /proc/sys/fs/nr_open)" $((want + 1024)) "sysctl -w fs.nr_open=$((want * 2))"
check "fs.file-max" "$(cat /proc/sys/fs/file-max)" $((want + 65536)) "sysctl -w fs.file-max=$((want * 4))"
check "net.core.somaxconn" "$(cat /proc/sys/net/core/somaxconn)" 65535 "sysctl -w net.core.somaxconn=65535"
read -r lo hi < /proc/sys/net/ipv4/ip_local_port_range
check "ip_local_port_range span" $((hi - lo)) 60000 "sysctl -w net.ipv4.ip_local_port_range='1024 65535'"
tcp_max=$(awk '{print $3}' /proc/sys/net/ipv4/tcp_mem)
check "net.ipv4.tcp_mem max (pages)" "$tcp_max" $((want / 2)) "sysctl -w net.ipv4.tcp_mem='4194304 6291456 8388608'"
mem_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)
# ~9 KiB per idle TLS connection measured (user + kernel slab, perf/RESULTS.md), x1.5 headroom.
check "MemTotal (KiB)" "$mem_kb" $((want * 9 * 3 / 2)) "a box with more memory, or fewer connections"
huge=$(cat /proc/sys/vm/nr_hugepages)
if [ "$huge" -eq 0 ]; then echo "note   vm.nr_hugepages = 0: --huge-pages falls back to THP (echo 512 > /proc/sys/vm/nr_hugepages)"; else echo "ok     vm.nr_hugepages = $huge"; fi
if [ "$role" = client ]; then
    server=$2; conns=$3; procs=$4; srcs=$5; shift 5
    first=${srcs%-*}; last=${srcs#*-}
    n_src=$(( ${last##*.} - ${first##*.} + 1 ))
    per_src=$(( conns / (n_src > 0 ? n_src : 1) ))
    check "connections per source address" $((60000 - per_src)) 0 "use more source addresses (each has ~60k ports per destination)"
    for ip in $(seq "${first##*.}" "${last##*.}"); do
        addr="${first%.*}.$ip"
        ip -o addr show | grep -q " $addr/" || case $addr in 127.*) ;; *) echo "SHORT  source address $addr not configured (ip addr add $addr/32 dev ...)"; fail=1;; esac
    done
    [ "$fail" -eq 0 ] || { echo "preflight failed; not starting the farm"; exit 1; }
    exec ./target/release/farm --server "$server" --conns "$conns" --procs "$procs" --source-ips "$srcs" --mode idle --duration 60 "$@"
fi
exit $fail
