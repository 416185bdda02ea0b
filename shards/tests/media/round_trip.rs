//! Slot → PUT → send → the recipient's GET (whole and ranges), the hash checked.

use proto::v1::{client_frame, ErrorCode, Media, SendMessage};

use crate::http::{agent, get, object, put, server, sha256, slot};

#[test]
fn a_photo_goes_up_once_and_its_recipient_downloads_it_whole_and_in_ranges() {
    let dir = testkit::temp_dir("media-round-trip");
    let s = server(dir.clone(), |_| {});
    let http = agent(&dir);
    let (alice, bob, carol) = ("+15550000001", "+15550000002", "+15550000003");
    let mut a = s.client();
    a.load_test_login(alice);
    let mut b = s.client();
    b.load_test_login(bob);
    let mut c = s.client();
    c.load_test_login(carol);

    let photo = object(200 * 1024 + 7, 1);
    let up = slot(&mut a, 1, &photo);
    assert!(
        up.upload_url.starts_with("https://127.0.0.1:"),
        "{}",
        up.upload_url
    );
    let stored = put(&http, &up.upload_url, &photo);
    assert_eq!(stored.status, 201, "{stored:?}");
    // The same object again: already there, nothing written.
    assert_eq!(
        put(&http, &slot(&mut a, 2, &photo).upload_url, &photo).status,
        200
    );

    a.send(client_frame::Kind::Send(SendMessage {
        to: bob.into(),
        client_msg_id: 1,
        body: b"look".to_vec().into(),
        media: Some(Box::new(Media {
            url: String::new(),
            mime: "image/jpeg".into(),
            size: photo.len() as u64,
            thumbnail: vec![0xAB; proto::limits::MEDIA_THUMBNAIL_BYTES_MAX],
            sha256: sha256(&photo),
            duration_ms: 0,
            width: 640,
            height: 480,
        })),
    }));
    let m = b.expect_message();
    let media = m.media.expect("the message carries its media");
    assert_eq!(
        (media.width, media.height, media.size),
        (640, 480, photo.len() as u64)
    );
    assert!(
        media.url.contains("/m/") && media.url.contains("?t="),
        "{}",
        media.url
    );

    let whole = get(&http, &media.url, None);
    assert_eq!(whole.status, 200);
    assert_eq!(sha256(&whole.body), sha256(&photo), "intact");
    let part = get(&http, &media.url, Some("bytes=1000-1999"));
    assert_eq!(part.status, 206);
    assert_eq!(part.body, photo[1000..2000]);
    let len = photo.len();
    assert_eq!(
        part.content_range.as_deref(),
        Some(&*format!("bytes 1000-1999/{len}"))
    );
    let tail = get(&http, &media.url, Some(&format!("bytes={}-", len - 10)));
    assert_eq!((tail.status, &tail.body[..]), (206, &photo[len - 10..]));
    let past = get(&http, &media.url, Some(&format!("bytes={len}-")));
    assert_eq!(past.status, 416);

    // Carol was not sent it: no token of hers opens it; the sender's upload URL is not a
    // download URL; a token for another object does not open this one.
    let sha_hex = messaging::media::token::hex(&sha256(&photo));
    let base = up.upload_url.split("/m/").next().unwrap().to_owned();
    let bare = get(&http, &format!("{base}/m/{sha_hex}"), None);
    assert_eq!(
        (bare.status, bare.code),
        (403, ErrorCode::MediaBadToken as i32)
    );
    let upload_as_download = get(&http, &up.upload_url, None);
    assert_eq!(upload_as_download.code, ErrorCode::MediaBadToken as i32);
    let other = object(10, 9);
    let other_slot = slot(&mut c, 1, &other);
    let token = other_slot.upload_url.split("?t=").nth(1).unwrap();
    let swapped = get(&http, &format!("{base}/m/{sha_hex}?t={token}"), None);
    assert_eq!(swapped.code, ErrorCode::MediaBadToken as i32);
    assert!(c.sync().is_empty(), "carol got nothing");

    let counters = &s.media.as_ref().unwrap().counters;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(load(&counters.uploads), 1);
    assert_eq!(load(&counters.uploads_duplicate), 1);
    assert_eq!(load(&counters.objects), 1);
    assert!(load(&counters.refused_token) >= 3);
}

#[test]
fn each_member_of_a_group_gets_a_download_url_of_its_own() {
    let dir = testkit::temp_dir("media-group");
    let s = server(dir.clone(), |_| {});
    let http = agent(&dir);
    let phones = ["+15550000071", "+15550000072", "+15550000073"];
    let mut clients: Vec<_> = phones
        .iter()
        .map(|p| {
            let mut c = s.client();
            c.load_test_login(p);
            c.group_privacy(proto::v1::GroupAddPolicy::Everyone);
            c
        })
        .collect();
    clients[0].send(client_frame::Kind::GroupCreate(proto::v1::GroupCreate {
        client_req_id: 1,
        name: "family".into(),
        members: phones[1..].iter().map(|p| p.to_string()).collect(),
    }));
    let group_id = match clients[0].recv() {
        proto::v1::server_frame::Kind::GroupCreated(g) => g.group_id,
        other => panic!("expected GroupCreated, got {other:?}"),
    };
    let voice = object(20 * 1024, 8);
    assert_eq!(
        put(&http, &slot(&mut clients[0], 2, &voice).upload_url, &voice).status,
        201
    );
    clients[0].send(client_frame::Kind::GroupSend(proto::v1::GroupSend {
        group_id,
        client_msg_id: 1,
        body: Vec::new(),
        media: Some(Box::new(Media {
            mime: "audio/ogg".into(),
            size: voice.len() as u64,
            sha256: sha256(&voice),
            duration_ms: 4_200,
            ..Default::default()
        })),
    }));
    let urls: Vec<String> = clients[1..]
        .iter_mut()
        .map(|c| {
            let m = c.expect_message().media.expect("media");
            assert_eq!(m.duration_ms, 4_200);
            let got = get(&http, &m.url, None);
            assert_eq!((got.status, sha256(&got.body)), (200, sha256(&voice)));
            m.url
        })
        .collect();
    assert_ne!(urls[0], urls[1], "one token per recipient");
}
