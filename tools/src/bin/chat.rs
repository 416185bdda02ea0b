//! `chat`: a command-line Switchboard client for a person.
//!
//! ```text
//! chat register +15551234567           # the server texts a PIN (dev: <data_dir>/sms-outbox.txt)
//! chat verify +15551234567 123456      # stores this device's key in the config file
//! chat send +15557654321 "hello"       # ✓ once the server has it durably
//! chat listen --timeout 10             # prints messages and receipts (✓✓, read), acks them
//! chat send-file +15557654321 cat.jpg --caption "look"   # uploads, then sends the link
//! chat listen --save-dir ./received    # also downloads media, checked against its SHA-256
//! chat group create friends +1555… +1555…
//! chat group send 42 "hi all"
//! ```
//!
//! The config file (default `$XDG_CONFIG_HOME/switchboard/chat.toml` or
//! `~/.config/switchboard/chat.toml`, mode 0600) keeps the phone, the device key, and the
//! server and CA given at registration.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use proto::v1::{
    server_frame::Kind, Ack, ErrorCode, GroupAdd, GroupAddPolicy, GroupCreate, GroupMembersRequest,
    GroupPrivacy, GroupRemove, GroupSend, Login, Ping, Read, ReceiptKind, Register, SendMessage,
    ServerFrame, Verify,
};
use proto::ClientFrame;
use proto::PROTOCOL_VERSION;
use tools::chat_config::{self, ChatConfig};
use tools::client::{Client, ClientError};

/// `println!` for a line that may hold text from the network (a message, a phone number, a
/// group name, a server's error detail): control characters and bidi overrides are shown as
/// escapes (`tools::terminal`), never sent to the terminal. Every line `chat` prints goes
/// through this or `complain!`.
macro_rules! say {
    ($($arg:tt)*) => {
        println!("{}", tools::terminal::printable(&format!($($arg)*)))
    };
}

/// `eprintln!`, escaped like [`say!`].
macro_rules! complain {
    ($($arg:tt)*) => {
        eprintln!("{}", tools::terminal::printable(&format!($($arg)*)))
    };
}
use tools::net::TlsClient;

/// Default server address.
const SERVER_DEFAULT: &str = "127.0.0.1:5222";
/// Redirects one login follows (a user has one home box; more means the boxes disagree).
const REDIRECTS_MAX: u32 = 3;
/// Where a server started in the current directory keeps its dev certificate.
const DEV_CERT_DEFAULT: &str = "./switchboard-data/tls/dev-cert.pem";
/// Heartbeat period while listening (the server closes connections idle for 300 s).
const PING_EVERY: Duration = Duration::from_secs(60);
/// After stdin closes, how long `listen` still waits for the queued frames to arrive.
const QUEUED_GRACE: Duration = Duration::from_secs(3);

/// A command-line Switchboard client.
#[derive(Debug, Parser)]
#[command(name = "chat", version)]
struct Args {
    /// Server address (default: from the config file, else 127.0.0.1:5222).
    #[arg(long, global = true)]
    server: Option<String>,
    /// Config file with this device's phone and key.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Certificate to trust (default: from the config file, else ./switchboard-data/tls/dev-cert.pem).
    #[arg(long, global = true, conflicts_with = "no_tls")]
    ca: Option<PathBuf>,
    /// Plaintext (only for a server started with --no-tls).
    #[arg(long, global = true)]
    no_tls: bool,
    /// Name the server certificate must carry.
    #[arg(long, global = true, default_value = tools::net::SERVER_NAME_DEFAULT)]
    server_name: String,
    /// Seconds to wait for each answer.
    #[arg(long, global = true, default_value_t = 10)]
    wait: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Ask for a PIN for this phone number (E.164, e.g. +15551234567).
    Register { phone: String },
    /// Prove the number with its PIN; stores the device key.
    Verify { phone: String, pin: String },
    /// Send a message; prints ✓ when the server has it.
    Send {
        to: String,
        text: String,
        /// Also wait this many seconds for the ✓✓ delivery receipt.
        #[arg(long)]
        wait_delivered: Option<u64>,
    },
    /// Upload a file (photo, voice note, video) and send it; prints ✓ when the server has
    /// the message (needs a server with --media-listen).
    SendFile {
        to: String,
        path: PathBuf,
        /// Text sent with the file.
        #[arg(long, default_value = "")]
        caption: String,
    },
    /// Print incoming messages and receipts, ack them; stop at --timeout or when stdin closes.
    Listen {
        /// Stop after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// Do not send read receipts.
        #[arg(long)]
        no_read: bool,
        /// Download received media into this folder (checked against its SHA-256).
        #[arg(long)]
        save_dir: Option<PathBuf>,
    },
    /// Group commands.
    #[command(subcommand)]
    Group(GroupCmd),
}

