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
//!
//! A run that hits a database or Redis error after its claim gives the
//! claim back (QUEUED under a fresh job) as soon as the database answers
//! again, and this process may take back a lease of its own that no run
//! of it holds: a blip costs seconds, not a lease period.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json, json};
use tracing::{debug, info, instrument, warn};
use uuid::Uuid;

use super::{Engine, Enqueued, Error, Result, job_id, lock, plan};
use crate::action::contact::Change;
use crate::action::{self, ActionError, Input, Outcome};
use crate::engine::definition::Step;
use crate::engine::plan::{Event, Status};
use crate::queue::{Presence, keys, now_ms};
use crate::store::execution::NewLog;
use crate::store::{self, contact::Contact, execution::Execution, text};

/// Why an execution whose contact was deleted mid-way fails.
const CONTACT_GONE: &str = "the contact no longer exists";

/// Keys of `step_state`: when the parked step first started, and the
/// action's own state.
const STARTED_AT: &str = "started_at";
const STATE: &str = "state";
/// First pause between attempts to give a claim back after an error.
const RELEASE_FIRST_PAUSE: Duration = Duration::from_millis(100);
/// Longest pause between those attempts.
const RELEASE_MAX_PAUSE: Duration = Duration::from_secs(1);

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
    /// A database or Redis error cut the run short; the claim was given
    /// back and a fresh job enqueued.
    Released,
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
            Run::Released => "released",
        }
    }
}

