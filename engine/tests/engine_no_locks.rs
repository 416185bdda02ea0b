//! The per-frame path takes no lock and does no atomic read-modify-write. This scans the
//! engine's sources (clippy.toml bans the lock types and atomic read-modify-write methods
//! in engine and shards as well; this scan also catches atomic types in the hot-path files).

const HOT_PATH: &[&str] = &[
    "conn/wire.rs",
    "conn/io.rs",
    "conn/slot.rs",
    "conn/open.rs",
    "conn/deadline.rs",
    "conn/linger.rs",
    "ring/mod.rs",
    "ring/buf_ring.rs",
    "ring/ops.rs",
    "tls/session.rs",
    "shard_io.rs",
    "shard.rs",
    "mesh.rs",
    "conn/table.rs",
    "timer_wheel.rs",
    "buffer_pool.rs",
    "conn/handoff.rs",
    "observe/counters.rs",
    "observe/histogram.rs",
];

const FORBIDDEN: &[&str] = &[
    "Mutex",
    "RwLock",
    "fetch_add",
    "fetch_sub",
    "fetch_or",
    "fetch_and",
    "fetch_update",
    "compare_exchange",
    "AtomicU",
    "AtomicI",
    "parking_lot",
];

#[test]
fn hot_path_modules_take_no_locks_and_no_atomic_rmw() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for file in HOT_PATH {
        let text = std::fs::read_to_string(src.join(file)).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap();
            for bad in FORBIDDEN {
                if code.contains(bad) {
                    found.push(format!("{file}:{}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "locks or atomic RMW on the hot path:\n{}",
        found.join("\n")
    );
}
