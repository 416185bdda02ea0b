//! The frame codec: a 4-byte big-endian payload length, then one protobuf payload.
//!
//! ```text
//! +----------------+----------------------------------+
//! | len: u32 (BE)  | payload: len bytes of protobuf   |   len <= FRAME_BYTES_MAX
//! +----------------+----------------------------------+
//! ```
//!
//! Steps on the receive side, and why each is safe against a hostile peer:
//! 1. [`split_frame`] reads the header and refuses a length above [`FRAME_BYTES_MAX`] before any
//!    of the body arrives, so a peer can never make us buffer more than one maximal frame.
//! 2. [`decode_client`] / [`decode_server`] hand the payload to prost, which bounds recursion and
//!    checks UTF-8; any decode failure is [`FrameError::Malformed`] and never a panic.
//! 3. A frame whose `oneof kind` is unset (or set to a kind this version does not know) is
//!    [`FrameError::Empty`]: nothing to act on.
//! 4. The caller then applies [`crate::validate::check_client_frame`] for per-field limits.
//!
//! Errors are allocation-free: a failed frame costs no heap traffic.

use prost::Message as _;

use crate::limits::{FRAME_BYTES_MAX, FRAME_HEADER_BYTES};
use crate::v1::ErrorCode;
use crate::{ClientFrame, ServerFrame};

/// Why a frame could not be split or decoded. Any of these closes the connection.
#[non_exhaustive]
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The header (or an outgoing message) announces a payload above the frame limit.
    #[error("frame payload of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Payload length announced by the header or computed for an outgoing message.
        len: usize,
        /// The limit it broke: [`FRAME_BYTES_MAX`].
        max: usize,
    },
    /// The payload is not a valid protobuf encoding of the expected envelope.
    #[error("frame payload is not a valid protobuf envelope")]
    Malformed,
    /// The envelope decoded but carries no kind this protocol version knows.
    #[error("frame carries no known kind")]
    Empty,
}

impl FrameError {
    /// The wire error code to put in the `Error` frame sent back before closing.
    ///
    /// `Empty` maps to `UNEXPECTED_FRAME` rather than `MALFORMED_FRAME`: the bytes were valid
    /// protobuf, most likely a kind from a newer client that this server does not know.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            FrameError::Malformed => ErrorCode::MalformedFrame,
            FrameError::Empty => ErrorCode::UnexpectedFrame,
        }
    }
}

/// Appends one frame (header and payload) holding `msg` to `out`.
///
/// Fails with [`FrameError::TooLarge`] if the payload would exceed [`FRAME_BYTES_MAX`], and
/// then leaves `out` unchanged.
pub fn encode_frame<M: prost::Message>(msg: &M, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = msg.encoded_len();
    if len > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge {
            len,
            max: FRAME_BYTES_MAX,
        });
    }
    out.reserve(FRAME_HEADER_BYTES + len);
    let start = out.len();
    // Cannot truncate: len <= FRAME_BYTES_MAX <= u32::MAX (asserted in limits.rs).
    out.extend_from_slice(&(len as u32).to_be_bytes());
    // Invariant: a Vec<u8> reports isize::MAX - len bytes of remaining capacity (it grows), so
    // prost's only failure (insufficient buffer space) cannot happen.
    msg.encode(out)
        .expect("encoding into a Vec<u8> cannot run out of space");
    assert_eq!(
        out.len() - start,
        FRAME_HEADER_BYTES + len,
        "prost encoded_len disagrees"
    );
    Ok(())
}

/// Finds the first whole frame at the start of `buf`.
///
/// Returns `Ok(Some((payload, consumed)))` when `buf` holds a whole frame, where `consumed`
/// counts the header and the payload; `Ok(None)` when more bytes are needed; and
/// [`FrameError::TooLarge`] as soon as the header announces more than [`FRAME_BYTES_MAX`],
/// before the body arrives.
pub fn split_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(len) = frame_len(buf)? else {
        return Ok(None);
    };
    let total = FRAME_HEADER_BYTES + len;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((&buf[FRAME_HEADER_BYTES..total], total)))
}

