//! Failure handling end to end on a real database, Redis and a local
//! provider: every failed or retried attempt has a class and a
//! fingerprint; `Retry-After` is honoured; a round of retries stops at its
//! `max_elapsed`; `on_error` lets a workflow go on past a failed step.

mod common;

use std::time::Duration;

use common::flow::Flow;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// The class and fingerprint of an execution, then of its dead letter.
type ClassAndPrint = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// `(step_id, status, error_class, fingerprint)` of an execution's log rows.
async fn classed_logs(
    pool: &PgPool,
    id: Uuid,
) -> Vec<(String, String, Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT step_id, status, error_class, fingerprint FROM execution_logs WHERE execution_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test]
async fn a_rate_limited_webhook_waits_what_retry_after_asks_and_each_attempt_is_classed(
    pool: PgPool,
) {
    let flow = Flow::start(pool.clone()).await;
    let id = flow
        .enter(json!({"steps": [
            {"id": "crm", "type": "webhook", "url": format!("{}/limited/1", flow.base)}
        ]}))
        .await;
    flow.wait_status(id, "COMPLETED", Duration::from_secs(30))
        .await;
    let logs = classed_logs(&pool, id).await;
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert_eq!(logs[0].1, "RETRYING");
    assert_eq!(logs[0].2.as_deref(), Some("rate_limited"));
    assert_eq!(logs[0].3.as_ref().map(String::len), Some(16));
    assert_eq!(
        (logs[1].1.as_str(), logs[1].2.as_deref()),
        ("SUCCEEDED", None)
    );
    // The engine's own backoff would be at most 200 ms here; the provider
    // asked for a second.
    let gap: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(started_at) - min(completed_at))::float8 \
         FROM execution_logs WHERE execution_id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(gap >= 0.95, "waited {gap:.3} s, Retry-After asked 1 s");
    let (class, fingerprint): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT error_class, fingerprint FROM workflow_executions WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((class, fingerprint), (None, None), "cleared on success");
    flow.stop().await;
}

#[sqlx::test]
async fn a_permanent_failure_is_classed_and_fingerprinted_on_the_log_the_execution_and_the_dead_letter(
    pool: PgPool,
) {
    let flow = Flow::start(pool.clone()).await;
    let workflow = flow
        .workflow(json!({"steps": [
            {"id": "gone", "type": "webhook", "url": format!("{}/gone", flow.base)}
        ]}))
        .await;
    let mut ids = Vec::new();
    for i in 0..2 {
        let contact = flow.contact(&format!("c{i}@example.com"), false).await;
        ids.push(flow.start_execution(workflow, contact).await);
    }
    for id in &ids {
        flow.wait_status(*id, "FAILED", Duration::from_secs(30))
            .await;
    }
    let rows: Vec<ClassAndPrint> = sqlx::query_as(
        "SELECT e.error_class, e.fingerprint, d.error_class, d.fingerprint \
             FROM workflow_executions e JOIN dead_letters d ON d.execution_id = e.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    for (class, fp, dead_class, dead_fp) in &rows {
        assert_eq!(class.as_deref(), Some("permanent"));
        assert_eq!(dead_class, class);
        assert_eq!(dead_fp, fp);
        assert_eq!(fp.as_ref().map(String::len), Some(16));
    }
    assert_eq!(rows[0].1, rows[1].1, "like failures share a fingerprint");
    let log = classed_logs(&pool, ids[0]).await;
    assert_eq!(log[0].1, "FAILED");
    assert_eq!(log[0].2.as_deref(), Some("permanent"));
    assert_eq!(log[0].3, rows[0].1);
    flow.stop().await;
}

