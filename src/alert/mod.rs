//! Admin alerts: rules per account (and global ones for admin keys), an
//! evaluator that raises alerts within seconds of what triggers them, and
//! a dispatcher that delivers them through email, SMS, Slack or a signed
//! webhook, escalating to the next channel while nobody acknowledges.
//!
//! - [`rule`]: what a rule watches and whom it tells, checked;
//! - [`evaluate`]: the evaluator (one active instance, by advisory lock):
//!   new dead letters, failure rates, dead-letter counts, open breakers,
//!   stalled queues; deduplication per rule and key; escalation;
//! - [`deliver`]: the dispatcher (every worker process): the alert outbox
//!   `alert_deliveries`, each delivery sent once and recorded, retried
//!   with backoff; the webhook signature.
//!
//! An alert and its first delivery are written in the transaction that
//! takes what triggered them, so a crash between trigger and send still
//! sends (durability); a delivery is unique per alert and channel, so no
//! channel hears of an alert twice from flowpilot's side (a crash between a
//! send and its record resends it once, with the same delivery id for the
//! receiver to drop).

pub mod deliver;
pub mod evaluate;
pub mod rule;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::provider::{EmailProvider, Providers, SmsProvider, webhook};
use crate::queue;
use crate::store::{self, alert::Rule};
pub use rule::{Channel, Invalid, Kind, Params};

/// Settings of the evaluator and the dispatcher.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often the evaluator looks.
    pub interval: Duration,
    /// How often the dispatcher looks for deliveries due.
    pub dispatch_interval: Duration,
    /// The queue prefix (breakers live under it).
    pub queue_prefix: String,
    /// The queues a `queue_stalled` rule watches by default.
    pub queues: Vec<String>,
}

impl Settings {
    /// The settings `config` names, for queues under `queue_prefix`.
    pub fn from_config(config: &crate::config::EngineConfig, queue_prefix: &str) -> Settings {
        Settings {
            interval: config.alert_interval,
            dispatch_interval: config.alert_dispatch_interval,
            ..Settings::for_prefix(queue_prefix)
        }
    }

    /// The defaults (evaluate every 5 s, dispatch every second) for queues
    /// under `queue_prefix`.
    pub fn for_prefix(queue_prefix: &str) -> Settings {
        Settings {
            interval: Duration::from_secs(5),
            dispatch_interval: Duration::from_secs(1),
            queue_prefix: queue_prefix.to_owned(),
            queues: queue::keys::priority_queues(queue_prefix),
        }
    }
}

/// Errors of alert rules.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input, naming the field.
    #[error("{}: {}", .0.field, .0.message)]
    Invalid(Invalid),
    /// Only admin keys may do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// No such rule or alert for the caller.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// PostgreSQL.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Redis.
    #[error(transparent)]
    Queue(#[from] queue::Error),
}

/// A rule as asked for.
#[derive(Debug, Clone)]
pub struct RuleSpec {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: Kind,
    /// The kind's parameters (an object).
    pub params: Json,
    /// Channels, in escalation order.
    pub channels: Vec<Channel>,
    /// Dedup window.
    pub dedup_window: Duration,
    /// Escalation delay.
    pub escalate_after: Duration,
    /// A global rule (every account; admin keys only).
    pub global: bool,
}

/// Alert rules, alerts and their delivery: the one door for writes.
#[derive(Clone)]
pub struct Alerts {
    pool: PgPool,
    queue: queue::Client,
    email: Arc<dyn EmailProvider>,
    sms: Arc<dyn SmsProvider>,
    webhook: webhook::Client,
    settings: Arc<Settings>,
}

fn seconds(field: &str, d: Duration) -> Result<i32, Error> {
    let s = d.as_secs();
    if (1..=604_800).contains(&s) {
        Ok(i32::try_from(s).unwrap_or(i32::MAX))
    } else {
        Err(Error::Invalid(Invalid {
            field: field.into(),
            message: "must be 1 s to 7 days".into(),
        }))
    }
}

impl Alerts {
    /// Alerts over `pool`, sending through `providers`.
    pub fn new(pool: PgPool, providers: &Providers, settings: Settings) -> Self {
        Alerts {
            pool,
            queue: providers.queue.clone(),
            email: Arc::clone(&providers.email),
            sms: Arc::clone(&providers.sms),
            webhook: providers.webhook.clone(),
            settings: Arc::new(settings),
        }
    }

    /// Creates a rule of `account_id` (a global one when `spec.global`,
    /// for an admin key).
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the field; [`Error::Forbidden`] for a
    /// global or system rule without an admin key; store errors.
    pub async fn create_rule(
        &self,
        account_id: Uuid,
        admin: bool,
        spec: RuleSpec,
    ) -> Result<Rule, Error> {
        let name = spec.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(Error::Invalid(Invalid {
                field: "name".into(),
                message: "must be 1 to 200 characters".into(),
            }));
        }
        Params::parse(spec.kind, &spec.params).map_err(Error::Invalid)?;
        rule::check_channels(&spec.channels).map_err(Error::Invalid)?;
        if spec.global && !admin {
            return Err(Error::Forbidden("only admin keys may create global rules"));
        }
        if spec.kind.is_system() && !spec.global {
            return Err(Error::Invalid(Invalid {
                field: "global".into(),
                message: format!(
                    "a {} rule watches what every account shares: it must be global (admin keys)",
                    spec.kind.as_str()
                ),
            }));
        }
        let channels = serde_json::to_value(&spec.channels).unwrap_or_default();
        Ok(store::alert::insert_rule(
            &self.pool,
            &store::alert::NewRule {
                account_id: (!spec.global).then_some(account_id),
                name,
                kind: spec.kind.as_str(),
                params: &spec.params,
                channels: &channels,
                dedup_window_s: seconds("dedup_window", spec.dedup_window)?,
                escalate_after_s: seconds("escalate_after", spec.escalate_after)?,
            },
        )
        .await?)
    }

    /// Deletes a rule the caller sees, with its alerts.
    ///
    /// # Errors
    /// [`Error::NotFound`]; store errors.
    pub async fn delete_rule(
        &self,
        account_id: Uuid,
        admin: bool,
        id: Uuid,
    ) -> Result<Rule, Error> {
        store::alert::delete_rule(&self.pool, account_id, admin, id)
            .await?
            .ok_or(Error::NotFound("alert rule"))
    }

    /// Acknowledges an alert the caller sees: it escalates no further.
    /// Again changes nothing.
    ///
    /// # Errors
    /// [`Error::NotFound`]; store errors.
    pub async fn acknowledge(
        &self,
        account_id: Uuid,
        admin: bool,
        id: Uuid,
        by: Uuid,
    ) -> Result<store::alert::Alert, Error> {
        store::alert::acknowledge(&self.pool, account_id, admin, id, by)
            .await?
            .ok_or(Error::NotFound("alert"))
    }
}
