//! Shared helpers for the server's integration tests: start a real server on loopback (TLS
//! with a dev certificate in a fresh data directory, or plaintext) and talk to it with
//! blocking clients over real sockets, in protobuf frames.
#![allow(dead_code)]

pub mod admin;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use proto::codec::{decode_server, encode_frame};
use proto::v1::{client_frame, server_frame, ClientFrame, ServerFrame};
use shards::config::ServerConfig;
use testkit::FrameClient;

/// A server running in this process, stopped on drop.
pub struct TestServer {
    pub rt: Option<engine::Runtime>,
    pub addr: SocketAddr,
    pub cfg: ServerConfig,
    /// The media service, when `cfg.media` asked for one (stopped with the server).
    pub media: Option<shards::media::MediaService>,
}

impl TestServer {
    pub fn start(shards: usize, tls: bool) -> TestServer {
        Self::start_with(shards, tls, testkit::temp_dir("server"))
    }

    pub fn start_with(shards: usize, tls: bool, data_dir: PathBuf) -> TestServer {
        Self::start_cfg(shards, tls, data_dir, |_| {})
    }

    pub fn start_cfg(
        shards: usize,
        tls: bool,
        data_dir: PathBuf,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let cfg = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            shards,
            shards_explicit: true,
            data_dir,
            tls,
            cert_key: None,
            huge_pages: false,
            realtime: false,
            pin_cpus: false,
            max_connections: Some(2000),
            idle_timeout_ms: 60_000,
            load_test_secret: Some("farm-secret".into()),
            sms_webhook: None,
            push_webhook: None,
            compact_min_bytes: messaging::state::limits::COMPACT_MIN_BYTES,
            commit_window_us: messaging::state::limits::COMMIT_WINDOW_US_DEFAULT,
            coalesce_us: 0,
            coalesce: engine::coalesce::CoalesceMode::default(),
            salvage: false,
            log_faults: None,
            handshake_timeout_ms: engine::config::HANDSHAKE_TIMEOUT_MS_DEFAULT,
            frame_timeout_ms: engine::config::FRAME_TIMEOUT_MS_DEFAULT,
            login_timeout_ms: messaging::state::limits::LOGIN_TIMEOUT_MS_DEFAULT,
            prelogin_conns_per_prefix_max: engine::config::PRELOGIN_CONNS_PER_PREFIX_MAX_DEFAULT,
            overload: Default::default(),
            // Tests that read statistics turn the admin endpoint on (port 0) themselves.
            admin: None,
            stats: true,
            alarms: shards::config::AlarmThresholds::default(),
            signup: Default::default(),
            users: Default::default(),
            media: None,
            cluster: None,
        };
        let mut cfg = cfg;
        tweak(&mut cfg);
        let (rt, media) = shards::server::start_all(&cfg).expect("server starts");
        TestServer {
            addr: rt.local_addr(),
            rt: Some(rt),
            cfg,
            media,
        }
    }

    pub fn client(&self) -> Client {
        if self.cfg.tls {
            let cert = engine::tls::dev_cert_path(&shards::server::tls_dir(&self.cfg.data_dir));
            Client::tls(self.addr, &cert)
        } else {
            Client::plain(self.addr)
        }
    }

    /// A client whose connection comes from `src` (all of 127.0.0.0/8 is loopback), so
    /// budgets per source address and prefix can be tested on one box.
    pub fn client_from(&self, src: std::net::Ipv4Addr) -> Client {
        let conn = if self.cfg.tls {
            let cert = engine::tls::dev_cert_path(&shards::server::tls_dir(&self.cfg.data_dir));
            FrameClient::tls_from(src, self.addr, &cert)
        } else {
            FrameClient::plain_from(src, self.addr)
        };
        Client { conn }
    }

    pub fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.stop();
            rt.join().expect("clean shutdown");
        }
        self.media = None;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A blocking client speaking protobuf frames: the shared frame client with the codec.
pub struct Client {
    conn: FrameClient,
}

impl Client {
    pub fn plain(addr: SocketAddr) -> Client {
        Client {
            conn: FrameClient::plain(addr),
        }
    }

