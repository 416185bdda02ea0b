//! The server's settings: command-line flags, an optional TOML file with the same keys, and
//! the defaults. Flags win over the file; the file wins over defaults. This module only
//! parses and validates; it must not start anything.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

/// Default listen address (the XMPP client port, loopback only until told otherwise).
pub const LISTEN_DEFAULT: &str = "127.0.0.1:5222";
/// Default data directory (durable logs, dev certificate, dev SMS outbox).
pub const DATA_DIR_DEFAULT: &str = "./switchboard-data";

/// `switchboard`: the messaging switch.
#[derive(Debug, Parser, Default)]
#[command(
    name = "switchboard",
    version,
    about = "Thread-per-core io_uring messaging switch"
)]
pub struct Cli {
    /// TOML file with any of the settings below (flags override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Number of shards (default: online CPUs).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Directory for durable state and the dev certificate.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Serve plaintext (benchmarks only: phones always use TLS).
    #[arg(long)]
    pub no_tls: bool,
    /// PEM certificate chain (default: a dev certificate generated in the data directory).
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key for --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Back shard buffers with huge pages (falls back with a warning when none are set up).
    #[arg(long)]
    pub huge_pages: bool,
    /// Run shards at SCHED_FIFO real-time priority (needs root or CAP_SYS_NICE).
    #[arg(long)]
    pub realtime: bool,
    /// Do not pin shards to CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// Connection cap for the process (default: open-file limit less a reserve).
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Close connections silent for this many seconds.
    #[arg(long)]
    pub idle_timeout_s: Option<u64>,
    /// Enables the load-test login path with this shared secret. UNSAFE in production:
    /// anyone holding it can log in as any phone number.
    #[arg(long)]
    pub load_test_secret: Option<String>,
    /// POST registration PINs as JSON to this http:// URL (default: dev outbox file).
    #[arg(long)]
    pub sms_webhook: Option<String>,
    /// POST push notifications as JSON to this http:// URL (default: a log line).
    #[arg(long)]
    pub push_webhook: Option<String>,
    /// Never compact a shard's log below this size (bytes).
    #[arg(long)]
    pub compact_min_bytes: Option<u64>,
    /// Close connections that have not finished the TLS handshake after this many seconds.
    #[arg(long)]
    pub handshake_timeout_s: Option<u64>,
    /// Close connections whose started frame is not complete after this many seconds.
    #[arg(long)]
    pub frame_timeout_s: Option<u64>,
    /// Refuse new sends with Busy while a shard's log has more bytes than this not yet durable.
    #[arg(long)]
    pub journal_pending_bytes_max: Option<usize>,
    /// Refuse new sends with Busy while a shard has more mesh messages than this unflushed.
    #[arg(long)]
    pub mesh_queued_max: Option<usize>,
}

/// The same settings, as a TOML file may give them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    listen: Option<SocketAddr>,
    shards: Option<usize>,
    data_dir: Option<PathBuf>,
    no_tls: Option<bool>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    huge_pages: Option<bool>,
    realtime: Option<bool>,
    no_pin: Option<bool>,
    max_connections: Option<usize>,
    idle_timeout_s: Option<u64>,
    load_test_secret: Option<String>,
    sms_webhook: Option<String>,
    push_webhook: Option<String>,
    compact_min_bytes: Option<u64>,
    handshake_timeout_s: Option<u64>,
    frame_timeout_s: Option<u64>,
    journal_pending_bytes_max: Option<usize>,
    mesh_queued_max: Option<usize>,
}

/// Settings after merging flags, file and defaults.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Shards to run.
    pub shards: usize,
    /// Durable state lives here.
    pub data_dir: PathBuf,
    /// TLS on (default) or plaintext.
    pub tls: bool,
    /// Explicit certificate and key; `None` uses the dev certificate.
    pub cert_key: Option<(PathBuf, PathBuf)>,
    /// Huge-page backed buffers.
    pub huge_pages: bool,
    /// SCHED_FIFO.
    pub realtime: bool,
    /// Pin shards to CPUs.
    pub pin_cpus: bool,
    /// Connection cap.
    pub max_connections: Option<usize>,
    /// Idle timeout in milliseconds.
    pub idle_timeout_ms: u64,
    /// Load-test login secret (off when `None`).
    pub load_test_secret: Option<String>,
    /// SMS webhook URL (dev outbox when `None`).
    pub sms_webhook: Option<String>,
    /// Push webhook URL (log line when `None`).
    pub push_webhook: Option<String>,
    /// Logs smaller than this are never compacted.
    pub compact_min_bytes: u64,
    /// TLS handshake deadline in milliseconds.
    pub handshake_timeout_ms: u64,
    /// A started frame must be complete within this many milliseconds (slowloris).
    pub frame_timeout_ms: u64,
    /// When new sends are refused with `Busy`.
    pub overload: crate::overload::OverloadLimits,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these settings.
    #[error("config file {path}: {detail}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        detail: String,
    },
    /// A value is out of range or settings contradict each other.
    #[error("bad setting: {0}")]
    Invalid(String),
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.into(),
        detail: e.to_string(),
    })
}

