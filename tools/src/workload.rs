//! What a farm run does: the mode, the message mix, the synthetic users' phone numbers, the
//! pacing of connects and sends, and the layout of a synthetic message body.
//!
//! The whole run is described by one [`Spec`], built by the parent from its flags and handed
//! unchanged to every worker process (as JSON), so every worker agrees on the user
//! population, the rates and the schedule. Rates in the spec are totals for the whole farm;
//! each thread takes its share.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::peers::PeerDist;

/// The seed's scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Hold the connections; heartbeats only.
    Idle,
    /// The message mix at `--rate` for `--duration`.
    Steady,
    /// Like steady, but at `--storm-at` every client drops at once and reconnects.
    Storm,
}

/// The protocol the farm speaks: Switchboard's, or a broker people would otherwise pick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    /// Switchboard frames (login, ServerAck, receipts, groups).
    #[default]
    Switchboard,
    /// MQTT 3.1.1 at `--qos` 0 or 1: each user subscribes to its own topic.
    Mqtt,
    /// NATS core pub/sub (text protocol): each user subscribes to its own subject.
    Nats,
}

/// One farm run, identical in every worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// The servers (loopback or addresses the operator gave): user `i` first connects to
    /// `servers[i % len]`; a box of a cluster may redirect it to its home box.
    pub servers: Vec<SocketAddr>,
    /// The protocol spoken.
    #[serde(default)]
    pub proto: Proto,
    /// MQTT QoS (0 or 1) of publishes and subscriptions; unused by other protocols.
    #[serde(default)]
    pub qos: u8,
    /// Connections (= synthetic users) in the whole farm.
    pub conns: u64,
    /// Worker processes.
    pub procs: usize,
    /// Event-loop threads per worker.
    pub threads: usize,
    /// Source addresses, round-robin per user; empty = let the kernel choose.
    pub source_ips: Vec<Ipv4Addr>,
    /// New connections per second, whole farm.
    pub connect_rate: f64,
    /// Length of the measured phase, seconds.
    pub duration_s: f64,
    /// The scenario.
    pub mode: Mode,
    /// 1:1 messages per second, whole farm (steady and storm).
    pub rate: f64,
    /// How peers are chosen.
    pub peers: PeerDist,
    /// Bytes per message body (at least [`BODY_HEADER_BYTES`]).
    pub body_bytes: usize,
    /// Fraction of received messages also marked read.
    pub read_ratio: f64,
    /// Fraction of sends that go to a group instead of one peer (0 = no groups).
    pub group_ratio: f64,
    /// Members per synthetic group, creator included.
    pub group_size: usize,
    /// TLS on, trusting this CA file.
    pub tls_ca: Option<PathBuf>,
    /// With TLS: keep the server's session tickets and resume with them, so a reconnect
    /// (the storm's, a retry) skips the certificate exchange. Off: every handshake is full.
    #[serde(default)]
    pub tls_resume: bool,
    /// Name the server certificate must carry.
    pub server_name: String,
    /// Log users in through the load-test path (UNSAFE for production servers).
    pub load_test_secret: Option<String>,
    /// User `i` has phone `+{phone_base + i}`.
    pub phone_base: u64,
    /// Heartbeat period per connection, seconds.
    pub ping_interval_s: f64,
    /// A connect + handshake + login slower than this fails, seconds.
    pub connect_timeout_s: f64,
    /// Connect attempts per user during a ramp before it counts as failed.
    pub connect_attempts: u32,
    /// Most time the ramp may take, seconds.
    pub ramp_timeout_s: f64,
    /// After sending stops: most time to wait for acks, and then for deliveries, seconds.
    pub drain_s: f64,
    /// Storm mode: seconds into the measured phase when every client drops.
    pub storm_at_s: f64,
    /// Most unacknowledged sends per connection; more are skipped (and counted).
    pub inflight_per_conn_max: usize,
    /// PRNG seed (each thread derives its own).
    pub seed: u64,
    /// Seconds between interval lines on stdout (`farm::interval`); 0 prints none.
    #[serde(default)]
    pub interval_s: f64,
    /// Sends go out in bursts every this many ms (all those due by then), like a driver on a
    /// coarse timer; 0: each at its own scheduled time.
    #[serde(default)]
    pub send_tick_ms: f64,
}

impl Spec {
    /// Where user `idx` connects first (before any redirect).
    pub fn first_server(&self, idx: u64) -> SocketAddr {
        // Invariant: the farm's CLI refuses an empty server list.
        self.servers[(idx % self.servers.len() as u64) as usize]
    }