#[derive(Debug, Subcommand)]
enum GroupCmd {
    /// Create a group with these members (you are its admin).
    Create { name: String, members: Vec<String> },
    /// Add members (admin only).
    Add { group: u64, members: Vec<String> },
    /// Remove members (admin, or yourself to leave).
    Remove { group: u64, members: Vec<String> },
    /// Send to every member.
    Send { group: u64, text: String },
    /// Show name, admin and members.
    Members { group: u64 },
    /// Who may add you to groups: contacts (the default: numbers you subscribe to),
    /// everyone or nobody. The server keeps it until it restarts.
    Privacy { who: String },
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        complain!("chat: {e:#}");
        std::process::exit(1);
    }
}

/// Everything a command needs: the config and how to reach the server.
struct Ctx {
    path: PathBuf,
    cfg: ChatConfig,
    addr: SocketAddr,
    tls: Option<TlsClient>,
    wait: Duration,
    server_flag: Option<String>,
    ca_flag: Option<PathBuf>,
    /// The certificate the chat connection trusts (`None` with --no-tls); media HTTPS too.
    ca: Option<PathBuf>,
}

fn run(a: Args) -> anyhow::Result<()> {
    let path = match &a.config {
        Some(p) => p.clone(),
        None => chat_config::default_path()?,
    };
    let cfg = ChatConfig::load(&path)?;
    let server = a
        .server
        .clone()
        .or_else(|| cfg.server.clone())
        .unwrap_or_else(|| SERVER_DEFAULT.into());
    let addr = server
        .to_socket_addrs()
        .with_context(|| format!("bad server address {server:?}"))?
        .next()
        .with_context(|| format!("server address {server:?} resolves to nothing"))?;
    let mut trusted = None;
    let tls = if a.no_tls {
        None
    } else {
        let ca =
            a.ca.clone()
                .or_else(|| cfg.ca.clone())
                .unwrap_or_else(|| DEV_CERT_DEFAULT.into());
        if !ca.exists() {
            bail!(
                "no certificate to trust at {}: pass --ca FILE (a dev server keeps it in \
                 <data_dir>/tls/dev-cert.pem), or --no-tls for a plaintext server",
                ca.display()
            );
        }
        let client = TlsClient::trusting(&ca, &a.server_name)?;
        trusted = Some(ca);
        Some(client)
    };
    let mut ctx = Ctx {
        path,
        cfg,
        addr,
        tls,
        wait: Duration::from_secs(a.wait.max(1)),
        server_flag: a.server.clone(),
        ca_flag: a.ca.clone(),
        ca: trusted,
    };
    match a.cmd {
        Cmd::Register { phone } => register(&mut ctx, &phone),
        Cmd::Verify { phone, pin } => verify(&mut ctx, &phone, &pin),
        Cmd::Send {
            to,
            text,
            wait_delivered,
        } => send(&mut ctx, &to, &text, wait_delivered),
        Cmd::SendFile { to, path, caption } => send_file(&mut ctx, &to, &path, &caption),
        Cmd::Listen {
            timeout,
            no_read,
            save_dir,
        } => listen(&mut ctx, timeout, !no_read, save_dir),
        Cmd::Group(g) => group(&mut ctx, g),
    }
}

