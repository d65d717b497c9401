//! Admin alerts end to end on a real database and Redis, with a local
//! receiver (loopback) standing in for Slack and a paging webhook: rules
//! are checked and scoped, a failure reaches the first channel signed and
//! deduplicated, an unacknowledged alert escalates and an acknowledged one
//! does not, condition rules fire, a delivery survives a crash between
//! trigger and send and is sent once by two dispatchers, and 100 alerts
//! reach the receiver well within a minute (p50 / p99 printed).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use chrono::{DateTime, Utc};
use common::api::Api;
use flowpilot::alert::deliver::{Dispatcher, signature};
use flowpilot::alert::evaluate::Evaluator;
use serde_json::{Value as Json, json};
use sqlx::PgPool;
use uuid::Uuid;

const SECRET: &str = "a-shared-secret-of-some-length";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    headers: HeaderMap,
    raw: Vec<u8>,
    at: DateTime<Utc>,
}

impl Got {
    fn json(&self) -> Json {
        serde_json::from_slice(&self.raw).unwrap()
    }
}

#[derive(Clone, Default)]
struct Inbox(Arc<Mutex<Vec<Got>>>);

impl Inbox {
    async fn start() -> (Inbox, String) {
        let inbox = Inbox::default();
        let app = Router::new()
            .route("/{name}", post(take))
            .with_state(inbox.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (inbox, base)
    }

    fn at(&self, path: &str) -> Vec<Got> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.path == path)
            .cloned()
            .collect()
    }

    async fn wait_for(&self, path: &str, n: usize, secs: u64) -> Vec<Got> {
        common::eventually(Duration::from_secs(secs), path, || async {
            let got = self.at(path);
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

async fn take(
    State(inbox): State<Inbox>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> &'static str {
    inbox.0.lock().unwrap().push(Got {
        path: format!("/{name}"),
        headers,
        raw: body.to_vec(),
        at: Utc::now(),
    });
    "ok"
}

/// Checks a webhook delivery's signature as the README tells receivers to.
fn verify(got: &Got) {
    let header = got.headers["x-flowpilot-signature"].to_str().unwrap();
    let t: i64 = header
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .unwrap()
        .parse()
        .unwrap();
    assert!((Utc::now().timestamp() - t).abs() < 300, "fresh timestamp");
    assert_eq!(header, signature(SECRET.as_bytes(), t, &got.raw));
    assert_ne!(
        signature(b"another secret, as long", t, &got.raw),
        header,
        "the secret matters"
    );
}

/// `n` executions of a new workflow whose only step fails for good.
async fn failing(api: &Api, n: usize) -> Uuid {
    let flow = &api.flow;
    let workflow = flow
        .workflow(json!({"steps": [
            {"id": "crm", "type": "webhook", "url": format!("{}/gone", flow.base)}
        ]}))
        .await;
    for i in 0..n {
        let contact = flow
            .contact(
                &format!("{}-{i}@example.com", Uuid::new_v4().simple()),
                false,
            )
            .await;
        flow.start_execution(workflow, contact).await;
    }
    workflow
}

#[sqlx::test]
async fn rules_are_checked_scoped_and_their_secrets_never_shown(pool: PgPool) {
    let api = Api::start_with_no_worker(pool).await;
    let hook = json!({"type": "webhook", "url": "https://pager.example.com/in", "secret": SECRET});
    for (body, field, status) in [
        (
            json!({"name": "x", "kind": "sometimes", "channels": [hook]}),
            "kind",
            422,
        ),
        (
            json!({"name": "", "kind": "execution_failed", "channels": [hook]}),
            "name",
            422,
        ),
        (
            json!({"name": "x", "kind": "execution_failed", "channels": []}),
            "channels",
            422,
        ),
        (
            json!({"name": "x", "kind": "execution_failed", "channels": [{"type": "fax"}]}),
            "channels[0]",
            422,
        ),
        (
            json!({"name": "x", "kind": "execution_failed",
                "channels": [{"type": "webhook", "url": "https://a.example", "secret": "short"}]}),
            "channels[0].secret",
            422,
        ),
        (
            json!({"name": "x", "kind": "execution_failed", "channels": [{"type": "slack", "url": "ftp://x"}]}),
            "channels[0].url",
            422,
        ),
        (
            json!({"name": "x", "kind": "execution_failed", "channels": [{"type": "sms", "to": "5550100"}]}),
            "channels[0].to",
            422,
        ),
        (
            json!({"name": "x", "kind": "failure_rate", "params": {"threshold_percent": 0}, "channels": [hook]}),
            "params.threshold_percent",
            422,
        ),
        (
            json!({"name": "x", "kind": "failure_rate", "params": {"threshold_percent": 5, "window": 3}, "channels": [hook]}),
            "params.window",
            422,
        ),
        (
            json!({"name": "x", "kind": "execution_failed", "params": {"error_classes": ["nope"]}, "channels": [hook]}),
            "params.error_classes[0]",
            422,
        ),
        (
            json!({"name": "x", "kind": "queue_stalled", "params": {"older_than_s": 5}, "channels": [hook]}),
            "global",
            422,
        ),
        (
            json!({"name": "x", "kind": "execution_failed", "channels": [hook], "dedup_window": "soon"}),
            "dedup_window",
            422,
        ),
        (
            json!({"name": "x", "kind": "execution_failed", "channels": [hook], "global": true}),
            "",
            403,
        ),
    ] {
        let (status_got, err) = api.post("/api/v1/alert-rules", body.clone()).await;
        assert_eq!(status_got, status, "{body}: {err}");
        if !field.is_empty() {
            assert_eq!(err["error"]["field"], field, "{body}: {err}");
        }
    }
    let (status, rule) = api
        .post(
            "/api/v1/alert-rules",
            json!({"name": "fails", "kind": "execution_failed",
                   "channels": [hook, {"type": "slack", "url": "https://hooks.slack.com/services/T0/B0/SECRET"}]}),
        )
        .await;
    assert_eq!(status, 201, "{rule}");
    let text = rule.to_string();
    assert!(!text.contains(SECRET) && !text.contains("SECRET"), "{text}");
    assert_eq!(rule["channels"][1]["url"], "https://hooks.slack.com/…");
    assert_eq!(
        (
            rule["dedup_window_s"].as_i64(),
            rule["escalate_after_s"].as_i64()
        ),
        (Some(300), Some(900))
    );
    let id = rule["id"].as_str().unwrap();
    let (status, listed) = api.get("/api/v1/alert-rules").await;
    assert_eq!(
        (status, listed["items"].as_array().unwrap().len()),
        (200, 1)
    );

    // Another account sees nothing of it; an admin key may make global
    // rules, which a plain key never sees.
    let (other, _) = api.other_account(false).await;
    let (status, _) = api
        .call_as(
            Some(&other),
            axum::http::Method::GET,
            &format!("/api/v1/alert-rules/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (admin, _) = api.other_account(true).await;
    let (status, global) = api
        .call_as(
            Some(&admin),
            axum::http::Method::POST,
            "/api/v1/alert-rules",
            Some(
                json!({"name": "stalls", "kind": "queue_stalled", "params": {"older_than_s": 30},
                        "channels": [hook], "global": true}),
            ),
        )
        .await;
    assert_eq!(
        (status, global["account_id"].clone()),
        (201, Json::Null),
        "{global}"
    );
    let (_, listed) = api.get("/api/v1/alert-rules").await;
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        1,
        "no global rule for a plain key"
    );
    let (status, _) = api
        .call(
            axum::http::Method::DELETE,
            &format!("/api/v1/alert-rules/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = api.get(&format!("/api/v1/alert-rules/{id}")).await;
    assert_eq!(status, 404);
    api.finish().await;
}

#[sqlx::test]
async fn a_failure_reaches_the_first_channel_signed_once_then_escalates_until_acknowledged(
    pool: PgPool,
) {
    let api = Api::start(pool.clone()).await;
    let (inbox, base) = Inbox::start().await;
    let (status, rule) = api
        .post(
            "/api/v1/alert-rules",
            json!({"name": "crm down", "kind": "execution_failed",
                   "params": {"error_classes": ["permanent"]},
                   "channels": [{"type": "webhook", "url": format!("{base}/pager"), "secret": SECRET},
                                {"type": "slack", "url": format!("{base}/slack")},
                                {"type": "email", "to": "oncall@example.com"}],
                   "dedup_window": "1h", "escalate_after": "1s"}),
        )
        .await;
    assert_eq!(status, 201, "{rule}");
    // Three failures of one kind: one alert.
    let workflow = failing(&api, 3).await;
    api.flow.wait_all_final(Duration::from_secs(30)).await;
    let paged = inbox.wait_for("/pager", 1, 30).await;
    verify(&paged[0]);
    let body = paged[0].json();
    assert_eq!(body["rule"]["name"], "crm down");
    assert_eq!(body["details"]["workflow_id"], workflow.to_string());
    assert_eq!(
        paged[0].headers["x-flowpilot-delivery"].to_str().unwrap(),
        body["delivery_id"]
    );
    let alert_id = body["alert_id"].as_str().unwrap().to_owned();

    // Not acknowledged: Slack hears of it a second later; then acknowledged,
    // the email (the third channel) is never sent.
    let slack = inbox.wait_for("/slack", 1, 30).await;
    let text = slack[0].json()["text"].as_str().unwrap().to_owned();
    assert!(
        text.contains("crm down") && text.contains(&alert_id) && text.contains("Escalated"),
        "{text}"
    );
    let (status, acked) = api.action(&format!("/api/v1/alerts/{alert_id}/ack")).await;
    assert_eq!(
        (status, acked["state"].as_str()),
        (200, Some("acknowledged")),
        "{acked}"
    );
    let (status, again) = api.action(&format!("/api/v1/alerts/{alert_id}/ack")).await;
    assert_eq!(
        (status, again["acknowledged_at"].clone()),
        (200, acked["acknowledged_at"].clone())
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, alert) = api.get(&format!("/api/v1/alerts/{alert_id}")).await;
    assert_eq!(alert["occurrences"], 3, "{alert}");
    let kinds: Vec<(&str, &str)> = alert["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["kind"].as_str().unwrap(), d["state"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [("webhook", "sent"), ("slack", "sent")], "{alert}");
    assert_eq!(
        (inbox.at("/pager").len(), inbox.at("/slack").len()),
        (1, 1),
        "each channel once"
    );
    let emails: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE recipient = 'oncall@example.com'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(emails, 0);

    // The history lists it; another account does not see it.
    let (_, history) = api
        .get(&format!(
            "/api/v1/alerts?rule_id={}",
            rule["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(history["items"].as_array().unwrap().len(), 1);
    let (other, _) = api.other_account(false).await;
    let (status, _) = api
        .call_as(
            Some(&other),
            axum::http::Method::POST,
            &format!("/api/v1/alerts/{alert_id}/ack"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = api.get("/api/v1/alerts?state=burning").await;
    assert_eq!(status, 400);
    api.finish().await;
}

#[sqlx::test]
async fn email_and_sms_channels_go_through_the_configured_providers(pool: PgPool) {
    let api = Api::start(pool.clone()).await;
    let (status, _) = api
        .post(
            "/api/v1/alert-rules",
            json!({"name": "any failure", "kind": "dead_letters", "params": {"threshold": 0, "window_s": 60},
                   "channels": [{"type": "email", "to": "oncall@example.com"}, {"type": "sms", "to": "+15550100999"}],
                   "escalate_after": "1s"}),
        )
        .await;
    assert_eq!(status, 201);
    failing(&api, 1).await;
    let rows: Vec<(String, String, Option<String>, String)> =
        common::eventually(Duration::from_secs(30), "an email and an SMS", || async {
            let rows: Vec<(String, String, Option<String>, String)> = sqlx::query_as(
                "SELECT channel, recipient, subject, body FROM outbox WHERE idempotency_key LIKE 'alert:%' ORDER BY channel",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            (rows.len() == 2).then_some(rows)
        })
        .await;
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1.as_str()),
        ("email", "oncall@example.com")
    );
    assert!(
        rows[0]
            .2
            .as_deref()
            .unwrap()
            .starts_with("[flowpilot] any failure"),
        "{rows:?}"
    );
    assert!(rows[0].3.contains("executions failed for good"), "{rows:?}");
    assert_eq!(
        (rows[1].0.as_str(), rows[1].1.as_str()),
        ("sms", "+15550100999")
    );

    // Webhook and Slack channels pass the webhook steps' address guard: a
    // cloud metadata address is refused, for good, without its secret
    // path in the error.
    let (status, _) = api
        .post(
            "/api/v1/alert-rules",
            json!({"name": "sneaky", "kind": "dead_letters", "params": {"threshold": 0},
                   "channels": [{"type": "slack", "url": "http://169.254.169.254/latest/SECRETPATH"}]}),
        )
        .await;
    assert_eq!(status, 201);
    failing(&api, 1).await;
    let (state, error): (String, String) = common::eventually(Duration::from_secs(30), "a refused delivery", || async {
        sqlx::query_as(
            "SELECT d.state, d.last_error FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id \
             JOIN alert_rules r ON r.id = a.rule_id WHERE r.name = 'sneaky' AND d.last_error IS NOT NULL",
        )
        .fetch_optional(&pool)
        .await
        .unwrap()
    })
    .await;
    assert_eq!(state, "failed");
    assert!(
        error.contains("refused by the webhook guard") && !error.contains("SECRETPATH"),
        "{error}"
    );
    api.finish().await;
}

#[sqlx::test]
async fn failure_rate_breaker_and_stalled_queue_rules_fire_on_their_conditions(pool: PgPool) {
    let api = Api::start(pool.clone()).await;
    let (inbox, base) = Inbox::start().await;
    let hook = |name: &str| json!([{"type": "webhook", "url": format!("{base}/{name}"), "secret": SECRET}]);
    let (admin, _) = api.other_account(true).await;
    for (kind, params, global) in [
        (
            "failure_rate",
            json!({"threshold_percent": 50, "window_s": 60, "min_count": 2}),
            false,
        ),
        ("breaker_open", json!({}), true),
        (
            "queue_stalled",
            json!({"older_than_s": 1, "queues": [format!("{}:stuck", api.flow.prefix)]}),
            true,
        ),
    ] {
        let (status, rule) = api
            .call_as(
                Some(if global { &admin } else { &api.key }),
                axum::http::Method::POST,
                "/api/v1/alert-rules",
                Some(json!({"name": kind, "kind": kind, "params": params, "channels": hook(kind), "global": global})),
            )
            .await;
        assert_eq!(status, 201, "{rule}");
    }
    failing(&api, 2).await;
    // A breaker left open, and a job no worker serves.
    let mut redis = common::raw().await;
    let breaker = flowpilot::queue::keys::breaker(&api.flow.prefix, "webhook:crm.example.com:443");
    let _: () = redis::cmd("HSET")
        .arg(&breaker)
        .arg("state")
        .arg("open")
        .query_async(&mut redis)
        .await
        .unwrap();
    // As the report script leaves an opened breaker: in the index too.
    let _: () = redis::cmd("ZADD")
        .arg(flowpilot::queue::keys::breakers_opened(&api.flow.prefix))
        .arg(0)
        .arg(&breaker)
        .query_async(&mut redis)
        .await
        .unwrap();
    let queue = common::client(flowpilot::queue::Serializer::Pickle).await;
    queue
        .enqueue(
            "ping",
            vec![],
            vec![],
            flowpilot::queue::EnqueueOptions {
                queue: Some(format!("{}:stuck", api.flow.prefix)),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    let rate = inbox.wait_for("/failure_rate", 1, 30).await;
    assert!(
        rate[0].json()["summary"]
            .as_str()
            .unwrap()
            .contains("100.0%"),
        "{:?}",
        rate[0].json()
    );
    let open = inbox.wait_for("/breaker_open", 1, 30).await;
    assert_eq!(
        open[0].json()["details"]["provider"],
        "webhook:crm.example.com:443"
    );
    let stalled = inbox.wait_for("/queue_stalled", 1, 30).await;
    assert!(
        stalled[0].json()["details"]["oldest_ready_age_s"]
            .as_i64()
            .unwrap()
            >= 1
    );
    // Still holding a second later: folded into the same alert, not resent.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(inbox.at("/breaker_open").len(), 1);
    let _: () = redis::cmd("DEL")
        .arg(&breaker)
        .query_async(&mut redis)
        .await
        .unwrap();
    api.finish().await;
}

#[sqlx::test]
async fn a_crash_between_trigger_and_send_still_sends_once_per_alert_and_channel(pool: PgPool) {
    // No worker: the evaluator and the dispatchers are driven by hand.
    let api = Api::start_with_no_worker(pool.clone()).await;
    let (inbox, base) = Inbox::start().await;
    api.post(
        "/api/v1/alert-rules",
        json!({"name": "fails", "kind": "execution_failed",
               "channels": [{"type": "webhook", "url": format!("{base}/pager"), "secret": SECRET}]}),
    )
    .await;
    // Twenty failures of twenty workflows, recorded as dead letters.
    let workflow_ids: Vec<Uuid> = sqlx::query_scalar(
        "WITH c AS (INSERT INTO contacts (account_id) VALUES ($1) RETURNING id), \
              w AS (INSERT INTO workflows (account_id, name, latest_version) SELECT $1, 'w' || g, 1 FROM generate_series(1, 20) g RETURNING id), \
              v AS (INSERT INTO workflow_versions (workflow_id, version, account_id, definition) SELECT id, 1, $1, '{\"steps\": []}' FROM w), \
              e AS (INSERT INTO workflow_executions (account_id, workflow_id, workflow_version, contact_id, status, completed_at) \
                    SELECT $1, w.id, 1, c.id, 'FAILED', now() FROM w, c RETURNING id, workflow_id) \
         INSERT INTO dead_letters (account_id, execution_id, step_index, attempts, error, error_class, fingerprint) \
         SELECT $1, id, 0, 1, 'boom', 'permanent', 'abcdefabcdefabcd' FROM e RETURNING (SELECT workflow_id FROM e LIMIT 1)",
    )
    .bind(api.flow.account)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(workflow_ids.len(), 20);
    // The evaluator raises them (alerts and deliveries committed), then the
    // process dies before any send: nothing is lost.
    let mut evaluator = Evaluator::new(api.flow.runtime.alerts.clone());
    assert_eq!(evaluator.pass().await.unwrap(), 20);
    drop(evaluator);
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM alert_deliveries WHERE state = 'pending'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(pending, 20);
    // A dispatcher that took five and died: they come back when its hold
    // lapses (simulated), and two dispatchers racing send each once.
    sqlx::query(
        "UPDATE alert_deliveries SET locked_until = now() - interval '1 second', attempts = 1 \
         WHERE id IN (SELECT id FROM alert_deliveries LIMIT 5)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (a, b) = (
        Dispatcher::new(api.flow.runtime.alerts.clone()),
        Dispatcher::new(api.flow.runtime.alerts.clone()),
    );
    let (x, y) = tokio::join!(a.round(), b.round());
    assert_eq!(x.unwrap() + y.unwrap(), 20);
    let got = inbox.at("/pager");
    let mut ids: Vec<String> = got
        .iter()
        .map(|g| g.json()["delivery_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!((got.len(), ids.len()), (20, 20), "each alert once");
    assert_eq!(a.round().await.unwrap(), 0, "nothing left to send");
    api.finish().await;
}

#[sqlx::test]
async fn a_hundred_alerts_reach_the_receiver_within_a_minute(pool: PgPool) {
    // The real binary with its default alert settings (evaluation every
    // 5 s, dispatch every second) does the work; this process only writes.
    let api = Api::start_with_no_worker(pool.clone()).await;
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_flowpilot"))
        .args([
            "worker",
            "--queue-prefix",
            &api.flow.prefix,
            "--webhook-allow",
            "127.0.0.1",
        ])
        .args(["--log", "warn"])
        .env("DATABASE_URL", common::database_url(&pool))
        .env("REDIS_URL", common::redis_url())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (inbox, base) = Inbox::start().await;
    api.post(
        "/api/v1/alert-rules",
        json!({"name": "fails", "kind": "execution_failed",
               "channels": [{"type": "webhook", "url": format!("{base}/pager"), "secret": SECRET}]}),
    )
    .await;
    for _ in 0..100 {
        failing(&api, 1).await;
    }
    let got = inbox.wait_for("/pager", 100, 180).await;
    let mut latencies = Vec::new();
    for g in &got {
        verify(g);
        let id: Uuid = g.json()["details"]["execution_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let failed: DateTime<Utc> =
            sqlx::query_scalar("SELECT completed_at FROM workflow_executions WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        latencies.push((g.at - failed).num_milliseconds());
    }
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "alert latency, failure to receiver, {} alerts, `flowpilot worker` with default settings: p50 {} ms, p99 {} ms, max {} ms",
        latencies.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    assert_eq!(latencies.len(), 100);
    assert!(pct(0.99) < 60_000, "p99 {} ms", pct(0.99));
    worker.kill().await.ok();
    api.finish().await;
}
