//! What the media tests share: a TLS server with the media service on, a slot request over
//! the chat connection, and an HTTPS client trusting the server's dev certificate.

use std::io::Read;
use std::path::Path;
use std::sync::mpsc;

use proto::v1::{client_frame, server_frame, MediaSlot, MediaSlotRequest};
use shards::config::media::MediaArgs;

use crate::support::{Client, TestServer};

/// A TLS server (2 shards) with the media service on a port the kernel picks; `tweak` sets
/// media flags.
pub fn server(data_dir: std::path::PathBuf, tweak: impl FnOnce(&mut MediaArgs)) -> TestServer {
    TestServer::start_cfg(2, true, data_dir, |cfg| {
        let mut args = MediaArgs {
            media_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        };
        tweak(&mut args);
        cfg.media = args.resolve(None).unwrap();
    })
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

/// `n` bytes that differ from object to object (`seed`).
pub fn object(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

/// Asks for a slot for `bytes`; the frame that answers it.
pub fn request_slot(c: &mut Client, id: u64, size: u64, sha: Vec<u8>) -> server_frame::Kind {
    c.send(client_frame::Kind::MediaSlot(MediaSlotRequest {
        client_req_id: id,
        size,
        mime: "image/jpeg".into(),
        sha256: sha,
    }));
    c.recv()
}

/// A slot for `bytes`.
pub fn slot(c: &mut Client, id: u64, bytes: &[u8]) -> MediaSlot {
    match request_slot(c, id, bytes.len() as u64, sha256(bytes)) {
        server_frame::Kind::MediaSlot(s) => {
            assert_eq!(s.client_req_id, id);
            s
        }
        other => panic!("expected a MediaSlot, got {other:?}"),
    }
}

/// An HTTPS client trusting the dev certificate in `data_dir`.
pub fn agent(data_dir: &Path) -> ureq::Agent {
    let cert = engine::tls::dev_cert_path(&shards::server::tls_dir(data_dir));
    crate::support::https_agent(&cert)
}

/// The answer to an HTTP request: status, the `x-switchboard-error` code (0 if none), body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub code: i32,
    pub body: Vec<u8>,
    pub content_range: Option<String>,
}

fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    let mut r = r.expect("the media service answers");
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let code = header(shards::media::http::ERROR_HEADER).map_or(0, |v| v.parse().unwrap());
    let content_range = header("content-range");
    let body = r
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .unwrap();
    Answer {
        status: r.status().as_u16(),
        code,
        body,
        content_range,
    }
}

/// PUTs `bytes` to `url`.
pub fn put(agent: &ureq::Agent, url: &str, bytes: &[u8]) -> Answer {
    answer(agent.put(url).send(bytes))
}

/// GETs `url`, with a `Range` header if given.
pub fn get(agent: &ureq::Agent, url: &str, range: Option<&str>) -> Answer {
    let mut req = agent.get(url);
    if let Some(r) = range {
        req = req.header("range", r);
    }
    answer(req.call())
}

/// A body that hands over its first half, says so, then waits for the test (forever, in
/// practice: until the server's death breaks the connection or the test ends).
pub struct Stalling {
    pub bytes: Vec<u8>,
    pub at: usize,
    pub halfway: Option<mpsc::Sender<()>>,
    pub hold: mpsc::Receiver<()>,
}

impl Read for Stalling {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let half = self.bytes.len() / 2;
        if self.at >= half {
            if let Some(tx) = self.halfway.take() {
                let _ = tx.send(());
            }
            // Released only when the test drops the sender.
            let _ = self.hold.recv();
            return Err(std::io::Error::other("stalled on purpose"));
        }
        let n = buf.len().min(half - self.at);
        buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Files in the media temp folder (uploads in progress, or a crash's leftovers).
pub fn temp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("media/tmp")).unwrap().count()
}

/// Waits (60 s at most) until `done()` holds.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