    pub fn tls(addr: SocketAddr, cert: &std::path::Path) -> Client {
        Client {
            conn: FrameClient::tls(addr, cert),
        }
    }

    /// A TLS client made with `config` (a resuming one, say), handshake done; also how the
    /// handshake went (full or resumed).
    pub fn tls_with(
        addr: SocketAddr,
        config: std::sync::Arc<rustls::ClientConfig>,
    ) -> (Client, rustls::HandshakeKind) {
        let (conn, kind) = FrameClient::tls_with(addr, config);
        (Client { conn }, kind)
    }

    /// [`Client::tls`], or `None` when the connection is refused (a server gone).
    pub fn try_tls(addr: SocketAddr, cert: &std::path::Path) -> Option<Client> {
        Some(Client {
            conn: FrameClient::try_tls(addr, cert)?,
        })
    }

    pub fn send(&mut self, kind: client_frame::Kind) {
        self.write_raw(&raw_frame(kind));
    }

    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.conn.write_raw(bytes);
    }

    pub fn recv(&mut self) -> server_frame::Kind {
        let body = self.conn.recv();
        let frame: ServerFrame = decode_server(&body).expect("server frame decodes");
        frame.kind.expect("server frames are never empty")
    }

    /// The next frame, or `None` once the server has closed the connection.
    pub fn try_recv(&mut self) -> Option<server_frame::Kind> {
        let body = self.conn.try_recv()?;
        let frame: ServerFrame = decode_server(&body).expect("server frame decodes");
        frame.kind
    }

    /// Writes raw bytes; false when the server has closed the connection.
    pub fn try_write_raw(&mut self, bytes: &[u8]) -> bool {
        self.conn.try_write_raw(bytes).is_ok()
    }

    /// Writes a frame; false when the server has closed the connection.
    pub fn try_send(&mut self, kind: client_frame::Kind) -> bool {
        self.try_write_raw(&raw_frame(kind))
    }

    /// True when the server closed the connection within the read timeout (bytes before the
    /// close are skipped).
    pub fn is_closed(&mut self) -> bool {
        self.conn.is_closed()
    }
}

/// The protocol version every test client speaks.
pub const V: u32 = proto::PROTOCOL_VERSION;

impl TestServer {
    /// The last PIN the dev SMS outbox holds for `phone`.
    pub fn pin_for(&self, phone: &str) -> String {
        let path = self.cfg.data_dir.join("sms-outbox.txt");
        let text = std::fs::read_to_string(&path).expect("sms outbox exists");
        let line = text
            .lines()
            .rev()
            .find(|l| l.starts_with(&format!("{phone} ")))
            .expect("a PIN was sent");
        line.split(' ').nth(1).unwrap().to_string()
    }

    /// Registers `phone` on a fresh connection and returns its device key.
    pub fn register(&self, phone: &str) -> Vec<u8> {
        let mut c = self.client();
        c.send(client_frame::Kind::Register(proto::v1::Register {
            protocol_version: V,
            phone: phone.into(),
        }));
        match c.recv() {
            server_frame::Kind::PinSent(p) => assert_eq!(p.phone, phone),
            other => panic!("expected PinSent, got {other:?}"),
        }
        let pin = self.pin_for(phone);
        c.send(client_frame::Kind::Verify(proto::v1::Verify {
            protocol_version: V,
            phone: phone.into(),
            pin,
        }));
        match c.recv() {
            server_frame::Kind::Verified(v) => v.device_key,
            other => panic!("expected Verified, got {other:?}"),
        }
    }

    /// A logged-in client for `phone` with `key`.
    pub fn login(&self, phone: &str, key: &[u8]) -> Client {
        let mut c = self.client();
        c.login(phone, key);
        c
    }
}

impl Client {
    /// Logs in and returns how many items were queued.
    pub fn login(&mut self, phone: &str, key: &[u8]) -> u32 {
        self.send(client_frame::Kind::Login(proto::v1::Login {
            protocol_version: V,
            phone: phone.into(),
            device_key: key.to_vec(),
        }));
        match self.recv() {
            server_frame::Kind::LoggedIn(l) => l.queued,
            other => panic!("expected LoggedIn for {phone}, got {other:?}"),
        }
    }

