//! Queue health: what `GET /api/v1/queues`, the queue gauges and the
//! `queue_stalled` alert read, in one atomic round trip per queue.

use std::time::Duration;

use super::script::HEALTH;
use super::{Client, Result};
use crate::queue::keys;

/// How many of the oldest due jobs are checked for a worker's hold. Workers
/// claim oldest first, so the held jobs are among them unless more than
/// this many run at once on one queue.
const HELD_SCAN: usize = 1_000;
/// Buckets the rates are summed over: the minute before the bucket being
/// filled.
const RATE_BUCKETS: i64 = 6;

/// One queue as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Due now and not held by a worker: waiting for a free slot.
    pub ready: u64,
    /// Scheduled for later.
    pub deferred: u64,
    /// Due and held by a worker (counted among the 1,000 oldest due jobs).
    /// `ready + in_progress` is the due count autoscaling reads.
    pub in_progress: u64,
    /// Run time (Unix ms) of the oldest ready job, if any.
    pub oldest_ready_ms: Option<i64>,
    /// Jobs flowpilot's producers enqueued in the last full minute
    /// (jobs Python producers enqueue are not counted).
    pub enqueued_last_minute: u64,
    /// Jobs flowpilot's workers claimed in the last full minute (Python
    /// workers' claims are not counted).
    pub dequeued_last_minute: u64,
}

impl Health {
    /// How long the oldest ready job has waited at `now_ms`.
    pub fn oldest_ready_age(&self, now_ms: i64) -> Option<Duration> {
        self.oldest_ready_ms
            .map(|at| Duration::from_millis(now_ms.saturating_sub(at).max(0) as u64))
    }
}

impl Client {
    /// The health of `queue` at `now_ms`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn health(&self, queue: &str, now_ms: i64) -> Result<Health> {
        let mut script = HEALTH.key(queue);
        for back in 1..=RATE_BUCKETS {
            script.key(keys::stats(queue, now_ms - back * keys::STATS_BUCKET_MS));
        }
        let (due, deferred, held, oldest, enqueued, dequeued): (u64, u64, u64, i64, u64, u64) =
            script
                .arg(now_ms)
                .arg(keys::in_progress(""))
                .arg(HELD_SCAN)
                .invoke_async(&mut self.conn())
                .await?;
        Ok(Health {
            ready: due.saturating_sub(held),
            deferred,
            in_progress: held,
            oldest_ready_ms: (oldest >= 0).then_some(oldest),
            enqueued_last_minute: enqueued,
            dequeued_last_minute: dequeued,
        })
    }
}
