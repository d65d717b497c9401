//! Per-account rate limits of outbound calls, shared by every worker
//! through Redis ([`crate::queue::Client::reserve`] holds the GCRA).
//!
//! A call draws on its account's overall budget and on its channel's
//! (email, SMS, or the webhook's host). Over budget, it is given a slot of
//! its own; the action parks until then (`waiting_reason: rate_limited`),
//! spending no attempt. Each account's limits are read from PostgreSQL
//! once and cached; a change drops the copies of every process at once
//! (the engine's invalidation listener calls [`Limiter::forget`]), and
//! copies expire after a minute regardless.
//!
//! Redis or PostgreSQL trouble never stops a call: it then goes unlimited,
//! and the log says so.

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounterVec;
use sqlx::PgPool;
use tracing::warn;
use uuid::Uuid;

use crate::action::Channel;
use crate::cache::Cache;
use crate::domain::{Limits, Rate};
use crate::queue::{self, Bucket, keys};

/// A cached copy is dropped this long after it was read even when no
/// change was announced.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// Accounts cached at most.
const CACHE_MAX: usize = 100_000;

/// The rate limits of one installation (its queue prefix).
#[derive(Clone)]
pub struct Limiter {
    queue: queue::Client,
    pool: PgPool,
    prefix: String,
    defaults: Arc<Limits>,
    cache: Arc<Cache<Uuid, Arc<Limits>>>,
}

impl Limiter {
    /// Limits under the queue `prefix`, each account's over `defaults`.
    pub fn new(queue: queue::Client, pool: PgPool, prefix: &str, defaults: Limits) -> Self {
        Limiter {
            queue,
            pool,
            prefix: prefix.to_owned(),
            defaults: Arc::new(defaults),
            cache: Arc::new(Cache::new("limits", Some(CACHE_TTL), CACHE_MAX)),
        }
    }

    /// Counts cache lookups in `counter`.
    pub fn with_metrics(mut self, counter: IntCounterVec) -> Self {
        self.cache =
            Arc::new(Cache::new("limits", Some(CACHE_TTL), CACHE_MAX).with_metrics(counter));
        self
    }

    /// Drops the cached copy of `account`'s limits (`None`: of every
    /// account).
    pub fn forget(&self, account: Option<Uuid>) {
        match account {
            Some(a) => self.cache.remove(&a),
            None => self.cache.clear(),
        }
    }
    /// Reserves a slot for one call of `account` on `channel`: how long
    /// until it (zero: now, or when no limit applies).
    pub async fn reserve(&self, account: Uuid, channel: Channel<'_>) -> Duration {
        let limits = match self.limits_of(account).await {
            Ok(l) => l,
            Err(e) => {
                warn!(%account, error = %e, "rate limits unreadable; calling unlimited");
                return Duration::ZERO;
            }
        };
        let (budget, rate) = match channel {
            Channel::Email => ("email".to_owned(), limits.email),
            Channel::Sms => ("sms".to_owned(), limits.sms),
            Channel::Webhook(host) => (format!("webhook:{host}"), limits.webhook_host(host)),
        };
        let account_key = account.to_string();
        let bucket = |budget: &str, rate: Rate| Bucket {
            key: keys::limit(&self.prefix, &account_key, budget),
            interval: rate.interval(),
            burst: rate.burst(),
        };
        let buckets: Vec<Bucket> = [
            limits.account.map(|r| bucket("account", r)),
            rate.map(|r| bucket(&budget, r)),
        ]
        .into_iter()
        .flatten()
        .collect();
        match self.queue.reserve(&buckets).await {
            Ok(wait) => wait,
            Err(e) => {
                warn!(%account, error = %e, "rate limit unreachable; calling unlimited");
                Duration::ZERO
            }
        }
    }

    /// `account`'s limits over the defaults, from the cache when fresh.
    async fn limits_of(&self, account: Uuid) -> crate::store::Result<Arc<Limits>> {
        if let Some(limits) = self.cache.get(&account) {
            return Ok(limits);
        }
        let own = crate::store::account::limits(&self.pool, account)
            .await?
            .unwrap_or_default();
        let limits = Arc::new(own.over(&self.defaults));
        self.cache.insert(account, Arc::clone(&limits));
        Ok(limits)
    }
}
