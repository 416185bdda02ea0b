//! Shared helpers for the tools' integration tests: a real Switchboard server in this
//! process (built from flags, so new server settings never break these tests), the farm and
//! chat binaries as child processes, and a server-side view of connections from /proc.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::Parser;
use shards::config::{Cli, ServerConfig};

pub mod fake;

/// A server running in this process, stopped on drop.
pub struct TestServer {
    rt: Option<engine::Runtime>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub tls: bool,
}

impl TestServer {
    /// Starts a server with `switchboard` flags (listen, data dir, no pinning added here).
    pub fn start(tls: bool, extra: &[&str]) -> TestServer {
        let data_dir = testkit::temp_dir("server");
        let mut args = vec![
            "switchboard".to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--shards".into(),
            "2".into(),
            "--no-pin".into(),
            "--max-connections".into(),
            "4000".into(),
            // A farm on loopback is one /24 opening thousands of connections at once, some
            // never logging in (idle and storm modes): past the default pre-login cap.
            "--prelogin-conns-per-prefix".into(),
            "100000".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        if !tls {
            args.push("--no-tls".into());
        }
        // `--load-test-secret S` in `extra` is taken out of the flags and given the way the
        // server takes it, as if from its environment (a flag is refused).
        let mut secret = None;
        let mut rest = extra.iter();
        while let Some(a) = rest.next() {
            if *a == "--load-test-secret" {
                secret = rest.next().map(|s| s.to_string());
            } else {
                args.push(a.to_string());
            }
        }
        if !extra.contains(&"--admin") {
            // Never the default admin port: tests run servers side by side.
            args.push("--no-admin".into());
        }
        let cli = Cli::try_parse_from(&args).expect("server flags parse");
        let cfg = ServerConfig::from_cli_env(cli, secret).expect("server config");
        let rt = shards::server::start(&cfg).expect("server starts");
        TestServer {
            addr: rt.local_addr(),
            rt: Some(rt),
            data_dir,
            tls,
        }
    }

    /// The server's own `/stats` (per-shard JSON objects); needs `--admin` in `extra`.
    pub fn shard_stats(&self) -> Vec<serde_json::Value> {
        use std::io::{Read, Write};
        let addr = self
            .rt
            .as_ref()
            .and_then(|rt| rt.admin_addr())
            .expect("started with --admin");
        let mut s = std::net::TcpStream::connect(addr).expect("admin connect");
        write!(s, "GET /stats HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let body = text.split_once("\r\n\r\n").expect("headers").1;
        let v: serde_json::Value = serde_json::from_str(body).expect("/stats is JSON");
        v["shards"].as_array().expect("shards").clone()
    }

    /// The dev certificate clients trust.
    pub fn cert(&self) -> PathBuf {
        tools::net::dev_cert_in(&self.data_dir)
    }

    /// The farm's TLS flags for this server.
    pub fn tls_args(&self) -> Vec<String> {
        if self.tls {
            vec!["--ca".into(), self.cert().display().to_string()]
        } else {
            vec![]
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.stop();
            let _ = rt.join();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Runs the farm binary with `args` plus `--report`, returns (output, report JSON).
pub fn run_farm(args: &[String]) -> (Output, serde_json::Value) {
    let dir = testkit::temp_dir("farm");
    let report = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_farm"))
        .args(args)
        .arg("--quiet")
        .arg("--report")
        .arg(&report)
        .output()
        .expect("farm runs");
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); farm stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let _ = std::fs::remove_dir_all(&dir);
    (out, serde_json::from_str(&text).expect("report is JSON"))
}

/// Strings from `&str`s.
/// Every send the schedule made due was sent or skipped (none silently dropped).
pub fn every_due_send_accounted(r: &serde_json::Value) {
    let c = &r["counters"];
    let n = |k: &str| c[k].as_u64().unwrap();
    assert!(n("sends_due") > 0, "{r:#}");
    assert_eq!(
        n("messages_sent") + n("group_sent") + n("sends_skipped"),
        n("sends_due"),
        "{r:#}"
    );
}

pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// ESTABLISHED TCP sockets whose local address is `127.0.0.1:port` (the server's accepted
/// sockets) and whose peer is one of `peers`, from /proc/net/tcp: the kernel's count,
/// independent of the farm's report. (Client sockets of concurrent tests can share the port
/// number, since the listener uses SO_REUSEPORT; their peers are other servers.)
pub fn server_side_established(port: u16, peers: &[std::net::Ipv4Addr]) -> usize {
    let local = format!("0100007F:{port:04X}");
    let peers: Vec<String> = peers
        .iter()
        .map(|ip| format!("{:08X}:", u32::from_le_bytes(ip.octets())))
        .collect();
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    // A read racing with socket churn can list a socket twice: count distinct 4-tuples.
    let tuples: std::collections::HashSet<(String, String)> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let ours = f.len() > 3
                && f[3] == "01"
                && f[1] == local
                && peers.iter().any(|p| f[2].starts_with(p.as_str()));
            ours.then(|| (f[1].to_owned(), f[2].to_owned()))
        })
        .collect();
    tuples.len()
}

/// Runs `chat` with a config file and the server's connection flags.
pub fn chat(server: &TestServer, config: &Path, a: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chat"));
    cmd.arg("--server")
        .arg(server.addr.to_string())
        .arg("--config")
        .arg(config)
        .arg("--wait")
        .arg("5");
    if server.tls {
        cmd.arg("--ca").arg(server.cert());
    } else {
        cmd.arg("--no-tls");
    }
    cmd.args(a).stdin(std::process::Stdio::null());
    cmd.output().expect("chat runs")
}

/// stdout of a chat run that must succeed.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "chat failed: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The latest PIN the dev SMS gateway wrote for `phone` (`<data_dir>/sms-outbox.txt`, lines
/// `<phone> <pin>`).
pub fn pin_for(server: &TestServer, phone: &str) -> String {
    let text = std::fs::read_to_string(server.data_dir.join("sms-outbox.txt")).expect("sms outbox");
    text.lines()
        .rev()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(phone))
                .then(|| it.next().map(str::to_owned))
                .flatten()
        })
        .unwrap_or_else(|| panic!("no PIN for {phone} in outbox:\n{text}"))
}

/// A broker for the farm's MQTT/NATS tests, or `None` (with the reason printed) when it is
/// not installed here. Under `CI=true` a missing broker fails the test: CI installs both
/// (.ci/run), so a skip there would hide a regression.
pub fn broker(kind: tools::brokers::BrokerKind) -> Option<tools::brokers::Broker> {
    broker_with(kind, None)
}

/// [`broker`] with a TLS listener using `tls`'s certificate and key.
pub fn broker_with(
    kind: tools::brokers::BrokerKind,
    tls: Option<&tools::brokers::BrokerTls>,
) -> Option<tools::brokers::Broker> {
    let Some(bin) = tools::brokers::find(kind) else {
        let why = format!(
            "{} is not installed (apt-get install -y {})",
            kind.program(),
            kind.package()
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why}; CI must install it");
        }
        eprintln!("skipping: {why}");
        return None;
    };
    Some(tools::brokers::Broker::start_with(kind, &bin, None, tls).expect("broker starts"))
}
