//! Unit tests of `port.rs`: parking, answers, deadlines, messages from other boxes held in
//! their senders' order.

use super::*;
use crate::cluster::Answer;
use std::sync::atomic::Ordering;

fn login(phone: &str) -> ClientFrame {
    ClientFrame {
        kind: Some(client_frame::Kind::Login(proto::v1::Login {
            phone: phone.into(),
            ..Default::default()
        })),
    }
}

fn register(phone: &str) -> ClientFrame {
    ClientFrame {
        kind: Some(client_frame::Kind::Register(proto::v1::Register {
            phone: phone.into(),
            ..Default::default()
        })),
    }
}

fn question(link: &ClusterLink) -> Question {
    match link.to_gateway[1].pop() {
        Some(Up::Place(q)) => q,
        other => panic!("expected a question, got {other:?}"),
    }
}

fn placed(a: Answer) -> Down {
    Down::Placed(a)
}

fn conn(n: u32) -> ConnId {
    ConnId::new(n, 0)
}

fn port() -> (Arc<ClusterLink>, Port) {
    let link = Arc::new(ClusterLink::new("a".into(), 2).unwrap());
    (link.clone(), Port::new(link, 1))
}

#[test]
fn each_answer_releases_its_frame_once() {
    let (link, mut p) = port();
    p.ask(0, conn(1), login("+15550000001"), None).unwrap();
    p.ask(0, conn(2), register("+15550000002"), None).unwrap();
    let q1 = question(&link);
    let q2 = question(&link);
    assert!(!q1.create && q2.create);
    let there = Placement::There("b:5222".into());
    link.to_shard[1]
        .push(placed(Answer {
            token: q2.token,
            placement: there.clone(),
        }))
        .unwrap();
    link.to_shard[1]
        .push(placed(Answer {
            token: q1.token,
            placement: Placement::Here,
        }))
        .unwrap();
    // A second answer for the same token is ignored.
    link.to_shard[1]
        .push(placed(Answer {
            token: q1.token,
            placement: there,
        }))
        .unwrap();
    let (out, _) = p.poll(1);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].0.conn, conn(2));
    assert_eq!(out[0].1, Release::Redirect("b:5222".into()));
    assert_eq!(out[1].0.conn, conn(1));
    assert_eq!(out[1].1, Release::Serve);
    assert_eq!(p.waiting(), 0);
}

#[test]
fn a_frame_not_answered_in_time_is_refused_and_its_late_answer_ignored() {
    let (link, mut p) = port();
    p.ask(0, conn(1), login("+15550000001"), None).unwrap();
    assert!(p.poll(ANSWER_WAIT_MAX_MS - 1).0.is_empty());
    let (out, _) = p.poll(ANSWER_WAIT_MAX_MS);
    assert_eq!(out.len(), 1);
    assert!(matches!(
        out[0].1,
        Release::Refuse(ErrorCode::ClusterUnavailable, _)
    ));
    let q = question(&link);
    link.to_shard[1]
        .push(placed(Answer {
            token: q.token,
            placement: Placement::Here,
        }))
        .unwrap();
    assert!(p.poll(ANSWER_WAIT_MAX_MS + 1).0.is_empty());
}

#[test]
fn alone_a_box_serves_logins_and_refuses_sign_ups() {
    let (link, mut p) = port();
    link.status.alone.store(true, Ordering::Relaxed);
    assert_eq!(
        p.ask(0, conn(1), login("+15550000001"), None),
        Err(Now::Release(Release::Serve))
    );
    assert!(matches!(
        p.ask(0, conn(2), register("+15550000001"), None),
        Err(Now::Release(Release::Refuse(
            ErrorCode::ClusterUnavailable,
            _
        )))
    ));
    assert!(link.to_gateway[1].is_empty());
}

#[test]
fn a_full_queue_is_busy_not_a_wait() {
    let (_link, mut p) = port();
    for i in 0..PORT_WAITING_MAX {
        p.ask(0, conn(i as u32), login("+15550000001"), None)
            .unwrap();
    }
    assert_eq!(
        p.ask(0, conn(9), login("+15550000001"), None),
        Err(Now::Busy)
    );
}

fn ph(s: &str) -> Phone {
    Phone::parse(s).unwrap()
}

