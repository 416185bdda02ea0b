#!/usr/bin/env bash
# Media upload + download MB/s and server CPU per MB, beside nginx serving the same files
# (issue 25), in one run:
#
#   perf/media-bench.sh [media-bench flags: --objects 200 --object-bytes 204800 --gets 4 --threads 8]
#
# Installs nginx if it is missing (Debian: `apt-get install -y nginx`; the package's own
# service is stopped again: the bench runs its own nginx on a free port), builds the release
# binaries, and runs `media-bench` (perf/src/bin/media_bench.rs); nothing is pinned (the
# server, nginx and the client share the box's CPUs). Other load on the box shows in the
# numbers: say what ran beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! [ -x /usr/sbin/nginx ] && ! command -v nginx >/dev/null; then
    apt-get install -y nginx >/dev/null
    # The package starts its service on port 80 where there is an init; the bench's own
    # nginx is all it needs.
    if [ -f /run/nginx.pid ]; then /usr/sbin/nginx -s stop || true; fi
fi
cargo build --release -q -p shards --bin switchboard -p perf --bin media-bench
exec target/release/media-bench "$@"
