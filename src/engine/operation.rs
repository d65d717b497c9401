//! Bulk operations: a retry or a cancel of the executions a filter names,
//! an enrollment of many contacts into a workflow. Each is recorded first
//! (its targets fixed), then worked through in batches by `run_operation`
//! jobs on the low-priority queue. A batch commits its targets' changes
//! and the operation's progress in one transaction under the operation's
//! lease, so a worker killed mid-operation loses nothing and does nothing
//! twice; jobs are enqueued after the commit (a job lost there is found by
//! the maintenance loop, as any QUEUED row's). [`batch`] works them
//! through.

mod batch;

use chrono::Utc;
use serde_json::Value as Json;
use tracing::{info, warn};
use uuid::Uuid;

use super::plan::{self, Event, Status};
use super::{Engine, Error, Priority, Result, priority_queue};
use crate::queue::{EnqueueOptions, Value};
use crate::store::bulk::{ContactFilter, Reenroll};
use crate::store::execution::{Execution, Filter};
use crate::store::operation::{self as op_store, NewOperation, Operation};
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
    /// applies to: the filter must name something, and its statuses must be
    /// among those the operation applies to (all of them when it names
    /// none).
    fn bulk_filter(bulk: Bulk, mut filter: Filter) -> Result<Filter> {
        if filter == Filter::default() {
            return Err(Error::invalid(
                "filter",
                "name at least one filter field: an empty filter would take every execution of the account",
            ));
        }
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

    /// Records a bulk operation over the executions `filter` names now
    /// (the filter as asked is the operation's `request`) and enqueues its
    /// first job.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the filter names nothing, more than
    /// [`MAX_TARGETS`] executions or a status the operation does not apply
    /// to; store errors.
    pub async fn bulk_start(
        &self,
        account_id: Uuid,
        bulk: Bulk,
        filter: Filter,
        created_by: Option<Uuid>,
    ) -> Result<Operation> {
        let request = serde_json::json!({"filter": {
            "workflow_id": filter.workflow_id, "version": filter.workflow_version,
            "status": (!filter.statuses.is_empty())
                .then(|| filter.statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
            "error_class": filter.error_class.map(|c| c.as_str()),
            "fingerprint": filter.fingerprint, "step": filter.current_step,
            "created_after": filter.created_after, "created_before": filter.created_before,
            "failed_after": filter.finished_after, "failed_before": filter.finished_before,
        }});
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
                request: &request,
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
}

pub(super) fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
