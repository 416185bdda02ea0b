//! The HTTP webhook for SMS and push: JSON POSTed to an `http://` or `https://` URL by a few
//! worker threads, never by a shard.
//!
//! ## Steps, and why each is safe
//! 1. A shard calls [`SmsGateway::send_pin`] or [`PushProvider::notify`]: the body is
//!    pushed into one bounded queue (`try_send`, never blocking; full → the PIN is refused
//!    at once and the client told, a push is dropped and counted).
//! 2. Any idle one of [`WebhookLimits::workers`] threads takes it. A PIN that waited longer
//!    than `queue_wait_max_ms` is not sent (its client gives up soon after) and is reported
//!    [`SmsError::Stale`]: so a slow gateway makes new PINs fail fast instead of queueing
//!    hours of work, and no PIN arrives long after its client was told it failed.
//! 3. The worker POSTs with `ureq` (rustls with the *ring* provider, web PKI roots; no
//!    redirects followed) under one overall deadline that covers DNS, connect, TLS, send and
//!    the whole response (`timeout_global`; ureq resolves on a helper thread when a timeout
//!    is set). Connections are kept alive and shared by the workers (ureq's pool).
//! 4. The outcome of a PIN goes back to the shard that asked ([`PinReply`]): 2xx is sent,
//!    anything else is an error the client hears about.
//!
//! So a PIN's client hears back within `queue_wait_max_ms + deadline_ms`, below
//! [`SMS_REPLY_WAIT_MAX_MS`] (checked at compile time for the defaults).

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::observe::stats_text::json_str;

use crate::notify::{PinReply, PushProvider, SmsError, SmsGateway, SMS_REPLY_WAIT_MAX_MS};

/// Worker threads per webhook: one slow request holds one of them, not the queue.
pub const WEBHOOK_WORKERS: usize = 4;
/// Notifications waiting for a worker before new ones are refused.
pub const WEBHOOK_QUEUE_MAX: usize = 1_024;
/// One POST, end to end: DNS, connect, TLS, request and the whole response.
pub const WEBHOOK_DEADLINE_MS: u64 = 5_000;
/// A PIN that waited longer than this for a worker is not sent.
pub const WEBHOOK_QUEUE_WAIT_MAX_MS: u64 = 10_000;
/// Response body bytes read (and dropped) so the connection can be reused.
const RESPONSE_BYTES_MAX: u64 = 16 * 1024;

// A PIN's client hears back before the shard stops waiting for the report.
const _: () = assert!(WEBHOOK_QUEUE_WAIT_MAX_MS + WEBHOOK_DEADLINE_MS < SMS_REPLY_WAIT_MAX_MS);

/// A webhook's limits; [`WebhookLimits::default`] is the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookLimits {
    /// Worker threads.
    pub workers: usize,
    /// Notifications waiting for a worker.
    pub queue_max: usize,
    /// One POST, end to end.
    pub deadline_ms: u64,
    /// A PIN that waited longer for a worker is not sent.
    pub queue_wait_max_ms: u64,
}

impl Default for WebhookLimits {
    fn default() -> Self {
        WebhookLimits {
            workers: WEBHOOK_WORKERS,
            queue_max: WEBHOOK_QUEUE_MAX,
            deadline_ms: WEBHOOK_DEADLINE_MS,
            queue_wait_max_ms: WEBHOOK_QUEUE_WAIT_MAX_MS,
        }
    }
}

/// One notification on its way to a worker.
struct Job {
    body: String,
    queued_at: Instant,
    /// A PIN's way back to its shard; `None` for a push.
    reply: Option<PinReply>,
}

/// POSTs JSON to an HTTP(S) endpoint from worker threads (steps in the module doc).
#[derive(Debug, Clone)]
pub struct Webhook {
    tx: crossbeam::channel::Sender<Job>,
    queue_max: usize,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").finish_non_exhaustive()
    }
}

impl Webhook {
    /// Starts the workers for `url` (`http://` or `https://`) with the default limits.
    pub fn start(url: &str) -> Result<Webhook, String> {
        Webhook::start_with(url, WebhookLimits::default())
    }