    /// Load-test login (the server's secret is "farm-secret"); returns how many items were
    /// queued.
    pub fn load_test_login(&mut self, phone: &str) -> u32 {
        self.load_test_logged_in(phone).queued
    }

    /// Load-test login, returning the server's whole `LoggedIn` (its user id, say).
    pub fn load_test_logged_in(&mut self, phone: &str) -> proto::v1::LoggedIn {
        self.send(client_frame::Kind::LoadTestLogin(
            proto::v1::LoadTestLogin {
                protocol_version: V,
                phone: phone.into(),
                secret: b"farm-secret".to_vec(),
            },
        ));
        match self.recv() {
            server_frame::Kind::LoggedIn(l) => l,
            other => panic!("expected LoggedIn for {phone}, got {other:?}"),
        }
    }

    pub fn send_text(&mut self, to: &str, client_msg_id: u64, body: &str) {
        self.send(client_frame::Kind::Send(proto::v1::SendMessage {
            to: to.into(),
            client_msg_id,
            body: body.as_bytes().to_vec().into(),
            media: None,
        }));
    }

    pub fn ack(&mut self, ids: Vec<u64>) {
        self.send(client_frame::Kind::Ack(proto::v1::Ack {
            server_msg_ids: ids,
        }));
    }

    pub fn read(&mut self, ids: Vec<u64>) {
        self.send(client_frame::Kind::Read(proto::v1::Read {
            server_msg_ids: ids,
        }));
    }

    /// Sets who may add this user to groups, and waits until the server has it.
    pub fn group_privacy(&mut self, who: proto::v1::GroupAddPolicy) {
        self.send(client_frame::Kind::GroupPrivacy(proto::v1::GroupPrivacy {
            who_can_add: who as i32,
        }));
        self.sync();
    }

    pub fn expect_message(&mut self) -> proto::v1::Message {
        match self.recv() {
            server_frame::Kind::Message(m) => m,
            other => panic!("expected a Message, got {other:?}"),
        }
    }

    pub fn expect_error(&mut self) -> proto::v1::Error {
        match self.recv() {
            server_frame::Kind::Error(e) => e,
            other => panic!("expected an Error, got {other:?}"),
        }
    }

    /// The next `n` frames.
    pub fn recv_n(&mut self, n: usize) -> Vec<server_frame::Kind> {
        (0..n).map(|_| self.recv()).collect()
    }

    /// Sends a ping and reads up to its pong, returning every frame before it.
    pub fn sync(&mut self) -> Vec<server_frame::Kind> {
        let nonce = 0xfeed_0000 + std::process::id() as u64;
        self.send(client_frame::Kind::Ping(proto::v1::Ping { nonce }));
        let mut before = Vec::new();
        loop {
            match self.recv() {
                server_frame::Kind::Pong(p) if p.nonce == nonce => return before,
                other => before.push(other),
            }
        }
    }
}

/// `n` phone numbers whose home is shard `shard` of `shards`, starting the search at `from`.
pub fn phones_on(shard: usize, shards: usize, n: usize, from: u64) -> Vec<String> {
    (from..)
        .map(|i| format!("+1555{i:07}"))
        .filter(|p| messaging::state::home::home_of_phone(p, shards).0 == shard)
        .take(n)
        .collect()
}

/// Starts the `switchboard` binary (2 shards, unpinned, load-test secret "farm-secret", no
/// admin endpoint) with `extra` flags on a port the kernel picks, and returns once it listens.
/// The secret travels in the environment, as the server takes it.
pub fn spawn_binary(data: &std::path::Path, extra: &[&str]) -> (std::process::Child, SocketAddr) {
    let mut args = vec!["--shards", "2", "--no-admin"];
    args.extend(extra);
    let mut cmd = switchboard_command(&args);
    cmd.env(shards::config::LOAD_TEST_SECRET_ENV, "farm-secret")
        .arg("--data-dir")
        .arg(data);
    let (child, line) = listening(cmd);
    let addr = shards::server::listening_addr(&line).expect("the listening line has addr=");
    (child, addr)
}

