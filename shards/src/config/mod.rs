//! The server's settings: command-line flags, an optional TOML file with the same keys, and
//! the defaults. Flags win over the file; the file wins over defaults. This module only
//! parses and validates; it must not start anything.

pub mod coalesce;
pub mod media;
pub mod show;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

/// Default listen address (the XMPP client port, loopback only until told otherwise).
pub const LISTEN_DEFAULT: &str = "127.0.0.1:5222";
/// Default data directory (durable logs, dev certificate, dev SMS outbox).
pub const DATA_DIR_DEFAULT: &str = "./switchboard-data";
/// Default alarm: one user's queue holds more items than this (half its hard limit).
pub const ALARM_QUEUE_USER_ITEMS_DEFAULT: u64 =
    messaging::state::limits::QUEUE_ITEMS_PER_USER_MAX as u64 / 2;
/// Default alarm: one shard's queues hold more items than this in all.
pub const ALARM_QUEUE_SHARD_ITEMS_DEFAULT: u64 = 1_000_000;
/// Default alarm: messages waiting in one shard's mesh outbox for one peer (half the cap).
pub const ALARM_MESH_DEPTH_MSGS_DEFAULT: u64 = engine::mesh::MESH_OUTBOX_MSGS_MAX as u64 / 2;
/// Default alarm: a shard busy more than this share of the last second.
pub const ALARM_UTILISATION_PCT_DEFAULT: u64 = 90;
/// Default alarm: one turn of a shard's loop took this long (ms), its work and the kernel's
/// inline work on its submissions, so every connection on it waited that long once.
pub const ALARM_TURN_MAX_MS_DEFAULT: u64 = 10;
/// Default least time between two warnings of one standing alarm.
pub const ALARM_PERIOD_S_DEFAULT: u64 = 60;

