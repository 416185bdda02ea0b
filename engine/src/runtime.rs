//! Starting and stopping the shards.
//!
//! `start` checks everything that can fail before any shard runs — io_uring present, the
//! open-file limit against the connection cap, the port free, real-time priority allowed —
//! and answers each with one clear [`EngineError`]. Then it binds one SO_REUSEPORT socket
//! per shard, builds the mesh rings, and spawns one pinned thread per shard, each running
//! its own loop on its own io_uring (`shard.rs`).
//! This module must not touch a shard's state once it runs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{allowed_cpus, EngineConfig, FD_RESERVE};
use crate::observe::admin::AdminHandle;
use crate::observe::health::Health;

use crate::observe::stats::{ShardStats, StatsBoard, StatsKeeper};
use crate::service::Service;
use crate::shard::{self, ShardPlan};
use crate::upgrade::depart::{Departed, Departure, ShardExit};
use proto::ids::ShardId;
use std::os::fd::OwnedFd;

/// Why the engine could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The kernel refused io_uring (too old, or disabled by kernel.io_uring_disabled).
    #[error(
        "io_uring is not available: {0} (Linux 6.0+ needed; check sysctl kernel.io_uring_disabled)"
    )]
    NoIoUring(std::io::Error),
    /// The configured connection cap does not fit the open-file limit.
    #[error("open-file limit is {limit} but {wanted} connections (+{FD_RESERVE} reserve) are configured; raise `ulimit -n` (and fs.nr_open) or lower the connection cap")]
    FdLimit {
        /// RLIMIT_NOFILE after raising the soft limit to the hard one.
        limit: usize,
        /// Connections configured.
        wanted: usize,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The bind error (address in use, permission denied...).
        source: std::io::Error,
    },
    /// The admin endpoint's address could not be bound.
    #[error("cannot serve the admin endpoint on {addr}: {source} (pick another with --admin ADDR, or --no-admin)")]
    AdminBind {
        /// The address asked for.
        addr: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
    /// Real-time priority was asked for and refused.
    #[error("{0}")]
    Realtime(std::io::Error),
    /// A shard could not be set up (its mesh eventfds, its thread) or its thread ended
    /// with an error.
    #[error("shard {shard}: {detail}")]
    Shard {
        /// Which shard.
        shard: usize,
        /// What went wrong.
        detail: String,
    },
    /// The configuration is inconsistent.
    #[error("bad configuration: {0}")]
    Config(String),
}

/// The status the process exits with when a shard thread dies (`EX_SOFTWARE`): fail-fast,
/// so that the supervisor restarts it and the log replays, rather than a half-alive server
/// whose dead shard's peers fill their mesh rings towards it.
pub const SHARD_PANIC_EXIT_CODE: i32 = 70;

/// What a shard thread's panic hook needs to know about it.
struct ShardThread {
    shard: usize,
    health: Arc<Health>,
}

thread_local! {
    /// Set on shard threads only: a panic there takes the process down.
    static SHARD_THREAD: std::cell::RefCell<Option<ShardThread>> =
        const { std::cell::RefCell::new(None) };
    /// How many [`contain_panics`] calls this thread is inside: a panic there unwinds to
    /// its `catch_unwind` instead of taking the process down.
    static CONTAINED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Runs `f`, catching a panic inside it, also on a shard thread: the one place a panic is
/// not a shard's death. For calls into code that peer bytes reach and that we do not own
/// (rustls), where a panic ends one connection, never the box (`tls::session`).
pub(crate) fn contain_panics<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    CONTAINED.with(|c| c.set(c.get() + 1));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(c.get() - 1));
    result
}

/// Installs (once per process) the panic hook that makes a shard's death the process's:
/// after the usual panic message, a panic on a shard thread marks the shard dead (`/readyz`
/// and `/healthz` answer 503 from then on), logs which shard died, and exits with
/// [`SHARD_PANIC_EXIT_CODE`]: before unwinding, so nothing the kernel still uses (receive
/// buffers, log writes in flight) is freed under it. Panics on other threads, and panics
/// inside [`contain_panics`], are left to unwind as they were.
fn install_shard_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            if CONTAINED.try_with(|c| c.get() > 0).unwrap_or(false) {
                return; // caught by `contain_panics`: one connection's failure
            }
            let shard = SHARD_THREAD.try_with(|t| {
                t.borrow().as_ref().map(|t| {
                    t.health.shard_died(t.shard);
                    t.shard
                })
            });
            if let Ok(Some(shard)) = shard {
                tracing::error!(
                    shard,
                    "shard {shard} died ({info}); exiting with status {SHARD_PANIC_EXIT_CODE} so the supervisor restarts the server"
                );
                eprintln!(
                    "switchboard: shard {shard} died; exiting with status {SHARD_PANIC_EXIT_CODE}"
                );
                std::process::exit(SHARD_PANIC_EXIT_CODE);
            }
        }));
    });
}

