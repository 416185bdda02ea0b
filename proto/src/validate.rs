//! Limits that are pure functions of one decoded [`ClientFrame`], checked before any state is
//! touched.
//!
//! [`check_client_frame`] returns the wire error code and a static detail for the first rule a
//! frame breaks. What needs state (is the sender logged in, does the recipient exist, is the
//! sender a group admin, how full is a queue, the group's real size after an add) is the
//! service's job, not this module's. Allocation-free.
//!
//! Rules, by frame kind:
//! - `Register`, `Verify`, `Login`, `LoadTestLogin`: `protocol_version == PROTOCOL_VERSION`
//!   (`UNSUPPORTED_VERSION`), phone is E.164 (`BAD_PHONE`); `Verify.pin` is exactly
//!   [`PIN_DIGITS`] ASCII digits (`BAD_PIN`); the key or secret is 1..=64 bytes (`BAD_KEY`).
//! - `SendMessage`, `GroupSend`: nonzero `client_msg_id` (`MALFORMED_FRAME`), a body or media
//!   (`EMPTY_MESSAGE`: an empty send is only good for probing numbers), body at most
//!   [`BODY_BYTES_MAX`] (`BODY_TOO_LARGE`), media thumbnail, URL and MIME within their limits
//!   (`MEDIA_TOO_LARGE`), media `sha256` empty or [`MEDIA_SHA256_BYTES`] (`MALFORMED_FRAME`);
//!   the 1:1 recipient is E.164 (`BAD_PHONE`).
//! - `MediaSlotRequest`: nonzero `client_req_id` and `size`, `sha256` of
//!   [`MEDIA_SHA256_BYTES`] (`MALFORMED_FRAME`), MIME within its limit (`MEDIA_TOO_LARGE`).
//! - Group frames: nonzero `group_id` (`UNKNOWN_GROUP`), member lists no longer than a group
//!   can be (`GROUP_TOO_LARGE`) and every member E.164 (`BAD_PHONE`); the name at most
//!   [`GROUP_NAME_BYTES_MAX`] (`GROUP_NAME_TOO_LONG`).
//! - `Ack`, `Read`: at most [`ACK_IDS_PER_FRAME_MAX`] ids; `PresenceSubscribe`: at most
//!   [`PRESENCE_CONTACTS_PER_FRAME_MAX`] contacts, each E.164 (`MALFORMED_FRAME`, `BAD_PHONE`).

use crate::limits::*;
use crate::v1::{client_frame::Kind, ClientFrame, ErrorCode, Media, MediaSlotRequest};
use crate::PROTOCOL_VERSION;

