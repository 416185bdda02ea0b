//! The per-frame path takes no lock and does no atomic read-modify-write. This scans every
//! engine source file but a short, named list of cold ones, so a new file is checked by
//! default (clippy.toml bans the lock types and atomic read-modify-write methods in engine
//! and shards as well; this scan also catches atomic types).
//!
//! A file's unit tests (from its first `#[cfg(test)]` on) are not scanned: they never run
//! in a shard.

use std::path::{Path, PathBuf};

/// Files off the per-frame path, each with why.
const COLD: &[(&str, &str)] = &[
    ("sync.rs", "the one sanctioned lock, counted per thread"),
    (
        "observe/health.rs",
        "start-up and death flags shared with the admin thread",
    ),
    (
        "observe/stats.rs",
        "the snapshot published to the admin thread once a second",
    ),
    (
        "log_file.rs",
        "one write per commit batch; its atomics are a test's failpoints (`LogFaults`)",
    ),
];

/// Lines of a scanned file that may name an atomic, each with why: (file, what the line
/// names, why).
const SANCTIONED: &[(&str, &str, &str)] = &[(
    "ring/exec.rs",
    "NEXT_THREAD_TAG",
    "numbers a thread once, at its first spawn",
)];

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

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, as paths relative to `root` with `/` separators.
fn sources(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).unwrap();
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// The forbidden names in `text` (file `file`), as `file:line: text`.
fn offences(file: &str, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let code = line.split("//").next().unwrap();
        let sanctioned = SANCTIONED
            .iter()
            .any(|(f, name, _)| *f == file && code.contains(name));
        if sanctioned {
            continue;
        }
        if FORBIDDEN.iter().any(|bad| code.contains(bad)) {
            found.push(format!("{file}:{}: {}", n + 1, line.trim()));
        }
    }
    found
}

#[test]
fn engine_sources_take_no_locks_and_no_atomic_rmw() {
    let root = src();
    let mut files = Vec::new();
    sources(&root, &root, &mut files);
    files.sort();
    assert!(files.len() > 30, "found only {files:?}");
    let mut found = Vec::new();
    for file in files.iter().filter(|f| !COLD.iter().any(|(c, _)| c == f)) {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        found.extend(offences(file, &text));
    }
    assert!(
        found.is_empty(),
        "locks or atomic RMW outside the cold files (add the file to COLD with a reason only \
         if it is off the per-frame path):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_cold_list_names_files_that_exist() {
    for (file, why) in COLD {
        assert!(src().join(file).is_file(), "COLD names {file} ({why})");
    }
    for (file, _, why) in SANCTIONED {
        assert!(
            src().join(file).is_file(),
            "SANCTIONED names {file} ({why})"
        );
    }
}

#[test]
fn a_new_file_is_scanned_by_default() {
    let text =
        "use std::sync::Mutex;\nfn f() {}\n#[cfg(test)]\nmod tests { use std::sync::RwLock; }\n";
    let found = offences("conn/new_file.rs", text);
    assert_eq!(found, vec!["conn/new_file.rs:1: use std::sync::Mutex;"]);
    let sanctioned = "static NEXT_THREAD_TAG: AtomicU64 = AtomicU64::new(1);";
    assert!(offences("ring/exec.rs", sanctioned).is_empty());
    assert_eq!(offences("ring/ops.rs", sanctioned).len(), 1);
}
