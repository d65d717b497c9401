//! Settle: a command becomes a transition ([`plan::plan`]), committed in
//! one transaction with what goes with it (the step's log row, the contact
//! change, a dead letter); then the job it asks for is enqueued and a
//! failure announced. [`Engine::commit`] is the one place an execution row
//! changes state.

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use super::executor::Run;
use super::plan::{self, Command, Event, Failure, Job, Machine, Transition};
use super::step::Ran;
use super::{Engine, Enqueued, Result};
use crate::domain::contact::NetChange;
use crate::domain::{Change, ErrorClass, LogStatus, Status};
use crate::queue::{keys, now_ms};
use crate::store::log::NewLog;
use crate::store::{self, execution::Execution};

/// Metric outcome of a step that parked.
const PARKED: &str = "WAITING";

/// A command to settle, with what goes with it into the same transaction.
pub(super) struct Settle<'a> {
    pub(super) cmd: Command,
    pub(super) writes: Writes<'a>,
}

/// What a checkpoint writes besides the execution row.
#[derive(Default)]
pub(super) struct Writes<'a> {
    /// The step that ran, if one did.
    pub(super) ran: Option<Ran<'a>>,
    /// The contact change a step made.
    pub(super) change: Option<Change>,
    /// The action kind a failure is filed under as a dead letter.
    pub(super) dead: Option<&'a str>,
    /// Local steps this run took since its last checkpoint, in order: they
    /// commit with this one, atomically.
    pub(super) earlier: Vec<Earlier<'a>>,
}

/// A local step ([`crate::action::Action::is_local`]) that ran and moved
/// the execution on in memory only. A crash before the checkpoint that
/// carries it loses it whole, and the next run takes it again with the same
/// outcome: it touched nothing outside the transaction.
pub(super) struct Earlier<'a> {
    pub(super) ran: Ran<'a>,
    /// Where the execution stood when it ran: its log row's step and attempt.
    pub(super) step_index: i32,
    pub(super) attempt: i32,
    pub(super) change: Option<Change>,
    /// When it finished.
    pub(super) at: DateTime<Utc>,
}

impl Settle<'_> {
    pub(super) fn bare(cmd: Command) -> Self {
        Settle {
            cmd,
            writes: Writes::default(),
        }
    }

    /// A failure of `e` that no step's log row records (the definition no
    /// longer validates, the contact is gone), filed under `kind`.
    pub(super) fn fail(
        e: &Execution,
        kind: &'static str,
        class: ErrorClass,
        error: String,
    ) -> Self {
        let step = e.current_step_id.as_deref().unwrap_or(kind);
        Settle {
            cmd: Command::Fail(Failure {
                class,
                fingerprint: super::step::fingerprint(e, step, class, &error),
                message: error,
            }),
            writes: Writes {
                dead: Some(kind),
                ..Writes::default()
            },
        }
    }
}

impl Engine {
    /// [`Engine::settle`] for a command that ends the run.
    pub(super) async fn settle_end(&self, e: &mut Execution, s: Settle<'_>) -> Result<Run> {
        Ok(self.settle(e, s).await?.unwrap_or(Run::Interrupted))
    }

