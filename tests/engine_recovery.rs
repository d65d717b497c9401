//! Recovery when Redis or PostgreSQL misbehave: a job that ended without
//! running, a database connection killed mid-checkpoint, a backlog the
//! maintenance loop must not add to, and a manual retry as a new attempt.

mod common;

use std::time::{Duration, Instant};

use common::flow::{Flow, logs, outbox_by_channel, statuses};
use flowpilot::engine::maintenance::Maintenance;
use flowpilot::queue::keys;
use redis::AsyncCommands;
use serde_json::json;
use sqlx::PgPool;

/// `(status, wake_seq)` of every execution, oldest first.
async fn rows(pool: &PgPool) -> Vec<(String, i32)> {
    sqlx::query_as("SELECT status, wake_seq FROM workflow_executions ORDER BY created_at, id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_queued_execution_whose_job_ended_before_running_completes_within_the_stale_threshold(
    pool: PgPool,
) {
    // The job key of a queued run_execution vanishes (evicted, or flushed
    // between claim and read) while its queue entry stays: the worker fails
    // the job as arq does ("job expired") and keeps that result for an
    // hour. Recovery must not wait for the result key to expire.
    let mut flow = Flow::start_with(pool.clone(), false).await;
    let id = flow
        .enter(json!({"steps": [{"id": "hi", "type": "send_sms", "body": "hi"}]}))
        .await;
    let job = format!("run_execution:{id}:0");
    let mut r = common::raw().await;
    let removed: u64 = r.del(keys::job(&job)).await.unwrap();
    assert_eq!(removed, 1, "the job key was there");
    let queued: Option<f64> = r.zscore(&flow.prefix, &job).await.unwrap();
    assert!(queued.is_some(), "the queue entry stays");

    let started = Instant::now();
    flow.spawn_worker().await;
    let settings = common::flow::engine_settings(&flow.prefix);
    let limit =
        settings.stale_queued_after + settings.maintenance_interval + Duration::from_secs(3);
    flow.wait_status(id, "COMPLETED", limit).await;
    println!("completed {:?} after the worker started", started.elapsed());
    let result: bool = r.exists(keys::result(&job)).await.unwrap();
    assert!(result, "the failed result of the old job id is still there");
    assert_eq!(
        rows(&pool).await,
        [("COMPLETED".to_owned(), 1)],
        "a fresh job id"
    );
    flow.stop().await;
}

/// Makes the first `kills` log inserts terminate their own database
/// connection mid-checkpoint, as `pg_terminate_backend` from outside does
/// when it lands inside a transaction. A sequence counts them: it is the
/// one thing the killed transaction cannot roll back.
async fn kill_connections_mid_checkpoint(pool: &PgPool, kills: i32) {
    for sql in [
        "CREATE SEQUENCE chaos_kills".to_owned(),
        format!(
            "CREATE FUNCTION chaos_kill() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN \
               IF nextval('chaos_kills') <= {kills} THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF; \
               RETURN NEW; \
             END $$"
        ),
        "CREATE TRIGGER chaos_kill BEFORE INSERT ON execution_logs \
         FOR EACH ROW EXECUTE FUNCTION chaos_kill()"
            .to_owned(),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .unwrap();
    }
}

#[sqlx::test]
async fn connections_killed_mid_checkpoint_cost_seconds_not_a_lease(pool: PgPool) {
    let flow = Flow::start_with(pool.clone(), false).await;
    let workflow = flow
        .workflow(json!({"steps": [
            {"id": "hello", "type": "send_email", "subject": "s", "body": "b"},
            {"id": "tag", "type": "add_tag", "tag": "greeted"},
            {"id": "bye", "type": "send_sms", "body": "bye"}
        ]}))
        .await;
    const N: usize = 20;
    const KILLS: i32 = 8;
    for i in 0..N {
        let contact = flow.contact(&format!("c{i}@example.com"), false).await;
        flow.start_execution(workflow, contact).await;
    }
    kill_connections_mid_checkpoint(&pool, KILLS).await;
    let mut flow = flow;
    let started = Instant::now();
    flow.spawn_worker().await;
    // The lease is 20 s here: a claim left behind would hold its execution
    // that long. Given back, it costs well under that.
    flow.wait_all_final(Duration::from_secs(15)).await;
    println!(
        "{N} executions final {:?} after the worker started",
        started.elapsed()
    );
    let tried: i64 = sqlx::query_scalar("SELECT last_value FROM chaos_kills")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(tried > i64::from(KILLS), "every planned kill happened");
    assert_eq!(statuses(&pool).await, [("COMPLETED".to_owned(), N as i64)]);
    let per_execution: Vec<i64> =
        sqlx::query_scalar("SELECT count(*) FROM execution_logs GROUP BY execution_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(per_execution, vec![3; N], "one log row per step");
    assert_eq!(
        outbox_by_channel(&pool).await,
        [("email".to_owned(), N as i64), ("sms".to_owned(), N as i64)]
    );
    flow.stop().await;
}

#[sqlx::test]
async fn maintenance_adds_no_second_job_while_the_first_is_still_queued(pool: PgPool) {
    let flow = Flow::start(pool.clone()).await;
    let workflow = flow
        .workflow(json!({"steps": [
            {"id": "pause", "type": "wait", "duration": "1s"},
            {"id": "done", "type": "end"}
        ]}))
        .await;
    const N: usize = 10;
    for i in 0..N {
        let contact = flow.contact(&format!("c{i}@example.com"), false).await;
        flow.start_execution(workflow, contact).await;
    }
    common::eventually(Duration::from_secs(10), "every execution WAITING", || {
        let pool = pool.clone();
        async move {
            let r = rows(&pool).await;
            r.iter().all(|(s, _)| s == "WAITING").then_some(())
        }
    })
    .await;
    // No worker from here on: the deferred jobs come due and stay queued,
    // as behind a backlog.
    let engine = std::sync::Arc::clone(&flow.engine);
    let prefix = flow.prefix.clone();
    flow.stop().await;
    let before = rows(&pool).await;
    // Wait until the database says every row is due past the grace, so
    // "nothing moved" below is the maintenance loop's choice, not timing.
    let grace = common::flow::engine_settings(&prefix).due_grace;
    common::eventually(
        Duration::from_secs(10),
        "every row due past the grace",
        || {
            let pool = pool.clone();
            async move {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM workflow_executions \
                 WHERE status <> 'WAITING' OR resume_at > now() - make_interval(secs => $1)",
                )
                .bind(grace.as_secs_f64())
                .fetch_one(&pool)
                .await
                .unwrap();
                (waiting == 0).then_some(())
            }
        },
    )
    .await;
    let mut maintenance = Maintenance::new(engine);
    assert_eq!(maintenance.pass().await.unwrap(), 0, "nothing moved");
    assert_eq!(rows(&pool).await, before, "rows untouched");
    let mut r = common::raw().await;
    let queued: u64 = r.zcard(&prefix).await.unwrap();
    assert_eq!(queued, N as u64, "one job per execution, no second one");

    // Lost with Redis: now each gets a fresh job, once.
    let _: () = r.del(&prefix).await.unwrap();
    assert_eq!(maintenance.pass().await.unwrap(), N);
    assert_eq!(maintenance.pass().await.unwrap(), 0);
    let queued: u64 = r.zcard(&prefix).await.unwrap();
    assert_eq!(queued, N as u64);
    assert!(
        rows(&pool)
            .await
            .iter()
            .zip(&before)
            .all(|((s, seq), (_, old))| s == "QUEUED" && *seq == old + 1)
    );
    let _: () = r.del(&prefix).await.unwrap();
}

#[sqlx::test]
async fn a_manual_retry_is_a_new_attempt_with_a_new_key_and_a_whole_retry_policy(pool: PgPool) {
    // The receiver fails the first 5 calls; the policy allows 3 attempts.
    let flow = Flow::start(pool.clone()).await;
    let id = flow
        .enter(json!({"steps": [
            {"id": "flaky", "type": "webhook", "url": format!("{}/flaky/5", flow.base)},
            {"id": "done", "type": "end"}
        ]}))
        .await;
    flow.wait_status(id, "FAILED", Duration::from_secs(30))
        .await;
    flow.engine.retry(flow.account, id).await.unwrap();
    flow.wait_status(id, "COMPLETED", Duration::from_secs(30))
        .await;
    assert_eq!(
        flow.receiver.keys(),
        (1..=6).map(|a| format!("{id}:0:{a}")).collect::<Vec<_>>()
    );
    let attempts: Vec<(String, i32)> = logs(&pool, id)
        .await
        .into_iter()
        .map(|(.., status, attempt)| (status, attempt))
        .collect();
    let s = |st: &str, a| (st.to_owned(), a);
    assert_eq!(
        attempts,
        [
            s("RETRYING", 1),
            s("RETRYING", 2),
            s("FAILED", 3),
            s("RETRYING", 4),
            s("RETRYING", 5),
            s("SUCCEEDED", 6),
            s("SUCCEEDED", 1)
        ]
    );
    flow.stop().await;
}
