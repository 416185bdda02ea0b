//! A process's resident memory and CPU time, read from /proc. Linux only.

use std::fs;

/// Resident set size of `pid` in bytes (VmRSS).
pub fn rss_bytes(pid: u32) -> std::io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    field_kib(&status, "VmRSS:")
        .map(|k| k * 1024)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no VmRSS in /proc/PID/status",
            )
        })
}

/// Peak resident set size of `pid` over its life so far in bytes (VmHWM): catches peaks such
/// as a hash map's old and new tables both resident while it resizes.
pub fn peak_rss_bytes(pid: u32) -> std::io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    field_kib(&status, "VmHWM:")
        .map(|k| k * 1024)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no VmHWM in /proc/PID/status",
            )
        })
}

/// User + system CPU time of `pid`, in microseconds.
pub fn cpu_us(pid: u32) -> std::io::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the ')'.
    let hz = clock_ticks_per_second();
    Ok((ticks(11) + ticks(12)) * 1_000_000 / hz)
}

/// What a process tree has spent so far, from /proc: CPU split user/kernel, context
/// switches, read/write-family syscalls, resident memory.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// User-mode CPU, µs.
    pub user_us: u64,
    /// Kernel-mode CPU, µs.
    pub sys_us: u64,
    /// Voluntary + involuntary context switches of the live threads.
    pub ctx_switches: u64,
    /// Read- and write-family syscalls (`syscr` + `syscw` of /proc/PID/io). io_uring
    /// operations are not syscalls and do not show here; `io_uring_enter` does not either.
    pub syscalls: u64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

impl ProcSample {
    /// `self − earlier`, field by field (RSS: the later value).
    pub fn since(&self, earlier: &ProcSample) -> ProcSample {
        ProcSample {
            user_us: self.user_us.saturating_sub(earlier.user_us),
            sys_us: self.sys_us.saturating_sub(earlier.sys_us),
            ctx_switches: self.ctx_switches.saturating_sub(earlier.ctx_switches),
            syscalls: self.syscalls.saturating_sub(earlier.syscalls),
            rss_bytes: self.rss_bytes,
        }
    }

    /// User + kernel CPU, µs.
    pub fn cpu_us(&self) -> u64 {
        self.user_us + self.sys_us
    }
}

/// [`ProcSample`] of `pid` alone. Fields /proc refuses read as 0.
pub fn sample(pid: u32) -> std::io::Result<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let hz = clock_ticks_per_second();
    let us = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 1_000_000 / hz;
    let io = fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let io_field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut ctx = 0;
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let status = fs::read_to_string(t.path().join("status")).unwrap_or_default();
            ctx += field_u64(&status, "voluntary_ctxt_switches:")
                + field_u64(&status, "nonvoluntary_ctxt_switches:");
        }
    }
    Ok(ProcSample {
        user_us: us(11),
        sys_us: us(12),
        ctx_switches: ctx,
        syscalls: io_field("syscr:") + io_field("syscw:"),
        rss_bytes: rss_bytes(pid).unwrap_or(0),
    })
}

/// `pid` and every live descendant (from /proc/PID/task/TID/children).
pub fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    // Bounded by the number of live processes; a pid is never listed twice by the kernel.
    while i < out.len() && out.len() < 4096 {
        let p = out[i];
        if let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let kids = fs::read_to_string(t.path().join("children")).unwrap_or_default();
                out.extend(
                    kids.split_whitespace()
                        .filter_map(|k| k.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    out
}

/// The sum of [`sample`] over [`tree`]`(pid)`; processes that vanish meanwhile are skipped.
pub fn sample_tree(pid: u32) -> ProcSample {
    tree(pid)
        .into_iter()
        .filter_map(|p| sample(p).ok())
        .fold(ProcSample::default(), |a, s| ProcSample {
            user_us: a.user_us + s.user_us,
            sys_us: a.sys_us + s.sys_us,
            ctx_switches: a.ctx_switches + s.ctx_switches,
            syscalls: a.syscalls + s.syscalls,
            rss_bytes: a.rss_bytes + s.rss_bytes,
        })
}

fn field_u64(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of /proc CPU times.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// Kernel socket memory in use (pages, from /proc/net/sockstat "TCP: ... mem N").
pub fn tcp_mem_pages() -> Option<u64> {
    let s = fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = s.lines().find(|l| l.starts_with("TCP:"))?;
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == "mem" {
            return it.next()?.parse().ok();
        }
    }
    None
}

/// Kernel slab memory in bytes (Slab: in /proc/meminfo): sockets, inodes, dentries, files.
pub fn slab_bytes() -> Option<u64> {
    let m = fs::read_to_string("/proc/meminfo").ok()?;
    field_kib(&m, "Slab:").map(|k| k * 1024)
}

fn field_kib(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_rss_and_cpu() {
        let pid = std::process::id();
        let rss = rss_bytes(pid).unwrap();
        assert!(
            peak_rss_bytes(pid).unwrap() >= rss,
            "the peak is never below now"
        );
        assert!(
            rss > 100 * 1024,
            "a Rust test process has more than 100 KiB resident: {rss}"
        );
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(cpu_us(pid).unwrap() > 0);
        let s = sample(pid).unwrap();
        assert!(s.cpu_us() > 0 && s.rss_bytes > 100 * 1024, "{s:?}");
        assert!(s.ctx_switches > 0, "{s:?}");
    }

    #[test]
    fn a_tree_includes_children_and_their_syscalls() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read x"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let me = std::process::id();
        let kid = child.id();
        // The child is listed as soon as it exists (spawn returned after exec).
        assert!(tree(me).contains(&kid), "{:?}", tree(me));
        let before = sample(me).unwrap();
        std::fs::read_to_string("/proc/self/stat").unwrap();
        let after = sample(me).unwrap();
        assert!(after.since(&before).syscalls >= 1, "{before:?} {after:?}");
        drop(child.stdin.take());
        child.wait().unwrap();
    }
}
