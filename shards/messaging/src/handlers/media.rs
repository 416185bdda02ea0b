//! Media slots and download tokens (issue 25). A shard never touches media bytes: it grants
//! upload slots (a signed URL bound to the user, size and SHA-256) and, when a message with
//! media reaches its recipient's home, replaces the media's URL with one signed for that
//! recipient alone. With the media service off (`settings.media` is `None`), a slot request
//! is refused with `MEDIA_OFF` and media metadata passes through untouched, as before.

use proto::ids::ConnId;
use proto::v1::{server_frame, ErrorCode, Media, MediaSlotRequest};

use crate::media::token::{Purpose, Token};
use crate::state::effect::Out;
use crate::state::home::Phone;
use crate::state::ShardState;

impl ShardState {
    /// `MediaSlotRequest` at the user's home: a slot, or `MEDIA_OFF` / `MEDIA_OBJECT_TOO_LARGE`.
    pub(crate) fn on_media_slot(
        &mut self,
        now: u64,
        conn: ConnId,
        user: &str,
        r: MediaSlotRequest,
        out: &mut Out,
    ) {
        let (Some(m), Some(phone)) = (&self.settings.media, Phone::parse(user)) else {
            self.abuse.media_slots_refused += 1;
            let detail = "this server has no media service";
            return out.error(conn, ErrorCode::MediaOff, detail, r.client_req_id);
        };
        if r.size > m.object_bytes_max {
            self.abuse.media_slots_refused += 1;
            let detail = "object larger than the server's object limit";
            return out.error(
                conn,
                ErrorCode::MediaObjectTooLarge,
                detail,
                r.client_req_id,
            );
        }
        let Ok(sha256) = <[u8; 32]>::try_from(r.sha256.as_slice()) else {
            // Validated: exactly 32 bytes.
            return out.error(
                conn,
                ErrorCode::MalformedFrame,
                "bad sha256",
                r.client_req_id,
            );
        };
        let expires_at_ms = now + crate::media::settings::MEDIA_SLOT_MS;
        let token = m.key.sign(&Token {
            purpose: Purpose::Upload,
            user: phone.get(),
            sha256,
            size: r.size,
            expires_at_ms,
        });
        self.abuse.media_slots_granted += 1;
        let slot = proto::v1::MediaSlot {
            client_req_id: r.client_req_id,
            upload_url: m.url(&sha256, &token),
            expires_at_ms,
        };
        out.frame(conn, server_frame::Kind::MediaSlot(slot));
    }

    /// At the recipient's home, before the item is stored: a media object the service
    /// serves (its SHA-256 is set) gets the recipient's own download URL, good until the
    /// object's retention ends. Nothing changes when the service is off or the media is a
    /// plain link. `base` names the service that holds the object when another box of a
    /// cluster does (the cluster shares one key, so this box's signature opens there);
    /// `None`: this box's own service.
    pub(crate) fn sign_download(
        &self,
        recipient: Phone,
        sent_at_ms: u64,
        base: Option<&str>,
        media: &mut Media,
    ) {
        let Some(m) = &self.settings.media else {
            return;
        };
        let Ok(sha256) = <[u8; 32]>::try_from(media.sha256.as_slice()) else {
            return;
        };
        let token = m.key.sign(&Token {
            purpose: Purpose::Download,
            user: recipient.get(),
            sha256,
            size: media.size,
            expires_at_ms: sent_at_ms.saturating_add(m.retention_ms),
        });
        media.url = match base {
            Some(base) => crate::media::settings::url_at(base, &sha256, &token),
            None => m.url(&sha256, &token),
        };
    }
}
