//! What users ask of executions: start one, cancel one, retry a failed one.
//! Each is checked before anything is written, and each moves the row only
//! through a planned transition.

use serde_json::Value as Json;
use tracing::warn;
use uuid::Uuid;

use super::plan::{self, Command, Event, Machine, Status};
use super::{Engine, Enqueued, Error, Priority, Result, job_id};
use crate::store::{self, execution::Execution};

/// Optimistic attempts of a user's retry against concurrent writers.
const USER_TRANSITION_TRIES: usize = 20;
/// Largest metadata object accepted, serialized bytes.
const MAX_METADATA_BYTES: usize = 64 * 1024;
/// Longest idempotency key, in characters.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// What starts an execution.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// Account.
    pub account_id: Uuid,
    /// Workflow (must be active).
    pub workflow_id: Uuid,
    /// Contact (must exist and not have opted out).
    pub contact_id: Uuid,
    /// Queue priority.
    pub priority: Priority,
    /// A repeated start with the same key returns the first execution.
    pub idempotency_key: Option<String>,
    /// Caller's metadata (an object), visible to templates.
    pub metadata: Json,
    /// `api`, `arq`, `kubernetes`.
    pub source: &'static str,
}

impl StartRequest {
    fn validate(&self) -> Result<()> {
        if !self.metadata.is_object() {
            return Err(Error::invalid("metadata", "must be a JSON object"));
        }
        if self.metadata.to_string().len() > MAX_METADATA_BYTES {
            return Err(Error::invalid(
                "metadata",
                format!("must be at most {MAX_METADATA_BYTES} bytes"),
            ));
        }
        if let Some(field) = store::text::first_nul(&self.metadata, "metadata") {
            return Err(Error::invalid(field, store::text::NUL_MESSAGE));
        }
        if let Some(k) = &self.idempotency_key
            && (k.is_empty() || k.chars().count() > MAX_IDEMPOTENCY_KEY || k.contains('\0'))
        {
            return Err(Error::invalid(
                "idempotency_key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY} characters, without NUL"),
            ));
        }
        Ok(())
    }
}

impl Engine {
    /// Starts an execution and enqueues its first job. A repeated start with
    /// the same idempotency key returns the first one (`false`) and starts
    /// nothing.
    ///
    /// # Errors
    /// [`Error::WorkflowNotFound`], [`Error::ContactNotFound`],
    /// [`Error::WorkflowInactive`], [`Error::ContactOptedOut`],
    /// [`Error::Invalid`] for bad metadata or key; store and queue errors.
    pub async fn start(&self, req: StartRequest) -> Result<(Execution, bool)> {
        req.validate()?;
        let wf = self
            .workflow_to_start(req.account_id, req.workflow_id)
            .await?;
        if !wf.is_active {
            return Err(Error::WorkflowInactive);
        }
        let contact = store::contact::get(&self.pool, req.account_id, req.contact_id)
            .await?
            .ok_or(Error::ContactNotFound)?;
        if contact.opted_out {
            return Err(Error::ContactOptedOut);
        }
        let def = self.definition(wf.id, wf.latest_version).await?;
        let priority = self.fair_priority(req.account_id, req.priority).await;
        let (execution, created) = store::execution::insert(
            &self.pool,
            &store::execution::NewExecution {
                account_id: req.account_id,
                workflow_id: wf.id,
                workflow_version: wf.latest_version,
                contact_id: contact.id,
                priority,
                idempotency_key: req.idempotency_key,
                metadata: req.metadata,
                source: req.source.to_owned(),
                first_step_id: def.steps[0].id.clone(),
            },
        )
        .await?;
        if created {
            self.enqueue_soon(&execution).await;
        }
        Ok((execution, created))
    }

    /// Cancels an execution of `account_id`, in one statement that waits
    /// for a checkpoint in flight instead of racing it, so a busy execution
    /// cannot outrun its cancel. The statement writes what
    /// [`plan::plan`] says a `Cancel` writes (a store test holds them
    /// together).
    ///
    /// # Errors
    /// [`Error::ExecutionNotFound`]; [`Error::Illegal`] only when it is
    /// already final; [`Error::Contended`] if it is still not final after
    /// the statement (a writer this engine does not know of keeps changing
    /// it).
    pub async fn cancel(&self, account_id: Uuid, id: Uuid) -> Result<Execution> {
        let from = plan::sources(Event::Cancel);
        let to = plan::transition(Status::Running, Event::Cancel)?;
        if let Some(e) =
            store::execution::cancel(&self.pool, account_id, id, &from, to, plan::CANCELLED).await?
        {
            self.observe_finished(e.workflow_id, e.status, e.created_at);
            return Ok(e);
        }
        let e = store::execution::get_in(&self.pool, account_id, id)
            .await?
            .ok_or(Error::ExecutionNotFound)?;
        plan::transition(e.status, Event::Cancel)?;
        Err(Error::Contended)
    }

    /// Restarts a FAILED execution at the step that failed, as a new
    /// attempt: the attempt number goes on (so side effects carry a new
    /// idempotency key `<id>:<step>:<attempt>`, which receivers that drop
    /// duplicates do not drop), and the step gets its retry policy's full
    /// number of attempts again, counted from this one.
    ///
    /// # Errors
    /// [`Error::ExecutionNotFound`]; [`Error::Illegal`] unless it is FAILED;
    /// [`Error::Contended`].
    pub async fn retry(&self, account_id: Uuid, id: Uuid) -> Result<Execution> {
        for _ in 0..USER_TRANSITION_TRIES {
            let mut e = store::execution::get_in(&self.pool, account_id, id)
                .await?
                .ok_or(Error::ExecutionNotFound)?;
            let t = plan::plan(&Machine::of(&e), Command::Retry, chrono::Utc::now())?;
            if self.commit_bare(&mut e, t).await? {
                self.enqueue_soon(&e).await;
                return Ok(e);
            }
        }
        Err(Error::Contended)
    }

    /// Enqueues `e` now; if Redis is down, the row (committed, QUEUED) is
    /// enough: the maintenance loop enqueues it once it is stale. So a
    /// caller never sees an error for work that is safely recorded.
    pub(super) async fn enqueue_soon(&self, e: &Execution) {
        match self.enqueue_run(e, None).await {
            Ok(Enqueued::Added) => {}
            // Only a reused wake_seq can meet an old job or result; the
            // maintenance loop moves the row to a fresh job id.
            Ok(Enqueued::Refused) => {
                warn!(execution_id = %e.id, job_id = %job_id(e), "job id taken; maintenance will enqueue a fresh one")
            }
            Err(err) => {
                warn!(execution_id = %e.id, error = %err, "enqueue failed; maintenance will re-enqueue")
            }
        }
    }
}
