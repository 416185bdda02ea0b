//! Every refusal answers with its code and stores nothing: a wrong hash, more bytes than the
//! slot, an object over the limit, an expired or forged token, the day's bytes, the disk
//! budget.

use proto::v1::{server_frame, ErrorCode};

use messaging::media::token::{hex, MediaKey, Purpose, Token};

use crate::http::{agent, object, put, request_slot, server, sha256, slot};

fn objects_on_disk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("media/objects"))
        .unwrap()
        .count()
}

#[test]
fn wrong_bytes_too_many_bytes_and_expired_or_forged_tokens_are_refused_with_their_codes() {
    let dir = testkit::temp_dir("media-refusals");
    let s = server(dir.clone(), |m| m.media_object_bytes_max = Some(1 << 20));
    let http = agent(&dir);
    let mut a = s.client();
    a.load_test_login("+15550000011");

    let photo = object(50_000, 3);
    let up = slot(&mut a, 1, &photo);
    let mut wrong = photo.clone();
    wrong[100] ^= 1;
    let r = put(&http, &up.upload_url, &wrong);
    assert_eq!(
        (r.status, r.code),
        (422, ErrorCode::MediaBadHash as i32),
        "{r:?}"
    );
    let short = put(&http, &up.upload_url, &photo[..photo.len() - 1]);
    assert_eq!(short.code, ErrorCode::MediaBadHash as i32);
    let mut longer = photo.clone();
    longer.push(0);
    let r = put(&http, &up.upload_url, &longer);
    assert_eq!(
        (r.status, r.code),
        (413, ErrorCode::MediaObjectTooLarge as i32)
    );

    // A slot over the object limit is refused on the chat connection.
    match request_slot(&mut a, 2, (1 << 20) + 1, sha256(b"x")) {
        server_frame::Kind::Error(e) => {
            assert_eq!(e.code, ErrorCode::MediaObjectTooLarge as i32);
            assert_eq!(e.client_msg_id, 2);
        }
        other => panic!("expected an Error, got {other:?}"),
    }

    // Tokens: expired (signed with the server's own key, an hour ago), forged (another key).
    let key_bytes: [u8; 32] = std::fs::read(dir.join("media/key"))
        .unwrap()
        .try_into()
        .unwrap();
    let sha: [u8; 32] = sha256(&photo).try_into().unwrap();
    let token = |key: &MediaKey, expires_at_ms| {
        key.sign(&Token {
            purpose: Purpose::Upload,
            user: 15550000011,
            sha256: sha,
            size: photo.len() as u64,
            expires_at_ms,
        })
    };
    let base = up.upload_url.split("/m/").next().unwrap();
    let url = |t: String| format!("{base}/m/{}?t={t}", hex(&sha));
    let now_ms = up.expires_at_ms - messaging::media::settings::MEDIA_SLOT_MS;
    let expired = put(
        &http,
        &url(token(&MediaKey::new(&key_bytes), now_ms - 3_600_000)),
        &photo,
    );
    assert_eq!(
        (expired.status, expired.code),
        (403, ErrorCode::MediaBadToken as i32)
    );
    let forged = put(
        &http,
        &url(token(&MediaKey::new(&[7; 32]), u64::MAX)),
        &photo,
    );
    assert_eq!(forged.code, ErrorCode::MediaBadToken as i32);
    assert_eq!(objects_on_disk(&dir), 0, "nothing refused was stored");
    assert_eq!(
        std::fs::read_dir(dir.join("media/tmp")).unwrap().count(),
        0,
        "no temp left"
    );

    // The good bytes still go up on the same slot.
    assert_eq!(put(&http, &up.upload_url, &photo).status, 201);
    assert_eq!(objects_on_disk(&dir), 1);
}

