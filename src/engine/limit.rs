//! An account's rate limits, replaced (checked, stored, then announced so
//! every worker's cached copy goes at once; reads go through
//! `store::Reader`); and its fair share of starts.

use tracing::{debug, warn};
use uuid::Uuid;

use super::invalidate::Change;
use super::{Engine, Error};
use crate::domain::{Limits, Priority};
use crate::queue::{Bucket, keys};
use crate::store;

impl Engine {
    /// Replaces `account`'s limits.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the field of a rate that cannot be used;
    /// database errors.
    pub async fn set_limits(&self, account: Uuid, limits: &Limits) -> Result<(), Error> {
        if let Some((field, message)) = limits.problem() {
            return Err(Error::Invalid { field, message });
        }
        store::account::set_limits(&self.pool, account, limits).await?;
        self.changed(Change::Limits(account)).await;
        Ok(())
    }

    /// The priority a new execution of `account` runs at: the one asked
    /// while the account starts executions within its fair share (its
    /// rate, and at most its burst of them waiting for a worker), low past
    /// it. Low-priority work still runs at once on free workers; it only
    /// waits behind other accounts' work, so one account flooding starts
    /// cannot hold back the others, even when the flood lands while no
    /// worker runs. Redis trouble keeps the asked priority.
    pub(super) async fn fair_priority(&self, account: Uuid, asked: Priority) -> Priority {
        let Some(rate) = self.settings.fair_share else {
            return asked;
        };
        if asked == Priority::Low {
            return asked;
        }
        let prefix = &self.settings.queue_prefix;
        let bucket = Bucket {
            key: keys::limit(prefix, &account.to_string(), "starts"),
            interval: rate.interval(),
            burst: rate.burst(),
        };
        let waiting = self.fair_waiting(account);
        match self.queue.fair_start(&bucket, &waiting, rate.burst()).await {
            Ok(true) => asked,
            Ok(false) => {
                debug!(%account, "past its fair share of starts: low priority");
                if let Some(m) = &self.metrics {
                    m.demoted();
                }
                Priority::Low
            }
            Err(e) => {
                warn!(%account, error = %e, "fair share unreadable; priority as asked");
                asked
            }
        }
    }

    /// An execution of `account` that ran at its asked priority began: one
    /// fewer of its fair starts waits for a worker.
    pub(super) async fn fair_started(&self, account: Uuid) {
        if self.settings.fair_share.is_none() {
            return;
        }
        if let Err(e) = self.queue.fair_started(&self.fair_waiting(account)).await {
            warn!(%account, error = %e, "could not count a fair start as begun");
        }
    }

    /// The key counting `account`'s fair starts waiting for a worker.
    fn fair_waiting(&self, account: Uuid) -> String {
        keys::limit(
            &self.settings.queue_prefix,
            &account.to_string(),
            "starts:waiting",
        )
    }
}
