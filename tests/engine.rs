//! The engine end to end against real PostgreSQL (a fresh database per
//! test), Redis and a local webhook receiver.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::flow::{Flow, duplicate_attempts, logs};
use flowpilot::engine::executor::Run;
use flowpilot::engine::{Error, Priority, StartRequest};
use flowpilot::queue::keys;
use redis::AsyncCommands;
use serde_json::{Value as Json, json};
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test]
async fn a_six_step_workflow_runs_to_completed_with_one_log_row_per_step_and_every_effect(
    pool: PgPool,
) {
    let flow = Flow::start(pool.clone()).await;
    let contact = flow.contact("ada@example.com", false).await;
    let workflow = flow.workflow(flow.six_steps()).await;
    let started = std::time::Instant::now();
    let id = flow.start_execution(workflow, contact).await;
    flow.wait_status(id, "COMPLETED", Duration::from_secs(30))
        .await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the wait step waited"
    );

    let rows = logs(&pool, id).await;
    let expected: Vec<(i32, &str, &str)> = vec![
        (0, "welcome", "send_email"),
        (1, "pause", "wait"),
        (2, "notify", "webhook"),
        (3, "is_pro", "condition"),
        (4, "upgrade", "update_contact"),
        (5, "sms", "send_sms"),
    ];
    assert_eq!(rows.len(), 6, "{rows:?}");
    for (row, (index, step, kind)) in rows.iter().zip(expected) {
        assert_eq!(
            (row.0, row.1.as_str(), row.2.as_str(), row.3.as_str(), row.4),
            (index, step, kind, "SUCCEEDED", 1)
        );
    }

    let waited: i32 = sqlx::query_scalar(
        "SELECT duration_ms FROM execution_logs WHERE execution_id = $1 AND step_index = 1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        waited >= 1000,
        "the wait step's log row spans the wait: {waited} ms"
    );

    // Email and SMS in the outbox, each once, with rendered templates.
    let outbox: Vec<(String, String, Option<String>, String)> =
        sqlx::query_as("SELECT channel, recipient, subject, idempotency_key FROM outbox WHERE execution_id = $1 ORDER BY created_at")
            .bind(id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        outbox,
        vec![
            (
                "email".into(),
                "ada@example.com".into(),
                Some("Hi Ada".into()),
                format!("{id}:0:1")
            ),
            (
                "sms".into(),
                "+15550100002".into(),
                None,
                format!("{id}:5:1")
            ),
        ]
    );
    // The webhook, once, with its idempotency key and templated body.
    let hooks = flow.receiver.hooks();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].idempotency_key, format!("{id}:2:1"));
    assert_eq!(
        hooks[0].body,
        json!({"contact": contact.to_string(), "plan": "pro"})
    );
    // The contact update, with a value from an earlier step's response.
    let attributes: Json = sqlx::query_scalar("SELECT attributes FROM contacts WHERE id = $1")
        .bind(contact)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(attributes["stage"], json!("onboarded"));
    assert_eq!(attributes["hook_status"], json!(200));
    // Nothing says it is waiting any more.
    let (reason, lease): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT waiting_reason, lease_owner FROM workflow_executions WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((reason, lease), (None, None));
    flow.stop().await;
}

