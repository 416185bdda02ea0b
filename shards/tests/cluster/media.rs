//! Media across boxes: a photo uploaded to its sender's box reaches a recipient homed on
//! another box with a download URL that names the sender's box's media service, signed for
//! the recipient with the cluster's one media key (`shards/src/cluster/media_key.rs`).
//! What is checked is what a user would (over TLS, as phones reach both listeners): the
//! bytes come back intact, nobody else's token opens them, and the URL is no good at a box
//! that does not hold the object.

use std::path::Path;

use proto::v1::{client_frame, server_frame, ErrorCode, GroupAddPolicy, Media};

use crate::nats::{Box, Nats};
use crate::placement::{phones_homed_on, ADV_A, ADV_B};
use crate::support::Client;

const MEDIA: [&str; 2] = ["--media-listen", "127.0.0.1:0"];

fn two_media_boxes(nats: &Nats) -> (Box, Box) {
    let a = Box::start(&nats.url, "a", ADV_A, &MEDIA);
    let b = Box::start(&nats.url, "b", ADV_B, &MEDIA);
    a.wait_stat("cluster_members", 2);
    b.wait_stat("cluster_members", 2);
    (a, b)
}

/// Box `id` with TLS on its chat and media listeners: its own dev certificate, or the one
/// in `cert_of` (another box's `tls` directory), so that one client trusts both boxes.
fn tls_box(nats: &Nats, id: &str, advertise: &str, cert_of: Option<&Path>) -> Box {
    let data = testkit::temp_dir(&format!("box-tls-{id}"));
    let files = cert_of.map(|dir| {
        let cert = engine::tls::dev_cert_path(dir);
        let key = dir.join(engine::tls::DEV_KEY_FILE);
        (
            cert.to_str().unwrap().to_owned(),
            key.to_str().unwrap().to_owned(),
        )
    });
    let mut args = vec![
        "--shards",
        "2",
        "--admin",
        "127.0.0.1:0",
        "--cluster",
        &nats.url,
        "--box-id",
        id,
        "--advertise",
        advertise,
    ];
    args.extend(MEDIA);
    if let Some((cert, key)) = &files {
        args.extend(["--cert", cert.as_str(), "--key", key.as_str()]);
    }
    let mut cmd = crate::support::switchboard_command(&args);
    cmd.env(shards::config::LOAD_TEST_SECRET_ENV, "farm-secret")
        .arg("--data-dir")
        .arg(&data);
    let (child, line) = crate::support::listening(cmd);
    Box {
        child,
        addr: shards::server::listening_addr(&line).expect("addr="),
        admin: crate::nats::admin_addr(&line),
        data,
    }
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

fn object(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

/// The next frame that is neither presence nor a receipt.
fn next(c: &mut Client) -> server_frame::Kind {
    loop {
        match c.recv() {
            server_frame::Kind::Presence(_) | server_frame::Kind::Receipt(_) => continue,
            other => return other,
        }
    }
}

/// An upload URL for `bytes` from the sender's own box.
fn slot(c: &mut Client, id: u64, bytes: &[u8]) -> String {
    c.send(client_frame::Kind::MediaSlot(proto::v1::MediaSlotRequest {
        client_req_id: id,
        size: bytes.len() as u64,
        mime: "image/jpeg".into(),
        sha256: sha256(bytes),
    }));
    match next(c) {
        server_frame::Kind::MediaSlot(s) => s.upload_url,
        other => panic!("expected a MediaSlot, got {other:?}"),
    }
}

/// The service part of a media URL (`http://host:port`).
fn base(url: &str) -> &str {
    url.split("/m/").next().unwrap()
}

fn media(bytes: &[u8]) -> Option<std::boxed::Box<Media>> {
    Some(std::boxed::Box::new(Media {
        mime: "image/jpeg".into(),
        size: bytes.len() as u64,
        sha256: sha256(bytes),
        width: 640,
        height: 480,
        ..Default::default()
    }))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(60)))
        .build()
        .new_agent()
}

/// Status, `x-switchboard-error` code (0 if none), body.
fn call(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, i32, Vec<u8>) {
    let mut r = r.expect("the media service answers");
    let code = r
        .headers()
        .get(shards::media::http::ERROR_HEADER)
        .and_then(|v| v.to_str().ok())
        .map_or(0, |v| v.parse().unwrap());
    let body = r.body_mut().read_to_vec().unwrap();
    (r.status().as_u16(), code, body)
}

