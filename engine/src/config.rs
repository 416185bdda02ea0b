//! Runtime settings, each with a default that works on a laptop and a named limit.

use std::net::SocketAddr;
use std::sync::Arc;

/// Default TLS handshake deadline: a client that has not finished by then is closed.
pub const HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default idle deadline: a connection that sent nothing for this long is closed.
/// Clients heartbeat (ping) well inside it.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 300_000;
/// Default frame deadline: a frame whose first bytes arrived must be complete this soon
/// (a slowloris client trickling bytes is closed; the idle timer alone would never fire).
pub const FRAME_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default cap on one shard's connections that have not logged in yet, per source prefix
/// (IPv4 /24, IPv6 /48): see [`EngineConfig::prelogin_conns_per_prefix_max`].
pub const PRELOGIN_CONNS_PER_PREFIX_MAX_DEFAULT: usize = 64;
/// Open descriptors kept back from the connection cap for logs, listeners and rings.
pub const FD_RESERVE: usize = 256;
/// Default batching wait of a shard's loop (µs; 0 = off): see
/// [`EngineConfig::coalesce_us`].
pub const COALESCE_US_DEFAULT: u64 = 250;
/// Longest batching wait allowed: beyond it the latency cost is plain.
pub const COALESCE_US_MAX: u64 = 10_000;

/// How the engine runs.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Address every shard listens on (SO_REUSEPORT). Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Number of shards (one thread and one io_uring each). Default: online CPUs.
    pub shards: usize,
    /// Pin shard `i` to CPU `i % online CPUs`.
    pub pin_cpus: bool,
    /// Run shard threads at SCHED_FIFO priority.
    pub realtime: bool,
    /// Back the shards' buffers with huge pages where the system has them.
    pub huge_pages: bool,
    /// TLS for every accepted connection; `None` is plaintext (benchmarks, tests).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Connection cap for the whole process. `None`: the open-file limit less [`FD_RESERVE`].
    pub connections_max: Option<usize>,
    /// TLS handshake deadline.
    pub handshake_timeout_ms: u64,
    /// Idle deadline.
    pub idle_timeout_ms: u64,
    /// Deadline for a started frame to finish.
    pub frame_timeout_ms: u64,
    /// Connections not logged in yet that one source prefix (IPv4 /24, IPv6 /48) may hold
    /// on one shard; more are closed at accept (services with a login only:
    /// `conn::prelogin`). A campus or carrier NAT with many users logging in at once raises
    /// it.
    pub prelogin_conns_per_prefix_max: usize,
    /// A shard's batching wait: a wait in the kernel that has a completion may go on until
    /// this many µs after it began, for others to join it (the kernel's min-wait, Linux
    /// 6.12+; ignored on older kernels), so one wake-up serves several events. 0: off.
    pub coalesce_us: u64,
    /// When the batching wait applies: only while completions arrive densely (adaptive), or
    /// on every wait (`crate::coalesce`).
    pub coalesce: crate::coalesce::CoalesceMode,
    /// Address of the admin endpoint (`/metrics`, `/stats`); `None` serves none. The
    /// library default is off; the server binary turns it on at 127.0.0.1:9100.
    pub admin: Option<SocketAddr>,
    /// Shards publish statistics once a second (`crate::observe::stats`); off only to measure
    /// what they cost.
    pub stats: bool,
    /// Alarm thresholds, checked when statistics are published.
    pub alarms: crate::observe::alarm::AlarmConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            listen: ([127, 0, 0, 1], 5222).into(),
            shards: online_cpus(),
            pin_cpus: true,
            realtime: false,
            huge_pages: false,
            tls: None,
            connections_max: None,
            handshake_timeout_ms: HANDSHAKE_TIMEOUT_MS_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            frame_timeout_ms: FRAME_TIMEOUT_MS_DEFAULT,
            prelogin_conns_per_prefix_max: PRELOGIN_CONNS_PER_PREFIX_MAX_DEFAULT,
            coalesce_us: COALESCE_US_DEFAULT,
            coalesce: crate::coalesce::CoalesceMode::default(),
            admin: None,
            stats: true,
            alarms: crate::observe::alarm::AlarmConfig::default(),
        }
    }
}

/// The CPU ids this process may run on (its affinity mask, as `taskset` or systemd's
/// `CPUAffinity=` set it), ascending. Shards pin to these, in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills at most
    // `size_of::<cpu_set_t>()` bytes of it for the calling thread (pid 0).
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..online_cpus()).collect();
        }
        set
    };
    let n = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET reads bit `c` of a valid set; `c` < the set's size in bits.
    let cpus: Vec<usize> = (0..n)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect();
    if cpus.is_empty() {
        (0..online_cpus()).collect()
    } else {
        cpus
    }
}

/// CPUs this process may run on.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
