//! Groups across boxes: a group lives on its creator's box; members homed on two other
//! boxes are asked, added, removed, get each message once, send to the group themselves,
//! and the sender gets its `ServerAck` and the receipts as in a single box.

use proto::v1::{client_frame, server_frame, ErrorCode, GroupAddPolicy, ReceiptKind};

use crate::nats::{Box, Nats};
use crate::support::Client;

const ADV_C: &str = "box-c.test:5222";

/// `n` phones homed on `id` when boxes a, b and c are live.
fn homed_on(id: &str, n: usize, from: u64) -> Vec<String> {
    (from..)
        .map(|i| format!("+1555{i:07}"))
        .filter(|p| shards::cluster::placement::choose(p, ["a", "b", "c"]) == Some(id))
        .take(n)
        .collect()
}

fn three_boxes(nats: &Nats) -> [Box; 3] {
    let a = Box::start(&nats.url, "a", crate::placement::ADV_A, &[]);
    let b = Box::start(&nats.url, "b", crate::placement::ADV_B, &[]);
    let c = Box::start(&nats.url, "c", ADV_C, &[]);
    for x in [&a, &b, &c] {
        x.wait_stat("cluster_members", 3);
    }
    [a, b, c]
}

/// The next frame that is not a presence update.
fn next(c: &mut Client) -> server_frame::Kind {
    loop {
        match c.recv() {
            server_frame::Kind::Presence(_) => continue,
            other => return other,
        }
    }
}

fn group_send(c: &mut Client, group_id: u64, client_msg_id: u64, body: &str) {
    c.send(client_frame::Kind::GroupSend(proto::v1::GroupSend {
        group_id,
        client_msg_id,
        body: body.as_bytes().to_vec(),
        media: None,
    }));
}

fn expect_group_ack(c: &mut Client, group_id: u64, client_msg_id: u64) {
    match next(c) {
        server_frame::Kind::ServerAck(a) => {
            assert_eq!((a.group_id, a.client_msg_id), (group_id, client_msg_id));
            assert_ne!(a.server_msg_id, 0);
        }
        other => panic!("expected the group ServerAck {client_msg_id}, got {other:?}"),
    }
}

fn expect_group_message(c: &mut Client, group_id: u64, from: &str, body: &str) -> u64 {
    match next(c) {
        server_frame::Kind::Message(m) => {
            assert_eq!(
                (m.group_id, m.from.as_str(), m.body.as_slice()),
                (group_id, from, body.as_bytes())
            );
            m.server_msg_id
        }
        other => panic!("expected {body:?} from {from}, got {other:?}"),
    }
}

fn expect_updated(c: &mut Client, group_id: u64, mut want: Vec<&str>) {
    match next(c) {
        server_frame::Kind::GroupUpdated(u) => {
            assert_eq!(u.group_id, group_id);
            let mut got: Vec<&str> = u.members.iter().map(String::as_str).collect();
            got.sort();
            want.sort();
            assert_eq!(got, want);
        }
        other => panic!("expected GroupUpdated, got {other:?}"),
    }
}

/// Nothing more has come (a ping's pong is next): no copy twice.
fn nothing_more(c: &mut Client) {
    let extra: Vec<_> = c
        .sync()
        .into_iter()
        .filter(|f| !matches!(f, server_frame::Kind::Presence(_)))
        .collect();
    assert!(extra.is_empty(), "more than expected: {extra:?}");
}

