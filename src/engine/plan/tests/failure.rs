//! The transitions of a failed attempt: back off, hold for the provider,
//! fail; each on the whole value it produces.

use serde_json::json;

use super::super::*;
use super::{at, failure, running};
use Event as E;
use Status as S;

#[test]
fn a_backoff_counts_the_attempt_keeps_the_failure_and_takes_a_deferred_job() {
    let t = plan(
        &running(),
        Command::Backoff {
            at: at(25),
            failure: failure(ErrorClass::RateLimited, "HTTP 429"),
            step_started_at: at(3),
        },
        at(20),
    )
    .unwrap();
    assert_eq!(
        t,
        Transition {
            events: vec![E::Backoff],
            to: Machine {
                status: S::Retrying,
                waiting_reason: Some(RETRY_BACKOFF.into()),
                next_attempt_at: Some(at(25)),
                error: Some("HTTP 429".into()),
                error_class: Some(ErrorClass::RateLimited),
                fingerprint: Some("f000000000000000".into()),
                step_started_at: Some(at(3)),
                attempt: 2,
                lease_owner: None,
                lease_expires_at: None,
                wake_seq: 1,
                ..running()
            },
            output: None,
            job: Job::At(at(25)),
        }
    );
}

#[test]
fn a_hold_waits_for_the_provider_without_spending_an_attempt_or_the_steps_state() {
    let from = Machine {
        attempt: 2,
        step_state: Some(json!({"state": {"polls": 3}})),
        ..running()
    };
    let t = plan(
        &from,
        Command::Hold {
            until: at(50),
            failure: failure(ErrorClass::ProviderUnavailable, "breaker open"),
        },
        at(20),
    )
    .unwrap();
    assert_eq!(
        t,
        Transition {
            events: vec![E::Park],
            to: Machine {
                status: S::Waiting,
                waiting_reason: Some(PROVIDER_UNAVAILABLE.into()),
                resume_at: Some(at(50)),
                error: Some("breaker open".into()),
                error_class: Some(ErrorClass::ProviderUnavailable),
                fingerprint: Some("f000000000000000".into()),
                lease_owner: None,
                lease_expires_at: None,
                wake_seq: 1,
                ..from.clone()
            },
            output: None,
            job: Job::At(at(50)),
        }
    );
}

#[test]
fn a_failure_is_final_with_its_error_and_no_job() {
    let t = plan(
        &running(),
        Command::Fail(failure(ErrorClass::Permanent, "HTTP 404")),
        at(20),
    )
    .unwrap();
    assert_eq!(
        t,
        Transition {
            events: vec![E::Fail],
            to: Machine {
                status: S::Failed,
                error: Some("HTTP 404".into()),
                error_class: Some(ErrorClass::Permanent),
                fingerprint: Some("f000000000000000".into()),
                completed_at: Some(at(20)),
                lease_owner: None,
                lease_expires_at: None,
                ..running()
            },
            output: None,
            job: Job::None,
        }
    );
}