/// The running shards.
#[derive(Debug)]
pub struct Runtime {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    depart: Arc<AtomicBool>,
    /// Each shard's wake-up: a stop is seen at once, not at the shard's next housekeeping.
    wakes: Vec<Arc<crate::mesh::ShardWake>>,
    handles: Vec<std::thread::JoinHandle<Option<ShardExit>>>,
    connections_max: usize,
    board: Option<Arc<StatsBoard>>,
    admin: Option<AdminHandle>,
    health: Arc<Health>,
    outside: Vec<crate::mesh::OutsideWake>,
}

impl Runtime {
    /// Per shard, in shard order, the handle a thread outside the shards wakes it with
    /// (`Service::on_outside`).
    pub fn outside_wakes(&self) -> Vec<crate::mesh::OutsideWake> {
        self.outside.clone()
    }

    /// The address the shards listen on (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many shards run.
    pub fn shards(&self) -> usize {
        self.handles.len()
    }

    /// The connection cap in force.
    pub fn connections_max(&self) -> usize {
        self.connections_max
    }

    /// The admin endpoint's address (the real port when 0 was asked for), if it serves.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminHandle::local_addr)
    }

    /// Every shard's latest published statistics, in shard order (`None` before a shard's
    /// first publication, or when statistics are off).
    pub fn stats(&self) -> Vec<Option<ShardStats>> {
        match &self.board {
            Some(b) => b.read_all(),
            None => Vec::new(),
        }
    }

    /// The board the shards publish their statistics to, for a thread that reads them now
    /// and then (`None` when statistics are off).
    pub fn stats_board(&self) -> Option<Arc<StatsBoard>> {
        self.board.clone()
    }

    /// Whether every shard has started and the runtime is not stopping (`/readyz`).
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// The flag that stops every shard; signal handlers may set it too.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Asks every shard to stop (they drain and exit; see [`Runtime::join`]).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake_all();
    }

    fn wake_all(&self) {
        for w in &self.wakes {
            w.notify();
        }
    }

    /// Waits for every shard to exit.
    pub fn join(self) -> Result<(), EngineError> {
        self.join_all().1.map_or(Ok(()), Err)
    }

    /// Stops every shard for a live upgrade and waits for them: each stops accepting, the
    /// service flushes, every connection the service describes detaches, and the rest
    /// close (`upgrade::depart`). Returns the listeners and connections, for the next
    /// process (or for this one, should the next one not take them).
    pub fn depart(self) -> Result<Departure, EngineError> {
        self.depart.store(true, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
        self.wake_all();
        // The next process binds the admin address again: let it go while the shards drain.
        if let Some(admin) = &self.admin {
            admin.request_stop();
        }
        let (exits, err) = self.join_all();
        if let Some(e) = err {
            return Err(e);
        }
        let mut out = Departure::default();
        for (shard, exit) in exits.into_iter().enumerate() {
            out.shards.push(exit.ok_or_else(|| EngineError::Shard {
                shard,
                detail: "stopped without departing".into(),
            })?);
        }
        Ok(out)
    }

    fn join_all(self) -> (Vec<Option<ShardExit>>, Option<EngineError>) {
        let mut first_err = None;
        let mut exits = Vec::with_capacity(self.handles.len());
        for (i, h) in self.handles.into_iter().enumerate() {
            match h.join() {
                Ok(exit) => exits.push(exit),
                Err(e) => {
                    let detail = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panicked".into());
                    first_err.get_or_insert(EngineError::Shard { shard: i, detail });
                    exits.push(None);
                }
            }
        }
        if let Some(admin) = self.admin {
            // It answered `/readyz` with 503 while the shards drained; now it goes too.
            self.stop.store(true, Ordering::Relaxed);
            admin.stop_and_join();
        }
        (exits, first_err)
    }
}