impl ServerConfig {
    /// Merges flags over the file (if any) over defaults, and validates.
    pub fn from_cli(cli: Cli) -> Result<ServerConfig, ConfigError> {
        let file = match &cli.config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        let cert = cli.cert.or(file.cert);
        let key = cli.key.or(file.key);
        let cert_key = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(ConfigError::Invalid("cert and key go together".into())),
        };
        let shards = cli
            .shards
            .or(file.shards)
            .unwrap_or_else(engine::config::online_cpus);
        if shards == 0 || shards > 1024 {
            return Err(ConfigError::Invalid(format!(
                "shards must be 1..=1024, got {shards}"
            )));
        }
        let idle_s = cli.idle_timeout_s.or(file.idle_timeout_s);
        if idle_s == Some(0) {
            return Err(ConfigError::Invalid(
                "idle_timeout_s must be at least 1".into(),
            ));
        }
        let handshake_s = cli.handshake_timeout_s.or(file.handshake_timeout_s);
        if handshake_s == Some(0) {
            return Err(ConfigError::Invalid(
                "handshake_timeout_s must be at least 1".into(),
            ));
        }
        let frame_s = cli.frame_timeout_s.or(file.frame_timeout_s);
        if frame_s == Some(0) {
            return Err(ConfigError::Invalid(
                "frame_timeout_s must be at least 1".into(),
            ));
        }
        let overload_default = crate::overload::OverloadLimits::default();
        let overload = crate::overload::OverloadLimits {
            journal_pending_bytes_max: cli
                .journal_pending_bytes_max
                .or(file.journal_pending_bytes_max)
                .unwrap_or(overload_default.journal_pending_bytes_max),
            mesh_queued_max: cli
                .mesh_queued_max
                .or(file.mesh_queued_max)
                .unwrap_or(overload_default.mesh_queued_max),
        };
        Ok(ServerConfig {
            listen: cli
                .listen
                .or(file.listen)
                .unwrap_or_else(|| LISTEN_DEFAULT.parse().expect("valid default")),
            shards,
            data_dir: cli
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| DATA_DIR_DEFAULT.into()),
            tls: !(cli.no_tls || file.no_tls.unwrap_or(false)),
            cert_key,
            huge_pages: cli.huge_pages || file.huge_pages.unwrap_or(false),
            realtime: cli.realtime || file.realtime.unwrap_or(false),
            pin_cpus: !(cli.no_pin || file.no_pin.unwrap_or(false)),
            max_connections: cli.max_connections.or(file.max_connections),
            idle_timeout_ms: idle_s
                .map(|s| s * 1000)
                .unwrap_or(engine::config::IDLE_TIMEOUT_MS_DEFAULT),
            load_test_secret: cli.load_test_secret.or(file.load_test_secret),
            sms_webhook: cli.sms_webhook.or(file.sms_webhook),
            push_webhook: cli.push_webhook.or(file.push_webhook),
            compact_min_bytes: cli
                .compact_min_bytes
                .or(file.compact_min_bytes)
                .unwrap_or(crate::limits::COMPACT_MIN_BYTES),
            handshake_timeout_ms: handshake_s
                .map(|s| s * 1000)
                .unwrap_or(engine::config::HANDSHAKE_TIMEOUT_MS_DEFAULT),
            frame_timeout_ms: frame_s
                .map(|s| s * 1000)
                .unwrap_or(engine::config::FRAME_TIMEOUT_MS_DEFAULT),
            overload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_defaults_fill_the_rest() {
        let dir = std::env::temp_dir().join(format!("sb-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("switchboard.toml");
        std::fs::write(
            &path,
            "shards = 3\nno_tls = true\nlisten = \"127.0.0.1:7000\"\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "switchboard",
            "--config",
            path.to_str().unwrap(),
            "--shards",
            "2",
        ]);
        let cfg = ServerConfig::from_cli(cli).unwrap();
        assert_eq!(cfg.shards, 2);
        assert!(!cfg.tls);
        assert_eq!(cfg.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(cfg.data_dir, PathBuf::from(DATA_DIR_DEFAULT));
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_errors() {
        let dir = std::env::temp_dir().join(format!("sb-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "shardz = 3\n").unwrap();
        let cli = Cli::parse_from(["switchboard", "--config", path.to_str().unwrap()]);
        assert!(matches!(
            ServerConfig::from_cli(cli),
            Err(ConfigError::Parse { .. })
        ));
        let cli = Cli::parse_from(["switchboard", "--shards", "0"]);
        assert!(matches!(
            ServerConfig::from_cli(cli),
            Err(ConfigError::Invalid(_))
        ));
    }
}
