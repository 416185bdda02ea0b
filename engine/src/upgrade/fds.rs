//! Passing the blob and the descriptors to the new process over a unix stream socket, and
//! the new process's one-line answer.
//!
//! On the socket, in order:
//! 1. a 16-byte preamble: the blob's length and the number of descriptors (u64 each,
//!    big-endian), both checked against the receiver's limits before anything is read;
//! 2. the descriptors, [`FDS_PER_MESSAGE_MAX`] at a time: each `sendmsg` carries a 4-byte
//!    count and that many descriptors as `SCM_RIGHTS` (received with `MSG_CMSG_CLOEXEC`,
//!    so none leaks into a process the receiver starts);
//! 3. the blob;
//! 4. back from the receiver, one line: `ready` or `refused: <why>` ([`Reply`]).
//!
//! A descriptor received is the same open socket, not a copy of its state: both processes
//! hold it until the sender closes its own. This module owns the socket protocol only; it
//! must not touch shards or the blob's contents.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use zeroize::Zeroizing;

/// Descriptors per `sendmsg` (the kernel takes at most 253, `SCM_MAX_FD`).
pub const FDS_PER_MESSAGE_MAX: usize = 250;

/// Bytes of the answer line, newline included.
pub const REPLY_BYTES_MAX: usize = 512;

/// What the new process answers once it has read the hand-over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// It took everything over; the old process may exit.
    Ready,
    /// It cannot take over, and says why in one line; the old process keeps serving.
    Refused(String),
}

impl Reply {
    /// The line on the socket.
    pub fn to_line(&self) -> String {
        match self {
            Reply::Ready => "ready\n".into(),
            Reply::Refused(why) => {
                let why: String = why.chars().filter(|c| !c.is_control()).collect();
                let mut line = format!("refused: {why}");
                // A char boundary at or below the limit (leaving room for the newline).
                let mut cut = line.len().min(REPLY_BYTES_MAX - 1);
                while !line.is_char_boundary(cut) {
                    cut -= 1;
                }
                line.truncate(cut);
                line.push('\n');
                line
            }
        }
    }

    /// Reads the answer line from `sock`. A socket closed before a whole line (the new
    /// process died) is an error, as is a line that is neither answer.
    pub fn read_from(sock: &mut UnixStream) -> io::Result<Reply> {
        let mut line = Vec::with_capacity(64);
        let mut byte = [0u8; 1];
        while line.len() < REPLY_BYTES_MAX {
            // A signal landing while we wait (the operator's second SIGUSR2, a child's
            // SIGCHLD) interrupts the read; it is not the new process's answer.
            let n = match sock.read(&mut byte) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => other?,
            };
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the new process closed the hand-over socket without answering",
                ));
            }
            if byte[0] == b'\n' {
                let line = String::from_utf8_lossy(&line);
                return match line.strip_prefix("refused: ") {
                    _ if line == "ready" => Ok(Reply::Ready),
                    Some(why) => Ok(Reply::Refused(why.to_string())),
                    None => Err(bad_data(format!("unexpected hand-over answer {line:?}"))),
                };
            }
            line.push(byte[0]);
        }
        Err(bad_data("hand-over answer longer than a line".into()))
    }
}

fn bad_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Sends `blob` and `fds` (in that order for the receiver: the descriptors first).
pub fn send(sock: &mut UnixStream, blob: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut preamble = [0u8; 16];
    preamble[..8].copy_from_slice(&(blob.len() as u64).to_be_bytes());
    preamble[8..].copy_from_slice(&(fds.len() as u64).to_be_bytes());
    sock.write_all(&preamble)?;
    for batch in fds.chunks(FDS_PER_MESSAGE_MAX) {
        let raw: Vec<RawFd> = batch.iter().map(|f| f.as_raw_fd()).collect();
        send_batch(sock, &raw)?;
    }
    sock.write_all(blob)?;
    sock.flush()
}

