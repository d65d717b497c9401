//! Where an execution is ([`Status`]) and what happens to it ([`Event`]).
//! Which event is legal in which status is the engine's to decide
//! (`engine::plan`).

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_from_their_stored_spelling() {
        for s in ALL_STATUSES {
            assert_eq!(s.as_str().parse::<Status>(), Ok(s));
        }
        assert!("DONE".parse::<Status>().is_err());
    }
}
