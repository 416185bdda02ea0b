//! Starting a command held at a gate, so counters can be attached before it runs.
//!
//! `std::process::Command::spawn` returns only after `exec`, too late to attach counters
//! that must see the whole run. So:
//! 1. Everything the child needs (C strings, argv pointers, two `O_CLOEXEC` pipes) is built
//!    before `fork`, because after `fork` in the child only async-signal-safe calls are made.
//! 2. The child blocks in `read` on the gate pipe. The parent opens its counters on the
//!    child's pid (`enable_on_exec`), then [`GatedChild::release`] writes one byte.
//! 3. The child `execvp`s. On success the close-on-exec error pipe closes and the parent reads
//!    EOF; on failure the child writes its errno there and `_exit(127)`s, so a bad command
//!    is reported, not silently counted.
//! 4. [`Running::has_exited`] waits with `WNOWAIT`, leaving the child a zombie so its /proc
//!    entry can be read once more before [`Running::reap`].

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

use anyhow::{bail, Context};

/// A forked child waiting at the gate, not yet running the command.
#[derive(Debug)]
pub struct GatedChild {
    pid: i32,
    program: String,
    gate: File,
    exec_error: File,
}

/// A child that is running the command.
#[derive(Debug)]
pub struct Running {
    pid: i32,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks a child that will run `argv` (looked up in `PATH`) once released.
pub fn spawn_gated(argv: &[String]) -> anyhow::Result<GatedChild> {
    if argv.is_empty() {
        bail!("no command to run");
    }
    let cargs: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .context("command argument holds a NUL byte")?;
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let (gate_r, gate_w) = pipe().context("pipe for the start gate")?;
    let (err_r, err_w) = pipe().context("pipe for exec errors")?;
    // SAFETY: after fork the child makes only async-signal-safe calls (no allocation, no
    // locks), which is what forking a possibly multi-threaded process requires.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error()).context("fork");
    }
    if pid == 0 {
        child_after_fork(&gate_r, &err_w, &ptrs);
    }
    drop((gate_r, err_w));
    Ok(GatedChild {
        pid,
        program: argv[0].clone(),
        gate: File::from(gate_w),
        exec_error: File::from(err_r),
    })
}

/// The child's side: wait at the gate, exec, or report errno and exit. Never returns.
fn child_after_fork(gate: &OwnedFd, exec_error: &OwnedFd, argv: &[*const libc::c_char]) -> ! {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: read, execvp, write and _exit are async-signal-safe; the buffers and the
    // null-terminated argv were built before fork and are still valid in this copy.
    unsafe {
        if libc::read(gate.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) != 1 {
            libc::_exit(126);
        }
        libc::execvp(argv[0], argv.as_ptr());
        let errno = *libc::__errno_location();
        let bytes = errno.to_ne_bytes();
        libc::write(exec_error.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127);
    }
}

impl GatedChild {
    /// The child's pid, to attach counters to.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Lets the child exec the command; fails if exec failed (and reaps the child).
    pub fn release(mut self) -> anyhow::Result<Running> {
        self.gate
            .write_all(&[1])
            .context("opening the start gate")?;
        drop(self.gate);
        let mut errno = Vec::new();
        self.exec_error
            .read_to_end(&mut errno)
            .context("reading the exec result")?;
        let running = Running { pid: self.pid };
        if errno.len() == 4 {
            let code = i32::from_ne_bytes([errno[0], errno[1], errno[2], errno[3]]);
            running.reap()?;
            return Err(io::Error::from_raw_os_error(code))
                .with_context(|| format!("exec of `{}`", self.program));
        }
        Ok(running)
    }
}

impl Running {
    /// The command's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the command has exited; it stays a zombie (readable in /proc) until reaped.
    pub fn has_exited(&self) -> io::Result<bool> {
        // SAFETY: siginfo_t is plain data; zeroed is a valid value that waitid overwrites.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: `info` is a valid siginfo_t to write into; P_PID with our child's pid.
        let rc = unsafe { libc::waitid(libc::P_PID, self.pid as libc::id_t, &mut info, flags) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: waitid filled `info`; si_pid is 0 when no child changed state (WNOHANG).
        Ok(unsafe { info.si_pid() } != 0)
    }

    /// Waits for the command and returns its exit code (128 + signal if it was killed).
    pub fn reap(self) -> anyhow::Result<i32> {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error()).context("waitpid on the command");
        }
        Ok(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_command_and_returns_exit_code() {
        let child = spawn_gated(&["sh".into(), "-c".into(), "exit 7".into()]).unwrap();
        let running = child.release().unwrap();
        assert_eq!(running.reap().unwrap(), 7);
    }

    #[test]
    fn missing_command_is_an_error() {
        let child = spawn_gated(&["/nonexistent/pmc-test-cmd".into()]).unwrap();
        let err = child.release().unwrap_err();
        assert!(format!("{err:#}").contains("No such file"), "{err:#}");
    }
}
