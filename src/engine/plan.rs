//! The execution state machine, pure: what a command does to an execution
//! is one [`Transition`] value (the events taken, every column the state
//! machine owns as it will be, the step output to record, the job to
//! enqueue), computed here and applied by the executor in one place
//! (DESIGN.md "Execution state machine"). An illegal command is an error.
//!
//! ```text
//!              Claim              Finish
//!   QUEUED ──────────> RUNNING ───────────> COMPLETED
//!     ^  ^  ^            │ │ │ │
//!     │  │  │  Park      │ │ │ │ Fail (permanent, or retries exhausted)
//!     │  │  │  ┌─────────┘ │ │ └──────────> FAILED ──┐
//!     │  │  │  v           │ │                       │ Retry (manual / bulk)
//!     │  │  WAITING  Due   │ │ Backoff               │
//!     │  │  (resume_at) ───┘ v                       │
//!     │  └──── Due ──── RETRYING (next_attempt_at)   │
//!     │                                              │
//!     └─── Yield / LeaseExpired (from RUNNING) ──────┴─ (back to QUEUED)
//!
//!   QUEUED | RUNNING | WAITING | RETRYING ──Cancel──> CANCELLED
//! ```
//!
//! `Yield` (a run hands the rest of its steps to a fresh job when its time
//! budget is spent) and `LeaseExpired` (recovery of a row whose worker died)
//! both return RUNNING to QUEUED; `Step` (a checkpoint between two actions)
//! keeps RUNNING.
//!
//! Two rules hold for every transition, and the tests check them for each:
//! a transition that needs a job (a park, a backoff, a hand-over, a
//! recovery, a retry) takes the next job id (`wake_seq + 1`) and no other
//! does; a transition that leaves RUNNING gives the lease back.

use chrono::{DateTime, Utc};
use serde_json::Value as Json;

pub use crate::domain::{ALL_EVENTS, ALL_STATUSES, ErrorClass, Event, Status};
use crate::store::execution::Execution;

/// `waiting_reason` of a RETRYING execution.
pub const RETRY_BACKOFF: &str = "retry_backoff";
/// `waiting_reason` of a CANCELLED execution.
pub const CANCELLED: &str = "cancelled";
/// `waiting_reason` of an execution held while its provider's breaker is
/// open.
pub const PROVIDER_UNAVAILABLE: &str = "provider_unavailable";

/// An event that may not happen in a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition: {event:?} while {from}")]
pub struct Illegal {
    /// The status the execution was in.
    pub from: Status,
    /// The event refused.
    pub event: Event,
}

/// The status after `event` happens in `from`.
///
/// # Errors
/// [`Illegal`] for every pair the state machine does not allow.
pub fn transition(from: Status, event: Event) -> Result<Status, Illegal> {
    use Event as E;
    use Status as S;
    let to = match (from, event) {
        (S::Queued, E::Claim) => S::Running,
        (S::Running, E::Step) => S::Running,
        (S::Running, E::Finish) => S::Completed,
        (S::Running, E::Park) => S::Waiting,
        (S::Running, E::Backoff) => S::Retrying,
        (S::Running, E::Fail) => S::Failed,
        (S::Running, E::Yield | E::LeaseExpired) => S::Queued,
        (S::Waiting | S::Retrying, E::Due) => S::Queued,
        (S::Failed, E::Retry) => S::Queued,
        (S::Queued | S::Running | S::Waiting | S::Retrying, E::Cancel) => S::Cancelled,
        _ => return Err(Illegal { from, event }),
    };
    Ok(to)
}

/// The statuses in which `event` is legal.
pub fn sources(event: Event) -> Vec<Status> {
    ALL_STATUSES
        .into_iter()
        .filter(|s| transition(*s, event).is_ok())
        .collect()
}

/// The columns of an execution the state machine owns. A transition
/// produces all of them, so no caller writes one by hand.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// Where it is.
    pub status: Status,
    /// The step to run next.
    pub step_index: i32,
    /// That step's id.
    pub step_id: Option<String>,
    /// Attempt at the current step, from 1.
    pub attempt: i32,
    /// The attempt the current round of the step started at.
    pub first_attempt: i32,
    /// Why it is not moving.
    pub waiting_reason: Option<String>,
    /// When a WAITING execution resumes.
    pub resume_at: Option<DateTime<Utc>>,
    /// When a RETRYING execution tries again.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The worker holding the lease.
    pub lease_owner: Option<String>,
    /// When that lease lapses.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Last error.
    pub error: Option<String>,
    /// First claimed.
    pub started_at: Option<DateTime<Utc>>,
    /// Reached a final status.
    pub completed_at: Option<DateTime<Utc>>,
    /// In-flight state of a parked step.
    pub step_state: Option<Json>,
    /// Number of the current job.
    pub wake_seq: i32,
    /// Class of the last failure.
    pub error_class: Option<ErrorClass>,
    /// Fingerprint of the last failure.
    pub fingerprint: Option<String>,
    /// When the current round of attempts of the step started.
    pub step_started_at: Option<DateTime<Utc>>,
}

