//! Messages and receipts between boxes: one JetStream stream per box.
//!
//! ## Steps
//! 1. At start each box makes sure its stream exists (`SB_BOX_<id>`, subject `sb.box.<id>`,
//!    work-queue retention: a message stays until its box acks it) and reads it through a
//!    durable pull consumer ([`CONSUMER`], at most [`INBOUND_PENDING_MAX`] unacked), made
//!    anew at each start so that what a killed run took and never acked comes at once.
//! 2. A 1:1 message whose recipient has no account on the sender's box reaches the gateway
//!    (`Up::Send`); the gateway finds the recipient's home box (`placement.rs`, remembered
//!    in [`HomeCache`]: homes never move) and publishes an [`Envelope`] to that box's
//!    subject with `Nats-Msg-Id` = sender, device, client id and recipient. JetStream's
//!    publish ack (the stream holds it, replicated where NATS is a cluster) is the
//!    sender's `ServerAck`; a failed publish is the sender's `Busy` (it retries, and the
//!    message id makes the retry no second copy within JetStream's duplicate window).
//! 3. The home box's gateway hands each envelope to the recipient's shard (`Down::Deliver`)
//!    in stream order, whatever order JetStream delivers them in (`in_order.rs`: a delivery
//!    lost with a NATS node comes again after later ones; `gateway/inbound.rs` holds the
//!    later ones back, reads the stream anew, and never naks to make room),
//!    which stores it as a message from the mesh (dedupe, queue, journal). The shard says
//!    `Up::Done` when the item is durable or acked by the recipient (the moment a single
//!    box would send `ServerAck`), and only then is the JetStream message acked. A message
//!    the shard refuses (busy, the recipient's queue full) stays unacked and is held by the
//!    shard's port in its sender's order, the sender's later messages behind it, and tried
//!    again every 2 ms: the recipient's dedupe relies on a sender's messages arriving in
//!    the order sent (a late one below its floor would be taken for a retry and dropped),
//!    so publishes leave in order too (`gateway.rs`). A box that dies before it acks gets
//!    the message again when it is back: the recipient's dedupe (`tables/dedupe.rs`:
//!    sender, device, client id) stores it once.
//! 4. Receipts for a sender of another box go the same way to the sender's home
//!    ([`Envelope::receipt`]); they are acked once handed to the sender's shard.
//!
//! Peer input: an envelope is checked ([`Envelope::check`]) before any shard sees it; one
//! that fails is acked and dropped (counted).
//!
//! This module owns the wire format and the streams; it must not touch a shard's state.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};

use messaging::state::home::Phone;
use messaging::state::mesh_msg::{Delivery, ReplyTo};

/// Name of the durable consumer each box reads its own stream with.
pub const CONSUMER: &str = "box";
/// Messages from other boxes handed to shards and not yet acked, at most.
pub const INBOUND_PENDING_MAX: usize = 4096;
/// An inbound message not acked within this long is delivered again by JetStream.
pub const INBOUND_ACK_WAIT_MS: u64 = 30_000;
/// A message handed back (busy or full shard) comes again after this long.
pub const INBOUND_RETRY_MS: u64 = 1_000;
/// Homes the gateway remembers; past it the cache starts over (homes never move, so a
/// forgotten one only costs a KV read).
pub const HOME_CACHE_ENTRIES_MAX: usize = 1 << 20;
/// Largest envelope read from a stream.
pub const ENVELOPE_BYTES_MAX: usize = proto::limits::FRAME_BYTES_MAX;

/// The stream of box `id`.
pub fn stream_name(id: &str) -> String {
    format!("SB_BOX_{id}")
}

/// The subject messages for box `id` are published to.
pub fn subject(id: &str) -> String {
    format!("sb.box.{id}")
}