#[sqlx::test]
async fn a_round_of_retries_stops_at_its_max_elapsed(pool: PgPool) {
    let flow = Flow::start(pool.clone()).await;
    let id = flow
        .enter(json!({"steps": [
            {"id": "down", "type": "webhook", "url": format!("{}/flaky/1000", flow.base),
             "retry": {"max_attempts": 50, "backoff": "100ms", "max_backoff": "200ms", "max_elapsed": "1s"}}
        ]}))
        .await;
    flow.wait_status(id, "FAILED", Duration::from_secs(20))
        .await;
    let (error, class): (String, String) =
        sqlx::query_as("SELECT error, error_class FROM workflow_executions WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(error.contains("max_elapsed 1s"), "{error}");
    assert_eq!(class, "transient");
    let (attempts, span): (i64, f64) = sqlx::query_as(
        "SELECT count(*), extract(epoch FROM max(started_at) - min(started_at))::float8 \
         FROM execution_logs WHERE execution_id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!((3..50).contains(&attempts), "{attempts} attempts");
    // No attempt is scheduled past the deadline (a little slack for the
    // queue's poll and the claim).
    assert!(span <= 1.5, "attempts spanned {span:.3} s");
    flow.stop().await;
}

#[sqlx::test]
async fn a_contact_without_a_phone_skips_an_optional_sms_and_goes_on(pool: PgPool) {
    let flow = Flow::start(pool.clone()).await;
    let contact = flow.contact("ada@example.com", false).await;
    sqlx::query("UPDATE contacts SET phone = NULL WHERE id = $1")
        .bind(contact)
        .execute(&pool)
        .await
        .unwrap();
    let go_on = flow
        .workflow(json!({"steps": [
            {"id": "sms", "type": "send_sms", "body": "hi", "on_error": "continue"},
            {"id": "mail", "type": "send_email", "subject": "s", "body": "{{steps.sms.error_class}}"}
        ]}))
        .await;
    let jump = flow
        .workflow(json!({"steps": [
            {"id": "sms", "type": "send_sms", "body": "hi", "on_error": {"goto": "done"}},
            {"id": "skipped", "type": "add_tag", "tag": "texted"},
            {"id": "done", "type": "end"}
        ]}))
        .await;
    let a = flow.start_execution(go_on, contact).await;
    let b = flow.start_execution(jump, contact).await;
    flow.wait_all_final(Duration::from_secs(30)).await;
    assert_eq!(flow.status(a).await, "COMPLETED");
    assert_eq!(flow.status(b).await, "COMPLETED");
    let logs = classed_logs(&pool, a).await;
    assert_eq!(
        logs.iter()
            .map(|(s, st, c, _)| (s.as_str(), st.as_str(), c.as_deref()))
            .collect::<Vec<_>>(),
        [
            ("sms", "FAILED", Some("contact_data")),
            ("mail", "SUCCEEDED", None)
        ]
    );
    let body: String = sqlx::query_scalar("SELECT body FROM outbox WHERE channel = 'email'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(body, "contact_data", "the failure is the step's output");
    let steps: Vec<String> = sqlx::query_scalar(
        "SELECT step_id FROM execution_logs WHERE execution_id = $1 ORDER BY id",
    )
    .bind(b)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(steps, ["sms", "done"]);
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(dead, 0, "a step that may fail leaves no dead letter");
    flow.stop().await;
}

mod flaky_provider {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use axum::Router;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;
    use serde_json::json;
    use sqlx::PgPool;

    use super::common::flow::Flow;

    const EXECUTIONS: usize = 2_000;

    /// Fails 30% of calls with a 5xx and 10% with 429 + `Retry-After: 1`,
    /// at random (seeded).
    async fn flaky(
        State(rng): State<Arc<Mutex<fastrand::Rng>>>,
    ) -> (StatusCode, [(&'static str, &'static str); 1]) {
        let roll = rng.lock().unwrap().f64();
        if roll < 0.3 {
            (StatusCode::SERVICE_UNAVAILABLE, [("x-flaky", "5xx")])
        } else if roll < 0.4 {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")])
        } else {
            (StatusCode::OK, [("x-flaky", "ok")])
        }
    }

    #[sqlx::test]
    async fn two_thousand_sends_to_a_flaky_provider_almost_all_complete_and_none_is_lost(
        pool: PgPool,
    ) {
        let flow = Flow::start(pool.clone()).await;
        let app = Router::new()
            .route("/flaky", post(flaky))
            .with_state(Arc::new(Mutex::new(fastrand::Rng::with_seed(20261127))));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/flaky", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let workflow = flow
            .workflow(
                json!({"steps": [{"id": "send", "type": "webhook", "url": url,
                "retry": {"max_attempts": 8, "backoff": "50ms", "max_backoff": "1s"}}]}),
            )
            .await;
        let contact = flow.contact("ada@example.com", false).await;
        let began = Instant::now();
        for _ in 0..EXECUTIONS {
            flow.start_execution(workflow, contact).await;
        }
        flow.wait_all_final(Duration::from_secs(300)).await;
        let took = began.elapsed();
        let statuses = super::common::flow::statuses(&pool).await;
        let count = |s: &str| {
            statuses
                .iter()
                .find(|(st, _)| st == s)
                .map_or(0, |(_, n)| *n)
        };
        let (completed, failed) = (count("COMPLETED"), count("FAILED"));
        // Executions that met a retryable failure, and of those, the ones
        // a retry brought through.
        let (retried, recovered): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE e.status = 'COMPLETED') FROM workflow_executions e \
             WHERE EXISTS (SELECT 1 FROM execution_logs l WHERE l.execution_id = e.id AND l.status = 'RETRYING')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        let by_class: Vec<(String, i64)> = sqlx::query_as(
            "SELECT error_class, count(*) FROM execution_logs WHERE error_class IS NOT NULL GROUP BY 1 ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let unclassed_failures: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM workflow_executions WHERE status = 'FAILED' \
             AND (error_class IS NULL OR fingerprint IS NULL)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        let rate = 100.0 * recovered as f64 / retried.max(1) as f64;
        println!(
            "flaky provider: {EXECUTIONS} executions in {:.1} s: {completed} completed, {failed} failed; \
             {retried} met a retryable failure, {recovered} of them completed after retries \
             (retry success {rate:.2}%); attempts by class {by_class:?}",
            took.as_secs_f64()
        );
        assert_eq!(
            completed + failed,
            EXECUTIONS as i64,
            "none lost: {statuses:?}"
        );
        assert!(
            completed as f64 >= 0.99 * EXECUTIONS as f64,
            "{completed} completed"
        );
        assert_eq!(
            unclassed_failures, 0,
            "every failure has a class and a fingerprint"
        );
        assert!(rate > 80.0, "retry success {rate:.2}%");
        assert!(
            by_class.iter().any(|(c, _)| c == "rate_limited")
                && by_class.iter().any(|(c, _)| c == "transient"),
            "{by_class:?}"
        );
        flow.stop().await;
    }
}