/// Where the load-test secret comes from (or `load_test_secret` in the config file, mode
/// 0600): never a flag, which every local user can read in `/proc/PID/cmdline`.
pub const LOAD_TEST_SECRET_ENV: &str = "SWITCHBOARD_LOAD_TEST_SECRET";

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
    /// Refused: any local user can read a flag in /proc/PID/cmdline. The load-test secret
    /// comes from the environment ([`LOAD_TEST_SECRET_ENV`]) or the config file; the flag
    /// is parsed only to say so.
    #[arg(long, hide = true)]
    pub load_test_secret: Option<String>,
    /// POST registration PINs as JSON to this http:// or https:// URL (default: dev outbox
    /// file).
    #[arg(long)]
    pub sms_webhook: Option<String>,
    /// POST push notifications as JSON to this http:// URL (default: a log line).
    #[arg(long)]
    pub push_webhook: Option<String>,
    /// Never compact a shard's log below this size (bytes).
    #[arg(long)]
    pub compact_min_bytes: Option<u64>,
    /// Microseconds a log commit gathers before it starts when none is in flight (0: start
    /// at once).
    #[arg(long)]
    pub commit_window_us: Option<u64>,
    /// Microseconds a shard's batching wait in the kernel may last from its start, once a
    /// completion is in, for others to join it (0: off; Linux 6.12+).
    #[arg(long)]
    pub coalesce_us: Option<u64>,
    /// When that batching wait applies: adaptive (only while completions arrive densely:
    /// more CPU saved than latency added) or always.
    #[arg(long)]
    pub coalesce: Option<String>,
    /// Start even when a shard log is damaged before its end: the damaged log is set aside
    /// (renamed, never truncated) and the shard starts from every record that still passes
    /// its checksum; what was skipped is reported. Without it such a server refuses to start.
    #[arg(long)]
    pub salvage: bool,
    /// Close connections that have not finished the TLS handshake after this many seconds.
    #[arg(long)]
    pub handshake_timeout_s: Option<u64>,
    /// Close connections whose started frame is not complete after this many seconds.
    #[arg(long)]
    pub frame_timeout_s: Option<u64>,
    /// Close connections not logged in this many seconds after they connected [default: 60].
    #[arg(long)]
    pub login_timeout_s: Option<u64>,
    /// Connections not logged in yet that one IPv4 /24 or IPv6 /48 may hold per shard; more
    /// are closed at accept [default: 64]. Raise it behind a large NAT.
    #[arg(long)]
    pub prelogin_conns_per_prefix: Option<usize>,
    /// Refuse new sends with Busy while a shard's log has more bytes than this not yet durable.
    #[arg(long)]
    pub journal_pending_bytes_max: Option<usize>,
    /// Refuse new sends with Busy while a shard has more mesh messages than this unflushed.
    #[arg(long)]
    pub mesh_queued_max: Option<usize>,
    /// Admin endpoint (GET /metrics, /stats) address [default: 127.0.0.1:9100].
    #[arg(long, conflicts_with = "no_admin")]
    pub admin: Option<SocketAddr>,
    /// Media service flags (`config/media.rs`).
    #[command(flatten)]
    pub media: media::MediaArgs,
    /// Serve no admin endpoint.
    #[arg(long)]
    pub no_admin: bool,
    /// Publish no per-shard statistics (to measure their cost; /metrics answers 503).
    #[arg(long)]
    pub no_stats: bool,
    /// Alarm when one user's queue holds more items than this (0: off) [default: 5000].
    #[arg(long)]
    pub alarm_queue_user: Option<u64>,
    /// Alarm when one shard's queues hold more items than this (0: off) [default: 1000000].
    #[arg(long)]
    pub alarm_queue_shard: Option<u64>,
    /// Alarm when a mesh outbox to one peer holds more messages than this (0: off).
    #[arg(long)]
    pub alarm_mesh_depth: Option<u64>,
    /// Alarm when a shard is busy more than this percent of a second (0: off) [default: 90].
    #[arg(long)]
    pub alarm_utilisation_pct: Option<u64>,
    /// Alarm when a shard works longer than this many ms without waiting for I/O, a stall
    /// every connection on it feels (0: off) [default: 10].
    #[arg(long)]
    pub alarm_turn_max_ms: Option<u64>,
    /// Repeat a standing alarm's warning at most this often, seconds [default: 60].
    #[arg(long)]
    pub alarm_period_s: Option<u64>,
    /// PINs sent per source address per hour, per shard (0: off) [default: 5].
    #[arg(long)]
    pub pin_sends_source_per_hour: Option<u32>,
    /// PINs sent per source prefix (IPv4 /24, IPv6 /48) per hour, per shard (0: off) [default: 30].
    #[arg(long)]
    pub pin_sends_prefix_per_hour: Option<u32>,
    /// PINs sent per number range (first 6 digits) per hour, per shard (0: off) [default: 30].
    #[arg(long)]
    pub pin_sends_range_per_hour: Option<u32>,
    /// PINs sent by the whole box per minute, split over the shards (0: off) [default: 600].
    #[arg(long)]
    pub pin_sends_box_per_minute: Option<u32>,
    /// Verify attempts and wrong load-test secrets per source per hour, per shard (0: off) [default: 20].
    #[arg(long)]
    pub guesses_source_per_hour: Option<u32>,
    /// The same per source prefix per hour, per shard (0: off) [default: 100].
    #[arg(long)]
    pub guesses_prefix_per_hour: Option<u32>,
    /// The same for the whole box per minute, split over the shards (0: off) [default: 1200].
    #[arg(long)]
    pub guesses_box_per_minute: Option<u32>,
    /// Distinct new recipients one sender may write to per hour; contacts and people who
    /// wrote to the sender are free (0: off) [default: 200; 0 with --load-test-secret].
    #[arg(long)]
    pub new_recipients_per_hour: Option<u32>,
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
    commit_window_us: Option<u64>,
    coalesce_us: Option<u64>,
    coalesce: Option<String>,
    handshake_timeout_s: Option<u64>,
    frame_timeout_s: Option<u64>,
    login_timeout_s: Option<u64>,
    prelogin_conns_per_prefix: Option<usize>,
    journal_pending_bytes_max: Option<usize>,
    mesh_queued_max: Option<usize>,
    /// An address, or "off".
    admin: Option<String>,
    no_stats: Option<bool>,
    alarm_queue_user: Option<u64>,
    alarm_queue_shard: Option<u64>,
    alarm_mesh_depth: Option<u64>,
    alarm_utilisation_pct: Option<u64>,
    alarm_turn_max_ms: Option<u64>,
    alarm_period_s: Option<u64>,
    pin_sends_source_per_hour: Option<u32>,
    pin_sends_prefix_per_hour: Option<u32>,
    pin_sends_range_per_hour: Option<u32>,
    pin_sends_box_per_minute: Option<u32>,
    guesses_source_per_hour: Option<u32>,
    guesses_prefix_per_hour: Option<u32>,
    guesses_box_per_minute: Option<u32>,
    new_recipients_per_hour: Option<u32>,
    /// The `[media]` table (`config/media.rs`).
    media: Option<media::MediaFile>,
}

