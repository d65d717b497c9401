//! Bulk operations end to end on a real database and Redis: a dry run
//! changes nothing, a bulk retry restarts each failed execution once at
//! its failed step, a bulk cancel stops what runs, an enrollment honours
//! its policy and the account's pacing, a cancelled operation stops, and
//! a `flowpilot worker` killed with SIGKILL mid-operation loses nothing and
//! does nothing twice.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::api::Api;
use common::flow::Flow;
use serde_json::{Value as Json, json};
use sqlx::PgPool;
use tokio::process::{Child, Command};
use uuid::Uuid;

/// Polls the operation until it is final; returns it.
async fn finished(api: &Api, id: &str) -> Json {
    common::eventually(Duration::from_secs(60), "the operation to end", || async {
        let (status, op) = api.get(&format!("/api/v1/operations/{id}")).await;
        assert_eq!(status, 200, "{op}");
        op["finished_at"].is_string().then_some(op)
    })
    .await
}

/// `n` contacts of the flow's account tagged `tag`, made in one statement.
async fn contacts(pool: &PgPool, account: Uuid, n: i32, tag: &str) -> Vec<Uuid> {
    sqlx::query_scalar(
        "INSERT INTO contacts (account_id, email, tags, attributes) \
         SELECT $1, 'c' || g || '@example.com', ARRAY[$3], jsonb_build_object('n', g) \
         FROM generate_series(1, $2) g RETURNING id",
    )
    .bind(account)
    .bind(n)
    .bind(tag)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// `(attempt, first_attempt, status)` of each execution of `workflow`, by id.
async fn attempts(pool: &PgPool, workflow: Uuid) -> Vec<(i32, i32, String)> {
    sqlx::query_as(
        "SELECT attempt, first_attempt, status FROM workflow_executions WHERE workflow_id = $1 ORDER BY id",
    )
    .bind(workflow)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test]
async fn a_dry_run_changes_nothing_and_a_bulk_retry_restarts_each_failed_execution_once(
    pool: PgPool,
) {
    let api = Api::start(pool.clone()).await;
    let flow = &api.flow;
    let workflow = flow
        .workflow(json!({"steps": [
            {"id": "hello", "type": "send_email", "subject": "s", "body": "b"},
            {"id": "crm", "type": "webhook", "url": format!("{}/gone", flow.base)}
        ]}))
        .await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let contact = flow.contact(&format!("r{i}@example.com"), false).await;
        ids.push(flow.start_execution(workflow, contact).await);
    }
    for id in &ids {
        flow.wait_status(*id, "FAILED", Duration::from_secs(30))
            .await;
    }
    let before = attempts(&pool, workflow).await;
    let filter = json!({"workflow_id": workflow, "step": "crm", "error_class": "permanent"});

    let (status, preview) = api
        .post(
            "/api/v1/executions/bulk-retry",
            json!({"filter": filter, "dry_run": true}),
        )
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["count"], 12);
    assert_eq!(preview["sample"].as_array().unwrap().len(), 10);
    assert_eq!(
        attempts(&pool, workflow).await,
        before,
        "a dry run changes nothing"
    );
    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM operations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(none, 0);

    // Bad filters are refused naming the field.
    for (body, field) in [
        (json!({"filter": {}}), "filter"),
        (
            json!({"filter": {"status": ["COMPLETED"]}}),
            "filter.status",
        ),
        (json!({"filter": {"status": ["DONE"]}}), "filter.status"),
        (json!({"filter": {"version": 1}}), "filter.version"),
        (
            json!({"filter": {"error_class": "nope"}}),
            "filter.error_class",
        ),
        (
            json!({"filter": {"failed_after": "10000-01-01T00:00:00Z"}}),
            "filter.failed_after",
        ),
        (
            json!({"filter": {"workflow_id": workflow}, "extra": 1}),
            "extra",
        ),
    ] {
        let (status, err) = api
            .post("/api/v1/executions/bulk-retry", body.clone())
            .await;
        assert!(status == 422 || status == 400, "{body}: {status} {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }

    let (status, op) = api
        .post("/api/v1/executions/bulk-retry", json!({"filter": filter}))
        .await;
    assert_eq!(status, 202, "{op}");
    assert_eq!(
        (op["kind"].as_str(), op["total"].as_i64()),
        (Some("retry"), Some(12))
    );
    let op = finished(&api, op["id"].as_str().unwrap()).await;
    assert_eq!(
        (
            op["state"].as_str(),
            op["done"].as_i64(),
            op["skipped"].as_i64(),
            op["failed"].as_i64()
        ),
        (Some("completed"), Some(12), Some(0), Some(0)),
        "{op}"
    );
    // Each restarted at the failed step with a new attempt (a new
    // idempotency key), and failed there again: the email was not resent.
    for id in &ids {
        flow.wait_status(*id, "FAILED", Duration::from_secs(30))
            .await;
        let logs = common::flow::logs(&pool, *id).await;
        let steps: Vec<(&str, i32)> = logs.iter().map(|l| (l.1.as_str(), l.4)).collect();
        assert_eq!(steps, [("hello", 1), ("crm", 1), ("crm", 2)], "{id}");
    }
    for ((a0, _, _), (a1, first, _)) in before.iter().zip(attempts(&pool, workflow).await) {
        assert_eq!((a1, first), (a0 + 1, a0 + 1));
    }
    let unresolved: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        unresolved, 12,
        "the old dead letters resolved, the new ones open"
    );
    api.finish().await;
}

