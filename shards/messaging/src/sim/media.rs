//! Media in the simulator (issue 25): slots granted with a token bound to the user, the
//! object and its size for `MEDIA_SLOT_MS`; refused over the object limit or without the
//! service; a message with media reaches its recipient with a download URL signed for that
//! recipient alone, stored with the item, so the offline recipient gets the same URL after
//! a restart (replay).

use proto::v1::{client_frame, server_frame, ErrorCode, Media, MediaSlotRequest, SendMessage};

use crate::media::settings::{MediaSettings, MEDIA_SLOT_MS};
use crate::media::token::{MediaKey, Purpose};
use crate::sim::Sim;
use crate::state::ServiceSettings;

const A: &str = "+15550000001";
const B: &str = "+15550000002";

fn key() -> MediaKey {
    MediaKey::new(&[5; 32])
}

fn media_sim(n: usize) -> Sim {
    Sim::with_settings(
        n,
        ServiceSettings {
            load_test_secret: Some(b"s".to_vec()),
            media: Some(MediaSettings {
                key: key(),
                base_url: "https://media.test".into(),
                object_bytes_max: 1_000,
                retention_ms: 60_000,
            }),
            ..ServiceSettings::default()
        },
    )
}

fn slot_request(id: u64, size: u64) -> client_frame::Kind {
    client_frame::Kind::MediaSlot(MediaSlotRequest {
        client_req_id: id,
        size,
        mime: "image/png".into(),
        sha256: vec![3; 32],
    })
}

/// The token in a media URL.
fn token_of(url: &str) -> crate::media::token::Token {
    key().open(url.split("?t=").nth(1).unwrap()).unwrap()
}

#[test]
fn a_slot_is_bound_to_its_user_object_and_size_for_fifteen_minutes() {
    let mut sim = media_sim(2);
    let a = sim.login(A, 0);
    sim.send(a, slot_request(7, 1_000));
    let [server_frame::Kind::MediaSlot(s)] = &sim.take(a)[..] else {
        panic!("expected one MediaSlot");
    };
    assert_eq!(s.client_req_id, 7);
    assert_eq!(s.expires_at_ms, sim.now + MEDIA_SLOT_MS);
    let expected = format!("https://media.test/m/{}?t=", "03".repeat(32));
    assert!(s.upload_url.starts_with(&expected), "{}", s.upload_url);
    let t = token_of(&s.upload_url);
    assert_eq!(
        (t.purpose, t.user, t.size),
        (Purpose::Upload, 15550000001, 1_000)
    );
    assert_eq!(
        t.check(Purpose::Upload, &[3; 32], sim.now + MEDIA_SLOT_MS - 1),
        Ok(())
    );
    assert!(t
        .check(Purpose::Upload, &[3; 32], sim.now + MEDIA_SLOT_MS)
        .is_err());

    sim.send(a, slot_request(8, 1_001));
    let [server_frame::Kind::Error(e)] = &sim.take(a)[..] else {
        panic!("expected one Error");
    };
    assert_eq!(
        (e.code, e.client_msg_id),
        (ErrorCode::MediaObjectTooLarge as i32, 8)
    );
}

#[test]
fn without_the_service_a_slot_is_media_off() {
    let off = ServiceSettings {
        load_test_secret: Some(b"s".to_vec()),
        ..ServiceSettings::default()
    };
    let mut sim = Sim::with_settings(1, off);
    let a = sim.login(A, 0);
    sim.send(a, slot_request(1, 10));
    let [server_frame::Kind::Error(e)] = &sim.take(a)[..] else {
        panic!("expected one Error");
    };
    assert_eq!(e.code, ErrorCode::MediaOff as i32);
}

#[test]
fn the_offline_recipient_gets_its_own_download_url_after_a_restart() {
    let mut sim = media_sim(2);
    let b = sim.login(B, 1); // B exists, then goes offline
    sim.close(b);
    sim.commit();
    let a = sim.login(A, 0);
    sim.send(
        a,
        client_frame::Kind::Send(SendMessage {
            to: B.into(),
            client_msg_id: 1,
            body: Vec::new().into(),
            media: Some(Box::new(Media {
                url: "https://elsewhere.example/x".into(),
                size: 500,
                sha256: vec![3; 32],
                ..Default::default()
            })),
        }),
    );
    sim.commit();
    let sent_at = sim.now;
    sim.now += 5_000;
    sim.restart();
    let b = sim.login(B, 1);
    let [server_frame::Kind::Message(m)] = &sim.take(b)[..] else {
        panic!("expected the queued message");
    };
    let url = &m.media.as_ref().unwrap().url;
    assert!(
        url.starts_with("https://media.test/m/"),
        "the sender's URL is replaced: {url}"
    );
    let t = token_of(url);
    assert_eq!(
        (t.purpose, t.user, t.size),
        (Purpose::Download, 15550000002, 500)
    );
    assert_eq!(
        t.expires_at_ms,
        sent_at + 60_000,
        "as long as the object is kept"
    );
}

/// A message from another box of a cluster names the media service that holds the object
/// (`Delivery::media_base`): the recipient's home signs for it, with the (cluster's) key,
/// and the URL survives a restart as stored.
#[test]
fn a_message_from_another_box_gets_a_url_at_the_box_that_holds_the_object() {
    use crate::state::home::home_of_phone;
    use crate::state::mesh_msg::{Delivery, ReplyTo, ShardMsg};
    let mut sim = media_sim(2);
    let b = sim.login(B, 1);
    sim.take(b);
    let d = Delivery {
        to: crate::state::home::Phone::parse(B),
        from: crate::state::home::Phone::parse(A).unwrap(),
        device: 1,
        client_msg_id: 1,
        group_id: 0,
        body: Vec::new().into(),
        media: Some(Box::new(Media {
            size: 500,
            sha256: vec![3; 32],
            ..Default::default()
        })),
        media_base: Some("https://media-a.test:8443".into()),
        sent_at_ms: sim.now,
        reply: ReplyTo::Sender,
    };
    let home = home_of_phone(B, 2).0;
    sim.from_outside(home, ShardMsg::Deliver(Box::new(d)));
    let [server_frame::Kind::Message(m)] = &sim.take(b)[..] else {
        panic!("expected the message");
    };
    let url = &m.media.as_ref().unwrap().url;
    let expected = format!("https://media-a.test:8443/m/{}?t=", "03".repeat(32));
    assert!(url.starts_with(&expected), "{url}");
    let t = token_of(url);
    assert_eq!((t.purpose, t.user), (Purpose::Download, 15550000002));
    sim.commit();
    sim.restart();
    let b = sim.login(B, 1);
    let [server_frame::Kind::Message(again)] = &sim.take(b)[..] else {
        panic!("expected the unacked message again");
    };
    assert_eq!(&again.media.as_ref().unwrap().url, url);
}
