//! SIGKILL while 100 uploads are in flight: after the restart no partial object is visible
//! (every stored file hashes to its name, no temp file is left) and every upload that was
//! answered 201 downloads intact.

use std::sync::mpsc;

use messaging::media::token::{hex, MediaKey, Purpose, Token};

use crate::http::{agent, get, object, put, sha256, slot, Stalling};
use crate::support::{spawn_binary, Client};

const UPLOADS: usize = 100;
const OBJECT_BYTES: usize = 200 * 1024;

fn start(dir: &std::path::Path) -> (std::process::Child, Client) {
    let flags = [
        "--media-listen",
        "127.0.0.1:0",
        "--media-uploads-per-user-max",
        "200",
    ];
    let (child, addr) = spawn_binary(dir, &flags);
    let cert = engine::tls::dev_cert_path(&shards::server::tls_dir(dir));
    let mut c = Client::tls(addr, &cert);
    c.load_test_login("+15550000031");
    (child, c)
}

#[test]
fn a_sigkill_during_100_uploads_leaves_no_partial_object_and_every_acknowledged_one_intact() {
    let dir = testkit::temp_dir("media-crash");
    let (mut child, mut c) = start(&dir);
    let http = agent(&dir);
    let objects: Vec<Vec<u8>> = (0..UPLOADS)
        .map(|i| object(OBJECT_BYTES, i as u8))
        .collect();
    let urls: Vec<String> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| slot(&mut c, i as u64 + 1, o).upload_url)
        .collect();
    let (acked_tx, acked_rx) = mpsc::channel();
    let (halfway_tx, halfway_rx) = mpsc::channel();
    let (hold_tx, hold_rx) = (0..UPLOADS / 2)
        .map(|_| mpsc::channel::<()>())
        .unzip::<_, _, Vec<_>, Vec<_>>();
    let mut holds = hold_rx.into_iter();
    for (i, (o, url)) in objects.iter().zip(&urls).enumerate() {
        let (o, url, http) = (o.clone(), url.clone(), http.clone());
        if i % 2 == 0 {
            let acked = acked_tx.clone();
            std::thread::spawn(move || {
                let r = put(&http, &url, &o);
                let _ = acked.send((i, r.status));
            });
        } else {
            let body = Stalling {
                bytes: o,
                at: 0,
                halfway: Some(halfway_tx.clone()),
                hold: holds.next().unwrap(),
            };
            std::thread::spawn(move || {
                let _ = http.put(&url).send(ureq::SendBody::from_owned_reader(body));
            });
        }
    }
    drop(acked_tx);
    // Every stalled upload is half sent and every whole one answered: then the kill.
    for _ in 0..UPLOADS / 2 {
        halfway_rx.recv().unwrap();
    }
    let acked: Vec<usize> = acked_rx
        .iter()
        .filter(|(_, status)| *status == 201)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(acked.len(), UPLOADS / 2, "every whole upload was stored");
    // The server holds a partial temp file for each stalled upload when it dies.
    let temps = || std::fs::read_dir(dir.join("media/tmp")).unwrap().count();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while temps() < UPLOADS / 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} temp files",
            temps()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(hold_tx);

    let (mut child, mut c) = start(&dir);
    assert_eq!(
        std::fs::read_dir(dir.join("media/tmp")).unwrap().count(),
        0,
        "temp files gone"
    );
    for e in std::fs::read_dir(dir.join("media/objects")).unwrap() {
        let e = e.unwrap();
        let bytes = std::fs::read(e.path()).unwrap();
        assert_eq!(
            hex(&sha256(&bytes)),
            e.file_name().to_str().unwrap(),
            "whole objects only"
        );
    }
    let key: [u8; 32] = std::fs::read(dir.join("media/key"))
        .unwrap()
        .try_into()
        .unwrap();
    let key = MediaKey::new(&key);
    // The restarted service listens on a new port: a slot names it.
    let probe = slot(&mut c, 1_000, b"probe").upload_url;
    let new_base = probe.split("/m/").next().unwrap().to_owned();
    for (i, o) in objects.iter().enumerate() {
        let sha: [u8; 32] = sha256(o).try_into().unwrap();
        let token = key.sign(&Token {
            purpose: Purpose::Download,
            user: 15550000032,
            sha256: sha,
            size: o.len() as u64,
            expires_at_ms: u64::MAX,
        });
        let r = get(
            &http,
            &format!("{new_base}/m/{}?t={token}", hex(&sha)),
            None,
        );
        if acked.contains(&i) {
            assert_eq!(r.status, 200, "acknowledged object {i} is there");
            assert_eq!(sha256(&r.body), sha256(o), "object {i} intact");
        } else {
            assert!(
                r.status == 404,
                "a stalled upload is not visible: {i} {}",
                r.status
            );
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
