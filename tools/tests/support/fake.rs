//! A tiny in-memory stand-in for the messaging service, plaintext only, so the farm's
//! message paths (login, send, ServerAck, delivery, Ack, receipts, groups, offline queues
//! across a storm) can be tested before the real service lands. It follows the protocol in
//! the issue; it is not a model of the real server's performance or durability.
//!
//! One router thread owns all state (no locks); one reader thread per connection forwards
//! decoded frames to it over a channel; the router writes answers with blocking writes.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};

use proto::codec::{decode_client, encode_frame};
use proto::v1::{client_frame::Kind as C, *};
use proto::{FrameBuffer, ServerFrame};

enum Ev {
    Open(u64, TcpStream),
    Frame(u64, ClientFrame),
    Closed(u64),
}

/// Starts the fake server on 127.0.0.1:0; it runs until the process ends.
pub fn start() -> SocketAddr {
    start_boxes(1)[0]
}

/// Starts a fake cluster of `n` boxes sharing one router: a phone's home is a hash of
/// its number modulo `n`, and a login on another box is answered with `Redirect` to the home's address
/// (as a real cluster does). The boxes run until the process ends.
pub fn start_boxes(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let boxes: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let (tx, rx) = mpsc::channel();
    for (b, l) in listeners.into_iter().enumerate() {
        let tx = tx.clone();
        std::thread::spawn(move || accept(b as u64, l, tx));
    }
    let router = Router {
        boxes: boxes.clone(),
        ..Router::default()
    };
    std::thread::spawn(move || router.run(rx));
    boxes
}

/// Connection ids carry their box in the bits above this shift.
const BOX_SHIFT: u32 = 40;

fn accept(b: u64, l: TcpListener, tx: Sender<Ev>) {
    for (id, s) in l.incoming().enumerate() {
        let Ok(s) = s else { continue };
        let id = (b << BOX_SHIFT) | (id as u64 + 1);
        let Ok(w) = s.try_clone() else { continue };
        if tx.send(Ev::Open(id, w)).is_err() {
            return;
        }
        let tx = tx.clone();
        std::thread::spawn(move || read_loop(id, s, tx));
    }
}

fn read_loop(id: u64, mut s: TcpStream, tx: Sender<Ev>) {
    let mut fb = FrameBuffer::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        fb.extend(&buf[..n]);
        while let Ok(Some(p)) = fb.next_frame() {
            match decode_client(p) {
                Ok(f) => {
                    let _ = tx.send(Ev::Frame(id, f));
                }
                Err(_) => break,
            }
        }
    }
    let _ = tx.send(Ev::Closed(id));
}