impl Machine {
    /// The state-machine columns of `e`.
    pub fn of(e: &Execution) -> Machine {
        Machine {
            status: e.status,
            step_index: e.current_step_index,
            step_id: e.current_step_id.clone(),
            attempt: e.attempt,
            first_attempt: e.first_attempt,
            waiting_reason: e.waiting_reason.clone(),
            resume_at: e.resume_at,
            next_attempt_at: e.next_attempt_at,
            lease_owner: e.lease_owner.clone(),
            lease_expires_at: e.lease_expires_at,
            error: e.error.clone(),
            started_at: e.started_at,
            completed_at: e.completed_at,
            step_state: e.step_state.as_ref().map(|s| s.0.clone()),
            wake_seq: e.wake_seq,
            error_class: e.error_class,
            fingerprint: e.fingerprint.clone(),
            step_started_at: e.step_started_at,
        }
    }

    fn record(&mut self, f: Failure) {
        self.error = Some(f.message);
        self.error_class = Some(f.class);
        self.fingerprint = Some(f.fingerprint);
    }

    fn clear_failure(&mut self) {
        self.error = None;
        self.error_class = None;
        self.fingerprint = None;
        self.step_started_at = None;
    }
}

/// A failure as the execution records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Its class.
    pub class: ErrorClass,
    /// What went wrong.
    pub message: String,
    /// What groups it with like failures.
    pub fingerprint: String,
}

/// What is asked of an execution.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// A worker takes it: `owner` holds the lease until `lease_until`.
    Claim {
        /// The worker's name.
        owner: String,
        /// When the lease lapses.
        lease_until: DateTime<Utc>,
    },
    /// The current step succeeded with `output`; run `next` (index and id)
    /// or, with none, finish.
    Advance {
        /// The step's id and what it returned, recorded in the context.
        output: (String, Json),
        /// The step that follows, if any.
        next: Option<(i32, String)>,
    },
    /// No step is left to run.
    Complete,
    /// The step waits until `until`, keeping `step_state`.
    Park {
        /// When to resume.
        until: DateTime<Utc>,
        /// Why (`wait`, `arq_job`).
        reason: String,
        /// The step's state and when it first started.
        step_state: Json,
    },
    /// A retryable failure: try the step again at `at`.
    Backoff {
        /// When.
        at: DateTime<Utc>,
        /// The failure.
        failure: Failure,
        /// When the round of attempts started.
        step_started_at: DateTime<Utc>,
    },
    /// The provider's breaker is open: wait until `until` without spending
    /// an attempt, keeping the step's state.
    Hold {
        /// When the provider may be called again.
        until: DateTime<Utc>,
        /// Why (class `provider_unavailable`).
        failure: Failure,
    },
    /// Failed for good.
    Fail(Failure),
    /// The run spent its budget: hand the rest to a fresh job.
    Yield,
    /// Recovery: a due, lapsed or lost execution goes back to the queue.
    Requeue,
    /// A user restarts a failed execution as a new attempt.
    Retry,
    /// A user cancels it.
    Cancel,
}

/// When the job that moves an execution on must run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// No job: the run goes on, or nothing more happens.
    None,
    /// A job now.
    Now,
    /// A job deferred until then.
    At(DateTime<Utc>),
}

/// One transition: what it did and everything it changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The events taken, in order (claiming a due wait is `Due`, `Claim`).
    pub events: Vec<Event>,
    /// The state-machine columns after it.
    pub to: Machine,
    /// A finished step's output, recorded in the context under its id.
    pub output: Option<(String, Json)>,
    /// The job to enqueue once it is committed.
    pub job: Job,
}

impl Transition {
    /// Writes the transition into `e`: the one place an execution's state
    /// changes.
    pub fn apply_to(self, e: &mut Execution) {
        let m = self.to;
        e.status = m.status;
        e.current_step_index = m.step_index;
        e.current_step_id = m.step_id;
        e.attempt = m.attempt;
        e.first_attempt = m.first_attempt;
        e.waiting_reason = m.waiting_reason;
        e.resume_at = m.resume_at;
        e.next_attempt_at = m.next_attempt_at;
        e.lease_owner = m.lease_owner;
        e.lease_expires_at = m.lease_expires_at;
        e.error = m.error;
        e.started_at = m.started_at;
        e.completed_at = m.completed_at;
        e.step_state = m.step_state.map(sqlx::types::Json);
        e.wake_seq = m.wake_seq;
        e.error_class = m.error_class;
        e.fingerprint = m.fingerprint;
        e.step_started_at = m.step_started_at;
        if let Some((step, output)) = self.output {
            match &mut e.context.0 {
                Json::Object(ctx) => {
                    ctx.insert(step, output);
                }
                other => *other = Json::Object([(step, output)].into_iter().collect()),
            }
        }
    }

    /// The last event taken.
    pub fn event(&self) -> Event {
        // Every transition takes at least one event but a requeue of a
        // QUEUED row, which is a recovery, not a run's end.
        self.events.last().copied().unwrap_or(Event::Due)
    }
}

