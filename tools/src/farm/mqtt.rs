//! MQTT 3.1.1 for the farm: a pure codec (no socket, no clock) that turns the farm's
//! [`ClientFrame`]s into MQTT packets and MQTT packets into the [`ServerFrame`]s the rest of
//! the farm already understands, so latency, loss and duplicates are measured by the same
//! code for every system.
//!
//! The mapping, one synthetic phone per connection:
//! 1. `LoadTestLogin { phone }` → CONNECT (client id `farm<digits>`, clean session, keep-alive
//!    from the heartbeat period) and SUBSCRIBE to the phone's own topic `u/<digits>` at the
//!    run's QoS. The SUBACK becomes `LoggedIn` (the user is reachable from then on); a
//!    refused CONNACK or SUBACK becomes an `Error`, which the farm counts as a refused login.
//! 2. `SendMessage { to, client_msg_id }` → PUBLISH to `to`'s topic. At QoS 1 the packet id
//!    is derived from client_msg_id ([`packet_id`]) and the PUBACK becomes `ServerAck` for that
//!    client_msg_id; at QoS 0 there is no acknowledgement (the driver counts a message as
//!    accepted once written, see `Spec::server_acks`).
//! 3. An incoming PUBLISH on our topic → `Message` whose `from` is the sender named in the
//!    body's stamp (MQTT carries no sender) and whose `server_msg_id` is the packet id; on
//!    another topic, `from` is empty so the farm counts it as foreign. The farm's `Ack` for
//!    it becomes a PUBACK (QoS 1 only).
//! 4. `Ping` → PINGREQ; PINGRESP → `Pong`. `Read` and group frames have no MQTT equivalent
//!    (groups are refused for this protocol by `Spec::check`).
//!
//! Safe because: packet ids are unique among a connection's unacknowledged publishes as long
//! as fewer than 65,535 are in flight (the farm's cap is `inflight_per_conn_max`, checked by
//! `Spec::check`); inbound packets are bounded by [`PACKET_BYTES_MAX`].

use std::collections::HashMap;

use proto::v1::{client_frame, ErrorCode, LoggedIn, Pong, ServerAck};
use proto::{ClientFrame, ServerFrame};

use super::wire::{stamped_message, WireError};

/// Largest inbound MQTT packet accepted (fixed header excluded), bytes.
pub const PACKET_BYTES_MAX: usize = 256 * 1024;
/// Packet id of the one SUBSCRIBE each connection sends.
const SUBSCRIBE_PACKET_ID: u16 = 1;

const CONNECT: u8 = 0x10;
const CONNACK: u8 = 0x20;
const PUBLISH: u8 = 0x30;
const PUBACK: u8 = 0x40;
const SUBSCRIBE: u8 = 0x82;
const SUBACK: u8 = 0x90;
const PINGREQ: u8 = 0xC0;
const PINGRESP: u8 = 0xD0;
const DISCONNECT: u8 = 0xE0;

/// The packet id a QoS 1 PUBLISH of `client_msg_id` (≥ 1) carries: 1..=65535, cycling.
pub fn packet_id(client_msg_id: u64) -> u16 {
    ((client_msg_id.saturating_sub(1) % 65_535) + 1) as u16
}

/// The topic of a phone number: `+15551234567` → `u/15551234567`.
pub fn topic_of(phone: &str) -> String {
    format!("u/{}", phone.trim_start_matches('+'))
}

/// One connection's MQTT state.
#[derive(Debug)]
pub struct MqttCodec {
    /// QoS of every PUBLISH and of the subscription (0 or 1).
    qos: u8,
    /// CONNECT keep-alive, seconds.
    keepalive_s: u16,
    /// Phone of user 0 minus one digit: `from` = `+{phone_base + sender}`.
    phone_base: u64,
    /// Our own topic, set by the login.
    topic: String,
    /// Unacknowledged publishes: packet id → client_msg_id (bounded by the in-flight cap).
    in_flight: HashMap<u16, u64>,
    /// Bytes not yet forming a whole packet (bounded by [`PACKET_BYTES_MAX`] + 5).
    rx: Vec<u8>,
}

