//! Presence across boxes: a subscriber homed on box a and a contact homed on box b see each
//! other's online/offline and last seen as on one box, under the same consent rules
//! (CONTACTS needs mutual following; NOBODY hides; EVERYONE shows), and a stranger, a
//! number nobody has or a contact who hides gets the same `hidden` answer as on one box.

use proto::v1::{client_frame, server_frame, PresenceVisibility};

use crate::nats::{Box, Nats};
use crate::support::Client;

/// `n` phones homed on `id` when boxes a and b are live.
fn homed_on(id: &str, n: usize, from: u64) -> Vec<String> {
    (from..)
        .map(|i| format!("+1555{i:07}"))
        .filter(|p| shards::cluster::placement::choose(p, ["a", "b"]) == Some(id))
        .take(n)
        .collect()
}

fn two_boxes(nats: &Nats) -> [Box; 2] {
    let a = Box::start(&nats.url, "a", crate::placement::ADV_A, &[]);
    let b = Box::start(&nats.url, "b", crate::placement::ADV_B, &[]);
    for x in [&a, &b] {
        x.wait_stat("cluster_members", 2);
    }
    [a, b]
}

fn login(at: &Box, phone: &str) -> Client {
    let mut c = at.client();
    c.load_test_login(phone);
    c
}

fn subscribe(c: &mut Client, contacts: &[&String]) {
    c.send(client_frame::Kind::PresenceSubscribe(
        proto::v1::PresenceSubscribe {
            contacts: contacts.iter().map(|s| s.to_string()).collect(),
        },
    ));
}

fn privacy(c: &mut Client, visibility: PresenceVisibility) {
    c.send(client_frame::Kind::PresencePrivacy(
        proto::v1::PresencePrivacy {
            visibility: visibility as i32,
        },
    ));
    c.sync();
}

/// The next presence frame about `phone` (other frames are skipped).
fn presence_of(c: &mut Client, phone: &str) -> proto::v1::Presence {
    loop {
        match c.recv() {
            server_frame::Kind::Presence(p) if p.phone == phone => return p,
            _ => continue,
        }
    }
}

/// Presence frames about `phone` until one shows it online (the answer to a re-ask may
/// come first); the read's deadline fails the test if none does.
fn until_online(c: &mut Client, phone: &str) {
    while !presence_of(c, phone).online {}
}

fn hidden(phone: &str) -> proto::v1::Presence {
    proto::v1::Presence {
        phone: phone.to_string(),
        online: false,
        last_seen_ms: 0,
        hidden: true,
    }
}

/// S (box a) and C (box b) follow each other: each sees the other online, S sees C go
/// offline with a last seen, and online again when C is back.
#[test]
fn mutual_contacts_on_two_boxes_see_each_others_presence() {
    let nats = Nats::start();
    let [a, b] = two_boxes(&nats);
    let s = &homed_on("a", 1, 6_000_000)[0];
    let c = &homed_on("b", 1, 6_000_000)[0];
    let mut s_c = login(&a, s);
    let mut c_c = login(&b, c);

    // C does not follow S yet: S hears what any stranger hears, from C's box.
    subscribe(&mut s_c, &[c]);
    assert_eq!(presence_of(&mut s_c, c), hidden(c));

    // C follows S back: mutual now, both ways.
    subscribe(&mut c_c, &[s]);
    let seen_by_c = presence_of(&mut c_c, s);
    assert!(seen_by_c.online && !seen_by_c.hidden, "{seen_by_c:?}");
    let seen_by_s = presence_of(&mut s_c, c);
    assert!(seen_by_s.online && !seen_by_s.hidden, "{seen_by_s:?}");

    // C goes offline: S sees it, with a last seen.
    drop(c_c);
    let gone = presence_of(&mut s_c, c);
    assert!(!gone.online && !gone.hidden, "{gone:?}");
    assert_ne!(gone.last_seen_ms, 0, "offline comes with a last seen");

    // And back online.
    let _c_again = login(&b, c);
    let back = presence_of(&mut s_c, c);
    assert!(back.online && !back.hidden, "{back:?}");
}

/// A contact of box b who chooses NOBODY is hidden from a mutual contact of box a: the
/// next subscription is answered `hidden`, as on one box; EVERYONE shows it again.
#[test]
fn nobody_hides_a_contact_from_a_subscriber_on_another_box() {
    let nats = Nats::start();
    let [a, b] = two_boxes(&nats);
    let s = &homed_on("a", 1, 6_100_000)[0];
    let c = &homed_on("b", 1, 6_100_000)[0];
    let mut c_c = login(&b, c);
    subscribe(&mut c_c, &[s]);
    c_c.sync();
    let mut s_c = login(&a, s);
    subscribe(&mut s_c, &[c]);
    let seen = presence_of(&mut s_c, c);
    assert!(seen.online && !seen.hidden, "mutual contacts: {seen:?}");

    privacy(&mut c_c, PresenceVisibility::Nobody);
    // A new session of S subscribes again (a renewal in the same session asks nothing).
    drop(s_c);
    let mut s_c = login(&a, s);
    subscribe(&mut s_c, &[c]);
    assert_eq!(presence_of(&mut s_c, c), hidden(c), "NOBODY hides C");

    privacy(&mut c_c, PresenceVisibility::Everyone);
    drop(s_c);
    let mut s_c = login(&a, s);
    subscribe(&mut s_c, &[c]);
    let seen = presence_of(&mut s_c, c);
    assert!(seen.online && !seen.hidden, "EVERYONE shows C: {seen:?}");
}

