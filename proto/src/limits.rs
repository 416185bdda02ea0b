//! Every wire limit, named with its unit last.
//!
//! These bound what a single frame may carry. They are pure protocol facts, checked where
//! input enters ([`crate::codec::split_frame`] for the frame size, [`crate::validate`] for the
//! rest). Server-side limits that depend on state (queue depth per user, PIN attempts per hour,
//! timeouts) live with the service, not here.
//!
//! Relations between the limits are asserted at compile time at the bottom of this file, so
//! raising one without the others fails the build instead of producing unsendable frames.

/// Largest payload (protobuf bytes after the length header) of one frame, either direction.
pub const FRAME_BYTES_MAX: usize = 64 * 1024;

/// Largest payload of a frame from a connection that has not logged in. The frames a client
/// sends before login (Register, Verify, Login, LoadTestLogin, Ping) are a few hundred bytes
/// at most, so an anonymous connection cannot make the server hold a 64 KiB partial frame.
pub const PRELOGIN_FRAME_BYTES_MAX: usize = 4 * 1024;

/// Size of the big-endian `u32` payload length that precedes every frame.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Largest message body (`SendMessage.body`, `GroupSend.body`, `Message.body`).
pub const BODY_BYTES_MAX: usize = 16 * 1024;

/// Largest inline media thumbnail (`Media.thumbnail`): a small preview, the bulk bytes go
/// over HTTP (issue 25).
pub const MEDIA_THUMBNAIL_BYTES_MAX: usize = 4 * 1024;

/// Exact length of a media object's SHA-256 (`Media.sha256` when set,
/// `MediaSlotRequest.sha256`).
pub const MEDIA_SHA256_BYTES: usize = 32;

/// Longest media URL (`Media.url`), in bytes of UTF-8.
pub const MEDIA_URL_BYTES_MAX: usize = 2048;

/// Longest media MIME type (`Media.mime`): RFC 6838 allows 127 bytes each for type and subtype.
pub const MEDIA_MIME_BYTES_MAX: usize = 255;

/// Most members of one group, its admin included; also the most phones one group frame names.
pub const GROUP_MEMBERS_MAX: usize = 256;

/// Longest group name, in bytes of UTF-8.
pub const GROUP_NAME_BYTES_MAX: usize = 64;

/// Most digits in an E.164 phone number (after the `+`).
pub const PHONE_DIGITS_MAX: usize = 15;

/// Fewest digits this service accepts in an E.164 phone number (after the `+`).
pub const PHONE_DIGITS_MIN: usize = 8;

/// Exact number of ASCII digits in a registration PIN.
pub const PIN_DIGITS: usize = 6;

/// Longest device key (`Login.device_key`, `Verified.device_key`).
pub const DEVICE_KEY_BYTES_MAX: usize = 64;

/// Longest load-test secret (`LoadTestLogin.secret`).
pub const LOAD_TEST_SECRET_BYTES_MAX: usize = 64;

/// Most message ids in one `Ack` or `Read` frame.
pub const ACK_IDS_PER_FRAME_MAX: usize = 1024;

/// Most contacts in one `PresenceSubscribe` frame.
pub const PRESENCE_CONTACTS_PER_FRAME_MAX: usize = 1024;

/// Longest E.164 string: `+` and the digits.
pub const PHONE_BYTES_MAX: usize = 1 + PHONE_DIGITS_MAX;

// Headroom for a frame's envelope and small fields (ids, phone, media url and mime).
const ENVELOPE_SLACK_BYTES: usize = 4096;

// A message with the largest body and thumbnail still fits in one frame, with room for the
// envelope, ids, the sender's phone and a full media URL and MIME type.
const _: () = assert!(
    BODY_BYTES_MAX
        + MEDIA_THUMBNAIL_BYTES_MAX
        + MEDIA_URL_BYTES_MAX
        + MEDIA_MIME_BYTES_MAX
        + ENVELOPE_SLACK_BYTES
        <= FRAME_BYTES_MAX
);
// A full group listing (name, admin, every member) fits in one frame; each repeated string
// costs at most a tag byte and a length byte on top of the phone.
const _: () = assert!(
    GROUP_NAME_BYTES_MAX + (GROUP_MEMBERS_MAX + 1) * (PHONE_BYTES_MAX + 2) + ENVELOPE_SLACK_BYTES
        <= FRAME_BYTES_MAX
);
// A full Ack or Read (packed varints, at most 10 bytes each) fits in one frame.
const _: () = assert!(ACK_IDS_PER_FRAME_MAX * 10 + ENVELOPE_SLACK_BYTES <= FRAME_BYTES_MAX);
// A full PresenceSubscribe fits in one frame.
const _: () = assert!(
    PRESENCE_CONTACTS_PER_FRAME_MAX * (PHONE_BYTES_MAX + 2) + ENVELOPE_SLACK_BYTES
        <= FRAME_BYTES_MAX
);
// The frame length travels as a u32.
const _: () = assert!(FRAME_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(FRAME_HEADER_BYTES == core::mem::size_of::<u32>());
// Every pre-login frame fits the pre-login cap with room for its envelope (a version, the
// phone, the longest key or secret, tags and lengths), and the cap is below the frame cap.
const _: () = assert!(
    PHONE_BYTES_MAX + DEVICE_KEY_BYTES_MAX + LOAD_TEST_SECRET_BYTES_MAX + 256
        <= PRELOGIN_FRAME_BYTES_MAX
);
const _: () = assert!(PRELOGIN_FRAME_BYTES_MAX < FRAME_BYTES_MAX);
// Phone lengths are consistent.
const _: () = assert!(PHONE_DIGITS_MIN <= PHONE_DIGITS_MAX);
// A group of the largest size can always be created: its admin plus at least one member.
const _: () = assert!(GROUP_MEMBERS_MAX >= 2);