/// What `cmd` does to an execution in `from` at `now`.
///
/// # Errors
/// [`Illegal`] when the command may not happen now: a claim of a row that
/// is final, not due, or leased by another live worker; a requeue of a row
/// whose lease is live; any event the status table refuses.
pub fn plan(from: &Machine, cmd: Command, now: DateTime<Utc>) -> Result<Transition, Illegal> {
    let mut to = from.clone();
    let mut output = None;
    let mut job = Job::None;
    let illegal = |event| Illegal {
        from: from.status,
        event,
    };
    let lapsed = from.lease_expires_at.is_none_or(|t| t < now);
    let due = |t: Option<DateTime<Utc>>| t.is_some_and(|t| t <= now);
    let events = match cmd {
        Command::Claim { owner, lease_until } => {
            let events = match from.status {
                Status::Queued => vec![Event::Claim],
                Status::Waiting if due(from.resume_at) => vec![Event::Due, Event::Claim],
                Status::Retrying if due(from.next_attempt_at) => vec![Event::Due, Event::Claim],
                // A lease of the claimer's own belongs to a run that ended
                // without giving it back: as good as lapsed.
                Status::Running if lapsed || from.lease_owner.as_deref() == Some(&owner) => {
                    vec![Event::LeaseExpired, Event::Claim]
                }
                _ => return Err(illegal(Event::Claim)),
            };
            to.lease_owner = Some(owner);
            to.lease_expires_at = Some(lease_until);
            to.started_at = from.started_at.or(Some(now));
            to.waiting_reason = None;
            to.resume_at = None;
            to.next_attempt_at = None;
            events
        }
        Command::Advance { output: out, next } => {
            output = Some(out);
            to.attempt = 1;
            to.first_attempt = 1;
            to.step_state = None;
            to.clear_failure();
            match next {
                Some((index, id)) => {
                    to.step_index = index;
                    to.step_id = Some(id);
                    vec![Event::Step]
                }
                None => {
                    finish(&mut to, now);
                    vec![Event::Finish]
                }
            }
        }
        Command::Complete => {
            finish(&mut to, now);
            vec![Event::Finish]
        }
        Command::Park {
            until,
            reason,
            step_state,
        } => {
            to.resume_at = Some(until);
            to.waiting_reason = Some(reason);
            to.step_state = Some(step_state);
            job = Job::At(until);
            vec![Event::Park]
        }
        Command::Backoff {
            at,
            failure,
            step_started_at,
        } => {
            to.next_attempt_at = Some(at);
            to.waiting_reason = Some(RETRY_BACKOFF.into());
            to.record(failure);
            to.step_started_at = Some(step_started_at);
            to.attempt += 1;
            job = Job::At(at);
            vec![Event::Backoff]
        }
        Command::Hold { until, failure } => {
            to.resume_at = Some(until);
            to.waiting_reason = Some(PROVIDER_UNAVAILABLE.into());
            to.record(failure);
            job = Job::At(until);
            vec![Event::Park]
        }
        Command::Fail(failure) => {
            to.record(failure);
            to.completed_at = Some(now);
            to.waiting_reason = None;
            vec![Event::Fail]
        }
        Command::Yield => {
            job = Job::Now;
            vec![Event::Yield]
        }
        Command::Requeue => {
            let events = match from.status {
                // Its job finished without running it, expired or was lost
                // with Redis: its id may be taken by a result.
                Status::Queued => vec![],
                Status::Waiting | Status::Retrying => vec![Event::Due],
                Status::Running if lapsed => vec![Event::LeaseExpired],
                _ => return Err(illegal(Event::Due)),
            };
            to.waiting_reason = None;
            job = Job::Now;
            events
        }
        Command::Retry => {
            to.attempt += 1;
            to.first_attempt = to.attempt;
            to.clear_failure();
            to.completed_at = None;
            to.waiting_reason = None;
            to.step_state = None;
            job = Job::Now;
            vec![Event::Retry]
        }
        Command::Cancel => {
            to.completed_at = Some(now);
            to.waiting_reason = Some(CANCELLED.into());
            to.error_class = Some(ErrorClass::Cancelled);
            to.fingerprint = None;
            to.resume_at = None;
            to.next_attempt_at = None;
            vec![Event::Cancel]
        }
    };
    for event in &events {
        to.status = transition(to.status, *event)?;
    }
    // The two rules of every transition, kept here rather than by each:
    // only a RUNNING row holds a lease, and a job always gets the next id.
    if to.status != Status::Running {
        to.lease_owner = None;
        to.lease_expires_at = None;
    }
    if job != Job::None {
        // The old job, if it still runs, finds a row that is not its own
        // and leaves it alone.
        to.wake_seq = from.wake_seq + 1;
    }
    Ok(Transition {
        events,
        to,
        output,
        job,
    })
}

fn finish(to: &mut Machine, now: DateTime<Utc>) {
    to.completed_at = Some(now);
    to.waiting_reason = None;
}

#[cfg(test)]
mod tests;
