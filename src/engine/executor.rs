//! `run_execution`: the effectful half of the engine, in three parts
//! (claim here, [`super::step`], [`super::settle`]).
//!
//! - **claim**: read the row, plan a `Claim`, write it (optimistically, by
//!   revision): this worker holds the lease;
//! - **step**: run the current step's action against the contact, and
//!   decide what its outcome means (advance, park, back off, fail);
//! - **settle**: plan that command and commit it with what goes with it
//!   (the log row, the contact change, a dead letter), then enqueue the
//!   job the transition asks for.
//!
//! Local steps (no effect outside PostgreSQL) that move on to another step
//! are taken in memory and settle with the next checkpoint, atomically.
//! A crash anywhere loses at most the action in flight, which the next run
//! repeats with the same idempotency key, and the local steps before it,
//! which the next run takes again with the same outcome. A run ends when
//! the execution completes or fails, parks, or spends its time budget.
//!
//! Before its claim a run takes a permit of its account's cap of running
//! executions, if the account has one, and gives it back when it ends;
//! without one it ends `Capped`, its job in line for the next permit.
//!
//! A run that hits a database or Redis error after its claim gives the
//! claim back (QUEUED under a fresh job) as soon as the database answers
//! again, and this process may take back a lease of its own that no run
//! of it holds: a blip costs seconds, not a lease period.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, instrument, warn};
use uuid::Uuid;

use super::plan::{self, Command, Machine};
use super::settle::{Earlier, Settle};
use super::{Engine, Error, Result, lock};
use crate::domain::{ErrorClass, Priority, Status};
use crate::provider::{Admit, Permit};
use crate::store::{self, contact::Contact, execution::Execution};
use crate::worker::JobContext;