impl Ctx {
    fn connect(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(self.addr, self.tls.as_ref(), self.wait)?)
    }

    /// Connects and logs in with the stored key.
    fn login(&self) -> anyhow::Result<(Client, u32)> {
        let (Some(phone), Some(key)) = (&self.cfg.phone, self.cfg.key_bytes(&self.path)?) else {
            bail!(
                "no registered device in {}: run `chat register PHONE`, then `chat verify PHONE PIN`",
                self.path.display()
            );
        };
        let login = Login {
            protocol_version: PROTOCOL_VERSION,
            phone: phone.clone(),
            device_key: key.to_vec(),
        };
        let answer = self
            .ask(login.into(), "login", |k| match k {
                Kind::LoggedIn(l) => Some(*l),
                _ => None,
            })
            .map(|(c, l, _)| (c, l));
        match answer {
            Ok((c, l)) => Ok((c, l.queued)),
            Err(e) => match e.downcast_ref::<ClientError>() {
                Some(ClientError::Refused { name, .. }) if name == "BAD_KEY" => bail!(
                    "the server refused this device's key for {phone} (revoked, or the number \
                     was registered on another device): run `chat register {phone}` and \
                     `chat verify` again"
                ),
                _ => Err(e),
            },
        }
    }

    /// Sends `frame` and waits for the answer `pick` takes. A box of a cluster that is not
    /// the phone's home answers `Redirect`: the frame goes again to the home box (at most
    /// [`REDIRECTS_MAX`] times). Returns the connection, the answer, and the home box's
    /// address when a redirect was followed.
    fn ask<T>(
        &self,
        frame: ClientFrame,
        what: &'static str,
        mut pick: impl FnMut(&Kind) -> Option<T>,
    ) -> anyhow::Result<(Client, T, Option<String>)> {
        let mut c = self.connect()?;
        let mut home = None;
        for _ in 0..=REDIRECTS_MAX {
            c.send(frame.clone())?;
            let answer = c.wait_for(
                self.wait,
                what,
                |k| match k {
                    Kind::Redirect(r) => Some(Err(r.addr.clone())),
                    k => pick(k).map(Ok),
                },
                |_| true,
                |_| {},
            )?;
            match answer {
                Ok(t) => return Ok((c, t, home)),
                Err(addr) => {
                    let to = addr
                        .to_socket_addrs()
                        .ok()
                        .and_then(|mut a| a.next())
                        .with_context(|| {
                            format!("the server redirected to {addr:?}, which does not resolve")
                        })?;
                    eprintln!("chat: the phone's home box is {addr}: asking there");
                    c = Client::connect(to, self.tls.as_ref(), self.wait)?;
                    home = Some(addr);
                }
            }
        }
        bail!("{what}: more than {REDIRECTS_MAX} redirects (the boxes disagree about the phone's home)")
    }

    /// Remembers the server and CA given on the command line (at registration), and the
    /// phone's home box when a box of a cluster redirected there.
    fn remember_server(&mut self, home: Option<String>) {
        if let Some(home) = home {
            self.cfg.server = Some(home);
        } else if let Some(s) = &self.server_flag {
            self.cfg.server = Some(s.clone());
        }
        if let Some(ca) = &self.ca_flag {
            self.cfg.ca = Some(std::fs::canonicalize(ca).unwrap_or_else(|_| ca.clone()));
        }
    }
}

fn check_phone(p: &str) -> anyhow::Result<()> {
    if !proto::validate::is_e164(p) {
        bail!("{p:?} is not an E.164 phone number (+ then 8 to 15 digits, e.g. +15551234567)");
    }
    Ok(())
}

fn register(ctx: &mut Ctx, phone: &str) -> anyhow::Result<()> {
    check_phone(phone)?;
    let register = Register {
        protocol_version: PROTOCOL_VERSION,
        phone: phone.into(),
    };
    let (_, sent, home) = ctx.ask(register.into(), "register", |k| match k {
        Kind::PinSent(p) => Some(p.clone()),
        _ => None,
    })?;
    ctx.remember_server(home);
    if ctx.cfg.phone.as_deref() != Some(phone) {
        ctx.cfg.phone = Some(phone.into());
        ctx.cfg.device_key = None;
    }
    ctx.cfg.save(&ctx.path)?;
    say!(
        "PIN sent to {} by SMS (valid {} s). Next: chat verify {} PIN",
        sent.phone,
        sent.expires_in_s,
        sent.phone
    );
    Ok(())
}

fn verify(ctx: &mut Ctx, phone: &str, pin: &str) -> anyhow::Result<()> {
    check_phone(phone)?;
    let verify = Verify {
        protocol_version: PROTOCOL_VERSION,
        phone: phone.into(),
        pin: pin.into(),
    };
    let (_, v, home) = ctx.ask(verify.into(), "verify", |k| match k {
        Kind::Verified(v) => Some(v.clone()),
        _ => None,
    })?;
    ctx.remember_server(home);
    ctx.cfg.phone = Some(v.phone.clone());
    ctx.cfg.set_key(&v.device_key);
    ctx.cfg.save(&ctx.path)?;
    say!(
        "verified {}; this device's key is saved in {}",
        v.phone,
        ctx.path.display()
    );
    Ok(())
}