    /// Plans `s`'s command, commits it with what goes with it, then does
    /// what the committed transition asks: enqueue its job, announce a
    /// failure. `None` while the run goes on.
    pub(super) async fn settle(&self, e: &mut Execution, s: Settle<'_>) -> Result<Option<Run>> {
        let Settle { cmd, writes } = s;
        let t = plan::plan(&Machine::of(e), cmd, Utc::now())?;
        let job = t.job;
        if !self.commit(e, t, &writes).await? {
            return Ok(Some(Run::Interrupted));
        }
        let earlier = writes.earlier.iter().map(|x| &x.ran);
        for ran in earlier.chain(&writes.ran) {
            let outcome = ran.log.map_or(PARKED, LogStatus::as_str);
            self.observe_step(ran, outcome);
            debug!(step_id = %ran.step.id, action = ran.step.action.kind(), outcome, "step settled");
        }
        self.enqueue_job(e, job).await?;
        self.observe_settled(e);
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
    /// letter of `s`: one statement (group-committed with other
    /// executions' checkpoints when `commit_lanes` is set), unless there
    /// is a dead letter to write or settle (then a transaction of its
    /// own). `false` (nothing written) when the row changed underneath.
    async fn commit(&self, e: &mut Execution, t: Transition, s: &Writes<'_>) -> Result<bool> {
        // A retry settles the dead letters of the failure it retries.
        if s.dead.is_none() && t.event() != Event::Retry {
            // One statement, alone or in a group.
            let (logs, change) = rows(e, t, s);
            return Ok(store::checkpoint::commit_in(&self.group, e, &logs, change.as_ref()).await?);
        }
        let mut tx = self.pool.begin().await.map_err(store::Error::from)?;
        if !write(&mut tx, e, t, s).await? {
            return Ok(false);
        }
        tx.commit().await.map_err(store::Error::from)?;
        Ok(true)
    }

    /// Commits `t` into `e`, with nothing else to write. `false` when the
    /// row changed underneath.
    pub(super) async fn commit_bare(&self, e: &mut Execution, t: Transition) -> Result<bool> {
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

    /// Enqueues the job a committed transition asks for; a refusal (arq's
    /// dedupe) is logged: the maintenance loop moves the row on.
    pub(crate) async fn enqueue_job(&self, e: &Execution, job: Job) -> Result<()> {
        let at = match job {
            Job::None => return Ok(()),
            Job::Now => None,
            // Beyond the horizon the row is the timer: the pump enqueues
            // the job as its time comes within it.
            Job::At(t) if t > Utc::now() + self.settings.timer_horizon => {
                debug!(resume_at = %t, "wake-up left to the timer pump");
                return Ok(());
            }
            Job::At(t) => Some(t),
        };
        if self.enqueue_run(e, at).await? == Enqueued::Refused {
            warn!(execution_id = %e.id, job_id = %super::job_id(e), "job id taken; maintenance will enqueue a fresh one");
        }
        Ok(())
    }
}

/// Writes `t` into `e` with what goes with it on `conn`, a transaction the
/// caller commits (a bulk operation's batch writes many rows and its
/// progress in one). `false` (nothing written) when the row changed
/// underneath.
pub(super) async fn write(
    conn: &mut sqlx::PgConnection,
    e: &mut Execution,
    t: Transition,
    s: &Writes<'_>,
) -> Result<bool> {
    let resolve = t.event() == Event::Retry;
    let (logs, change) = rows(e, t, s);
    if !store::checkpoint::commit(conn, e, &logs, change.as_ref()).await? {
        return Ok(false);
    }
    // Only in a transaction (see `Engine::commit`): these go or stay with
    // the row.
    if let Some(kind) = s.dead {
        let error = e.error.as_deref().unwrap_or("");
        store::log::insert_dead_letter(conn, e, kind, error).await?;
    }
    if resolve {
        store::failure::resolve_dead_letters(conn, e.id).await?;
    }
    Ok(true)
}

/// The log rows and net contact change of `s`, with `t` applied to `e`.
fn rows<'a>(
    e: &mut Execution,
    t: Transition,
    s: &'a Writes<'_>,
) -> (Vec<NewLog<'a>>, Option<NetChange>) {
    let earlier = s.earlier.iter().filter_map(|x| {
        Some(log_row(
            e,
            (x.step_index, x.attempt, x.at),
            &x.ran,
            x.ran.log?,
        ))
    });
    let current = s.ran.as_ref().and_then(|r| {
        Some(log_row(
            e,
            (e.current_step_index, e.attempt, Utc::now()),
            r,
            r.log?,
        ))
    });
    let logs: Vec<NewLog> = earlier.chain(current).collect();
    let changes = s.earlier.iter().filter_map(|x| x.change.as_ref());
    let change = NetChange::of(changes.chain(&s.change));
    t.apply_to(e);
    (logs, change)
}

/// The log row of the step `r` of `e`, which ran at `step_index` in
/// `attempt` and finished at `completed_at`.
fn log_row<'a>(
    e: &Execution,
    (step_index, attempt, completed_at): (i32, i32, DateTime<Utc>),
    r: &'a Ran<'_>,
    status: LogStatus,
) -> NewLog<'a> {
    NewLog {
        execution_id: e.id,
        workflow_id: e.workflow_id,
        workflow_version: e.workflow_version,
        account_id: e.account_id,
        step_index,
        step_id: &r.step.id,
        action_type: r.step.action.kind(),
        attempt,
        status,
        config: &r.step.raw,
        response: r.response.as_ref(),
        error: r.error.as_deref(),
        error_class: r.class,
        fingerprint: r.fingerprint.as_deref(),
        started_at: r.began.started_at,
        completed_at,
        exec_ms: r.began.exec_ms(completed_at),
    }
}