/// Alarm thresholds; `None` is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmThresholds {
    /// Items in one user's queue.
    pub queue_user_items: Option<u64>,
    /// Items in one shard's queues.
    pub queue_shard_items: Option<u64>,
    /// Messages in one mesh outbox.
    pub mesh_depth_msgs: Option<u64>,
    /// Busy percent of a second.
    pub utilisation_pct: Option<u64>,
    /// Longest turn of a shard's loop, ms.
    pub turn_max_ms: Option<u64>,
    /// Least time between two warnings of one standing alarm.
    pub period_ms: u64,
}

impl Default for AlarmThresholds {
    fn default() -> Self {
        AlarmThresholds {
            queue_user_items: Some(ALARM_QUEUE_USER_ITEMS_DEFAULT),
            queue_shard_items: Some(ALARM_QUEUE_SHARD_ITEMS_DEFAULT),
            mesh_depth_msgs: Some(ALARM_MESH_DEPTH_MSGS_DEFAULT),
            utilisation_pct: Some(ALARM_UTILISATION_PCT_DEFAULT),
            turn_max_ms: Some(ALARM_TURN_MAX_MS_DEFAULT),
            period_ms: ALARM_PERIOD_S_DEFAULT * 1000,
        }
    }
}

impl AlarmThresholds {
    /// The engine's rules for these thresholds.
    pub fn to_engine(&self) -> engine::observe::alarm::AlarmConfig {
        use crate::adapter::stats::{STAT_QUEUE_ITEMS, STAT_QUEUE_ITEMS_USER_MAX};
        use engine::observe::stats::{
            STAT_MESH_OUTBOX_DEPTH_MAX, STAT_TURN_MAX_MS, STAT_UTILISATION_PCT,
        };
        let rules = [
            (STAT_QUEUE_ITEMS_USER_MAX, self.queue_user_items),
            (STAT_QUEUE_ITEMS, self.queue_shard_items),
            (STAT_MESH_OUTBOX_DEPTH_MAX, self.mesh_depth_msgs),
            (STAT_UTILISATION_PCT, self.utilisation_pct),
            (STAT_TURN_MAX_MS, self.turn_max_ms),
        ]
        .into_iter()
        .filter_map(|(stat, max)| Some(engine::observe::alarm::AlarmRule { stat, max: max? }))
        .collect();
        engine::observe::alarm::AlarmConfig {
            rules,
            period_ms: self.period_ms,
        }
    }
}

