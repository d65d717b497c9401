//! `run_execution`: the effectful half of the engine, in three parts.
//!
//! - **claim**: read the row, plan a `Claim`, write it (optimistically, by
//!   revision): this worker holds the lease;
//! - **step**: run the current step's action against the contact, and
//!   decide what its outcome means (advance, park, back off, fail);
//! - **settle**: plan that command and commit it in one transaction with
//!   what goes with it (the log row, the contact change, a dead letter),
//!   then enqueue the job the transition asks for.
//!
//! A crash anywhere loses at most the action in flight, which the next run
//! repeats with the same idempotency key. A run ends when the execution
//! completes or fails, parks, or spends its time budget.
//!
//! A run that hits a database or Redis error after its claim gives the
//! claim back (QUEUED under a fresh job) as soon as the database answers
//! again, and this process may take back a lease of its own that no run
//! of it holds: a blip costs seconds, not a lease period.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value as Json, json};
use tracing::{debug, info, instrument, warn};
use uuid::Uuid;

use super::definition::{Definition, Step};
use super::plan::{self, Command, Job, Machine, Transition};
use super::{Engine, Enqueued, Error, Result, lock};
use crate::action::{self, ActionError, Input, Outcome};
use crate::domain::{Change, LogStatus, Status, contact as rules};
use crate::queue::{keys, now_ms};
use crate::store::execution::NewLog;
use crate::store::{self, contact::Contact, execution::Execution, text};

/// Why an execution whose contact was deleted mid-way fails.
const CONTACT_GONE: &str = "the contact no longer exists";
/// Keys of `step_state`: when the parked step first started, and the
/// action's own state.
const STARTED_AT: &str = "started_at";
const STATE: &str = "state";
/// Metric outcome of a step that parked.
const PARKED: &str = "WAITING";
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

    /// How a run that settled in `status` ended; `None` while it runs on.
    fn settled_in(status: Status) -> Option<Run> {
        match status {
            Status::Running => None,
            Status::Completed => Some(Run::Completed),
            Status::Waiting => Some(Run::Waiting),
            Status::Retrying => Some(Run::Retrying),
            Status::Failed => Some(Run::Failed),
            Status::Queued => Some(Run::Yielded),
            Status::Cancelled => Some(Run::Interrupted),
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

/// A command to settle, with what goes with it into the same transaction.
struct Settle<'a> {
    cmd: Command,
    writes: Writes<'a>,
}

/// What a checkpoint writes besides the execution row.
#[derive(Default)]
struct Writes<'a> {
    /// The step that ran, if one did.
    ran: Option<Ran<'a>>,
    /// The contact change a step made.
    change: Option<Change>,
    /// The action kind a failure is filed under as a dead letter.
    dead: Option<&'a str>,
}

impl Settle<'_> {
    fn bare(cmd: Command) -> Self {
        Settle {
            cmd,
            writes: Writes::default(),
        }
    }

    /// A failure that no step's log row records (the definition no longer
    /// validates, the contact is gone).
    fn fail(kind: &'static str, error: String) -> Self {
        Settle {
            cmd: Command::Fail { error },
            writes: Writes {
                dead: Some(kind),
                ..Writes::default()
            },
        }
    }
}

