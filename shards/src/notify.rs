//! The two outside services a shard notifies: the SMS gateway (registration PINs) and the
//! push provider (an offline user has messages). Each is a trait with a dev implementation
//! (a file and a log line) and an HTTP webhook.
//!
//! Webhooks never block a shard: a POST is queued to one background worker thread (bounded;
//! a full queue drops the notification and counts it) that does blocking HTTP/1.1 to a
//! plain `http://host:port/path` endpoint (put TLS in front with a local proxy).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Notifications a webhook worker holds before it drops new ones.
pub const WEBHOOK_QUEUE_MAX: usize = 10_000;
/// Connect/read/write timeout of one webhook POST.
pub const WEBHOOK_TIMEOUT_MS: u64 = 5_000;

/// Sends a registration PIN to a phone.
pub trait SmsGateway: Send + Sync + std::fmt::Debug {
    /// Sends `pin` to `phone`; must not block for long.
    fn send_pin(&self, phone: &str, pin: &str);
}

/// Tells a phone's push service it has messages waiting.
pub trait PushProvider: Send + Sync + std::fmt::Debug {
    /// Notifies `phone`; must not block for long.
    fn notify(&self, phone: &str);
}

/// Dev SMS: appends `<phone> <pin>` to a file (the dev outbox) and logs it.
#[derive(Debug)]
pub struct DevOutbox {
    path: PathBuf,
}

impl DevOutbox {
    /// The outbox at `path`.
    pub fn new(path: PathBuf) -> Self {
        DevOutbox { path }
    }
}

impl SmsGateway for DevOutbox {
    fn send_pin(&self, phone: &str, pin: &str) {
        tracing::info!(%phone, outbox = %self.path.display(), "dev SMS: PIN written to outbox");
        let line = format!("{phone} {pin}\n");
        let res = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = res {
            tracing::error!(path = %self.path.display(), "dev SMS outbox: {e}");
        }
    }
}

/// Dev push: a log line.
#[derive(Debug, Default)]
pub struct DevPush;

impl PushProvider for DevPush {
    fn notify(&self, phone: &str) {
        tracing::info!(%phone, "push: messages waiting");
    }
}

/// POSTs JSON to an HTTP endpoint from a background thread.
#[derive(Debug, Clone)]
pub struct Webhook {
    tx: webhook_queue::Sender,
    dropped: Arc<AtomicU64>,
}

mod webhook_queue {
    /// The worker's queue (std's bounded channel: the notify path is not a hot path).
    pub type Sender = std::sync::mpsc::SyncSender<String>;
}

impl Webhook {
    /// Starts the worker for `url` (`http://host:port/path`).
    pub fn start(url: &str) -> Result<Webhook, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("webhook URL must be http://host:port/path, got {url}"))?;
        let (hostport, path) = match rest.split_once('/') {
            Some((h, p)) => (h.to_string(), format!("/{p}")),
            None => (rest.to_string(), "/".to_string()),
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(WEBHOOK_QUEUE_MAX);
        let dropped = Arc::new(AtomicU64::new(0));
        std::thread::Builder::new()
            .name("webhook".into())
            .spawn(move || {
                while let Ok(body) = rx.recv() {
                    if let Err(e) = post(&hostport, &path, &body) {
                        tracing::warn!(endpoint = %hostport, "webhook POST failed: {e}");
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Webhook { tx, dropped })
    }

    fn send(&self, body: String) {
        if self.tx.try_send(body).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "webhook queue full; notifications dropped");
            }
        }
    }

    /// Notifications dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

use engine::stats_text::json_str;

impl SmsGateway for Webhook {
    fn send_pin(&self, phone: &str, pin: &str) {
        self.send(format!(
            "{{\"kind\":\"pin\",\"phone\":{},\"pin\":{}}}",
            json_str(phone),
            json_str(pin)
        ));
    }
}

impl PushProvider for Webhook {
    fn notify(&self, phone: &str) {
        self.send(format!(
            "{{\"kind\":\"push\",\"phone\":{}}}",
            json_str(phone)
        ));
    }
}

fn post(hostport: &str, path: &str, body: &str) -> std::io::Result<()> {
    use std::net::ToSocketAddrs;
    let addr = hostport
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let t = Duration::from_millis(WEBHOOK_TIMEOUT_MS);
    let mut s = TcpStream::connect_timeout(&addr, t)?;
    s.set_read_timeout(Some(t))?;
    s.set_write_timeout(Some(t))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    let status = std::str::from_utf8(&head[9..12]).unwrap_or("000");
    if !status.starts_with('2') {
        return Err(std::io::Error::other(format!("HTTP status {status}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    #[test]
    fn webhook_posts_json_to_a_loopback_endpoint() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let hook = Webhook::start(&url).unwrap();
        SmsGateway::send_pin(&hook, "+15550001111", "123456");
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        assert_eq!(request_line, "POST /hook HTTP/1.1\r\n");
        let mut len = 0;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.strip_prefix("Content-Length: ") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).unwrap();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"kind":"pin","phone":"+15550001111","pin":"123456"}"#
        );
        conn.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
    }

    #[test]
    fn dev_outbox_appends_lines() {
        let dir = std::env::temp_dir().join(format!("sb-outbox-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sms-outbox.txt");
        let _ = std::fs::remove_file(&path);
        let o = DevOutbox::new(path.clone());
        o.send_pin("+15550001111", "000001");
        o.send_pin("+15550002222", "000002");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "+15550001111 000001\n+15550002222 000002\n");
    }
}