/// Starts `config.shards` shards, each running the service `make(shard_id)` builds on that
/// shard's own thread.
pub fn start<S, F>(config: EngineConfig, make: F) -> Result<Runtime, EngineError>
where
    S: Service,
    F: Fn(ShardId) -> S + Send + Sync + 'static,
{
    start_from(config, make, None)
}

/// [`start`], or, given the [`Departure`] of a previous process (or of this one), on its
/// listeners instead of binding new ones, each shard taking its connections over before
/// its first turn. The shard count must be the departure's.
pub fn start_from<S, F>(
    config: EngineConfig,
    make: F,
    from: Option<Departure>,
) -> Result<Runtime, EngineError>
where
    S: Service,
    F: Fn(ShardId) -> S + Send + Sync + 'static,
{
    if config.shards == 0 {
        return Err(EngineError::Config("shards must be at least 1".into()));
    }
    probe_io_uring().map_err(EngineError::NoIoUring)?;
    let connections_max = check_fd_limit(config.connections_max)?;
    let (fds, arrivals, local_addr) = match from {
        None => {
            let (fds, addr) = bind_retrying(config.listen, config.shards).map_err(|source| {
                EngineError::Bind {
                    addr: config.listen,
                    source,
                }
            })?;
            let arrivals = fds.iter().map(|_| Vec::new()).collect();
            (fds, arrivals, addr)
        }
        Some(d) => inherited(d, config.shards)?,
    };
    let admin = config
        .admin
        .map(|addr| {
            crate::observe::admin::bind(addr)
                .map_err(|source| EngineError::AdminBind { addr, source })
        })
        .transpose()?;
    let board = config
        .stats
        .then(|| Arc::new(StatsBoard::new(config.shards)));
    if config.realtime {
        crate::realtime::enable_for_this_thread().map_err(EngineError::Realtime)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let depart = Arc::new(AtomicBool::new(false));
    let quiet: Arc<[AtomicBool]> = (0..config.shards).map(|_| AtomicBool::new(false)).collect();
    let health = Arc::new(Health::new(config.shards, stop.clone()));
    install_shard_panic_hook();
    let make = Arc::new(make);
    // Shard i runs on the i-th CPU of the process's affinity mask (wrapping), so
    // `taskset` and systemd's CPUAffinity= decide which cores the shards take.
    let cpus = allowed_cpus();
    let mut outside = Vec::with_capacity(config.shards);
    let per_shard = connections_max.div_ceil(config.shards);
    let mut handles = Vec::with_capacity(config.shards);
    let mut wakes = Vec::with_capacity(config.shards);
    let mut arrivals: Vec<Vec<Departed>> = arrivals;
    for (i, (fd, ends)) in fds
        .into_iter()
        .zip(
            crate::mesh::build(config.shards).map_err(|e| EngineError::Shard {
                shard: 0,
                detail: format!("cannot make the mesh's eventfds: {e}"),
            })?,
        )
        .enumerate()
    {
        outside.push(ends.outside_wake());
        wakes.push(ends.wake.clone());
        let plan = ShardPlan {
            id: ShardId(i),
            listener_fd: fd,
            links: ends,
            stop: stop.clone(),
            depart: depart.clone(),
            arrivals: std::mem::take(&mut arrivals[i]),
            quiet: quiet.clone(),
            config: config.clone(),
            conns_max: per_shard,
            stats: board
                .as_ref()
                .map(|b| StatsKeeper::new(i, b.clone(), config.alarms.clone())),
            health: health.clone(),
        };
        let cpu = config.pin_cpus.then(|| cpus[i % cpus.len()]);
        let make = make.clone();
        let thread_health = health.clone();
        let h = std::thread::Builder::new()
            .name(format!("shard-{i}"))
            .spawn(move || {
                SHARD_THREAD.with(|t| {
                    *t.borrow_mut() = Some(ShardThread {
                        shard: i,
                        health: thread_health,
                    })
                });
                if let Some(cpu) = cpu {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                        tracing::warn!(shard = i, cpu, "cannot pin the shard to its CPU");
                    }
                }
                shard::run::<S, F>(plan, make)
            })
            .map_err(|e| EngineError::Shard {
                shard: i,
                detail: e.to_string(),
            })?;
        handles.push(h);
    }
    let admin = match admin {
        Some(l) => Some(
            crate::observe::admin::spawn(l, board.clone(), health.clone()).map_err(|e| {
                stop.store(true, Ordering::Relaxed);
                EngineError::Config(format!("cannot start the admin thread: {e}"))
            })?,
        ),
        None => None,
    };
    Ok(Runtime {
        local_addr,
        stop,
        depart,
        wakes,
        handles,
        connections_max,
        board,
        admin,
        health,
        outside,
    })
}

