//! `run_execution`: the effectful half of the engine.
//!
//! One run claims the execution row (optimistically, by revision), then
//! runs consecutive steps. After each action it commits a checkpoint in one
//! transaction: the log row, the contact change if any, and the execution
//! row moved to the next step. A crash anywhere loses at most the action in
//! flight, which the next run repeats with the same idempotency key.
//!
//! A run ends when the execution completes or fails, parks (a wait, an
//! external job, a retry backoff: WAITING / RETRYING with a deferred job),
//! or spends its time budget (QUEUED with a fresh job). Every row that is
//! not moving says why (`waiting_reason`) and until when.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json, json};
use tracing::{debug, info, instrument, warn};
use uuid::Uuid;

use super::{Engine, Error, Result, plan};
use crate::action::contact::Change;
use crate::action::{self, ActionError, Input, Outcome};
use crate::engine::definition::Step;
use crate::engine::plan::{Event, Status};
use crate::queue::{keys, now_ms};
use crate::store::execution::NewLog;
use crate::store::{self, contact::Contact, execution::Execution};

/// Why an execution whose contact was deleted mid-way fails.
const CONTACT_GONE: &str = "the contact no longer exists";

/// Keys of `step_state`: when the parked step first started, and the
/// action's own state.
const STARTED_AT: &str = "started_at";
const STATE: &str = "state";

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// The row does not exist.
    Missing,
    /// Nothing to do now: final, not due, or held by another worker.
    Skipped,
    /// All steps done.
    Completed,
    /// Parked on a wait or an external job.
    Waiting,
    /// Parked after a transient error.
    Retrying,
    /// Failed for good.
    Failed,
    /// Handed the rest to a fresh job.
    Yielded,
    /// Another writer (a cancel) changed the row mid-run.
    Interrupted,
}

impl Run {
    /// Lower-case name, the `run_execution` job's result.
    pub fn as_str(self) -> &'static str {
        match self {
            Run::Missing => "missing",
            Run::Skipped => "skipped",
            Run::Completed => "completed",
            Run::Waiting => "waiting",
            Run::Retrying => "retrying",
            Run::Failed => "failed",
            Run::Yielded => "yielded",
            Run::Interrupted => "interrupted",
        }
    }
}

/// The events that take `e` to RUNNING now, if it may be claimed.
pub fn claim_path(e: &Execution, now: DateTime<Utc>) -> Option<Vec<Event>> {
    let due = |t: Option<DateTime<Utc>>| t.is_some_and(|t| t <= now);
    match e.status {
        Status::Queued => Some(vec![Event::Claim]),
        Status::Waiting if due(e.resume_at) => Some(vec![Event::Due, Event::Claim]),
        Status::Retrying if due(e.next_attempt_at) => Some(vec![Event::Due, Event::Claim]),
        Status::Running if e.lease_expires_at.is_none_or(|t| t < now) => {
            Some(vec![Event::LeaseExpired, Event::Claim])
        }
        _ => None,
    }
}

/// Applies `events` to `e.status` through the state machine.
fn apply(e: &mut Execution, events: &[Event]) -> Result<()> {
    for ev in events {
        e.status = plan::transition(e.status, *ev)?;
    }
    Ok(())
}

/// The template scope of a step.
fn scope(e: &Execution, c: &Contact) -> Json {
    json!({
        "contact": {
            "id": c.id, "external_id": c.external_id, "email": c.email, "phone": c.phone,
            "timezone": c.timezone, "attributes": c.attributes.0, "tags": c.tags,
        },
        "execution": {"id": e.id, "workflow_id": e.workflow_id, "metadata": e.metadata.0, "attempt": e.attempt},
        "steps": e.context.0,
    })
}

fn release(e: &mut Execution) {
    e.lease_owner = None;
    e.lease_expires_at = None;
}

