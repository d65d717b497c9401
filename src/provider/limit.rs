//! Per-account rate limits of outbound calls, shared by every worker
//! through Redis ([`crate::queue::Client::reserve`] holds the GCRA).
//!
//! A call draws on its account's overall budget and on its channel's
//! (email, SMS, or the webhook's host). Over budget, it is given a slot of
//! its own; the action parks until then (`waiting_reason: rate_limited`),
//! spending no attempt. Each account's limits are read from PostgreSQL
//! once and cached; `PUT /api/v1/limits` announces a change on
//! `<prefix>:limits:changed` and every worker drops its copy at once (and
//! all copies when its subscription was down, as it may have missed one).
//!
//! Redis or PostgreSQL trouble never stops a call: it then goes unlimited,
//! and the log says so.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

use crate::action::Channel;
use crate::domain::{Limits, Rate};
use crate::queue::{self, Bucket, keys};

/// A cached copy is dropped this long after it was read even when no
/// change was announced.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// Accounts cached at most; past it the cache starts over.
const CACHE_MAX: usize = 100_000;
/// Pause before subscribing again after the subscription failed.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

/// Each account's effective limits, with when they were read.
type Cache = HashMap<Uuid, (Instant, Arc<Limits>)>;

/// The rate limits of one installation (its queue prefix).
#[derive(Clone)]
pub struct Limiter {
    queue: queue::Client,
    pool: PgPool,
    prefix: String,
    defaults: Arc<Limits>,
    cache: Arc<Mutex<Cache>>,
    lookups: Option<IntCounterVec>,
}

impl Limiter {
    /// Limits under the queue `prefix`, each account's over `defaults`.
    pub fn new(queue: queue::Client, pool: PgPool, prefix: &str, defaults: Limits) -> Self {
        Limiter {
            queue,
            pool,
            prefix: prefix.to_owned(),
            defaults: Arc::new(defaults),
            cache: Arc::default(),
            lookups: None,
        }
    }

    /// Counts cache lookups in `counter` (labels `cache` = `limits`,
    /// `result`: `hit`, `miss`).
    pub fn with_metrics(mut self, counter: IntCounterVec) -> Self {
        self.lookups = Some(counter);
        self
    }

    /// The channel every change of an account's limits is announced on.
    pub fn channel(prefix: &str) -> String {
        format!("{prefix}:limits:changed")
    }

    /// Announces that `account`'s limits changed, so every worker reads
    /// them again.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn announce(&self, account: Uuid) -> queue::Result<()> {
        self.queue
            .publish(&Self::channel(&self.prefix), &account.to_string())
            .await
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
        let cached = self.lock().get(&account).cloned();
        if let Some((read_at, limits)) = cached
            && read_at.elapsed() < CACHE_TTL
        {
            self.count("hit");
            return Ok(limits);
        }
        self.count("miss");
        let own = crate::store::account::limits(&self.pool, account)
            .await?
            .unwrap_or_default();
        let limits = Arc::new(own.over(&self.defaults));
        let mut cache = self.lock();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(account, (Instant::now(), Arc::clone(&limits)));
        Ok(limits)
    }

    /// Drops cached copies as changes are announced, until `token` is
    /// cancelled. Each (re)subscription first drops every copy: a change
    /// announced while it was down would otherwise go unseen.
    pub async fn listen(self, token: CancellationToken) {
        let channel = Self::channel(&self.prefix);
        loop {
            let this = self.clone();
            let listened = self.queue.listen(
                std::slice::from_ref(&channel),
                || this.lock().clear(),
                |account: &str| {
                    if let Ok(id) = account.parse::<Uuid>() {
                        this.lock().remove(&id);
                    }
                },
            );
            tokio::select! {
                () = token.cancelled() => return,
                r = listened => if let Err(e) = r {
                    warn!(error = %e, "rate limit changes not heard; subscribing again");
                },
            }
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(RESUBSCRIBE) => {}
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, result: &str) {
        if let Some(c) = &self.lookups {
            c.with_label_values(&["limits", result]).inc();
        }
    }
}