/// Per shard its listener and its connections, and the address the listeners are on.
type Inherited = (Vec<OwnedFd>, Vec<Vec<Departed>>, SocketAddr);

/// The listeners and connections of a departure, per shard, and the address they listen on.
fn inherited(d: Departure, shards: usize) -> Result<Inherited, EngineError> {
    if d.shards.len() != shards {
        return Err(EngineError::Config(format!(
            "the previous process ran {} shards, this one would run {shards}",
            d.shards.len()
        )));
    }
    let (fds, arrivals): (Vec<OwnedFd>, Vec<Vec<Departed>>) = d
        .shards
        .into_iter()
        .map(|s| (s.listener, s.departed))
        .unzip();
    let addr = fds[0]
        .try_clone()
        .and_then(|fd| std::net::TcpListener::from(fd).local_addr())
        .map_err(|e| EngineError::Config(format!("inherited listener: {e}")))?;
    Ok((fds, arrivals, addr))
}

/// Raises the soft open-file limit to the hard one and checks the connection cap fits.
fn check_fd_limit(wanted: Option<usize>) -> Result<usize, EngineError> {
    // SAFETY: getrlimit/setrlimit on a local struct.
    let limit = unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        if r.rlim_cur < r.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                r = raised;
            }
        }
        r.rlim_cur as usize
    };
    let room = limit.saturating_sub(FD_RESERVE);
    match wanted {
        None => Ok(room.max(1)),
        Some(w) if w <= room => Ok(w),
        Some(w) => Err(EngineError::FdLimit { limit, wanted: w }),
    }
}

/// Sets up (and drops) a tiny io_uring to learn whether the kernel allows it.
fn probe_io_uring() -> std::io::Result<()> {
    let mut params = [0u8; 120]; // struct io_uring_params
                                 // SAFETY: io_uring_setup with a zeroed params struct of the kernel's size.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 2u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: closing the descriptor we just got.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// How long a start retries a listen address that is in use: a server killed with SIGKILL
/// holds its listener (in its ring) for a moment while the kernel tears it down, and a
/// supervisor's immediate restart should not fail on that.
pub const BIND_RETRY_MS: u64 = 3_000;
/// Pause between tries.
const BIND_RETRY_PAUSE_MS: u64 = 50;

/// [`crate::conn::listener::bind_shards`], retried while the address is in use for up to
/// [`BIND_RETRY_MS`], with one log line.
fn bind_retrying(
    addr: SocketAddr,
    shards: usize,
) -> std::io::Result<(Vec<std::os::fd::OwnedFd>, SocketAddr)> {
    let deadline = std::time::Instant::now() + Duration::from_millis(BIND_RETRY_MS);
    let mut said = false;
    loop {
        match crate::conn::listener::bind_shards(addr, shards) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                if !said {
                    tracing::warn!(%addr, "address in use; retrying for up to {BIND_RETRY_MS} ms (a previous server may still be going away)");
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(BIND_RETRY_PAUSE_MS));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic inside `contain_panics` on a shard thread (a rustls panic on one peer's
    /// bytes) is caught there: the hook neither exits the process nor marks the shard dead.
    /// Before containment, this test binary exited with status 70.
    #[test]
    fn a_contained_panic_on_a_shard_thread_is_one_connections_failure_not_the_boxs() {
        install_shard_panic_hook();
        let health = Arc::new(Health::new(1, Arc::new(AtomicBool::new(false))));
        let thread_health = health.clone();
        let caught = std::thread::spawn(move || {
            SHARD_THREAD.with(|t| {
                *t.borrow_mut() = Some(ShardThread {
                    shard: 0,
                    health: thread_health,
                })
            });
            contain_panics(|| panic!("a rustls bug reached by a peer")).is_err()
        })
        .join()
        .unwrap();
        assert!(caught);
        assert_eq!(health.dead_shard(), None);
    }

    #[test]
    fn a_listen_address_in_use_is_retried_until_it_frees_up() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let started = std::time::Instant::now();
        let freer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let (fds, bound) = bind_retrying(addr, 2).expect("bound once the port was freed");
        freer.join().unwrap();
        assert_eq!((fds.len(), bound), (2, addr));
        assert!(started.elapsed() >= Duration::from_millis(250));
    }
}