/// Why an execution whose contact was deleted mid-way fails.
const CONTACT_GONE: &str = "the contact no longer exists";
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
    /// Not claimed: its account's cap of running executions is reached;
    /// the job waits in line.
    Capped,
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
            Run::Capped => "capped",
            Run::Released => "released",
        }
    }

    /// How a run that settled in `status` ended; `None` while it runs on.
    pub(super) fn settled_in(status: Status) -> Option<Run> {
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

impl Engine {
    /// Runs execution `id` from its last checkpoint until it completes,
    /// fails, parks or spends its budget.
    ///
    /// # Errors
    /// Store and queue errors that outlast the attempts to give the claim
    /// back (the job is retried; the row is unchanged since the last
    /// checkpoint); an invalid stored definition.
    ///
    /// `job` is the job this run comes from, which holds a permit of the
    /// account's cap of running executions while it runs.
    #[instrument(skip_all, err, fields(
        execution_id = %id, account_id = tracing::field::Empty, workflow_id = tracing::field::Empty,
    ))]
    pub async fn run_execution(&self, id: Uuid, job: &JobContext) -> Result<Run> {
        let Some(_held) = Held::take(&self.running, id) else {
            debug!("a run of this process holds it");
            return Ok(Run::Skipped);
        };
        let mut permit = None;
        let run = self.run_held(id, job, &mut permit).await;
        if let Some(permit) = permit {
            self.providers.limits.give_running(permit).await;
        }
        let run = match run {
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

    /// The body of [`Engine::run_execution`], while this process holds `id`;
    /// puts the permit of the account's cap it took in `permit`.
    async fn run_held(
        &self,
        id: Uuid,
        job: &JobContext,
        permit: &mut Option<Permit>,
    ) -> Result<Run> {
        let mut e = match self.claim(id, job, permit).await? {
            Ok(e) => e,
            Err(run) => return Ok(run),
        };
        let span = tracing::Span::current();
        span.record("account_id", tracing::field::display(e.account_id));
        span.record("workflow_id", tracing::field::display(e.workflow_id));
        // Renewed while this run goes on; the task ends with it.
        let _renewing = permit.clone().map(|p| self.renew_while_running(p));
        let def = match self.definition(e.workflow_id, e.workflow_version).await {
            Ok(d) => d,
            // A stored definition that no longer validates cannot run.
            Err(err @ Error::Invalid { .. }) => {
                let fail =
                    Settle::fail(&e, "definition", ErrorClass::InvalidConfig, err.to_string());
                return self.settle_end(&mut e, fail).await;
            }
            Err(err) => return Err(err),
        };
        let Some(mut contact) = store::contact::get(&self.pool, e.account_id, e.contact_id).await?
        else {
            // Deleted from the CRM mirror mid-execution: nothing can run.
            let fail = Settle::fail(&e, "contact", ErrorClass::ContactData, CONTACT_GONE.into());
            return self.settle_end(&mut e, fail).await;
        };
        let began = tokio::time::Instant::now();
        // Local steps taken since the last checkpoint.
        let mut earlier = Vec::new();
        loop {
            let index = e.current_step_index as usize;
            let Some(step) = def.steps.get(index) else {
                let mut complete = Settle::bare(Command::Complete);
                complete.writes.earlier = earlier;
                return self.settle_end(&mut e, complete).await;
            };
            let (outcome, step_began) = self.step(&e, step, &contact).await;
            let mut settle = self.decide(&e, &def, step, outcome, step_began);
            let within_budget = began.elapsed() < self.settings.run_budget;
            if within_budget && earlier.len() + 1 < self.settings.steps_per_checkpoint {
                match defer(&mut e, &mut contact, settle)? {
                    Ok(step) => {
                        earlier.push(step);
                        continue;
                    }
                    Err(s) => settle = s,
                }
            }
            settle.writes.earlier = std::mem::take(&mut earlier);
            let change = settle.writes.change.clone();
            if let Some(run) = self.settle(&mut e, settle).await? {
                return Ok(run);
            }
            if let Some(change) = &change {
                contact.apply(change);
            }
            if began.elapsed() >= self.settings.run_budget {
                return self.settle_end(&mut e, Settle::bare(Command::Yield)).await;
            }
        }
    }

    /// Renews `permit` every third of its hold until the guard it returns
    /// is dropped.
    fn renew_while_running(&self, permit: Permit) -> AbortOnDropHandle<()> {
        let limits = self.providers.limits.clone();
        let every = self.settings.running_hold / 3;
        AbortOnDropHandle::new(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                limits.renew_running(&permit).await;
            }
        }))
    }

    // === claim ===

    /// Takes the lease on `id`; `Err` with how the run ends when there is
    /// nothing to run (missing, final, not due, leased by a live worker,
    /// or claimed by another worker between read and write).
    async fn claim(
        &self,
        id: Uuid,
        job: &JobContext,
        permit: &mut Option<Permit>,
    ) -> Result<std::result::Result<Execution, Run>> {
        let Some(mut e) = store::execution::get(&self.pool, id).await? else {
            warn!("execution not found");
            return Ok(Err(Run::Missing));
        };
        let now = Utc::now();
        let claim = Command::Claim {
            owner: self.settings.owner.clone(),
            lease_until: now + self.settings.lease,
        };
        let limits = &self.providers.limits;
        let hold = self.settings.running_hold;
        let Ok(t) = plan::plan(&Machine::of(&e), claim, now) else {
            debug!(status = %e.status, "nothing to run");
            // A permit handed to this job while it waited (its execution
            // was cancelled meanwhile) goes on to the next in line.
            *permit = limits
                .permit(e.account_id, &job.queue, &job.job_id, hold)
                .await;
            return Ok(Err(Run::Skipped));
        };
        match limits
            .take_running(e.account_id, &job.queue, &job.job_id, hold)
            .await
        {
            Admit::Run(p) => *permit = p,
            Admit::Wait => {
                debug!("the account's cap of running executions is reached");
                return Ok(Err(Run::Capped));
            }
        }
        // Its first run: a start at its asked priority counted as waiting.
        let started = e.started_at.is_none();
        let first = started && e.priority != Priority::Low;
        if !self.commit_bare(&mut e, t).await? {
            debug!("claimed by another worker");
            return Ok(Err(Run::Skipped));
        }
        if started {
            self.observe_started(&e);
        }
        if first {
            self.fair_started(e.account_id).await;
        }
        Ok(Ok(e))
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
}

/// Takes a local step's outcome into `e` and `contact` in memory when it
/// moves on to another step: it then commits with the next checkpoint.
/// `Err` gives back what must be settled now (a failure, a park, the end).
fn defer<'a>(
    e: &mut Execution,
    contact: &mut Contact,
    s: Settle<'a>,
) -> Result<std::result::Result<Earlier<'a>, Settle<'a>>> {
    let Settle { cmd, mut writes } = s;
    let moves_on = matches!(cmd, Command::Advance { next: Some(_), .. });
    let ran = match writes.ran.take() {
        Some(ran)
            if ran.log.is_some()
                && ran.step.action.is_local()
                && moves_on
                && writes.dead.is_none() =>
        {
            ran
        }
        ran => {
            writes.ran = ran;
            return Ok(Err(Settle { cmd, writes }));
        }
    };
    let t = plan::plan(&Machine::of(e), cmd, Utc::now())?;
    if let Some(change) = &writes.change {
        contact.apply(change);
    }
    let earlier = Earlier {
        ran,
        step_index: e.current_step_index,
        attempt: e.attempt,
        change: writes.change,
        at: Utc::now(),
    };
    t.apply_to(e);
    Ok(Ok(earlier))
}