fn msg(cmid: u64) -> Box<Delivery> {
    Box::new(Delivery {
        to: Phone::parse("+15550000001"),
        from: ph("+15550000002"),
        device: 1,
        client_msg_id: cmid,
        group_id: 0,
        body: b"x".to_vec().into(),
        media: None,
        media_base: None,
        sent_at_ms: 0,
        reply: messaging::state::mesh_msg::ReplyTo::Sender,
    })
}

fn inbound(p: &mut Port, link: &ClusterLink, token: u64, cmid: u64) -> Vec<Event> {
    let delivery = msg(cmid);
    link.to_shard[1]
        .push(Down::Deliver { token, delivery })
        .unwrap();
    p.poll(0).1
}

#[test]
fn a_refused_message_is_held_and_its_senders_later_ones_wait_behind_it() {
    let (link, mut p) = port();
    let ev = inbound(&mut p, &link, 10, 1);
    assert!(matches!(ev.as_slice(), [Event::Inbound { token: 10, .. }]));
    // The state machines refuse it while it is handed over.
    let busy = ShardMsg::ToUser {
        user: ph("+15550000002"),
        frame: server_frame::Kind::Busy(proto::v1::Busy {
            retry_after_ms: 1,
            client_msg_id: 1,
        }),
    };
    assert!(p.settle(&busy));
    assert!(p.after_store(10, msg(1), false));
    assert!(link.to_gateway[1].is_empty(), "not nak'd: held");
    // The sender's next message waits behind it.
    assert!(inbound(&mut p, &link, 11, 2).is_empty());
    let (t, d) = p.pop_held(ph("+15550000002")).unwrap();
    assert_eq!((t, d.client_msg_id), (10, 1));
    let stored = ShardMsg::ToUser {
        user: ph("+15550000002"),
        frame: server_frame::Kind::ServerAck(proto::v1::ServerAck {
            client_msg_id: 1,
            server_msg_id: 5,
            group_id: 0,
        }),
    };
    assert!(p.settle(&stored));
    assert!(!p.after_store(10, msg(1), true));
    assert!(matches!(
        link.to_gateway[1].pop(),
        Some(Up::Done {
            token: 10,
            stored: true
        })
    ));
    let (t, d) = p.pop_held(ph("+15550000002")).unwrap();
    assert_eq!((t, d.client_msg_id), (11, 2));
    assert!(p.held_senders().is_empty());
    // Refused again when retried: back at the front, ahead of a newer one.
    let busy2 = ShardMsg::ToUser {
        user: ph("+15550000002"),
        frame: server_frame::Kind::Busy(proto::v1::Busy {
            retry_after_ms: 1,
            client_msg_id: 2,
        }),
    };
    assert!(p.settle(&busy2));
    assert!(p.after_store(11, msg(2), true));
    assert!(p.behind_held(12, msg(3)).is_none());
    assert_eq!(p.pop_held(ph("+15550000002")).unwrap().1.client_msg_id, 2);
    assert_eq!(p.pop_held(ph("+15550000002")).unwrap().1.client_msg_id, 3);
}

/// One group message has a copy per member: two members of this shard each get theirs,
/// and each copy is acked to JetStream by its own member's answer.
#[test]
fn copies_of_one_group_message_for_two_members_are_told_apart() {
    let (link, mut p) = port();
    let copy = |token, to: &str| {
        let mut d = msg(1);
        d.group_id = 9;
        d.to = Phone::parse(to);
        link.to_shard[1]
            .push(Down::Deliver { token, delivery: d })
            .unwrap();
    };
    copy(20, "+15550000001");
    copy(21, "+15550000003");
    let ev = p.poll(0).1;
    assert!(
        matches!(
            ev.as_slice(),
            [Event::InboundCopy { .. }, Event::InboundCopy { .. }]
        ),
        "{ev:?}"
    );
    let done = |member: &str| ShardMsg::GroupCopyDone {
        group_id: 9,
        sender: "+15550000002".into(),
        client_msg_id: 1,
        member: messaging::state::home::Phone::parse(member),
    };
    assert!(p.settle(&done("+15550000003")));
    assert!(matches!(
        link.to_gateway[1].pop(),
        Some(Up::Done {
            token: 21,
            stored: true
        })
    ));
    assert!(!p.settle(&done("+15550000003")), "answered once");
    assert!(p.settle(&done("+15550000001")));
    assert!(matches!(
        link.to_gateway[1].pop(),
        Some(Up::Done { token: 20, .. })
    ));
}
