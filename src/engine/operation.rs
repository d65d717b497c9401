//! Bulk operations: a retry or a cancel of the executions a filter names,
//! an enrollment of many contacts into a workflow. Each is recorded first
//! (its targets fixed), then worked through in batches by `run_operation`
//! jobs on the low-priority queue. A batch commits its targets' changes
//! and the operation's progress in one transaction under the operation's
//! lease, so a worker killed mid-operation loses nothing and does nothing
//! twice; jobs are enqueued after the commit (a job lost there is found by
//! the maintenance loop, as any QUEUED row's).

use std::time::Instant;

use chrono::Utc;
use serde_json::Value as Json;
use tracing::{info, warn};
use uuid::Uuid;

use super::plan::{self, Command, Event, Machine, Status};
use super::settle::{Writes, write};
use super::{Engine, Error, Priority, Result, priority_queue};
use crate::queue::{EnqueueOptions, Value};
use crate::store::bulk::{ContactFilter, Enroll, Reenroll};
use crate::store::execution::{Execution, Filter};
use crate::store::operation::{self as op_store, NewOperation, Operation, Progress};
use crate::store::{self, bulk};

/// ARQ function that works through an operation.
pub const RUN_OPERATION: &str = "run_operation";
/// Most targets of one operation.
pub const MAX_TARGETS: usize = 100_000;
/// Executions a dry run shows.
const SAMPLE: i64 = 10;
/// Executions retried per batch (each a planned transition).
const RETRY_BATCH: usize = 500;
/// Executions cancelled per batch (one statement).
const CANCEL_BATCH: usize = 2_000;
/// Contacts enrolled per batch (one statement).
const ENROLL_BATCH: usize = 5_000;
/// `waiting_reason` of an enrolled execution before its start time.
pub const ENROLLMENT: &str = "enrollment";

/// What a bulk operation over executions does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bulk {
    /// Retry FAILED executions from the step that failed.
    Retry,
    /// Cancel executions that have not finished.
    Cancel,
}

impl Bulk {
    /// Stored kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Bulk::Retry => "retry",
            Bulk::Cancel => "cancel",
        }
    }

    /// The statuses it applies to.
    pub fn sources(self) -> Vec<Status> {
        plan::sources(match self {
            Bulk::Retry => Event::Retry,
            Bulk::Cancel => Event::Cancel,
        })
    }
}

/// What a dry run found.
#[derive(Debug, Clone)]
pub struct Preview {
    /// Executions the operation would take.
    pub count: usize,
    /// The newest of them.
    pub sample: Vec<Execution>,
}

/// Whom an enrollment takes.
#[derive(Debug, Clone)]
pub enum Contacts {
    /// These contacts (at most [`MAX_TARGETS`], duplicates dropped).
    Ids(Vec<Uuid>),
    /// The account's contacts matching a filter, walked by id.
    Filter(ContactFilter),
}

/// An enrollment asked for.
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    /// Account.
    pub account_id: Uuid,
    /// Workflow (active).
    pub workflow_id: Uuid,
    /// Whom.
    pub contacts: Contacts,
    /// Whether a contact in the workflow already enters again.
    pub policy: Reenroll,
    /// Queue priority of the executions.
    pub priority: Priority,
    /// Metadata of each execution.
    pub metadata: Json,
    /// The API key asking.
    pub created_by: Option<Uuid>,
}

impl Engine {
    /// The executions of `account_id` that `filter` names and `bulk`
    /// applies to: the filter's statuses must be among those it applies to
    /// (all of them when the filter names none).
    fn bulk_filter(bulk: Bulk, mut filter: Filter) -> Result<Filter> {
        let sources = bulk.sources();
        if let Some(s) = filter.statuses.iter().find(|s| !sources.contains(s)) {
            let names: Vec<&str> = sources.iter().map(|s| s.as_str()).collect();
            return Err(Error::invalid(
                "filter.status",
                format!(
                    "a bulk {} applies to {} executions, not {s}",
                    bulk.as_str(),
                    names.join(", ")
                ),
            ));
        }
        if filter.statuses.is_empty() {
            filter.statuses = sources;
        }
        Ok(filter)
    }

    /// What a bulk operation over `filter` would take, changing nothing.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a status it does not apply to; store errors.
    pub async fn bulk_preview(
        &self,
        account_id: Uuid,
        bulk: Bulk,
        filter: Filter,
    ) -> Result<Preview> {
        let filter = Self::bulk_filter(bulk, filter)?;
        let ids = bulk::execution_ids(&self.pool, account_id, &filter, MAX_TARGETS as i64).await?;
        let sample = store::execution::list(&self.pool, account_id, &filter, None, SAMPLE).await?;
        Ok(Preview {
            count: ids.len(),
            sample,
        })
    }

