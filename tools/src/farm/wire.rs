//! Which protocol a farm connection speaks: Switchboard's frames, MQTT 3.1.1 or NATS. Every
//! protocol is presented to the rest of the farm as Switchboard [`ClientFrame`]s and
//! [`ServerFrame`]s (see [`super::mqtt`] and [`super::nats`] for the mappings), so the
//! workload, the ledger and the latency histograms are the same code for every system.

use proto::codec::{decode_server, encode_frame};
use proto::{ClientFrame, FrameBuffer, FrameError, ServerFrame};

use crate::workload::{Proto, Spec};

use super::mqtt::MqttCodec;
use super::nats::NatsCodec;

/// Bytes from the server that are not valid in the connection's protocol.
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum WireError {
    /// A Switchboard frame failed to decode.
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    /// An MQTT packet or NATS operation is malformed.
    #[error("{0}")]
    Malformed(&'static str),
    /// An MQTT packet or NATS line/payload is longer than the farm accepts.
    #[error("{len} bytes exceed the limit of {max}")]
    TooLarge {
        /// Bytes announced or buffered.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// One connection's protocol state.
#[derive(Debug)]
pub enum Wire {
    /// Switchboard frames; frames split across reads wait in the buffer.
    Switchboard(FrameBuffer),
    /// MQTT 3.1.1.
    Mqtt(MqttCodec),
    /// NATS text protocol.
    Nats(NatsCodec),
}

impl Wire {
    /// The protocol `spec` asks for, fresh for a new connection.
    pub fn for_spec(spec: &Spec) -> Wire {
        match spec.proto {
            Proto::Switchboard => Wire::Switchboard(FrameBuffer::new()),
            Proto::Mqtt => Wire::Mqtt(MqttCodec::new(
                spec.qos,
                mqtt_keepalive_s(spec.ping_interval_s),
                spec.phone_base,
            )),
            Proto::Nats => Wire::Nats(NatsCodec::new(spec.phone_base)),
        }
    }

    /// True when TLS starts only after the server's plaintext greeting line: nats-server
    /// sends `INFO {…}` in the clear, then expects the client's TLS handshake (TLS-first,
    /// `handshake_first`, came with nats-server 2.10).
    pub fn tls_after_greeting(&self) -> bool {
        matches!(self, Wire::Nats(_))
    }

    /// Appends `f`'s bytes to `out`.
    pub fn encode(&mut self, f: &ClientFrame, out: &mut Vec<u8>) {
        match self {
            // Invariant: the farm only builds frames far below FRAME_BYTES_MAX (body_bytes is
            // checked against BODY_BYTES_MAX, ack batches against ACK_IDS_PER_FRAME_MAX).
            Wire::Switchboard(_) => encode_frame(f, out).expect("farm frames fit in one frame"),
            Wire::Mqtt(c) => c.encode(f, out),
            Wire::Nats(c) => c.encode(f, out),
        }
    }

    /// Bytes a clean close sends before FIN (MQTT DISCONNECT).
    pub fn goodbye(&self, out: &mut Vec<u8>) {
        if let Wire::Mqtt(c) = self {
            c.goodbye(out);
        }
    }

    /// Takes bytes read from the socket; appends decoded frames to `frames` and the bytes the
    /// protocol must answer with on its own (NATS PONG) to `replies`.
    pub fn decode(
        &mut self,
        bytes: &[u8],
        frames: &mut Vec<ServerFrame>,
        replies: &mut Vec<u8>,
    ) -> Result<(), WireError> {
        match self {
            Wire::Switchboard(rx) => {
                rx.extend(bytes);
                while let Some(payload) = rx.next_frame()? {
                    frames.push(decode_server(payload)?);
                }
                Ok(())
            }
            Wire::Mqtt(c) => c.decode(bytes, frames),
            Wire::Nats(c) => c.decode(bytes, frames, replies),
        }
    }
}

/// MQTT keep-alive for a heartbeat period: twice the period (the farm's first ping comes
/// after up to 1.5 periods, and brokers allow 1.5 × keep-alive), at most 65,535 s.
pub fn mqtt_keepalive_s(ping_interval_s: f64) -> u16 {
    (ping_interval_s * 2.0).ceil().clamp(1.0, u16::MAX as f64) as u16
}

/// A message a broker delivered, as a Switchboard `Message`: `payload` is the farm's body
/// stamp; on the user's own topic (`ours`) the stamp names the sender and its
/// `client_msg_id`, elsewhere it counts as foreign (no sender).
pub(super) fn stamped_message(
    payload: &[u8],
    ours: bool,
    phone_base: u64,
    server_msg_id: u64,
) -> proto::v1::Message {
    let (from, client_msg_id) = match crate::workload::BodyStamp::decode(payload) {
        Some(s) if ours => (format!("+{}", phone_base + s.sender), s.client_msg_id),
        _ => (String::new(), 0),
    };
    proto::v1::Message {
        from,
        server_msg_id,
        sent_at_ms: 0,
        body: payload.to_vec(),
        media: None,
        group_id: 0,
        client_msg_id,
    }
}
