//! Checkpoint throughput of the engine as it is today (one transaction per
//! step), the baseline for batched checkpoints:
//!
//!   cargo bench --bench checkpoints            # needs DATABASE_URL, REDIS_URL (`make services`)
//!   FLOWPILOT_BENCH_EXECUTIONS=400 FLOWPILOT_BENCH_STEPS=25 cargo bench --bench checkpoints
//!
//! Runs N executions of a K-step workflow whose steps only touch
//! PostgreSQL (tags, attributes, conditions), through the real worker and
//! Redis queue, in a scratch database, and prints steps per second and the
//! per-step time the engine recorded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flowpilot::engine::{Settings, StartRequest};
use flowpilot::queue::{Client, Serializer, keys};
use flowpilot::store;
use serde_json::json;
use tokio_util::sync::CancellationToken;

mod scratch;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let redis = scratch::redis_url()?;
    let executions: usize = scratch::env("FLOWPILOT_BENCH_EXECUTIONS", 200);
    let steps: usize = scratch::env("FLOWPILOT_BENCH_STEPS", 20);
    let concurrency: usize = scratch::env("FLOWPILOT_BENCH_CONCURRENCY", 20);

    let db = scratch::Scratch::create((concurrency + 5) as u32).await?;
    let pool = db.pool.clone();
    let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let queue = Client::connect(&redis, Serializer::Pickle).await?;
    let runtime = scratch::runtime(
        &pool,
        &queue,
        Settings {
            queue_prefix: prefix.clone(),
            run_budget: Duration::from_secs(60),
            ..Settings::default()
        },
        flowpilot::worker::Settings {
            queues: vec![prefix.clone()],
            max_jobs: concurrency,
            poll_delay: Duration::from_millis(5),
            ..flowpilot::worker::Settings::default()
        },
    )?;
    let engine = Arc::clone(&runtime.engine);
    let account = store::account::create(&pool, "bench").await?.id;
    let definition = json!({"steps": (0..steps).map(|i| match i % 3 {
        0 => json!({"id": format!("s{i}"), "type": "add_tag", "tag": format!("t{i}")}),
        1 => json!({"id": format!("s{i}"), "type": "condition", "if": {"tag": format!("t{}", i - 1)}}),
        _ => json!({"id": format!("s{i}"), "type": "update_contact", "attributes": {format!("a{i}"): i}}),
    }).collect::<Vec<_>>()});
    let workflow = engine
        .create_workflow(account, "bench", None, true, &definition)
        .await?
        .id;
    let mut contacts = Vec::with_capacity(executions);
    for i in 0..executions {
        let c = store::contact::NewContact {
            email: Some(format!("c{i}@example.com")),
            ..Default::default()
        };
        contacts.push(store::contact::insert(&pool, account, &c).await?.id);
    }

    let stop = CancellationToken::new();
    let running = tokio::spawn(runtime.worker()?.run(stop.clone()));

    let began = Instant::now();
    for contact in contacts {
        engine
            .start(StartRequest {
                account_id: account,
                workflow_id: workflow,
                contact_id: contact,
                priority: Default::default(),
                idempotency_key: None,
                metadata: json!({}),
                source: "api",
            })
            .await?;
    }
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM workflow_executions WHERE status <> 'COMPLETED'",
        )
        .fetch_one(&pool)
        .await?;
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = began.elapsed();
    let (p50, p99): (f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - started_at) * 1000), \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - started_at) * 1000) \
         FROM execution_logs",
    )
    .fetch_one(&pool)
    .await?;
    stop.cancel();
    running.await??;
    let total = executions * steps;
    println!(
        "checkpoints: {executions} executions x {steps} steps = {total} steps in {:.2} s: {:.0} steps/s \
         ({concurrency} concurrent jobs); action+checkpoint p50 {p50:.2} ms, p99 {p99:.2} ms",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64(),
    );

    db.finish().await?;
    let mut r = redis::Client::open(redis.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let _: () = redis::cmd("DEL")
        .arg(&prefix)
        .arg(keys::dead_queue(&prefix))
        .query_async(&mut r)
        .await?;
    Ok(())
}
