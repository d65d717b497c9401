//! One test per transition, each on the whole value it produces.

use serde_json::json;

use super::super::*;
use super::{at, claim, failure, queued, running};
use Event as E;
use Status as S;

#[test]
fn a_claim_takes_the_lease_stamps_the_start_and_clears_the_wait() {
    let t = plan(&queued(), claim("w1"), at(10)).unwrap();
    assert_eq!(
        t,
        Transition {
            events: vec![E::Claim],
            to: Machine {
                status: S::Running,
                lease_owner: Some("w1".into()),
                lease_expires_at: Some(at(400)),
                started_at: Some(at(10)),
                ..queued()
            },
            output: None,
            job: Job::None,
        }
    );
}

#[test]
fn a_claim_of_a_due_wait_passes_through_queued_and_keeps_the_first_start() {
    let waiting = Machine {
        status: S::Waiting,
        waiting_reason: Some("wait".into()),
        resume_at: Some(at(50)),
        step_state: Some(json!({"started_at": "x"})),
        wake_seq: 1,
        started_at: Some(at(0)),
        ..queued()
    };
    let t = plan(&waiting, claim("w2"), at(60)).unwrap();
    assert_eq!(
        t,
        Transition {
            events: vec![E::Due, E::Claim],
            to: Machine {
                status: S::Running,
                waiting_reason: None,
                resume_at: None,
                lease_owner: Some("w2".into()),
                lease_expires_at: Some(at(400)),
                ..waiting.clone()
            },
            output: None,
            job: Job::None,
        }
    );
    assert_eq!(
        plan(&waiting, claim("w2"), at(40)),
        Err(Illegal {
            from: S::Waiting,
            event: E::Claim
        }),
        "not due yet"
    );
}

#[test]
fn a_claim_of_a_due_retry_clears_its_retry_time() {
    let retrying = Machine {
        status: S::Retrying,
        waiting_reason: Some(RETRY_BACKOFF.into()),
        next_attempt_at: Some(at(50)),
        attempt: 2,
        error: Some("503".into()),
        wake_seq: 1,
        ..queued()
    };
    let t = plan(&retrying, claim("w1"), at(50)).unwrap();
    assert_eq!(t.events, [E::Due, E::Claim]);
    assert_eq!(
        t.to,
        Machine {
            status: S::Running,
            waiting_reason: None,
            next_attempt_at: None,
            lease_owner: Some("w1".into()),
            lease_expires_at: Some(at(400)),
            started_at: Some(at(50)),
            ..retrying
        },
        "the attempt and the last error stay"
    );
}

#[test]
fn a_claim_of_a_running_row_needs_a_lapsed_lease_or_one_of_the_claimers_own() {
    let live = running();
    assert_eq!(
        plan(&live, claim("w2"), at(100)),
        Err(Illegal {
            from: S::Running,
            event: E::Claim
        })
    );
    for (who, when) in [("w2", at(301)), ("w1", at(100))] {
        let t = plan(&live, claim(who), when).unwrap();
        assert_eq!(t.events, [E::LeaseExpired, E::Claim]);
        assert_eq!(
            t.to,
            Machine {
                lease_owner: Some(who.into()),
                lease_expires_at: Some(at(400)),
                ..running()
            }
        );
        assert_eq!(t.job, Job::None);
    }
}

#[test]
fn a_step_records_the_output_and_moves_to_the_next_step_afresh() {
    let from = Machine {
        attempt: 3,
        first_attempt: 2,
        error: Some("old".into()),
        error_class: Some(ErrorClass::Timeout),
        fingerprint: Some("f000000000000000".into()),
        step_started_at: Some(at(1)),
        ..running()
    };
    let t = plan(
        &from,
        Command::Advance {
            output: ("welcome".into(), json!({"sent": true})),
            next: Some((1, "pause".into())),
        },
        at(20),
    )
    .unwrap();
    assert_eq!(
        t,
        Transition {
            events: vec![E::Step],
            to: Machine {
                step_index: 1,
                step_id: Some("pause".into()),
                attempt: 1,
                first_attempt: 1,
                error: None,
                ..running()
            },
            output: Some(("welcome".into(), json!({"sent": true}))),
            job: Job::None,
        }
    );
}

#[test]
fn the_last_step_finishes_and_gives_the_lease_back() {
    let t = plan(
        &running(),
        Command::Advance {
            output: ("welcome".into(), json!(1)),
            next: None,
        },
        at(20),
    )
    .unwrap();
    assert_eq!(
        t,
        Transition {
            events: vec![E::Finish],
            to: Machine {
                status: S::Completed,
                completed_at: Some(at(20)),
                lease_owner: None,
                lease_expires_at: None,
                ..running()
            },
            output: Some(("welcome".into(), json!(1))),
            job: Job::None,
        }
    );
    let past_the_end = plan(&running(), Command::Complete, at(20)).unwrap();
    assert_eq!(past_the_end.to, t.to);
    assert_eq!(past_the_end.output, None);
}

#[test]
fn a_park_keeps_the_step_state_releases_and_takes_a_deferred_job() {
    let t = plan(
        &running(),
        Command::Park {
            until: at(3600),
            reason: "wait".into(),
            step_state: json!({"state": 1}),
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
                waiting_reason: Some("wait".into()),
                resume_at: Some(at(3600)),
                step_state: Some(json!({"state": 1})),
                lease_owner: None,
                lease_expires_at: None,
                wake_seq: 1,
                ..running()
            },
            output: None,
            job: Job::At(at(3600)),
        }
    );
}