    /// Starts `limits.workers` workers for `url`, trusting the web PKI roots for `https://`.
    pub fn start_with(url: &str, limits: WebhookLimits) -> Result<Webhook, String> {
        Webhook::start_inner(url, limits, None)
    }

    /// As [`Webhook::start_with`], trusting only the certificates in the PEM file `ca` (a
    /// gateway behind a private CA).
    pub fn start_trusting(
        url: &str,
        limits: WebhookLimits,
        ca: &std::path::Path,
    ) -> Result<Webhook, String> {
        let pem = std::fs::read(ca).map_err(|e| format!("webhook CA {}: {e}", ca.display()))?;
        let roots = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("webhook CA {}: {e}", ca.display()))?;
        if roots.is_empty() {
            return Err(format!("webhook CA {}: no certificate", ca.display()));
        }
        Webhook::start_inner(url, limits, Some(roots))
    }

    fn start_inner(
        url: &str,
        limits: WebhookLimits,
        roots: Option<Vec<ureq::tls::Certificate<'static>>>,
    ) -> Result<Webhook, String> {
        let shown = redacted(url);
        let uri: ureq::http::Uri = url
            .parse()
            .map_err(|e| format!("webhook URL {shown}: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!(
                "webhook URL must be http(s)://host[:port]/path, got {shown}"
            ));
        }
        if limits.workers == 0 || limits.queue_max == 0 {
            return Err("a webhook needs at least one worker and one queue slot".into());
        }
        let agent = agent(&limits, roots);
        let (tx, rx) = crossbeam::channel::bounded::<Job>(limits.queue_max);
        for i in 0..limits.workers {
            let (rx, agent) = (rx.clone(), agent.clone());
            let (url, shown) = (url.to_string(), shown.clone());
            std::thread::Builder::new()
                .name(format!("webhook-{i}"))
                .spawn(move || work(&rx, &agent, (&url, &shown), &limits))
                .map_err(|e| format!("starting webhook worker: {e}"))?;
        }
        Ok(Webhook {
            tx,
            queue_max: limits.queue_max,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Queues `body`; hands the job back when the queue is full or the workers are gone.
    fn enqueue(&self, body: String, reply: Option<PinReply>) -> Result<(), (SmsError, Job)> {
        let job = Job {
            body,
            queued_at: Instant::now(),
            reply,
        };
        self.tx.try_send(job).map_err(|e| match e {
            crossbeam::channel::TrySendError::Full(job) => {
                // Only when the queue is full (a refusal, logged): shared with the stats.
                #[allow(clippy::disallowed_methods)]
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(refused = n, "webhook queue full; notifications refused");
                }
                (
                    SmsError::QueueFull {
                        max: self.queue_max,
                    },
                    job,
                )
            }
            crossbeam::channel::TrySendError::Disconnected(job) => (SmsError::Stopped, job),
        })
    }

    /// Notifications refused because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The workers' shared client: one deadline per request, no redirects, errors as values;
/// TLS through rustls with *ring*, trusting `roots` if given, else the web PKI.
fn agent(
    limits: &WebhookLimits,
    roots: Option<Vec<ureq::tls::Certificate<'static>>>,
) -> ureq::Agent {
    let mut tls = ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::Rustls);
    if let Some(roots) = roots {
        tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)));
    }
    ureq::Agent::config_builder()
        .tls_config(tls.build())
        .timeout_global(Some(Duration::from_millis(limits.deadline_ms)))
        .http_status_as_error(false)
        .max_redirects(0)
        .max_idle_connections_per_host(limits.workers)
        .user_agent("switchboard-webhook")
        .build()
        .new_agent()
}

/// What of a webhook URL may be logged: scheme, host, port and path. The user-info
/// (`user:password@`), the query (`?api_key=…`) and the fragment are credentials often
/// enough that they never reach a log line or an error message; a URL that does not parse
/// is shown as `<unparsable URL>`.
pub fn redacted(url: &str) -> String {
    let Ok(uri) = url.parse::<ureq::http::Uri>() else {
        return "<unparsable URL>".into();
    };
    let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return "<URL without scheme or host>".into();
    };
    let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{scheme}://{host}{port}{}", uri.path())
}

