//! The maintenance loop: one active instance across all processes (a
//! PostgreSQL session advisory lock), every `maintenance_interval`:
//!
//! - looks at WAITING / RETRYING executions whose time came more than
//!   `due_grace` ago (their own deferred job normally wakes them first),
//!   RUNNING ones whose lease lapsed (their worker died), and QUEUED ones
//!   untouched for `stale_queued_after` (their job may have been lost with
//!   Redis), and asks Redis where each one's current job stands: a job that
//!   will still run (queued behind a backlog, or held by a worker) is left
//!   alone; otherwise the row moves to QUEUED under a fresh job id;
//! - gives a fresh job to bulk operations whose lease lapsed (their worker
//!   died) or that sat unclaimed for `stale_queued_after` (their job was
//!   lost); a second job of a live operation finds its lease held and ends;
//! - pumps timers: wake-ups of WAITING and RETRYING rows due beyond the
//!   timer horizon were left in PostgreSQL alone; as their time comes
//!   within it, the pump enqueues their deferred jobs (so Redis holds
//!   minutes of timers, not weeks);
//! - folds new log rows and execution events into the analytics rollups
//!   (`store::analytics`), and drops rollup days past the retention;
//! - keeps log partitions created ahead and, with a retention, drops old ones.
//!
//! Every process runs it; the lock makes all but one idle. A leader whose
//! connection drops loses the lock with it, and another takes over.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::plan::{self, Command, Machine};
use super::{Engine, Result, job_id};
use crate::queue::Presence;
use crate::store::{
    self,
    execution::Execution,
    lock::{LeaderLock, Role},
};

/// Rows handled per pass and category.
const BATCH: i64 = 500;
/// Wake-ups the timer pump moves per pass.
const PUMP_BATCH: i64 = 5_000;
/// The analytics fold's share of a pass.
const FOLD_BUDGET: Duration = Duration::from_secs(2);
/// Partition upkeep runs at most this often.
const PARTITION_EVERY: Duration = Duration::from_secs(3600);

/// The loop's state.
pub struct Maintenance {
    engine: Arc<Engine>,
    /// The lock, while leading.
    leader: Option<LeaderLock>,
    last_partitions: Option<tokio::time::Instant>,
    /// The timer pump has enqueued the wake-ups due up to here.
    pumped_until: Option<DateTime<Utc>>,
}