#[sqlx::test]
async fn a_bulk_cancel_stops_what_waits_and_skips_what_has_finished(pool: PgPool) {
    let api = Api::start(pool.clone()).await;
    let flow = &api.flow;
    let workflow = flow
        .workflow(json!({"steps": [{"id": "nap", "type": "wait", "duration": "1h"}]}))
        .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let contact = flow.contact(&format!("w{i}@example.com"), false).await;
        ids.push(flow.start_execution(workflow, contact).await);
    }
    for id in &ids {
        flow.wait_status(*id, "WAITING", Duration::from_secs(30))
            .await;
    }
    let (status, preview) = api
        .post(
            "/api/v1/executions/bulk-cancel",
            json!({"filter": {"workflow_id": workflow, "status": ["WAITING"]}, "dry_run": true}),
        )
        .await;
    assert_eq!(
        (status, preview["count"].as_i64()),
        (200, Some(5)),
        "{preview}"
    );
    // One finishes first: the operation leaves it alone.
    api.action(&format!("/api/v1/executions/{}/cancel", ids[0]))
        .await;
    let (status, op) = api
        .post(
            "/api/v1/executions/bulk-cancel",
            json!({"filter": {"workflow_id": workflow}}),
        )
        .await;
    assert_eq!((status, op["total"].as_i64()), (202, Some(4)), "{op}");
    let id = op["id"].as_str().unwrap().to_owned();
    let op = finished(&api, &id).await;
    assert_eq!(
        (op["done"].as_i64(), op["state"].as_str()),
        (Some(4), Some("completed"))
    );
    for id in &ids {
        assert_eq!(flow.status(*id).await, "CANCELLED");
    }
    let (status, err) = api.action(&format!("/api/v1/operations/{id}/cancel")).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{err}"
    );
    let (status, _) = api
        .get(&format!("/api/v1/operations/{}", Uuid::new_v4()))
        .await;
    assert_eq!(status, 404);
    let (status, page) = api.get("/api/v1/operations").await;
    assert_eq!((status, page["items"].as_array().unwrap().len()), (200, 1));
    api.finish().await;
}