/// Settings after merging flags, file and defaults.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Shards to run (on existing data, the count it was written with: `data_layout`).
    pub shards: usize,
    /// `shards` was asked for (flag or file), not defaulted from the CPU count; a data
    /// directory written with another count then refuses to start instead of adopting it.
    pub shards_explicit: bool,
    /// Durable state lives here.
    pub data_dir: PathBuf,
    /// TLS on (default) or plaintext.
    pub tls: bool,
    /// Explicit certificate and key; `None` uses the dev certificate.
    pub cert_key: Option<(PathBuf, PathBuf)>,
    /// Huge-page backed buffers.
    pub huge_pages: bool,
    /// The media service (`--media-listen`), or `None` (off, the default).
    pub media: Option<media::MediaConfig>,
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
    /// Microseconds a log commit gathers before it starts when none is in flight.
    pub commit_window_us: u64,
    /// Microseconds a shard's batching wait may last (`--coalesce-us`).
    pub coalesce_us: u64,
    /// When the batching wait applies (`--coalesce`).
    pub coalesce: engine::coalesce::CoalesceMode,
    /// Start from what is readable when a log is damaged mid-file (`--salvage`).
    pub salvage: bool,
    /// Faults injected into the log files (tests only; always `None` from the command line).
    pub log_faults: Option<std::sync::Arc<engine::log_file::LogFaults>>,
    /// TLS handshake deadline in milliseconds.
    pub handshake_timeout_ms: u64,
    /// A started frame must be complete within this many milliseconds (slowloris).
    pub frame_timeout_ms: u64,
    /// A connection must log in within this many milliseconds of connecting.
    pub login_timeout_ms: u64,
    /// Pre-login connections per source prefix and shard (`engine::conn::prelogin`).
    pub prelogin_conns_per_prefix_max: usize,
    /// When new sends are refused with `Busy`.
    pub overload: crate::adapter::overload::OverloadLimits,
    /// Admin endpoint address; `None` serves none.
    pub admin: Option<SocketAddr>,
    /// Shards publish statistics.
    pub stats: bool,
    /// Alarm thresholds.
    pub alarms: AlarmThresholds,
    /// Sign-up budgets (box-wide; see `budgets.rs`).
    pub signup: messaging::tables::budgets::SignupLimits,
    /// Per-user budgets (see `admission.rs`).
    pub users: messaging::tables::admission::UserLimits,
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
    /// Merges flags over the file (if any) over defaults, and validates; the load-test
    /// secret is read from [`LOAD_TEST_SECRET_ENV`] (over the file's).
    pub fn from_cli(cli: Cli) -> Result<ServerConfig, ConfigError> {
        let env_secret = std::env::var(LOAD_TEST_SECRET_ENV).ok();
        Self::from_cli_env(cli, env_secret)
    }

    /// [`ServerConfig::from_cli`] with the environment's load-test secret given.
    pub fn from_cli_env(cli: Cli, env_secret: Option<String>) -> Result<ServerConfig, ConfigError> {
        if cli.load_test_secret.is_some() {
            return Err(ConfigError::Invalid(format!(
                "--load-test-secret is refused (any local user can read flags in \
                 /proc/PID/cmdline): set {LOAD_TEST_SECRET_ENV} in the server's environment \
                 or load_test_secret in its config file (mode 0600)"
            )));
        }
        if env_secret.as_deref() == Some("") {
            return Err(ConfigError::Invalid(format!(
                "{LOAD_TEST_SECRET_ENV} is set but empty"
            )));
        }
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
        let shards_explicit = cli.shards.is_some() || file.shards.is_some();
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
        let login_s = cli.login_timeout_s.or(file.login_timeout_s);
        if login_s == Some(0) {
            return Err(ConfigError::Invalid(
                "login_timeout_s must be at least 1".into(),
            ));
        }
        let per_prefix = cli
            .prelogin_conns_per_prefix
            .or(file.prelogin_conns_per_prefix);
        if per_prefix == Some(0) {
            return Err(ConfigError::Invalid(
                "prelogin_conns_per_prefix must be at least 1".into(),
            ));
        }
        let overload_default = crate::adapter::overload::OverloadLimits::default();
        let overload = crate::adapter::overload::OverloadLimits {
            journal_pending_bytes_max: cli
                .journal_pending_bytes_max
                .or(file.journal_pending_bytes_max)
                .unwrap_or(overload_default.journal_pending_bytes_max),
            mesh_queued_max: cli
                .mesh_queued_max
                .or(file.mesh_queued_max)
                .unwrap_or(overload_default.mesh_queued_max),
        };
        let admin = admin_setting(cli.admin, cli.no_admin, file.admin.as_deref())?;
        let threshold =
            |flag: Option<u64>, key: Option<u64>, default: Option<u64>| match flag.or(key) {
                Some(0) => None,
                Some(n) => Some(n),
                None => default,
            };
        let d = AlarmThresholds::default();
        let alarms = AlarmThresholds {
            queue_user_items: threshold(
                cli.alarm_queue_user,
                file.alarm_queue_user,
                d.queue_user_items,
            ),
            queue_shard_items: threshold(
                cli.alarm_queue_shard,
                file.alarm_queue_shard,
                d.queue_shard_items,
            ),
            mesh_depth_msgs: threshold(
                cli.alarm_mesh_depth,
                file.alarm_mesh_depth,
                d.mesh_depth_msgs,
            ),
            utilisation_pct: threshold(
                cli.alarm_utilisation_pct,
                file.alarm_utilisation_pct,
                d.utilisation_pct,
            ),
            turn_max_ms: threshold(cli.alarm_turn_max_ms, file.alarm_turn_max_ms, d.turn_max_ms),
            period_ms: cli
                .alarm_period_s
                .or(file.alarm_period_s)
                .map_or(d.period_ms, |s| s.max(1) * 1000),
        };
        let sd = messaging::tables::budgets::SignupLimits::default();
        let signup = messaging::tables::budgets::SignupLimits {
            pin_sends_source_per_hour: cli
                .pin_sends_source_per_hour
                .or(file.pin_sends_source_per_hour)
                .unwrap_or(sd.pin_sends_source_per_hour),
            pin_sends_prefix_per_hour: cli
                .pin_sends_prefix_per_hour
                .or(file.pin_sends_prefix_per_hour)
                .unwrap_or(sd.pin_sends_prefix_per_hour),
            pin_sends_range_per_hour: cli
                .pin_sends_range_per_hour
                .or(file.pin_sends_range_per_hour)
                .unwrap_or(sd.pin_sends_range_per_hour),
            pin_sends_box_per_minute: cli
                .pin_sends_box_per_minute
                .or(file.pin_sends_box_per_minute)
                .unwrap_or(sd.pin_sends_box_per_minute),
            guesses_source_per_hour: cli
                .guesses_source_per_hour
                .or(file.guesses_source_per_hour)
                .unwrap_or(sd.guesses_source_per_hour),
            guesses_prefix_per_hour: cli
                .guesses_prefix_per_hour
                .or(file.guesses_prefix_per_hour)
                .unwrap_or(sd.guesses_prefix_per_hour),
            guesses_box_per_minute: cli
                .guesses_box_per_minute
                .or(file.guesses_box_per_minute)
                .unwrap_or(sd.guesses_box_per_minute),
        };
        let load_test = env_secret.is_some() || file.load_test_secret.is_some();
        let users = messaging::tables::admission::UserLimits {
            // A load-test box's synthetic users write to thousands of strangers, and anyone
            // with its secret can be anyone: the budget would only skew the measurements.
            new_recipients_per_hour: cli
                .new_recipients_per_hour
                .or(file.new_recipients_per_hour)
                .unwrap_or(if load_test {
                    0
                } else {
                    messaging::tables::admission::NEW_RECIPIENTS_PER_HOUR_DEFAULT
                }),
        };
        let tls = !(cli.no_tls || file.no_tls.unwrap_or(false));
        Ok(ServerConfig {
            media: cli.media.resolve(file.media.as_ref())?,
            signup,
            users,
            admin,
            stats: !(cli.no_stats || file.no_stats.unwrap_or(false)),
            alarms,
            listen: cli
                .listen
                .or(file.listen)
                .unwrap_or_else(|| LISTEN_DEFAULT.parse().expect("valid default")),
            shards,
            shards_explicit,
            data_dir: cli
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| DATA_DIR_DEFAULT.into()),
            tls,
            cert_key,
            huge_pages: cli.huge_pages || file.huge_pages.unwrap_or(false),
            realtime: cli.realtime || file.realtime.unwrap_or(false),
            pin_cpus: !(cli.no_pin || file.no_pin.unwrap_or(false)),
            max_connections: cli.max_connections.or(file.max_connections),
            idle_timeout_ms: idle_s
                .map(|s| s * 1000)
                .unwrap_or(engine::config::IDLE_TIMEOUT_MS_DEFAULT),
            load_test_secret: env_secret.or(file.load_test_secret),
            sms_webhook: cli.sms_webhook.or(file.sms_webhook),
            push_webhook: cli.push_webhook.or(file.push_webhook),
            compact_min_bytes: cli
                .compact_min_bytes
                .or(file.compact_min_bytes)
                .unwrap_or(messaging::state::limits::COMPACT_MIN_BYTES),
            commit_window_us: commit_window_us(cli.commit_window_us.or(file.commit_window_us))?,
            coalesce_us: coalesce_us(cli.coalesce_us.or(file.coalesce_us))?,
            coalesce: coalesce::coalesce_mode(
                cli.coalesce.as_deref().or(file.coalesce.as_deref()),
            )?,
            salvage: cli.salvage,
            log_faults: None,
            handshake_timeout_ms: handshake_s
                .map(|s| s * 1000)
                .unwrap_or(engine::config::HANDSHAKE_TIMEOUT_MS_DEFAULT),
            frame_timeout_ms: frame_s
                .map(|s| s * 1000)
                .unwrap_or(engine::config::FRAME_TIMEOUT_MS_DEFAULT),
            login_timeout_ms: login_s
                .map(|s| s * 1000)
                .unwrap_or(messaging::state::limits::LOGIN_TIMEOUT_MS_DEFAULT),
            prelogin_conns_per_prefix_max: per_prefix
                .unwrap_or(engine::config::PRELOGIN_CONNS_PER_PREFIX_MAX_DEFAULT),
            overload,
        })
    }
}