/// Whom S may not see, S hears the same answer about, wherever they are: a user of
/// another box who does not follow S, a user of S's own box who does not, and a number
/// nobody has anywhere; a user of another box who shows to EVERYONE is seen.
#[test]
fn a_stranger_gets_the_same_hidden_answer_across_boxes_as_on_one() {
    let nats = Nats::start();
    let [a, b] = two_boxes(&nats);
    let on_a = homed_on("a", 2, 6_200_000);
    let on_b = homed_on("b", 2, 6_200_000);
    let (s, local) = (&on_a[0], &on_a[1]);
    let (far, open) = (&on_b[0], &on_b[1]);
    let nobody = "+15559999001".to_string();
    let _local_c = login(&a, local);
    let _far_c = login(&b, far);
    let mut open_c = login(&b, open);
    privacy(&mut open_c, PresenceVisibility::Everyone);

    let mut s_c = login(&a, s);
    subscribe(&mut s_c, &[local, far, &nobody, open]);
    // The answers come from three places, in no set order.
    let mut got = std::collections::HashMap::new();
    while got.len() < 4 {
        if let server_frame::Kind::Presence(p) = s_c.recv() {
            got.insert(p.phone.clone(), p);
        }
    }
    assert_eq!(got[local.as_str()], hidden(local), "on one box");
    assert_eq!(got[far.as_str()], hidden(far), "across boxes");
    assert_eq!(got[nobody.as_str()], hidden(&nobody), "nobody's");
    let seen = &got[open.as_str()];
    assert!(
        seen.online && !seen.hidden,
        "EVERYONE across boxes: {seen:?}"
    );
}

/// Boxes a and b; S (of a, phones from `from`) and C (of b) follow each other and S sees C
/// online; then C's box is SIGKILLed (no offline update leaves it). Returns NATS, box a, the
/// killed box b (its data directory is kept), S, C and S's connection.
fn contact_seen_then_box_killed(from: u64) -> (Nats, Box, Box, String, String, Client) {
    let nats = Nats::start();
    let [a, mut b] = two_boxes(&nats);
    let s = homed_on("a", 1, from).remove(0);
    let c = homed_on("b", 1, from).remove(0);
    let mut c_c = login(&b, &c);
    subscribe(&mut c_c, &[&s]);
    c_c.sync();
    let mut s_c = login(&a, &s);
    subscribe(&mut s_c, &[&c]);
    let seen = presence_of(&mut s_c, &c);
    assert!(seen.online && !seen.hidden, "mutual contacts: {seen:?}");

    b.child.kill().unwrap();
    b.child.wait().unwrap();
    drop(c_c);
    (nats, a, b, s, c, s_c)
}

/// C's box is SIGKILLed and started again, holding no presence state: S's box sees it
/// join again and asks it about C, so S is not left believing C online; once C is back
/// and follows S again, S sees C online.
#[test]
fn a_restarted_box_is_asked_again_and_leaves_no_stale_presence() {
    let (nats, a, b, s, c, mut s_c) = contact_seen_then_box_killed(6_300_000);
    let (s, c) = (&s, &c);
    let b = Box::start_in(b.data.clone(), &nats.url, "b", crate::placement::ADV_B, &[]);
    // Asked again, the new run answers as at a first subscription: C is not online, and
    // no longer follows S (its following list was in memory), so S sees nothing of C.
    assert_eq!(presence_of(&mut s_c, c), hidden(c));
    let shards = crate::support::admin::fresh_stats(a.admin, 2);
    let reasks: u64 = shards
        .iter()
        .filter_map(|s| s["service"]["presence_reasks_total"].as_u64())
        .sum();
    assert!(reasks > 0, "S's box asked again");

    let mut c_c = login(&b, c);
    subscribe(&mut c_c, &[s]);
    until_online(&mut s_c, c);
}

/// C's box goes down and stays down past its lease: S, who saw C online, hears `hidden`
/// (C's presence is not known now; nothing waits in the stream of a box that is down).
/// When the box is back it is asked again, so once C follows S again S sees C online.
#[test]
fn a_contacts_box_that_goes_down_shows_them_hidden_and_is_asked_again_when_back() {
    let (nats, a, b, s, c, mut s_c) = contact_seen_then_box_killed(6_400_000);
    let (s, c) = (&s, &c);
    a.wait_stat("cluster_members", 1);
    assert_eq!(
        presence_of(&mut s_c, c),
        hidden(c),
        "not shown online any more"
    );

    let b = Box::start_in(b.data.clone(), &nats.url, "b", crate::placement::ADV_B, &[]);
    a.wait_stat("cluster_members", 2);
    // S's box asks C's box again once it is back: C's new session then shows C to S.
    let mut c_c = login(&b, c);
    subscribe(&mut c_c, &[s]);
    until_online(&mut s_c, c);
}