#[test]
fn a_group_with_members_on_three_boxes_works_as_on_one() {
    let nats = Nats::start();
    let [a, b, c] = three_boxes(&nats);
    let alice = &homed_on("a", 2, 5_000_000)[0];
    let dave = &homed_on("a", 2, 5_000_000)[1];
    let bob = &homed_on("b", 1, 5_000_000)[0];
    let carol = &homed_on("c", 1, 5_000_000)[0];
    let mut at_a = a.client();
    at_a.load_test_login(alice);
    let mut dave_c = a.client();
    dave_c.load_test_login(dave);
    let mut bob_c = b.client();
    bob_c.load_test_login(bob);
    let mut carol_c = c.client();
    carol_c.load_test_login(carol);
    for m in [&mut dave_c, &mut bob_c, &mut carol_c] {
        m.group_privacy(GroupAddPolicy::Everyone);
    }

    // Created on alice's box with members of all three: each home box is asked.
    at_a.send(client_frame::Kind::GroupCreate(proto::v1::GroupCreate {
        client_req_id: 1,
        name: "three boxes".into(),
        members: vec![bob.clone(), carol.clone(), dave.clone()],
    }));
    let group_id = match next(&mut at_a) {
        server_frame::Kind::GroupCreated(g) => g.group_id,
        other => panic!("expected GroupCreated, got {other:?}"),
    };

    // A send from the group's box: every member gets it once, the sender its ack, then
    // receipts from members of other boxes.
    group_send(&mut at_a, group_id, 1, "hello all");
    expect_group_ack(&mut at_a, group_id, 1);
    let on_b = expect_group_message(&mut bob_c, group_id, alice, "hello all");
    let on_c = expect_group_message(&mut carol_c, group_id, alice, "hello all");
    let on_a = expect_group_message(&mut dave_c, group_id, alice, "hello all");
    bob_c.ack(vec![on_b]);
    carol_c.read(vec![on_c]);
    dave_c.ack(vec![on_a]);
    let mut receipts = Vec::new();
    while receipts.len() < 4 {
        match next(&mut at_a) {
            server_frame::Kind::Receipt(r) => {
                assert_eq!((r.client_msg_id, r.group_id), (1, group_id));
                receipts.push((r.by.clone(), ReceiptKind::try_from(r.kind).unwrap()));
            }
            other => panic!("expected receipts, got {other:?}"),
        }
    }
    receipts.sort();
    let mut want = vec![
        (bob.clone(), ReceiptKind::Delivered),
        (carol.clone(), ReceiptKind::Delivered),
        (carol.clone(), ReceiptKind::Read),
        (dave.clone(), ReceiptKind::Delivered),
    ];
    want.sort();
    assert_eq!(receipts, want);

    // A member of another box sends to the group: its box hands it to the group's box.
    group_send(&mut bob_c, group_id, 1, "from b");
    expect_group_ack(&mut bob_c, group_id, 1);
    expect_group_message(&mut at_a, group_id, bob, "from b");
    expect_group_message(&mut carol_c, group_id, bob, "from b");
    expect_group_message(&mut dave_c, group_id, bob, "from b");

    // Members, asked from another box.
    carol_c.send(client_frame::Kind::GroupMembers(
        proto::v1::GroupMembersRequest { group_id },
    ));
    match next(&mut carol_c) {
        server_frame::Kind::GroupMembers(m) => {
            assert_eq!((m.admin.as_str(), m.members.len()), (alice.as_str(), 4))
        }
        other => panic!("expected GroupMembers, got {other:?}"),
    }

    // Removed across boxes: everyone hears, the removed member included; it can no
    // longer send.
    at_a.send(client_frame::Kind::GroupRemove(proto::v1::GroupRemove {
        group_id,
        members: vec![carol.clone()],
    }));
    let after = vec![alice.as_str(), bob.as_str(), dave.as_str()];
    for m in [&mut at_a, &mut bob_c, &mut carol_c, &mut dave_c] {
        expect_updated(m, group_id, after.clone());
    }
    group_send(&mut carol_c, group_id, 2, "still here?");
    let e = match next(&mut carol_c) {
        server_frame::Kind::Error(e) => e,
        other => panic!("expected NOT_GROUP_MEMBER, got {other:?}"),
    };
    assert_eq!(
        (e.code, e.client_msg_id),
        (ErrorCode::NotGroupMember as i32, 2)
    );

    // Added back across boxes.
    at_a.send(client_frame::Kind::GroupAdd(proto::v1::GroupAdd {
        group_id,
        members: vec![carol.clone()],
    }));
    let all = vec![alice.as_str(), bob.as_str(), carol.as_str(), dave.as_str()];
    for m in [&mut at_a, &mut bob_c, &mut carol_c, &mut dave_c] {
        expect_updated(m, group_id, all.clone());
    }
    group_send(&mut carol_c, group_id, 3, "back");
    expect_group_ack(&mut carol_c, group_id, 3);
    for (m, _) in [(&mut at_a, 0), (&mut bob_c, 0), (&mut dave_c, 0)] {
        expect_group_message(m, group_id, carol, "back");
    }

    // A member of another box leaves by itself.
    bob_c.send(client_frame::Kind::GroupRemove(proto::v1::GroupRemove {
        group_id,
        members: vec![bob.clone()],
    }));
    let left = vec![alice.as_str(), carol.as_str(), dave.as_str()];
    for m in [&mut at_a, &mut bob_c, &mut carol_c, &mut dave_c] {
        expect_updated(m, group_id, left.clone());
    }

    for m in [&mut at_a, &mut bob_c, &mut carol_c, &mut dave_c] {
        nothing_more(m);
    }
    for x in [&a, &b, &c] {
        assert_eq!(x.stat("cluster_messages_in_bad_total"), Some(0));
        assert_eq!(x.stat("cluster_group_clashes_total"), Some(0));
        // Every box both sent group messages to another and took some in.
        assert!(x.stat("cluster_group_out_total") > Some(0));
        assert!(x.stat("cluster_group_in_total") > Some(0));
    }
    // Copies for members of b and c crossed as messages, each stored there once: b got
    // "hello all" and "back", c "hello all" and "from b".
    b.wait_stat("cluster_messages_in_total", 2);
    c.wait_stat("cluster_messages_in_total", 2);
    crate::nats::every_cluster_metric_is_documented(a.admin);
}