#[test]
fn the_days_bytes_and_the_disk_budget_refuse_uploads_before_a_byte_is_stored() {
    let dir = testkit::temp_dir("media-budgets");
    let s = server(dir.clone(), |m| {
        m.media_user_bytes_per_day = Some(15_000);
        m.media_disk_bytes_max = Some(25_000);
    });
    let http = agent(&dir);
    let mut a = s.client();
    a.load_test_login("+15550000021");
    let mut b = s.client();
    b.load_test_login("+15550000022");

    let first = object(10_000, 1);
    assert_eq!(
        put(&http, &slot(&mut a, 1, &first).upload_url, &first).status,
        201
    );
    let second = object(10_000, 2);
    let r = put(&http, &slot(&mut a, 2, &second).upload_url, &second);
    assert_eq!(
        (r.status, r.code),
        (429, ErrorCode::MediaDailyBytes as i32),
        "{r:?}"
    );
    // Another user has bytes left today, and the disk has 15,000.
    assert_eq!(
        put(&http, &slot(&mut b, 1, &second).upload_url, &second).status,
        201
    );
    let mut c = s.client();
    c.load_test_login("+15550000023");
    let third = object(10_000, 3);
    let r = put(&http, &slot(&mut c, 1, &third).upload_url, &third);
    assert_eq!(
        (r.status, r.code),
        (507, ErrorCode::MediaDiskBudget as i32),
        "{r:?}"
    );
    assert_eq!(objects_on_disk(&dir), 2);
}

#[test]
fn a_stalled_upload_holds_its_users_only_upload_until_the_slow_upload_deadline_cuts_it() {
    use crate::http::{temp_files, wait_until, Stalling};
    use std::sync::atomic::Ordering::Relaxed;
    let dir = testkit::temp_dir("media-slow");
    let s = crate::support::TestServer::start_cfg(2, true, dir.clone(), |cfg| {
        let args = shards::config::media::MediaArgs {
            media_listen: Some("127.0.0.1:0".parse().unwrap()),
            media_uploads_per_user_max: Some(1),
            ..Default::default()
        };
        let mut m = args.resolve(None).unwrap().unwrap();
        m.upload_grace_ms = 300;
        cfg.media = Some(m);
    });
    let http = agent(&dir);
    let mut a = s.client();
    a.load_test_login("+15550000041");
    let video = object(20_000, 4);
    let url = slot(&mut a, 1, &video).upload_url;
    let (halfway_tx, halfway_rx) = std::sync::mpsc::channel();
    let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
    let body = Stalling {
        bytes: video.clone(),
        at: 0,
        halfway: Some(halfway_tx),
        hold: hold_rx,
    };
    let stalled = {
        let (http, url) = (http.clone(), url.clone());
        std::thread::spawn(move || {
            let _ = http.put(&url).send(ureq::SendBody::from_owned_reader(body));
        })
    };
    halfway_rx.recv().unwrap();
    wait_until("the stalled upload is in progress", || {
        temp_files(&dir) == 1
    });
    let photo = object(1_000, 5);
    let r = put(&http, &slot(&mut a, 2, &photo).upload_url, &photo);
    assert_eq!(
        (r.status, r.code),
        (429, ErrorCode::MediaConcurrentUploads as i32),
        "{r:?}"
    );

    // 300 ms of grace plus 20 kB at 16 KiB/s: the stalled upload is cut after ~1.5 s.
    let counters = &s.media.as_ref().unwrap().counters;
    wait_until("the slow upload is cut", || {
        counters.refused_slow.load(Relaxed) == 1
    });
    wait_until("its temp file is gone", || temp_files(&dir) == 0);
    assert_eq!(
        put(&http, &slot(&mut a, 3, &photo).upload_url, &photo).status,
        201
    );
    drop(hold_tx);
    stalled.join().unwrap();
    assert!(!dir
        .join("media/objects")
        .join(hex(&sha256(&video)))
        .exists());
}

