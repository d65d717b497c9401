//! Per-account rate limits: set through the API by an admin key, held by
//! two workers sharing one Redis within ±5%, a limited step parked with
//! `waiting_reason: rate_limited` without spending an attempt; and what
//! processes cache (limits, a workflow's activation) changed in one and
//! seen by another within a second.

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request};
use common::api::Api;
use common::flow::Flow;
use flowpilot::action::Channel;
use serde_json::{Value as Json, json};
use sqlx::PgPool;
use uuid::Uuid;

/// `PUT /api/v1/limits` for `account` with the admin key `admin`.
async fn put_limits(api: &Api, admin: &str, account: Uuid, limits: Json) -> (u16, Json) {
    let req = Request::builder()
        .method(Method::PUT)
        .uri("/api/v1/limits")
        .header("authorization", format!("Bearer {admin}"))
        .header("x-flowpilot-account", account.to_string())
        .header("content-type", "application/json")
        .body(Body::from(limits.to_string()))
        .unwrap();
    api.raw(req).await
}

#[sqlx::test]
async fn two_workers_hold_an_account_s_email_limit_within_five_percent_parking_the_rest(
    pool: PgPool,
) {
    let api = Api::start(pool.clone()).await;
    // A second worker process on the same queues and Redis.
    let second =
        Flow::start_queued(pool.clone(), &common::redis_url(), &api.flow.prefix, true).await;
    let (admin, _) = api.other_account(true).await;
    let account = api.flow.account;

    // Account keys read their limits but may not change them.
    let (status, mine) = api.get("/api/v1/limits").await;
    assert_eq!((status, mine), (200, json!({})));
    let (status, _) = api
        .call(
            Method::PUT,
            "/api/v1/limits",
            Some(json!({"email": {"per_second": 1000}})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, bad) =
        put_limits(&api, &admin, account, json!({"email": {"per_second": 0}})).await;
    assert_eq!(
        (status, bad["error"]["field"].as_str()),
        (422, Some("email")),
        "{bad}"
    );
    let (status, bad) =
        put_limits(&api, &admin, account, json!({"emial": {"per_second": 1}})).await;
    assert_eq!(status, 422, "{bad}");

    let rate = 10.0;
    let (status, set) = put_limits(
        &api,
        &admin,
        account,
        json!({"email": {"per_second": rate, "burst": 1}}),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    let (_, read) = api.get("/api/v1/limits").await;
    assert_eq!(read, json!({"email": {"per_second": 10.0, "burst": 1}}));

    let workflow = api
        .flow
        .workflow(json!({"steps": [
            {"id": "mail", "type": "send_email", "subject": "Hi", "body": "Hello"}
        ]}))
        .await;
    let n = 40;
    let mut ids = Vec::new();
    for i in 0..n {
        let c = api.flow.contact(&format!("l{i}@example.com"), false).await;
        ids.push(api.flow.start_execution(workflow, c).await);
    }
    // Some wait for their slot: parked, attempt unspent, time given.
    let parked: Vec<(String, Option<chrono::DateTime<chrono::Utc>>, i32)> = common::eventually(
        Duration::from_secs(10),
        "a step parked by the limit",
        || async {
            let rows: Vec<(String, Option<chrono::DateTime<chrono::Utc>>, i32)> = sqlx::query_as(
                "SELECT waiting_reason, resume_at, attempt FROM workflow_executions \
                 WHERE status = 'WAITING' AND waiting_reason = 'rate_limited'",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            (!rows.is_empty()).then_some(rows)
        },
    )
    .await;
    for (_, resume_at, attempt) in &parked {
        assert!(resume_at.is_some());
        assert_eq!(*attempt, 1, "no attempt spent");
    }
    let (status, view) = api.get(&format!("/api/v1/executions/{}", ids[n - 1])).await;
    assert_eq!(status, 200);
    if view["status"] == "WAITING" {
        assert_eq!(view["waiting_reason"], "rate_limited", "{view}");
        assert!(view["next_action_at"].is_string(), "{view}");
    }

    api.flow.wait_all_final(Duration::from_secs(30)).await;
    let sent: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM created_at)::float8 FROM outbox \
         WHERE account_id = $1 AND channel = 'email' ORDER BY created_at",
    )
    .bind(account)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(sent.len(), n, "each email sent once");
    let span = sent[n - 1] - sent[0];
    let measured = (n - 1) as f64 / span;
    eprintln!("{n} emails over {span:.3} s: {measured:.2}/s against a limit of {rate}/s");
    assert!(
        (measured - rate).abs() <= rate * 0.05,
        "{measured:.2}/s is not within 5% of {rate}/s"
    );
    // Every execution ran its one step once, none failed.
    let failed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM workflow_executions WHERE status <> 'COMPLETED'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(failed, 0);
    // No busy loop: a parked step holds its own slot, so it parks once.
    let most_jobs: i32 = sqlx::query_scalar("SELECT max(wake_seq) FROM workflow_executions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(most_jobs <= 1, "an execution took {} jobs", most_jobs + 1);
    second.stop().await;
    api.finish().await;
}

#[sqlx::test]
async fn a_change_reaches_another_process_s_cached_limits_within_a_second(pool: PgPool) {
    let api = Api::start_with_no_worker(pool.clone()).await;
    let other =
        Flow::start_queued(pool.clone(), &common::redis_url(), &api.flow.prefix, true).await;
    let (admin, _) = api.other_account(true).await;
    let account = api.flow.account;
    let limits = other.engine.limiter();
    // Unlimited, and now cached in the other process.
    for _ in 0..5 {
        assert_eq!(limits.reserve(account, Channel::Sms).await, Duration::ZERO);
    }
    let (status, _) = put_limits(
        &api,
        &admin,
        account,
        json!({"sms": {"per_second": 1.0 / 3600.0, "burst": 1}}),
    )
    .await;
    assert_eq!(status, 200);
    let changed = Instant::now();
    // The first call takes the one slot; the next waits about an hour.
    let waited = common::eventually(Duration::from_secs(5), "the new limit", || async {
        let wait = limits.reserve(account, Channel::Sms).await;
        (wait > Duration::from_secs(3000)).then_some(changed.elapsed())
    })
    .await;
    eprintln!("the other process held to the new limit {waited:?} after the change");
    assert!(waited < Duration::from_secs(1), "{waited:?}");
    let metrics = prometheus::TextEncoder::new()
        .encode_to_string(&other.runtime.registry.gather())
        .unwrap();
    assert!(
        metrics.contains("flowpilot_cache_lookups_total{cache=\"limits\",result=\"hit\"}"),
        "no hit counter in {metrics}"
    );
    other.stop().await;
    api.finish().await;
}

#[sqlx::test]
async fn a_deactivated_workflow_refuses_new_executions_in_another_process_within_a_second(
    pool: PgPool,
) {
    // Process A: the in-process API; process B: a real `flowpilot api`.
    let api = Api::start_with_no_worker(pool.clone()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut b = tokio::process::Command::new(env!("CARGO_BIN_EXE_flowpilot"))
        .args([
            "api",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log",
            "warn",
        ])
        .env("DATABASE_URL", common::database_url(&pool))
        .env("REDIS_URL", common::redis_url())
        .env("FLOWPILOT_QUEUE_PREFIX", &api.flow.prefix)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let workflow = api
        .workflow(json!({"steps": [{"id": "t", "type": "add_tag", "tag": "x"}]}))
        .await;
    let contact = api.contact("b@example.com").await;
    let http = reqwest::Client::new();
    let execute = || {
        http.post(format!(
            "http://127.0.0.1:{port}/api/v1/workflows/{workflow}/execute"
        ))
        .bearer_auth(&api.key)
        .json(&json!({"contact_id": contact}))
        .send()
    };
    // B starts one, so it holds the workflow in its cache.
    let first = common::eventually(Duration::from_secs(30), "process B to answer", || async {
        execute().await.ok()
    })
    .await;
    assert_eq!(first.status(), 202, "{:?}", first.text().await);

    let (status, _) = api
        .action(&format!("/api/v1/workflows/{workflow}/deactivate"))
        .await;
    assert_eq!(status, 200);
    let deactivated = Instant::now();
    let refused_after = common::eventually(Duration::from_secs(5), "B to refuse", || async {
        let r = execute().await.unwrap();
        (r.status() == 409).then(|| deactivated.elapsed())
    })
    .await;
    eprintln!("process B refused new executions {refused_after:?} after the deactivation");
    // The cache's TTL alone allows a second; the announcement is faster.
    assert!(
        refused_after < Duration::from_millis(500),
        "{refused_after:?}"
    );
    b.kill().await.ok();
    api.finish().await;
}

/// A local provider that takes `delay` per call and records the most
/// calls in flight at once.
#[derive(Clone, Default)]
struct Slow {
    delay: Duration,
    now: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    most: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Slow {
    /// Serves it; returns it and its URL.
    async fn serve(delay: Duration) -> (Slow, String) {
        let slow = Slow {
            delay,
            ..Slow::default()
        };
        let app = axum::Router::new()
            .route("/slow", axum::routing::post(slow_call))
            .with_state(slow.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/slow", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (slow, url)
    }

    fn most(&self) -> usize {
        self.most.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn slow_call(axum::extract::State(s): axum::extract::State<Slow>) -> &'static str {
    use std::sync::atomic::Ordering;
    let n = s.now.fetch_add(1, Ordering::SeqCst) + 1;
    s.most.fetch_max(n, Ordering::SeqCst);
    tokio::time::sleep(s.delay).await;
    s.now.fetch_sub(1, Ordering::SeqCst);
    "{}"
}

#[sqlx::test]
async fn an_account_s_cap_of_running_executions_holds_across_two_workers_and_hands_permits_over(
    pool: PgPool,
) {
    let api = Api::start(pool.clone()).await;
    let second =
        Flow::start_queued(pool.clone(), &common::redis_url(), &api.flow.prefix, true).await;
    let (admin, _) = api.other_account(true).await;
    let account = api.flow.account;
    let (status, bad) = put_limits(&api, &admin, account, json!({"running": 0})).await;
    assert_eq!(
        (status, bad["error"]["field"].as_str()),
        (422, Some("running")),
        "{bad}"
    );
    let (status, set) = put_limits(&api, &admin, account, json!({"running": 3})).await;
    assert_eq!(status, 200, "{set}");

    let (slow, url) = Slow::serve(Duration::from_millis(100)).await;
    let workflow = api
        .flow
        .workflow(json!({"steps": [{"id": "call", "type": "webhook", "url": url}]}))
        .await;
    let n = 30;
    let began = Instant::now();
    for i in 0..n {
        let c = api.flow.contact(&format!("r{i}@example.com"), false).await;
        api.flow.start_execution(workflow, c).await;
    }
    api.flow.wait_all_final(Duration::from_secs(60)).await;
    let took = began.elapsed();
    let statuses = common::flow::statuses(&pool).await;
    let most = slow.most();
    println!(
        "cap 3: {n} runs of 100 ms on two workers (40 job slots) in {:.2} s, at most {most} at once",
        took.as_secs_f64()
    );
    assert_eq!(statuses, [("COMPLETED".to_owned(), n as i64)]);
    assert_eq!(most, 3, "the cap, and no more, ran at once");
    // 30 runs three at a time take 1 s; waiting out the 2 s deferral
    // instead of being handed a permit takes several times that (4.8 s
    // with the hand-over turned off).
    assert!(
        took < Duration::from_secs(4),
        "permits were not handed over: {took:?}"
    );
    let tries: i32 = sqlx::query_scalar("SELECT max(attempt) FROM execution_logs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(tries, 1, "waiting for the cap spends no attempt");
    second.stop().await;
    api.finish().await;
}

/// A run longer than a permit's hold renews it, so the cap holds; the
/// permit of a worker that died lapses within one hold (the lapse is
/// what a renewal that stopped looks like).
#[sqlx::test]
async fn a_run_longer_than_its_permit_s_hold_renews_it(pool: PgPool) {
    let hold = Duration::from_millis(600);
    let flow = Flow::start_tuned(
        pool.clone(),
        &common::redis_url(),
        &common::unique("test-queue"),
        true,
        |s| s.running_hold = hold,
    )
    .await;
    let limits = flowpilot::domain::Limits {
        running: Some(1),
        ..Default::default()
    };
    flowpilot::store::account::set_limits(&pool, flow.account, &limits)
        .await
        .unwrap();
    // Each call takes three holds.
    let (slow, url) = Slow::serve(hold * 3).await;
    let workflow = flow
        .workflow(json!({"steps": [{"id": "call", "type": "webhook", "url": url}]}))
        .await;
    // The second comes when the first's permit would have lapsed twice.
    for i in 0..2 {
        let c = flow.contact(&format!("h{i}@example.com"), false).await;
        flow.start_execution(workflow, c).await;
        tokio::time::sleep(hold * 2).await;
    }
    flow.wait_all_final(Duration::from_secs(30)).await;
    assert_eq!(
        common::flow::statuses(&pool).await,
        [("COMPLETED".to_owned(), 2)]
    );
    assert_eq!(slow.most(), 1, "the second ran while the first held");

    // A permit nobody renews lapses: another job takes it after one hold.
    let client = common::client(flowpilot::queue::Serializer::Pickle).await;
    let prefix = common::unique("permits");
    let slot = |job: &str| flowpilot::queue::RunningSlot::new(&prefix, "acct", "q", job);
    assert!(client.take_running(&slot("a"), 1, hold).await.unwrap());
    assert!(!client.take_running(&slot("b"), 1, hold).await.unwrap());
    tokio::time::sleep(hold + Duration::from_millis(100)).await;
    assert!(client.take_running(&slot("b"), 1, hold).await.unwrap());
    flow.stop().await;
}