fn upload(http: &ureq::Agent, url: &str, bytes: &[u8]) {
    let (status, code, _) = call(http.put(url).send(bytes));
    assert_eq!((status, code), (201, 0), "upload to {url}");
}

fn get(http: &ureq::Agent, url: &str) -> (u16, i32, Vec<u8>) {
    call(http.get(url).call())
}

fn expect_media_message(c: &mut Client, from: &str) -> Media {
    match next(c) {
        server_frame::Kind::Message(m) => {
            assert_eq!(m.from, from);
            c.ack(vec![m.server_msg_id]);
            *m.media.expect("the message carries its media")
        }
        other => panic!("expected a message from {from}, got {other:?}"),
    }
}

#[test]
fn a_photo_to_a_user_of_another_box_downloads_from_the_box_that_holds_it() {
    let nats = Nats::start();
    let a = tls_box(&nats, "a", ADV_A, None);
    let tls_dir = shards::server::tls_dir(&a.data);
    let b = tls_box(&nats, "b", ADV_B, Some(&tls_dir));
    a.wait_stat("cluster_members", 2);
    b.wait_stat("cluster_members", 2);
    let cert = engine::tls::dev_cert_path(&tls_dir);
    let alice = &phones_homed_on("a", 1, 4_800_000)[0];
    let bobs = phones_homed_on("b", 2, 4_800_000);
    let (bob, carol) = (&bobs[0], &bobs[1]);
    let mut at_a = Client::tls(a.addr, &cert);
    at_a.load_test_login(alice);
    let mut bob_c = Client::tls(b.addr, &cert);
    bob_c.load_test_login(bob);
    let mut carol_c = Client::tls(b.addr, &cert);
    carol_c.load_test_login(carol);
    let http = crate::support::https_agent(&cert);

    let photo = object(200 * 1024 + 3, 5);
    let up = slot(&mut at_a, 1, &photo);
    let a_media = base(&up).to_owned();
    assert!(a_media.starts_with("https://127.0.0.1:"), "{a_media}");
    let b_media = base(&slot(&mut bob_c, 1, &object(10, 1))).to_owned();
    assert_ne!(a_media, b_media);
    upload(&http, &up, &photo);

    at_a.send(client_frame::Kind::Send(proto::v1::SendMessage {
        to: bob.clone(),
        client_msg_id: 1,
        body: b"look".to_vec().into(),
        media: media(&photo),
    }));
    match next(&mut at_a) {
        server_frame::Kind::ServerAck(ack) => assert_eq!(ack.client_msg_id, 1),
        other => panic!("expected the ServerAck, got {other:?}"),
    }
    let got = expect_media_message(&mut bob_c, alice);
    // Bob's URL names alice's box's service, signed by his own home (box b) for him.
    assert_eq!(base(&got.url), a_media, "{}", got.url);
    let (status, _, body) = get(&http, &got.url);
    assert_eq!(status, 200);
    assert_eq!(sha256(&body), sha256(&photo), "intact");

    // The same object path at box b, which does not hold it: not found there.
    let at_b = got.url.replacen(&a_media, &b_media, 1);
    assert_eq!(get(&http, &at_b).0, 404, "{at_b}");

    // Nobody else's token opens it: carol's (a download token for another object, signed
    // by the same box b) and an upload token are refused at box a.
    let other = object(1000, 9);
    let other_up = slot(&mut at_a, 2, &other);
    upload(&http, &other_up, &other);
    at_a.send(client_frame::Kind::Send(proto::v1::SendMessage {
        to: carol.clone(),
        client_msg_id: 2,
        body: Vec::new().into(),
        media: media(&other),
    }));
    let carols = expect_media_message(&mut carol_c, alice);
    assert_eq!(base(&carols.url), a_media);
    assert_eq!(get(&http, &carols.url).0, 200);
    let token = |url: &str| url.split("?t=").nth(1).unwrap().to_owned();
    let object_path = got.url.split("?t=").next().unwrap().to_owned();
    for t in [token(&carols.url), token(&up), "forged".into()] {
        let (status, code, _) = get(&http, &format!("{object_path}?t={t}"));
        assert_eq!(
            (status, code),
            (403, ErrorCode::MediaBadToken as i32),
            "{t}"
        );
    }
}

