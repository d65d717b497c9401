//! The engine with the real Python arq: a Python application starts
//! executions with `enqueue_job('execute_workflow', ...)`, and `arq` steps
//! are run by a Python arq worker.

mod common;

use std::time::Duration;

use common::flow::Flow;
use flowpilot::queue::keys;
use redis::AsyncCommands;
use serde_json::{Value as Json, json};
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test]
async fn python_arq_starts_an_execution_that_completes_and_bad_arguments_start_nothing(
    pool: PgPool,
) {
    let flow = Flow::start(pool.clone()).await;
    let contact = flow.contact("ada@example.com", false).await;
    let workflow = flow.workflow(flow.six_steps()).await;
    let (ok, repeat, bad_uuid, unknown, extra) = (
        common::unique("start"),
        common::unique("repeat"),
        common::unique("bad-uuid"),
        common::unique("unknown"),
        common::unique("extra"),
    );
    let (wf, c) = (workflow.to_string(), contact.to_string());
    let jobs = json!([
        {"id": ok, "function": "execute_workflow", "args": [wf, c],
         "kwargs": {"idempotency_key": "signup-1", "priority": "high", "metadata": {"campaign": "spring"}}},
        {"id": repeat, "function": "execute_workflow", "args": [wf, c], "kwargs": {"idempotency_key": "signup-1"}},
        {"id": bad_uuid, "function": "execute_workflow", "args": ["not-a-uuid", c]},
        {"id": unknown, "function": "execute_workflow", "args": [Uuid::new_v4().to_string(), c]},
        {"id": extra, "function": "execute_workflow", "args": [wf, c], "kwargs": {"colour": "red"}},
    ]);
    let report = common::python_peer(&[
        "produce",
        "--queue",
        &flow.prefix,
        "--jobs",
        &jobs.to_string(),
        "--timeout",
        "20",
    ])
    .await;

    let first = &report[&ok];
    assert_eq!(first["ok"], json!(true), "{first}");
    assert_eq!(first["value"]["status"], json!("QUEUED"));
    assert_eq!(first["value"]["created"], json!(true));
    let id: Uuid = first["value"]["execution_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        report[&repeat]["value"]["execution_id"],
        first["value"]["execution_id"]
    );
    assert_eq!(report[&repeat]["value"]["created"], json!(false));
    for (job, class, text) in [
        (
            &bad_uuid,
            "builtins.ValueError",
            "`workflow_id` must be a UUID string",
        ),
        (&unknown, "builtins.LookupError", "not found"),
        (
            &extra,
            "builtins.ValueError",
            "unexpected argument `colour`",
        ),
    ] {
        let raised = &report[job]["raised"];
        assert_eq!(raised["$exception"], json!(class), "{raised}");
        assert!(
            raised["args"][0].as_str().unwrap().contains(text),
            "{raised}"
        );
    }

    flow.wait_status(id, "COMPLETED", Duration::from_secs(30))
        .await;
    let (count, source, priority, metadata): (i64, String, String, Json) = sqlx::query_as(
        "SELECT count(*) OVER (), source, priority, metadata FROM workflow_executions",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (count, source.as_str(), priority.as_str()),
        (1, "arq", "high"),
        "bad calls created nothing"
    );
    assert_eq!(metadata, json!({"campaign": "spring"}));
    flow.stop().await;
}

#[sqlx::test]
async fn an_arq_step_runs_on_a_python_worker_and_the_execution_resumes_with_its_result(
    pool: PgPool,
) {
    let flow = Flow::start(pool.clone()).await;
    let external = common::unique("external");
    let contact = flow.contact("ada@example.com", false).await;
    let workflow = flow
        .workflow(json!({"steps": [
            {"id": "score", "type": "arq", "function": "py_mul", "queue": external, "args": [6, "{{contact.attributes.answer}}"]},
            {"id": "save", "type": "update_contact", "attributes": {"score": "{{steps.score.result}}"}}
        ]}))
        .await;
    sqlx::query("UPDATE contacts SET attributes = attributes || '{\"answer\": 7}'")
        .execute(&pool)
        .await
        .unwrap();
    let failing = flow
        .workflow(json!({"steps": [
            {"id": "boom", "type": "arq", "function": "py_fail", "queue": external, "kwargs": {"message": "kaput"}}
        ]}))
        .await;
    let id = flow.start_execution(workflow, contact).await;
    let bad = flow.start_execution(failing, contact).await;
    for e in [id, bad] {
        flow.wait_status(e, "WAITING", Duration::from_secs(10))
            .await;
        let reason: Option<String> =
            sqlx::query_scalar("SELECT waiting_reason FROM workflow_executions WHERE id = $1")
                .bind(e)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(
            reason.as_deref(),
            Some("arq_job"),
            "waits without holding a worker slot"
        );
    }

    let counters = common::python_peer(&["consume", "--queue", &external, "--timeout", "30"]).await;
    assert_eq!(counters, json!({"complete": 1, "failed": 1, "retried": 0}));

    flow.wait_status(id, "COMPLETED", Duration::from_secs(30))
        .await;
    let attributes: Json = sqlx::query_scalar("SELECT attributes FROM contacts WHERE id = $1")
        .bind(contact)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(attributes["score"], json!(42));
    flow.wait_status(bad, "FAILED", Duration::from_secs(30))
        .await;
    let error: String = sqlx::query_scalar("SELECT error FROM workflow_executions WHERE id = $1")
        .bind(bad)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(error.contains("ValueError: kaput"), "{error}");
    flow.stop().await;
}

#[sqlx::test]
async fn a_python_arq_worker_started_with_defaults_never_takes_flowpilots_jobs(pool: PgPool) {
    // Default queue names are shared by everything on a Redis database, so
    // this test has one of its own.
    let mut url = url::Url::parse(&common::redis_url()).unwrap();
    url.set_path("/7");
    let url = url.to_string();
    let mut r = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("FLUSHDB").query_async(&mut r).await.unwrap();

    let prefix = flowpilot::engine::Settings::default().queue_prefix;
    let mut flow = Flow::start_queued(pool.clone(), &url, &prefix, false).await;
    let contact = flow.contact("ada@example.com", false).await;
    let workflow = flow
        .workflow(json!({"steps": [{"id": "hi", "type": "send_sms", "body": "hi"}]}))
        .await;
    let id = flow.start_execution(workflow, contact).await;
    // arq's own defaults: queue `arq:queue`, burst mode until it is empty.
    let counters = common::python_peer_at(&url, &["consume", "--timeout", "10"]).await;
    assert_eq!(
        (&counters["complete"], &counters["failed"]),
        (&json!(0), &json!(0)),
        "the Python worker ran nothing: {counters}"
    );
    let job = format!("run_execution:{id}:0");
    let result: bool = r.exists(keys::result(&job)).await.unwrap();
    assert!(!result, "no failed result left behind");
    flow.spawn_worker().await;
    flow.wait_status(id, "COMPLETED", Duration::from_secs(20))
        .await;
    flow.stop().await;
    let _: () = redis::cmd("FLUSHDB").query_async(&mut r).await.unwrap();
}