#[sqlx::test]
async fn an_enrollment_honours_its_policy_and_starts_executions_at_the_accounts_pace(pool: PgPool) {
    let api = Api::start(pool.clone()).await;
    let flow = &api.flow;
    let workflow = flow
        .workflow(json!({"steps": [{"id": "done", "type": "goal", "name": "in"}]}))
        .await;
    let ids = contacts(&pool, flow.account, 40, "spring").await;
    let opted_out = flow.contact("out@example.com", true).await;
    let mut asked: Vec<Uuid> = ids.clone();
    asked.extend([ids[0], opted_out, Uuid::new_v4()]);
    let path = format!("/api/v1/workflows/{workflow}/enroll");

    let (status, op) = api.post(&path, json!({"contact_ids": asked})).await;
    assert_eq!((status, op["total"].as_i64()), (202, Some(42)), "{op}");
    let op = finished(&api, op["id"].as_str().unwrap()).await;
    assert_eq!(
        (
            op["done"].as_i64(),
            op["skipped"].as_i64(),
            op["request"]["policy"].as_str()
        ),
        (Some(40), Some(2), Some("never")),
        "{op}"
    );
    // Start times 10 ms apart (FLOWPILOT_ENROLL_RATE 100/s), none at once.
    let (first, last, distinct): (f64, f64, i64) = sqlx::query_as(
        "SELECT extract(epoch FROM min(resume_at))::float8, extract(epoch FROM max(resume_at))::float8, \
           count(DISTINCT resume_at) FROM workflow_executions WHERE workflow_id = $1",
    )
    .bind(workflow)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(distinct, 40);
    assert!(
        (last - first - 0.39).abs() < 0.001,
        "spread {:.3} s",
        last - first
    );
    // They start (the maintenance loop wakes them) and finish.
    flow.wait_all_final(Duration::from_secs(30)).await;

    // The policies, on the same contacts, now all finished in it.
    for (policy, enrolled) in [
        ("never", 0),
        ("after_finished", 40),
        ("after_finished", 0),
        ("always", 40),
    ] {
        let (status, op) = api
            .post(
                &path,
                json!({"contact_filter": {"tags": ["spring"]}, "policy": policy}),
            )
            .await;
        assert_eq!((status, op["total"].as_i64()), (202, Some(40)), "{op}");
        let op = finished(&api, op["id"].as_str().unwrap()).await;
        assert_eq!(op["done"].as_i64(), Some(enrolled), "{policy}: {op}");
    }
    // By attribute; bad requests name the field.
    let (_, op) = api
        .post(
            &path,
            json!({"contact_filter": {"attributes": {"n": 7}}, "policy": "always"}),
        )
        .await;
    assert_eq!(finished(&api, op["id"].as_str().unwrap()).await["done"], 1);
    for (body, field) in [
        (json!({}), "contact_ids"),
        (json!({"contact_ids": []}), "contact_ids"),
        (
            json!({"contact_ids": [ids[0]], "contact_filter": {"tags": ["x"]}}),
            "contact_ids",
        ),
        (json!({"contact_filter": {}}), "contact_filter"),
        (
            json!({"contact_ids": [ids[0]], "policy": "sometimes"}),
            "policy",
        ),
        (
            json!({"contact_ids": [ids[0]], "priority": "urgent"}),
            "priority",
        ),
        (json!({"contact_ids": ["nope"]}), "contact_ids[0]"),
    ] {
        let (status, err) = api.post(&path, body.clone()).await;
        assert_eq!(status, 422, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
    let (status, _) = api
        .post(
            &format!("/api/v1/workflows/{}/enroll", Uuid::new_v4()),
            json!({"contact_ids": [ids[0]]}),
        )
        .await;
    assert_eq!(status, 404);
    api.finish().await;
}

#[sqlx::test]
async fn a_hundred_thousand_ids_fit_in_one_call_and_a_cancelled_operation_does_nothing_more(
    pool: PgPool,
) {
    let api = common::api::Api::start_with_no_worker(pool.clone()).await;
    let workflow = api
        .flow
        .workflow(json!({"steps": [{"id": "done", "type": "goal", "name": "in"}]}))
        .await;
    let ids: Vec<Uuid> = (0..100_000).map(|_| Uuid::new_v4()).collect();
    let path = format!("/api/v1/workflows/{workflow}/enroll");
    let (status, op) = api.post(&path, json!({"contact_ids": ids})).await;
    assert_eq!((status, op["total"].as_i64()), (202, Some(100_000)));
    let mut too_many = ids.clone();
    too_many.push(Uuid::new_v4());
    let (status, err) = api.post(&path, json!({"contact_ids": too_many})).await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (422, Some("contact_ids")),
        "{err}"
    );

    let id = op["id"].as_str().unwrap();
    let (status, op) = api.action(&format!("/api/v1/operations/{id}/cancel")).await;
    assert_eq!(
        (status, op["state"].as_str()),
        (200, Some("cancelled")),
        "{op}"
    );
    // A worker that picks its job up now does nothing.
    let mut api = api;
    api.flow.spawn_worker().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, op) = api.get(&format!("/api/v1/operations/{id}")).await;
    assert_eq!(
        (op["state"].as_str(), op["done"].as_i64()),
        (Some("cancelled"), Some(0))
    );
    api.finish().await;
}

/// The real binary as a worker on `prefix`, taking over a dead worker's
/// operation after 1 s.
fn worker(pool: &PgPool, prefix: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_flowpilot"))
        .args([
            "worker",
            "--queue-prefix",
            prefix,
            "--poll-delay",
            "20ms",
            "--log",
            "warn",
        ])
        .env("DATABASE_URL", common::database_url(pool))
        .env("REDIS_URL", common::redis_url())
        .env("FLOWPILOT_OPERATION_LEASE", "1s")
        .env("FLOWPILOT_ENROLL_RATE", "1")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn flowpilot worker")
}

