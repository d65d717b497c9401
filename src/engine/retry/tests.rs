//! The delay math as properties, and the layering of policies.

use chrono::{Duration as ChronoDuration, TimeZone};
use proptest::prelude::*;

use super::*;

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

fn policy() -> impl Strategy<Value = RetryPolicy> {
    (
        1..=MAX_ATTEMPTS,
        1u64..600_000,
        1u64..7_200_000,
        proptest::option::of(1u64..86_400_000),
    )
        .prop_map(|(n, initial, max, elapsed)| RetryPolicy {
            max_attempts: n,
            initial: Duration::from_millis(initial),
            max: Duration::from_millis(max.max(initial)),
            max_elapsed: elapsed.map(Duration::from_millis),
        })
}

proptest! {
    #[test]
    fn a_retry_never_waits_past_the_cap_nor_runs_past_the_deadline(
        p in policy(),
        tries in 1..MAX_ATTEMPTS,
        unit in 0.0f64..=1.0,
        asked in proptest::option::of(0u64..100_000_000),
        spent in 0i64..100_000,
    ) {
        let started = at(0);
        let now = at(spent);
        let asked = asked.map(Duration::from_millis);
        match p.next(tries, unit, asked, started, now) {
            Next::RetryAt(t) => {
                prop_assert!(tries < p.max_attempts);
                prop_assert!(t >= now);
                let waited = (t - now).to_std().unwrap();
                // Never above the cap, except a Retry-After, itself clamped.
                let bound = p.cap(tries).max(asked.map_or(Duration::ZERO, |a| a.min(p.max)));
                prop_assert!(waited <= bound + Duration::from_millis(1), "{waited:?} > {bound:?}");
                prop_assert!(p.cap(tries) <= p.max);
                if let Some(limit) = p.max_elapsed {
                    prop_assert!(t <= started + ChronoDuration::from_std(limit).unwrap());
                }
            }
            Next::GiveUp(why) => {
                let out_of_time = p
                    .max_elapsed
                    .is_some_and(|l| now >= started + ChronoDuration::from_std(l).unwrap());
                prop_assert!(tries >= p.max_attempts || out_of_time, "{why}");
            }
        }
    }

    #[test]
    fn the_cap_grows_with_each_attempt_until_the_maximum(p in policy(), tries in 1..40i32) {
        prop_assert!(p.cap(tries) <= p.cap(tries + 1));
        prop_assert!(p.cap(tries + 1) <= p.max);
        prop_assert!(p.cap(1) == p.initial.min(p.max));
    }

    #[test]
    fn jitter_spans_the_whole_range_from_zero_to_the_cap(p in policy(), tries in 1..10i32) {
        let p = RetryPolicy { max_attempts: MAX_ATTEMPTS, max_elapsed: None, ..p };
        let low = p.next(tries, 0.0, None, at(0), at(0));
        let high = p.next(tries, 1.0, None, at(0), at(0));
        prop_assert_eq!(low, Next::RetryAt(at(0)));
        let cap = ChronoDuration::from_std(p.cap(tries)).unwrap();
        match high {
            Next::RetryAt(t) => prop_assert!((t - at(0) - cap).num_milliseconds().abs() <= 1),
            other => prop_assert!(false, "{other:?}"),
        }
    }
}

#[test]
fn a_retry_after_is_honoured_up_to_the_maximum_backoff() {
    let p = RetryPolicy {
        max_attempts: 5,
        initial: Duration::from_secs(1),
        max: Duration::from_secs(60),
        max_elapsed: None,
    };
    let wait = |asked: u64| match p.next(1, 0.0, Some(Duration::from_secs(asked)), at(0), at(0)) {
        Next::RetryAt(t) => (t - at(0)).num_seconds(),
        other => panic!("{other:?}"),
    };
    assert_eq!(wait(30), 30);
    assert_eq!(wait(3600), 60, "clamped to max_backoff");
}

#[test]
fn a_round_past_its_max_elapsed_gives_up_and_the_last_try_lands_on_the_deadline() {
    let p = RetryPolicy {
        max_attempts: 50,
        initial: Duration::from_secs(600),
        max: Duration::from_secs(600),
        max_elapsed: Some(Duration::from_secs(900)),
    };
    assert_eq!(p.next(2, 1.0, None, at(0), at(800)), Next::RetryAt(at(900)));
    match p.next(3, 1.0, None, at(0), at(900)) {
        Next::GiveUp(why) => assert!(why.contains("max_elapsed 15m"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        p.next(50, 0.5, None, at(0), at(1)),
        Next::GiveUp("after 50 attempts".into())
    );
}

#[test]
fn a_step_overrides_its_types_default_which_overrides_the_engines() {
    let engine = RetryPolicy::default();
    let configured: RetryOverride = "max_attempts=2,max_elapsed=10m".parse().unwrap();
    let policies = RetryPolicies::built_in(engine, &[("webhook", configured)]);
    let webhook = policies.for_step("webhook", None);
    assert_eq!(webhook.max_attempts, 2);
    assert_eq!(
        webhook.initial,
        Duration::from_secs(10),
        "the built-in backoff stays"
    );
    assert_eq!(webhook.max_elapsed, Some(Duration::from_secs(600)));
    let step =
        RetryOverride::parse(&serde_json::json!({"max_attempts": 4, "backoff": "2s"})).unwrap();
    let p = policies.for_step("webhook", Some(&step));
    assert_eq!((p.max_attempts, p.initial), (4, Duration::from_secs(2)));
    assert_eq!(policies.for_step("update_contact", None), engine);
    assert_eq!(policies.for_step("send_sms", None).max_attempts, 6);
}

#[test]
fn bad_overrides_name_the_field() {
    for (spec, field) in [
        ("max_attempts=0", "max_attempts"),
        ("backoff=soon", "backoff"),
        ("backoff=10s,max_backoff=1s", "max_backoff"),
        ("max_elapsed=0s", "max_elapsed"),
        ("tries=3", "unknown key"),
    ] {
        let err = spec.parse::<RetryOverride>().unwrap_err();
        assert!(err.contains(field), "{spec}: {err}");
    }
    let (field, _) = RetryOverride::parse(&serde_json::json!({"max_elapsed": "x"})).unwrap_err();
    assert_eq!(field, "max_elapsed");
}