#[sqlx::test]
async fn a_hundred_concurrent_executions_complete_without_running_a_step_twice(pool: PgPool) {
    let flow = Flow::start(pool.clone()).await;
    let workflow = flow.workflow(flow.six_steps()).await;
    let mut ids = Vec::new();
    for i in 0..100 {
        let contact = flow.contact(&format!("c{i}@example.com"), false).await;
        ids.push(flow.start_execution(workflow, contact).await);
    }
    flow.wait_all_final(Duration::from_secs(90)).await;
    let completed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM workflow_executions WHERE status = 'COMPLETED'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(completed, 100);
    assert_eq!(
        duplicate_attempts(&pool).await,
        0,
        "a step ran twice within one attempt"
    );
    let per_execution: Vec<i64> =
        sqlx::query_scalar("SELECT count(*) FROM execution_logs GROUP BY execution_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(per_execution, vec![6; 100]);
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(outbox, 200);
    let keys: HashSet<String> = flow.receiver.keys().into_iter().collect();
    assert_eq!(keys.len(), 100);
    flow.stop().await;
}

#[sqlx::test]
async fn a_transient_failure_is_retried_with_a_new_attempt_key_until_it_succeeds(pool: PgPool) {
    let flow = Flow::start(pool.clone()).await;
    let contact = flow.contact("ada@example.com", false).await;
    let workflow = flow
        .workflow(json!({"steps": [
            {"id": "flaky", "type": "webhook", "url": format!("{}/flaky/2", flow.base)},
            {"id": "done", "type": "end"}
        ]}))
        .await;
    let id = flow.start_execution(workflow, contact).await;
    flow.wait_status(id, "COMPLETED", Duration::from_secs(30))
        .await;
    let rows = logs(&pool, id).await;
    let statuses: Vec<(&str, i32)> = rows.iter().map(|r| (r.3.as_str(), r.4)).collect();
    assert_eq!(
        statuses,
        vec![
            ("RETRYING", 1),
            ("RETRYING", 2),
            ("SUCCEEDED", 3),
            ("SUCCEEDED", 1)
        ]
    );
    assert_eq!(
        flow.receiver.keys(),
        [1, 2, 3].map(|a| format!("{id}:0:{a}"))
    );
    flow.stop().await;
}

#[sqlx::test]
async fn a_permanent_failure_fails_the_execution_with_a_dead_letter(pool: PgPool) {
    let flow = Flow::start(pool.clone()).await;
    let contact = flow.contact("ada@example.com", false).await;
    let workflow = flow
        .workflow(json!({"steps": [{"id": "gone", "type": "webhook", "url": format!("{}/gone", flow.base)}]}))
        .await;
    let id = flow.start_execution(workflow, contact).await;
    flow.wait_status(id, "FAILED", Duration::from_secs(30))
        .await;
    let (error,): (String,) = sqlx::query_as("SELECT error FROM workflow_executions WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(error, "webhook answered HTTP 404");
    let dead: (String, i32) =
        sqlx::query_as("SELECT action_type, attempts FROM dead_letters WHERE execution_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(dead, ("webhook".into(), 1));
    let mut r = common::raw().await;
    let score: Option<f64> = r
        .zscore(keys::dead_queue(&flow.prefix), id.to_string())
        .await
        .unwrap();
    assert!(score.is_some(), "announced in the dead set");
    let _: () = r.del(keys::dead_queue(&flow.prefix)).await.unwrap();

    // A manual retry starts it again at the failed step, and settles the
    // dead letter of the failure it retries; failing again files a new one.
    flow.engine.retry(flow.account, id).await.unwrap();
    flow.wait_status(id, "FAILED", Duration::from_secs(30))
        .await;
    assert_eq!(flow.receiver.hooks().len(), 2);
    let (resolved, open): (i64, i64) = sqlx::query_as(
        "SELECT count(resolved_at), count(*) - count(resolved_at) FROM dead_letters WHERE execution_id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((resolved, open), (1, 1));
    flow.stop().await;
}

#[sqlx::test]
async fn a_cancelled_waiting_execution_stays_cancelled_when_its_wake_up_comes(pool: PgPool) {
    let flow = Flow::start(pool.clone()).await;
    let contact = flow.contact("ada@example.com", false).await;
    let workflow = flow
        .workflow(json!({"steps": [
            {"id": "pause", "type": "wait", "duration": "1s"},
            {"id": "hello", "type": "send_email", "subject": "s", "body": "b"}
        ]}))
        .await;
    // The engine signals each run's end: the first run parks, and the
    // wake-up of the cancelled execution must come and find nothing to do.
    let mut runs = flow.engine.watch_runs();
    let id = flow.start_execution(workflow, contact).await;
    let mut next_run = async || {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match runs.recv().await.unwrap() {
                    (run_id, run) if run_id == id => break run,
                    _ => {}
                }
            }
        })
        .await
        .expect("a run of the execution ended")
    };
    assert_eq!(next_run().await, Run::Waiting);
    let (reason, resume): (Option<String>, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT waiting_reason, resume_at FROM workflow_executions WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(reason.as_deref(), Some("wait"));
    assert!(resume.is_some());
    flow.engine.cancel(flow.account, id).await.unwrap();
    let woke = next_run().await;
    assert_eq!(woke, Run::Skipped);
    assert_eq!(flow.status(id).await, "CANCELLED");
    let sent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sent, 0);
    let again = flow.engine.cancel(flow.account, id).await.unwrap_err();
    assert!(matches!(again, Error::Illegal(_)), "{again}");
    flow.stop().await;
}

#[sqlx::test]
async fn bad_input_gives_a_clear_error_and_creates_nothing(pool: PgPool) {
    let flow = Flow::start_with(pool.clone(), false).await;
    let contact = flow.contact("ada@example.com", false).await;
    let opted_out = flow.contact("gone@example.com", true).await;

    let err = flow
        .engine
        .create_workflow(
            flow.account,
            "bad",
            None,
            true,
            &json!({"steps": [{"id": "x", "type": "webhook"}]}),
        )
        .await
        .unwrap_err();
    match err {
        Error::Invalid { field, message } => {
            assert_eq!(field, "definition.steps[0].url");
            assert!(message.contains("step `x`"), "{message}");
        }
        other => panic!("{other}"),
    }
    let workflows: i64 = sqlx::query_scalar("SELECT count(*) FROM workflows")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(workflows, 0);

    let workflow = flow
        .workflow(json!({"steps": [{"id": "end", "type": "end"}]}))
        .await;
    let start = |workflow_id, contact_id| StartRequest {
        account_id: flow.account,
        workflow_id,
        contact_id,
        priority: Priority::High,
        idempotency_key: None,
        metadata: json!({}),
        source: "api",
    };
    let err = flow
        .engine
        .start(start(workflow, Uuid::new_v4()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ContactNotFound), "{err}");
    assert_eq!(err.field(), Some("contact_id"));
    let err = flow
        .engine
        .start(start(Uuid::new_v4(), contact))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WorkflowNotFound), "{err}");
    assert_eq!(err.field(), Some("workflow_id"));
    let err = flow
        .engine
        .start(start(workflow, opted_out))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ContactOptedOut), "{err}");
    assert_eq!(err.field(), Some("contact_id"));
    let err = flow
        .engine
        .start(StartRequest {
            metadata: json!([1]),
            ..start(workflow, contact)
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Invalid { ref field, .. } if field == "metadata"),
        "{err}"
    );
    // Through the engine, the one door: it drops its cached copy (a write
    // straight to the table would be seen within the cache's second).
    flow.engine
        .set_active(flow.account, workflow, false)
        .await
        .unwrap();
    let err = flow
        .engine
        .start(start(workflow, contact))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WorkflowInactive), "{err}");
    assert_eq!(err.field(), Some("workflow_id"));
    // Another account's contact is not found in this one.
    let other = flowpilot::store::account::create(&pool, "other")
        .await
        .unwrap()
        .id;
    let err = flow
        .engine
        .start(StartRequest {
            account_id: other,
            ..start(workflow, contact)
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::WorkflowNotFound | Error::ContactNotFound),
        "{err}"
    );

    let executions: i64 = sqlx::query_scalar("SELECT count(*) FROM workflow_executions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(executions, 0, "nothing was created");
    let mut r = common::raw().await;
    for q in [keys::high_queue(&flow.prefix), flow.prefix.clone()] {
        assert_eq!(
            r.zcard::<_, u64>(&q).await.unwrap(),
            0,
            "nothing was enqueued on {q}"
        );
    }
    flow.stop().await;
}

