//! The execution state machine: one pure function decides every transition
//! (DESIGN.md "Execution state machine"); an illegal one is an error.
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

use std::fmt;
use std::str::FromStr;

/// Where an execution is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Waiting for a worker.
    Queued,
    /// A worker holds the lease and runs steps.
    Running,
    /// Parked on a wait or an external job until `resume_at`.
    Waiting,
    /// Parked after a transient error until `next_attempt_at`.
    Retrying,
    /// Every step done (or a goal / end reached).
    Completed,
    /// A permanent error, or retries exhausted.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

/// All statuses, for exhaustive tests and API validation.
pub const ALL_STATUSES: [Status; 7] = [
    Status::Queued,
    Status::Running,
    Status::Waiting,
    Status::Retrying,
    Status::Completed,
    Status::Failed,
    Status::Cancelled,
];

impl Status {
    /// The spelling stored in PostgreSQL and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "QUEUED",
            Status::Running => "RUNNING",
            Status::Waiting => "WAITING",
            Status::Retrying => "RETRYING",
            Status::Completed => "COMPLETED",
            Status::Failed => "FAILED",
            Status::Cancelled => "CANCELLED",
        }
    }

    /// Whether nothing more will happen without a manual retry.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ALL_STATUSES
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown status `{s}`"))
    }
}

/// A stored status this engine cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status `{0}`")]
pub struct UnknownStatus(pub String);

/// How the store reads the column: a value it cannot read is an error.
impl TryFrom<String> for Status {
    type Error = UnknownStatus;
    fn try_from(s: String) -> Result<Self, UnknownStatus> {
        s.parse().map_err(|_| UnknownStatus(s))
    }
}

/// What happens to an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A worker takes it.
    Claim,
    /// One action finished; the next one follows in the same run.
    Step,
    /// The last action finished, or a goal / end step was reached.
    Finish,
    /// A wait or an external job: park until a time.
    Park,
    /// A transient error with attempts left: retry after a backoff.
    Backoff,
    /// A permanent error, or a transient one with no attempts left.
    Fail,
    /// Its resume / retry time came.
    Due,
    /// Its run spent its time budget and hands over to a fresh job.
    Yield,
    /// Its worker's lease ran out (the worker died).
    LeaseExpired,
    /// A user cancelled it.
    Cancel,
    /// A user (or bulk retry) restarts a failed execution.
    Retry,
}

/// All events, for exhaustive tests.
pub const ALL_EVENTS: [Event; 11] = [
    Event::Claim,
    Event::Step,
    Event::Finish,
    Event::Park,
    Event::Backoff,
    Event::Fail,
    Event::Due,
    Event::Yield,
    Event::LeaseExpired,
    Event::Cancel,
    Event::Retry,
];

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

#[cfg(test)]
mod tests {
    use super::*;
    use Event as E;
    use Status as S;

    /// The legal transitions of DESIGN.md, written out once more by hand.
    const LEGAL: &[(Status, Event, Status)] = &[
        (S::Queued, E::Claim, S::Running),
        (S::Running, E::Step, S::Running),
        (S::Running, E::Finish, S::Completed),
        (S::Running, E::Park, S::Waiting),
        (S::Running, E::Backoff, S::Retrying),
        (S::Running, E::Fail, S::Failed),
        (S::Running, E::Yield, S::Queued),
        (S::Running, E::LeaseExpired, S::Queued),
        (S::Waiting, E::Due, S::Queued),
        (S::Retrying, E::Due, S::Queued),
        (S::Failed, E::Retry, S::Queued),
        (S::Queued, E::Cancel, S::Cancelled),
        (S::Running, E::Cancel, S::Cancelled),
        (S::Waiting, E::Cancel, S::Cancelled),
        (S::Retrying, E::Cancel, S::Cancelled),
    ];

    #[test]
    fn every_legal_transition_lands_where_the_design_says() {
        for &(from, event, to) in LEGAL {
            assert_eq!(transition(from, event), Ok(to), "{from} --{event:?}-->");
        }
    }

    #[test]
    fn every_other_pair_is_illegal() {
        let mut illegal = 0;
        for from in ALL_STATUSES {
            for event in ALL_EVENTS {
                if LEGAL.iter().any(|&(f, e, _)| f == from && e == event) {
                    continue;
                }
                assert_eq!(transition(from, event), Err(Illegal { from, event }));
                illegal += 1;
            }
        }
        assert_eq!(illegal, ALL_STATUSES.len() * ALL_EVENTS.len() - LEGAL.len());
    }

    #[test]
    fn final_statuses_accept_nothing_but_a_retry_of_a_failure() {
        for from in [S::Completed, S::Cancelled] {
            assert!(
                ALL_EVENTS.iter().all(|e| transition(from, *e).is_err()),
                "{from}"
            );
        }
        assert_eq!(sources(E::Retry), [S::Failed]);
        assert_eq!(
            sources(E::Cancel),
            [S::Queued, S::Running, S::Waiting, S::Retrying]
        );
    }

    #[test]
    fn statuses_parse_from_their_stored_spelling() {
        for s in ALL_STATUSES {
            assert_eq!(s.as_str().parse::<Status>(), Ok(s));
        }
        assert!("DONE".parse::<Status>().is_err());
    }
}
