//! The brokers people would otherwise pick, started as children for tests and the bench:
//! mosquitto (MQTT) and nats-server (NATS), from their Debian packages.
//!
//! Steps of [`Broker::start`], each bounded:
//! 1. Find the binary ([`find`]); the bench may [`install`] it with apt first.
//! 2. Take a free loopback port (bind port 0, read it, close) and write a config file into a
//!    fresh temp directory: loopback listener, plaintext, persistence off (their default),
//!    connection and queue limits raised so the limits measured are the machine's.
//! 3. Spawn it (under `taskset` when a CPU list is given) and wait until the port accepts a
//!    TCP connection, at most [`READY_TIMEOUT`]. If the child exits first (the port was taken
//!    between steps 2 and 3), try again with a new port, at most [`START_ATTEMPTS_MAX`] times.
//! 4. Drop stops it: SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]; the directory is removed.
//!
//! Only loopback is ever listened on.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Longest wait for a started broker to accept connections.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a broker to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Start attempts (a fresh port each) before giving up.
pub const START_ATTEMPTS_MAX: usize = 3;
/// Pause between readiness probes.
const PROBE_EVERY: Duration = Duration::from_millis(20);

/// A broker kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// Eclipse mosquitto (MQTT 3.1.1 / 5).
    Mosquitto,
    /// nats-server (core NATS).
    Nats,
}

impl BrokerKind {
    /// The executable's name.
    pub fn program(self) -> &'static str {
        match self {
            BrokerKind::Mosquitto => "mosquitto",
            BrokerKind::Nats => "nats-server",
        }
    }

    /// The Debian package that ships it.
    pub fn package(self) -> &'static str {
        self.program()
    }

    fn config(self, port: u16, dir: &Path, tls: bool) -> String {
        // The certificate and key were copied into `dir` (readable by the user mosquitto
        // drops to when started as root).
        let tls_lines = if tls {
            format!(
                "certfile {}\nkeyfile {}\n",
                dir.join("cert.pem").display(),
                dir.join("key.pem").display()
            )
        } else {
            String::new()
        };
        match self {
            BrokerKind::Mosquitto => format!(
                "listener {port} 127.0.0.1\n{tls_lines}allow_anonymous true\npersistence false\n\
                 max_connections -1\nmax_queued_messages 100000\nset_tcp_nodelay true\n\
                 log_dest file {}\nlog_type error\nlog_type warning\n",
                dir.join("broker.log").display()
            ),
            BrokerKind::Nats => format!(
                "listen: \"127.0.0.1:{port}\"\nmax_connections: 1000000\nmax_pending: 67108864\n\
                 write_deadline: \"10s\"\nlog_file: \"{}\"\n{}",
                dir.join("broker.log").display(),
                if tls {
                    // A generous handshake timeout: 1,000 clients connect at once on a busy box.
                    format!(
                        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  timeout: 5\n}}\n",
                        dir.join("cert.pem").display(),
                        dir.join("key.pem").display()
                    )
                } else {
                    String::new()
                }
            ),
        }
    }

    fn args(self, conf: &Path) -> Vec<String> {
        let conf = conf.display().to_string();
        match self {
            BrokerKind::Mosquitto => vec!["-c".into(), conf],
            BrokerKind::Nats => vec!["-c".into(), conf],
        }
    }
}

/// The broker's executable: on `PATH`, or in the sbin directories Debian installs to.
pub fn find(kind: BrokerKind) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(kind.program()))
        .find(|p| p.is_file())
}

/// Installs the broker's Debian package with apt-get (as root, or through `sudo -n`), saying
/// so in one line on stderr. Returns the executable.
pub fn install(kind: BrokerKind) -> anyhow::Result<PathBuf> {
    if let Some(p) = find(kind) {
        return Ok(p);
    }
    eprintln!(
        "{} not found: installing the Debian package `{}` with apt-get",
        kind.program(),
        kind.package()
    );
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut sh = Command::new(if root { "sh" } else { "sudo" });
    if !root {
        sh.args(["-n", "sh"]);
    }
    let script = format!(
        "(apt-get install -y -qq {p} || (apt-get update -qq && apt-get install -y -qq {p})) >/dev/null 2>&1",
        p = kind.package()
    );
    let status = sh
        .args(["-c", &script])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .context("running apt-get")?;
    match find(kind) {
        Some(p) => Ok(p),
        None => bail!(
            "installing {} failed ({status}); install it by hand",
            kind.package()
        ),
    }
}

/// A certificate and its key for a broker's TLS listener (PEM files).
#[derive(Debug, Clone)]
pub struct BrokerTls {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// A running broker, stopped on drop.
#[derive(Debug)]
pub struct Broker {
    child: Child,
    /// What it is.
    pub kind: BrokerKind,
    /// Where it listens (loopback).
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Broker {
    /// Starts `kind` from `bin`, pinned to `cpus` (a `taskset -c` list) when given.
    pub fn start(kind: BrokerKind, bin: &Path, cpus: Option<&str>) -> anyhow::Result<Broker> {
        Self::start_with(kind, bin, cpus, None)
    }

    /// Like [`Broker::start`], with a TLS listener when `tls` is given.
    pub fn start_with(
        kind: BrokerKind,
        bin: &Path,
        cpus: Option<&str>,
        tls: Option<&BrokerTls>,
    ) -> anyhow::Result<Broker> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS_MAX {
            match Self::start_once(kind, bin, cpus, tls) {
                Ok(b) => return Ok(b),
                Err(e) => last = Some(e),
            }
        }
        // Invariant: START_ATTEMPTS_MAX > 0, so at least one error was kept.
        Err(last.expect("at least one attempt"))
    }

    fn start_once(
        kind: BrokerKind,
        bin: &Path,
        cpus: Option<&str>,
        tls: Option<&BrokerTls>,
    ) -> anyhow::Result<Broker> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free loopback port")?
            .port();
        let dir = fresh_dir(kind.program())?;
        if let Some(t) = tls {
            use std::os::unix::fs::PermissionsExt;
            for (from, to) in [(&t.cert, "cert.pem"), (&t.key, "key.pem")] {
                let to = dir.join(to);
                std::fs::copy(from, &to).with_context(|| format!("copying {}", from.display()))?;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644))?;
            }
        }
        let conf = dir.join("broker.conf");
        std::fs::write(&conf, kind.config(port, &dir, tls.is_some()))
            .with_context(|| format!("writing {}", conf.display()))?;
        let mut cmd = match cpus {
            Some(c) => {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", c]).arg(bin);
                cmd
            }
            None => Command::new(bin),
        };
        let child = cmd
            .args(kind.args(&conf))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut broker = Broker {
            child,
            kind,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        broker.wait_ready()?;
        Ok(broker)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default();
                bail!(
                    "{} exited ({status}) before listening: {log}",
                    self.kind.program()
                );
            }
            if TcpStream::connect_timeout(&self.addr, PROBE_EVERY).is_ok() {
                return Ok(());
            }
            std::thread::sleep(PROBE_EVERY);
        }
        bail!(
            "{} did not accept connections on {} within {READY_TIMEOUT:?}",
            self.kind.program(),
            self.addr
        )
    }

    /// The broker's pid (taskset execs it, so this is the broker itself).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(PROBE_EVERY);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fresh_dir(tag: &str) -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let d = std::env::temp_dir().join(format!("sb-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    // mosquitto started as root drops to its own user and must still write its log here.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777))?;
    Ok(d)
}