/// The loop's batching wait, defaulted and bounded.
fn coalesce_us(v: Option<u64>) -> Result<u64, ConfigError> {
    match v {
        None => Ok(engine::config::COALESCE_US_DEFAULT),
        Some(us) if us <= engine::config::COALESCE_US_MAX => Ok(us),
        Some(us) => Err(ConfigError::Invalid(format!(
            "coalesce_us must be at most {} (got {us})",
            engine::config::COALESCE_US_MAX
        ))),
    }
}

/// The commit window, defaulted and bounded.
fn commit_window_us(v: Option<u64>) -> Result<u64, ConfigError> {
    match v {
        None => Ok(messaging::state::limits::COMMIT_WINDOW_US_DEFAULT),
        Some(us) if us <= messaging::state::limits::COMMIT_WINDOW_US_MAX => Ok(us),
        Some(us) => Err(ConfigError::Invalid(format!(
            "commit_window_us must be at most {} (got {us})",
            messaging::state::limits::COMMIT_WINDOW_US_MAX
        ))),
    }
}

/// The admin address from `--admin`/`--no-admin` over the file's `admin` over the default.
fn admin_setting(
    flag: Option<SocketAddr>,
    off: bool,
    file: Option<&str>,
) -> Result<Option<SocketAddr>, ConfigError> {
    if off {
        return Ok(None);
    }
    if let Some(a) = flag {
        return Ok(Some(a));
    }
    match file {
        Some("off") => Ok(None),
        Some(a) => a.parse().map(Some).map_err(|_| {
            ConfigError::Invalid(format!("admin must be an address or \"off\", got {a:?}"))
        }),
        None => Ok(Some(
            engine::observe::admin::ADMIN_ADDR_DEFAULT
                .parse()
                .expect("valid default"),
        )),
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
        assert_eq!(cfg.admin, Some("127.0.0.1:9100".parse().unwrap()));
        assert!(cfg.stats);
        assert_eq!(cfg.alarms, AlarmThresholds::default());
        assert_eq!(
            cfg.signup,
            messaging::tables::budgets::SignupLimits::default()
        );
        assert_eq!(
            cfg.users,
            messaging::tables::admission::UserLimits::default()
        );
    }

    #[test]
    fn the_new_recipient_budget_is_on_by_default_and_off_on_a_load_test_box() {
        let users = |args: &[&str], secret: Option<&str>| {
            let mut all = vec!["switchboard"];
            all.extend_from_slice(args);
            let secret = secret.map(String::from);
            ServerConfig::from_cli_env(Cli::parse_from(all), secret)
                .unwrap()
                .users
        };
        let on = messaging::tables::admission::NEW_RECIPIENTS_PER_HOUR_DEFAULT;
        assert_eq!(users(&[], None).new_recipients_per_hour, on);
        assert_eq!(users(&[], Some("s")).new_recipients_per_hour, 0);
        let seven = ["--new-recipients-per-hour", "7"];
        assert_eq!(users(&seven, Some("s")).new_recipients_per_hour, 7);
    }

    #[test]
    fn signup_budgets_from_file_and_flags() {
        let dir = std::env::temp_dir().join(format!("sb-config-signup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("signup.toml");
        std::fs::write(
            &path,
            "pin_sends_source_per_hour = 2\nguesses_box_per_minute = 0\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let cli = Cli::parse_from([
            "switchboard",
            "--config",
            file,
            "--pin-sends-range-per-hour",
            "9",
        ]);
        let s = ServerConfig::from_cli(cli).unwrap().signup;
        assert_eq!(s.pin_sends_source_per_hour, 2);
        assert_eq!(s.pin_sends_range_per_hour, 9);
        assert_eq!(s.guesses_box_per_minute, 0, "0 turns a budget off");
        assert_eq!(
            s.pin_sends_box_per_minute,
            messaging::tables::budgets::PIN_SENDS_BOX_PER_MINUTE_DEFAULT
        );
    }

    #[test]
    fn admin_and_alarm_settings() {
        let dir = std::env::temp_dir().join(format!("sb-config-admin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("admin.toml");
        std::fs::write(
            &path,
            "admin = \"off\"\nalarm_queue_user = 7\nalarm_utilisation_pct = 0\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let cfg =
            ServerConfig::from_cli(Cli::parse_from(["switchboard", "--config", file])).unwrap();
        assert_eq!(cfg.admin, None);
        assert_eq!(cfg.alarms.queue_user_items, Some(7));
        assert_eq!(cfg.alarms.utilisation_pct, None, "0 turns an alarm off");
        let rules = cfg.alarms.to_engine().rules;
        // Queue per user, queue per shard, mesh depth, turn length: utilisation is off.
        assert_eq!(rules.len(), 4);
        let cli = Cli::parse_from([
            "switchboard",
            "--config",
            file,
            "--admin",
            "127.0.0.1:0",
            "--no-stats",
        ]);
        let cfg = ServerConfig::from_cli(cli).unwrap();
        assert_eq!(cfg.admin, Some("127.0.0.1:0".parse().unwrap()));
        assert!(!cfg.stats);
        let cli = Cli::parse_from(["switchboard", "--no-admin"]);
        assert_eq!(ServerConfig::from_cli(cli).unwrap().admin, None);
        std::fs::write(&path, "admin = \"nowhere\"\n").unwrap();
        let cli = Cli::parse_from(["switchboard", "--config", file]);
        assert!(matches!(
            ServerConfig::from_cli(cli),
            Err(ConfigError::Invalid(_))
        ));
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

    #[test]
    fn the_load_test_secret_comes_from_the_environment_or_the_file_never_a_flag() {
        let cli = Cli::parse_from(["switchboard", "--load-test-secret", "hunter2"]);
        let err = ServerConfig::from_cli_env(cli, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(LOAD_TEST_SECRET_ENV), "{err}");
        assert!(!err.contains("hunter2") && !err.contains('\n'), "{err}");
        let cli = Cli::parse_from(["switchboard"]);
        let cfg = ServerConfig::from_cli_env(cli, Some("from-env".into())).unwrap();
        assert_eq!(cfg.load_test_secret.as_deref(), Some("from-env"));
        let dir = std::env::temp_dir().join(format!("sb-config-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.toml");
        std::fs::write(&path, "load_test_secret = \"from-file\"\n").unwrap();
        let file = path.to_str().unwrap();
        let cfg =
            ServerConfig::from_cli_env(Cli::parse_from(["switchboard", "--config", file]), None)
                .unwrap();
        assert_eq!(cfg.load_test_secret.as_deref(), Some("from-file"));
        let cli = Cli::parse_from(["switchboard", "--config", file]);
        let cfg = ServerConfig::from_cli_env(cli, Some("from-env".into())).unwrap();
        assert_eq!(
            cfg.load_test_secret.as_deref(),
            Some("from-env"),
            "env over file"
        );
        let cli = Cli::parse_from(["switchboard"]);
        assert!(ServerConfig::from_cli_env(cli, Some(String::new())).is_err());
    }
}
