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

# Benchmarks (print numbers; never timed in tests).
bench:
    cargo run --release -p perf --bin idle-conns -- --conns 15000
    cargo run --release -p perf --bin tls-session-bytes
