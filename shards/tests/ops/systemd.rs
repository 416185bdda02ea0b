//! The systemd unit in `ops/systemd/`: it sets what a real box needs (descriptors, CPU
//! affinity, real-time capability, restart, hardening), its command lines are ones the
//! binary accepts with the sample config, and `systemd-analyze verify` finds nothing wrong
//! with it (where systemd-analyze is installed; skipped with a reason otherwise).

use std::process::Command;

const OPS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ops/systemd");

fn unit() -> String {
    std::fs::read_to_string(format!("{OPS}/switchboard.service")).unwrap()
}

/// Values of `key=` lines (comments skipped).
fn values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_unit_sets_what_a_real_box_needs() {
    let u = unit();
    let one = |k: &str| {
        let v = values(&u, k);
        assert_eq!(v.len(), 1, "{k} once: {v:?}");
        v[0].clone()
    };
    assert!(one("LimitNOFILE").parse::<u64>().unwrap() >= 2_100_000);
    assert!(!one("CPUAffinity").is_empty());
    assert_eq!(one("AmbientCapabilities"), "CAP_SYS_NICE");
    assert_eq!(one("Restart"), "always");
    assert_eq!(
        one("Type"),
        "notify",
        "READY=1, and MAINPID= across a live upgrade"
    );
    assert_eq!(
        one("ExecReload"),
        "/bin/kill -USR2 $MAINPID",
        "reload is a live upgrade"
    );
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("NoNewPrivileges"), "true");
    assert_eq!(
        one("RestrictRealtime"),
        "false",
        "SCHED_FIFO must stay allowed"
    );
    assert_eq!(one("ReadWritePaths"), "/var/lib/switchboard");
    assert!(one("ExecStart").contains("--log-format json"));
    assert!(one("ExecStartPre").contains("--check-config"));
    assert!(
        values(&u, "SystemCallFilter").is_empty(),
        "a syscall filter would have to allow io_uring_setup/enter; none is set"
    );
}

/// A command line of the unit, with the installed paths swapped for this build's binary
/// and a copy of the sample config whose data directory is `data`.
fn command_line(key: &str, data: &std::path::Path) -> Vec<String> {
    let config = data.join("switchboard.toml");
    let sample = std::fs::read_to_string(format!("{OPS}/switchboard.toml")).unwrap();
    let sample = sample
        .replace("/var/lib/switchboard", &data.display().to_string())
        .replace("cert = ", "# cert = ")
        .replace("key = ", "# key = ");
    std::fs::write(&config, sample).unwrap();
    values(&unit(), key)[0]
        .split_whitespace()
        .map(|w| match w {
            "/usr/local/bin/switchboard" => env!("CARGO_BIN_EXE_switchboard").to_string(),
            "/etc/switchboard/switchboard.toml" => config.display().to_string(),
            w => w.to_string(),
        })
        .collect()
}

#[test]
fn the_units_command_lines_are_accepted_by_the_binary() {
    let data = testkit::temp_dir("systemd");
    let pre = command_line("ExecStartPre", &data);
    let out = Command::new(&pre[0]).args(&pre[1..]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("shards = 14\n") && text.contains("realtime = true\n"),
        "{text}"
    );
    // ExecStart's flags, checked without starting: --config becomes --check-config.
    let start: Vec<String> = command_line("ExecStart", &data)
        .into_iter()
        .map(|w| {
            if w == "--config" {
                "--check-config".into()
            } else {
                w
            }
        })
        .collect();
    let out = Command::new(&start[0]).args(&start[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_analyze_verify_is_clean() {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED: systemd-analyze not installed");
        return;
    }
    let dir = testkit::temp_dir("systemd-verify");
    let unit = unit().replace(
        "/usr/local/bin/switchboard",
        env!("CARGO_BIN_EXE_switchboard"),
    );
    let path = dir.join("switchboard.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}
