//! The status table written out once more by hand; one test per
//! transition, each on the whole value it produces, in [`transition`].

use chrono::{DateTime, TimeZone, Utc};

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

// === fixtures of the transition tests ===

pub(super) fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

/// A fresh QUEUED execution at step 0 (`welcome`), job 0.
pub(super) fn queued() -> Machine {
    Machine {
        status: S::Queued,
        step_index: 0,
        step_id: Some("welcome".into()),
        attempt: 1,
        first_attempt: 1,
        waiting_reason: None,
        resume_at: None,
        next_attempt_at: None,
        lease_owner: None,
        lease_expires_at: None,
        error: None,
        started_at: None,
        completed_at: None,
        step_state: None,
        wake_seq: 0,
        error_class: None,
        fingerprint: None,
        step_started_at: None,
    }
}

/// RUNNING under `w1`'s lease until `at(300)`, started at `at(0)`.
pub(super) fn running() -> Machine {
    Machine {
        status: S::Running,
        lease_owner: Some("w1".into()),
        lease_expires_at: Some(at(300)),
        started_at: Some(at(0)),
        ..queued()
    }
}

/// A failure of `class` with `message`, fingerprint `f000...`.
pub(super) fn failure(class: ErrorClass, message: &str) -> Failure {
    Failure {
        class,
        message: message.into(),
        fingerprint: "f000000000000000".into(),
    }
}

pub(super) fn claim(owner: &str) -> Command {
    Command::Claim {
        owner: owner.into(),
        lease_until: at(400),
    }
}

mod failure;
mod transition;