/// Starts the `switchboard` binary on `127.0.0.1:0` with `args` (plus `--no-pin` and
/// `--data-dir`) and returns the child with the address it reports in its "switchboard
/// listening" log line.
///
/// The port comes from the server itself: a test that picked a "free" port first and passed
/// it in raced every other test doing the same, and once connected to another test's server.
pub fn spawn_switchboard(
    data: &std::path::Path,
    args: &[&str],
) -> (std::process::Child, SocketAddr) {
    let (child, line) = spawn_until_listening(data, args);
    let addr = shards::server::listening_addr(&line).expect("the listening line has addr=");
    (child, addr)
}

/// [`spawn_switchboard`], returning the whole "switchboard listening" log line.
pub fn spawn_until_listening(
    data: &std::path::Path,
    args: &[&str],
) -> (std::process::Child, String) {
    let mut cmd = switchboard_command(args);
    cmd.arg("--data-dir").arg(data);
    listening(cmd)
}

/// The `switchboard` binary with `args`, `--no-pin`, on `127.0.0.1:0` unless `args` names a
/// `--listen` address, logging plain text at info to a piped stderr.
pub fn switchboard_command(args: &[&str]) -> std::process::Command {
    let listen: &[&str] = if args.contains(&"--listen") {
        &[]
    } else {
        &["--listen", "127.0.0.1:0"]
    };
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.args(listen)
        .arg("--no-pin")
        .args(args)
        .env("NO_COLOR", "1")
        // SB_TEST_SERVER_RUST_LOG (with SB_TEST_SERVER_LOG, which echoes the log) chooses
        // the servers' log filter when a test is being looked into.
        .env(
            "RUST_LOG",
            std::env::var("SB_TEST_SERVER_RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// A server process a test started itself: killed and reaped when the test ends, a failed
/// assertion included (`std::process::Child` alone leaves it running after the test).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` (from [`switchboard_command`]) and returns once it logs its "switchboard
/// listening" line, with that line; its log keeps being drained.
pub fn listening(mut cmd: std::process::Command) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = cmd.spawn().unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let line = loop {
        let Some(Ok(line)) = lines.next() else {
            let status = child.wait().unwrap();
            panic!(
                "switchboard exited ({status}) before listening:\n{}",
                seen.join("\n")
            );
        };
        if shards::server::listening_addr(&line).is_some() {
            break line;
        }
        seen.push(line);
    };
    // Keep draining its log so the server never blocks on a full pipe; with
    // `SB_TEST_SERVER_LOG` set, echo it (the test's own output, e.g. under `--nocapture`).
    let echo = std::env::var_os("SB_TEST_SERVER_LOG").is_some();
    let pid = child.id();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if echo {
                eprintln!("[server {pid}] {line}");
            }
        }
    });
    (child, line)
}

/// One client frame, encoded for the wire (for tests that drive raw sockets).
pub fn raw_frame(kind: client_frame::Kind) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&ClientFrame { kind: Some(kind) }, &mut out).unwrap();
    out
}

/// The next server frame on a raw socket; `None` once the connection is gone.
pub fn read_raw_frame(s: &mut TcpStream) -> Option<server_frame::Kind> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    decode_server(&body).ok()?.kind
}

/// Pseudo-random moments to SIGKILL a server at: 50–400 ms apart, from a seed printed once
/// (so a failing run can be read back from its log).
pub struct KillMoments(u64);

impl KillMoments {
    pub fn new(test: &str) -> KillMoments {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("{test} seed {seed}");
        KillMoments(seed)
    }

    /// How long to let the next round run before the kill.
    pub fn next(&mut self) -> Duration {
        let s = &mut self.0;
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        Duration::from_millis(50 + *s % 351)
    }
}

/// An HTTPS (and plain HTTP) client trusting the certificate at `cert`, for the media
/// service: a status is an answer, not an error; 60 s per request.
pub fn https_agent(cert: &std::path::Path) -> ureq::Agent {
    let pem = std::fs::read(cert).unwrap();
    let roots: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|i| match i.unwrap() {
            ureq::tls::PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(roots)))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent()
}
