//! The two outside services a shard notifies: the SMS gateway (registration PINs) and the
//! push provider (an offline user has messages). Each is a trait with a dev implementation
//! (a file and a log line) and an HTTP webhook ([`crate::notify::webhook`]).
//!
//! ## A PIN is answered only once it is out
//! A shard never blocks on a notifier. [`SmsGateway::send_pin`] either refuses at once (its
//! queue is full, its worker is gone) or takes the PIN with a [`PinReply`] and reports, from
//! its own thread, how the send ended — exactly once, within [`SMS_REPLY_WAIT_MAX_MS`]. The
//! shard answers the client `PinSent` on success and an error frame otherwise
//! ([`crate::notify::pin_replies`]), so a client is never told a PIN went out when it did not.
//!
//! Push notifications are fire and forget: a full queue drops one and counts it.

pub mod pin_replies;
pub mod webhook;

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::mpsc;

/// The longest a gateway may take to report how a PIN it took ended. The shard gives up
/// waiting after this and tells the client the PIN was not sent.
pub const SMS_REPLY_WAIT_MAX_MS: u64 = 20_000;

/// PINs the dev outbox holds before it refuses new ones.
pub const DEV_OUTBOX_QUEUE_MAX: usize = 1_024;

/// Permissions of the dev outbox: it holds PINs, readable by the server's user only.
const DEV_OUTBOX_MODE: u32 = 0o600;

/// Why a PIN did not go out.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmsError {
    /// The gateway's queue is full: it is slower than the PINs asked for.
    #[error("SMS queue full ({max} waiting)")]
    QueueFull {
        /// The queue's capacity.
        max: usize,
    },
    /// The PIN waited in the queue past the limit and was not sent.
    #[error("SMS waited {waited_ms} ms in the queue (max {max_ms} ms); not sent")]
    Stale {
        /// How long it waited.
        waited_ms: u64,
        /// The limit.
        max_ms: u64,
    },
    /// The gateway answered with a status other than 2xx.
    #[error("SMS gateway answered HTTP {status}")]
    Status {
        /// The HTTP status.
        status: u16,
    },
    /// The request did not complete within its deadline (DNS, connect, TLS, send, read).
    #[error("SMS gateway did not answer within {deadline_ms} ms")]
    Deadline {
        /// The deadline of one request.
        deadline_ms: u64,
    },
    /// The request failed: DNS, connection, TLS or protocol error.
    #[error("SMS gateway request failed: {0}")]
    Transport(String),
    /// Writing the dev outbox failed.
    #[error("dev SMS outbox: {0}")]
    Outbox(String),
    /// The gateway's worker is gone (it could not start, or the server is stopping).
    #[error("SMS gateway stopped")]
    Stopped,
    /// The gateway did not report within [`SMS_REPLY_WAIT_MAX_MS`].
    #[error("SMS gateway did not report within {0} ms")]
    NoReport(u64),
}

impl SmsError {
    /// Whether the PIN certainly never reached the phone: it never left the queue, or the
    /// gateway did not take it. A missed deadline, a transport error or a missing report may
    /// hide an SMS that went out.
    pub fn never_sent(&self) -> bool {
        matches!(
            self,
            SmsError::QueueFull { .. }
                | SmsError::Stale { .. }
                | SmsError::Status { .. }
                | SmsError::Outbox(_)
                | SmsError::Stopped
        )
    }
}

/// How one PIN send ended, as the gateway reports it to the shard that asked.
#[derive(Debug)]
pub struct PinOutcome {
    /// The shard's token for this send.
    pub token: u64,
    /// Sent, or why not.
    pub result: Result<(), SmsError>,
}

/// The way back to the shard for one PIN: a token and the shard's outcome channel. Dropped
/// without [`PinReply::done`] (a worker that died), the shard's wait runs out instead.
#[derive(Debug)]
pub struct PinReply {
    token: u64,
    to: mpsc::Sender<PinOutcome>,
}

impl PinReply {
    /// A reply for the send with `token`, reported into `to`.
    pub fn new(token: u64, to: mpsc::Sender<PinOutcome>) -> Self {
        PinReply { token, to }
    }

    /// Reports how the send ended. A shard that stopped listening is no error.
    pub fn done(self, result: Result<(), SmsError>) {
        let _ = self.to.send(PinOutcome {
            token: self.token,
            result,
        });
    }
}

/// Sends a registration PIN to a phone.
pub trait SmsGateway: Send + Sync + std::fmt::Debug {
    /// Takes `pin` for `phone` without blocking: `Err` refuses it now; `Ok` promises that
    /// `reply` is told how the send ended, within [`SMS_REPLY_WAIT_MAX_MS`].
    fn send_pin(&self, phone: &str, pin: &str, reply: PinReply) -> Result<(), SmsError>;
}

