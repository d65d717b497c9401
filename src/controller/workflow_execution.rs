//! Reconciles `WorkflowExecution`: start the execution in PostgreSQL once
//! (idempotency key `kubernetes:<uid>`), mirror its status, cancel it when
//! the resource is deleted while it runs (finalizer), delete the resource
//! `ttlSecondsAfterFinished` after it finished, and record Events on phase
//! changes. Bad input (unknown workflow or contact, opted-out contact,
//! inactive workflow, malformed ids) ends in phase Failed with a reason and
//! waits for the spec to change: no crash loop.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::DeleteParams;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument};
use uuid::Uuid;

use super::status::{self, condition, kind};
use super::{Context, Error, Result};
use crate::crd::workflow_execution::Priority as CrdPriority;
use crate::crd::{WorkflowExecution, WorkflowExecutionSpec, WorkflowExecutionStatus};
use crate::domain::Priority;
use crate::domain::Status;
use crate::engine::{self, StartRequest};
use crate::store::execution::Execution;

/// Finalizer that cancels a running execution before its resource goes.
pub const FINALIZER: &str = "flowpilot.io/cancel-execution";

/// What the controller found for a resource.
#[derive(Debug, Clone)]
pub enum Observed {
    /// Its execution.
    Execution(Box<Execution>),
    /// Refused: a reason (PascalCase) and a message.
    Rejected {
        /// e.g. `WorkflowNotFound`.
        reason: &'static str,
        /// For people.
        message: String,
    },
}

/// The idempotency key of a resource's execution.
pub fn key(uid: &str) -> String {
    format!("kubernetes:{uid}")
}

/// The account, workflow and contact ids of a spec.
///
/// # Errors
/// A message naming the malformed field.
pub fn ids(spec: &WorkflowExecutionSpec) -> Result<(Uuid, Uuid, Uuid), String> {
    let parse = |field: &str, v: &str| {
        Uuid::parse_str(v).map_err(|_| format!("spec.{field}: `{v}` is not a UUID"))
    };
    Ok((
        parse("accountId", &spec.account_id)?,
        parse("workflowId", &spec.workflow_id)?,
        parse("contactId", &spec.contact_id)?,
    ))
}

/// Phase of an execution status.
pub fn phase(s: Status) -> &'static str {
    match s {
        Status::Queued => "Pending",
        Status::Running => "Running",
        Status::Waiting | Status::Retrying => "Waiting",
        Status::Completed => "Succeeded",
        Status::Failed => "Failed",
        Status::Cancelled => "Cancelled",
    }
}

/// The status to write, from what was observed. Pure.
pub fn desired_status(
    generation: Option<i64>,
    previous: &WorkflowExecutionStatus,
    observed: &Observed,
    now: DateTime<Utc>,
) -> WorkflowExecutionStatus {
    let prev = &previous.conditions;
    let cond = |t: &str, s: bool, reason: &str, msg: &str| {
        condition(t, s, reason, msg, generation, now, prev)
    };
    match observed {
        Observed::Rejected { reason, message } => WorkflowExecutionStatus {
            phase: Some("Failed".into()),
            message: Some(message.clone()),
            observed_generation: generation,
            conditions: vec![
                cond(kind::READY, false, reason, message),
                cond(kind::SUCCEEDED, false, reason, message),
                cond(kind::FAILED, true, reason, message),
            ],
            ..WorkflowExecutionStatus::default()
        },
        Observed::Execution(e) => {
            let phase = phase(e.status);
            let message = match e.status {
                Status::Failed => e.error.clone().unwrap_or_else(|| "failed".into()),
                Status::Waiting | Status::Retrying => match (&e.waiting_reason, e.next_action_at())
                {
                    (Some(r), Some(t)) => format!("{r} until {}", t.to_rfc3339()),
                    (Some(r), None) => r.clone(),
                    _ => "waiting".into(),
                },
                Status::Cancelled => "cancelled".into(),
                Status::Completed => "completed".into(),
                Status::Queued => "queued".into(),
                Status::Running => format!(
                    "running step {}",
                    e.current_step_id.as_deref().unwrap_or("?")
                ),
            };
            let failed = e.status == Status::Failed;
            let ready_reason = match e.status {
                Status::Failed => "ExecutionFailed",
                Status::Cancelled => "ExecutionCancelled",
                _ => "ExecutionStarted",
            };
            WorkflowExecutionStatus {
                phase: Some(phase.into()),
                execution_id: Some(e.id.to_string()),
                current_step: e.current_step_id.clone(),
                attempts: Some(e.attempt),
                waiting_reason: e.waiting_reason.clone(),
                started_at: e.started_at.map(|t| t.to_rfc3339()),
                completed_at: e.completed_at.map(|t| t.to_rfc3339()),
                message: Some(message.clone()),
                observed_generation: generation,
                conditions: vec![
                    cond(
                        kind::READY,
                        !failed && e.status != Status::Cancelled,
                        ready_reason,
                        &message,
                    ),
                    cond(
                        kind::SUCCEEDED,
                        e.status == Status::Completed,
                        phase,
                        &message,
                    ),
                    cond(kind::FAILED, failed, phase, &message),
                ],
            }
        }
    }
}