/// Sends `msg` and waits for its `ServerAck` (the server holds it durably): its server id.
fn send_message(c: &mut Client, wait: Duration, msg: SendMessage) -> anyhow::Result<u64> {
    let cmid = msg.client_msg_id;
    c.send(msg)?;
    Ok(c.wait_for(
        wait,
        "send",
        |k| match k {
            Kind::ServerAck(a) if a.client_msg_id == cmid => Some(a.server_msg_id),
            _ => None,
        },
        |e| e.client_msg_id == cmid || e.client_msg_id == 0,
        |_| {},
    )?)
}

fn send(ctx: &mut Ctx, to: &str, text: &str, wait_delivered: Option<u64>) -> anyhow::Result<()> {
    check_phone(to)?;
    let (mut c, _) = ctx.login()?;
    let cmid = ctx.cfg.take_client_msg_id();
    ctx.cfg.save(&ctx.path)?;
    let server_id = send_message(
        &mut c,
        ctx.wait,
        SendMessage {
            to: to.into(),
            client_msg_id: cmid,
            body: text.as_bytes().to_vec().into(),
            media: None,
        },
    )?;
    say!("✓ sent to {to} (message {server_id})");
    if let Some(secs) = wait_delivered {
        let r = c.wait_for(
            Duration::from_secs(secs),
            "delivery receipt",
            |k| match k {
                Kind::Receipt(r) if r.server_msg_id == server_id => Some(r.clone()),
                _ => None,
            },
            |e| e.client_msg_id == 0,
            |_| {},
        )?;
        say!("{}", receipt_line(&r));
        if r.receipt_id != 0 {
            c.send(Ack {
                server_msg_ids: vec![r.receipt_id],
            })?;
        }
    }
    Ok(())
}

/// `✓✓ delivered to +1555… (message 12)` or `read by …`.
fn receipt_line(r: &proto::v1::Receipt) -> String {
    let group = if r.group_id != 0 {
        format!(" in group {}", r.group_id)
    } else {
        String::new()
    };
    match ReceiptKind::try_from(r.kind) {
        Ok(ReceiptKind::Read) => {
            format!("✓✓ read by {}{group} (message {})", r.by, r.server_msg_id)
        }
        _ => format!(
            "✓✓ delivered to {}{group} (message {})",
            r.by, r.server_msg_id
        ),
    }
}

/// `HH:MM:SS` (UTC) of a Unix time in ms.
fn clock(ms: u64) -> String {
    let s = ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn listen(
    ctx: &mut Ctx,
    timeout: Option<u64>,
    send_read: bool,
    save_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let saver = match save_dir {
        Some(dir) => Some((tools::media::MediaHttp::new(ctx.ca.as_deref())?, dir)),
        None => None,
    };
    let (mut c, queued) = ctx.login()?;
    let me = ctx.cfg.phone.clone().unwrap_or_default();
    say!("logged in as {me}; {queued} waiting");
    let stdin_closed = Arc::new(AtomicBool::new(false));
    {
        let flag = stdin_closed.clone();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            flag.store(true, Ordering::Release);
        });
    }
    let start = Instant::now();
    let end = timeout.map(|s| start + Duration::from_secs(s));
    let mut seen_queued = 0u32;
    let mut shown = tools::shown::Shown::load(&tools::shown::Shown::path_for(&ctx.path));
    let mut next_ping = start + PING_EVERY;
    loop {
        let now = Instant::now();
        if end.is_some_and(|e| now >= e) {
            break;
        }
        // Input closed: leave once the queued frames are printed (or after a grace period).
        if stdin_closed.load(Ordering::Acquire)
            && (seen_queued >= queued || now >= start + QUEUED_GRACE)
        {
            break;
        }
        if now >= next_ping {
            c.send(Ping { nonce: 1 })?;
            next_ping = now + PING_EVERY;
        }
        let slice = now + Duration::from_millis(200);
        let f = match c.recv_until(end.map_or(slice, |e| e.min(slice))) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(ClientError::Closed) => bail!("the server closed the connection"),
            Err(e) => return Err(e.into()),
        };
        seen_queued += show(&mut c, f, send_read, &mut shown, saver.as_ref())? as u32;
    }
    Ok(())
}