    /// Whether sessions log in (and so can send and receive messages). MQTT and NATS users
    /// always do: their "login" is the subscription to their own topic.
    pub fn logs_in(&self) -> bool {
        self.proto != Proto::Switchboard || self.load_test_secret.is_some()
    }

    /// Whether the server acknowledges each message (Switchboard's ServerAck, MQTT QoS 1
    /// PUBACK). Without (MQTT QoS 0, core NATS) a message counts as accepted once written, so
    /// a message the server drops counts as lost.
    pub fn server_acks(&self) -> bool {
        match self.proto {
            Proto::Switchboard => true,
            Proto::Mqtt => self.qos >= 1,
            Proto::Nats => false,
        }
    }

    /// Whether the measured phase sends messages.
    pub fn sends(&self) -> bool {
        self.mode != Mode::Idle && self.rate > 0.0 && self.logs_in()
    }

    /// The user index range of thread `thread` of worker `worker`.
    pub fn users_of(&self, worker: usize, thread: usize) -> std::ops::Range<u64> {
        let slices = (self.procs * self.threads) as u64;
        let k = (worker * self.threads + thread) as u64;
        let lo = self.conns * k / slices;
        let hi = self.conns * (k + 1) / slices;
        lo..hi
    }

    /// This thread's share of a farm-wide rate.
    pub fn per_thread(&self, rate: f64) -> f64 {
        rate / (self.procs * self.threads) as f64
    }

    /// The phone number of user `i`.
    pub fn phone(&self, i: u64) -> String {
        format!("+{}", self.phone_base + i)
    }

    /// The user index of a phone number, if it is one of ours.
    pub fn user_of(&self, phone: &str) -> Option<u64> {
        let n: u64 = phone.strip_prefix('+')?.parse().ok()?;
        let i = n.checked_sub(self.phone_base)?;
        (i < self.conns).then_some(i)
    }

    /// Refuses contradictory or out-of-range settings.
    pub fn check(&self) -> Result<(), String> {
        let digits = (self.phone_base + self.conns).to_string().len();
        if !(proto::limits::PHONE_DIGITS_MIN..=proto::limits::PHONE_DIGITS_MAX).contains(&digits)
            || self.phone_base.to_string().starts_with('0')
        {
            return Err(format!(
                "phone base {} gives non-E.164 phones",
                self.phone_base
            ));
        }
        if self.conns < self.procs as u64 * self.threads as u64 {
            return Err("need at least one connection per worker thread".into());
        }
        if self.sends() && self.conns < 2 {
            return Err("messages need at least two users".into());
        }
        if self.mode != Mode::Idle && self.rate > 0.0 && !self.logs_in() {
            return Err("sending messages needs --load-test-secret (users must log in)".into());
        }
        if self.body_bytes < BODY_HEADER_BYTES || self.body_bytes > proto::limits::BODY_BYTES_MAX {
            return Err(format!(
                "--body-bytes must be {BODY_HEADER_BYTES}..={}",
                proto::limits::BODY_BYTES_MAX
            ));
        }
        if self.group_ratio > 0.0
            && !(2..=proto::limits::GROUP_MEMBERS_MAX).contains(&self.group_size)
        {
            return Err("--group-size must be 2..=256".into());
        }
        if self.proto != Proto::Switchboard && self.group_ratio > 0.0 {
            return Err(
                "groups are Switchboard-only (--group-ratio needs --proto switchboard)".into(),
            );
        }
        if self.qos > 1 {
            return Err("--qos must be 0 or 1".into());
        }
        if self.inflight_per_conn_max >= u16::MAX as usize {
            return Err("--inflight must be below 65535 (MQTT packet ids)".into());
        }
        if !(self.interval_s == 0.0 || self.interval_s >= 0.1 && self.interval_s.is_finite()) {
            return Err("--interval must be 0 (off) or at least 0.1 s".into());
        }
        if self.connect_rate <= 0.0 || self.duration_s < 0.0 || self.ping_interval_s <= 0.0 {
            return Err("rates and durations must be positive".into());
        }
        Ok(())
    }
}

/// Bytes at the front of every synthetic body: sender index, client_msg_id, send time (µs
/// since the Unix epoch), each a big-endian u64.
pub const BODY_HEADER_BYTES: usize = 24;