async fn progress(pool: &PgPool, id: Uuid) -> (String, i32, i32) {
    sqlx::query_as("SELECT state, position, done FROM operations WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_worker_killed_mid_operation_loses_nothing_and_does_nothing_twice(pool: PgPool) {
    // An engine to record the operations; the work is done by the binary.
    let flow = Flow::start_with(pool.clone(), false).await;
    let workflow = flow
        .workflow(json!({"steps": [{"id": "done", "type": "goal", "name": "in"}]}))
        .await;
    let ids = contacts(&pool, flow.account, 60_000, "kill").await;
    let op = flow
        .engine
        .enroll(flowpilot::engine::operation::EnrollRequest {
            account_id: flow.account,
            workflow_id: workflow,
            contacts: flowpilot::engine::operation::Contacts::Ids(ids),
            policy: flowpilot::store::bulk::Reenroll::Never,
            priority: Default::default(),
            metadata: json!({}),
            created_by: None,
        })
        .await
        .unwrap();

    let mut first = worker(&pool, &flow.prefix);
    let seen = common::eventually(Duration::from_secs(60), "a first batch", || async {
        let p = progress(&pool, op.id).await;
        (p.1 > 0).then_some(p)
    })
    .await;
    first.kill().await.unwrap(); // SIGKILL, mid-operation
    let frozen = progress(&pool, op.id).await;
    assert_eq!(
        frozen.0, "running",
        "killed before the end: {seen:?} {frozen:?}"
    );
    assert!(frozen.1 < 60_000, "{frozen:?}");
    let enrolled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM workflow_executions WHERE workflow_id = $1")
            .bind(workflow)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        enrolled,
        i64::from(frozen.2),
        "progress and rows commit together"
    );

    let _second = worker(&pool, &flow.prefix);
    let done = common::eventually(Duration::from_secs(90), "the operation to end", || async {
        let p = progress(&pool, op.id).await;
        (p.0 == "completed").then_some(p)
    })
    .await;
    assert_eq!(done.2, 60_000);
    let (rows, contacts): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT contact_id) FROM workflow_executions WHERE workflow_id = $1",
    )
    .bind(workflow)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (rows, contacts),
        (60_000, 60_000),
        "each contact enrolled once"
    );
    flow.stop().await;
}

/// Runs `flowpilot args...` against the flow's database and queues;
/// returns exit code, stdout (parsed) and stderr.
async fn cli(flow: &Flow, args: &[&str]) -> (i32, Json, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flowpilot"))
        .args(args)
        .args([
            "--account",
            &flow.account.to_string(),
            "--queue-prefix",
            &flow.prefix,
        ])
        .args(["--log", "error"])
        .env("DATABASE_URL", common::database_url(&flow.pool))
        .env("REDIS_URL", &flow.redis_url)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Json::Null);
    (
        out.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[sqlx::test]
async fn the_cli_enrolls_counts_cancels_and_refuses_bad_flags_with_exit_code_2(pool: PgPool) {
    let flow = Flow::start(pool.clone()).await;
    let workflow = flow
        .workflow(json!({"steps": [{"id": "nap", "type": "wait", "duration": "1h"}]}))
        .await
        .to_string();
    contacts(&pool, flow.account, 30, "cli").await;

    let (code, op, err) = cli(&flow, &["enroll", "--workflow", &workflow, "--tag", "cli"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (op["state"].as_str(), op["done"].as_i64()),
        (Some("completed"), Some(30)),
        "{op}"
    );
    let (code, preview, err) = cli(
        &flow,
        &["executions", "cancel", "--workflow", &workflow, "--dry-run"],
    )
    .await;
    assert_eq!((code, preview["count"].as_i64()), (0, Some(30)), "{err}");
    let (code, op, err) = cli(&flow, &["executions", "cancel", "--workflow", &workflow]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(op["done"].as_i64(), Some(30), "{op}");
    let id = op["id"].as_str().unwrap().to_owned();
    let (code, got, _) = cli(&flow, &["operations", "get", "--id", &id]).await;
    assert_eq!((code, got["id"].as_str()), (0, Some(id.as_str())));

    let unknown = Uuid::new_v4().to_string();
    for (args, says) in [
        (vec!["executions", "retry"], "name at least one filter"),
        (
            vec!["executions", "retry", "--status", "COMPLETED"],
            "--status",
        ),
        (vec!["executions", "retry", "--status", "DONE"], "--status"),
        (
            vec![
                "enroll",
                "--workflow",
                &workflow,
                "--tag",
                "cli",
                "--policy",
                "sometimes",
            ],
            "--policy",
        ),
        (vec!["enroll", "--workflow", &workflow], "--contacts-file"),
        (
            vec!["enroll", "--workflow", &unknown, "--tag", "cli"],
            "workflow not found",
        ),
        (vec!["operations", "get", "--id", &unknown], "no operation"),
        (
            vec!["operations", "cancel", "--id", &id],
            "can no longer be cancelled",
        ),
    ] {
        let (code, _, err) = cli(&flow, &args).await;
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let trail: Vec<String> = sqlx::query_scalar("SELECT action FROM audit_log ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(trail, ["enroll", "executions cancel"]);
    flow.stop().await;
}