impl MqttCodec {
    /// A codec for a connection publishing and subscribing at `qos`.
    pub fn new(qos: u8, keepalive_s: u16, phone_base: u64) -> MqttCodec {
        MqttCodec {
            qos: qos.min(1),
            keepalive_s,
            phone_base,
            topic: String::new(),
            in_flight: HashMap::new(),
            rx: Vec::new(),
        }
    }

    /// Appends the MQTT packets for `f` to `out` (nothing for frames without an equivalent).
    pub fn encode(&mut self, f: &ClientFrame, out: &mut Vec<u8>) {
        let Some(kind) = &f.kind else { return };
        match kind {
            client_frame::Kind::LoadTestLogin(l) => {
                self.topic = topic_of(&l.phone);
                let mut v = Vec::with_capacity(64);
                put_str(&mut v, "MQTT");
                v.push(4); // protocol level 3.1.1
                v.push(0x02); // clean session
                v.extend_from_slice(&self.keepalive_s.to_be_bytes());
                put_str(&mut v, &format!("farm{}", l.phone.trim_start_matches('+')));
                put_packet(out, CONNECT, &v);
                v.clear();
                v.extend_from_slice(&SUBSCRIBE_PACKET_ID.to_be_bytes());
                put_str(&mut v, &self.topic);
                v.push(self.qos);
                put_packet(out, SUBSCRIBE, &v);
            }
            client_frame::Kind::Send(m) => {
                let mut v = Vec::with_capacity(m.body.len() + 24);
                put_str(&mut v, &topic_of(&m.to));
                if self.qos == 1 {
                    let id = packet_id(m.client_msg_id);
                    v.extend_from_slice(&id.to_be_bytes());
                    self.in_flight.insert(id, m.client_msg_id);
                }
                v.extend_from_slice(&m.body);
                put_packet(out, PUBLISH | self.qos << 1, &v);
            }
            client_frame::Kind::Ack(a) if self.qos == 1 => {
                for &id in &a.server_msg_ids {
                    if (1..=u16::MAX as u64).contains(&id) {
                        put_packet(out, PUBACK, &(id as u16).to_be_bytes());
                    }
                }
            }
            client_frame::Kind::Ping(_) => put_packet(out, PINGREQ, &[]),
            _ => {}
        }
    }

    /// The packet a clean close sends first.
    pub fn goodbye(&self, out: &mut Vec<u8>) {
        put_packet(out, DISCONNECT, &[]);
    }

