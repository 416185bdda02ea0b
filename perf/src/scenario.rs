//! Helpers for benchmark scenarios that drive a real server with the `farm`: start a
//! `switchboard` child (pinned, plaintext or TLS, load-test logins on), run the farm pinned
//! to other CPUs, read its JSON report and the server's CPU time. Bounded: every child has
//! a timeout, and the server is stopped (SIGTERM, then SIGKILL) when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The secret the scenarios' servers accept for load-test logins.
pub const SECRET: &str = "bench-secret";

/// A server child.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data directory (removed on drop).
    pub data: PathBuf,
    /// Its admin endpoint (`/stats`), from the same log line.
    pub admin: Option<SocketAddr>,
}

impl Server {
    /// Starts `bin` with `shards` shards, pinned to CPUs 0.. by the server itself.
    pub fn start(bin: &Path, shards: usize, tls: bool) -> anyhow::Result<Server> {
        Self::start_pinned(bin, shards, tls, true)
    }

    /// Starts `bin`; `pin` false lets the kernel place the shards.
    pub fn start_pinned(bin: &Path, shards: usize, tls: bool, pin: bool) -> anyhow::Result<Server> {
        Self::start_with(bin, shards, tls, pin, &[])
    }

    /// Starts `bin` with `extra` flags appended.
    pub fn start_with(
        bin: &Path,
        shards: usize,
        tls: bool,
        pin: bool,
        extra: &[&str],
    ) -> anyhow::Result<Server> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let data = std::env::temp_dir().join(format!("sb-bench-{}-{nanos}", std::process::id()));
        let mut cmd = Command::new(bin);
        // Port 0: the server reports the port it got (a port found free here and passed in
        // could be taken by another server starting at the same moment).
        cmd.args(["--listen", "127.0.0.1:0", "--shards", &shards.to_string()]);
        cmd.env(shards::config::LOAD_TEST_SECRET_ENV, SECRET)
            .arg("--data-dir")
            .arg(&data);
        // Never the default admin port: several servers may run at once.
        cmd.args(["--admin", "127.0.0.1:0"]);
        // The farm is one loopback /24 opening thousands of connections at once: past the
        // default cap on connections not logged in yet per prefix.
        cmd.args(["--prelogin-conns-per-prefix", "1000000"]);
        // idle-conns holds connections that never log in while it measures them.
        cmd.args(["--login-timeout-s", "3600"]);
        cmd.args(extra);
        if !tls {
            cmd.arg("--no-tls");
        }
        if !pin {
            cmd.arg("--no-pin");
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "warn,switchboard=info")
            .env("NO_COLOR", "1");
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let mut seen = Vec::new();
        let (addr, admin) = loop {
            match lines.next() {
                Some(Ok(line)) => match shards::server::listening_addr(&line) {
                    Some(addr) => break (addr, admin_addr(&line)),
                    None => seen.push(line),
                },
                _ => {
                    let status = child.wait()?;
                    bail!(
                        "server exited ({status}) before listening:\n{}",
                        seen.join("\n")
                    );
                }
            }
        };
        // Keep draining its log so the server never blocks on a full pipe (shown on our
        // stderr with PERF_SERVER_LOG set).
        let show = std::env::var_os("PERF_SERVER_LOG").is_some();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if show {
                    eprintln!("server: {line}");
                }
            }
        });
        Ok(Server {
            child,
            addr,
            data,
            admin,
        })
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the server process has exited (a live upgrade's old process does), reaping it.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// The admin address in the server's listening line (`admin=Some(127.0.0.1:9100)`).
pub fn admin_addr(line: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("admin=Some("))
        .and_then(|a| a.strip_suffix(')'))
        .and_then(|a| a.parse().ok())
}

/// `switchboard` beside the running binary, unless `given`.
pub fn server_bin(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        std::env::current_exe()
            .expect("own path")
            .with_file_name("switchboard")
    })
}

/// Runs the farm (pinned to `cpus`, e.g. "1") against `server` with `args`; returns its JSON
/// report and the server CPU µs spent during the run.
pub fn run_farm(
    farm: &Path,
    server: &Server,
    cpus: &str,
    args: &[&str],
    timeout: Duration,
) -> anyhow::Result<(serde_json::Value, u64)> {
    let report = server
        .data
        .join(format!("farm-{}.json", Instant::now().elapsed().as_nanos()));
    std::fs::create_dir_all(&server.data)?;
    let cpu0 = crate::proc_stats::cpu_us(server.pid())?;
    let out = Command::new("timeout")
        .arg(timeout.as_secs().to_string())
        .args(["taskset", "-c", cpus])
        .arg(farm)
        .args(["--server", &server.addr.to_string(), "--report"])
        .env(shards::config::LOAD_TEST_SECRET_ENV, SECRET)
        .arg(&report)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running the farm")?;
    let cpu = crate::proc_stats::cpu_us(server.pid())? - cpu0;
    let text = std::fs::read_to_string(&report).with_context(|| {
        format!(
            "farm wrote no report ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((serde_json::from_str(&text)?, cpu))
}

/// A number from a JSON report by path, e.g. `["latency_us", "delivery", "p99"]`.
pub fn at(v: &serde_json::Value, path: &[&str]) -> f64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_f64()
        .unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_address_comes_from_the_listening_line() {
        let line = "INFO switchboard: switchboard listening addr=127.0.0.1:4 admin=Some(127.0.0.1:9100) shards=1";
        assert_eq!(admin_addr(line), Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(
            admin_addr("switchboard listening addr=127.0.0.1:4 admin=None"),
            None
        );
    }
}
