//! What a rule watches and whom it tells, checked before it is stored.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use uuid::Uuid;

use crate::domain::ErrorClass;

/// Most channels of a rule.
pub const MAX_CHANNELS: usize = 5;
/// Most workflows an `execution_failed` rule names.
const MAX_WORKFLOWS: usize = 100;
/// Longest URL of a channel.
const MAX_URL: usize = 2000;
/// Bounds of a webhook channel's signing secret, bytes.
const SECRET_BYTES: std::ops::RangeInclusive<usize> = 16..=256;

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An execution failed for good (optionally only some workflows or
    /// classes); one alert per workflow and fingerprint per window.
    ExecutionFailed,
    /// More than a share of step attempts failed or were retried over a
    /// window, once it holds a minimum of attempts.
    FailureRate,
    /// A provider's circuit breaker is not closed (global rules only).
    BreakerOpen,
    /// A queue's oldest ready job waits longer than a limit (global only).
    QueueStalled,
    /// More than a number of executions failed for good over a window.
    DeadLetters,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 5] = [
        Kind::ExecutionFailed,
        Kind::FailureRate,
        Kind::BreakerOpen,
        Kind::QueueStalled,
        Kind::DeadLetters,
    ];

    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ExecutionFailed => "execution_failed",
            Kind::FailureRate => "failure_rate",
            Kind::BreakerOpen => "breaker_open",
            Kind::QueueStalled => "queue_stalled",
            Kind::DeadLetters => "dead_letters",
        }
    }

    /// Whether it watches the installation rather than one account: only
    /// global rules (admin keys) may watch it, since breakers and queues
    /// are shared by every account.
    pub fn is_system(self) -> bool {
        matches!(self, Kind::BreakerOpen | Kind::QueueStalled)
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                format!("`{s}` is not a rule kind: {}", all.join(", "))
            })
    }
}

/// `execution_failed` parameters.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionFailed {
    /// Only these workflows (any when absent).
    pub workflow_ids: Option<Vec<Uuid>>,
    /// Only these classes (any when absent).
    pub error_classes: Option<Vec<String>>,
}

/// `failure_rate` parameters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FailureRate {
    /// Alert above this share of failed or retried attempts, percent.
    pub threshold_percent: f64,
    /// The window, seconds (default 300).
    #[serde(default = "five_minutes")]
    pub window_s: i32,
    /// Attempts the window must hold first (default 20).
    #[serde(default = "twenty")]
    pub min_count: i64,
    /// Only this workflow.
    pub workflow_id: Option<Uuid>,
}

/// `dead_letters` parameters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetters {
    /// Alert when more than this many executions failed in the window.
    pub threshold: i64,
    /// The window, seconds (default 300).
    #[serde(default = "five_minutes")]
    pub window_s: i32,
}

/// `queue_stalled` parameters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueStalled {
    /// Alert when the oldest ready job (not held by a worker) waits longer
    /// than this, seconds.
    pub older_than_s: i64,
    /// Queues watched (default: the three priority queues).
    pub queues: Option<Vec<String>>,
}

/// `breaker_open` parameters: none.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerOpen {}

fn five_minutes() -> i32 {
    300
}

fn twenty() -> i64 {
    20
}

/// A rule's parameters by kind.
#[derive(Debug, Clone)]
pub enum Params {
    /// See [`ExecutionFailed`].
    ExecutionFailed(ExecutionFailed),
    /// See [`FailureRate`].
    FailureRate(FailureRate),
    /// See [`BreakerOpen`].
    BreakerOpen(BreakerOpen),
    /// See [`QueueStalled`].
    QueueStalled(QueueStalled),
    /// See [`DeadLetters`].
    DeadLetters(DeadLetters),
}

/// A bad field: its path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The field (`params.threshold_percent`, `channels[1].url`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

fn parse<T: serde::de::DeserializeOwned>(params: &Json) -> Result<T, Invalid> {
    serde_path_to_error::deserialize(params).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "params".into()
        } else {
            format!("params.{path}")
        };
        invalid(field, e.inner().to_string())
    })
}

fn window(field: &str, s: i32) -> Result<(), Invalid> {
    if (10..=86_400).contains(&s) {
        Ok(())
    } else {
        Err(invalid(field, "must be 10 to 86400 seconds"))
    }
}