/// Receives what [`send`] sent: the blob (at most `blob_bytes_max`) and the descriptors (at
/// most `fds_max`), in the order they were passed.
pub fn recv(
    sock: &mut UnixStream,
    blob_bytes_max: usize,
    fds_max: usize,
) -> io::Result<(Zeroizing<Vec<u8>>, Vec<OwnedFd>)> {
    let mut preamble = [0u8; 16];
    sock.read_exact(&mut preamble)?;
    let blob_len = u64::from_be_bytes(preamble[..8].try_into().expect("8 bytes"));
    let fd_count = u64::from_be_bytes(preamble[8..].try_into().expect("8 bytes"));
    if blob_len > blob_bytes_max as u64 || fd_count > fds_max as u64 {
        return Err(bad_data(format!(
            "hand-over of {blob_len} bytes and {fd_count} descriptors is over this process's \
             limits ({blob_bytes_max} bytes, {fds_max} descriptors)"
        )));
    }
    let mut fds = Vec::with_capacity(fd_count as usize);
    while fds.len() < fd_count as usize {
        let want = (fd_count as usize - fds.len()).min(FDS_PER_MESSAGE_MAX);
        recv_batch(sock, want, &mut fds)?;
    }
    let mut blob = Zeroizing::new(vec![0u8; blob_len as usize]);
    sock.read_exact(&mut blob)?;
    Ok((blob, fds))
}

/// Room for one batch's control message.
fn cmsg_space() -> usize {
    // SAFETY: CMSG_SPACE is a pure size computation.
    unsafe {
        libc::CMSG_SPACE((FDS_PER_MESSAGE_MAX * std::mem::size_of::<RawFd>()) as u32) as usize
    }
}

fn send_batch(sock: &UnixStream, fds: &[RawFd]) -> io::Result<()> {
    let count = (fds.len() as u32).to_be_bytes();
    let mut iov = libc::iovec {
        iov_base: count.as_ptr() as *mut libc::c_void,
        iov_len: count.len(),
    };
    let bytes = std::mem::size_of_val(fds);
    let mut control = vec![0u8; cmsg_space()];
    // SAFETY: msghdr zeroed, then pointed at `iov` and `control`, both alive for the call;
    // the control message written fits: `control` has CMSG_SPACE of the largest batch.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = libc::CMSG_SPACE(bytes as u32) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(bytes as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr() as *const u8, libc::CMSG_DATA(cmsg), bytes);
        loop {
            let n = libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL);
            if n == count.len() as isize {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if n < 0 && e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // A 4-byte message is never split on a unix stream socket: less is an error.
            return Err(if n < 0 {
                e
            } else {
                bad_data("short sendmsg".into())
            });
        }
    }
}

