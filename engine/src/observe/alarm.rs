//! Alarms: thresholds on a shard's statistics, checked each time it publishes them.
//!
//! A rule names a statistic — an engine one ([`crate::observe::stats::STAT_MESH_OUTBOX_DEPTH_MAX`],
//! [`crate::observe::stats::STAT_UTILISATION_PCT`]) or one the service reports — and the most it may
//! be. Protocol per rule, per publication:
//! 1. Value above the threshold and no alarm active: the alarm becomes active, and one
//!    `tracing::warn!` names the shard, the statistic, the value and the offender (the peer
//!    with the deepest outbox, the user with the longest queue...).
//! 2. Still above: the alarm stays active (its value refreshed); the warning repeats at most
//!    once per `period_ms`, so a stuck alarm is neither silent nor a flood.
//! 3. Back at or under the threshold: the alarm clears with one `tracing::info!`.
//!
//! Active alarms travel in the snapshot and show in `/stats` and `/metrics`. The offender is
//! only computed when a warning is logged (it may cost a scan). Pure bookkeeping, owned by
//! one shard; it must not touch anything but its own state and the log.

/// One threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmRule {
    /// The statistic watched.
    pub stat: &'static str,
    /// The alarm is active while the statistic is above this.
    pub max: u64,
}

/// Every threshold, and how often a standing alarm is logged again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmConfig {
    /// The rules; empty means no alarms.
    pub rules: Vec<AlarmRule>,
    /// Least time between two warnings of one alarm.
    pub period_ms: u64,
}

/// Default least time between two warnings of one standing alarm.
pub const ALARM_PERIOD_MS_DEFAULT: u64 = 60_000;

impl Default for AlarmConfig {
    fn default() -> Self {
        AlarmConfig {
            rules: Vec::new(),
            period_ms: ALARM_PERIOD_MS_DEFAULT,
        }
    }
}

/// An alarm over its threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveAlarm {
    /// The statistic.
    pub stat: &'static str,
    /// Its value at the last check.
    pub value: u64,
    /// The threshold it is over.
    pub max: u64,
    /// Who is responsible, as of the last warning ("" when nobody in particular).
    pub offender: String,
    /// When it became active (wall ms).
    pub since_ms: u64,
}

/// A shard's alarm state.
#[derive(Debug)]
pub(crate) struct Alarms {
    config: AlarmConfig,
    /// Active alarms with the time of their last warning.
    active: Vec<(ActiveAlarm, u64)>,
}

impl Alarms {
    pub(crate) fn new(config: AlarmConfig) -> Self {
        Alarms {
            config,
            active: Vec::new(),
        }
    }

    /// The statistics the rules watch, active or not: `/metrics` exports a 0 for each one
    /// that is quiet, so a dashboard panel or an `absent()` alert always finds a sample.
    pub(crate) fn watched(&self) -> Vec<&'static str> {
        self.config.rules.iter().map(|r| r.stat).collect()
    }

    /// Applies every rule to the values `value` gives; returns the alarms active now.
    pub(crate) fn check(
        &mut self,
        shard: usize,
        now_ms: u64,
        value: impl Fn(&str) -> Option<u64>,
        offender: impl Fn(&str) -> String,
    ) -> Vec<ActiveAlarm> {
        for rule in &self.config.rules {
            let Some(v) = value(rule.stat) else { continue };
            let pos = self.active.iter().position(|(a, _)| a.stat == rule.stat);
            match (v > rule.max, pos) {
                (true, None) => {
                    let who = offender(rule.stat);
                    tracing::warn!(shard, stat = rule.stat, value = v, max = rule.max, offender = %who, "alarm");
                    let alarm = ActiveAlarm {
                        stat: rule.stat,
                        value: v,
                        max: rule.max,
                        offender: who,
                        since_ms: now_ms,
                    };
                    self.active.push((alarm, now_ms));
                }
                (true, Some(i)) => {
                    let (alarm, warned) = &mut self.active[i];
                    alarm.value = v;
                    if now_ms >= *warned + self.config.period_ms {
                        alarm.offender = offender(rule.stat);
                        *warned = now_ms;
                        tracing::warn!(shard, stat = rule.stat, value = v, max = rule.max, offender = %alarm.offender, since_ms = alarm.since_ms, "alarm still active");
                    }
                }
                (false, Some(i)) => {
                    let (alarm, _) = self.active.remove(i);
                    tracing::info!(
                        shard,
                        stat = rule.stat,
                        value = v,
                        max = rule.max,
                        active_ms = now_ms - alarm.since_ms,
                        "alarm cleared"
                    );
                }
                (false, None) => {}
            }
        }
        self.active.iter().map(|(a, _)| a.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn fires_once_repeats_per_period_and_clears() {
        let mut a = Alarms::new(AlarmConfig {
            rules: vec![AlarmRule { stat: "q", max: 10 }],
            period_ms: 5_000,
        });
        let asked = Cell::new(0);
        let mut run = |now, v| {
            a.check(
                0,
                now,
                |_| Some(v),
                |_| {
                    asked.set(asked.get() + 1);
                    "u1".to_string()
                },
            )
        };
        assert!(run(1_000, 10).is_empty(), "at the threshold is fine");
        let on = run(2_000, 11);
        assert_eq!(on.len(), 1);
        assert_eq!((on[0].offender.as_str(), on[0].since_ms), ("u1", 2_000));
        assert_eq!(run(3_000, 50)[0].value, 50);
        assert_eq!(asked.get(), 1, "no second warning inside the period");
        run(7_000, 50);
        assert_eq!(asked.get(), 2, "warned again after the period");
        assert!(run(8_000, 3).is_empty(), "cleared when back under");
        run(9_000, 11);
        assert_eq!(asked.get(), 3, "a new crossing warns at once");
    }

    #[test]
    fn unknown_statistics_are_skipped() {
        let mut a = Alarms::new(AlarmConfig {
            rules: vec![AlarmRule {
                stat: "nope",
                max: 0,
            }],
            period_ms: 1,
        });
        assert!(a.check(0, 1, |_| None, |_| String::new()).is_empty());
    }
}