/// One attempt of one step: its log row and its metric.
struct Ran<'a> {
    step: &'a Step,
    started_at: DateTime<Utc>,
    /// The log row's status; `None` for a step that parked (its row is
    /// written when it ends, spanning the wait).
    log: Option<LogStatus>,
    response: Option<Json>,
    error: Option<String>,
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
        let run = match self.run_held(id).await {
            Err(err @ (Error::Store(_) | Error::Queue(_))) => {
                warn!(error = %err, "run cut short; giving the claim back");
                if !self.release(id).await {
                    return Err(err);
                }
                Run::Released
            }
            other => other?,
        };
        // Nobody listening is fine: the signal is for those who wait.
        let _ = self.runs.send((id, run));
        Ok(run)
    }

    /// The body of [`Engine::run_execution`], while this process holds `id`.
    async fn run_held(&self, id: Uuid) -> Result<Run> {
        let mut e = match self.claim(id).await? {
            Ok(e) => e,
            Err(run) => return Ok(run),
        };
        let def = match self.definition(e.workflow_id, e.workflow_version).await {
            Ok(d) => d,
            // A stored definition that no longer validates cannot run.
            Err(err @ Error::Invalid { .. }) => {
                return self
                    .settle_end(&mut e, Settle::fail("definition", err.to_string()))
                    .await;
            }
            Err(err) => return Err(err),
        };
        let Some(mut contact) = store::contact::get(&self.pool, e.account_id, e.contact_id).await?
        else {
            // Deleted from the CRM mirror mid-execution: nothing can run.
            return self
                .settle_end(&mut e, Settle::fail("contact", CONTACT_GONE.into()))
                .await;
        };
        let began = tokio::time::Instant::now();
        loop {
            let index = e.current_step_index as usize;
            let Some(step) = def.steps.get(index) else {
                return self
                    .settle_end(&mut e, Settle::bare(Command::Complete))
                    .await;
            };
            let (outcome, started_at) = self.step(&e, step, &contact).await;
            let settle = self.decide(&e, &def, step, outcome, started_at);
            let changed = settle.writes.change.is_some();
            if let Some(run) = self.settle(&mut e, settle).await? {
                return Ok(run);
            }
            if changed {
                let Some(c) = store::contact::get(&self.pool, e.account_id, e.contact_id).await?
                else {
                    return self
                        .settle_end(&mut e, Settle::fail("contact", CONTACT_GONE.into()))
                        .await;
                };
                contact = c;
            }
            if began.elapsed() >= self.settings.run_budget {
                return self.settle_end(&mut e, Settle::bare(Command::Yield)).await;
            }
        }
    }

    // === claim ===

    /// Takes the lease on `id`; `Err` with how the run ends when there is
    /// nothing to run (missing, final, not due, leased by a live worker,
    /// or claimed by another worker between read and write).
    async fn claim(&self, id: Uuid) -> Result<std::result::Result<Execution, Run>> {
        let Some(mut e) = store::execution::get(&self.pool, id).await? else {
            warn!("execution not found");
            return Ok(Err(Run::Missing));
        };
        let now = Utc::now();
        let claim = Command::Claim {
            owner: self.settings.owner.clone(),
            lease_until: now + self.settings.lease,
        };
        let Ok(t) = plan::plan(&Machine::of(&e), claim, now) else {
            debug!(status = %e.status, "nothing to run");
            return Ok(Err(Run::Skipped));
        };
        if !self.commit_bare(&mut e, &t).await? {
            debug!("claimed by another worker");
            return Ok(Err(Run::Skipped));
        }
        Ok(Ok(e))
    }

    // === step ===

    /// Runs `step`'s action for `e`; returns what it came to, with the time
    /// the step first started (a parked step keeps it, so its log row
    /// spans the whole wait).
    async fn step(
        &self,
        e: &Execution,
        step: &Step,
        contact: &Contact,
    ) -> (std::result::Result<Outcome, ActionError>, DateTime<Utc>) {
        let stored = e.step_state.as_ref().map(|s| s.0.clone());
        let started_at = stored
            .as_ref()
            .and_then(|s| s.get(STARTED_AT)?.as_str()?.parse::<DateTime<Utc>>().ok())
            .unwrap_or_else(Utc::now);
        let state = stored.and_then(|mut s| s.as_object_mut()?.remove(STATE));
        let scope = scope(e, contact);
        let input = Input {
            account_id: e.account_id,
            execution_id: e.id,
            step_id: &step.id,
            step_index: e.current_step_index as usize,
            attempt: e.attempt,
            state: state.as_ref(),
            scope: &scope,
            timezone: &contact.timezone,
            tags: &contact.tags,
            opted_out: contact.opted_out,
            now: Utc::now(),
        };
        let outcome = action::run(&step.action, &input, &self.providers).await;
        (admit(outcome, contact), started_at)
    }

    /// What a step's outcome means for the execution.
    fn decide<'a>(
        &self,
        e: &Execution,
        def: &Definition,
        step: &'a Step,
        outcome: std::result::Result<Outcome, ActionError>,
        started_at: DateTime<Utc>,
    ) -> Settle<'a> {
        let ran = |log, response, error| Ran {
            step,
            started_at,
            log: Some(log),
            response,
            error,
        };
        let kind = step.action.kind();
        let fail = |error: String, response| Settle {
            cmd: Command::Fail {
                error: error.clone(),
            },
            writes: Writes {
                ran: Some(ran(LogStatus::Failed, response, Some(error))),
                change: None,
                dead: Some(kind),
            },
        };
        match outcome {
            Ok(Outcome::Done {
                response,
                next,
                change,
            }) => {
                let index = e.current_step_index as usize;
                let next = def
                    .next_index(index, &next)
                    .map(|n| (n as i32, def.steps[n].id.clone()));
                Settle {
                    cmd: Command::Advance {
                        output: (step.id.clone(), response.clone()),
                        next,
                    },
                    writes: Writes {
                        ran: Some(ran(LogStatus::Succeeded, Some(response), None)),
                        change,
                        dead: None,
                    },
                }
            }
            Ok(Outcome::Park {
                until,
                reason,
                state,
            }) => Settle {
                cmd: Command::Park {
                    until,
                    reason: reason.to_owned(),
                    step_state: json!({STARTED_AT: started_at, STATE: state}),
                },
                writes: Writes {
                    ran: Some(Ran {
                        log: None,
                        ..ran(LogStatus::Succeeded, None, None)
                    }),
                    ..Writes::default()
                },
            },
            Err(ActionError {
                retryable: true,
                message,
                response,
            }) => {
                let policy = step.retry.unwrap_or(self.settings.retry);
                // Attempts since the step (re)started: a manual retry gives
                // a step its whole policy again.
                let tries = e.attempt - e.first_attempt + 1;
                if tries >= policy.max_attempts {
                    return fail(format!("{message} (after {tries} attempts)"), response);
                }
                let at = Utc::now() + policy.backoff(tries, fastrand::f64());
                Settle {
                    cmd: Command::Backoff {
                        at,
                        error: message.clone(),
                    },
                    writes: Writes {
                        ran: Some(ran(LogStatus::Retrying, response, Some(message))),
                        ..Writes::default()
                    },
                }
            }
            Err(ActionError {
                retryable: false,
                message,
                response,
            }) => fail(message, response),
        }
    }

    // === settle ===

    /// [`Engine::settle`] for a command that ends the run.
    async fn settle_end(&self, e: &mut Execution, s: Settle<'_>) -> Result<Run> {
        Ok(self.settle(e, s).await?.unwrap_or(Run::Interrupted))
    }

    /// Plans `s`'s command, commits it with what goes with it, then does
    /// what the committed transition asks: enqueue its job, announce a
    /// failure. `None` while the run goes on.
    async fn settle(&self, e: &mut Execution, s: Settle<'_>) -> Result<Option<Run>> {
        let Settle { cmd, writes } = s;
        let t = plan::plan(&Machine::of(e), cmd, Utc::now())?;
        if !self.commit(e, &t, &writes).await? {
            return Ok(Some(Run::Interrupted));
        }
        if let Some(ran) = &writes.ran {
            let outcome = ran.log.map_or(PARKED, LogStatus::as_str);
            self.observe_step(ran.step.action.kind(), outcome, ran.started_at);
            debug!(step = %ran.step.id, action = ran.step.action.kind(), outcome, "step settled");
        }
        self.enqueue_job(e, t.job).await?;
        match e.status {
            Status::Completed => info!("execution completed"),
            Status::Retrying => {
                info!(
                    attempt = e.attempt,
                    error = e.error.as_deref(),
                    "step will be retried"
                )
            }
            Status::Failed => self.announce_failure(e, writes.dead.unwrap_or("")).await,
            _ => {}
        }
        Ok(Run::settled_in(e.status))
    }

    /// Commits `t` into `e` with the log row, contact change and dead
    /// letter of `s`: one transaction when there is more than the row to
    /// write. `false` (nothing written) when the row changed underneath.
    async fn commit(&self, e: &mut Execution, t: &Transition, s: &Writes<'_>) -> Result<bool> {
        let log = s.ran.as_ref().and_then(|r| Some(log_row(e, r, r.log?)));
        if log.is_none() && s.change.is_none() && s.dead.is_none() {
            t.apply_to(e);
            let mut conn = self.pool.acquire().await.map_err(store::Error::from)?;
            return Ok(store::execution::save(&mut conn, e).await?);
        }
        let mut tx = self.pool.begin().await.map_err(store::Error::from)?;
        if let Some(change) = &s.change {
            store::contact::apply(&mut tx, e.account_id, e.contact_id, change).await?;
        }
        if let Some(log) = &log {
            store::execution::insert_log(&mut tx, log).await?;
        }
        t.apply_to(e);
        if let Some(kind) = s.dead {
            let error = e.error.as_deref().unwrap_or("");
            store::execution::insert_dead_letter(&mut tx, e, kind, error).await?;
        }
        if !store::execution::save(&mut tx, e).await? {
            return Ok(false);
        }
        tx.commit().await.map_err(store::Error::from)?;
        Ok(true)
    }

    /// Commits `t` into `e`, with nothing else to write. `false` when the
    /// row changed underneath.
    pub(super) async fn commit_bare(&self, e: &mut Execution, t: &Transition) -> Result<bool> {
        self.commit(e, t, &Writes::default()).await
    }

    /// Logs a failure and announces it in `<prefix>:dead`: the dead letter
    /// row is the record; the sorted set only announces it.
    async fn announce_failure(&self, e: &Execution, kind: &str) {
        warn!(
            error = e.error.as_deref(),
            action = kind,
            "execution failed"
        );
        let dead = keys::dead_queue(&self.settings.queue_prefix);
        if let Err(err) = self
            .queue
            .mark_dead(&dead, &e.id.to_string(), now_ms())
            .await
        {
            warn!(error = %err, "could not announce the failure in the dead set");
        }
    }

    // === giving a claim back ===

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
        if self.settle(&mut e, Settle::bare(Command::Yield)).await? == Some(Run::Interrupted) {
            return Ok(false);
        }
        info!("claim given back after an error");
        Ok(true)
    }

    /// Enqueues the job a committed transition asks for; a refusal (arq's
    /// dedupe) is logged: the maintenance loop moves the row on.
    pub(crate) async fn enqueue_job(&self, e: &Execution, job: Job) -> Result<()> {
        let at = match job {
            Job::None => return Ok(()),
            Job::Now => None,
            Job::At(t) => Some(t),
        };
        if self.enqueue_run(e, at).await? == Enqueued::Refused {
            warn!(execution_id = %e.id, job_id = %super::job_id(e), "job id taken; maintenance will enqueue a fresh one");
        }
        Ok(())
    }
}

/// The log row of the step `r` as `e` stands before the transition moves it.
fn log_row<'a>(e: &Execution, r: &'a Ran<'_>, status: LogStatus) -> NewLog<'a> {
    NewLog {
        execution_id: e.id,
        account_id: e.account_id,
        step_index: e.current_step_index,
        step_id: &r.step.id,
        action_type: r.step.action.kind(),
        attempt: e.attempt,
        status: status.as_str(),
        config: &r.step.raw,
        response: r.response.as_ref(),
        error: r.error.as_deref(),
        started_at: r.started_at,
        completed_at: Utc::now(),
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
            if let Some(change) = &change
                && let Err(msg) = rules::check_change(change, &contact.attributes.0, &contact.tags)
            {
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