/// The payload length announced by the header at the start of `buf`, once the header is whole.
pub(crate) fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(header) = buf.first_chunk::<FRAME_HEADER_BYTES>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*header) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge {
            len,
            max: FRAME_BYTES_MAX,
        });
    }
    Ok(Some(len))
}

/// Decodes a frame payload sent by a phone.
pub fn decode_client(payload: &[u8]) -> Result<ClientFrame, FrameError> {
    let frame = ClientFrame::decode(payload).map_err(|_| FrameError::Malformed)?;
    if frame.kind.is_none() {
        return Err(FrameError::Empty);
    }
    Ok(frame)
}

/// Decodes a frame payload sent by the server.
pub fn decode_server(payload: &[u8]) -> Result<ServerFrame, FrameError> {
    let frame = ServerFrame::decode(payload).map_err(|_| FrameError::Malformed)?;
    if frame.kind.is_none() {
        return Err(FrameError::Empty);
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::*;

    fn media() -> Option<Box<Media>> {
        Some(Box::new(Media {
            url: "https://m.example/abc".into(),
            mime: "image/jpeg".into(),
            size: 123_456,
            thumbnail: vec![1, 2, 3],
            sha256: vec![7; 32],
            duration_ms: 1_500,
            width: 640,
            height: 480,
        }))
    }

    fn phones() -> Vec<String> {
        vec!["+15551234567".into(), "+447700900123".into()]
    }

    fn all_client_frames() -> Vec<ClientFrame> {
        let v = crate::PROTOCOL_VERSION;
        let p = || "+15551234567".to_string();
        vec![
            Ping { nonce: 7 }.into(),
            Register {
                protocol_version: v,
                phone: p(),
            }
            .into(),
            Verify {
                protocol_version: v,
                phone: p(),
                pin: "123456".into(),
            }
            .into(),
            Login {
                protocol_version: v,
                phone: p(),
                device_key: vec![9; 32],
            }
            .into(),
            SendMessage {
                to: p(),
                client_msg_id: 1,
                body: b"hi".to_vec().into(),
                media: media(),
            }
            .into(),
            Ack {
                server_msg_ids: vec![1, 2, u64::MAX],
            }
            .into(),
            Read {
                server_msg_ids: vec![3],
            }
            .into(),
            GroupCreate {
                client_req_id: 4,
                name: "fam".into(),
                members: phones(),
            }
            .into(),
            GroupAdd {
                group_id: 5,
                members: phones(),
            }
            .into(),
            GroupRemove {
                group_id: 5,
                members: phones(),
            }
            .into(),
            GroupSend {
                group_id: 5,
                client_msg_id: 2,
                body: b"yo".to_vec(),
                media: None,
            }
            .into(),
            GroupMembersRequest { group_id: 5 }.into(),
            MediaSlotRequest {
                client_req_id: 4,
                size: 200_000,
                mime: "image/jpeg".into(),
                sha256: vec![7; 32],
            }
            .into(),
            PresenceSubscribe { contacts: phones() }.into(),
            LoadTestLogin {
                protocol_version: v,
                phone: p(),
                secret: b"s".to_vec(),
            }
            .into(),
        ]
    }

    fn all_server_frames() -> Vec<ServerFrame> {
        let p = || "+15551234567".to_string();
        vec![
            Pong { nonce: 7 }.into(),
            crate::error_frame(ErrorCode::BadPin, "wrong pin", 0),
            Busy {
                retry_after_ms: 250,
                client_msg_id: 9,
            }
            .into(),
            PinSent {
                phone: p(),
                expires_in_s: 300,
            }
            .into(),
            Verified {
                phone: p(),
                device_key: vec![1; 32],
            }
            .into(),
            LoggedIn {
                user_id: 42,
                queued: 3,
            }
            .into(),
            ServerAck {
                client_msg_id: 1,
                server_msg_id: 2,
                group_id: 0,
            }
            .into(),
            Message {
                from: p(),
                server_msg_id: 2,
                sent_at_ms: 1_700_000_000_000,
                body: b"hi".to_vec(),
                media: media(),
                group_id: 9,
                client_msg_id: 4,
            }
            .into(),
            Receipt {
                server_msg_id: 2,
                client_msg_id: 1,
                by: p(),
                kind: ReceiptKind::Read as i32,
                group_id: 0,
                receipt_id: 6,
            }
            .into(),
            GroupCreated {
                client_req_id: 4,
                group_id: 5,
            }
            .into(),
            GroupMembers {
                group_id: 5,
                name: "fam".into(),
                admin: p(),
                members: phones(),
            }
            .into(),
            Presence {
                phone: p(),
                online: false,
                last_seen_ms: 99,
                hidden: false,
            }
            .into(),
            GroupUpdated {
                group_id: 5,
                members: phones(),
            }
            .into(),
            Redirect {
                addr: "10.0.0.2:5222".into(),
            }
            .into(),
            MediaSlot {
                client_req_id: 4,
                upload_url: "https://127.0.0.1:8443/m/ab?t=cd".into(),
                expires_at_ms: 1_700_000_000_000,
            }
            .into(),
        ]
    }

    fn roundtrip_one<M: prost::Message>(msg: &M) -> Vec<u8> {
        let mut out = vec![0xEE]; // pre-existing bytes must be kept
        encode_frame(msg, &mut out).unwrap();
        assert_eq!(out[0], 0xEE);
        let (payload, used) = split_frame(&out[1..]).unwrap().unwrap();
        assert_eq!(used, out.len() - 1);
        payload.to_vec()
    }

    #[test]
    fn every_client_variant_round_trips() {
        let frames = all_client_frames();
        assert_eq!(
            frames.len(),
            15,
            "a ClientFrame kind is missing from this test"
        );
        let mut names = std::collections::HashSet::new();
        for f in &frames {
            assert!(
                names.insert(f.kind_name()),
                "duplicate kind {}",
                f.kind_name()
            );
            assert_eq!(&decode_client(&roundtrip_one(f)).unwrap(), f);
        }
    }

    #[test]
    fn every_server_variant_round_trips() {
        let frames = all_server_frames();
        assert_eq!(
            frames.len(),
            15,
            "a ServerFrame kind is missing from this test"
        );
        let mut names = std::collections::HashSet::new();
        for f in &frames {
            assert!(
                names.insert(f.kind_name()),
                "duplicate kind {}",
                f.kind_name()
            );
            assert_eq!(&decode_server(&roundtrip_one(f)).unwrap(), f);
        }
    }

    #[test]
    fn partial_frames_byte_by_byte() {
        let f: ClientFrame = Ping { nonce: 0x0102_0304 }.into();
        let mut wire = Vec::new();
        encode_frame(&f, &mut wire).unwrap();
        for cut in 0..wire.len() {
            assert_eq!(split_frame(&wire[..cut]), Ok(None), "cut at {cut}");
        }
        let (payload, used) = split_frame(&wire).unwrap().unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(decode_client(payload).unwrap(), f);
    }

    #[test]
    fn two_frames_in_one_buffer() {
        let a: ClientFrame = Ping { nonce: 1 }.into();
        let b: ClientFrame = Read {
            server_msg_ids: vec![5, 6],
        }
        .into();
        let mut wire = Vec::new();
        encode_frame(&a, &mut wire).unwrap();
        encode_frame(&b, &mut wire).unwrap();
        wire.push(0); // start of a third frame
        let (p1, n1) = split_frame(&wire).unwrap().unwrap();
        assert_eq!(decode_client(p1).unwrap(), a);
        let (p2, n2) = split_frame(&wire[n1..]).unwrap().unwrap();
        assert_eq!(decode_client(p2).unwrap(), b);
        assert_eq!(split_frame(&wire[n1 + n2..]), Ok(None));
    }

    #[test]
    fn too_large_detected_from_header_alone() {
        let len = FRAME_BYTES_MAX + 1;
        let header = (len as u32).to_be_bytes();
        let err = split_frame(&header).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                len,
                max: FRAME_BYTES_MAX
            }
        );
        assert_eq!(err.code(), ErrorCode::FrameTooLarge);
        let max = (FRAME_BYTES_MAX as u32).to_be_bytes();
        assert_eq!(split_frame(&max), Ok(None), "exactly the limit is allowed");
        assert!(split_frame(&u32::MAX.to_be_bytes()).is_err());
    }

    #[test]
    fn encode_refuses_oversize_and_leaves_out_unchanged() {
        let big = SendMessage {
            body: vec![0; FRAME_BYTES_MAX].into(),
            ..Default::default()
        };
        let mut out = vec![1, 2, 3];
        let err = encode_frame(&ClientFrame::from(big), &mut out).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len, max } if len > max));
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn garbage_payload_is_malformed() {
        // Field 1, wire type 2 (length-delimited), length 100, but no bytes follow.
        assert_eq!(decode_client(&[0x0A, 100]), Err(FrameError::Malformed));
        // Wire type 7 does not exist.
        assert_eq!(decode_server(&[0x0F]), Err(FrameError::Malformed));
        // Invalid UTF-8 in Register.phone.
        let bad = [0x12, 0x04, 0x12, 0x02, 0xFF, 0xFE];
        assert_eq!(decode_client(&bad), Err(FrameError::Malformed));
        assert_eq!(FrameError::Malformed.code(), ErrorCode::MalformedFrame);
    }

    #[test]
    fn empty_oneof_is_empty() {
        assert_eq!(decode_client(&[]), Err(FrameError::Empty));
        assert_eq!(decode_server(&[]), Err(FrameError::Empty));
        // An unknown field (tag 99, varint) from a newer peer: valid protobuf, no known kind.
        assert_eq!(decode_client(&[0x98, 0x06, 0x01]), Err(FrameError::Empty));
        assert_eq!(FrameError::Empty.code(), ErrorCode::UnexpectedFrame);
    }

    /// xorshift64: a tiny deterministic PRNG, enough to shake the decoders.
    fn xorshift(state: &mut u64) -> u64 {
        let mut x = *state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *state = x;
        x
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let valid: Vec<Vec<u8>> = all_client_frames()
            .iter()
            .map(|f| {
                let mut w = Vec::new();
                encode_frame(f, &mut w).unwrap();
                w
            })
            .collect();
        let mut buf = Vec::with_capacity(512);
        for i in 0..20_000 {
            buf.clear();
            let r = xorshift(&mut seed);
            if i % 2 == 0 {
                // Pure noise, with a plausible small length header half of the time.
                let n = (r % 300) as usize;
                buf.extend((0..n).map(|_| xorshift(&mut seed) as u8));
                if r & 1 == 0 && n >= 4 {
                    buf[..4].copy_from_slice(&((n - 4) as u32).to_be_bytes());
                }
            } else {
                // A valid frame with a few bytes flipped.
                buf.extend_from_slice(&valid[(r % valid.len() as u64) as usize]);
                for _ in 0..(r >> 8) % 4 + 1 {
                    let at = (xorshift(&mut seed) as usize) % buf.len();
                    buf[at] ^= xorshift(&mut seed) as u8 | 1;
                }
            }
            let mut rest = &buf[..];
            while let Ok(Some((payload, used))) = split_frame(rest) {
                let _ = decode_client(payload);
                let _ = decode_server(payload);
                rest = &rest[used..];
            }
            let _ = decode_client(&buf);
        }
    }
}
