//! A shard's registrations waiting to hear whether their PIN went out.
//!
//! ## Steps
//! 1. [`PinReplies::send`]: the SMS gateway takes the PIN (the client's `PinSent` waits here,
//!    with a deadline) or refuses it (the client gets an error frame now).
//! 2. The gateway's thread reports each PIN it took into this shard's channel.
//! 3. [`PinReplies::poll`], on a timer every [`PIN_REPLY_POLL_MS`] while something waits:
//!    each reported PIN releases `PinSent` (sent) or an error frame (not sent); a PIN not
//!    reported within [`SMS_REPLY_WAIT_MAX_MS`] gets the error frame too.
//!
//! Why it is safe: the shard never blocks (the channel is drained with `try_recv`), each
//! waiting client hears exactly once (the entry is removed when answered), and the map is
//! bounded in time: nothing waits past its deadline.

use std::collections::HashMap;
use std::sync::mpsc;

use proto::ids::ConnId;
use proto::v1::{server_frame, ErrorCode};

use crate::notify::{PinOutcome, PinReply, SmsError, SmsGateway, SMS_REPLY_WAIT_MAX_MS};
use messaging::state::effect::error;

/// How often a shard with registrations waiting checks for reports.
pub const PIN_REPLY_POLL_MS: u64 = 10;

/// One registration waiting for its PIN's outcome.
#[derive(Debug)]
struct Waiting {
    conn: ConnId,
    /// The phone the PIN went to.
    phone: String,
    /// `PinSent`, released when the gateway reports success.
    on_sent: server_frame::Kind,
    deadline_ms: u64,
}

/// The shard's registrations waiting for their PIN (steps in the module doc).
#[derive(Debug)]
pub struct PinReplies {
    tx: mpsc::Sender<PinOutcome>,
    rx: mpsc::Receiver<PinOutcome>,
    waiting: HashMap<u64, Waiting>,
    next_token: u64,
    /// Phones whose PIN certainly never went out ([`SmsError::never_sent`]), until the
    /// shard takes them ([`PinReplies::take_unsent`]) to lift the back-off that send set.
    unsent: Vec<String>,
}

impl Default for PinReplies {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel();
        PinReplies {
            tx,
            rx,
            waiting: HashMap::new(),
            next_token: 0,
            unsent: Vec::new(),
        }
    }
}

/// The error frame a client gets when its PIN did not go out.
pub fn not_sent(e: &SmsError) -> server_frame::Kind {
    error(
        ErrorCode::Internal,
        &format!("PIN not sent ({e}); try again later"),
        0,
    )
}

impl PinReplies {
    /// Step 1: hands the PIN to `sms`. Returns the frame to send `conn` now if the gateway
    /// refused it; `None` if `on_sent` now waits for the gateway's report.
    pub fn send(
        &mut self,
        sms: &dyn SmsGateway,
        now_ms: u64,
        conn: ConnId,
        (phone, pin): (&str, &str),
        on_sent: server_frame::Kind,
    ) -> Option<server_frame::Kind> {
        let token = self.next_token;
        self.next_token += 1;
        match sms.send_pin(phone, pin, PinReply::new(token, self.tx.clone())) {
            Ok(()) => {
                self.waiting.insert(
                    token,
                    Waiting {
                        conn,
                        phone: phone.to_string(),
                        on_sent,
                        deadline_ms: now_ms + SMS_REPLY_WAIT_MAX_MS,
                    },
                );
                None
            }
            Err(e) => {
                tracing::warn!(token, "PIN not sent: {e}");
                if e.never_sent() {
                    self.unsent.push(phone.to_string());
                }
                Some(not_sent(&e))
            }
        }
    }

