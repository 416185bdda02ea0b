//! `--media-mb-s`: media traffic beside the farm's text (issue 25). Pairs of blocking
//! clients in threads of the parent process, off the event loops: A asks a slot, uploads an
//! object and sends it to B; B receives the message, acks it and downloads the object over
//! its own URL, checking size and SHA-256. Objects follow a mix by count: 60% voice notes
//! (20 KB), 35% photos (200 KB), 5% videos (5 MB); uploads are paced to the byte rate
//! asked for, over all pairs. Bounded: each pair runs one object at a time until `stop`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use proto::v1::server_frame::Kind;

use crate::client::Client;
use crate::media::MediaHttp;
use crate::net::TlsClient;
use crate::peers::Rng;

/// Object sizes and their share of the count (percent).
pub const MEDIA_MIX: [(usize, u64, &str); 3] = [
    (20 * 1000, 60, "audio/ogg"),
    (200 * 1000, 35, "image/jpeg"),
    (5 * 1000 * 1000, 5, "video/mp4"),
];

/// What the media pairs need.
#[derive(Clone)]
pub struct MediaSpec {
    /// The chat server.
    pub server: std::net::SocketAddr,
    /// TLS for the chat connection and the media URLs (`None`: plaintext).
    pub tls: Option<(TlsClient, std::path::PathBuf)>,
    /// The load-test secret (media pairs log in like the farm's users).
    pub secret: String,
    /// First phone of the pairs (2 per pair).
    pub phone_base: u64,
    /// Pairs (threads).
    pub pairs: usize,
    /// Upload bytes per second over all pairs.
    pub bytes_per_s: f64,
}

/// What the pairs did.
#[derive(Debug, Default)]
pub struct MediaStats {
    /// Objects uploaded and sent.
    pub uploads: u64,
    /// Their bytes.
    pub upload_bytes: u64,
    /// Objects downloaded intact by their recipient.
    pub downloads: u64,
    /// Upload latency (slot to 201), µs.
    pub upload_us: Vec<u64>,
    /// Download latency (GET to last byte), µs.
    pub download_us: Vec<u64>,
    /// Failures (refusals, timeouts, a wrong hash), with the first one's text.
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// How long the pairs ran.
    pub elapsed: Duration,
}

impl MediaStats {
    /// One line for the farm's output.
    pub fn line(&self) -> String {
        let pct = |v: &[u64], p: f64| {
            let mut v = v.to_vec();
            v.sort_unstable();
            v.get(((v.len() as f64 - 1.0) * p).round() as usize)
                .map_or(0.0, |us| *us as f64 / 1000.0)
        };
        let secs = self.elapsed.as_secs_f64().max(1e-3);
        format!(
            "media: uploads={} downloads={} upload_mb_s={:.1} upload_ms_p50={:.1} upload_ms_p99={:.1} \
             download_ms_p50={:.1} download_ms_p99={:.1} errors={}{}",
            self.uploads,
            self.downloads,
            self.upload_bytes as f64 / 1e6 / secs,
            pct(&self.upload_us, 0.5),
            pct(&self.upload_us, 0.99),
            pct(&self.download_us, 0.5),
            pct(&self.download_us, 0.99),
            self.errors,
            self.first_error.as_ref().map_or(String::new(), |e| format!(" first_error={e:?}")),
        )
    }
}

