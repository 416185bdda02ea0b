//! The NATS text protocol (core pub/sub) for the farm: a pure codec that turns the farm's
//! [`ClientFrame`]s into NATS operations and the server's operations into [`ServerFrame`]s,
//! so every system is measured by the same farm code.
//!
//! The mapping, one synthetic phone per connection:
//! 1. `LoadTestLogin { phone }` → `CONNECT {…}` (verbose off, echo off), `SUB u.<digits> 1`,
//!    `PING`. The server handles a connection's operations in order, so the first `PONG`
//!    means the subscription is in place: it becomes `LoggedIn`. Later `PONG`s are `Pong`.
//! 2. `SendMessage { to }` → `PUB u.<digits> <n>` and the body. Core NATS acknowledges
//!    nothing: the driver counts a message as accepted once written (`Spec::server_acks`).
//! 3. `MSG <subject> <sid> [reply] <n>` on our subject → `Message` whose `from` is the
//!    sender named in the body's stamp (NATS carries no sender); on another subject `from` is
//!    empty (counted as foreign).
//! 4. The server's `PING` is answered with `PONG` here (written by the transport); `-ERR`
//!    becomes an `Error`; `INFO` and `+OK` are ignored. `Ack`, `Read` and group frames have
//!    no equivalent.
//!
//! Bounded: a control line longer than [`LINE_BYTES_MAX`] or a payload longer than
//! [`PAYLOAD_BYTES_MAX`] is an error, so `rx` never grows without limit.

use proto::v1::{client_frame, ErrorCode, LoggedIn, Pong};
use proto::{ClientFrame, ServerFrame};

use super::wire::{stamped_message, WireError};

/// Longest control line accepted (INFO is the longest the server sends), bytes.
pub const LINE_BYTES_MAX: usize = 64 * 1024;
/// Largest message payload accepted, bytes.
pub const PAYLOAD_BYTES_MAX: usize = 1024 * 1024;

/// The subject of a phone number: `+15551234567` → `u.15551234567`.
pub fn subject_of(phone: &str) -> String {
    format!("u.{}", phone.trim_start_matches('+'))
}

/// One connection's NATS state.
#[derive(Debug)]
pub struct NatsCodec {
    /// `from` = `+{phone_base + sender}`.
    phone_base: u64,
    /// Our own subject, set by the login.
    subject: String,
    /// The first PONG (subscription in place) has arrived.
    up: bool,
    /// Bytes not yet forming a whole operation (bounded, see the module doc).
    rx: Vec<u8>,
}

impl NatsCodec {
    /// A codec for one connection.
    pub fn new(phone_base: u64) -> NatsCodec {
        NatsCodec {
            phone_base,
            subject: String::new(),
            up: false,
            rx: Vec::new(),
        }
    }

    /// Appends the operations for `f` to `out` (nothing for frames without an equivalent).
    pub fn encode(&mut self, f: &ClientFrame, out: &mut Vec<u8>) {
        let Some(kind) = &f.kind else { return };
        match kind {
            client_frame::Kind::LoadTestLogin(l) => {
                self.subject = subject_of(&l.phone);
                out.extend_from_slice(
                    b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,\
                      \"lang\":\"rust\",\"version\":\"farm\",\"protocol\":1}\r\n",
                );
                out.extend_from_slice(format!("SUB {} 1\r\nPING\r\n", self.subject).as_bytes());
            }
            client_frame::Kind::Send(m) => {
                let head = format!("PUB {} {}\r\n", subject_of(&m.to), m.body.len());
                out.extend_from_slice(head.as_bytes());
                out.extend_from_slice(&m.body);
                out.extend_from_slice(b"\r\n");
            }
            client_frame::Kind::Ping(_) => out.extend_from_slice(b"PING\r\n"),
            _ => {}
        }
    }

