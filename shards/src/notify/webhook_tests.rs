//! The webhook against local HTTP servers that answer, trickle, hang or fail.
// The fake servers' threads count requests: test harness, not a shard's path.
#![allow(clippy::disallowed_methods)]

use super::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;

use crate::notify::PinOutcome;

/// How the test server treats a request whose body holds `"phone":"+1555SLOW…"`.
#[derive(Clone, Copy)]
enum Slow {
    /// Answers its status line one byte every 250 ms (10 s in all).
    Trickle,
    /// Never answers (until the client goes away).
    Hang,
}

/// A loopback HTTP/1.1 server with keep-alive that counts connections and requests.
struct Server {
    url: String,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    bodies: mpsc::Receiver<String>,
}

fn server(slow: Slow, status: u16) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (tx, bodies) = mpsc::channel();
    let (c, r) = (connections.clone(), requests.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            c.fetch_add(1, Ordering::SeqCst);
            let (r, tx) = (r.clone(), tx.clone());
            std::thread::spawn(move || serve(stream, slow, status, &r, &tx));
        }
    });
    Server {
        url,
        connections,
        requests,
        bodies,
    }
}

/// Serves requests on one connection until the client closes it.
fn serve(
    stream: TcpStream,
    slow: Slow,
    status: u16,
    requests: &AtomicUsize,
    bodies: &mpsc::Sender<String>,
) {
    serve_on(&mut BufReader::new(stream), slow, status, requests, bodies);
}