/// Tells a phone's push service it has messages waiting.
pub trait PushProvider: Send + Sync + std::fmt::Debug {
    /// Notifies `phone` (the user with server-issued id `user_id`, which is what a log line
    /// may name: never the phone); must not block for long.
    fn notify(&self, phone: &str, user_id: u64);
}

/// Dev SMS: appends `<phone> <pin>` to a file (the dev outbox, mode 0600) from a thread of
/// its own, so a shard never does file I/O for it, and reports once the line is written.
#[derive(Debug, Clone)]
pub struct DevOutbox {
    path: PathBuf,
    /// The writer thread's queue; `None` if the thread could not start.
    tx: Option<crossbeam::channel::Sender<(String, PinReply)>>,
}

impl DevOutbox {
    /// The outbox at `path`; its writer thread starts now.
    pub fn new(path: PathBuf) -> Self {
        let (tx, rx) = crossbeam::channel::bounded::<(String, PinReply)>(DEV_OUTBOX_QUEUE_MAX);
        let writer_path = path.clone();
        let started = std::thread::Builder::new()
            .name("sms-outbox".into())
            .spawn(move || {
                // Ends when every DevOutbox handle is dropped.
                while let Ok((line, reply)) = rx.recv() {
                    reply.done(append_private(&writer_path, &line).map_err(|e| {
                        tracing::error!(path = %writer_path.display(), "dev SMS outbox: {e}");
                        SmsError::Outbox(e.to_string())
                    }));
                }
            });
        if let Err(e) = &started {
            tracing::error!("dev SMS outbox: cannot start its writer thread: {e}");
        }
        DevOutbox {
            path,
            tx: started.ok().map(|_| tx),
        }
    }
}

/// Appends `line` to `path`, created 0600; an older, wider file is narrowed to 0600.
fn append_private(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(DEV_OUTBOX_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    if f.metadata()?.permissions().mode() & 0o777 != DEV_OUTBOX_MODE {
        f.set_permissions(std::fs::Permissions::from_mode(DEV_OUTBOX_MODE))?;
    }
    f.write_all(line.as_bytes())
}

impl SmsGateway for DevOutbox {
    fn send_pin(&self, phone: &str, pin: &str, reply: PinReply) -> Result<(), SmsError> {
        let tx = self.tx.as_ref().ok_or(SmsError::Stopped)?;
        tx.try_send((format!("{phone} {pin}\n"), reply))
            .map_err(|e| match e {
                crossbeam::channel::TrySendError::Full(_) => SmsError::QueueFull {
                    max: DEV_OUTBOX_QUEUE_MAX,
                },
                crossbeam::channel::TrySendError::Disconnected(_) => SmsError::Stopped,
            })?;
        // No phone number in the log (the outbox file, 0600, holds it).
        tracing::info!(outbox = %self.path.display(), "dev SMS: PIN queued for the outbox");
        Ok(())
    }
}

/// Dev push: a log line.
#[derive(Debug, Default)]
pub struct DevPush;

impl PushProvider for DevPush {
    fn notify(&self, _phone: &str, user_id: u64) {
        tracing::info!(user_id, "push: messages waiting");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sb-outbox-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Sends `pin` and waits for the outbox's report.
    fn send(o: &DevOutbox, phone: &str, pin: &str) -> Result<(), SmsError> {
        let (tx, rx) = mpsc::channel();
        o.send_pin(phone, pin, PinReply::new(7, tx))?;
        let outcome = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the outbox reports");
        assert_eq!(outcome.token, 7);
        outcome.result
    }

    #[test]
    fn dev_outbox_appends_lines_privately_and_reports_once_written() {
        let dir = dir("lines");
        let path = dir.join("sms-outbox.txt");
        let o = DevOutbox::new(path.clone());
        send(&o, "+15550001111", "000001").unwrap();
        // Reported only after the write: the line is there now.
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "+15550001111 000001\n"
        );
        send(&o, "+15550002222", "000002").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "+15550001111 000001\n+15550002222 000002\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_old_world_readable_outbox_is_narrowed_and_a_symlink_is_refused() {
        let dir = dir("modes");
        let path = dir.join("sms-outbox.txt");
        std::fs::write(&path, "old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let o = DevOutbox::new(path.clone());
        send(&o, "+15550001111", "000001").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A symlink planted at the outbox path: refused, reported as an error, victim intact.
        let victim = dir.join("victim");
        std::fs::write(&victim, "victim").unwrap();
        let linked = dir.join("linked-outbox.txt");
        std::os::unix::fs::symlink(&victim, &linked).unwrap();
        let o = DevOutbox::new(linked);
        assert!(matches!(
            send(&o, "+15550001111", "000002"),
            Err(SmsError::Outbox(_))
        ));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