    /// Takes `bytes` from the socket: appends a frame per whole operation to `frames` and the
    /// answers the protocol requires (PONG to the server's PING) to `replies`.
    pub fn decode(
        &mut self,
        bytes: &[u8],
        frames: &mut Vec<ServerFrame>,
        replies: &mut Vec<u8>,
    ) -> Result<(), WireError> {
        self.rx.extend_from_slice(bytes);
        let mut off = 0;
        let result = loop {
            match self.op_at(off, frames, replies) {
                Ok(Some(used)) => off += used,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.rx.drain(..off);
        result
    }

    /// Handles the operation at `off`; returns the bytes it used, or None if incomplete.
    fn op_at(
        &mut self,
        off: usize,
        frames: &mut Vec<ServerFrame>,
        replies: &mut Vec<u8>,
    ) -> Result<Option<usize>, WireError> {
        let buf = &self.rx[off..];
        let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
            if buf.len() > LINE_BYTES_MAX {
                return Err(WireError::TooLarge {
                    len: buf.len(),
                    max: LINE_BYTES_MAX,
                });
            }
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[..eol])
            .map_err(|_| WireError::Malformed("nats: control line is not UTF-8"))?;
        let mut words = line.split_ascii_whitespace();
        let op = words.next().unwrap_or("").to_ascii_uppercase();
        let used = eol + 2;
        match op.as_str() {
            "MSG" => {
                let w: Vec<&str> = words.collect();
                let (subject, n) = match w.as_slice() {
                    [s, _sid, n] | [s, _sid, _, n] => (*s, *n),
                    _ => return Err(WireError::Malformed("nats: MSG arguments")),
                };
                let n: usize = n
                    .parse()
                    .map_err(|_| WireError::Malformed("nats: MSG size"))?;
                if n > PAYLOAD_BYTES_MAX {
                    return Err(WireError::TooLarge {
                        len: n,
                        max: PAYLOAD_BYTES_MAX,
                    });
                }
                if buf.len() < used + n + 2 {
                    return Ok(None);
                }
                let payload = &buf[used..used + n];
                let ours = subject == self.subject;
                frames.push(stamped_message(payload, ours, self.phone_base, 0).into());
                return Ok(Some(used + n + 2));
            }
            "PING" => replies.extend_from_slice(b"PONG\r\n"),
            "PONG" if !self.up => {
                self.up = true;
                frames.push(
                    LoggedIn {
                        user_id: 0,
                        queued: 0,
                    }
                    .into(),
                );
            }
            "PONG" => frames.push(Pong { nonce: 0 }.into()),
            "-ERR" => frames.push(
                proto::v1::Error {
                    code: ErrorCode::Unspecified as i32,
                    detail: line.into(),
                    client_msg_id: 0,
                    retry_after_ms: 0,
                }
                .into(),
            ),
            "INFO" | "+OK" => {}
            _ => return Err(WireError::Malformed("nats: unknown operation")),
        }
        Ok(Some(used))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::BodyStamp;
    use proto::v1::{server_frame::Kind, LoadTestLogin, Ping, SendMessage};

    fn logged_in() -> NatsCodec {
        let mut c = NatsCodec::new(15_550_000_000);
        let mut out = Vec::new();
        c.encode(
            &LoadTestLogin {
                protocol_version: 1,
                phone: "+15550000007".into(),
                secret: vec![],
            }
            .into(),
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("CONNECT {"), "{text}");
        assert!(
            text.ends_with("\r\nSUB u.15550000007 1\r\nPING\r\n"),
            "{text}"
        );
        c
    }

    #[test]
    fn first_pong_is_the_login_later_ones_are_pongs() {
        let mut c = logged_in();
        let (mut frames, mut replies) = (Vec::new(), Vec::new());
        c.decode(
            b"INFO {\"server_id\":\"x\"}\r\n+OK\r\nPONG\r\nPING\r\nPONG\r\n",
            &mut frames,
            &mut replies,
        )
        .unwrap();
        assert!(matches!(frames[0].kind, Some(Kind::LoggedIn(_))));
        assert!(matches!(frames[1].kind, Some(Kind::Pong(_))));
        assert_eq!(frames.len(), 2);
        assert_eq!(replies, b"PONG\r\n");
    }

    #[test]
    fn messages_arrive_whole_even_when_split() {
        let mut c = logged_in();
        let body = BodyStamp {
            sender: 4,
            client_msg_id: 9,
            sent_at_us: 1,
        }
        .encode(40);
        let mut out = Vec::new();
        c.encode(
            &SendMessage {
                to: "+15550000007".into(),
                client_msg_id: 9,
                body: body.clone().into(),
                media: None,
            }
            .into(),
            &mut out,
        );
        assert!(out.starts_with(b"PUB u.15550000007 40\r\n"));
        let mut inbound = b"MSG u.15550000007 1 40\r\n".to_vec();
        inbound.extend_from_slice(&body);
        inbound.extend_from_slice(b"\r\nMSG u.9 1 reply.to 2\r\nhi\r\n");
        let (mut frames, mut replies) = (Vec::new(), Vec::new());
        for chunk in inbound.chunks(7) {
            c.decode(chunk, &mut frames, &mut replies).unwrap();
        }
        assert_eq!(frames.len(), 2);
        match frames[0].kind.clone().unwrap() {
            Kind::Message(m) => {
                assert_eq!(m.from, "+15550000004");
                assert_eq!(m.body, body);
            }
            k => panic!("{k:?}"),
        }
        match frames[1].kind.clone().unwrap() {
            Kind::Message(m) => assert_eq!(m.from, "", "another subject is foreign"),
            k => panic!("{k:?}"),
        }
        out.clear();
        c.encode(&Ping { nonce: 1 }.into(), &mut out);
        assert_eq!(out, b"PING\r\n");
    }

    #[test]
    fn errors_and_bounds() {
        let mut c = logged_in();
        let (mut frames, mut replies) = (Vec::new(), Vec::new());
        c.decode(
            b"-ERR 'Authorization Violation'\r\n",
            &mut frames,
            &mut replies,
        )
        .unwrap();
        assert!(matches!(frames[0].kind, Some(Kind::Error(_))));
        let err = c.decode(b"MSG u.1 1 99999999\r\n", &mut frames, &mut replies);
        assert!(matches!(err, Err(WireError::TooLarge { .. })), "{err:?}");
        let mut c = logged_in();
        let err = c.decode(b"BOGUS\r\n", &mut frames, &mut replies);
        assert!(matches!(err, Err(WireError::Malformed(_))), "{err:?}");
        let mut c = logged_in();
        let long = vec![b'x'; LINE_BYTES_MAX + 1];
        let err = c.decode(&long, &mut frames, &mut replies);
        assert!(matches!(err, Err(WireError::TooLarge { .. })), "{err:?}");
    }
}