/// Runs the pairs until `stop`; what they did, summed.
pub fn run(spec: &MediaSpec, stop: &Arc<AtomicBool>) -> MediaStats {
    let start = Instant::now();
    let per_pair = spec.bytes_per_s / spec.pairs.max(1) as f64;
    let results: Vec<MediaStats> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..spec.pairs)
            .map(|i| s.spawn(move || pair(spec, i, per_pair, stop)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut all = MediaStats {
        elapsed: start.elapsed(),
        ..Default::default()
    };
    for r in results {
        all.uploads += r.uploads;
        all.upload_bytes += r.upload_bytes;
        all.downloads += r.downloads;
        all.upload_us.extend(r.upload_us);
        all.download_us.extend(r.download_us);
        all.errors += r.errors;
        all.first_error = all.first_error.or(r.first_error);
    }
    all
}

fn pair(spec: &MediaSpec, i: usize, bytes_per_s: f64, stop: &AtomicBool) -> MediaStats {
    let mut st = MediaStats::default();
    let (a_phone, b_phone) = (
        format!("+{}", spec.phone_base + 2 * i as u64),
        format!("+{}", spec.phone_base + 2 * i as u64 + 1),
    );
    let setup = || -> anyhow::Result<(Client, Client, MediaHttp)> {
        let a = login(spec, &a_phone)?;
        let b = login(spec, &b_phone)?;
        let http = MediaHttp::new(spec.tls.as_ref().map(|(_, ca)| ca.as_path()))?;
        Ok((a, b, http))
    };
    let (mut a, mut b, http) = match setup() {
        Ok(x) => x,
        Err(e) => {
            st.errors += 1;
            st.first_error = Some(format!("{e:#}"));
            return st;
        }
    };
    let mut rng = Rng::new(0x006d_6564_6961 + i as u64);
    let start = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Pace: the bytes sent so far may not run ahead of the rate.
        let due = Duration::from_secs_f64(st.upload_bytes as f64 / bytes_per_s.max(1.0));
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait.min(Duration::from_millis(100)));
            continue;
        }
        n += 1;
        let (size, mime) = pick(&mut rng);
        let tag = (i as u64) << 40 | n;
        if let Err(e) = one(&mut a, &mut b, &http, &b_phone, n, tag, size, mime, &mut st) {
            st.errors += 1;
            st.first_error.get_or_insert_with(|| format!("{e:#}"));
        }
    }
    st
}

fn pick(rng: &mut Rng) -> (usize, &'static str) {
    let mut roll = rng.below(100);
    for (size, share, mime) in MEDIA_MIX {
        if roll < share {
            return (size, mime);
        }
        roll -= share;
    }
    (MEDIA_MIX[0].0, MEDIA_MIX[0].2)
}

fn login(spec: &MediaSpec, phone: &str) -> anyhow::Result<Client> {
    let wait = Duration::from_secs(10);
    let mut c = Client::connect(spec.server, spec.tls.as_ref().map(|(t, _)| t), wait)?;
    c.load_test_login(phone, spec.secret.as_bytes(), wait)?;
    Ok(c)
}

/// One object: A's slot, upload and send; B's receipt of it, ack and download.
#[allow(clippy::too_many_arguments)]
fn one(
    a: &mut Client,
    b: &mut Client,
    http: &MediaHttp,
    to: &str,
    n: u64,
    tag: u64,
    size: usize,
    mime: &str,
    st: &mut MediaStats,
) -> anyhow::Result<()> {
    let wait = Duration::from_secs(30);
    // Unique bytes per object: its number, then a cheap pattern.
    let mut bytes: Vec<u8> = (0..size).map(|j| (j as u8).wrapping_mul(151)).collect();
    bytes[..8].copy_from_slice(&tag.to_be_bytes());
    let sha = ring::digest::digest(&ring::digest::SHA256, &bytes)
        .as_ref()
        .to_vec();
    let started = Instant::now();
    a.send(proto::v1::MediaSlotRequest {
        client_req_id: n,
        size: size as u64,
        mime: mime.into(),
        sha256: sha.clone(),
    })?;
    let url = a.wait_for(
        wait,
        "media slot",
        |k| match k {
            Kind::MediaSlot(s) if s.client_req_id == n => Some(s.upload_url.clone()),
            _ => None,
        },
        |e| e.client_msg_id == n,
        |_| {},
    )?;
    http.put_bytes(&url, &bytes)?;
    st.upload_us.push(started.elapsed().as_micros() as u64);
    st.uploads += 1;
    st.upload_bytes += size as u64;
    a.send(proto::v1::SendMessage {
        to: to.into(),
        client_msg_id: n,
        body: Vec::new().into(),
        media: Some(Box::new(proto::v1::Media {
            mime: mime.into(),
            size: size as u64,
            sha256: sha.clone(),
            ..Default::default()
        })),
    })?;
    let m = b.wait_for(
        wait,
        "media message",
        |k| match k {
            Kind::Message(m) if m.client_msg_id == n => Some(m.clone()),
            _ => None,
        },
        |_| true,
        |_| {},
    )?;
    b.send(proto::v1::Ack {
        server_msg_ids: vec![m.server_msg_id],
    })?;
    // A's ServerAck and receipt are left in its socket buffer and read past by the next wait.
    let media = m.media.context("the message lost its media")?;
    let started = Instant::now();
    let got = http.get_bytes(&media.url, size as u64)?;
    st.download_us.push(started.elapsed().as_micros() as u64);
    anyhow::ensure!(
        ring::digest::digest(&ring::digest::SHA256, &got).as_ref() == sha.as_slice(),
        "downloaded object differs"
    );
    st.downloads += 1;
    Ok(())
}
