//! A nats-server with JetStream for one test, and `switchboard` boxes joined to it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use testkit::nats::NatsCluster;

use crate::support;

/// A lone nats-server with JetStream (`testkit::nats::NatsCluster` of one node), stopped
/// on drop.
pub struct Nats {
    _node: NatsCluster,
    /// Its client URL (`nats://127.0.0.1:PORT`).
    pub url: String,
}

impl Nats {
    /// Starts nats-server with JetStream on a free port, and returns once JetStream answers.
    pub fn start() -> Nats {
        let node = NatsCluster::start("box", 1);
        Nats {
            url: node.url(),
            _node: node,
        }
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

    /// Stops the box's process (SIGSTOP): its sockets stay open, nothing is read.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused box run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: a signal to our own child, which has not been reaped.
        let sent = unsafe { libc::kill(pid, sig) };
        assert_eq!(sent, 0, "signal {sig} to the box");
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
pub fn admin_addr(line: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("admin=Some("))
        .and_then(|a| a.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no admin address in {line}"))
}