fn group_send(c: &mut Client, group_id: u64, client_msg_id: u64, bytes: &[u8]) {
    c.send(client_frame::Kind::GroupSend(proto::v1::GroupSend {
        group_id,
        client_msg_id,
        body: b"photo".to_vec(),
        media: media(bytes),
    }));
    match next(c) {
        server_frame::Kind::ServerAck(a) => assert_eq!(a.client_msg_id, client_msg_id),
        other => panic!("expected the group ServerAck, got {other:?}"),
    }
}

/// A group living on box a: a photo from its member on a reaches the member on b named for
/// a's service; one from the member on b (the send crosses to the group's box, which hands
/// the copies out) reaches the member on a named for b's service.
#[test]
fn group_photos_download_from_the_senders_box() {
    let nats = Nats::start();
    let (a, b) = two_media_boxes(&nats);
    let alice = &phones_homed_on("a", 1, 4_900_000)[0];
    let bob = &phones_homed_on("b", 1, 4_900_000)[0];
    let mut at_a = a.client();
    at_a.load_test_login(alice);
    let mut bob_c = b.client();
    bob_c.load_test_login(bob);
    bob_c.group_privacy(GroupAddPolicy::Everyone);
    let http = agent();

    at_a.send(client_frame::Kind::GroupCreate(proto::v1::GroupCreate {
        client_req_id: 1,
        name: "photos".into(),
        members: vec![bob.clone()],
    }));
    let group_id = match next(&mut at_a) {
        server_frame::Kind::GroupCreated(g) => g.group_id,
        other => panic!("expected GroupCreated, got {other:?}"),
    };

    // `sender` (phone `from`) uploads a photo to its own box and sends it to the group;
    // `member` gets a URL at the sender's box that serves the very bytes.
    let photo = |sender: &mut Client, from: &str, member: &mut Client, id: u64, bytes: &[u8]| {
        let up = slot(sender, id, bytes);
        upload(&http, &up, bytes);
        group_send(sender, group_id, id, bytes);
        let got = expect_media_message(member, from);
        assert_eq!(base(&got.url), base(&up), "{}", got.url);
        let (status, _, body) = get(&http, &got.url);
        assert_eq!((status, sha256(&body)), (200, sha256(bytes)));
    };
    photo(&mut at_a, alice, &mut bob_c, 1, &object(50_000, 11));
    photo(&mut bob_c, bob, &mut at_a, 2, &object(60_000, 12));
}

/// The cluster's media key is read before anything else starts: without NATS a media box
/// says so in one line and exits 1, as any box does.
#[test]
fn a_media_box_that_cannot_reach_nats_says_so_in_one_line_and_exits_1() {
    let (_silent, url) = crate::start::dead_nats();
    let listen = ["--media-listen", "127.0.0.1:0"];
    let cmd = crate::start::cluster_box_command(&url, "a", "box-media-nonats", &listen);
    let error = crate::start::exits_1_saying_one_error(cmd, "a media box without NATS");
    assert!(
        error.contains("cannot reach NATS") && error.contains(&url),
        "{error}"
    );
}

/// With `--cluster-optional` and no NATS, a media box keeps signing with its own file key
/// and its media service serves its own users (here one who signed up while it ran alone).
#[test]
fn with_cluster_optional_a_media_box_alone_uses_its_own_key() {
    let data = testkit::temp_dir("box-media-alone");
    let alice = "+15553000011";
    let http = agent();
    let mut single = crate::support::TestServer::start_cfg(2, false, data.clone(), |cfg| {
        let args = shards::config::media::MediaArgs {
            media_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        };
        cfg.media = args.resolve(None).unwrap();
    });
    let device_key = single.register(alice);
    let mut c = single.login(alice, &device_key);
    let first = object(5_000, 3);
    upload(&http, &slot(&mut c, 1, &first), &first);
    drop(c);
    single.stop();
    drop(single);
    let key = std::fs::read(data.join("media").join("key")).unwrap();

    let (_silent, url) = crate::start::dead_nats();
    let mut extra = vec!["--cluster-optional"];
    extra.extend(MEDIA);
    let a = Box::start_in(data.clone(), &url, "a", ADV_A, &extra);
    a.wait_stat("cluster_alone", 1);
    let mut c = a.client();
    c.login(alice, &device_key);
    let second = object(6_000, 4);
    upload(&http, &slot(&mut c, 2, &second), &second);
    assert_eq!(std::fs::read(data.join("media").join("key")).unwrap(), key);
}