/// The events that take `e` to RUNNING now, if it may be claimed by
/// `owner`, which holds no run of it: a lease of `owner`'s own is as good
/// as lapsed (the run that took it ended without giving it back).
pub fn claim_path(e: &Execution, now: DateTime<Utc>, owner: &str) -> Option<Vec<Event>> {
    let due = |t: Option<DateTime<Utc>>| t.is_some_and(|t| t <= now);
    let lapsed = e.lease_expires_at.is_none_or(|t| t < now);
    match e.status {
        Status::Queued => Some(vec![Event::Claim]),
        Status::Waiting if due(e.resume_at) => Some(vec![Event::Due, Event::Claim]),
        Status::Retrying if due(e.next_attempt_at) => Some(vec![Event::Due, Event::Claim]),
        Status::Running if lapsed || e.lease_owner.as_deref() == Some(owner) => {
            Some(vec![Event::LeaseExpired, Event::Claim])
        }
        _ => None,
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

/// Marks an execution as run by this process while alive.
struct Held<'a> {
    set: &'a Mutex<HashSet<Uuid>>,
    id: Uuid,
}

impl<'a> Held<'a> {
    /// `None` when a run of this process holds `id` already.
    fn take(set: &'a Mutex<HashSet<Uuid>>, id: Uuid) -> Option<Self> {
        lock(set).insert(id).then_some(Held { set, id })
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        lock(self.set).remove(&self.id);
    }
}

/// What the engine lets through of a step's outcome. Third parties' data
/// (a webhook's answer, an arq result, a provider's error text) is kept
/// with any NUL replaced, which PostgreSQL would refuse at every retry of
/// the checkpoint; a contact change that would pass the contact's limits
/// fails the step for good, with a message saying which.
fn admit(
    outcome: std::result::Result<Outcome, ActionError>,
    contact: &Contact,
) -> std::result::Result<Outcome, ActionError> {
    match outcome {
        Ok(Outcome::Done {
            response,
            next,
            change,
        }) => {
            if let Some(Err(msg)) = change.as_ref().map(|c| fits(c, contact)) {
                return Err(ActionError::permanent(msg));
            }
            Ok(Outcome::Done {
                response: text::scrub(response),
                next,
                change,
            })
        }
        Err(mut err) => {
            err.message = text::scrub_str(err.message);
            err.response = err.response.map(text::scrub);
            Err(err)
        }
        park => park,
    }
}

/// Whether `change` leaves `contact` within the store's limits.
fn fits(change: &Change, contact: &Contact) -> std::result::Result<(), String> {
    use store::contact::{MAX_ATTRIBUTES_BYTES, MAX_EMAIL, MAX_PHONE, MAX_TAGS};
    match change {
        Change::Update {
            email,
            phone,
            attributes,
            unset,
            ..
        } => {
            for (field, value, max) in [("email", email, MAX_EMAIL), ("phone", phone, MAX_PHONE)] {
                let n = value.as_ref().map_or(0, |v| v.chars().count());
                if n > max {
                    return Err(format!(
                        "the contact's {field} would be {n} characters; at most {max} allowed"
                    ));
                }
            }
            let mut merged = contact
                .attributes
                .0
                .as_object()
                .cloned()
                .unwrap_or_default();
            merged.extend(attributes.clone());
            for key in unset {
                merged.remove(key);
            }
            let size = Json::Object(merged).to_string().len();
            if size > MAX_ATTRIBUTES_BYTES {
                return Err(format!(
                    "the contact's attributes would be {size} bytes as JSON; at most {MAX_ATTRIBUTES_BYTES} allowed"
                ));
            }
            Ok(())
        }
        Change::AddTag(tag) if !contact.tags.contains(tag) && contact.tags.len() >= MAX_TAGS => {
            Err(format!(
                "the contact has {MAX_TAGS} tags already; no more can be added"
            ))
        }
        Change::AddTag(_) | Change::RemoveTag(_) => Ok(()),
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
    /// Store and queue errors that outlast the attempts to give the claim
    /// back (the job is retried; the row is unchanged since the last
    /// checkpoint); an invalid stored definition.
    #[instrument(skip_all, fields(execution_id = %id), err)]
    pub async fn run_execution(&self, id: Uuid) -> Result<Run> {
        let Some(_held) = Held::take(&self.running, id) else {
            debug!("a run of this process holds it");
            return Ok(Run::Skipped);
        };
        match self.run_held(id).await {
            Err(err @ (Error::Store(_) | Error::Queue(_))) => {
                warn!(error = %err, "run cut short; giving the claim back");
                if self.release(id).await {
                    return Ok(Run::Released);
                }
                Err(err)
            }
            other => other,
        }
    }

    /// Gives back this process's claim on `id` after an error: QUEUED under
    /// a fresh job, retried while the database comes back, for at most half
    /// the run budget (the job's timeout stays out of reach). `true` once
    /// the row no longer holds a lease of ours.
    async fn release(&self, id: Uuid) -> bool {
        let deadline = tokio::time::Instant::now() + self.settings.run_budget / 2;
        let mut pause = RELEASE_FIRST_PAUSE;
        loop {
            match self.try_release(id).await {
                Ok(true) => return true,
                // The row changed between read and write: look again.
                Ok(false) => {}
                Err(err) if tokio::time::Instant::now() + pause >= deadline => {
                    warn!(error = %err, "could not give the claim back; the job will retry");
                    return false;
                }
                Err(_) => {}
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RELEASE_MAX_PAUSE);
        }
    }

    /// One attempt of [`Engine::release`]; `false` when the row changed
    /// underneath.
    async fn try_release(&self, id: Uuid) -> Result<bool> {
        let Some(mut e) = store::execution::get(&self.pool, id).await? else {
            return Ok(true);
        };
        if e.status != Status::Running || e.lease_owner.as_deref() != Some(&self.settings.owner) {
            // Parked, finished or cancelled before the error: nothing held.
            return Ok(true);
        }
        if self.yield_run(&mut e).await? == Run::Interrupted {
            return Ok(false);
        }
        info!("claim given back after an error");
        Ok(true)
    }

    /// The body of [`Engine::run_execution`], while this process holds `id`.
    async fn run_held(&self, id: Uuid) -> Result<Run> {
        let Some(mut e) = store::execution::get(&self.pool, id).await? else {
            warn!("execution not found");
            return Ok(Run::Missing);
        };
        let now = Utc::now();
        let Some(path) = claim_path(&e, now, &self.settings.owner) else {
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
            let outcome = admit(
                action::run(&step.action, &input, &self.providers).await,
                &contact,
            );
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
                        e.first_attempt = 1;
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
                Err(ActionError {
                    retryable: true,
                    message: msg,
                    response,
                }) => {
                    let policy = step.retry.unwrap_or(self.settings.retry);
                    // Attempts since the step (re)started: a manual retry
                    // gives a step its whole policy again.
                    let tries = e.attempt - e.first_attempt + 1;
                    if tries >= policy.max_attempts {
                        let msg = format!("{msg} (after {tries} attempts)");
                        let failed = (step, started_at, response.as_ref());
                        return self.fail(&mut e, kind, &msg, Some(failed)).await;
                    }
                    let delay = policy.backoff(tries, fastrand::f64());
                    let at = Utc::now() + delay;
                    let log = Self::log_row(
                        &e,
                        step,
                        "RETRYING",
                        response.as_ref(),
                        Some(&msg),
                        started_at,
                    );
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
                Err(ActionError {
                    retryable: false,
                    message: msg,
                    response,
                }) => {
                    let failed = (step, started_at, response.as_ref());
                    return self.fail(&mut e, kind, &msg, Some(failed)).await;
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

    /// FAILED, with a log row for the failed step (with the answer that
    /// failed it, if any), a dead letter, and an entry in `<prefix>:dead`.
    async fn fail(
        &self,
        e: &mut Execution,
        kind: &str,
        msg: &str,
        step: Option<(&Step, DateTime<Utc>, Option<&Json>)>,
    ) -> Result<Run> {
        let log = step.map(|(s, started_at, response)| {
            Self::log_row(e, s, "FAILED", response, Some(msg), started_at)
        });
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
        if let Some((_, started_at, _)) = step {
            self.observe_step(kind, "FAILED", started_at);
        }
        warn!(error = %msg, action = kind, "execution failed");
        // The dead letter row is the record; the sorted set only announces it.
        if let Err(err) = self
            .queue
            .mark_dead(
                &keys::dead_queue(&self.settings.queue_prefix),
                &e.id.to_string(),
                now_ms(),
            )
            .await
        {
            warn!(error = %err, "could not announce the failure in the dead set");
        }
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

    /// Moves a due, lapsed or possibly lost execution back to the queue,
    /// unless `job` (where its current job stands) says that job will still
    /// run: then a second job would only add load to a queue that is behind.
    pub(crate) async fn recover(
        &self,
        mut e: Execution,
        job: Presence,
        now: DateTime<Utc>,
    ) -> Result<Recovery> {
        if job != Presence::Gone {
            return Ok(Recovery::JobPresent);
        }
        match e.status {
            // Its job finished without running it, expired or was lost with
            // Redis: its id may be taken by a result, so take the next one.
            Status::Queued => {}
            Status::Waiting | Status::Retrying => apply(&mut e, &[Event::Due])?,
            Status::Running if e.lease_expires_at.is_none_or(|t| t < now) => {
                apply(&mut e, &[Event::LeaseExpired])?
            }
            _ => return Ok(Recovery::Changed),
        }
        e.wake_seq += 1;
        e.waiting_reason = None;
        release(&mut e);
        if !self.save(&mut e).await? {
            return Ok(Recovery::Changed);
        }
        if self.enqueue_run(&e, None).await? == Enqueued::Refused {
            // A fresh id cannot be taken unless someone wrote our key space;
            // the row is QUEUED, so the next pass moves on to the next id.
            warn!(execution_id = %e.id, job_id = %job_id(&e), "fresh job id refused");
        }
        Ok(Recovery::Requeued)
    }

    /// The queue and job id of `e`'s current job, for [`Engine::recover`].
    pub(crate) fn job_of(&self, e: &Execution) -> (String, String) {
        (self.queue_of(e), job_id(e))
    }
}
