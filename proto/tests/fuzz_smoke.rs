//! Bounded smoke runs of the fuzz entry points (`proto::fuzzing`, the same code the cargo-fuzz
//! targets in `fuzz/` run): random bytes, and valid frames with random mutations, which
//! reach far deeper into the decoder than pure noise. Seeded xorshift: deterministic.

use proto::v1::client_frame::Kind;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seeds() -> Vec<Vec<u8>> {
    use proto::v1::*;
    let frames: Vec<Kind> = vec![
        Kind::Ping(Ping { nonce: 1 }),
        Kind::Login(Login {
            protocol_version: 1,
            phone: "+15551234567".into(),
            device_key: vec![7; 32],
        }),
        Kind::Send(SendMessage {
            to: "+15551234568".into(),
            client_msg_id: 9,
            body: b"hello".to_vec().into(),
            media: Some(Box::new(Media {
                url: "https://x/y".into(),
                mime: "image/png".into(),
                size: 10,
                thumbnail: vec![1, 2, 3],
                sha256: vec![4; 32],
                ..Default::default()
            })),
        }),
        Kind::Ack(Ack {
            server_msg_ids: vec![1, 2, 300, u64::MAX],
        }),
        Kind::GroupCreate(GroupCreate {
            client_req_id: 1,
            name: "g".into(),
            members: vec!["+15551234569".into(); 3],
        }),
        Kind::PresenceSubscribe(PresenceSubscribe {
            contacts: vec!["+15551234560".into()],
        }),
    ];
    frames
        .into_iter()
        .map(|k| {
            let mut out = Vec::new();
            proto::encode_frame(&ClientFrame { kind: Some(k) }, &mut out).unwrap();
            out
        })
        .collect()
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for _ in 0..20_000 {
        let len = rng.below(256) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Half the time, a plausible header so split_frame hands over a payload.
        if len >= 4 && rng.below(2) == 0 {
            data[..4].copy_from_slice(&((len - 4) as u32).to_be_bytes());
        }
        proto::fuzzing::frames(&data);
        proto::fuzzing::frame_payload(&data);
    }
}

#[test]
fn mutated_valid_frames_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let seeds = seeds();
    for _ in 0..20_000 {
        let mut data = seeds[rng.below(seeds.len() as u64) as usize].clone();
        for _ in 0..=rng.below(4) {
            match rng.below(4) {
                0 | 1 if data.is_empty() => {}
                0 => {
                    let i = rng.below(data.len() as u64) as usize;
                    data[i] ^= 1 << rng.below(8);
                }
                1 => {
                    let i = rng.below(data.len() as u64) as usize;
                    data[i] = rng.next() as u8;
                }
                2 => data.truncate(rng.below(data.len() as u64 + 1) as usize),
                _ => {
                    let other = &seeds[rng.below(seeds.len() as u64) as usize];
                    data.extend_from_slice(other);
                }
            }
        }
        proto::fuzzing::frames(&data);
        if data.len() > 4 {
            proto::fuzzing::frame_payload(&data[4..]);
        }
    }
}