/// A group frame for a group no box has is answered as a single box answers it.
#[test]
fn a_send_to_a_group_no_box_has_is_unknown() {
    let nats = Nats::start();
    let [a, _b, _c] = three_boxes(&nats);
    let alice = &homed_on("a", 1, 5_100_000)[0];
    let mut at_a = a.client();
    at_a.load_test_login(alice);
    group_send(&mut at_a, 42, 9, "anyone?");
    let e = match next(&mut at_a) {
        server_frame::Kind::Error(e) => e,
        other => panic!("expected UNKNOWN_GROUP, got {other:?}"),
    };
    assert_eq!(
        (e.code, e.client_msg_id),
        (ErrorCode::UnknownGroup as i32, 9)
    );
    a.wait_stat("cluster_group_undelivered_total", 1);
}

/// Three members on three boxes send to their group at once, without waiting: every
/// member gets every message of the others once, each sender's in the order sent, and
/// every sender all its acks.
#[test]
fn members_of_three_boxes_sending_at_once_each_get_every_message_once_in_order() {
    const N: u64 = 60;
    let nats = Nats::start();
    let [a, b, c] = three_boxes(&nats);
    let alice = &homed_on("a", 1, 5_200_000)[0];
    let bob = &homed_on("b", 1, 5_200_000)[0];
    let carol = &homed_on("c", 1, 5_200_000)[0];
    let mut clients = [a.client(), b.client(), c.client()];
    let phones = [alice, bob, carol];
    for (cl, p) in clients.iter_mut().zip(phones) {
        cl.load_test_login(p);
    }
    for cl in &mut clients[1..] {
        cl.group_privacy(GroupAddPolicy::Everyone);
    }
    clients[0].send(client_frame::Kind::GroupCreate(proto::v1::GroupCreate {
        client_req_id: 1,
        name: "busy".into(),
        members: vec![bob.clone(), carol.clone()],
    }));
    let group_id = match next(&mut clients[0]) {
        server_frame::Kind::GroupCreated(g) => g.group_id,
        other => panic!("expected GroupCreated, got {other:?}"),
    };
    for id in 1..=N {
        for cl in &mut clients {
            group_send(cl, group_id, id, &format!("m{id}"));
        }
    }
    for (i, cl) in clients.iter_mut().enumerate() {
        let mut acks = 0;
        let mut last: std::collections::HashMap<String, u64> = Default::default();
        let mut got = 0;
        while acks < N || got < 2 * N {
            match next(cl) {
                server_frame::Kind::ServerAck(a) => {
                    assert_eq!(a.group_id, group_id);
                    acks += 1;
                }
                server_frame::Kind::Message(m) => {
                    let prev = last.insert(m.from.clone(), m.client_msg_id).unwrap_or(0);
                    assert_eq!(
                        m.client_msg_id,
                        prev + 1,
                        "{} from {}: in order, once",
                        phones[i],
                        m.from
                    );
                    got += 1;
                    cl.ack(vec![m.server_msg_id]);
                }
                server_frame::Kind::Receipt(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(acks, N);
    }
}

/// A member's box SIGKILLed while the group sends: the sender's acks still come (the
/// member's box's stream holds the copies), and the member gets each message once when
/// its box is back.
#[test]
fn a_members_box_killed_while_the_group_sends_gets_each_message_once_when_back() {
    const N: u64 = 30;
    let nats = Nats::start();
    let [a, mut b, _c] = three_boxes(&nats);
    let alice = &homed_on("a", 1, 5_300_000)[0];
    let bob = &homed_on("b", 1, 5_300_000)[0];
    let mut at_a = a.client();
    at_a.load_test_login(alice);
    let mut bob_c = b.client();
    bob_c.load_test_login(bob);
    bob_c.group_privacy(GroupAddPolicy::Everyone);
    at_a.send(client_frame::Kind::GroupCreate(proto::v1::GroupCreate {
        client_req_id: 1,
        name: "g".into(),
        members: vec![bob.clone()],
    }));
    let group_id = match next(&mut at_a) {
        server_frame::Kind::GroupCreated(g) => g.group_id,
        other => panic!("expected GroupCreated, got {other:?}"),
    };
    drop(bob_c);
    b.child.kill().unwrap(); // SIGKILL
    b.child.wait().unwrap();
    for id in 1..=N {
        group_send(&mut at_a, group_id, id, &format!("m{id}"));
        expect_group_ack(&mut at_a, group_id, id);
    }
    let b = Box::start_in(b.data.clone(), &nats.url, "b", crate::placement::ADV_B, &[]);
    let mut bob_c = b.client();
    bob_c.load_test_login(bob);
    let mut seen = Vec::new();
    while seen.len() < N as usize {
        let Some(f) = bob_c.try_recv() else {
            panic!("acknowledged group messages never arrived: got {seen:?}");
        };
        if let server_frame::Kind::Message(m) = f {
            assert_eq!(m.group_id, group_id);
            seen.push(m.client_msg_id);
            bob_c.ack(vec![m.server_msg_id]);
        }
    }
    assert_eq!(seen, (1..=N).collect::<Vec<_>>(), "each once, in order");
    nothing_more(&mut bob_c);
}

/// A member who is away with their queue full of one sender's group messages: as in a
/// single box, further copies for them are dropped (counted done), and the sender's copies
/// for another member homed on the same shard of the same box keep coming.
#[test]
fn a_full_queue_on_another_box_drops_its_copies_and_stalls_no_other_member() {
    let n = messaging::state::limits::QUEUE_MESSAGES_PER_SENDER_MAX as u64 + 20;
    let nats = Nats::start();
    let [a, b, _c] = three_boxes(&nats);
    let alice = &homed_on("a", 1, 5_400_000)[0];
    let on_b = homed_on("b", 40, 5_400_000);
    let shard = |p: &String| messaging::state::home::home_of_phone(p, 2).0;
    let away = &on_b[0];
    let here = on_b[1..]
        .iter()
        .find(|p| shard(p) == shard(away))
        .expect("two phones on one shard of b");
    let mut at_a = a.client();
    at_a.load_test_login(alice);
    let mut away_c = b.client();
    away_c.load_test_login(away);
    away_c.group_privacy(GroupAddPolicy::Everyone);
    let mut here_c = b.client();
    here_c.load_test_login(here);
    here_c.group_privacy(GroupAddPolicy::Everyone);
    at_a.send(client_frame::Kind::GroupCreate(proto::v1::GroupCreate {
        client_req_id: 1,
        name: "g".into(),
        members: vec![away.clone(), here.clone()],
    }));
    let group_id = match next(&mut at_a) {
        server_frame::Kind::GroupCreated(g) => g.group_id,
        other => panic!("expected GroupCreated, got {other:?}"),
    };
    drop(away_c); // offline: its queue fills
    for id in 1..=n {
        group_send(&mut at_a, group_id, id, &format!("m{id}"));
    }
    let mut got = 0;
    while got < n {
        let m = here_c.expect_message();
        got += 1;
        assert_eq!(m.client_msg_id, got, "in order, once");
        here_c.ack(vec![m.server_msg_id]);
    }
    let mut acks = 0;
    while acks < n {
        match next(&mut at_a) {
            server_frame::Kind::ServerAck(_) => acks += 1,
            server_frame::Kind::Receipt(_) => {}
            other => panic!("expected acks, got {other:?}"),
        }
    }
    // The copies past the sender's share were answered, not held.
    b.wait_stat("cluster_inbound_held", 0);
}

/// Consent across boxes: a member who keeps the default (CONTACTS) is added by an admin of
/// another box whom they subscribe to, and refused, as on one box, by one they do not.
#[test]
fn a_contacts_only_member_of_another_box_is_added_by_a_contact_only() {
    let nats = Nats::start();
    let [a, b, _c] = three_boxes(&nats);
    let admins = homed_on("a", 2, 5_500_000);
    let (friend, stranger) = (&admins[0], &admins[1]);
    let member = &homed_on("b", 1, 5_500_000)[0];
    let mut member_c = b.client();
    member_c.load_test_login(member);
    member_c.send(client_frame::Kind::PresenceSubscribe(
        proto::v1::PresenceSubscribe {
            contacts: vec![friend.clone()],
        },
    ));
    member_c.sync();
    for (admin, accepted) in [(friend, true), (stranger, false)] {
        let mut c = a.client();
        c.load_test_login(admin);
        c.send(client_frame::Kind::GroupCreate(proto::v1::GroupCreate {
            client_req_id: 1,
            name: "g".into(),
            members: vec![member.clone()],
        }));
        let mut refused = false;
        let group_id = loop {
            match next(&mut c) {
                server_frame::Kind::GroupCreated(g) => break g.group_id,
                server_frame::Kind::Error(e) => {
                    assert_eq!(e.code, ErrorCode::GroupAddRefused as i32);
                    assert!(e.detail.contains(member.as_str()), "{}", e.detail);
                    refused = true;
                }
                other => panic!("expected GroupCreated, got {other:?}"),
            }
        };
        assert_eq!(refused, !accepted);
        c.send(client_frame::Kind::GroupMembers(
            proto::v1::GroupMembersRequest { group_id },
        ));
        match next(&mut c) {
            server_frame::Kind::GroupMembers(m) => {
                assert_eq!(m.members.contains(member), accepted, "{:?}", m.members)
            }
            other => panic!("expected GroupMembers, got {other:?}"),
        }
    }
}

/// A group id another box claimed first in `switchboard_groups` (ids are issued per box):
/// asking about a member of another box is refused, as for a number nobody has, counted,
/// and the group stays as it was.
#[test]
fn a_group_id_another_box_claimed_first_refuses_members_elsewhere() {
    let nats = Nats::start();
    let [a, b, _c] = three_boxes(&nats);
    let alice = &homed_on("a", 1, 5_600_000)[0];
    let bob = &homed_on("b", 1, 5_600_000)[0];
    let mut bob_c = b.client();
    bob_c.load_test_login(bob);
    bob_c.group_privacy(GroupAddPolicy::Everyone);
    let mut at_a = a.client();
    at_a.load_test_login(alice);
    // A group of alice alone: nothing crosses, no entry.
    at_a.send(client_frame::Kind::GroupCreate(proto::v1::GroupCreate {
        client_req_id: 1,
        name: "g".into(),
        members: vec![],
    }));
    let group_id = match next(&mut at_a) {
        server_frame::Kind::GroupCreated(g) => g.group_id,
        other => panic!("expected GroupCreated, got {other:?}"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(nats.url.as_str()).await.unwrap();
        let kv = async_nats::jetstream::new(client)
            .get_key_value(shards::cluster::groups::GROUPS_BUCKET)
            .await
            .unwrap();
        kv.create(group_id.to_string(), "c".into()).await.unwrap();
    });
    at_a.send(client_frame::Kind::GroupAdd(proto::v1::GroupAdd {
        group_id,
        members: vec![bob.clone()],
    }));
    let e = match next(&mut at_a) {
        server_frame::Kind::Error(e) => e,
        other => panic!("expected GROUP_ADD_REFUSED, got {other:?}"),
    };
    assert_eq!(e.code, ErrorCode::GroupAddRefused as i32);
    assert!(e.detail.contains(bob.as_str()), "{}", e.detail);
    a.wait_stat("cluster_group_clashes_total", 1);
    at_a.send(client_frame::Kind::GroupMembers(
        proto::v1::GroupMembersRequest { group_id },
    ));
    match next(&mut at_a) {
        server_frame::Kind::GroupMembers(m) => assert_eq!(m.members, vec![alice.clone()]),
        other => panic!("expected GroupMembers, got {other:?}"),
    }
    nothing_more(&mut bob_c);
}

/// The group's box SIGKILLed: a member of another box sends to the group meanwhile; the
/// send waits in the group's box's stream, and once that box is back the members get it
/// and the sender its ack.
#[test]
fn a_send_while_the_groups_box_is_down_is_fanned_out_when_it_is_back() {
    let nats = Nats::start();
    let [mut a, b, c] = three_boxes(&nats);
    let alice = &homed_on("a", 1, 5_700_000)[0];
    let bob = &homed_on("b", 1, 5_700_000)[0];
    let carol = &homed_on("c", 1, 5_700_000)[0];
    let mut at_a = a.client();
    at_a.load_test_login(alice);
    let mut bob_c = b.client();
    bob_c.load_test_login(bob);
    let mut carol_c = c.client();
    carol_c.load_test_login(carol);
    for m in [&mut bob_c, &mut carol_c] {
        m.group_privacy(GroupAddPolicy::Everyone);
    }
    at_a.send(client_frame::Kind::GroupCreate(proto::v1::GroupCreate {
        client_req_id: 1,
        name: "g".into(),
        members: vec![bob.clone(), carol.clone()],
    }));
    let group_id = match next(&mut at_a) {
        server_frame::Kind::GroupCreated(g) => g.group_id,
        other => panic!("expected GroupCreated, got {other:?}"),
    };
    drop(at_a);
    a.child.kill().unwrap(); // SIGKILL
    a.child.wait().unwrap();
    group_send(&mut bob_c, group_id, 1, "anyone home?");
    // In a's stream (b's first group message was its answer to the creation's ask).
    b.wait_stat("cluster_group_out_total", 2);
    let a = Box::start_in(a.data.clone(), &nats.url, "a", crate::placement::ADV_A, &[]);
    expect_group_ack(&mut bob_c, group_id, 1);
    expect_group_message(&mut carol_c, group_id, bob, "anyone home?");
    let mut at_a = a.client();
    at_a.load_test_login(alice);
    expect_group_message(&mut at_a, group_id, bob, "anyone home?");
    for m in [&mut at_a, &mut bob_c, &mut carol_c] {
        nothing_more(m);
    }
}