/// Prints one frame and acks what needs acking; true for a message or receipt. A message
/// already shown (a redelivery after a server crash: same sender and client id) is acked
/// and not printed again.
fn show(
    c: &mut Client,
    f: ServerFrame,
    send_read: bool,
    shown: &mut tools::shown::Shown,
    saver: Option<&(tools::media::MediaHttp, PathBuf)>,
) -> anyhow::Result<bool> {
    let Some(k) = f.kind else { return Ok(false) };
    match k {
        Kind::Message(m) if !shown.first_time(&m.from, m.client_msg_id) => {
            c.send(Ack {
                server_msg_ids: vec![m.server_msg_id],
            })?;
            Ok(true)
        }
        Kind::Message(m) => {
            let text = String::from_utf8_lossy(&m.body);
            let group = if m.group_id != 0 {
                format!("[group {}] ", m.group_id)
            } else {
                String::new()
            };
            say!("[{}] {group}{}: {text}", clock(m.sent_at_ms), m.from);
            if let (Some(media), Some((http, dir))) = (&m.media, saver) {
                save_media(http, dir, media);
            }
            c.send(Ack {
                server_msg_ids: vec![m.server_msg_id],
            })?;
            if send_read {
                c.send(Read {
                    server_msg_ids: vec![m.server_msg_id],
                })?;
            }
            Ok(true)
        }
        Kind::Receipt(r) => {
            say!("{}", receipt_line(&r));
            if r.receipt_id != 0 {
                c.send(Ack {
                    server_msg_ids: vec![r.receipt_id],
                })?;
            }
            Ok(true)
        }
        Kind::Presence(p) => {
            if p.online {
                say!("{} is online", p.phone);
            } else {
                say!("{} was last seen at {}", p.phone, clock(p.last_seen_ms));
            }
            Ok(false)
        }
        Kind::GroupUpdated(g) => {
            say!("group {} members: {}", g.group_id, g.members.join(" "));
            Ok(false)
        }
        Kind::Redirect(r) => {
            say!("this number's home is another box: connect to {}", r.addr);
            Ok(false)
        }
        Kind::Error(e) => {
            let err = tools::client::refused(&e);
            if let ClientError::Refused { name, .. } = &err {
                if name == "SESSION_REPLACED" {
                    bail!("this number logged in on another device; this session was closed");
                }
            }
            complain!("chat: {err}");
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// Downloads a received object into `dir` and says where (or why not).
fn save_media(http: &tools::media::MediaHttp, dir: &std::path::Path, m: &proto::v1::Media) {
    if m.sha256.is_empty() || m.url.is_empty() {
        return say!("  (a link: {})", m.url);
    }
    let name = tools::media::file_name_for(&m.sha256, &m.mime);
    let progress = tools::media::progress_lines("downloading", m.size);
    match http.download(&m.url, dir, &name, m.size, &m.sha256, progress) {
        Ok(path) => say!("  saved {} ({} bytes, {})", path.display(), m.size, m.mime),
        Err(e) => complain!("chat: {e:#}"),
    }
}

/// Asks for a slot, uploads the file with a progress line, then sends the message with its
/// media reference; ✓ when the server has it.
fn send_file(ctx: &mut Ctx, to: &str, path: &std::path::Path, caption: &str) -> anyhow::Result<()> {
    check_phone(to)?;
    let (sha256, size) =
        tools::media::sha256_file(path).with_context(|| format!("reading {}", path.display()))?;
    let mime = tools::media::mime_for(path);
    let http = tools::media::MediaHttp::new(ctx.ca.as_deref())?;
    let (mut c, _) = ctx.login()?;
    let req = ctx.cfg.take_client_msg_id();
    let cmid = ctx.cfg.take_client_msg_id();
    ctx.cfg.save(&ctx.path)?;
    c.send(proto::v1::MediaSlotRequest {
        client_req_id: req,
        size,
        mime: mime.into(),
        sha256: sha256.to_vec(),
    })?;
    let slot = c.wait_for(
        ctx.wait,
        "media slot",
        |k| match k {
            Kind::MediaSlot(s) if s.client_req_id == req => Some(s.clone()),
            _ => None,
        },
        |e| e.client_msg_id == req || e.client_msg_id == 0,
        |_| {},
    )?;
    let progress = tools::media::progress_lines("uploading", size);
    http.upload(&slot.upload_url, path, size, progress)?;
    let server_id = send_message(
        &mut c,
        ctx.wait,
        SendMessage {
            to: to.into(),
            client_msg_id: cmid,
            body: caption.as_bytes().to_vec().into(),
            media: Some(Box::new(proto::v1::Media {
                mime: mime.into(),
                size,
                sha256: sha256.to_vec(),
                ..Default::default()
            })),
        },
    )?;
    say!(
        "✓ sent {} ({size} bytes) to {to} (message {server_id})",
        path.display()
    );
    Ok(())
}

fn group(ctx: &mut Ctx, g: GroupCmd) -> anyhow::Result<()> {
    let (mut c, _) = ctx.login()?;
    let any_error = |_: &proto::v1::Error| true;
    // Members left out of a create or an add are reported; the rest went through.
    let fatal = |e: &proto::v1::Error| e.code != ErrorCode::GroupAddRefused as i32;
    let left_out = |f: ServerFrame| {
        if let Some(Kind::Error(e)) = f.kind {
            complain!("{}", e.detail);
        }
    };
    match g {
        GroupCmd::Create { name, members } => {
            members.iter().try_for_each(|m| check_phone(m))?;
            let req = ctx.cfg.take_client_msg_id();
            ctx.cfg.save(&ctx.path)?;
            c.send(GroupCreate {
                client_req_id: req,
                name: name.clone(),
                members,
            })?;
            let id = c.wait_for(
                ctx.wait,
                "group create",
                |k| match k {
                    Kind::GroupCreated(g) if g.client_req_id == req => Some(g.group_id),
                    _ => None,
                },
                fatal,
                left_out,
            )?;
            say!("group {id} created: {name}");
        }
        GroupCmd::Add { group, members } | GroupCmd::Remove { group, members }
            if members.is_empty() =>
        {
            bail!("name at least one member of group {group}");
        }
        GroupCmd::Add { group, members } => {
            c.send(GroupAdd {
                group_id: group,
                members,
            })?;
            print_updated(&mut c, ctx.wait, group, fatal, left_out)?;
        }
        GroupCmd::Remove { group, members } => {
            c.send(GroupRemove {
                group_id: group,
                members,
            })?;
            print_updated(&mut c, ctx.wait, group, any_error, |_| {})?;
        }
        GroupCmd::Privacy { who } => {
            let p = match who.as_str() {
                "contacts" => GroupAddPolicy::Contacts,
                "everyone" => GroupAddPolicy::Everyone,
                "nobody" => GroupAddPolicy::Nobody,
                other => bail!("who may add you: contacts, everyone or nobody, not {other:?}"),
            };
            c.send(GroupPrivacy {
                who_can_add: p as i32,
            })?;
            // The answer to a ping sent after it means the server has it.
            c.send(Ping { nonce: 2 })?;
            c.wait_for(
                ctx.wait,
                "group privacy",
                |k| matches!(k, Kind::Pong(p) if p.nonce == 2).then_some(()),
                any_error,
                |_| {},
            )?;
            say!("who may add you to groups: {who}");
        }
        GroupCmd::Send { group, text } => {
            let cmid = ctx.cfg.take_client_msg_id();
            ctx.cfg.save(&ctx.path)?;
            c.send(GroupSend {
                group_id: group,
                client_msg_id: cmid,
                body: text.into_bytes(),
                media: None,
            })?;
            let id = c.wait_for(
                ctx.wait,
                "group send",
                |k| match k {
                    Kind::ServerAck(a) if a.client_msg_id == cmid => Some(a.server_msg_id),
                    _ => None,
                },
                |e| e.client_msg_id == cmid || e.client_msg_id == 0,
                |_| {},
            )?;
            say!("✓ sent to group {group} (message {id})");
        }
        GroupCmd::Members { group } => {
            c.send(GroupMembersRequest { group_id: group })?;
            let m = c.wait_for(
                ctx.wait,
                "group members",
                |k| match k {
                    Kind::GroupMembers(m) if m.group_id == group => Some(m.clone()),
                    _ => None,
                },
                any_error,
                |_| {},
            )?;
            say!("group {} \"{}\" admin {}", m.group_id, m.name, m.admin);
            for p in &m.members {
                say!("  {p}");
            }
        }
    }
    Ok(())
}

fn print_updated(
    c: &mut Client,
    wait: Duration,
    group: u64,
    fatal: impl FnMut(&proto::v1::Error) -> bool,
    other: impl FnMut(ServerFrame),
) -> anyhow::Result<()> {
    let members = c.wait_for(
        wait,
        "group update",
        |k| match k {
            Kind::GroupUpdated(g) if g.group_id == group => Some(g.members.clone()),
            _ => None,
        },
        fatal,
        other,
    )?;
    say!("group {group} members: {}", members.join(" "));
    Ok(())
}
