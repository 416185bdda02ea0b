//! A nats-server with JetStream for one test, and `switchboard` boxes joined to it.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support;

/// Where the Debian package puts it.
const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// A nats-server process, killed on drop.
pub struct Nats {
    child: Child,
    /// Its client URL (`nats://127.0.0.1:PORT`).
    pub url: String,
    _store: PathBuf,
}

impl Nats {
    /// Starts nats-server with JetStream on a port it picks, and returns once it is ready.
    pub fn start() -> Nats {
        let store = testkit::temp_dir("nats");
        let mut child = Command::new(NATS_SERVER)
            .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{NATS_SERVER} (apt-get install nats-server): {e}"));
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut port = None;
        let mut seen = Vec::new();
        loop {
            let Some(Ok(line)) = lines.next() else {
                panic!(
                    "nats-server exited before it was ready:\n{}",
                    seen.join("\n")
                );
            };
            if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                port = rest.trim().rsplit(':').next().map(str::to_string);
            }
            if line.contains("Server is ready") {
                break;
            }
            seen.push(line);
        }
        std::thread::spawn(move || lines.for_each(drop));
        let port = port.expect("nats-server named its client port");
        Nats {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _store: store,
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `switchboard` box in a cluster, killed on drop.
pub struct Box {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub data: PathBuf,
}

impl Box {
    /// Starts box `id` advertising `advertise`, joined to `nats` with `extra` flags.
    pub fn start(nats_url: &str, id: &str, advertise: &str, extra: &[&str]) -> Box {
        let data = testkit::temp_dir(&format!("box-{id}"));
        Self::start_in(data, nats_url, id, advertise, extra)
    }

    /// [`Box::start`] on an existing data directory.
    pub fn start_in(
        data: PathBuf,
        nats_url: &str,
        id: &str,
        advertise: &str,
        extra: &[&str],
    ) -> Box {
        let mut args = vec![
            "--shards",
            "2",
            "--no-tls",
            "--admin",
            "127.0.0.1:0",
            "--cluster",
            nats_url,
            "--box-id",
            id,
            "--advertise",
            advertise,
        ];
        args.extend(extra);
        let mut cmd = support::switchboard_command(&args);
        cmd.env(shards::config::LOAD_TEST_SECRET_ENV, "farm-secret")
            .arg("--data-dir")
            .arg(&data);
        let (child, line) = support::listening(cmd);
        let addr = shards::server::listening_addr(&line).expect("addr=");
        let admin = admin_addr(&line);
        Box {
            child,
            addr,
            admin,
            data,
        }
    }

    pub fn client(&self) -> support::Client {
        support::Client::plain(self.addr)
    }

    /// A service statistic of shard 0 (where the box-wide cluster numbers are), published
    /// after this call.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let shards = support::admin::fresh_stats(self.admin, 2);
        shards[0]["service"][name].as_u64()
    }

    /// Waits (up to 30 s) until shard 0 reports `name` = `want`.
    pub fn wait_stat(&self, name: &str, want: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let shards = support::admin::stats(self.admin);
            // Empty until the shards' first publication.
            let now = shards.first().and_then(|s| s["service"][name].as_u64());
            if now == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} stayed {now:?}, not {want}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (up to 30 s) until some shard reports `name` = `want`.
    pub fn wait_stat_any_shard(&self, name: &str, want: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let shards = support::admin::stats(self.admin);
            let now: Vec<_> = shards.iter().map(|s| s["service"][name].as_u64()).collect();
            if now.contains(&Some(want)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} stayed {now:?}, not {want}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The dev SMS outbox's last PIN for `phone`.
    pub fn pin_for(&self, phone: &str) -> String {
        pin_in(&self.data, phone)
    }
}

impl Drop for Box {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pin_in(data: &Path, phone: &str) -> String {
    let text = std::fs::read_to_string(data.join("sms-outbox.txt")).expect("sms outbox");
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with(&format!("{phone} ")))
        .expect("a PIN was sent");
    line.split(' ').nth(1).unwrap().to_string()
}

/// Every `switchboard_cluster_*` metric `admin` serves has a row in docs/METRICS.md.
pub fn every_cluster_metric_is_documented(admin: SocketAddr) {
    let (_, text) = support::admin::get(admin, "/metrics");
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/METRICS.md"))
        .unwrap();
    let served: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("switchboard_cluster_"))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    assert!(served.len() >= 13, "{served:?}");
    for name in served {
        assert!(
            doc.contains(&format!("`{name}`")),
            "{name} is not in docs/METRICS.md"
        );
    }
}

/// The admin address in a listening line (`admin=Some(127.0.0.1:PORT)`).
fn admin_addr(line: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("admin=Some("))
        .and_then(|a| a.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no admin address in {line}"))
}