/// What a synthetic body says about its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyStamp {
    /// The sending user's index.
    pub sender: u64,
    /// The sender's client_msg_id.
    pub client_msg_id: u64,
    /// When it was sent, µs since the Unix epoch (comparable across processes and hosts with
    /// synchronised clocks).
    pub sent_at_us: u64,
}

impl BodyStamp {
    /// A body of `len` bytes (≥ [`BODY_HEADER_BYTES`]) carrying this stamp, padded with `.`.
    pub fn encode(&self, len: usize) -> Vec<u8> {
        let mut b = Vec::with_capacity(len.max(BODY_HEADER_BYTES));
        b.extend_from_slice(&self.sender.to_be_bytes());
        b.extend_from_slice(&self.client_msg_id.to_be_bytes());
        b.extend_from_slice(&self.sent_at_us.to_be_bytes());
        b.resize(len.max(BODY_HEADER_BYTES), b'.');
        b
    }

    /// The stamp at the front of `body`, if it is long enough.
    pub fn decode(body: &[u8]) -> Option<BodyStamp> {
        let word = |i: usize| {
            Some(u64::from_be_bytes(
                body.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        Some(BodyStamp {
            sender: word(0)?,
            client_msg_id: word(1)?,
            sent_at_us: word(2)?,
        })
    }
}

/// Microseconds since the Unix epoch.
pub fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A token bucket: `rate` events per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    /// Starts empty at `now`.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Pacer {
        Pacer {
            rate,
            burst: burst.max(1.0),
            tokens: 0.0,
            last: now,
        }
    }

    /// Events allowed now (taken from the bucket).
    pub fn take(&mut self, now: Instant) -> u64 {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        let n = self.tokens.floor();
        self.tokens -= n;
        n as u64
    }
}

/// Open-loop send schedule: event `k` is due at `start + k / rate`, whatever happened to the
/// ones before it. A late farm sends the backlog at once, each stamped with its scheduled
/// time, so its lateness shows in the latencies (no coordinated omission).
#[derive(Debug, Clone)]
pub struct Schedule {
    start: Instant,
    start_wall_us: u64,
    rate: f64,
    next: u64,
    /// Sends go only at multiples of this after `start` (every one due by then at once), like
    /// a driver on a coarse timer; zero: each at its own time.
    tick: Duration,
}

/// One scheduled event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    /// When it was due.
    pub at: Instant,
    /// The same moment in µs since the Unix epoch (for message stamps).
    pub wall_us: u64,
}

impl Schedule {
    /// `rate` events per second from `start` (= `start_wall_us` on the wall clock).
    pub fn new(rate: f64, start: Instant, start_wall_us: u64) -> Schedule {
        Schedule {
            start,
            start_wall_us,
            rate,
            next: 0,
            tick: Duration::ZERO,
        }
    }

    /// Events go out only at multiples of `tick` after the start, in bursts (`--send-tick-ms`).
    pub fn with_tick(self, tick: Duration) -> Schedule {
        Schedule { tick, ..self }
    }

    /// `t`, down to the last tick at or before it (itself without a tick).
    fn tick_floor(&self, t: Instant) -> Instant {
        if self.tick.is_zero() {
            return t;
        }
        let since = t.saturating_duration_since(self.start).as_nanos();
        let tick = self.tick.as_nanos();
        self.start + Duration::from_nanos(((since / tick) * tick) as u64)
    }

    /// The next event due by `now`, if any (taken).
    pub fn next_due(&mut self, now: Instant) -> Option<Scheduled> {
        if self.rate.is_nan() || self.rate <= 0.0 {
            return None;
        }
        let now = self.tick_floor(now);
        let offset = Duration::from_secs_f64(self.next as f64 / self.rate);
        let at = self.start + offset;
        if at > now {
            return None;
        }
        self.next += 1;
        Some(Scheduled {
            at,
            wall_us: self.start_wall_us + offset.as_micros() as u64,
        })
    }

    /// When the next event is due.
    pub fn next_at(&self) -> Instant {
        if self.rate.is_nan() || self.rate <= 0.0 {
            return self.start + Duration::from_secs(3600);
        }
        let at = self.start + Duration::from_secs_f64(self.next as f64 / self.rate);
        let floor = self.tick_floor(at);
        if floor == at {
            at
        } else {
            floor + self.tick
        }
    }

    /// Events taken so far.
    pub fn taken(&self) -> u64 {
        self.next
    }
}

/// `s` seconds as a Duration (negative or NaN counts as zero).
pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() && s > 0.0 { s } else { 0.0 })
}

