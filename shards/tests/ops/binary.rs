//! The `switchboard` binary's operator flags: `--log-format json` writes one JSON object
//! per line (the listening line carries the addresses as fields), and
//! `--check-config FILE` prints the effective settings or one clear error, starting nothing.

use std::io::BufRead;
use std::process::{Command, Stdio};

#[test]
fn json_logs_are_one_object_per_line_with_fields() {
    let data = testkit::temp_dir("bin-json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-pin",
            "--no-tls",
            "--shards",
            "1",
        ])
        .args(["--admin", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let listening = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            panic!("exited before listening:\n{}", seen.join("\n"));
        };
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for key in ["ts", "level", "target"] {
            assert!(v[key].is_string(), "{key} missing: {line}");
        }
        if v["msg"] == shards::server::LISTENING {
            break v;
        }
        seen.push(v["msg"].as_str().unwrap_or_default().to_string());
    };
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["shards"], 1, "numbers stay numbers");
    assert_eq!(listening["tls"], false, "booleans stay booleans");
    let addr: std::net::SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();
    assert_ne!(addr.port(), 0);
    assert!(listening["ts"].as_str().unwrap().ends_with('Z'));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    // Every line to the end of the log is JSON too, through the shutdown.
    for line in lines {
        let line = line.unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        seen.push(v["msg"].as_str().unwrap_or_default().to_string());
    }
    assert!(child.wait().unwrap().success());
    for msg in ["log replayed", "switchboard stopped"] {
        assert!(seen.iter().any(|m| m == msg), "{msg} in {seen:?}");
    }
}

#[test]
fn check_config_prints_effective_settings_and_starts_nothing() {
    let dir = testkit::temp_dir("bin-check");
    let file = dir.join("switchboard.toml");
    // A port that is taken: --check-config must not try to bind it.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap();
    std::fs::write(
        &file,
        format!("listen = \"{taken}\"\nshards = 3\nalarm_queue_user = 0\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--check-config")
        .arg(&file)
        .args(["--idle-timeout-s", "42"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        format!("listen = \"{taken}\""),
        "shards = 3".into(),
        "idle_timeout_s = 42".into(),
        "alarm_queue_user = 0".into(),
        "admin = \"127.0.0.1:9100\"".into(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    assert!(!dir.join("shard-0.log").exists(), "nothing started");

    std::fs::write(&file, "shards = 0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "switchboard: error: bad setting: shards must be 1..=1024, got 0"
    );
    assert!(out.stdout.is_empty());

    // A certificate that does not load fails the check, as it would fail the start.
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(
        &file,
        format!(
            "cert = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            cert.display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("switchboard: error: "), "{err}");
    assert!(err.contains("cert.pem"), "names the file: {err}");
}

#[test]
fn shards_pin_inside_the_affinity_mask_systemd_or_taskset_gives() {
    let cpus = engine::config::allowed_cpus();
    let last = *cpus.last().unwrap();
    let data = testkit::temp_dir("bin-affinity");
    let mut child = Command::new("taskset")
        .args(["-c", &last.to_string()])
        .arg(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-tls",
            "--no-admin",
            "--shards",
            "2",
        ])
        .arg("--data-dir")
        .arg(&data)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("taskset (util-linux) runs");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    // Both shards have run their service (so their executors are placed) and the process
    // listens.
    let mut seen: Vec<String> = Vec::new();
    while !(seen.iter().filter(|l| l.contains("log replayed")).count() == 2
        && seen
            .iter()
            .any(|l| shards::server::listening_addr(l).is_some()))
    {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            panic!("exited before listening:\n{}", seen.join("\n"));
        };
        seen.push(line);
    }
    std::thread::spawn(move || lines.for_each(drop));
    // A shard thread names itself once it runs: wait until both have.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let pinned = loop {
        let pinned = shard_threads(child.id());
        let named = |p: &str| pinned.iter().any(|(n, _)| n == p);
        if named("shard-0") && named("shard-1") {
            break pinned;
        }
        assert!(std::time::Instant::now() < deadline, "{pinned:?}");
        std::thread::yield_now();
    };
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    // The engine names a shard's thread `shard-<i>`.
    for shard in ["shard-0", "shard-1"] {
        assert!(
            pinned.iter().any(|(n, _)| n == shard),
            "{shard} runs: {pinned:?}"
        );
    }
    assert!(
        pinned.iter().all(|(_, cpus)| *cpus == last.to_string()),
        "every shard thread on CPU {last}, the one allowed: {pinned:?}"
    );
}

/// (thread name, allowed CPUs) of every `shard-*` thread of process `pid`.
fn shard_threads(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(status) = std::fs::read_to_string(task.unwrap().path().join("status")) else {
            continue; // the thread exited meanwhile
        };
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let name = field("Name:");
        if name.starts_with("shard-") {
            out.push((name, field("Cpus_allowed_list:")));
        }
    }
    out
}
