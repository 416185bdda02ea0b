//! Real-time priority for shard threads (SCHED_FIFO), so cron jobs and other processes do
//! not stall the engine. Applied to the starting thread before the shards are spawned;
//! Linux threads inherit the policy. This module must not touch anything else.

use std::io;

/// The SCHED_FIFO priority shards run at (1..=99; kernel threads often sit at 50).
pub const REALTIME_PRIORITY: i32 = 10;

/// Switches the calling thread to SCHED_FIFO at [`REALTIME_PRIORITY`].
pub fn enable_for_this_thread() -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: REALTIME_PRIORITY,
    };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("SCHED_FIFO priority {REALTIME_PRIORITY} refused ({e}); run as root or grant CAP_SYS_NICE / RLIMIT_RTPRIO"),
        ));
    }
    Ok(())
}