impl Engine {
    /// Runs execution `id` from its last checkpoint until it completes,
    /// fails, parks or spends its budget.
    ///
    /// # Errors
    /// Store and queue errors (the job is retried; the row is unchanged
    /// since the last checkpoint); an invalid stored definition.
    #[instrument(skip_all, fields(execution_id = %id), err)]
    pub async fn run_execution(&self, id: Uuid) -> Result<Run> {
        let Some(mut e) = store::execution::get(&self.pool, id).await? else {
            warn!("execution not found");
            return Ok(Run::Missing);
        };
        let now = Utc::now();
        let Some(path) = claim_path(&e, now) else {
            debug!(status = %e.status, "nothing to run");
            return Ok(Run::Skipped);
        };
        apply(&mut e, &path)?;
        e.lease_owner = Some(self.settings.owner.clone());
        e.lease_expires_at = Some(now + self.settings.lease);
        e.started_at.get_or_insert(now);
        e.waiting_reason = None;
        e.resume_at = None;
        e.next_attempt_at = None;
        if !self.save(&mut e).await? {
            debug!("claimed by another worker");
            return Ok(Run::Skipped);
        }
        let def = match self.definition(e.workflow_id, e.workflow_version).await {
            Ok(d) => d,
            Err(err @ Error::Invalid { .. }) => {
                // A stored definition that no longer validates cannot run.
                return self
                    .fail(&mut e, "definition", &err.to_string(), None)
                    .await;
            }
            Err(err) => return Err(err),
        };
        let Some(mut contact) = store::contact::get(&self.pool, e.account_id, e.contact_id).await?
        else {
            // Deleted from the CRM mirror mid-execution: nothing can run.
            return self.fail(&mut e, "contact", CONTACT_GONE, None).await;
        };
        let began = tokio::time::Instant::now();
        loop {
            let index = e.current_step_index as usize;
            let Some(step) = def.steps.get(index) else {
                return self.complete(&mut e).await;
            };
            e.current_step_id = Some(step.id.clone());
            // A parked step keeps the time it first started, so its log row
            // spans the whole wait.
            let stored = e.step_state.as_ref().map(|s| s.0.clone());
            let started_at = stored
                .as_ref()
                .and_then(|s| s.get(STARTED_AT)?.as_str()?.parse::<DateTime<Utc>>().ok())
                .unwrap_or_else(Utc::now);
            let state = stored.and_then(|mut s| s.as_object_mut()?.remove(STATE));
            let scope = scope(&e, &contact);
            let input = Input {
                account_id: e.account_id,
                execution_id: e.id,
                step_id: &step.id,
                step_index: index,
                attempt: e.attempt,
                state: state.as_ref(),
                scope: &scope,
                timezone: &contact.timezone,
                tags: &contact.tags,
                opted_out: contact.opted_out,
                now: Utc::now(),
            };
            let outcome = action::run(&step.action, &input, &self.providers).await;
            let kind = step.action.kind();
            match outcome {
                Ok(Outcome::Done {
                    response,
                    next,
                    change,
                }) => {
                    let log =
                        Self::log_row(&e, step, "SUCCEEDED", Some(&response), None, started_at);
                    let mut finished = false;
                    let advance = |e: &mut Execution| {
                        if let Json::Object(ctx) = &mut e.context.0 {
                            ctx.insert(step.id.clone(), response.clone());
                        } else {
                            e.context.0 =
                                Json::Object(Map::from_iter([(step.id.clone(), response.clone())]));
                        }
                        e.attempt = 1;
                        e.step_state = None;
                        e.error = None;
                        match def.next_index(index, &next) {
                            Some(n) => {
                                apply(e, &[Event::Step])?;
                                e.current_step_index = n as i32;
                                e.current_step_id = Some(def.steps[n].id.clone());
                            }
                            None => {
                                apply(e, &[Event::Finish])?;
                                e.completed_at = Some(Utc::now());
                                e.waiting_reason = None;
                                release(e);
                                finished = true;
                            }
                        }
                        Ok(())
                    };
                    if !self
                        .checkpoint(&mut e, Some(log), change.as_ref(), None, advance)
                        .await?
                    {
                        return Ok(Run::Interrupted);
                    }
                    self.observe_step(kind, "SUCCEEDED", started_at);
                    debug!(step = %step.id, action = kind, "step done");
                    if finished {
                        info!("execution completed");
                        return Ok(Run::Completed);
                    }
                    if change.is_some() {
                        let Some(c) =
                            store::contact::get(&self.pool, e.account_id, e.contact_id).await?
                        else {
                            return self.fail(&mut e, "contact", CONTACT_GONE, None).await;
                        };
                        contact = c;
                    }
                    if began.elapsed() >= self.settings.run_budget {
                        return self.yield_run(&mut e).await;
                    }
                }
                Ok(Outcome::Park {
                    until,
                    reason,
                    state,
                }) => {
                    apply(&mut e, &[Event::Park])?;
                    e.resume_at = Some(until);
                    e.waiting_reason = Some(reason.to_owned());
                    e.step_state = Some(sqlx::types::Json(
                        json!({STARTED_AT: started_at, STATE: state}),
                    ));
                    e.wake_seq += 1;
                    release(&mut e);
                    if !self.save(&mut e).await? {
                        return Ok(Run::Interrupted);
                    }
                    self.observe_step(kind, "WAITING", started_at);
                    debug!(step = %step.id, %until, reason, "parked");
                    self.enqueue_run(&e, Some(until)).await?;
                    return Ok(Run::Waiting);
                }
                Err(ActionError::Transient(msg)) => {
                    let policy = step.retry.unwrap_or(self.settings.retry);
                    if e.attempt >= policy.max_attempts {
                        let msg = format!("{msg} (after {} attempts)", e.attempt);
                        return self
                            .fail(&mut e, kind, &msg, Some((step, started_at)))
                            .await;
                    }
                    let delay = policy.backoff(e.attempt, fastrand::f64());
                    let at = Utc::now() + delay;
                    let log = Self::log_row(&e, step, "RETRYING", None, Some(&msg), started_at);
                    let backoff = |e: &mut Execution| {
                        apply(e, &[Event::Backoff])?;
                        e.next_attempt_at = Some(at);
                        e.waiting_reason = Some("retry_backoff".into());
                        e.error = Some(msg.clone());
                        e.attempt += 1;
                        e.wake_seq += 1;
                        release(e);
                        Ok(())
                    };
                    if !self
                        .checkpoint(&mut e, Some(log), None, None, backoff)
                        .await?
                    {
                        return Ok(Run::Interrupted);
                    }
                    self.observe_step(kind, "RETRYING", started_at);
                    info!(step = %step.id, attempt = e.attempt, error = %msg, "step will be retried");
                    self.enqueue_run(&e, Some(at)).await?;
                    return Ok(Run::Retrying);
                }
                Err(ActionError::Permanent(msg)) => {
                    return self
                        .fail(&mut e, kind, &msg, Some((step, started_at)))
                        .await;
                }
            }
        }
    }

