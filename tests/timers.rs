//! Timers out of Redis: a wait beyond the timer horizon holds no job in
//! Redis, the maintenance loop's timer pump enqueues it as its time comes
//! within the horizon, and it wakes on time, once; wiped from Redis after
//! the pump moved it, it still wakes (the recovery's path).

mod common;

use std::time::Duration;

use common::flow::{Flow, duplicate_attempts};
use redis::AsyncCommands;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// Jobs of the flow's normal queue.
async fn queued(flow: &Flow) -> usize {
    let mut r = common::raw().await;
    r.zcard(&flow.prefix).await.unwrap()
}

/// `(id, resume_at)` of the flow's WAITING executions.
async fn waiting(pool: &PgPool) -> Vec<(Uuid, chrono::DateTime<chrono::Utc>)> {
    sqlx::query_as("SELECT id, resume_at FROM workflow_executions WHERE status = 'WAITING'")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn flow(pool: PgPool) -> Flow {
    Flow::start_tuned(
        pool,
        &common::redis_url(),
        &common::unique("timers"),
        true,
        |s| {
            s.timer_horizon = Duration::from_secs(1);
        },
    )
    .await
}

#[sqlx::test]
async fn a_wait_beyond_the_horizon_lives_in_postgres_until_the_pump_moves_it_and_wakes_on_time_once(
    pool: PgPool,
) {
    let flow = flow(pool.clone()).await;
    let workflow = flow
        .workflow(json!({"steps": [
            {"id": "pause", "type": "wait", "duration": "4s"},
            {"id": "done", "type": "add_tag", "tag": "woke"}
        ]}))
        .await;
    for i in 0..20 {
        let c = flow.contact(&format!("t{i}@example.com"), false).await;
        flow.start_execution(workflow, c).await;
    }
    let parked = common::eventually(Duration::from_secs(10), "20 parked", || async {
        let w = waiting(&pool).await;
        (w.len() == 20).then_some(w)
    })
    .await;
    // Parked 4 s ahead with a 1 s horizon: nothing in Redis for them.
    assert_eq!(queued(&flow).await, 0, "no deferred job beyond the horizon");
    // Within the horizon of their time, the pump enqueues them.
    let first = parked.iter().map(|p| p.1).min().unwrap();
    let until_pumped = (first - chrono::Utc::now() - chrono::Duration::milliseconds(700))
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(until_pumped).await;
    common::eventually(
        Duration::from_secs(3),
        "the pump to enqueue them",
        || async { (queued(&flow).await > 0).then_some(()) },
    )
    .await;
    flow.wait_all_final(Duration::from_secs(20)).await;
    // Each woke once, within a second of its time.
    let late: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM l.started_at - e.created_at)::float8 FROM execution_logs l \
         JOIN workflow_executions e ON e.id = l.execution_id WHERE l.step_id = 'done'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(late.len(), 20);
    let lateness: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM d.started_at - (w.response->>'waited_until')::timestamptz)::float8 \
         FROM execution_logs d JOIN execution_logs w ON w.execution_id = d.execution_id AND w.step_id = 'pause' \
         WHERE d.step_id = 'done'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let worst = lateness.iter().copied().fold(f64::MIN, f64::max);
    assert!(worst < 1.0, "woke {worst:.3} s late");
    assert_eq!(duplicate_attempts(&pool).await, 0);
    flow.stop().await;
}

#[sqlx::test]
async fn a_pumped_wake_up_wiped_from_redis_still_wakes(pool: PgPool) {
    let flow = flow(pool.clone()).await;
    let workflow = flow
        .workflow(json!({"steps": [
            {"id": "pause", "type": "wait", "duration": "3s"},
            {"id": "done", "type": "end"}
        ]}))
        .await;
    let c = flow.contact("wiped@example.com", false).await;
    let id = flow.start_execution(workflow, c).await;
    common::eventually(
        Duration::from_secs(10),
        "the pump to enqueue it",
        || async { (queued(&flow).await == 1).then_some(()) },
    )
    .await;
    // Redis loses the job (our queue and the job keys only: Redis is shared).
    let mut r = common::raw().await;
    let ids: Vec<String> = r.zrange(&flow.prefix, 0, -1).await.unwrap();
    let _: () = r.del(&flow.prefix).await.unwrap();
    for job in ids {
        let _: () = r.del(flowpilot::queue::keys::job(&job)).await.unwrap();
    }
    flow.wait_status(id, "COMPLETED", Duration::from_secs(20))
        .await;
    assert_eq!(duplicate_attempts(&pool).await, 0);
    flow.stop().await;
}
