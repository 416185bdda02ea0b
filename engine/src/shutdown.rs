//! Orderly stop: SIGINT or SIGTERM sets one flag that every shard's housekeeping loop reads
//! (a relaxed load, no read-modify-write). Shards then stop accepting, flush and close.
//! SIGUSR2 asks for a live upgrade (`upgrade`): it sets a flag the server's main thread
//! reads.
//! This module owns the signal handlers; it must not touch shard state.

use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Registers SIGINT and SIGTERM to set `flag`. A second signal while stopping exits at once.
pub fn stop_on_signals(flag: &Arc<AtomicBool>) -> io::Result<()> {
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, flag.clone())?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(())
}

/// Registers SIGUSR2 (a live upgrade asked for: `kill -USR2 <pid>`) to set `flag`.
pub fn upgrade_on_sigusr2(flag: &Arc<AtomicBool>) -> io::Result<()> {
    signal_hook::flag::register(signal_hook::consts::SIGUSR2, flag.clone())?;
    Ok(())
}
