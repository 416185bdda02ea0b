//! Groups: a group of 50 fans out to every member, each copy acked and receipted on its
//! own; admin rights and the member limit hold; presence reaches subscribers.

use crate::support;

use proto::v1::{client_frame, server_frame, ErrorCode, ReceiptKind};
use support::TestServer;

#[test]
fn group_of_50_fans_out_across_shards() {
    let server = TestServer::start(4, false);
    let phones: Vec<String> = (0..50).map(|i| format!("+1555100{i:04}")).collect();
    let mut clients: Vec<_> = phones
        .iter()
        .map(|p| {
            let mut c = server.client();
            c.load_test_login(p);
            c.group_privacy(proto::v1::GroupAddPolicy::Everyone);
            c
        })
        .collect();
    let admin = &phones[0];
    clients[0].send(client_frame::Kind::GroupCreate(proto::v1::GroupCreate {
        client_req_id: 9,
        name: "fifty".into(),
        members: phones[1..].to_vec(),
    }));
    let group_id = match clients[0].recv() {
        server_frame::Kind::GroupCreated(g) => {
            assert_eq!(g.client_req_id, 9);
            g.group_id
        }
        other => panic!("expected GroupCreated, got {other:?}"),
    };
    clients[0].send(client_frame::Kind::GroupSend(proto::v1::GroupSend {
        group_id,
        client_msg_id: 1,
        body: b"hello all".to_vec(),
        media: None,
    }));
    match clients[0].recv() {
        server_frame::Kind::ServerAck(a) => {
            assert_eq!((a.client_msg_id, a.group_id), (1, group_id))
        }
        other => panic!("expected the group ServerAck, got {other:?}"),
    }
    for c in clients[1..].iter_mut() {
        let m = c.expect_message();
        assert_eq!(
            (m.from.as_str(), m.group_id, m.body.as_slice()),
            (admin.as_str(), group_id, &b"hello all"[..])
        );
        c.ack(vec![m.server_msg_id]);
    }
    let receipts = clients[0].recv_n(49);
    let mut by: Vec<String> = receipts
        .into_iter()
        .map(|f| match f {
            server_frame::Kind::Receipt(r) => {
                assert_eq!(
                    (r.kind, r.group_id),
                    (ReceiptKind::Delivered as i32, group_id)
                );
                r.by
            }
            other => panic!("expected a receipt, got {other:?}"),
        })
        .collect();
    by.sort();
    assert_eq!(by, phones[1..].to_vec(), "one receipt per member copy");

    // Only the admin changes members; a member may list them.
    clients[5].send(client_frame::Kind::GroupAdd(proto::v1::GroupAdd {
        group_id,
        members: vec!["+15552220000".into()],
    }));
    assert_eq!(
        clients[5].expect_error().code,
        ErrorCode::NotGroupAdmin as i32
    );
    clients[5].send(client_frame::Kind::GroupMembers(
        proto::v1::GroupMembersRequest { group_id },
    ));
    match clients[5].recv() {
        server_frame::Kind::GroupMembers(g) => assert_eq!(g.members.len(), 50),
        other => panic!("expected GroupMembers, got {other:?}"),
    }
    // Numbers nobody has are not added: the same refusal as someone who does not accept.
    let extra: Vec<String> = (0..300).map(|i| format!("+1555300{i:04}")).collect();
    clients[0].send(client_frame::Kind::GroupAdd(proto::v1::GroupAdd {
        group_id,
        members: extra[..200].to_vec(),
    }));
    assert_eq!(
        clients[0].expect_error().code,
        ErrorCode::GroupAddRefused as i32
    );
    // The limit: 256 members at most, checked before anyone is asked.
    clients[0].send(client_frame::Kind::GroupAdd(proto::v1::GroupAdd {
        group_id,
        members: extra.clone(),
    }));
    let e = loop {
        match clients[0].recv() {
            server_frame::Kind::Error(e) if e.code != ErrorCode::GroupAddRefused as i32 => break e,
            _ => continue,
        }
    };
    assert_eq!(e.code, ErrorCode::GroupTooLarge as i32);
}

#[test]
fn presence_reaches_subscribers() {
    let server = TestServer::start(2, false);
    let mut watcher = server.client();
    watcher.load_test_login("+15554440001");
    let mut friend = server.client();
    friend.load_test_login("+15554440002");
    // Presence goes to mutual contacts only: the friend follows the watcher first (and sees
    // nothing yet, the watcher not following back).
    friend.send(client_frame::Kind::PresenceSubscribe(
        proto::v1::PresenceSubscribe {
            contacts: vec!["+15554440001".into()],
        },
    ));
    match friend.recv() {
        server_frame::Kind::Presence(p) => assert!(p.hidden && !p.online),
        other => panic!("expected hidden presence, got {other:?}"),
    }
    watcher.send(client_frame::Kind::PresenceSubscribe(
        proto::v1::PresenceSubscribe {
            contacts: vec!["+15554440002".into()],
        },
    ));
    match watcher.recv() {
        server_frame::Kind::Presence(p) => assert!(p.online && !p.hidden),
        other => panic!("expected presence, got {other:?}"),
    }
    drop(friend);
    match watcher.recv() {
        server_frame::Kind::Presence(p) => {
            assert!(!p.online);
            assert!(p.last_seen_ms > 0);
        }
        other => panic!("expected presence, got {other:?}"),
    }
}