impl Maintenance {
    /// A loop over `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        Maintenance {
            engine,
            leader: None,
            last_partitions: None,
            pumped_until: None,
        }
    }

    /// Runs until `shutdown`.
    ///
    /// # Errors
    /// None: database errors are logged and the next pass tries again.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<()> {
        let interval = self.engine.settings.maintenance_interval;
        loop {
            if let Err(e) = self.pass().await {
                warn!(error = %e, "maintenance pass failed");
                self.leader = None;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(interval) => {}
            }
        }
        Ok(())
    }

    /// One pass: lead if possible, then recover and keep partitions.
    /// Returns how many executions were moved back to the queue.
    ///
    /// # Errors
    /// Database and queue errors.
    pub async fn pass(&mut self) -> Result<usize> {
        if !self.lead().await? {
            return Ok(0);
        }
        let engine = Arc::clone(&self.engine);
        let s = &engine.settings;
        let now = Utc::now();
        let due = store::due::due(
            &engine.pool,
            now,
            now - s.due_grace,
            now - s.stale_queued_after,
            BATCH,
        )
        .await?;
        // Where each row's current job stands: one round trip per queue.
        let mut by_queue: HashMap<String, Vec<(String, store::execution::Execution)>> =
            HashMap::new();
        for e in due {
            let (queue, job) = (engine.queue_of(&e), job_id(&e));
            by_queue.entry(queue).or_default().push((job, e));
        }
        let mut outcomes: BTreeMap<(&'static str, &'static str), usize> = BTreeMap::new();
        let mut requeued = 0;
        for (queue, rows) in by_queue {
            let ids: Vec<String> = rows.iter().map(|(job, _)| job.clone()).collect();
            let presence = engine.queue.presence(&queue, &ids).await?;
            for ((job, e), job_stands) in rows.into_iter().zip(presence) {
                let (id, status) = (e.id, e.status);
                let outcome = engine.recover(e, job_stands, now).await?;
                debug!(execution_id = %id, %status, %job, ?job_stands, outcome = outcome.as_str(), "recovery");
                engine.observe_recovery(status.as_str(), outcome.as_str());
                requeued += usize::from(outcome == Recovery::Requeued);
                *outcomes
                    .entry((status.as_str(), outcome.as_str()))
                    .or_default() += 1;
            }
        }
        self.pump(now).await?;
        // Operations whose job was lost or whose worker died.
        for op in
            store::operation::take_stale(&engine.pool, now - s.stale_queued_after, BATCH).await?
        {
            info!(operation_id = %op.id, job_seq = op.job_seq, "operation re-enqueued");
            engine.enqueue_operation(&op).await;
        }
        let folded = store::analytics::fold(&engine.pool, FOLD_BUDGET).await?;
        if folded.logs + folded.events > 0 {
            debug!(logs = folded.logs, events = folded.events, upto = ?folded.upto, "analytics folded");
        }
        if requeued > 0 {
            info!(
                executions = requeued,
                ?outcomes,
                "maintenance moved executions back to the queue"
            );
        } else if !outcomes.is_empty() {
            debug!(?outcomes, "maintenance found nothing to move");
        }
        if self
            .last_partitions
            .is_none_or(|t| t.elapsed() >= PARTITION_EVERY)
        {
            let created = store::partition::ensure_ahead(&engine.pool, now).await?;
            if s.log_retention_months > 0 {
                let dropped =
                    store::partition::drop_expired(&engine.pool, now, s.log_retention_months)
                        .await?;
                if !dropped.is_empty() {
                    info!(?dropped, "dropped log partitions past retention");
                }
                let cutoff = store::partition::retention_cutoff(now, s.log_retention_months);
                store::analytics::expire(&engine.pool, cutoff).await?;
            }
            if !created.is_empty() {
                info!(?created, "created log partitions");
            }
            self.last_partitions = Some(tokio::time::Instant::now());
        }
        Ok(requeued)
    }

    /// The timer pump: enqueues (deferred) the wake-ups of WAITING and
    /// RETRYING rows whose time came within the horizon since the last
    /// pass. Each window reaches `due_grace` back over the last one (and a
    /// new leader's that far behind now), so a row a worker left to the
    /// pump with a clock a little behind ours is not skipped; a job
    /// enqueued twice is refused by its id. Rows due before the pump saw
    /// them (a leader change, Redis wiped) are the recovery's.
    async fn pump(&mut self, now: DateTime<Utc>) -> Result<()> {
        let engine = &self.engine;
        let s = &engine.settings;
        let from = self.pumped_until.unwrap_or(now) - s.due_grace;
        let until = now + s.timer_horizon;
        if until <= from {
            return Ok(());
        }
        let rows = store::due::coming_due(&engine.pool, from, until, PUMP_BATCH).await?;
        // A full batch ends at its last row's time; the rest next pass.
        let reached = if rows.len() as i64 >= PUMP_BATCH {
            rows.last()
                .and_then(|e| e.next_action_at())
                .unwrap_or(until)
        } else {
            until
        };
        let mut enqueued = 0;
        for e in &rows {
            if let Some(at) = e.next_action_at()
                && engine.enqueue_run(e, Some(at)).await? == super::Enqueued::Added
            {
                enqueued += 1;
            }
        }
        if enqueued > 0 {
            debug!(enqueued, rows = rows.len(), %reached, "timer pump");
        }
        self.pumped_until = Some(reached);
        Ok(())
    }

    /// Whether this process leads, taking the lock if it is free.
    async fn lead(&mut self) -> Result<bool> {
        if let Some(lock) = &mut self.leader {
            if lock.check().await.is_ok() {
                return Ok(true);
            }
            warn!("lost the maintenance lock's connection");
            self.leader = None;
        }
        self.leader = LeaderLock::try_take(&self.engine.pool, Role::Maintenance).await?;
        // What a former leader pumped is not known here: start again.
        self.pumped_until = None;
        if self.leader.is_some() {
            info!("leading maintenance");
        }
        Ok(self.leader.is_some())
    }
}

/// What the maintenance loop did with one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Recovery {
    /// Due, lapsed or lost: moved to QUEUED under a fresh job.
    Requeued,
    /// Its job will still run (queued, deferred or held): left alone.
    JobPresent,
    /// Someone else moved the row meanwhile.
    Changed,
}

impl Recovery {
    /// Lower-case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Recovery::Requeued => "requeued",
            Recovery::JobPresent => "job_present",
            Recovery::Changed => "changed",
        }
    }
}

impl Engine {
    /// Moves a due, lapsed or possibly lost execution back to the queue,
    /// unless `job` (where its current job stands) says that job will still
    /// run: then a second job would only add load to a queue that is behind.
    async fn recover(
        &self,
        mut e: Execution,
        job: Presence,
        now: DateTime<Utc>,
    ) -> Result<Recovery> {
        if job != Presence::Gone {
            return Ok(Recovery::JobPresent);
        }
        let Ok(t) = plan::plan(&Machine::of(&e), Command::Requeue, now) else {
            return Ok(Recovery::Changed);
        };
        let job = t.job;
        if !self.commit_bare(&mut e, t).await? {
            return Ok(Recovery::Changed);
        }
        // A refused fresh id means someone wrote our key space; the row is
        // QUEUED, so the next pass moves on to the next id.
        self.enqueue_job(&e, job).await?;
        Ok(Recovery::Requeued)
    }
}