    /// Takes `bytes` from the socket and appends every whole packet's frame to `frames`.
    pub fn decode(&mut self, bytes: &[u8], frames: &mut Vec<ServerFrame>) -> Result<(), WireError> {
        let mut rx = std::mem::take(&mut self.rx);
        rx.extend_from_slice(bytes);
        let mut off = 0;
        let result = loop {
            match packet_at(&rx[off..]) {
                Ok(Some((header, body_at, len))) => {
                    let body = &rx[off + body_at..off + body_at + len];
                    match self.on_packet(header, body) {
                        Ok(f) => frames.extend(f),
                        Err(e) => break Err(e),
                    }
                    off += body_at + len;
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        rx.drain(..off);
        self.rx = rx;
        result
    }

    fn on_packet(&mut self, header: u8, body: &[u8]) -> Result<Option<ServerFrame>, WireError> {
        let refused = |detail: &str| -> ServerFrame {
            proto::v1::Error {
                code: ErrorCode::Unspecified as i32,
                detail: detail.into(),
                client_msg_id: 0,
                retry_after_ms: 0,
            }
            .into()
        };
        Ok(Some(match header & 0xF0 {
            CONNACK => match body.get(1) {
                Some(0) => return Ok(None),
                Some(_) => refused("mqtt: CONNACK refused"),
                None => return Err(WireError::Malformed("mqtt: short CONNACK")),
            },
            SUBACK => match body.get(2) {
                Some(0x80) => refused("mqtt: SUBACK refused"),
                Some(_) => LoggedIn {
                    user_id: 0,
                    queued: 0,
                }
                .into(),
                None => return Err(WireError::Malformed("mqtt: short SUBACK")),
            },
            PUBACK => {
                let id = u16_at(body, 0).ok_or(WireError::Malformed("mqtt: short PUBACK"))?;
                ServerAck {
                    client_msg_id: self.in_flight.remove(&id).unwrap_or(0),
                    server_msg_id: id as u64,
                    group_id: 0,
                }
                .into()
            }
            PUBLISH => self.on_publish(header, body)?,
            0xD0 if header == PINGRESP => Pong { nonce: 0 }.into(),
            _ => return Err(WireError::Malformed("mqtt: unexpected packet type")),
        }))
    }

    fn on_publish(&self, header: u8, body: &[u8]) -> Result<ServerFrame, WireError> {
        let short = || WireError::Malformed("mqtt: short PUBLISH");
        let topic_len = u16_at(body, 0).ok_or_else(short)? as usize;
        let topic = body.get(2..2 + topic_len).ok_or_else(short)?;
        let mut at = 2 + topic_len;
        let qos = (header >> 1) & 3;
        let id = if qos > 0 {
            at += 2;
            u16_at(body, at - 2).ok_or_else(short)? as u64
        } else {
            0
        };
        let payload = &body[at.min(body.len())..];
        let ours = topic == self.topic.as_bytes();
        Ok(stamped_message(payload, ours, self.phone_base, id).into())
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends a packet: fixed header byte, remaining length (variable-length), body.
fn put_packet(out: &mut Vec<u8>, header: u8, body: &[u8]) {
    out.push(header);
    let mut n = body.len();
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
}

/// The packet at the front of `b`: (header byte, offset of its body, body length), or None
/// if it is not all there yet.
fn packet_at(b: &[u8]) -> Result<Option<(u8, usize, usize)>, WireError> {
    let Some(&header) = b.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&byte) = b.get(1 + i) else {
            return Ok(None);
        };
        len |= ((byte & 0x7F) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            if len > PACKET_BYTES_MAX {
                return Err(WireError::TooLarge {
                    len,
                    max: PACKET_BYTES_MAX,
                });
            }
            let body_at = 2 + i;
            return Ok((b.len() >= body_at + len).then_some((header, body_at, len)));
        }
    }
    Err(WireError::Malformed("mqtt: remaining length over 4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::BodyStamp;
    use proto::v1::{server_frame::Kind, Ack, LoadTestLogin, Ping, SendMessage};

    fn login(c: &mut MqttCodec) -> Vec<u8> {
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
        out
    }

    #[test]
    fn login_is_connect_then_subscribe_to_own_topic() {
        let mut c = MqttCodec::new(1, 120, 15_550_000_000);
        let out = login(&mut c);
        let (h, at, len) = packet_at(&out).unwrap().unwrap();
        assert_eq!(h, CONNECT);
        assert_eq!(&out[at..at + 6], b"\x00\x04MQTT");
        assert_eq!(out[at + 6], 4);
        assert_eq!(u16_at(&out, at + 8), Some(120));
        let rest = &out[at + len..];
        let (h, at, len) = packet_at(rest).unwrap().unwrap();
        assert_eq!(h, SUBSCRIBE);
        let sub = &rest[at..at + len];
        assert_eq!(&sub[4..4 + 13], b"u/15550000007");
        assert_eq!(sub[sub.len() - 1], 1, "requested QoS");
    }

    #[test]
    fn publish_round_trips_through_puback_and_delivery() {
        let mut c = MqttCodec::new(1, 60, 15_550_000_000);
        login(&mut c);
        let body = BodyStamp {
            sender: 3,
            client_msg_id: 70_000,
            sent_at_us: 1,
        }
        .encode(200);
        let mut out = Vec::new();
        c.encode(
            &SendMessage {
                to: "+15550000007".into(),
                client_msg_id: 70_000,
                body: body.clone().into(),
                media: None,
            }
            .into(),
            &mut out,
        );
        assert_eq!(out[0], PUBLISH | 2);
        assert!(out[1] & 0x80 != 0, "a 200-byte body needs two length bytes");
        // The broker's PUBACK for it, then the same bytes delivered to us, split mid-packet.
        let mut inbound = vec![PUBACK, 2];
        inbound.extend_from_slice(&packet_id(70_000).to_be_bytes());
        inbound.extend_from_slice(&out);
        let mut frames = Vec::new();
        c.decode(&inbound[..7], &mut frames).unwrap();
        assert_eq!(frames.len(), 1);
        c.decode(&inbound[7..], &mut frames).unwrap();
        assert_eq!(frames.len(), 2);
        match frames[0].kind.clone().unwrap() {
            Kind::ServerAck(a) => assert_eq!(a.client_msg_id, 70_000),
            k => panic!("{k:?}"),
        }
        match frames[1].kind.clone().unwrap() {
            Kind::Message(m) => {
                assert_eq!(m.from, "+15550000003");
                assert_eq!(m.body, body);
                assert_eq!(m.server_msg_id, packet_id(70_000) as u64);
            }
            k => panic!("{k:?}"),
        }
        let mut ack = Vec::new();
        c.encode(
            &Ack {
                server_msg_ids: vec![4465],
            }
            .into(),
            &mut ack,
        );
        assert_eq!(ack, vec![PUBACK, 2, 0x11, 0x71]);
    }

    #[test]
    fn qos0_has_no_packet_id_and_no_puback() {
        let mut c = MqttCodec::new(0, 60, 1);
        let mut out = Vec::new();
        c.encode(
            &SendMessage {
                to: "+5".into(),
                client_msg_id: 1,
                body: vec![1, 2].into(),
                media: None,
            }
            .into(),
            &mut out,
        );
        assert_eq!(out, vec![PUBLISH, 7, 0, 3, b'u', b'/', b'5', 1, 2]);
        out.clear();
        c.encode(
            &Ack {
                server_msg_ids: vec![1],
            }
            .into(),
            &mut out,
        );
        c.encode(&Ping { nonce: 1 }.into(), &mut out);
        assert_eq!(out, vec![PINGREQ, 0]);
    }

    #[test]
    fn refusals_oversize_and_foreign_topics_are_told() {
        let mut c = MqttCodec::new(1, 60, 1);
        login(&mut c);
        let mut frames = Vec::new();
        c.decode(&[CONNACK, 2, 0, 5, SUBACK, 3, 0, 1, 0x80], &mut frames)
            .unwrap();
        assert!(frames
            .iter()
            .all(|f| matches!(f.kind, Some(Kind::Error(_)))));
        assert_eq!(frames.len(), 2);
        let mut other = Vec::new();
        put_packet(
            &mut other,
            PUBLISH,
            b"\x00\x03u/9hello-not-a-stamp-but-long-enough!!",
        );
        frames.clear();
        c.decode(&other, &mut frames).unwrap();
        match frames[0].kind.clone().unwrap() {
            Kind::Message(m) => assert_eq!(m.from, ""),
            k => panic!("{k:?}"),
        }
        let err = c.decode(&[PUBLISH, 0xFF, 0xFF, 0xFF, 0x7F], &mut frames);
        assert!(matches!(err, Err(WireError::TooLarge { .. })), "{err:?}");
    }

    #[test]
    fn packet_ids_cycle_and_never_are_zero() {
        assert_eq!(packet_id(1), 1);
        assert_eq!(packet_id(65_535), 65_535);
        assert_eq!(packet_id(65_536), 1);
    }
}