impl Params {
    /// The parameters of `kind` in `params` (an object), checked.
    ///
    /// # Errors
    /// The field that is wrong.
    pub fn parse(kind: Kind, params: &Json) -> Result<Params, Invalid> {
        if !params.is_object() {
            return Err(invalid("params", "must be an object"));
        }
        Ok(match kind {
            Kind::ExecutionFailed => {
                let p: ExecutionFailed = parse(params)?;
                if p.workflow_ids
                    .as_ref()
                    .is_some_and(|w| w.is_empty() || w.len() > MAX_WORKFLOWS)
                {
                    return Err(invalid(
                        "params.workflow_ids",
                        format!("1 to {MAX_WORKFLOWS} workflow ids"),
                    ));
                }
                if let Some(classes) = &p.error_classes {
                    if classes.is_empty() {
                        return Err(invalid(
                            "params.error_classes",
                            "name at least one class, or leave it out",
                        ));
                    }
                    for (i, c) in classes.iter().enumerate() {
                        c.parse::<ErrorClass>()
                            .map_err(|m| invalid(format!("params.error_classes[{i}]"), m))?;
                    }
                }
                Params::ExecutionFailed(p)
            }
            Kind::FailureRate => {
                let p: FailureRate = parse(params)?;
                if !(p.threshold_percent > 0.0 && p.threshold_percent <= 100.0) {
                    return Err(invalid(
                        "params.threshold_percent",
                        "must be above 0 and at most 100",
                    ));
                }
                window("params.window_s", p.window_s)?;
                if !(1..=1_000_000).contains(&p.min_count) {
                    return Err(invalid("params.min_count", "must be 1 to 1000000"));
                }
                Params::FailureRate(p)
            }
            Kind::BreakerOpen => Params::BreakerOpen(parse(params)?),
            Kind::QueueStalled => {
                let p: QueueStalled = parse(params)?;
                if !(1..=86_400).contains(&p.older_than_s) {
                    return Err(invalid("params.older_than_s", "must be 1 to 86400 seconds"));
                }
                if let Some(q) = &p.queues
                    && (q.is_empty()
                        || q.len() > 20
                        || q.iter().any(|n| n.is_empty() || n.len() > 200))
                {
                    return Err(invalid(
                        "params.queues",
                        "1 to 20 queue names of 1 to 200 bytes",
                    ));
                }
                Params::QueueStalled(p)
            }
            Kind::DeadLetters => {
                let p: DeadLetters = parse(params)?;
                if !(0..=1_000_000).contains(&p.threshold) {
                    return Err(invalid("params.threshold", "must be 0 to 1000000"));
                }
                window("params.window_s", p.window_s)?;
                Params::DeadLetters(p)
            }
        })
    }
}

/// Whom a rule tells, in escalation order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Channel {
    /// An email through the configured email provider.
    Email {
        /// Address.
        to: String,
    },
    /// An SMS through the configured SMS provider.
    Sms {
        /// Number, E.164 (`+15550100`).
        to: String,
    },
    /// A Slack incoming webhook (`{"text": ...}`).
    Slack {
        /// The incoming webhook's URL (a secret: shown masked).
        url: String,
    },
    /// A JSON POST signed with HMAC-SHA256 (`X-Flowpilot-Signature`).
    Webhook {
        /// Where.
        url: String,
        /// The signing secret, 16 to 256 bytes (never shown again).
        secret: String,
    },
}

impl Channel {
    /// Stored kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Email { .. } => "email",
            Channel::Sms { .. } => "sms",
            Channel::Slack { .. } => "slack",
            Channel::Webhook { .. } => "webhook",
        }
    }

    /// The channel as responses show it: the webhook secret and the Slack
    /// URL's path (its secret) hidden.
    pub fn masked(&self) -> Json {
        match self {
            Channel::Email { to } => serde_json::json!({"type": "email", "to": to}),
            Channel::Sms { to } => serde_json::json!({"type": "sms", "to": to}),
            Channel::Slack { url } => {
                let shown = url::Url::parse(url)
                    .map(|u| format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("")))
                    .unwrap_or_else(|_| "…".into());
                serde_json::json!({"type": "slack", "url": shown})
            }
            Channel::Webhook { url, .. } => {
                serde_json::json!({"type": "webhook", "url": url, "secret": "********"})
            }
        }
    }

    fn check(&self, field: &str) -> Result<(), Invalid> {
        match self {
            Channel::Email { to } => {
                if to.len() > 320 || !to.contains('@') || to.chars().any(char::is_control) {
                    return Err(invalid(format!("{field}.to"), "must be an email address"));
                }
            }
            Channel::Sms { to } => {
                let digits = to.strip_prefix('+').unwrap_or("");
                if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(invalid(
                        format!("{field}.to"),
                        "must be an E.164 number (`+15550100`)",
                    ));
                }
            }
            Channel::Slack { url } => check_url(&format!("{field}.url"), url)?,
            Channel::Webhook { url, secret } => {
                check_url(&format!("{field}.url"), url)?;
                if !SECRET_BYTES.contains(&secret.len()) {
                    return Err(invalid(
                        format!("{field}.secret"),
                        "must be 16 to 256 bytes",
                    ));
                }
            }
        }
        Ok(())
    }
}

fn check_url(field: &str, url: &str) -> Result<(), Invalid> {
    let ok = url.len() <= MAX_URL
        && url::Url::parse(url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            "must be an http or https URL of at most 2000 bytes",
        ))
    }
}

/// The channels of a rule, checked.
///
/// # Errors
/// The field that is wrong.
pub fn check_channels(channels: &[Channel]) -> Result<(), Invalid> {
    if channels.is_empty() || channels.len() > MAX_CHANNELS {
        return Err(invalid("channels", format!("1 to {MAX_CHANNELS} channels")));
    }
    for (i, c) in channels.iter().enumerate() {
        c.check(&format!("channels[{i}]"))?;
    }
    Ok(())
}

/// The channels a rule stored.
pub fn stored_channels(channels: &Json) -> Vec<Channel> {
    serde_json::from_value(channels.clone()).unwrap_or_default()
}
