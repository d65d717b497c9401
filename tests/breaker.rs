//! Circuit breakers on a real Redis: the state machine with a clock of the
//! test's own, then end to end with two `flowpilot worker` processes, 1,000
//! webhook sends and a local provider that goes down for a while.

mod common;

use flowpilot::queue::{Admission, BreakerPolicy, BreakerState, Client, Serializer};

const POLICY: BreakerPolicy = BreakerPolicy {
    failure_permille: 500,
    min_calls: 10,
    window_ms: 10_000,
    open_ms: 5_000,
    probes: 2,
    spacing_ms: 100,
};

/// What the breaker of `key` says to a call at `now`.
async fn admit_at(client: &Client, prefix: &str, key: &str, now: i64) -> Admission {
    client
        .breaker_admit(prefix, key, &POLICY, now)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_breaker_opens_on_its_failure_ratio_refuses_on_a_ramped_schedule_probes_and_closes() {
    let client = common::client(Serializer::Pickle).await;
    let prefix = common::unique("breaker");
    let key = "webhook:crm.test:443";
    let admit = |now| admit_at(&client, &prefix, key, now);
    let report = |now, ok, probe| {
        let client = client.clone();
        let prefix = prefix.clone();
        async move {
            client
                .breaker_report(&prefix, key, &POLICY, now, ok, probe)
                .await
                .unwrap()
        }
    };
    let t0 = 1_800_000_000_000i64;
    // Nine failures out of nine: below min_calls, still closed.
    for i in 0..9 {
        assert_eq!(admit(t0 + i).await, Admission::Pass);
        assert_eq!(report(t0 + i, false, false).await, BreakerState::Closed);
    }
    // The tenth call, a success: 9 of 10 failed, it opens.
    assert_eq!(report(t0 + 9, true, false).await, BreakerState::Open);
    // Listed as not closed (from the index of opened breakers, no scan).
    let listed = client.breakers_not_closed(&prefix).await.unwrap();
    assert_eq!(listed, [(key.to_owned(), BreakerState::Open)]);
    // Back to closed after a successful probe, with a fresh window.
    let t0 = t0 + 9 + 5_000;
    assert_eq!(admit(t0).await, Admission::Probe);
    assert_eq!(report(t0, true, true).await, BreakerState::Closed);
    // No longer listed, and out of the index.
    assert!(
        client
            .breakers_not_closed(&prefix)
            .await
            .unwrap()
            .is_empty()
    );
    let mut raw = common::raw().await;
    let index = flowpilot::queue::keys::breakers_opened(&prefix);
    assert_eq!(
        redis::AsyncCommands::zcard::<_, u64>(&mut raw, &index)
            .await
            .unwrap(),
        0
    );
    // Successes keep the ratio under half: still closed.
    for i in 1..12 {
        assert_eq!(report(t0 + i, true, false).await, BreakerState::Closed);
    }
    for i in 12..21 {
        assert_eq!(report(t0 + i, false, false).await, BreakerState::Closed);
    }
    // Failures past the window do not count: 12 s later the window holds
    // only what comes now.
    let t1 = t0 + 12_000;
    for i in 0..9 {
        assert_eq!(report(t1 + i, false, false).await, BreakerState::Closed);
    }
    assert_eq!(
        report(t1 + 9, false, false).await,
        BreakerState::Open,
        "10 of 10 failed"
    );
    // Open: refused, each on a slot 100 ms after the last, from open_until.
    let open_until = t1 + 9 + 5_000;
    let mut slots = Vec::new();
    for i in 0..3 {
        match admit(t1 + 100 + i).await {
            Admission::Refused { retry_in_ms } => slots.push(t1 + 100 + i + retry_in_ms as i64),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(slots, [open_until, open_until + 100, open_until + 200]);
    // Half-open at open_until: two probes, the third call is refused.
    assert_eq!(admit(open_until).await, Admission::Probe);
    assert_eq!(admit(open_until + 1).await, Admission::Probe);
    assert!(matches!(
        admit(open_until + 2).await,
        Admission::Refused { .. }
    ));
    // A failed probe opens it again; the schedule goes on after the slots
    // already given (no two calls share a slot).
    assert_eq!(
        report(open_until + 10, false, true).await,
        BreakerState::Open
    );
    match admit(open_until + 20).await {
        Admission::Refused { retry_in_ms } => {
            assert_eq!(
                open_until + 20 + retry_in_ms as i64,
                open_until + 10 + 5_000
            )
        }
        other => panic!("{other:?}"),
    }
    // Next half-open: a successful probe closes it; calls pass again.
    let t2 = open_until + 10 + 5_000;
    assert_eq!(admit(t2).await, Admission::Probe);
    assert_eq!(report(t2 + 5, true, true).await, BreakerState::Closed);
    assert_eq!(admit(t2 + 6).await, Admission::Pass);
    // A probe that never reports (its worker died) is forgotten after an
    // open period.
    for i in 0..10 {
        report(t2 + 100 + i, false, false).await;
    }
    let t3 = t2 + 100 + 9 + 5_000;
    assert_eq!(admit(t3).await, Admission::Probe);
    assert_eq!(admit(t3).await, Admission::Probe);
    assert!(matches!(admit(t3 + 1).await, Admission::Refused { .. }));
    assert_eq!(
        admit(t3 + 5_001).await,
        Admission::Probe,
        "stale probes forgotten"
    );
    let mut r = common::raw().await;
    let _: () = redis::AsyncCommands::del(&mut r, flowpilot::queue::keys::breaker(&prefix, key))
        .await
        .unwrap();
}

/// Held work that comes back late (its worker fell behind) must not burst
/// through a breaker that just closed: until the schedule it handed out has
/// run, every call is paced at the ramp, and one over the pace goes to the
/// back of the schedule.
#[tokio::test]
async fn a_closed_breaker_paces_calls_at_its_ramp_until_its_schedule_has_run() {
    let client = common::client(Serializer::Pickle).await;
    let prefix = common::unique("breaker");
    let key = "smtp:mail.test:587";
    let admit = |now| admit_at(&client, &prefix, key, now);
    let t0 = 1_800_000_000_000i64;
    for i in 0..10 {
        client
            .breaker_report(&prefix, key, &POLICY, t0 + i, false, false)
            .await
            .unwrap();
    }
    // Open at t0 + 9: fifty calls held on slots 100 ms apart.
    let open_until = t0 + 9 + 5_000;
    for _ in 0..50 {
        assert!(matches!(admit(t0 + 20).await, Admission::Refused { .. }));
    }
    let ramp_until = open_until + 50 * 100;
    assert_eq!(admit(open_until).await, Admission::Probe);
    assert_eq!(
        client
            .breaker_report(&prefix, key, &POLICY, open_until, true, true)
            .await
            .unwrap(),
        BreakerState::Closed
    );
    // All fifty come back at once, 3 s late: eleven pass (the pace plus
    // ten slots of slack), the rest are given slots after the schedule.
    let late = open_until + 3_000;
    let mut passed = 0;
    let mut slots = Vec::new();
    for _ in 0..50 {
        match admit(late).await {
            Admission::Pass => passed += 1,
            Admission::Refused { retry_in_ms } => slots.push(late + retry_in_ms as i64),
            Admission::Probe => panic!("a probe while closed"),
        }
    }
    assert_eq!(passed, 11);
    assert_eq!(slots.first(), Some(&ramp_until));
    assert_eq!(slots.last(), Some(&(ramp_until + 38 * 100)));
    // A second later the pace has room for ten more.
    let mut passed = 0;
    for _ in 0..20 {
        if admit(late + 1_000).await == Admission::Pass {
            passed += 1;
        }
    }
    assert_eq!(passed, 10);
    // Once the schedule has run, calls pass freely.
    for _ in 0..50 {
        assert_eq!(admit(ramp_until).await, Admission::Pass);
    }
    let mut r = common::raw().await;
    let _: () = redis::AsyncCommands::del(&mut r, flowpilot::queue::keys::breaker(&prefix, key))
        .await
        .unwrap();
}

mod end_to_end {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use axum::Router;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;
    use serde_json::json;
    use sqlx::PgPool;
    use tokio::process::{Child, Command};

    use super::common::{self, flow::Flow};

    const EXECUTIONS: usize = 1_000;
    const MIN_CALLS: usize = 10;
    const PROBES: usize = 2;
    const RAMP: usize = 100;
    const MAX_JOBS: usize = 20;
    const OPEN: Duration = Duration::from_secs(1);
    /// How long the provider stays down after its breaker first opens.
    const OUTAGE: Duration = Duration::from_secs(3);

    /// A provider that answers 503 while `down`, and records each call's
    /// time and whether it came while down.
    #[derive(Clone, Default)]
    struct Provider {
        down: Arc<AtomicBool>,
        calls: Arc<Mutex<Vec<(Instant, bool)>>>,
    }

    async fn call(State(p): State<Provider>) -> StatusCode {
        let down = p.down.load(Ordering::SeqCst);
        p.calls.lock().unwrap().push((Instant::now(), down));
        if down {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    }

    fn spawn_worker(database_url: &str, prefix: &str) -> Child {
        Command::new(env!("CARGO_BIN_EXE_flowpilot"))
            .args(["worker", "--queue-prefix", prefix])
            .args(["--max-jobs", &MAX_JOBS.to_string(), "--poll-delay", "10ms"])
            .args(["--webhook-allow", "127.0.0.1", "--log", "error"])
            .args(["--breaker-min-calls", &MIN_CALLS.to_string()])
            .args(["--breaker-window", "5s", "--breaker-open", "1s"])
            .args(["--breaker-probes", &PROBES.to_string()])
            .args(["--breaker-ramp", &RAMP.to_string()])
            .env(
                "FLOWPILOT_RETRY_WEBHOOK",
                "max_attempts=20,backoff=200ms,max_backoff=1s",
            )
            .env("DATABASE_URL", database_url)
            .env("REDIS_URL", common::redis_url())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn flowpilot worker")
    }

    #[sqlx::test]
    async fn an_open_breaker_holds_a_thousand_sends_without_spending_attempts_and_lets_them_back_at_its_ramp(
        pool: PgPool,
    ) {
        let flow = Flow::start_with(pool.clone(), false).await;
        let provider = Provider::default();
        provider.down.store(true, Ordering::SeqCst);
        let app = Router::new()
            .route("/send", post(call))
            .with_state(provider.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/send", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let workflow = flow
            .workflow(json!({"steps": [{"id": "send", "type": "webhook", "url": url}]}))
            .await;
        let contact = flow.contact("ada@example.com", false).await;
        for _ in 0..EXECUTIONS {
            flow.start_execution(workflow, contact).await;
        }
        let db = common::database_url(&pool);
        let mut workers = [
            spawn_worker(&db, &flow.prefix),
            spawn_worker(&db, &flow.prefix),
        ];
        let breaker = flowpilot::queue::keys::breaker(
            &flow.prefix,
            &format!(
                "webhook:127.0.0.1:{}",
                url.split(':').nth(2).unwrap().split('/').next().unwrap()
            ),
        );
        let r = common::raw().await;
        let opened = common::eventually(Duration::from_secs(30), "the breaker to open", || {
            let mut r = r.clone();
            let breaker = breaker.clone();
            async move {
                let state: Option<String> = redis::AsyncCommands::hget(&mut r, &breaker, "state")
                    .await
                    .unwrap();
                (state.as_deref() == Some("open")).then(Instant::now)
            }
        })
        .await;
        tokio::time::sleep(OUTAGE).await;
        provider.down.store(false, Ordering::SeqCst);
        let up = Instant::now();
        flow.wait_all_final(Duration::from_secs(90)).await;
        for w in &mut workers {
            w.kill().await.unwrap();
        }

        let statuses = common::flow::statuses(&pool).await;
        assert_eq!(statuses, [("COMPLETED".to_owned(), EXECUTIONS as i64)]);
        let calls = provider.calls.lock().unwrap().clone();
        let failed_calls = calls.iter().filter(|(_, down)| *down).count();
        // Calls that reached the provider more than 100 ms after the breaker
        // was seen open (what was admitted before is in flight by then).
        let after_open = calls
            .iter()
            .filter(|(t, down)| *down && *t > opened + Duration::from_millis(100))
            .count();
        let half_open_periods = (OUTAGE.as_secs_f64() / OPEN.as_secs_f64()).ceil() as usize + 1;
        // Every attempt spent is a call the provider saw fail: none while
        // the breaker held the step back.
        let spent: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM execution_logs WHERE status IN ('RETRYING', 'FAILED')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        let held: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT execution_id) FROM execution_logs WHERE status = 'SUCCEEDED' \
             AND execution_id IN (SELECT id FROM workflow_executions)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        // The peak call rate after recovery, per second.
        let mut per_second = std::collections::BTreeMap::<u64, usize>::new();
        for (t, _) in calls.iter().filter(|(t, _)| *t >= up) {
            *per_second.entry((*t - up).as_secs()).or_default() += 1;
        }
        let peak = per_second.values().copied().max().unwrap_or(0);
        let took = up.elapsed();
        println!(
            "breaker: {EXECUTIONS} sends, provider down {:.1} s after the breaker opened; \
             calls while down {failed_calls} (after it opened: {after_open}; probes allowed {PROBES} x {half_open_periods} half-open periods); \
             attempts spent {spent}; after recovery: {} calls, peak {peak}/s (ramp {RAMP}/s), all done {:.1} s after recovery; \
             per second {per_second:?}",
            OUTAGE.as_secs_f64(),
            calls.iter().filter(|(t, _)| *t >= up).count(),
            took.as_secs_f64(),
        );
        assert_eq!(held, EXECUTIONS as i64);
        assert_eq!(
            spent as usize, failed_calls,
            "an attempt only for a call made"
        );
        assert!(
            failed_calls <= MIN_CALLS + 2 * MAX_JOBS + PROBES * half_open_periods,
            "{failed_calls} calls to a provider that was down"
        );
        assert!(
            after_open <= PROBES * half_open_periods,
            "{after_open} calls while open"
        );
        assert!(
            peak <= RAMP * 3 / 2,
            "peak {peak}/s after recovery, ramp {RAMP}/s"
        );
    }
}
