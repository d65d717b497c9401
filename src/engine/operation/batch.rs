//! Working through an operation: `run_operation` claims its lease, then
//! takes batch after batch, each one transaction with its progress, until
//! it ends, is cancelled, or the run's time is up.

use std::time::Instant;

use chrono::Utc;
use serde_json::Value as Json;
use tracing::{info, warn};
use uuid::Uuid;

use super::{Bulk, CANCEL_BATCH, ENROLL_BATCH, RETRY_BATCH, count};
use crate::engine::plan::{self, Command, Event, Machine, Status};
use crate::engine::settle::{Writes, write};
use crate::engine::{Engine, Error, Priority, Result};
use crate::store::bulk::{ContactFilter, Enroll, Reenroll};
use crate::store::execution::{Ended, Execution};
use crate::store::operation::{self as op_store, Operation, Progress};
use crate::store::{self, bulk};

impl Engine {
    /// Works through the operation `id` in batches until it ends, it is
    /// cancelled, another worker holds it, or this run's time is up (then
    /// the next job goes on).
    ///
    /// # Errors
    /// Store errors: the batch in flight rolled back; the job's retry (or
    /// the maintenance loop, once the lease lapses) goes on from there.
    pub async fn run_operation(&self, id: Uuid) -> Result<()> {
        let owner = &self.settings.owner;
        let lease = self.settings.operation_lease;
        let until = || Utc::now() + lease;
        let Some(op) = op_store::claim(&self.pool, id, owner, until()).await? else {
            return Ok(());
        };
        let first_step = match self.enrollment_step(&op).await {
            Ok(step) => step,
            Err(e @ (Error::WorkflowNotFound | Error::WorkflowInactive)) => {
                op_store::fail(&self.pool, id, owner, &e.to_string()).await?;
                warn!(operation_id = %id, error = %e, "operation failed");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let began = Instant::now();
        loop {
            if began.elapsed() >= self.settings.run_budget {
                if let Some(op) = op_store::hand_over(&self.pool, id, owner).await? {
                    self.enqueue_operation(&op).await;
                }
                return Ok(());
            }
            let mut tx = self.pool.begin().await.map_err(store::Error::from)?;
            let Some(op) = op_store::lock(&mut tx, id, owner).await? else {
                return Ok(());
            };
            let mut cancelled = Vec::new();
            let (progress, woken) = match op.kind.as_str() {
                "retry" => self.retry_batch(&mut tx, &op).await?,
                "cancel" => {
                    let (progress, ended) = cancel_batch(&mut tx, &op).await?;
                    cancelled = ended;
                    (progress, vec![])
                }
                _ => {
                    let step = first_step.as_deref().unwrap_or_default();
                    (self.enroll_batch(&mut tx, &op, step).await?, vec![])
                }
            };
            let finished = progress_ends(&op, &progress);
            let op = op_store::advance(&mut tx, id, &progress, until(), finished).await?;
            tx.commit().await.map_err(store::Error::from)?;
            for e in &woken {
                self.enqueue_soon(e).await;
            }
            self.observe_cancelled(&cancelled);
            if finished {
                info!(operation_id = %id, kind = %op.kind, total = op.total, done = op.done,
                      skipped = op.skipped, failed = op.failed, "operation completed");
                return Ok(());
            }
        }
    }

    /// The first step's id of the workflow an enrollment pins (`None` for
    /// other operations).
    async fn enrollment_step(&self, op: &Operation) -> Result<Option<String>> {
        let (Some(wf), Some(version)) = (op.workflow_id, op.workflow_version) else {
            return Ok(None);
        };
        let workflow = store::workflow::get(&self.pool, op.account_id, wf)
            .await?
            .ok_or(Error::WorkflowNotFound)?;
        if !workflow.is_active {
            return Err(Error::WorkflowInactive);
        }
        let def = self.definition(wf, version).await?;
        Ok(Some(def.steps[0].id.clone()))
    }

    /// Retries the next batch of executions, each through a planned
    /// transition on the batch's transaction (rows locked, so none can
    /// change underneath). Returns the progress and the executions to wake.
    async fn retry_batch(
        &self,
        tx: &mut sqlx::PgConnection,
        op: &Operation,
    ) -> Result<(Progress, Vec<Execution>)> {
        let ids = next_targets(tx, op, RETRY_BATCH).await?;
        let rows = bulk::lock_executions(tx, op.account_id, &ids).await?;
        let mut p = Progress {
            taken: count(ids.len()),
            ..Progress::default()
        };
        let now = Utc::now();
        let mut woken = Vec::new();
        for mut e in rows {
            match plan::plan(&Machine::of(&e), Command::Retry, now) {
                Ok(t) => {
                    if write(tx, &mut e, t, &Writes::default()).await? {
                        p.done += 1;
                        woken.push(e);
                    } else {
                        p.errors
                            .push((e.id, "the execution changed meanwhile".into()));
                    }
                }
                Err(_) => p.skipped += 1,
            }
        }
        // Executions gone since the operation was created (their contact
        // or workflow deleted).
        let missing = p.taken - p.done - p.skipped - count(p.errors.len());
        p.skipped += missing;
        Ok((p, woken))
    }

    /// Enrolls the next batch of contacts.
    async fn enroll_batch(
        &self,
        tx: &mut sqlx::PgConnection,
        op: &Operation,
        first_step_id: &str,
    ) -> Result<Progress> {
        let request = &op.request.0;
        let (contacts, cursor) = if op.target_count == 0 {
            let filter = contact_filter(request);
            let ids = bulk::contact_ids(
                tx,
                op.account_id,
                &filter,
                op.created_at,
                op.cursor,
                ENROLL_BATCH as i64,
            )
            .await?;
            let last = ids.last().copied();
            (ids, last)
        } else {
            (next_targets(tx, op, ENROLL_BATCH).await?, None)
        };
        let (workflow_id, workflow_version) = op
            .workflow_id
            .zip(op.workflow_version)
            .ok_or_else(|| Error::invalid("operation", "an enrollment without a workflow"))?;
        let inserted = bulk::enroll(
            tx,
            &Enroll {
                account_id: op.account_id,
                operation_id: op.id,
                workflow_id,
                workflow_version,
                first_step_id,
                priority: request["priority"]
                    .as_str()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(Priority::Normal),
                metadata: request.get("metadata").unwrap_or(&Json::Null),
                contacts: &contacts,
                policy: policy_of(request),
                spacing_us: 1_000_000 / i64::from(self.settings.enroll_rate.max(1)),
            },
        )
        .await?;
        let taken = count(contacts.len());
        let done = i32::try_from(inserted).unwrap_or(i32::MAX);
        Ok(Progress {
            taken,
            cursor,
            done,
            skipped: taken - done,
            errors: vec![],
        })
    }
}

/// Cancels the next batch of executions in one statement; with those it
/// cancelled.
async fn cancel_batch(
    tx: &mut sqlx::PgConnection,
    op: &Operation,
) -> Result<(Progress, Vec<Ended>)> {
    let ids = next_targets(tx, op, CANCEL_BATCH).await?;
    let to = plan::transition(Status::Running, Event::Cancel)?;
    let cancelled = bulk::cancel_executions(
        tx,
        op.account_id,
        &ids,
        &Bulk::Cancel.sources(),
        to,
        plan::CANCELLED,
    )
    .await?;
    let taken = count(ids.len());
    let done = count(cancelled.len());
    let progress = Progress {
        taken,
        done,
        skipped: taken - done,
        ..Progress::default()
    };
    Ok((progress, cancelled))
}

/// The targets after `op`'s position, at most `n`.
async fn next_targets(tx: &mut sqlx::PgConnection, op: &Operation, n: usize) -> Result<Vec<Uuid>> {
    Ok(op_store::targets(tx, op.id, op.position, count(n)).await?)
}

/// Whether `p` is `op`'s last batch: every target taken, or a contact walk
/// that came back short.
fn progress_ends(op: &Operation, p: &Progress) -> bool {
    if op.target_count == 0 && op.kind == "enroll" {
        usize::try_from(p.taken).unwrap_or_default() < ENROLL_BATCH
    } else {
        op.position + p.taken >= op.target_count
    }
}

/// The contact filter of an enrollment request.
fn contact_filter(request: &Json) -> ContactFilter {
    let f = &request["contact_filter"];
    ContactFilter {
        tags: f["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        attributes: f.get("attributes").filter(|a| a.is_object()).cloned(),
    }
}

/// The re-enrollment policy an enrollment recorded.
fn policy_of(request: &Json) -> Reenroll {
    request["policy"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .unwrap_or(Reenroll::Never)
}