    /// Step 3: the frames to send now, for every PIN reported or past its deadline.
    pub fn poll(&mut self, now_ms: u64) -> Vec<(ConnId, server_frame::Kind)> {
        let mut ready = Vec::new();
        while let Ok(outcome) = self.rx.try_recv() {
            let Some(w) = self.waiting.remove(&outcome.token) else {
                continue; // already answered at its deadline
            };
            ready.push(match outcome.result {
                Ok(()) => (w.conn, w.on_sent),
                Err(e) => {
                    tracing::warn!("PIN not sent: {e}");
                    if e.never_sent() {
                        self.unsent.push(w.phone);
                    }
                    (w.conn, not_sent(&e))
                }
            });
        }
        let late: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.deadline_ms <= now_ms)
            .map(|(&t, _)| t)
            .collect();
        for token in late {
            // Listed from the map just above.
            let w = self.waiting.remove(&token).expect("listed above");
            ready.push((w.conn, not_sent(&SmsError::NoReport(SMS_REPLY_WAIT_MAX_MS))));
        }
        ready
    }

    /// The phones whose PIN certainly never went out since the last call.
    pub fn take_unsent(&mut self) -> Vec<String> {
        std::mem::take(&mut self.unsent)
    }

    /// Registrations still waiting (the shard keeps polling while there are any).
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A gateway that refuses, or keeps every reply for the test to answer.
    #[derive(Debug, Default)]
    struct Fake {
        refuse: bool,
        taken: crossbeam::queue::SegQueue<PinReply>,
    }

    impl SmsGateway for Arc<Fake> {
        fn send_pin(&self, _phone: &str, _pin: &str, reply: PinReply) -> Result<(), SmsError> {
            if self.refuse {
                return Err(SmsError::QueueFull { max: 1 });
            }
            self.taken.push(reply);
            Ok(())
        }
    }

    fn conn(n: u64) -> ConnId {
        ConnId::from_u64(n)
    }

    fn pin_sent() -> server_frame::Kind {
        server_frame::Kind::PinSent(proto::v1::PinSent {
            phone: "+15550000001".into(),
            expires_in_s: 600,
        })
    }

    fn is_error(k: &server_frame::Kind) -> bool {
        matches!(k, server_frame::Kind::Error(e) if e.code == ErrorCode::Internal as i32 && e.detail.starts_with("PIN not sent"))
    }

    #[test]
    fn pin_sent_waits_for_the_gateway_and_a_failure_is_an_error_frame() {
        let fake = Arc::new(Fake::default());
        let mut p = PinReplies::default();
        assert!(p.send(&fake, 0, conn(1), ("+1", "1"), pin_sent()).is_none());
        assert!(p.send(&fake, 0, conn(2), ("+2", "2"), pin_sent()).is_none());
        assert!(p.poll(5).is_empty(), "nothing reported yet: no PinSent");
        assert_eq!(p.waiting(), 2);
        let (first, second) = (fake.taken.pop().unwrap(), fake.taken.pop().unwrap());
        second.done(Err(SmsError::Deadline { deadline_ms: 5 }));
        first.done(Ok(()));
        let mut ready = p.poll(10);
        ready.sort_by_key(|(c, _)| c.to_u64());
        assert_eq!(ready.len(), 2);
        assert_eq!(ready[0], (conn(1), pin_sent()));
        assert_eq!(ready[1].0, conn(2));
        assert!(is_error(&ready[1].1), "{:?}", ready[1].1);
        assert_eq!(p.waiting(), 0);
        assert!(
            p.take_unsent().is_empty(),
            "a missed deadline may hide a sent SMS"
        );
        assert!(p.poll(20).is_empty(), "each client hears once");
    }

    #[test]
    fn a_refused_pin_is_answered_at_once_and_a_silent_gateway_times_out() {
        let refusing = Arc::new(Fake {
            refuse: true,
            ..Fake::default()
        });
        let mut p = PinReplies::default();
        let now = p.send(&refusing, 0, conn(1), ("+1", "1"), pin_sent());
        assert!(now.as_ref().is_some_and(is_error), "{now:?}");
        assert_eq!(p.waiting(), 0);
        assert_eq!(
            p.take_unsent(),
            vec!["+1".to_string()],
            "certainly not sent"
        );
        assert!(p.take_unsent().is_empty());
        let silent = Arc::new(Fake::default());
        assert!(p
            .send(&silent, 100, conn(2), ("+2", "2"), pin_sent())
            .is_none());
        assert!(p.poll(100 + SMS_REPLY_WAIT_MAX_MS - 1).is_empty());
        let late = p.poll(100 + SMS_REPLY_WAIT_MAX_MS);
        assert_eq!(late.len(), 1);
        assert!(is_error(&late[0].1));
        // A report after the deadline is ignored: the client already heard.
        silent.taken.pop().unwrap().done(Ok(()));
        assert!(p.poll(100 + SMS_REPLY_WAIT_MAX_MS + 10).is_empty());
    }
}