/// Reconciles one resource.
///
/// # Errors
/// Kubernetes, database and queue errors (requeued by the error policy).
#[instrument(skip_all, fields(name = %obj.name_any(), namespace = obj.namespace().unwrap_or_default()))]
pub async fn reconcile(obj: Arc<WorkflowExecution>, ctx: Arc<Context>) -> Result<Action> {
    let ns = obj.namespace().ok_or(Error::Metadata("namespace"))?;
    let api: Api<WorkflowExecution> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Event::Apply(o) => apply(&o, &ctx, &api).await,
            Event::Cleanup(o) => cleanup(&o, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

async fn observe(obj: &WorkflowExecution, ctx: &Context) -> Result<Observed> {
    let uid = obj.uid().ok_or(Error::Metadata("uid"))?;
    let (account, workflow, contact) = match ids(&obj.spec) {
        Ok(ids) => ids,
        Err(message) => {
            return Ok(Observed::Rejected {
                reason: "InvalidSpec",
                message,
            });
        }
    };
    if let Some(e) = ctx
        .reader
        .execution_by_key(account, &key(&uid))
        .await
        .map_err(engine::Error::from)?
    {
        return Ok(Observed::Execution(Box::new(e)));
    }
    let started = ctx
        .engine
        .start(StartRequest {
            account_id: account,
            workflow_id: workflow,
            contact_id: contact,
            priority: match obj.spec.priority {
                Some(CrdPriority::High) => Priority::High,
                Some(CrdPriority::Low) => Priority::Low,
                _ => Priority::Normal,
            },
            idempotency_key: Some(key(&uid)),
            metadata: obj.spec.metadata.clone().unwrap_or_else(|| json!({})),
            source: "kubernetes",
        })
        .await;
    Ok(match started {
        Ok((e, _)) => Observed::Execution(Box::new(e)),
        Err(err) => match rejection(&err) {
            Some(reason) => Observed::Rejected {
                reason,
                message: match err {
                    engine::Error::ContactNotFound => {
                        format!("contact {contact} not found in account {account}")
                    }
                    engine::Error::WorkflowNotFound | engine::Error::VersionNotFound => {
                        format!("workflow {workflow} not found in account {account}")
                    }
                    other => other.to_string(),
                },
            },
            None => return Err(err.into()),
        },
    })
}

/// The Kubernetes reason of an engine refusal (the one place engine errors
/// meet Kubernetes); `None` for an error a retry may cure.
pub fn rejection(e: &engine::Error) -> Option<&'static str> {
    use engine::Error as E;
    Some(match e {
        E::ContactNotFound => "ContactNotFound",
        E::WorkflowNotFound | E::VersionNotFound => "WorkflowNotFound",
        E::ContactOptedOut => "ContactOptedOut",
        E::WorkflowInactive | E::WorkflowArchived => "WorkflowInactive",
        E::Invalid { .. } => "InvalidSpec",
        E::Illegal(_) => "IllegalTransition",
        E::ExecutionNotFound
        | E::ContactExists
        | E::OperationNotFound
        | E::OperationFinished(_) => "Rejected",
        E::Contended | E::Store(_) | E::Queue(_) => return None,
    })
}

async fn apply(
    obj: &WorkflowExecution,
    ctx: &Context,
    api: &Api<WorkflowExecution>,
) -> Result<Action> {
    let now = Utc::now();
    let name = obj.name_any();
    let observed = observe(obj, ctx).await?;
    let previous = obj.status.clone().unwrap_or_default();
    let status = desired_status(obj.meta().generation, &previous, &observed, now);
    if status != previous {
        status::patch(api, &name, &status).await?;
        if status.phase != previous.phase {
            let phase = status.phase.clone().unwrap_or_default();
            let warning = matches!(observed, Observed::Rejected { .. }) || phase == "Failed";
            let reason = match &observed {
                Observed::Rejected { reason, .. } => (*reason).to_owned(),
                Observed::Execution(_) => phase.clone(),
            };
            status::publish(
                ctx,
                obj,
                warning,
                &reason,
                "Reconcile",
                status.message.clone(),
            )
            .await?;
            info!(%phase, "execution phase changed");
        }
    }
    Ok(match &observed {
        Observed::Rejected { .. } => Action::await_change(),
        Observed::Execution(e) if e.status.is_final() => {
            match (obj.spec.ttl_seconds_after_finished, e.completed_at) {
                (Some(ttl), Some(done)) => {
                    let expires = done + chrono::Duration::seconds(ttl);
                    if expires <= now {
                        api.delete(&name, &DeleteParams::default()).await?;
                        info!("deleted after ttlSecondsAfterFinished");
                        Action::await_change()
                    } else {
                        Action::requeue((expires - now).to_std().unwrap_or(Duration::from_secs(1)))
                    }
                }
                _ => Action::await_change(),
            }
        }
        Observed::Execution(_) => Action::requeue(ctx.settings.status_interval),
    })
}

/// Deleting a running execution's resource cancels the execution. The
/// finalizer goes only once the execution is final: any error (the
/// database away, the row busy) keeps it and the reconcile is retried.
async fn cleanup(obj: &WorkflowExecution, ctx: &Context) -> Result<Action> {
    let (Ok((account, _, _)), Some(uid)) = (ids(&obj.spec), obj.uid()) else {
        return Ok(Action::await_change());
    };
    let Some(e) = ctx
        .reader
        .execution_by_key(account, &key(&uid))
        .await
        .map_err(engine::Error::from)?
    else {
        return Ok(Action::await_change());
    };
    if e.status.is_final() {
        return Ok(Action::await_change());
    }
    match ctx.engine.cancel(account, e.id).await {
        Ok(_) => info!(execution_id = %e.id, "cancelled: resource deleted"),
        // The engine refuses a cancel as a conflict only when the
        // execution is final (it finished meanwhile); a row it could not
        // cancel otherwise is `Busy`, an error, and the reconcile retries.
        Err(engine::Error::Illegal(_)) => {}
        Err(err) => return Err(err.into()),
    }
    Ok(Action::await_change())
}
