//! Batching against real PostgreSQL, Redis and a local receiver: webhook
//! steps that opt in go to their receiver together, each step keeping its
//! own log row, idempotency key and outcome; the outbox records many
//! messages in one insert, each once per idempotency key.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::flow::Flow;
use flowpilot::action::Delivery;
use flowpilot::action::email::Message;
use flowpilot::provider::{EmailProvider, Outbox};
use serde_json::{Value as Json, json};
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test]
async fn batched_webhook_steps_share_calls_and_keep_their_own_log_rows_and_outcomes(pool: PgPool) {
    let flow = Flow::start(pool.clone()).await;
    let workflow = flow
        .workflow(json!({"steps": [
            {"id": "sync", "type": "webhook", "url": format!("{}/batch", flow.base),
             "body": {"email": "{{contact.email}}"}, "batch": {"max": 10, "within": "300ms"}},
            {"id": "welcome", "type": "send_email", "subject": "Hi", "body": "Welcome."}
        ]}))
        .await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let email = if i == 7 {
            "bad@example.com".to_owned()
        } else {
            format!("c{i}@example.com")
        };
        let contact = flow.contact(&email, false).await;
        ids.push(flow.start_execution(workflow, contact).await);
    }
    flow.wait_all_final(Duration::from_secs(60)).await;

    // Fewer calls than steps, none over the batch's max, every step's own
    // key in exactly one of them.
    let calls = flow.receiver.hooks();
    let sizes: Vec<usize> = calls
        .iter()
        .map(|h| h.body["batch"].as_array().unwrap().len())
        .collect();
    eprintln!("30 steps in {} calls: {sizes:?}", calls.len());
    assert!(
        calls.len() <= 10,
        "30 steps in {} calls: {sizes:?}",
        calls.len()
    );
    assert!(sizes.iter().all(|&n| (1..=10).contains(&n)), "{sizes:?}");
    let keys: Vec<String> = calls
        .iter()
        .flat_map(|h| h.body["batch"].as_array().unwrap().clone())
        .map(|i| i["idempotency_key"].as_str().unwrap().to_owned())
        .collect();
    let expected: HashSet<String> = ids.iter().map(|id| format!("{id}:0:1")).collect();
    assert_eq!(keys.len(), 30, "each step went once");
    assert_eq!(keys.iter().cloned().collect::<HashSet<_>>(), expected);
    assert!(
        calls
            .iter()
            .all(|h| h.idempotency_key.starts_with("batch:")),
        "a batch has a key of its own"
    );

    // One log row per step, each with its own answer from the batch.
    let rows: Vec<(Uuid, String, Json)> = sqlx::query_as(
        "SELECT execution_id, status, response FROM execution_logs WHERE step_id = 'sync'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 30);
    for (id, status, response) in &rows {
        if *id == ids[7] {
            assert_eq!(status, "FAILED", "{response}");
            assert_eq!(response["status"], 422, "{response}");
        } else {
            assert_eq!(status, "SUCCEEDED", "{response}");
            assert_eq!(response["body"]["accepted"], format!("{id}:0:1"));
            let n = response["batch"]["size"].as_u64().unwrap();
            assert!(
                response["batch"]["index"].as_u64().unwrap() < n,
                "{response}"
            );
        }
    }
    assert_eq!(flow.status(ids[7]).await, "FAILED");
    let completed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM workflow_executions WHERE status = 'COMPLETED'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(completed, 29);
    // The email step after it ran once per completed execution.
    let emails: i64 = sqlx::query_scalar("SELECT count(DISTINCT execution_id) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(emails, 29);
    flow.stop().await;
}

#[sqlx::test]
async fn the_outbox_records_many_messages_in_one_insert_each_once_per_key(pool: PgPool) {
    let account = flowpilot::store::account::create(&pool, "batch")
        .await
        .unwrap()
        .id;
    let sizes = prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("s", "s")).unwrap();
    let outbox = Arc::new(Outbox::batched(pool.clone(), 100, Some(sizes.clone())));
    let send = |i: usize| {
        let outbox = outbox.clone();
        async move {
            let msg = Message {
                to: format!("c{i}@example.com"),
                subject: format!("s{i}"),
                body: "b".into(),
                from: None,
            };
            let d = Delivery {
                account_id: Some(account),
                execution_id: None,
                idempotency_key: format!("k{i}"),
            };
            outbox.send(&msg, &d).await.unwrap()
        }
    };
    let first = futures::future::join_all((0..200).map(send)).await;
    let inserts = sizes.get_sample_count();
    assert!(
        (2..200).contains(&inserts),
        "200 messages in {inserts} inserts"
    );
    assert_eq!(sizes.get_sample_sum(), 200.0);
    assert!(first.iter().all(|r| r["duplicate"] == false));
    let ids: HashSet<&str> = first
        .iter()
        .map(|r| r["outbox_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 200);

    // Sent again (a re-run of the same attempts, with 50 new ones among
    // them): the same rows, said to be duplicates; only the new ones land.
    let again = futures::future::join_all((150..250).map(send)).await;
    for (i, r) in (150..250).zip(&again) {
        assert_eq!(r["duplicate"], i < 200, "{i}: {r}");
        if i < 200 {
            assert_eq!(r["outbox_id"], first[i]["outbox_id"]);
        }
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 250);
}