/// Receives one batch of exactly `want` descriptors into `fds`.
fn recv_batch(sock: &mut UnixStream, want: usize, fds: &mut Vec<OwnedFd>) -> io::Result<()> {
    let mut count = [0u8; 4];
    let mut iov = libc::iovec {
        iov_base: count.as_mut_ptr() as *mut libc::c_void,
        iov_len: count.len(),
    };
    let mut control = vec![0u8; cmsg_space()];
    let before = fds.len();
    // SAFETY: as in `send_batch`; every descriptor the kernel put in the control message is
    // ours from here on, and is wrapped in an OwnedFd at once (closed on any error below).
    let (n, flags) = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = control.len() as _;
        let n = loop {
            let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break n;
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let len = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned((data as *const RawFd).add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        (n as usize, msg.msg_flags)
    };
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the old process closed the hand-over socket mid-way",
        ));
    }
    // The rest of the count, if the kernel split it (it carries no descriptors).
    sock.read_exact(&mut count[n..])?;
    let got = fds.len() - before;
    if flags & libc::MSG_CTRUNC != 0 || got != want || u32::from_be_bytes(count) as usize != got {
        return Err(bad_data(format!(
            "descriptor batch: expected {want}, got {got} (count {}, truncated: {})",
            u32::from_be_bytes(count),
            flags & libc::MSG_CTRUNC != 0
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    #[test]
    fn descriptors_and_blob_cross_in_batches_and_stay_the_same_sockets() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // More than two batches of live TCP connections.
        let n = 2 * FDS_PER_MESSAGE_MAX + 17;
        let mut clients = Vec::new();
        let mut served = Vec::new();
        for _ in 0..n {
            clients.push(TcpStream::connect(addr).unwrap());
            served.push(listener.accept().unwrap().0);
        }
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let blob = b"the hand-over blob".repeat(1000);
        let sender = {
            let fds: Vec<OwnedFd> = served
                .iter()
                .map(|s| s.as_fd().try_clone_to_owned().unwrap())
                .collect();
            let blob = blob.clone();
            std::thread::spawn(move || {
                let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
                send(&mut a, &blob, &borrowed).unwrap();
                Reply::read_from(&mut a).unwrap()
            })
        };
        let (got_blob, got_fds) = recv(&mut b, 1 << 20, n).unwrap();
        assert_eq!(&got_blob[..], &blob[..]);
        assert_eq!(got_fds.len(), n);
        b.write_all(Reply::Ready.to_line().as_bytes()).unwrap();
        assert_eq!(sender.join().unwrap(), Reply::Ready);
        drop(served); // only the received descriptors hold the connections now
        for (i, (fd, client)) in got_fds.into_iter().zip(&mut clients).enumerate() {
            let mut s = TcpStream::from(fd);
            s.write_all(&(i as u32).to_be_bytes()).unwrap();
            let mut got = [0u8; 4];
            client.read_exact(&mut got).unwrap();
            assert_eq!(
                u32::from_be_bytes(got) as usize,
                i,
                "the same socket, in order"
            );
        }
    }

    /// Names the hand-over socket's descriptor when this test binary runs as the new process
    /// of [`a_new_process_takes_live_connections_over_and_the_old_one_lets_go`].
    const CHILD_FD_ENV: &str = "SWITCHBOARD_TEST_HANDOVER_FD";

    /// The new process's side: when started by the test below, receives the descriptors,
    /// answers `ready`, waits for the old process to let go (one byte), then writes each
    /// connection's index on it and exits. In a normal test run it does nothing.
    #[test]
    fn handover_child_role() {
        let Some(fd) = std::env::var(CHILD_FD_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
        else {
            return;
        };
        // SAFETY: the parent left this descriptor open for us, and nothing else owns it.
        let mut sock = unsafe { UnixStream::from_raw_fd(fd) };
        let (_blob, fds) = recv(&mut sock, 1 << 20, 4096).unwrap();
        sock.write_all(Reply::Ready.to_line().as_bytes()).unwrap();
        let mut go = [0u8; 1];
        sock.read_exact(&mut go).unwrap();
        for (i, fd) in fds.into_iter().enumerate() {
            TcpStream::from(fd)
                .write_all(&(i as u32).to_be_bytes())
                .unwrap();
        }
    }

    #[test]
    fn a_new_process_takes_live_connections_over_and_the_old_one_lets_go() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let n = FDS_PER_MESSAGE_MAX + 3;
        let mut clients = Vec::new();
        let mut served = Vec::new();
        for _ in 0..n {
            let c = TcpStream::connect(addr).unwrap();
            // A child that fails fails this test instead of hanging it.
            c.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                .unwrap();
            clients.push(c);
            served.push(listener.accept().unwrap().0);
        }
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        // A copy without close-on-exec, for the child to inherit.
        // SAFETY: F_DUPFD on a descriptor we own; the copy is closed below, after the spawn.
        let inherited = unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_DUPFD, 3) };
        assert!(inherited >= 0);
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "upgrade::fds::tests::handover_child_role",
                "--nocapture",
            ])
            .env(CHILD_FD_ENV, inherited.to_string())
            .spawn()
            .unwrap();
        // SAFETY: our copy of the child's end; the child has its own now.
        unsafe { libc::close(inherited) };
        drop(theirs);
        let borrowed: Vec<BorrowedFd<'_>> = served.iter().map(|s| s.as_fd()).collect();
        send(&mut ours, b"blob", &borrowed).unwrap();
        assert_eq!(Reply::read_from(&mut ours).unwrap(), Reply::Ready);
        drop(served); // the old process lets go: only the new one holds the connections
        ours.write_all(b"g").unwrap();
        for (i, client) in clients.iter_mut().enumerate() {
            let mut got = [0u8; 4];
            client.read_exact(&mut got).unwrap();
            assert_eq!(
                u32::from_be_bytes(got) as usize,
                i,
                "connection {i} kept, in order"
            );
        }
        assert!(child.wait().unwrap().success());
    }

    #[test]
    fn a_hand_over_over_the_limits_is_refused_before_reading_it() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        send(&mut a, &[0u8; 100], &[]).unwrap();
        let err = recv(&mut b, 99, 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().contains("over this process's limits"),
            "{err}"
        );
    }

    #[test]
    fn answers_are_one_line_each_way() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let why = "hand-over version 2 from the old process,\nthis binary reads version 1";
        b.write_all(Reply::Refused(why.into()).to_line().as_bytes())
            .unwrap();
        let Reply::Refused(got) = Reply::read_from(&mut a).unwrap() else {
            panic!("refused")
        };
        assert!(
            got.starts_with("hand-over version 2") && !got.contains('\n'),
            "{got}"
        );
        let long = Reply::Refused("x".repeat(5000)).to_line();
        assert!(long.len() <= REPLY_BYTES_MAX && long.ends_with('\n'));
        drop(b);
        let err = Reply::read_from(&mut a).unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::UnexpectedEof,
            "the new process died"
        );
    }
}