#[cfg(test)]
pub(crate) fn test_spec() -> Spec {
    Spec {
        servers: vec!["127.0.0.1:5222".parse().unwrap()],
        proto: Proto::Switchboard,
        qos: 1,
        conns: 100,
        procs: 2,
        threads: 2,
        source_ips: vec![],
        connect_rate: 1000.0,
        duration_s: 1.0,
        mode: Mode::Steady,
        rate: 10.0,
        peers: PeerDist::Uniform,
        body_bytes: 32,
        read_ratio: 0.5,
        group_ratio: 0.0,
        group_size: 4,
        tls_ca: None,
        tls_resume: false,
        server_name: "localhost".into(),
        load_test_secret: Some("s".into()),
        phone_base: 15_550_000_000,
        ping_interval_s: 60.0,
        connect_timeout_s: 10.0,
        connect_attempts: 3,
        ramp_timeout_s: 60.0,
        drain_s: 10.0,
        storm_at_s: 0.5,
        inflight_per_conn_max: 64,
        seed: 1,
        interval_s: 0.0,
        send_tick_ms: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_split_without_gaps_or_overlap() {
        let spec = Spec {
            conns: 103,
            ..test_spec()
        };
        let mut next = 0;
        for w in 0..spec.procs {
            for t in 0..spec.threads {
                let r = spec.users_of(w, t);
                assert_eq!(r.start, next);
                next = r.end;
            }
        }
        assert_eq!(next, 103);
    }

    #[test]
    fn phones_round_trip_and_are_e164() {
        let spec = test_spec();
        let p = spec.phone(42);
        assert!(proto::validate::is_e164(&p), "{p}");
        assert_eq!(spec.user_of(&p), Some(42));
        assert_eq!(spec.user_of("+15551234567"), None);
        assert_eq!(spec.user_of("nonsense"), None);
        assert!(spec.check().is_ok());
    }

    #[test]
    fn body_stamp_round_trips() {
        let s = BodyStamp {
            sender: 7,
            client_msg_id: 9,
            sent_at_us: 123,
        };
        let b = s.encode(40);
        assert_eq!(b.len(), 40);
        assert_eq!(BodyStamp::decode(&b), Some(s));
        assert_eq!(BodyStamp::decode(b"short"), None);
    }

    #[test]
    fn pacer_gives_its_rate_and_caps_bursts() {
        let t0 = Instant::now();
        let mut p = Pacer::new(100.0, 10.0, t0);
        assert_eq!(p.take(t0 + Duration::from_millis(50)), 5);
        assert_eq!(p.take(t0 + Duration::from_secs(10)), 10);
    }

    #[test]
    fn schedule_keeps_its_times_when_taken_late() {
        let t0 = Instant::now();
        let mut s = Schedule::new(1000.0, t0, 5_000_000);
        assert_eq!(s.next_due(t0).map(|e| e.wall_us), Some(5_000_000));
        assert_eq!(s.next_due(t0), None, "the next one is due 1 ms later");
        // Taken 10 ms late: all ten due events come, each with its own scheduled time.
        let late = t0 + Duration::from_millis(10);
        let got: Vec<u64> = std::iter::from_fn(|| s.next_due(late))
            .map(|e| e.wall_us)
            .collect();
        assert_eq!(
            got,
            (1..=10).map(|k| 5_000_000 + k * 1000).collect::<Vec<_>>()
        );
        assert_eq!(s.taken(), 11);
        assert_eq!(s.next_at(), t0 + Duration::from_millis(11));
        assert_eq!(Schedule::new(0.0, t0, 0).next_due(late), None);
    }

    #[test]
    fn a_ticked_schedule_sends_what_is_due_in_bursts_at_its_ticks() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        // 2,000/s on a 1 ms tick: two sends per tick, both at the tick, with their own times.
        let mut s = Schedule::new(2000.0, t0, 0).with_tick(ms);
        assert_eq!(s.next_due(t0).map(|e| e.wall_us), Some(0));
        assert_eq!(s.next_at(), t0 + ms, "the 0.5 ms send waits for the tick");
        assert_eq!(s.next_due(t0 + ms / 2), None, "between ticks nothing goes");
        let got: Vec<u64> = std::iter::from_fn(|| s.next_due(t0 + ms * 3 / 2))
            .map(|e| e.wall_us)
            .collect();
        assert_eq!(got, vec![500, 1000]);
    }

    #[test]
    fn sending_without_login_is_refused() {
        let spec = Spec {
            load_test_secret: None,
            ..test_spec()
        };
        assert!(spec.check().is_err());
    }
}