    async fn save(&self, e: &mut Execution) -> Result<bool> {
        let mut conn = self.pool.acquire().await.map_err(store::Error::from)?;
        Ok(store::execution::save(&mut conn, e).await?)
    }

    /// The log row of `step` as `e` stands before the checkpoint moves it.
    fn log_row<'a>(
        e: &Execution,
        step: &'a Step,
        status: &'a str,
        response: Option<&'a Json>,
        error: Option<&'a str>,
        started_at: DateTime<Utc>,
    ) -> NewLog<'a> {
        NewLog {
            execution_id: e.id,
            account_id: e.account_id,
            step_index: e.current_step_index,
            step_id: &step.id,
            action_type: step.action.kind(),
            attempt: e.attempt,
            status,
            config: &step.raw,
            response,
            error,
            started_at,
            completed_at: Utc::now(),
        }
    }

    /// One checkpoint, in one transaction: the log row, the contact change,
    /// `e` as `apply` moves it, and a dead letter for the action `dead` when
    /// it fails for good. `false` (nothing written) when the row changed
    /// underneath (a cancel).
    async fn checkpoint(
        &self,
        e: &mut Execution,
        log: Option<NewLog<'_>>,
        change: Option<&Change>,
        dead: Option<&str>,
        apply: impl FnOnce(&mut Execution) -> Result<()>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(store::Error::from)?;
        if let Some(change) = change {
            store::contact::apply(&mut tx, e.account_id, e.contact_id, change).await?;
        }
        if let Some(log) = &log {
            store::execution::insert_log(&mut tx, log).await?;
        }
        apply(e)?;
        if let Some(kind) = dead {
            store::execution::insert_dead_letter(
                &mut tx,
                e,
                kind,
                e.error.as_deref().unwrap_or(""),
            )
            .await?;
        }
        if !store::execution::save(&mut tx, e).await? {
            return Ok(false);
        }
        tx.commit().await.map_err(store::Error::from)?;
        Ok(true)
    }

    async fn complete(&self, e: &mut Execution) -> Result<Run> {
        apply(e, &[Event::Finish])?;
        e.completed_at = Some(Utc::now());
        release(e);
        if !self.save(e).await? {
            return Ok(Run::Interrupted);
        }
        Ok(Run::Completed)
    }

    /// FAILED, with a log row for the failed step, a dead letter, and an
    /// entry in `arq:queue:dead`.
    async fn fail(
        &self,
        e: &mut Execution,
        kind: &str,
        msg: &str,
        step: Option<(&Step, DateTime<Utc>)>,
    ) -> Result<Run> {
        let log =
            step.map(|(s, started_at)| Self::log_row(e, s, "FAILED", None, Some(msg), started_at));
        let failed = |e: &mut Execution| {
            apply(e, &[Event::Fail])?;
            e.error = Some(msg.to_owned());
            e.completed_at = Some(Utc::now());
            e.waiting_reason = None;
            release(e);
            Ok(())
        };
        if !self.checkpoint(e, log, None, Some(kind), failed).await? {
            return Ok(Run::Interrupted);
        }
        if let Some((_, started_at)) = step {
            self.observe_step(kind, "FAILED", started_at);
        }
        warn!(error = %msg, action = kind, "execution failed");
        self.queue
            .mark_dead(
                &keys::dead_queue(&self.settings.queue_prefix),
                &e.id.to_string(),
                now_ms(),
            )
            .await?;
        Ok(Run::Failed)
    }

    /// Hands the rest of the steps to a fresh job.
    async fn yield_run(&self, e: &mut Execution) -> Result<Run> {
        apply(e, &[Event::Yield])?;
        e.wake_seq += 1;
        release(e);
        if !self.save(e).await? {
            return Ok(Run::Interrupted);
        }
        self.enqueue_run(e, None).await?;
        Ok(Run::Yielded)
    }

    /// Moves a due, lapsed or possibly lost execution back to the queue.
    /// `false` when the row changed meanwhile (someone else moved it).
    pub(crate) async fn recover(&self, mut e: Execution, now: DateTime<Utc>) -> Result<bool> {
        match e.status {
            // Possibly lost with Redis: enqueueing the same job id again is
            // a no-op while the job exists.
            Status::Queued => {
                self.enqueue_run(&e, None).await?;
                return Ok(true);
            }
            Status::Waiting | Status::Retrying => apply(&mut e, &[Event::Due])?,
            Status::Running if e.lease_expires_at.is_none_or(|t| t < now) => {
                apply(&mut e, &[Event::LeaseExpired])?
            }
            _ => return Ok(false),
        }
        e.wake_seq += 1;
        e.waiting_reason = None;
        release(&mut e);
        if !self.save(&mut e).await? {
            return Ok(false);
        }
        self.enqueue_run(&e, None).await?;
        Ok(true)
    }
}
