//! Retry policies: how long a step that failed with a retryable class
//! waits before its next attempt, and when it stops trying.
//!
//! A policy comes from three places, the most specific winning field by
//! field: the step's own `retry`, the action type's default
//! ([`RetryPolicies`], configurable per type), and the engine's default.
//! Delays are exponential with full jitter: attempt `n` waits a uniform
//! random time in `[0, min(max_backoff, backoff * 2^(n-1))]`, so many
//! executions failing together do not come back together. A provider's
//! `Retry-After` is honoured up to `max_backoff`; `max_elapsed` bounds the
//! whole round of attempts: no attempt is scheduled past it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use crate::domain::retry::{MAX_ATTEMPTS, RetryOverride};

/// Retries of transient errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: i32,
    /// Backoff cap before the first retry.
    pub initial: Duration,
    /// Backoff cap overall.
    pub max: Duration,
    /// The step fails once its attempts have run this long, counted from
    /// the first attempt of the round.
    pub max_elapsed: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial: Duration::from_secs(10),
            max: Duration::from_secs(3600),
            max_elapsed: None,
        }
    }
}

/// What follows a retryable failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Try again at this time.
    RetryAt(DateTime<Utc>),
    /// Stop: the step fails; the text says why ("after 5 attempts").
    GiveUp(String),
}

impl RetryPolicy {
    /// The backoff cap before attempt `tries + 1`: `initial * 2^(tries-1)`,
    /// at most `max`.
    pub fn cap(&self, tries: i32) -> Duration {
        let exp = 2f64.powi((tries - 1).clamp(0, 30));
        let cap = (self.initial.as_secs_f64() * exp).min(self.max.as_secs_f64());
        Duration::from_secs_f64(cap.max(0.0))
    }

    /// What follows the failure of attempt `tries` (1-based, counted in
    /// this round), `unit` a uniform random number in `[0, 1]`, with the
    /// provider's `retry_after` if it sent one; `started` is when the
    /// round's first attempt started.
    pub fn next(
        &self,
        tries: i32,
        unit: f64,
        retry_after: Option<Duration>,
        started: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Next {
        if tries >= self.max_attempts {
            return Next::GiveUp(format!("after {tries} attempts"));
        }
        let jittered = self.cap(tries).mul_f64(unit.clamp(0.0, 1.0));
        let delay = match retry_after {
            Some(asked) => jittered.max(asked.min(self.max)),
            None => jittered,
        };
        let at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        match self.max_elapsed {
            None => Next::RetryAt(at),
            Some(limit) => {
                let deadline =
                    started + chrono::Duration::from_std(limit).unwrap_or(chrono::Duration::MAX);
                if now >= deadline {
                    Next::GiveUp(format!(
                        "after {tries} attempts in {} (max_elapsed {})",
                        human((now - started).to_std().unwrap_or_default()),
                        human(limit)
                    ))
                } else {
                    Next::RetryAt(at.min(deadline))
                }
            }
        }
    }
}

impl RetryPolicy {
    /// This policy with the fields `o` gives replaced.
    pub fn with(self, o: &RetryOverride) -> RetryPolicy {
        let initial = o.backoff.unwrap_or(self.initial);
        RetryPolicy {
            max_attempts: o.max_attempts.unwrap_or(self.max_attempts),
            initial,
            // A step that raises its backoff above the base's cap keeps it.
            max: o.max_backoff.unwrap_or(self.max).max(initial),
            max_elapsed: o.max_elapsed.or(self.max_elapsed),
        }
    }
}

fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

impl fmt::Display for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "max_attempts={},backoff={},max_backoff={}",
            self.max_attempts,
            human(self.initial),
            human(self.max)
        )?;
        if let Some(e) = self.max_elapsed {
            write!(f, ",max_elapsed={}", human(e))?;
        }
        Ok(())
    }
}

/// The policies of the engine: one per action type that calls a provider,
/// and a default for the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicies {
    /// Actions without a policy of their own.
    pub default: RetryPolicy,
    /// By action type (`send_email`, `send_sms`, `webhook`, `arq`).
    pub by_kind: BTreeMap<&'static str, RetryPolicy>,
}

/// Action types with a default policy of their own, and its fields. A day
/// at most for messages and webhooks (a message that arrives a day late is
/// worse than none), six hours for Python jobs.
const BUILT_IN: [(&str, RetryOverride); 4] = [
    (
        "send_email",
        RetryOverride {
            max_attempts: Some(6),
            backoff: Some(Duration::from_secs(30)),
            max_backoff: Some(Duration::from_secs(30 * 60)),
            max_elapsed: Some(Duration::from_secs(24 * 3600)),
        },
    ),
    (
        "send_sms",
        RetryOverride {
            max_attempts: Some(6),
            backoff: Some(Duration::from_secs(30)),
            max_backoff: Some(Duration::from_secs(30 * 60)),
            max_elapsed: Some(Duration::from_secs(24 * 3600)),
        },
    ),
    (
        "webhook",
        RetryOverride {
            max_attempts: Some(8),
            backoff: Some(Duration::from_secs(10)),
            max_backoff: Some(Duration::from_secs(3600)),
            max_elapsed: Some(Duration::from_secs(24 * 3600)),
        },
    ),
    (
        "arq",
        RetryOverride {
            max_attempts: Some(3),
            backoff: Some(Duration::from_secs(30)),
            max_backoff: Some(Duration::from_secs(10 * 60)),
            max_elapsed: Some(Duration::from_secs(6 * 3600)),
        },
    ),
];

impl RetryPolicies {
    /// `policy` for every action type.
    pub fn uniform(policy: RetryPolicy) -> Self {
        RetryPolicies {
            default: policy,
            by_kind: BTreeMap::new(),
        }
    }

    /// The built-in per-type defaults over `default`, each then changed by
    /// the configured `overrides` for its type.
    pub fn built_in(default: RetryPolicy, overrides: &[(&'static str, RetryOverride)]) -> Self {
        let by_kind = BUILT_IN
            .iter()
            .map(|(kind, o)| {
                let mut p = default.with(o);
                for (k, extra) in overrides {
                    if k == kind {
                        p = p.with(extra);
                    }
                }
                (*kind, p)
            })
            .collect();
        RetryPolicies { default, by_kind }
    }

    /// The policy of a step of action type `kind`, with its own `retry`.
    pub fn for_step(&self, kind: &str, step: Option<&RetryOverride>) -> RetryPolicy {
        let base = self.by_kind.get(kind).copied().unwrap_or(self.default);
        step.map_or(base, |o| base.with(o))
    }
}

impl Default for RetryPolicies {
    fn default() -> Self {
        Self::built_in(RetryPolicy::default(), &[])
    }
}

#[cfg(test)]
mod tests;
