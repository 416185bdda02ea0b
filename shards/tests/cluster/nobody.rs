//! A 1:1 send to a number with no home on any box is answered as a single box answers a
//! send to a number nobody has: it goes where hashing would put the number, whose box
//! stores nothing and answers; the sender's `ServerAck` is a publish ack like any other
//! cross-box message's (the same again for a retry), never the old id 0.

use proto::v1::server_frame;

use crate::nats::Nats;
use crate::placement::{phones_homed_on, two_boxes};
use crate::support::Client;

fn ack_id(c: &mut Client, client_msg_id: u64) -> u64 {
    loop {
        match c.recv() {
            server_frame::Kind::Presence(_) => continue,
            server_frame::Kind::ServerAck(a) => {
                assert_eq!((a.client_msg_id, a.group_id), (client_msg_id, 0));
                return a.server_msg_id;
            }
            other => panic!("expected ServerAck {client_msg_id}, got {other:?}"),
        }
    }
}

#[test]
fn a_send_to_a_number_with_no_home_anywhere_looks_like_any_other() {
    let nats = Nats::start();
    let (a, b) = two_boxes(&nats);
    let alice = &phones_homed_on("a", 1, 6_000_000)[0];
    let bob = &phones_homed_on("b", 1, 6_000_000)[0];
    b.client().load_test_login(bob);
    let mut at_a = a.client();
    at_a.load_test_login(alice);
    // Numbers nobody registered, whichever box hashing would pick for them.
    let nobody_b = &phones_homed_on("b", 2, 6_100_000)[1];
    let nobody_a = &phones_homed_on("a", 2, 6_100_000)[1];

    at_a.send_text(bob, 1, "to a user of box b");
    let real = ack_id(&mut at_a, 1);
    at_a.send_text(nobody_b, 2, "to nobody");
    let first = ack_id(&mut at_a, 2);
    at_a.send_text(nobody_a, 3, "to nobody either");
    let other = ack_id(&mut at_a, 3);
    assert!(
        real != 0 && first != 0 && other != 0,
        "no id 0: {real} {first} {other}"
    );
    assert_ne!(first, other);
    // A retry gets the same answer, as a stored message's retry does.
    at_a.send_text(nobody_b, 2, "to nobody");
    assert_eq!(ack_id(&mut at_a, 2), first);
    a.wait_stat("cluster_messages_to_nobody_total", 3);

    // The number signs up later: what is sent to it then reaches it (its first messages,
    // sent while nobody had it, are not: as in a single box).
    let mut newcomer = b.client();
    assert_eq!(newcomer.load_test_login(nobody_b), 0);
    at_a.send_text(nobody_b, 4, "welcome");
    assert_ne!(ack_id(&mut at_a, 4), 0);
    let m = newcomer.expect_message();
    assert_eq!((m.from.as_str(), m.client_msg_id), (alice.as_str(), 4));
}