/// Requests from `reader` (whose inner stream also takes the replies).
fn serve_on<S: Read + Write>(
    reader: &mut BufReader<S>,
    slow: Slow,
    status: u16,
    requests: &AtomicUsize,
    bodies: &mpsc::Sender<String>,
) {
    loop {
        let mut len = 0;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = String::from_utf8(body).unwrap();
        requests.fetch_add(1, Ordering::SeqCst);
        let is_slow = body.contains("+1555SLOW");
        let _ = bodies.send(body);
        if is_slow {
            match slow {
                Slow::Trickle => {
                    for b in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".repeat(2) {
                        std::thread::sleep(Duration::from_millis(250));
                        if reader.get_mut().write_all(&[b]).is_err() {
                            return;
                        }
                    }
                }
                Slow::Hang => {
                    // Until the client closes: a read returns 0 or fails.
                    let mut buf = [0u8; 64];
                    while matches!(reader.get_mut().read(&mut buf), Ok(1..)) {}
                }
            }
            return;
        }
        let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nok");
        if reader.get_mut().write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn limits(workers: usize, queue_max: usize, deadline_ms: u64, wait_ms: u64) -> WebhookLimits {
    WebhookLimits {
        workers,
        queue_max,
        deadline_ms,
        queue_wait_max_ms: wait_ms,
    }
}

/// Waits for the next outcome (bounded: a test never hangs).
fn next(rx: &mpsc::Receiver<PinOutcome>) -> PinOutcome {
    rx.recv_timeout(Duration::from_secs(30))
        .expect("an outcome within 30 s")
}

/// Waits until `n` requests reached the server.
fn wait_requests(s: &Server, n: usize) {
    let start = Instant::now();
    while s.requests.load(Ordering::SeqCst) < n {
        assert!(start.elapsed() < Duration::from_secs(30), "no request");
        std::thread::yield_now();
    }
}

#[test]
fn pins_are_posted_as_json_over_kept_alive_connections() {
    let s = server(Slow::Hang, 200);
    let hook = Webhook::start_with(&s.url, limits(2, 64, 5_000, 10_000)).unwrap();
    let (tx, rx) = mpsc::channel();
    for i in 0..20u64 {
        let phone = format!("+1555000{i:04}");
        hook.send_pin(&phone, "123456", PinReply::new(i, tx.clone()))
            .unwrap();
    }
    let mut tokens: Vec<u64> = (0..20)
        .map(|_| next(&rx))
        .map(|o| {
            assert_eq!(o.result, Ok(()));
            o.token
        })
        .collect();
    tokens.sort_unstable();
    assert_eq!(tokens, (0..20).collect::<Vec<_>>(), "each reported once");
    let first = s.bodies.recv().unwrap();
    assert!(
        first.starts_with(r#"{"kind":"pin","phone":"+1555000"#)
            && first.ends_with(r#","pin":"123456"}"#),
        "{first}"
    );
    assert_eq!(s.requests.load(Ordering::SeqCst), 20);
    assert!(
        s.connections.load(Ordering::SeqCst) <= 2,
        "kept alive: {} connections for 20 requests",
        s.connections.load(Ordering::SeqCst)
    );
}

#[test]
fn a_trickling_gateway_is_cut_at_the_deadline_and_other_pins_still_go_out() {
    let s = server(Slow::Trickle, 200);
    let deadline_ms = 1_000;
    let hook = Webhook::start_with(&s.url, limits(2, 64, deadline_ms, 10_000)).unwrap();
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    hook.send_pin("+1555SLOW0001", "111111", PinReply::new(0, tx.clone()))
        .unwrap();
    wait_requests(&s, 1);
    for i in 1..=10u64 {
        hook.send_pin(
            &format!("+1555000{i:04}"),
            "222222",
            PinReply::new(i, tx.clone()),
        )
        .unwrap();
    }
    // The ten others, while the slow one is held by the other worker.
    for _ in 1..=10 {
        let o = next(&rx);
        assert_ne!(
            o.token, 0,
            "every other PIN went out before the slow one ended"
        );
        assert_eq!(o.result, Ok(()));
    }
    let slow = next(&rx);
    let took = started.elapsed();
    assert_eq!(slow.token, 0);
    assert_eq!(slow.result, Err(SmsError::Deadline { deadline_ms }));
    // The trickle would take 10 s; the deadline holds (with room for a loaded machine).
    assert!(
        took >= Duration::from_millis(deadline_ms) && took < Duration::from_millis(4 * deadline_ms),
        "{took:?}"
    );
}

#[test]
fn a_full_queue_refuses_at_once_and_a_stale_pin_is_not_sent() {
    let s = server(Slow::Hang, 200);
    let hook = Webhook::start_with(&s.url, limits(1, 2, 800, 300)).unwrap();
    let (tx, rx) = mpsc::channel();
    hook.send_pin("+1555SLOW0001", "111111", PinReply::new(0, tx.clone()))
        .unwrap();
    wait_requests(&s, 1);
    // The one worker is held; two wait in the queue, the next is refused now.
    for i in 1..=2 {
        hook.send_pin(
            &format!("+1555000000{i}"),
            "1",
            PinReply::new(i, tx.clone()),
        )
        .unwrap();
    }
    let refused = hook.send_pin("+15550000003", "1", PinReply::new(3, tx.clone()));
    assert_eq!(refused, Err(SmsError::QueueFull { max: 2 }));
    assert_eq!(hook.dropped(), 1);
    let held = next(&rx);
    assert_eq!(
        (held.token, held.result),
        (0, Err(SmsError::Deadline { deadline_ms: 800 }))
    );
    // The two behind it waited past 300 ms: reported, never sent.
    for token in 1..=2 {
        let o = next(&rx);
        assert_eq!(o.token, token);
        assert!(
            matches!(o.result, Err(SmsError::Stale { max_ms: 300, .. })),
            "{:?}",
            o.result
        );
    }
    assert_eq!(s.requests.load(Ordering::SeqCst), 1);
}

#[test]
fn a_status_other_than_2xx_is_a_failed_pin() {
    let s = server(Slow::Hang, 503);
    let hook = Webhook::start_with(&s.url, limits(1, 4, 5_000, 10_000)).unwrap();
    let (tx, rx) = mpsc::channel();
    hook.send_pin("+15550000001", "1", PinReply::new(9, tx))
        .unwrap();
    let o = next(&rx);
    assert_eq!(o.result, Err(SmsError::Status { status: 503 }));
}

#[test]
fn urls_other_than_http_and_https_are_refused_at_start() {
    for url in [
        "ftp://example.com/x",
        "example.com/hook",
        "http:///nohost",
        "",
    ] {
        assert!(Webhook::start(url).is_err(), "{url}");
    }
    assert!(Webhook::start("https://127.0.0.1:9/hook").is_ok());
}

/// A loopback HTTPS server with the dev certificate in `dir`, answering 200.
fn tls_server(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let config =
        engine::tls::server_config(&engine::tls::CertSource::DevInDir(dir.into())).unwrap();
    let mut config = (*config).clone();
    config.alpn_protocols.clear(); // an HTTP server, not a Switchboard one
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://localhost:{}/hook",
        listener.local_addr().unwrap().port()
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            std::thread::spawn(move || {
                let (requests, (tx, _rx)) = (AtomicUsize::new(0), mpsc::channel());
                let tls = rustls::StreamOwned::new(conn, stream);
                serve_on(&mut BufReader::new(tls), Slow::Hang, 200, &requests, &tx);
            });
        }
    });
    (url, engine::tls::dev_cert_path(dir))
}