/// A worker: takes jobs until the webhook is dropped. `url` is posted to; `shown`, its
/// [`redacted`] form, is what the log sees.
fn work(
    rx: &crossbeam::channel::Receiver<Job>,
    agent: &ureq::Agent,
    (url, shown): (&str, &str),
    limits: &WebhookLimits,
) {
    while let Ok(job) = rx.recv() {
        let waited_ms = job.queued_at.elapsed().as_millis() as u64;
        let result = if job.reply.is_some() && waited_ms > limits.queue_wait_max_ms {
            Err(SmsError::Stale {
                waited_ms,
                max_ms: limits.queue_wait_max_ms,
            })
        } else {
            // A panic in the HTTP client costs this request, not the worker (a dead worker
            // would leave its PINs to time out and the pool one thread short).
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                post(agent, (url, shown), &job.body, limits.deadline_ms)
            }))
            .unwrap_or_else(|_| Err(SmsError::Transport("HTTP client panicked".into())))
        };
        if let Err(e) = &result {
            tracing::warn!(endpoint = %shown, "webhook POST failed: {e}");
        }
        if let Some(reply) = job.reply {
            reply.done(result);
        }
    }
}

/// One POST under the agent's deadline; 2xx is success. The response body is read (up to
/// [`RESPONSE_BYTES_MAX`]) so the connection goes back to the pool.
/// An HTTP client's error text can quote the URL: every copy of it, and of its user-info
/// and query, is replaced by the [`redacted`] form.
fn post(
    agent: &ureq::Agent,
    (url, shown): (&str, &str),
    body: &str,
    deadline_ms: u64,
) -> Result<(), SmsError> {
    let started = Instant::now();
    let scrub = |text: String| scrubbed(text, url, shown);
    let failed = |e: ureq::Error| match e {
        ureq::Error::Timeout(_) => SmsError::Deadline { deadline_ms },
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            SmsError::Deadline { deadline_ms }
        }
        other if started.elapsed() >= Duration::from_millis(deadline_ms) => {
            tracing::debug!(
                "webhook error past the deadline: {}",
                scrub(other.to_string())
            );
            SmsError::Deadline { deadline_ms }
        }
        other => SmsError::Transport(scrub(other.to_string())),
    };
    let mut response = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body)
        .map_err(failed)?;
    let status = response.status().as_u16();
    let mut sink = Vec::new();
    response
        .body_mut()
        .as_reader()
        .take(RESPONSE_BYTES_MAX)
        .read_to_end(&mut sink)
        .map_err(|e| failed(ureq::Error::Io(e)))?;
    if !(200..300).contains(&status) {
        return Err(SmsError::Status { status });
    }
    Ok(())
}

/// `text` with `url` and its secret parts (user-info, query) replaced by `shown`.
fn scrubbed(text: String, url: &str, shown: &str) -> String {
    let mut text = text.replace(url, shown);
    if let Ok(uri) = url.parse::<ureq::http::Uri>() {
        let user_info = uri
            .authority()
            .and_then(|a| a.as_str().rsplit_once('@'))
            .map(|(info, _)| info);
        for secret in [user_info, uri.query()].into_iter().flatten() {
            if !secret.is_empty() {
                text = text.replace(secret, "<redacted>");
            }
        }
    }
    text
}

impl SmsGateway for Webhook {
    fn send_pin(&self, phone: &str, pin: &str, reply: PinReply) -> Result<(), SmsError> {
        let body = format!(
            "{{\"kind\":\"pin\",\"phone\":{},\"pin\":{}}}",
            json_str(phone),
            json_str(pin)
        );
        // Refused now: the caller answers the client; the reply is not used.
        self.enqueue(body, Some(reply)).map_err(|(e, _job)| e)
    }
}

impl PushProvider for Webhook {
    fn notify(&self, phone: &str, _user_id: u64) {
        let body = format!("{{\"kind\":\"push\",\"phone\":{}}}", json_str(phone));
        let _ = self.enqueue(body, None);
    }
}

#[cfg(test)]
#[path = "webhook_tests.rs"]
mod tests;