/// What travels between boxes: a message (no receipt) or a receipt.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    /// The recipient (of a message), or the sender a receipt is for.
    #[prost(string, tag = "1")]
    pub to: String,
    /// The message's sender.
    #[prost(string, tag = "2")]
    pub from: String,
    /// The sender's device (`dedupe::device_of`).
    #[prost(uint32, tag = "3")]
    pub device: u32,
    /// The sender's id for the message.
    #[prost(uint64, tag = "4")]
    pub client_msg_id: u64,
    /// Body.
    #[prost(bytes = "vec", tag = "5")]
    pub body: Vec<u8>,
    /// Media reference.
    #[prost(message, optional, tag = "6")]
    pub media: Option<proto::v1::Media>,
    /// When the sender's home took it (ms).
    #[prost(uint64, tag = "7")]
    pub sent_at_ms: u64,
    /// Set for a receipt.
    #[prost(message, optional, tag = "8")]
    pub receipt: Option<proto::v1::Receipt>,
    /// A copy of a group send: the group (0 for a 1:1 message).
    #[prost(uint64, tag = "9")]
    pub group_id: u64,
    /// A group or presence message between boxes (`groups.rs`); the fields above carry a
    /// group send's message.
    #[prost(message, optional, tag = "10")]
    pub group: Option<super::groups::MeshPart>,
    /// The media service of the box that holds the message's media object
    /// (`https://host[:port][/path]`; empty: none named). Set only by gateways
    /// ([`Envelope::stamp_media_base`]), checked as peer input ([`media_base_ok`]).
    #[prost(string, tag = "11")]
    pub media_base: String,
}

pub use messaging::media::settings::{base_url_ok as media_base_ok, MEDIA_BASE_URL_BYTES_MAX};

impl Envelope {
    /// A message.
    pub fn message(d: &Delivery) -> Self {
        Envelope {
            to: d.to.map(Phone::to_e164).unwrap_or_default(),
            from: d.from.to_e164(),
            device: d.device,
            client_msg_id: d.client_msg_id,
            body: d.body.to_vec(),
            media: d.media.as_deref().cloned(),
            sent_at_ms: d.sent_at_ms,
            receipt: None,
            group_id: d.group_id,
            group: None,
            media_base: d.media_base.as_deref().unwrap_or_default().to_owned(),
        }
    }

    /// Names this box's media service (`own`) as the one holding the object, for a
    /// message whose media the service serves (a SHA-256) and that does not name one yet
    /// (a group copy keeps the sender's box's). The recipient's home signs the download URL
    /// for that service (`handlers/media.rs`).
    pub fn stamp_media_base(&mut self, own: Option<&str>) {
        let served = self.media.as_ref().is_some_and(|m| m.sha256.len() == 32);
        if let (true, true, Some(own)) = (served, self.media_base.is_empty(), own) {
            own.clone_into(&mut self.media_base);
        }
    }

    /// The `Nats-Msg-Id`: for a message one per (sender, device, client id, recipient); for
    /// a receipt one per (who, which message, which kind, for whom).
    pub fn msg_id(&self) -> String {
        if let Some(g) = &self.group {
            return g.msg_id(self);
        }
        if self.group_id != 0 {
            return format!(
                "c.{}.{}.{}.{}.{}",
                self.from, self.device, self.client_msg_id, self.group_id, self.to
            );
        }
        match &self.receipt {
            None => format!(
                "m.{}.{}.{}.{}",
                self.from, self.device, self.client_msg_id, self.to
            ),
            Some(r) => format!(
                "r.{}.{}.{}.{}.{}",
                r.by, r.server_msg_id, r.client_msg_id, r.kind, self.to
            ),
        }
    }

    /// Whether a peer's envelope may be handed to a shard.
    pub fn check(&self) -> bool {
        use proto::validate::is_e164;
        if !media_base_ok(&self.media_base) {
            return false;
        }
        if let Some(g) = &self.group {
            return g.check(self);
        }
        let phones = is_e164(&self.to) && (self.receipt.is_some() || is_e164(&self.from));
        let empty = self.body.is_empty() && self.media.is_none();
        phones
            && self.body.len() <= proto::limits::BODY_BYTES_MAX
            && (self.receipt.is_some() || !empty)
    }

    /// The delivery a shard stores for a message envelope. A group copy is stored as the
    /// group's home would have a member's home store it (its group id kept, so dedupe and
    /// the recipient see a group message; every outcome a `GroupCopyDone` naming the
    /// member, which the port settles on: `port.rs`). The group's box counted the copy
    /// done when this box's stream took it. `None` when a phone is not E.164 (what
    /// [`Envelope::check`] refuses: a checked envelope always has one).
    pub fn into_delivery(self) -> Option<Delivery> {
        Some(Delivery {
            to: Some(Phone::parse(&self.to)?),
            from: Phone::parse(&self.from)?,
            device: self.device,
            client_msg_id: self.client_msg_id,
            group_id: self.group_id,
            body: self.body.into(),
            media: self.media.map(Box::new),
            media_base: (!self.media_base.is_empty()).then(|| self.media_base.into()),
            sent_at_ms: self.sent_at_ms,
            reply: if self.group_id == 0 {
                ReplyTo::Sender
            } else {
                ReplyTo::Group
            },
        })
    }
}