    /// Records a bulk operation over the executions `filter` names now and
    /// enqueues its first job.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the filter names more than [`MAX_TARGETS`]
    /// or a status the operation does not apply to; store errors.
    pub async fn bulk_start(
        &self,
        account_id: Uuid,
        bulk: Bulk,
        filter: Filter,
        request: &Json,
        created_by: Option<Uuid>,
    ) -> Result<Operation> {
        let filter = Self::bulk_filter(bulk, filter)?;
        let ids = bulk::execution_ids(&self.pool, account_id, &filter, MAX_TARGETS as i64).await?;
        if ids.len() > MAX_TARGETS {
            return Err(Error::invalid(
                "filter",
                format!("names more than {MAX_TARGETS} executions; narrow it"),
            ));
        }
        let op = op_store::insert(
            &self.pool,
            &NewOperation {
                account_id,
                kind: bulk.as_str(),
                request,
                targets: &ids,
                workflow: None,
                total: count(ids.len()),
                created_by,
            },
        )
        .await?;
        self.enqueue_operation(&op).await;
        Ok(op)
    }

    /// Records an enrollment and enqueues its first job. The workflow's
    /// latest version is pinned now.
    ///
    /// # Errors
    /// [`Error::WorkflowNotFound`], [`Error::WorkflowInactive`],
    /// [`Error::Invalid`] for too many or no contacts; store errors.
    pub async fn enroll(&self, req: EnrollRequest) -> Result<Operation> {
        let wf = store::workflow::get(&self.pool, req.account_id, req.workflow_id)
            .await?
            .ok_or(Error::WorkflowNotFound)?;
        if !wf.is_active {
            return Err(Error::WorkflowInactive);
        }
        let (targets, total) = match &req.contacts {
            Contacts::Ids(ids) => {
                let mut seen = std::collections::HashSet::with_capacity(ids.len());
                let unique: Vec<Uuid> = ids.iter().copied().filter(|id| seen.insert(*id)).collect();
                if unique.is_empty() || unique.len() > MAX_TARGETS {
                    return Err(Error::invalid(
                        "contact_ids",
                        format!("must hold 1 to {MAX_TARGETS} contact ids"),
                    ));
                }
                let total = count(unique.len());
                (unique, total)
            }
            Contacts::Filter(f) => {
                let n = bulk::count_contacts(&self.pool, req.account_id, f, Utc::now()).await?;
                (Vec::new(), i32::try_from(n).unwrap_or(i32::MAX))
            }
        };
        // What the batches read back: the request, normalised.
        let request = serde_json::json!({
            "workflow_id": wf.id,
            "policy": req.policy.as_str(),
            "priority": req.priority.as_str(),
            "metadata": req.metadata,
            "contact_filter": match &req.contacts {
                Contacts::Ids(_) => Json::Null,
                Contacts::Filter(f) => serde_json::json!({"tags": f.tags, "attributes": f.attributes}),
            },
        });
        let op = op_store::insert(
            &self.pool,
            &NewOperation {
                account_id: req.account_id,
                kind: "enroll",
                request: &request,
                targets: &targets,
                workflow: Some((wf.id, wf.latest_version)),
                total,
                created_by: req.created_by,
            },
        )
        .await?;
        self.enqueue_operation(&op).await;
        Ok(op)
    }

    /// Cancels an operation: it stops before its next batch.
    ///
    /// # Errors
    /// [`Error::OperationNotFound`]; [`Error::OperationFinished`].
    pub async fn cancel_operation(&self, account_id: Uuid, id: Uuid) -> Result<Operation> {
        if let Some(op) = op_store::cancel(&self.pool, account_id, id).await? {
            info!(operation_id = %id, "operation cancelled");
            return Ok(op);
        }
        let op = op_store::get(&self.pool, account_id, id)
            .await?
            .ok_or(Error::OperationNotFound)?;
        Err(Error::OperationFinished(op.state))
    }

    /// Enqueues `op`'s current job on the low-priority queue; a failure is
    /// logged (the maintenance loop enqueues a fresh one).
    pub(super) async fn enqueue_operation(&self, op: &Operation) {
        let queued = self
            .queue
            .enqueue(
                RUN_OPERATION,
                vec![Value::str(op.id.to_string())],
                vec![],
                EnqueueOptions {
                    job_id: Some(format!("{RUN_OPERATION}:{}:{}", op.id, op.job_seq)),
                    queue: Some(priority_queue(Priority::Low, &self.settings.queue_prefix)),
                    ..EnqueueOptions::default()
                },
            )
            .await;
        if let Err(e) = queued {
            warn!(operation_id = %op.id, error = %e, "could not enqueue the operation; maintenance will");
        }
    }

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
            let (progress, finished, woken) = match op.kind.as_str() {
                "retry" => self.retry_batch(&mut tx, &op).await?,
                "cancel" => cancel_batch(&mut tx, &op).await?,
                _ => {
                    let step = first_step.as_deref().unwrap_or_default();
                    (self.enroll_batch(&mut tx, &op, step).await?, false, vec![])
                }
            };
            let finished = finished || progress_ends(&op, &progress);
            let op = op_store::advance(&mut tx, id, &progress, until(), finished).await?;
            tx.commit().await.map_err(store::Error::from)?;
            for e in &woken {
                self.enqueue_soon(e).await;
            }
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
    ) -> Result<(Progress, bool, Vec<Execution>)> {
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
        Ok((p, false, woken))
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

/// Cancels the next batch of executions in one statement.
async fn cancel_batch(
    tx: &mut sqlx::PgConnection,
    op: &Operation,
) -> Result<(Progress, bool, Vec<Execution>)> {
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
    Ok((
        Progress {
            taken,
            done,
            skipped: taken - done,
            ..Progress::default()
        },
        false,
        vec![],
    ))
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

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