/// A phone's home box: a hash of its number (any stable choice would do; a hash, so that
/// round-robin first connections land on a home box only about 1/n of the time).
fn home_box(phone: &str, boxes: usize) -> usize {
    let n: u64 = phone.trim_start_matches('+').parse().unwrap_or(0);
    ((n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % boxes.max(1) as u64) as usize
}

#[derive(Default)]
struct Router {
    conns: HashMap<u64, (TcpStream, Option<String>)>,
    online: HashMap<String, u64>,
    /// Per phone: frames not yet acked, by id.
    queues: HashMap<String, Vec<(u64, ServerFrame)>>,
    /// server_msg_id → (sender, client_msg_id, group).
    origin: HashMap<u64, (String, u64, u64)>,
    dedupe: HashMap<(String, u64), u64>,
    groups: HashMap<u64, Vec<String>>,
    next_id: u64,
    /// Every box's address (one for a lone box).
    boxes: Vec<SocketAddr>,
}

impl Router {
    fn run(mut self, rx: Receiver<Ev>) {
        for ev in rx {
            match ev {
                Ev::Open(id, s) => {
                    self.conns.insert(id, (s, None));
                }
                Ev::Closed(id) => {
                    if let Some((_, Some(p))) = self.conns.remove(&id) {
                        if self.online.get(&p) == Some(&id) {
                            self.online.remove(&p);
                        }
                    }
                }
                Ev::Frame(id, f) => self.on_frame(id, f),
            }
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn write(&mut self, conn: u64, f: ServerFrame) {
        let mut out = Vec::new();
        encode_frame(&f, &mut out).unwrap();
        if let Some((s, _)) = self.conns.get_mut(&conn) {
            let _ = s.write_all(&out);
        }
    }

    fn push(&mut self, phone: &str, id: u64, f: ServerFrame) {
        self.queues
            .entry(phone.into())
            .or_default()
            .push((id, f.clone()));
        if let Some(&c) = self.online.get(phone) {
            self.write(c, f);
        }
    }

    fn on_frame(&mut self, conn: u64, f: ClientFrame) {
        let me = self.conns.get(&conn).and_then(|c| c.1.clone());
        match (f.kind.unwrap(), me) {
            (C::Ping(p), _) => self.write(conn, Pong { nonce: p.nonce }.into()),
            (C::LoadTestLogin(l), _) => {
                let home = home_box(&l.phone, self.boxes.len());
                if self.boxes.len() > 1 && conn >> BOX_SHIFT != home as u64 {
                    let addr = self.boxes[home].to_string();
                    self.write(conn, Redirect { addr }.into());
                    return;
                }
                if let Some(old) = self.online.insert(l.phone.clone(), conn) {
                    let _ = old;
                }
                self.conns.get_mut(&conn).unwrap().1 = Some(l.phone.clone());
                let q = self.queues.entry(l.phone.clone()).or_default().clone();
                self.write(
                    conn,
                    LoggedIn {
                        user_id: 1,
                        queued: q.len() as u32,
                    }
                    .into(),
                );
                for (_, f) in q {
                    self.write(conn, f);
                }
            }
            (C::Send(s), Some(me)) => {
                let key = (me.clone(), s.client_msg_id);
                let sid = match self.dedupe.get(&key) {
                    Some(&sid) => sid,
                    None => {
                        let sid = self.id();
                        self.dedupe.insert(key, sid);
                        self.origin.insert(sid, (me.clone(), s.client_msg_id, 0));
                        let m = Message {
                            from: me.clone(),
                            server_msg_id: sid,
                            sent_at_ms: 0,
                            body: s.body.into(),
                            media: None,
                            group_id: 0,
                            client_msg_id: s.client_msg_id,
                        };
                        self.push(&s.to, sid, m.into());
                        sid
                    }
                };
                self.write(
                    conn,
                    ServerAck {
                        client_msg_id: s.client_msg_id,
                        server_msg_id: sid,
                        group_id: 0,
                    }
                    .into(),
                );
            }
            (C::GroupCreate(g), Some(me)) => {
                let gid = self.id();
                let mut members = g.members;
                members.push(me);
                self.groups.insert(gid, members);
                self.write(
                    conn,
                    GroupCreated {
                        client_req_id: g.client_req_id,
                        group_id: gid,
                    }
                    .into(),
                );
            }
            (C::GroupSend(s), Some(me)) => {
                let members = self.groups.get(&s.group_id).cloned().unwrap_or_default();
                let mut first = 0;
                for m in members.iter().filter(|m| **m != me) {
                    let sid = self.id();
                    if first == 0 {
                        first = sid;
                    }
                    self.origin
                        .insert(sid, (me.clone(), s.client_msg_id, s.group_id));
                    let msg = Message {
                        from: me.clone(),
                        server_msg_id: sid,
                        sent_at_ms: 0,
                        body: s.body.clone(),
                        media: None,
                        group_id: s.group_id,
                        client_msg_id: s.client_msg_id,
                    };
                    self.push(m, sid, msg.into());
                }
                self.write(
                    conn,
                    ServerAck {
                        client_msg_id: s.client_msg_id,
                        server_msg_id: first,
                        group_id: s.group_id,
                    }
                    .into(),
                );
            }
            (C::Ack(a), Some(me)) => {
                for id in a.server_msg_ids {
                    let q = self.queues.entry(me.clone()).or_default();
                    let Some(pos) = q.iter().position(|(i, _)| *i == id) else {
                        continue;
                    };
                    let (_, f) = q.remove(pos);
                    if let Some(proto::v1::server_frame::Kind::Message(_)) = f.kind {
                        self.receipt(&me, id, ReceiptKind::Delivered);
                    }
                }
            }
            (C::Read(r), Some(me)) => {
                for id in r.server_msg_ids {
                    self.receipt(&me, id, ReceiptKind::Read);
                }
            }
            // Everyone may add anyone here.
            (C::GroupPrivacy(_), Some(_)) => {}
            (_, _) => self.write(
                conn,
                proto::error_frame(ErrorCode::UnexpectedFrame, "fake", 0),
            ),
        }
    }

    fn receipt(&mut self, by: &str, sid: u64, kind: ReceiptKind) {
        let Some((sender, cmid, group)) = self.origin.get(&sid).cloned() else {
            return;
        };
        let rid = self.id();
        let r = Receipt {
            server_msg_id: sid,
            client_msg_id: cmid,
            by: by.into(),
            kind: kind as i32,
            group_id: group,
            receipt_id: rid,
        };
        self.push(&sender, rid, r.into());
    }
}