/// Phone → home box id, as read from the homes bucket.
#[derive(Debug, Default)]
pub struct HomeCache {
    map: HashMap<String, String>,
}

impl HomeCache {
    /// The home of `phone`, if remembered.
    pub fn get(&self, phone: &str) -> Option<&str> {
        self.map.get(phone).map(String::as_str)
    }

    /// Remembers a home.
    pub fn put(&mut self, phone: String, home: String) {
        if self.map.len() >= HOME_CACHE_ENTRIES_MAX {
            self.map.clear();
        }
        self.map.insert(phone, home);
    }
}

/// Step 1: this box's stream (created if missing, replicated where it can be), the
/// consumer reading it, and the stream's lowest sequence once the consumer is made (every
/// message below it was acked: `in_order.rs` starts there).
pub async fn own_stream(
    js: &jetstream::Context,
    box_id: &str,
    replicas: usize,
) -> Result<(pull::Stream, u64), String> {
    let name = stream_name(box_id);
    let s = match js.get_stream(&name).await {
        Ok(s) => s,
        Err(_) => {
            let cfg = stream::Config {
                name: name.clone(),
                description: Some(format!("switchboard: messages for box {box_id}")),
                subjects: vec![subject(box_id)],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            };
            let first = js.create_stream(cfg.clone()).await;
            match first {
                Ok(s) => s,
                Err(_) => js
                    .create_stream(stream::Config {
                        num_replicas: 1,
                        ..cfg
                    })
                    .await
                    .map_err(|e| format!("stream {name}: {e}"))?,
            }
        }
    };
    // A new consumer for each start: the stream keeps only what no start acked (work-queue
    // retention), so a fresh one redelivers what the last run had taken and not acked at
    // once, instead of after its ack wait.
    let _ = s.delete_consumer(CONSUMER).await;
    let consumer: jetstream::consumer::Consumer<pull::Config> = s
        .get_or_create_consumer(
            CONSUMER,
            pull::Config {
                durable_name: Some(CONSUMER.into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_millis(INBOUND_ACK_WAIT_MS),
                max_ack_pending: INBOUND_PENDING_MAX as i64,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("consumer on {name}: {e}"))?;
    let first = s
        .get_info()
        .await
        .map_err(|e| format!("stream {name}: {e}"))?
        .state
        .first_sequence;
    let reader = consumer
        .messages()
        .await
        .map_err(|e| format!("reading {name}: {e}"))?;
    Ok((reader, first))
}

/// The sequence of the lowest message in box `box_id`'s stream at or after `seq`; `None`
/// when there is none (`in_order.rs`: a hole the stream no longer holds is skipped).
pub async fn lowest_at_or_after(
    js: &jetstream::Context,
    box_id: &str,
    seq: u64,
) -> Result<Option<u64>, String> {
    use jetstream::stream::RawMessageErrorKind;
    let name = stream_name(box_id);
    let s = js
        .get_stream(&name)
        .await
        .map_err(|e| format!("stream {name}: {e}"))?;
    let found = s
        .raw_message_builder()
        .sequence(seq)
        .next_by_subject(subject(box_id))
        .send()
        .await;
    match found {
        Ok(m) => Ok(Some(m.sequence)),
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(format!("stream {name} at {seq}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn delivery() -> Delivery {
        Delivery {
            to: Phone::parse("+15550000001"),
            from: Phone::parse("+15550000002").unwrap(),
            device: 7,
            client_msg_id: 42,
            group_id: 0,
            body: b"hi".to_vec().into(),
            media: None,
            media_base: None,
            sent_at_ms: 1,
            reply: ReplyTo::Sender,
        }
    }

    #[test]
    fn a_message_crosses_as_it_left() {
        let e = Envelope::message(&delivery());
        let back = Envelope::decode(e.encode_to_vec().as_slice()).unwrap();
        assert!(back.check());
        let d = back.into_delivery().unwrap();
        assert_eq!(
            (d.to, d.client_msg_id, d.device),
            (Phone::parse("+15550000001"), 42, 7)
        );
        assert_eq!(d.reply, ReplyTo::Sender);
    }

    #[test]
    fn a_peers_bad_envelope_is_refused() {
        let good = Envelope::message(&delivery());
        let mut e = good.clone();
        e.to = "nobody".into();
        assert!(!e.check());
        let mut e = good.clone();
        e.body = vec![0; proto::limits::BODY_BYTES_MAX + 1];
        assert!(!e.check());
        let mut e = good;
        e.body.clear();
        assert!(!e.check(), "an empty message");
    }

    #[test]
    fn receipts_for_one_sender_have_ids_of_their_own() {
        let receipt = |id, kind: proto::v1::ReceiptKind| Envelope {
            to: "+15550000002".into(),
            receipt: Some(proto::v1::Receipt {
                server_msg_id: id,
                client_msg_id: id,
                by: "+15550000001".into(),
                kind: kind as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let d1 = receipt(1, proto::v1::ReceiptKind::Delivered);
        let d2 = receipt(2, proto::v1::ReceiptKind::Delivered);
        let r1 = receipt(1, proto::v1::ReceiptKind::Read);
        assert_ne!(d1.msg_id(), d2.msg_id());
        assert_ne!(d1.msg_id(), r1.msg_id());
        assert_ne!(d1.msg_id(), Envelope::message(&delivery()).msg_id());
    }

    #[test]
    fn one_message_id_per_copy() {
        let a = Envelope::message(&delivery());
        let mut b = a.clone();
        b.to = "+15550000003".into();
        assert_ne!(a.msg_id(), b.msg_id());
        assert_eq!(a.msg_id(), Envelope::message(&delivery()).msg_id());
    }

    fn photo() -> proto::v1::Media {
        proto::v1::Media {
            sha256: vec![7; 32],
            size: 3,
            ..Default::default()
        }
    }

    #[test]
    fn the_box_holding_the_media_is_named_once_and_crosses_to_the_delivery() {
        let mut d = delivery();
        d.media = Some(Box::new(photo()));
        let mut e = Envelope::message(&d);
        e.stamp_media_base(Some("https://media-a.test:8443"));
        // A copy handed on by another box (a group's) keeps the first box's.
        e.stamp_media_base(Some("https://media-g.test"));
        let back = Envelope::decode(e.encode_to_vec().as_slice()).unwrap();
        assert!(back.check());
        let d = back.into_delivery().unwrap();
        assert_eq!(d.media_base.as_deref(), Some("https://media-a.test:8443"));
        assert_eq!(
            Envelope::message(&d).media_base,
            "https://media-a.test:8443"
        );

        // Text, or a plain link (no SHA-256), names no service; neither does a box without one.
        let mut text = Envelope::message(&delivery());
        text.stamp_media_base(Some("https://media-a.test"));
        assert_eq!(text.media_base, "");
        let mut link = delivery();
        link.media = Some(Box::new(proto::v1::Media::default()));
        let mut link = Envelope::message(&link);
        link.stamp_media_base(Some("https://media-a.test"));
        assert_eq!(link.media_base, "");
        assert_eq!(link.into_delivery().unwrap().media_base, None);
    }

    #[test]
    fn a_peers_media_base_must_be_a_plain_service_url() {
        for good in [
            "",
            "https://media.example.com",
            "http://127.0.0.1:8443",
            "https://example.com/media",
            "https://example.com/%7Emedia",
        ] {
            assert!(media_base_ok(good), "{good}");
        }
        let long = format!("https://{}", "a".repeat(MEDIA_BASE_URL_BYTES_MAX));
        for bad in [
            "ftp://x",
            "https://",
            "https:///path",
            "https://x/",
            "https://x?t=1",
            "https://x#f",
            "https://user@x",
            "https://x/a b",
            "https://x/\u{e9}",
            "javascript:alert(1)",
            long.as_str(),
        ] {
            assert!(!media_base_ok(bad), "{bad}");
        }
        let mut d = delivery();
        d.media = Some(Box::new(photo()));
        let mut e = Envelope::message(&d);
        e.media_base = "https://x?t=stolen".into();
        assert!(!e.check(), "an envelope naming a bad service is refused");
    }
}