/// Two boxes starting at once both offer their key: one wins the KV `create`, the other
/// reads it, and photos open both ways.
#[test]
fn boxes_starting_at_once_agree_on_one_media_key() {
    let nats = Nats::start();
    let url = nats.url.clone();
    let starting_b = std::thread::spawn(move || Box::start(&url, "b", ADV_B, &MEDIA));
    let a = Box::start(&nats.url, "a", ADV_A, &MEDIA);
    let b = starting_b.join().unwrap();
    a.wait_stat("cluster_members", 2);
    b.wait_stat("cluster_members", 2);
    let alice = &phones_homed_on("a", 1, 5_100_000)[0];
    let bob = &phones_homed_on("b", 1, 5_100_000)[0];
    let mut at_a = a.client();
    at_a.load_test_login(alice);
    let mut bob_c = b.client();
    bob_c.load_test_login(bob);
    let http = agent();
    photo_opens(&http, 1, (alice, &mut at_a), (bob, &mut bob_c));
    photo_opens(&http, 2, (bob, &mut bob_c), (alice, &mut at_a));
}

/// A photo from `from` to `to` opens, at the sender's box's service.
fn photo_opens(http: &ureq::Agent, id: u64, from: (&str, &mut Client), to: (&str, &mut Client)) {
    let photo = object(30_000, id as u8);
    let up = slot(from.1, id, &photo);
    upload(http, &up, &photo);
    from.1
        .send(client_frame::Kind::Send(proto::v1::SendMessage {
            to: to.0.into(),
            client_msg_id: id,
            body: Vec::new().into(),
            media: media(&photo),
        }));
    match next(from.1) {
        server_frame::Kind::ServerAck(a) => assert_eq!(a.client_msg_id, id),
        other => panic!("expected the ServerAck, got {other:?}"),
    }
    let got = expect_media_message(to.1, from.0);
    assert_eq!(base(&got.url), base(&up));
    let (status, _, body) = get(http, &got.url);
    assert_eq!(
        (status, sha256(&body)),
        (200, sha256(&photo)),
        "{}",
        got.url
    );
}

/// A box that served media alone joins a cluster whose key another box set: it signs with
/// the cluster's key from then on, and a download link it handed out before still opens.
#[test]
fn links_a_box_handed_out_before_it_joined_still_open() {
    let data = testkit::temp_dir("box-media-joins");
    let (alice, carol) = ("+15553000021", "+15553000022");
    let http = agent();
    let mut single = crate::support::TestServer::start_cfg(2, false, data.clone(), |cfg| {
        let args = shards::config::media::MediaArgs {
            media_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        };
        cfg.media = args.resolve(None).unwrap();
    });
    let mut at_a = single.client();
    at_a.load_test_login(alice);
    let mut carol_c = single.client();
    carol_c.load_test_login(carol);
    let photo = object(7_000, 21);
    upload(&http, &slot(&mut at_a, 1, &photo), &photo);
    at_a.send(client_frame::Kind::Send(proto::v1::SendMessage {
        to: carol.into(),
        client_msg_id: 1,
        body: Vec::new().into(),
        media: media(&photo),
    }));
    let before = expect_media_message(&mut carol_c, alice).url;
    drop((at_a, carol_c));
    single.stop();
    drop(single);

    let nats = Nats::start();
    let b = Box::start(&nats.url, "b", ADV_B, &MEDIA); // b's key becomes the cluster's
    let a = Box::start_in(data, &nats.url, "a", ADV_A, &MEDIA);
    a.wait_stat("cluster_members", 2);
    b.wait_stat("cluster_members", 2);
    let dave = &phones_homed_on("a", 1, 5_200_000)[0];
    let mut dave_c = a.client();
    dave_c.load_test_login(dave);
    let a_media = base(&slot(&mut dave_c, 1, &object(10, 1))).to_owned();
    // The listener's port is new: the same link at a's new address.
    let link = before.replacen(base(&before), &a_media, 1);
    let (status, _, body) = get(&http, &link);
    assert_eq!((status, sha256(&body)), (200, sha256(&photo)), "{link}");
}