#[sqlx::test]
async fn a_repeated_start_with_one_idempotency_key_starts_one_execution(pool: PgPool) {
    let flow = Flow::start_with(pool.clone(), false).await;
    let contact = flow.contact("ada@example.com", false).await;
    let workflow = flow
        .workflow(json!({"steps": [{"id": "end", "type": "end"}]}))
        .await;
    let req = StartRequest {
        account_id: flow.account,
        workflow_id: workflow,
        contact_id: contact,
        priority: Priority::Normal,
        idempotency_key: Some("signup-42".into()),
        metadata: json!({"campaign": "spring"}),
        source: "api",
    };
    let (first, created) = flow.engine.start(req.clone()).await.unwrap();
    assert!(created);
    let (second, created) = flow.engine.start(req).await.unwrap();
    assert!(!created);
    assert_eq!(first.id, second.id);
    let mut r = common::raw().await;
    assert_eq!(r.zcard::<_, u64>(&flow.prefix).await.unwrap(), 1, "one job");
    let _: () = r.del(&flow.prefix).await.unwrap();
    flow.stop().await;
}

#[sqlx::test]
async fn a_lost_job_is_recovered_from_the_row_by_maintenance(pool: PgPool) {
    // Start without a worker, wipe the queue (Redis lost), then run one:
    // the maintenance loop re-enqueues the QUEUED row once it is stale.
    let idle = Flow::start_with(pool.clone(), false).await;
    let contact = idle.contact("ada@example.com", false).await;
    let workflow = idle
        .workflow(json!({"steps": [{"id": "hi", "type": "send_sms", "body": "hi"}]}))
        .await;
    let id = idle.start_execution(workflow, contact).await;
    let mut r = common::raw().await;
    let _: () = r.del(&idle.prefix).await.unwrap();
    let _: () = r
        .del(keys::job(&format!("run_execution:{id}:0")))
        .await
        .unwrap();
    idle.stop().await;

    sqlx::query("UPDATE workflow_executions SET updated_at = now() - interval '1 minute'")
        .execute(&pool)
        .await
        .unwrap();
    let flow = Flow::start(pool.clone()).await;
    flow.wait_status(id, "COMPLETED", Duration::from_secs(30))
        .await;
    flow.stop().await;
}

