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
            rss > 100 * 1024,
            "a Rust test process has more than 100 KiB resident: {rss}"
        );
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(cpu_us(pid).unwrap() > 0);
    }
}