/// Why a frame was refused: the code for the `Error` frame and a short static detail.
pub type Rejection = (ErrorCode, &'static str);

/// Checks every limit of `f` that depends on the frame alone; `Err` names the first broken.
pub fn check_client_frame(f: &ClientFrame) -> Result<(), Rejection> {
    match &f.kind {
        None => Err((ErrorCode::UnexpectedFrame, "frame carries no known kind")),
        Some(Kind::Ping(_)) => Ok(()),
        Some(Kind::Register(r)) => {
            version(r.protocol_version)?;
            phone(&r.phone)
        }
        Some(Kind::Verify(v)) => {
            version(v.protocol_version)?;
            phone(&v.phone)?;
            pin(&v.pin)
        }
        Some(Kind::Login(l)) => {
            version(l.protocol_version)?;
            phone(&l.phone)?;
            key(
                &l.device_key,
                DEVICE_KEY_BYTES_MAX,
                "device key must be 1..=64 bytes",
            )
        }
        Some(Kind::LoadTestLogin(l)) => {
            version(l.protocol_version)?;
            phone(&l.phone)?;
            key(
                &l.secret,
                LOAD_TEST_SECRET_BYTES_MAX,
                "load-test secret must be 1..=64 bytes",
            )
        }
        Some(Kind::Send(s)) => {
            phone(&s.to)?;
            content(s.client_msg_id, &s.body, s.media.as_deref())
        }
        Some(Kind::GroupSend(s)) => {
            group_id(s.group_id)?;
            content(s.client_msg_id, &s.body, s.media.as_deref())
        }
        Some(Kind::MediaSlot(m)) => media_slot(m),
        Some(Kind::Ack(a)) => ids(&a.server_msg_ids),
        Some(Kind::Read(r)) => ids(&r.server_msg_ids),
        Some(Kind::GroupCreate(g)) => {
            if g.name.len() > GROUP_NAME_BYTES_MAX {
                return Err((ErrorCode::GroupNameTooLong, "group name too long"));
            }
            // The creator is the admin and takes one seat.
            members(&g.members, GROUP_MEMBERS_MAX - 1)
        }
        Some(Kind::GroupAdd(g)) => {
            group_id(g.group_id)?;
            // The admin adding them is already a member.
            members(&g.members, GROUP_MEMBERS_MAX - 1)
        }
        Some(Kind::GroupRemove(g)) => {
            group_id(g.group_id)?;
            members(&g.members, GROUP_MEMBERS_MAX)
        }
        Some(Kind::GroupMembers(g)) => group_id(g.group_id),
        Some(Kind::PresenceSubscribe(p)) => {
            if p.contacts.len() > PRESENCE_CONTACTS_PER_FRAME_MAX {
                return Err((
                    ErrorCode::MalformedFrame,
                    "too many contacts in one subscribe",
                ));
            }
            p.contacts.iter().try_for_each(|c| phone(c))
        }
        Some(Kind::PresencePrivacy(p)) => {
            match crate::v1::PresenceVisibility::try_from(p.visibility) {
                Ok(_) => Ok(()),
                Err(_) => Err((ErrorCode::MalformedFrame, "unknown presence visibility")),
            }
        }
        Some(Kind::GroupPrivacy(p)) => match crate::v1::GroupAddPolicy::try_from(p.who_can_add) {
            Ok(_) => Ok(()),
            Err(_) => Err((ErrorCode::MalformedFrame, "unknown group add policy")),
        },
    }
}

/// True if `phone` is E.164 as this service accepts it: `+`, then 8..=15 ASCII digits, the
/// first not `0`.
pub fn is_e164(phone: &str) -> bool {
    let Some(digits) = phone.strip_prefix('+') else {
        return false;
    };
    (PHONE_DIGITS_MIN..=PHONE_DIGITS_MAX).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

fn version(v: u32) -> Result<(), Rejection> {
    if v != PROTOCOL_VERSION {
        return Err((
            ErrorCode::UnsupportedVersion,
            "unsupported protocol version",
        ));
    }
    Ok(())
}

fn phone(p: &str) -> Result<(), Rejection> {
    if !is_e164(p) {
        return Err((
            ErrorCode::BadPhone,
            "phone must be E.164: + and 8..=15 digits",
        ));
    }
    Ok(())
}

fn pin(p: &str) -> Result<(), Rejection> {
    if p.len() != PIN_DIGITS || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err((ErrorCode::BadPin, "pin must be 6 digits"));
    }
    Ok(())
}

fn key(k: &[u8], max: usize, detail: &'static str) -> Result<(), Rejection> {
    if k.is_empty() || k.len() > max {
        return Err((ErrorCode::BadKey, detail));
    }
    Ok(())
}

fn group_id(id: u64) -> Result<(), Rejection> {
    if id == 0 {
        return Err((ErrorCode::UnknownGroup, "group_id 0 names no group"));
    }
    Ok(())
}

fn ids(ids: &[u64]) -> Result<(), Rejection> {
    if ids.len() > ACK_IDS_PER_FRAME_MAX {
        return Err((
            ErrorCode::MalformedFrame,
            "too many message ids in one frame",
        ));
    }
    Ok(())
}

fn members(list: &[String], max: usize) -> Result<(), Rejection> {
    if list.len() > max {
        return Err((ErrorCode::GroupTooLarge, "too many members for one group"));
    }
    list.iter().try_for_each(|m| phone(m))
}

fn content(client_msg_id: u64, body: &[u8], media: Option<&Media>) -> Result<(), Rejection> {
    if client_msg_id == 0 {
        return Err((ErrorCode::MalformedFrame, "client_msg_id must be nonzero"));
    }
    if body.len() > BODY_BYTES_MAX {
        return Err((ErrorCode::BodyTooLarge, "body too large"));
    }
    let Some(m) = media else {
        if body.is_empty() {
            return Err((ErrorCode::EmptyMessage, "a message needs a body or media"));
        }
        return Ok(());
    };
    if m.thumbnail.len() > MEDIA_THUMBNAIL_BYTES_MAX {
        return Err((ErrorCode::MediaTooLarge, "media thumbnail too large"));
    }
    if m.url.len() > MEDIA_URL_BYTES_MAX {
        return Err((ErrorCode::MediaTooLarge, "media url too long"));
    }
    if m.mime.len() > MEDIA_MIME_BYTES_MAX {
        return Err((ErrorCode::MediaTooLarge, "media mime type too long"));
    }
    if !m.sha256.is_empty() && m.sha256.len() != MEDIA_SHA256_BYTES {
        return Err((ErrorCode::MalformedFrame, "media sha256 must be 32 bytes"));
    }
    Ok(())
}

fn media_slot(m: &MediaSlotRequest) -> Result<(), Rejection> {
    if m.client_req_id == 0 || m.size == 0 {
        return Err((
            ErrorCode::MalformedFrame,
            "slot needs a request id and a size",
        ));
    }
    if m.sha256.len() != MEDIA_SHA256_BYTES {
        return Err((ErrorCode::MalformedFrame, "media sha256 must be 32 bytes"));
    }
    if m.mime.len() > MEDIA_MIME_BYTES_MAX {
        return Err((ErrorCode::MediaTooLarge, "media mime type too long"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::*;

    const P: &str = "+15551234567";

    fn code(f: impl Into<ClientFrame>) -> Option<ErrorCode> {
        check_client_frame(&f.into()).err().map(|(c, _)| c)
    }

    fn send(body: usize, media: Option<Media>) -> SendMessage {
        SendMessage {
            to: P.into(),
            client_msg_id: 1,
            body: vec![0; body].into(),
            media: media.map(Box::new),
        }
    }

    fn phones(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("+1555{i:07}")).collect()
    }

    #[test]
    fn e164() {
        for ok in [
            "+15551234567",
            "+12345678",
            "+123456789012345",
            "+447700900123",
        ] {
            assert!(is_e164(ok), "{ok}");
        }
        for bad in [
            "",
            "+",
            "15551234567",
            "+1234567",
            "+1234567890123456",
            "+05551234567",
            "+1555123456a",
            "++15551234567",
            "+1 5551234567",
            "+１5551234567",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[test]
    fn version_checked_on_every_login_kind() {
        let v = PROTOCOL_VERSION;
        let bad = v + 1;
        let key = vec![1; 32];
        let u = Some(ErrorCode::UnsupportedVersion);
        assert_eq!(
            code(Register {
                protocol_version: v,
                phone: P.into()
            }),
            None
        );
        assert_eq!(
            code(Register {
                protocol_version: bad,
                phone: P.into()
            }),
            u
        );
        assert_eq!(
            code(Register {
                protocol_version: 0,
                phone: P.into()
            }),
            u
        );
        let verify = |protocol_version| Verify {
            protocol_version,
            phone: P.into(),
            pin: "000000".into(),
        };
        assert_eq!(code(verify(v)), None);
        assert_eq!(code(verify(bad)), u);
        let login = |protocol_version| Login {
            protocol_version,
            phone: P.into(),
            device_key: key.clone(),
        };
        assert_eq!(code(login(v)), None);
        assert_eq!(code(login(bad)), u);
        let lt = |protocol_version| LoadTestLogin {
            protocol_version,
            phone: P.into(),
            secret: key.clone(),
        };
        assert_eq!(code(lt(v)), None);
        assert_eq!(code(lt(bad)), u);
    }

    #[test]
    fn phones_pins_and_keys() {
        let v = PROTOCOL_VERSION;
        let bp = Some(ErrorCode::BadPhone);
        assert_eq!(
            code(Register {
                protocol_version: v,
                phone: "5551234".into()
            }),
            bp
        );
        assert_eq!(
            code(SendMessage {
                to: "bob".into(),
                ..send(1, None)
            }),
            bp
        );
        let verify = |pin: &str| Verify {
            protocol_version: v,
            phone: P.into(),
            pin: pin.into(),
        };
        for bad in ["", "12345", "1234567", "12a456", "１２３４５６"] {
            assert_eq!(code(verify(bad)), Some(ErrorCode::BadPin), "{bad}");
        }
        let login = |n| Login {
            protocol_version: v,
            phone: P.into(),
            device_key: vec![1; n],
        };
        assert_eq!(code(login(0)), Some(ErrorCode::BadKey));
        assert_eq!(code(login(DEVICE_KEY_BYTES_MAX)), None);
        assert_eq!(
            code(login(DEVICE_KEY_BYTES_MAX + 1)),
            Some(ErrorCode::BadKey)
        );
        let lt = |n| LoadTestLogin {
            protocol_version: v,
            phone: P.into(),
            secret: vec![1; n],
        };
        assert_eq!(code(lt(0)), Some(ErrorCode::BadKey));
        assert_eq!(
            code(lt(LOAD_TEST_SECRET_BYTES_MAX + 1)),
            Some(ErrorCode::BadKey)
        );
    }

    #[test]
    fn media_hashes_and_slot_requests() {
        let slot = |id, size, sha: usize, mime: usize| MediaSlotRequest {
            client_req_id: id,
            size,
            mime: "m".repeat(mime),
            sha256: vec![7; sha],
        };
        assert_eq!(
            code(slot(1, 10, MEDIA_SHA256_BYTES, MEDIA_MIME_BYTES_MAX)),
            None
        );
        let bad = Some(ErrorCode::MalformedFrame);
        assert_eq!(code(slot(0, 10, MEDIA_SHA256_BYTES, 1)), bad);
        assert_eq!(code(slot(1, 0, MEDIA_SHA256_BYTES, 1)), bad);
        assert_eq!(code(slot(1, 10, 31, 1)), bad);
        assert_eq!(code(slot(1, 10, 0, 1)), bad);
        let long_mime = slot(1, 10, MEDIA_SHA256_BYTES, MEDIA_MIME_BYTES_MAX + 1);
        assert_eq!(code(long_mime), Some(ErrorCode::MediaTooLarge));
        let media = |sha: usize| SendMessage {
            to: P.into(),
            client_msg_id: 1,
            media: Some(Box::new(Media {
                sha256: vec![1; sha],
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(code(media(0)), None, "a link the server does not serve");
        assert_eq!(code(media(MEDIA_SHA256_BYTES)), None);
        assert_eq!(code(media(5)), bad);
    }

    #[test]
    fn body_and_media_limits() {
        assert_eq!(code(send(BODY_BYTES_MAX, None)), None);
        assert_eq!(
            code(send(BODY_BYTES_MAX + 1, None)),
            Some(ErrorCode::BodyTooLarge)
        );
        assert_eq!(
            code(SendMessage {
                client_msg_id: 0,
                ..send(1, None)
            }),
            Some(ErrorCode::MalformedFrame)
        );
        let m = |thumb: usize, url: usize, mime: usize| Media {
            url: "u".repeat(url),
            mime: "m".repeat(mime),
            size: 1 << 30,
            thumbnail: vec![0; thumb],
            ..Default::default()
        };
        let big = Some(ErrorCode::MediaTooLarge);
        let (t, u, mi) = (
            MEDIA_THUMBNAIL_BYTES_MAX,
            MEDIA_URL_BYTES_MAX,
            MEDIA_MIME_BYTES_MAX,
        );
        assert_eq!(code(send(1, Some(m(t, u, mi)))), None);
        assert_eq!(code(send(1, Some(m(t + 1, 1, 1)))), big);
        assert_eq!(code(send(1, Some(m(1, u + 1, 1)))), big);
        assert_eq!(code(send(1, Some(m(1, 1, mi + 1)))), big);
        let gs = |body, media: Option<Media>| GroupSend {
            group_id: 7,
            client_msg_id: 1,
            body: vec![0; body],
            media: media.map(Box::new),
        };
        assert_eq!(code(gs(BODY_BYTES_MAX, None)), None);
        assert_eq!(
            code(gs(BODY_BYTES_MAX + 1, None)),
            Some(ErrorCode::BodyTooLarge)
        );
        assert_eq!(code(gs(1, Some(m(t + 1, 1, 1)))), big);
        let empty = Some(ErrorCode::EmptyMessage);
        assert_eq!(code(send(0, None)), empty, "an empty send only probes");
        assert_eq!(code(gs(0, None)), empty);
        assert_eq!(
            code(send(0, Some(m(1, 1, 1)))),
            None,
            "media alone is a message"
        );
        assert_eq!(
            code(GroupSend {
                group_id: 0,
                ..gs(1, None)
            }),
            Some(ErrorCode::UnknownGroup)
        );
        assert_eq!(
            code(GroupSend {
                client_msg_id: 0,
                ..gs(1, None)
            }),
            Some(ErrorCode::MalformedFrame)
        );
    }

    #[test]
    fn largest_valid_message_fits_in_a_frame() {
        let m = Media {
            url: "u".repeat(MEDIA_URL_BYTES_MAX),
            mime: "m".repeat(MEDIA_MIME_BYTES_MAX),
            size: u64::MAX,
            thumbnail: vec![0xFF; MEDIA_THUMBNAIL_BYTES_MAX],
            sha256: vec![0xFF; MEDIA_SHA256_BYTES],
            duration_ms: u32::MAX,
            width: u32::MAX,
            height: u32::MAX,
        };
        let f: ClientFrame = SendMessage {
            client_msg_id: u64::MAX,
            ..send(BODY_BYTES_MAX, Some(m))
        }
        .into();
        assert_eq!(check_client_frame(&f), Ok(()));
        assert!(crate::codec::encode_frame(&f, &mut Vec::new()).is_ok());
    }

    #[test]
    fn group_limits() {
        let create = |name: usize, n| GroupCreate {
            client_req_id: 1,
            name: "n".repeat(name),
            members: phones(n),
        };
        assert_eq!(
            code(create(GROUP_NAME_BYTES_MAX, GROUP_MEMBERS_MAX - 1)),
            None
        );
        assert_eq!(
            code(create(GROUP_NAME_BYTES_MAX + 1, 1)),
            Some(ErrorCode::GroupNameTooLong)
        );
        assert_eq!(
            code(create(1, GROUP_MEMBERS_MAX)),
            Some(ErrorCode::GroupTooLarge)
        );
        let bad_member = GroupCreate {
            members: vec!["x".into()],
            ..create(1, 0)
        };
        assert_eq!(code(bad_member), Some(ErrorCode::BadPhone));
        let add = |group_id, n| GroupAdd {
            group_id,
            members: phones(n),
        };
        assert_eq!(code(add(1, GROUP_MEMBERS_MAX - 1)), None);
        assert_eq!(
            code(add(1, GROUP_MEMBERS_MAX)),
            Some(ErrorCode::GroupTooLarge)
        );
        assert_eq!(code(add(0, 1)), Some(ErrorCode::UnknownGroup));
        let rm = |group_id, n| GroupRemove {
            group_id,
            members: phones(n),
        };
        assert_eq!(code(rm(1, GROUP_MEMBERS_MAX)), None);
        assert_eq!(
            code(rm(1, GROUP_MEMBERS_MAX + 1)),
            Some(ErrorCode::GroupTooLarge)
        );
        assert_eq!(code(rm(0, 1)), Some(ErrorCode::UnknownGroup));
        assert_eq!(
            code(GroupRemove {
                group_id: 1,
                members: vec!["+0".into()]
            }),
            Some(ErrorCode::BadPhone)
        );
        assert_eq!(
            code(GroupMembersRequest { group_id: 0 }),
            Some(ErrorCode::UnknownGroup)
        );
        assert_eq!(code(GroupMembersRequest { group_id: 3 }), None);
    }

    #[test]
    fn ack_read_and_presence_counts() {
        let ids = |n: usize| (1..=n as u64).collect::<Vec<_>>();
        let mf = Some(ErrorCode::MalformedFrame);
        assert_eq!(
            code(Ack {
                server_msg_ids: ids(ACK_IDS_PER_FRAME_MAX)
            }),
            None
        );
        assert_eq!(
            code(Ack {
                server_msg_ids: ids(ACK_IDS_PER_FRAME_MAX + 1)
            }),
            mf
        );
        assert_eq!(
            code(Read {
                server_msg_ids: ids(ACK_IDS_PER_FRAME_MAX)
            }),
            None
        );
        assert_eq!(
            code(Read {
                server_msg_ids: ids(ACK_IDS_PER_FRAME_MAX + 1)
            }),
            mf
        );
        let sub = |contacts| PresenceSubscribe { contacts };
        assert_eq!(code(sub(phones(PRESENCE_CONTACTS_PER_FRAME_MAX))), None);
        assert_eq!(code(sub(phones(PRESENCE_CONTACTS_PER_FRAME_MAX + 1))), mf);
        assert_eq!(code(sub(vec!["+1".into()])), Some(ErrorCode::BadPhone));
        let privacy = |visibility| crate::v1::PresencePrivacy { visibility };
        assert_eq!(
            code(privacy(crate::v1::PresenceVisibility::Nobody as i32)),
            None
        );
        assert_eq!(code(privacy(3)), mf, "an unknown visibility is refused");
        let adds = |who_can_add| crate::v1::GroupPrivacy { who_can_add };
        assert_eq!(code(adds(crate::v1::GroupAddPolicy::Nobody as i32)), None);
        assert_eq!(code(adds(3)), mf, "an unknown add policy is refused");
    }

    #[test]
    fn ping_ok_and_empty_refused() {
        assert_eq!(code(Ping { nonce: 0 }), None);
        assert_eq!(
            check_client_frame(&ClientFrame::default()).unwrap_err().0,
            ErrorCode::UnexpectedFrame
        );
    }
}