#[test]
fn a_yield_hands_the_rest_to_a_fresh_job_now() {
    let t = plan(&running(), Command::Yield, at(20)).unwrap();
    assert_eq!(
        t,
        Transition {
            events: vec![E::Yield],
            to: Machine {
                status: S::Queued,
                lease_owner: None,
                lease_expires_at: None,
                wake_seq: 1,
                ..running()
            },
            output: None,
            job: Job::Now,
        }
    );
}

#[test]
fn a_requeue_moves_due_lapsed_and_lost_rows_to_a_fresh_job() {
    let waiting = Machine {
        status: S::Waiting,
        waiting_reason: Some("wait".into()),
        resume_at: Some(at(5)),
        wake_seq: 4,
        ..queued()
    };
    let t = plan(&waiting, Command::Requeue, at(20)).unwrap();
    assert_eq!(
        t,
        Transition {
            events: vec![E::Due],
            to: Machine {
                status: S::Queued,
                waiting_reason: None,
                wake_seq: 5,
                ..waiting
            },
            output: None,
            job: Job::Now,
        }
    );
    let lost = plan(&queued(), Command::Requeue, at(20)).unwrap();
    assert_eq!(lost.events, []);
    assert_eq!(
        lost.to,
        Machine {
            wake_seq: 1,
            ..queued()
        }
    );
    let lapsed = plan(&running(), Command::Requeue, at(301)).unwrap();
    assert_eq!(lapsed.events, [E::LeaseExpired]);
    assert_eq!(
        lapsed.to,
        Machine {
            status: S::Queued,
            lease_owner: None,
            lease_expires_at: None,
            wake_seq: 1,
            ..running()
        }
    );
    assert!(
        plan(&running(), Command::Requeue, at(100)).is_err(),
        "live lease"
    );
}

#[test]
fn a_retry_is_a_new_attempt_with_the_whole_policy_and_a_fresh_job() {
    let failed = Machine {
        status: S::Failed,
        attempt: 3,
        first_attempt: 1,
        error: Some("HTTP 404".into()),
        error_class: Some(ErrorClass::Permanent),
        fingerprint: Some("f000000000000000".into()),
        step_started_at: Some(at(2)),
        completed_at: Some(at(20)),
        step_state: Some(json!({"state": 1})),
        wake_seq: 2,
        ..queued()
    };
    let t = plan(&failed, Command::Retry, at(30)).unwrap();
    assert_eq!(
        t,
        Transition {
            events: vec![E::Retry],
            to: Machine {
                status: S::Queued,
                attempt: 4,
                first_attempt: 4,
                error: None,
                error_class: None,
                fingerprint: None,
                step_started_at: None,
                completed_at: None,
                step_state: None,
                wake_seq: 3,
                ..failed.clone()
            },
            output: None,
            job: Job::Now,
        }
    );
    assert!(plan(&queued(), Command::Retry, at(30)).is_err());
}

#[test]
fn a_cancel_is_final_releases_and_clears_both_timers() {
    let waiting = Machine {
        status: S::Waiting,
        waiting_reason: Some("wait".into()),
        resume_at: Some(at(3600)),
        wake_seq: 1,
        ..queued()
    };
    let t = plan(&waiting, Command::Cancel, at(30)).unwrap();
    assert_eq!(
        t,
        Transition {
            events: vec![E::Cancel],
            to: Machine {
                status: S::Cancelled,
                waiting_reason: Some(CANCELLED.into()),
                error_class: Some(ErrorClass::Cancelled),
                resume_at: None,
                completed_at: Some(at(30)),
                ..waiting.clone()
            },
            output: None,
            job: Job::None,
        }
    );
    let done = Machine {
        status: S::Completed,
        ..queued()
    };
    assert_eq!(
        plan(&done, Command::Cancel, at(30)),
        Err(Illegal {
            from: S::Completed,
            event: E::Cancel
        })
    );
}

#[test]
fn a_fresh_job_id_comes_with_every_job_and_only_with_one() {
    let commands = [
        claim("w1"),
        Command::Advance {
            output: ("welcome".into(), json!(1)),
            next: Some((1, "b".into())),
        },
        Command::Complete,
        Command::Park {
            until: at(90),
            reason: "wait".into(),
            step_state: json!({}),
        },
        Command::Backoff {
            at: at(90),
            failure: failure(ErrorClass::Transient, "e"),
            step_started_at: at(0),
        },
        Command::Hold {
            until: at(90),
            failure: failure(ErrorClass::ProviderUnavailable, "e"),
        },
        Command::Fail(failure(ErrorClass::Permanent, "e")),
        Command::Yield,
        Command::Requeue,
        Command::Retry,
        Command::Cancel,
    ];
    let mut seen = 0;
    for from in ALL_STATUSES {
        let m = Machine {
            status: from,
            resume_at: Some(at(0)),
            next_attempt_at: Some(at(0)),
            ..running()
        };
        for cmd in commands.clone() {
            let Ok(t) = plan(&m, cmd.clone(), at(1000)) else {
                continue;
            };
            seen += 1;
            let bumped = t.to.wake_seq == m.wake_seq + 1;
            assert_eq!(
                bumped,
                t.job != Job::None,
                "{from} {cmd:?}: a job iff a new id"
            );
            if t.to.status != S::Running {
                assert_eq!(t.to.lease_owner, None, "{from} {cmd:?} releases");
                assert_eq!(t.to.lease_expires_at, None, "{from} {cmd:?} releases");
            }
        }
    }
    assert!(seen >= 15, "{seen}");
}