#[test]
fn https_gateways_are_verified() {
    let dir = std::env::temp_dir().join(format!("sb-webhook-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (url, ca) = tls_server(&dir);
    let (tx, rx) = mpsc::channel();
    // Trusting the gateway's CA: sent over TLS.
    let trusting = Webhook::start_trusting(&url, limits(1, 4, 5_000, 10_000), &ca).unwrap();
    trusting
        .send_pin("+15550000001", "1", PinReply::new(1, tx.clone()))
        .unwrap();
    assert_eq!(next(&rx).result, Ok(()));
    // The web PKI does not know a self-signed certificate: refused, not sent.
    let public = Webhook::start_with(&url, limits(1, 4, 5_000, 10_000)).unwrap();
    public
        .send_pin("+15550000001", "2", PinReply::new(2, tx))
        .unwrap();
    let refused = next(&rx);
    assert!(
        matches!(&refused.result, Err(SmsError::Transport(e)) if e.contains("ertificate")),
        "{:?}",
        refused.result
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn only_scheme_host_port_and_path_of_a_url_are_shown() {
    assert_eq!(
        redacted("http://user:PASSWORD@gw.example:8080/sms?api_key=SECRETKEY#frag"),
        "http://gw.example:8080/sms"
    );
    assert_eq!(redacted("https://gw.example/sms"), "https://gw.example/sms");
    assert_eq!(redacted("no url at all \u{0}"), "<unparsable URL>");
    let url = "http://user:PASSWORD@gw.example/sms?api_key=SECRETKEY";
    let text = scrubbed(
        format!("connect to {url} failed (user:PASSWORD, api_key=SECRETKEY)"),
        url,
        &redacted(url),
    );
    assert!(
        !text.contains("PASSWORD") && !text.contains("SECRETKEY"),
        "{text}"
    );
    assert!(text.contains("http://gw.example/sms"), "{text}");
}

#[test]
fn a_down_gateway_with_credentials_in_its_url_reports_none_of_them() {
    // A port nothing listens on: the connection is refused at once.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://user:PASSWORD@127.0.0.1:{port}/sms?api_key=SECRETKEY");
    let hook = Webhook::start_with(&url, limits(1, 4, 2_000, 10_000)).unwrap();
    let (tx, rx) = mpsc::channel();
    hook.send_pin("+15550001111", "123456", PinReply::new(1, tx))
        .unwrap();
    let err = next(&rx).result.expect_err("nothing listens there");
    let text = err.to_string();
    assert!(
        !text.contains("PASSWORD") && !text.contains("SECRETKEY"),
        "{text}"
    );
    let refused = Webhook::start("ftp://user:PASSWORD@h/x?api_key=SECRETKEY").unwrap_err();
    assert!(
        !refused.contains("PASSWORD") && !refused.contains("SECRETKEY"),
        "{refused}"
    );
}
