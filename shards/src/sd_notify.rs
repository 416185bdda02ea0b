//! systemd's service notification protocol (`sd_notify(3)`), for `Type=notify`: the server
//! says `READY=1` once it listens, and a live upgrade's old process names its successor
//! (`MAINPID=<pid>`) before it exits, so systemd keeps the service (and the new process)
//! running instead of seeing its main process end.
//!
//! A datagram to the socket in `$NOTIFY_SOCKET` (a path, or `@name` for the abstract
//! namespace); without the variable (not under systemd) every call does nothing. After
//! `MAINPID=`, a `BARRIER=1` (with a pipe's write end that systemd closes once it has read
//! everything sent before it) makes sure systemd took the new pid before the old process
//! exits. This module owns the protocol; it must not touch the server's state.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Longest wait for systemd to confirm a barrier.
pub const BARRIER_WAIT_MS: u64 = 5_000;

/// Sends `state` (`READY=1`, `MAINPID=123`...). `Ok(false)` when not under systemd.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(sock) = connect()? else {
        return Ok(false);
    };
    sock.send(state.as_bytes())?;
    Ok(true)
}

/// `MAINPID=pid`, then a barrier: returns once systemd has read it (or after
/// [`BARRIER_WAIT_MS`]). `Ok(false)` when not under systemd.
pub fn hand_main_pid_to(pid: u32) -> io::Result<bool> {
    let Some(sock) = connect()? else {
        return Ok(false);
    };
    sock.send(format!("MAINPID={pid}").as_bytes())?;
    barrier(&sock)?;
    Ok(true)
}

fn connect() -> io::Result<Option<UnixDatagram>> {
    let Some(path) = std::env::var_os(NOTIFY_SOCKET_ENV) else {
        return Ok(None);
    };
    let sock = UnixDatagram::unbound()?;
    let path = path.to_string_lossy().into_owned();
    match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.connect_addr(&addr)?;
        }
        None => sock.connect(&path)?,
    }
    Ok(Some(sock))
}

/// `BARRIER=1` with a pipe's write end; waits for the read end to hang up.
fn barrier(sock: &UnixDatagram) -> io::Result<()> {
    let mut ends = [0i32; 2];
    // SAFETY: pipe2 fills two descriptors, which are owned right after.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are ours, just made.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
    send_with_fd(sock, b"BARRIER=1", write.as_raw_fd())?;
    drop(write);
    let mut pfd = libc::pollfd {
        fd: read.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    let ms = Duration::from_millis(BARRIER_WAIT_MS).as_millis() as i32;
    // SAFETY: one pollfd, alive for the call. POLLHUP is reported whatever `events` says.
    unsafe { libc::poll(&mut pfd, 1, ms) };
    Ok(())
}

fn send_with_fd(sock: &UnixDatagram, bytes: &[u8], fd: i32) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: msghdr zeroed, then pointed at `iov` and `control` (alive for the call); the
    // one control message fits `control` (CMSG_SPACE of one descriptor).
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut i32, fd);
        libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