#[test]
fn a_server_without_the_media_service_refuses_slots_and_passes_media_links_through() {
    let s = crate::support::TestServer::start(2, true);
    let mut a = s.client();
    a.load_test_login("+15550000051");
    let mut b = s.client();
    b.load_test_login("+15550000052");
    match request_slot(&mut a, 9, 10, sha256(b"x")) {
        server_frame::Kind::Error(e) => {
            assert_eq!((e.code, e.client_msg_id), (ErrorCode::MediaOff as i32, 9));
        }
        other => panic!("expected MEDIA_OFF, got {other:?}"),
    }
    let link = proto::v1::Media {
        url: "https://cdn.example/cat.jpg".into(),
        mime: "image/jpeg".into(),
        size: 10,
        sha256: sha256(b"x"),
        ..Default::default()
    };
    a.send(proto::v1::client_frame::Kind::Send(
        proto::v1::SendMessage {
            to: "+15550000052".into(),
            client_msg_id: 1,
            body: Vec::new().into(),
            media: Some(Box::new(link.clone())),
        },
    ));
    assert_eq!(
        b.expect_message().media.as_deref(),
        Some(&link),
        "untouched"
    );
}

#[test]
fn objects_past_their_retention_are_deleted_at_start_and_by_the_sweep() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = testkit::temp_dir("media-retention");
    let photo = object(5_000, 6);
    let fresh = object(5_000, 7);
    {
        let s = server(dir.clone(), |_| {});
        let http = agent(&dir);
        let mut a = s.client();
        a.load_test_login("+15550000061");
        assert_eq!(
            put(&http, &slot(&mut a, 1, &photo).upload_url, &photo).status,
            201
        );
        assert_eq!(
            put(&http, &slot(&mut a, 2, &fresh).upload_url, &fresh).status,
            201
        );
    }
    // 31 days old by its file time: past the default 30.
    let old = dir.join("media/objects").join(hex(&sha256(&photo)));
    let month = std::time::Duration::from_secs(31 * 24 * 3600);
    let f = std::fs::File::options().write(true).open(&old).unwrap();
    f.set_modified(std::time::SystemTime::now() - month)
        .unwrap();
    drop(f);
    let s = server(dir.clone(), |_| {});
    let counters = &s.media.as_ref().unwrap().counters;
    // The sweep updates its counters one after the other: wait for all of them.
    crate::http::wait_until("the sweep ran", || {
        counters.expired.load(Relaxed) == 1
            && counters.objects.load(Relaxed) == 1
            && counters.stored_bytes.load(Relaxed) == 5_000
    });
    assert!(!old.exists());
    assert!(dir
        .join("media/objects")
        .join(hex(&sha256(&fresh)))
        .exists());
}

#[test]
fn a_downloader_that_stops_reading_is_cut_at_the_write_deadline() {
    use std::io::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let dir = testkit::temp_dir("media-stall");
    let s = crate::support::TestServer::start_cfg(2, false, dir.clone(), |cfg| {
        let args = shards::config::media::MediaArgs {
            media_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        };
        let mut m = args.resolve(None).unwrap().unwrap();
        m.write_stall_ms = 300;
        cfg.media = Some(m);
    });
    let http = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut a = s.client();
    a.load_test_login("+15550000081");
    // Far more than the loopback socket buffers hold.
    let video = object(24 << 20, 9);
    let up = slot(&mut a, 1, &video);
    assert_eq!(put(&http, &up.upload_url, &video).status, 201);
    let key: [u8; 32] = std::fs::read(dir.join("media/key"))
        .unwrap()
        .try_into()
        .unwrap();
    let sha: [u8; 32] = sha256(&video).try_into().unwrap();
    let token = MediaKey::new(&key).sign(&Token {
        purpose: Purpose::Download,
        user: 15550000081,
        sha256: sha,
        size: video.len() as u64,
        expires_at_ms: u64::MAX,
    });
    let media = s.media.as_ref().unwrap();
    let mut tcp = std::net::TcpStream::connect(media.addr).unwrap();
    let request = format!("GET /m/{}?t={token} HTTP/1.1\r\nhost: x\r\n\r\n", hex(&sha));
    tcp.write_all(request.as_bytes()).unwrap();
    // Never read: the server's writes stop, and the deadline ends the connection.
    let stalls = || media.counters.write_stalls.load(Relaxed);
    crate::http::wait_until("the stalled download is cut", || stalls() == 1);
    drop(tcp);
}