#[sqlx::test]
async fn a_template_that_grows_past_the_cap_fails_its_step_for_good_saying_why(pool: PgPool) {
    // Each step doubles the attribute: 64 B would reach 4 MiB after 16.
    let flow = Flow::start(pool.clone()).await;
    let contact = flow.contact("ada@example.com", false).await;
    sqlx::query("UPDATE contacts SET attributes = jsonb_build_object('blob', repeat('x', 64))")
        .execute(&pool)
        .await
        .unwrap();
    let steps: Vec<Json> = (0..16)
        .map(|i| {
            json!({"id": format!("double{i}"), "type": "update_contact",
                   "attributes": {"blob": "{{contact.attributes.blob}}{{contact.attributes.blob}}"}})
        })
        .collect();
    let workflow = flow.workflow(json!({ "steps": steps })).await;
    let id = flow.start_execution(workflow, contact).await;
    flow.wait_status(id, "FAILED", Duration::from_secs(30))
        .await;
    let (error, step): (String, String) =
        sqlx::query_as("SELECT error, current_step_id FROM workflow_executions WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        error.contains("attributes") && error.contains("65536"),
        "{error}"
    );
    // 64 B doubled 10 times is 64 KiB: the string still renders, the
    // attributes object holding it does not fit.
    assert_eq!(step, "double9");
    let size: i32 = sqlx::query_scalar("SELECT length(attributes->>'blob') FROM contacts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(size, 64 << 9, "the last change that fit");
    flow.stop().await;
}

#[sqlx::test]
async fn a_refused_webhook_keeps_its_answer_and_a_nul_in_an_answer_is_kept_readable(pool: PgPool) {
    let flow = Flow::start(pool.clone()).await;
    let contact = flow.contact("ada@example.com", false).await;
    let refused = flow
        .workflow(json!({"steps": [{"id": "hook", "type": "webhook", "url": format!("{}/refuse", flow.base)}]}))
        .await;
    let id = flow.start_execution(refused, contact).await;
    flow.wait_status(id, "FAILED", Duration::from_secs(30))
        .await;
    let (status, response): (String, Json) =
        sqlx::query_as("SELECT status, response FROM execution_logs WHERE execution_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(status, "FAILED");
    assert_eq!(response["status"], json!(400));
    assert_eq!(
        response["body"],
        json!({"error": "email is not deliverable"})
    );
    assert_eq!(response["headers"]["x-request-id"], json!("req-7"));

    // PostgreSQL refuses NUL in jsonb: kept as U+FFFD, the step goes on.
    let nul = flow
        .workflow(json!({"steps": [
            {"id": "hook", "type": "webhook", "url": format!("{}/nul", flow.base)},
            {"id": "save", "type": "update_contact", "attributes": {"note": "{{steps.hook.body.note}}"}}
        ]}))
        .await;
    let id = flow.start_execution(nul, contact).await;
    flow.wait_status(id, "COMPLETED", Duration::from_secs(30))
        .await;
    let note: String = sqlx::query_scalar("SELECT attributes->>'note' FROM contacts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(note, "a\u{fffd}b");
    flow.stop().await;
}

#[sqlx::test]
async fn a_cancel_writes_what_the_plan_says_a_cancel_writes(pool: PgPool) {
    use flowpilot::engine::plan::{self, Command, Machine};
    let flow = Flow::start_with(pool.clone(), false).await;
    let id = flow
        .enter(json!({"steps": [{"id": "pause", "type": "wait", "duration": "1h"}]}))
        .await;
    // Parked with a lease left behind, so every field the cancel owns has
    // something to change.
    sqlx::query(
        "UPDATE workflow_executions SET status = 'WAITING', waiting_reason = 'wait', \
         resume_at = now() + interval '1 hour', next_attempt_at = now(), \
         lease_owner = 'gone', lease_expires_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    let before = flowpilot::store::execution::get(&pool, id)
        .await
        .unwrap()
        .unwrap();
    let after = flow.engine.cancel(flow.account, id).await.unwrap();
    let planned = plan::plan(
        &Machine::of(&before),
        Command::Cancel,
        after.completed_at.expect("a cancel stamps completed_at"),
    )
    .unwrap();
    assert_eq!(Machine::of(&after), planned.to);
    assert_eq!(after.revision, before.revision + 1);
    flow.stop().await;
}
