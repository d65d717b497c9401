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
//! An account may also cap its executions running at once: a run takes a
//! permit before it claims its execution ([`Limiter::take_running`]),
//! renews it while it runs and gives it back when it ends; one over the
//! cap waits in line ([`crate::queue::RunningSlot`]).
//!
//! Redis or PostgreSQL trouble never stops a call or a run: it then goes
//! unlimited, and the log says so.

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounterVec;
use sqlx::PgPool;
use tracing::warn;
use uuid::Uuid;

use crate::action::Channel;
use crate::cache::Cache;
use crate::domain::{Limits, Rate};
use crate::queue::{self, Bucket, RunningSlot, keys};

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

    /// Takes a permit of `account`'s cap of running executions for job
    /// `job_id` of `queue`, held at most `hold`.
    pub async fn take_running(
        &self,
        account: Uuid,
        queue: &str,
        job_id: &str,
        hold: Duration,
    ) -> Admit {
        let Some(permit) = self.permit(account, queue, job_id, hold).await else {
            return Admit::Run(None);
        };
        match self
            .queue
            .take_running(&permit.slot, permit.cap, hold)
            .await
        {
            Ok(true) => Admit::Run(Some(permit)),
            Ok(false) => Admit::Wait,
            Err(e) => {
                warn!(%account, error = %e, "cap of running executions unreachable; running uncapped");
                Admit::Run(None)
            }
        }
    }

    /// The permit job `job_id` of `queue` would hold under `account`'s
    /// cap; `None` when the account has none.
    pub async fn permit(
        &self,
        account: Uuid,
        queue: &str,
        job_id: &str,
        hold: Duration,
    ) -> Option<Permit> {
        let cap = match self.limits_of(account).await {
            Ok(l) => l.running?,
            Err(e) => {
                warn!(%account, error = %e, "limits unreadable; running uncapped");
                return None;
            }
        };
        let slot = RunningSlot::new(&self.prefix, &account.to_string(), queue, job_id);
        Some(Permit { slot, cap, hold })
    }

    /// Holds `permit` for another of its hold periods, while its run goes
    /// on: a run renews it every third of the period, so the permit of a
    /// worker that died lapses within one.
    pub async fn renew_running(&self, permit: &Permit) {
        match self.queue.renew_running(&permit.slot, permit.hold).await {
            Ok(true) => {}
            Ok(false) => warn!("permit lapsed before its renewal; the run goes on over the cap"),
            Err(e) => warn!(error = %e, "permit not renewed; it may lapse"),
        }
    }

    /// Gives `permit` back, handing it to the job waiting longest.
    pub async fn give_running(&self, permit: Permit) {
        if let Err(e) = self
            .queue
            .give_running(&permit.slot, permit.cap, permit.hold)
            .await
        {
            warn!(error = %e, "permit not given back; it lapses with its hold");
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

/// What an account's cap says to a run.
#[derive(Debug)]
pub enum Admit {
    /// Run; with the permit to give back when the run ends, if capped.
    Run(Option<Permit>),
    /// Wait in line: the cap is reached.
    Wait,
}

/// A permit of an account's cap of running executions, held by one job.
#[derive(Debug, Clone)]
pub struct Permit {
    slot: RunningSlot,
    cap: u32,
    hold: Duration,
}
