//! Timers out of Redis, at size:
//!
//!   cargo bench --bench timers      # needs DATABASE_URL, REDIS_URL (`make services`)
//!   FLOWPILOT_BENCH_WAITING=1000000 cargo bench --bench timers
//!
//! In a scratch database, N WAITING executions whose wake-ups spread over
//! the next 14 days, and 2,000 more due within the next 20 s (a
//! one-step workflow: each wakes into an `add_tag`). The worker and its
//! maintenance loop (the timer pump) run with default settings: Redis
//! memory and jobs held, the pump's pass times, the process's RSS, and how
//! late the 2,000 woke (the step's start minus `resume_at`).

use std::time::{Duration, Instant};

use flowpilot::engine::Settings;
use flowpilot::engine::maintenance::Maintenance;
use flowpilot::queue::{Client, Serializer, keys};
use flowpilot::runtime::Tasks;
use flowpilot::store;
use serde_json::json;
use tokio_util::sync::CancellationToken;

mod scratch;

async fn redis_memory(url: &str) -> anyhow::Result<(f64, i64)> {
    let mut r = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut r).await?;
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    let keys: i64 = redis::cmd("DBSIZE").query_async(&mut r).await?;
    Ok((used / 1024.0 / 1024.0, keys))
}

/// `n` WAITING executions of `workflow` (its one step `woke` next), their
/// wake-ups spread evenly from `from_s` to `from_s + over_s` seconds from now.
async fn park(
    pool: &sqlx::PgPool,
    account: uuid::Uuid,
    workflow: uuid::Uuid,
    n: i64,
    from_s: f64,
    over_s: f64,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO workflow_executions (account_id, workflow_id, workflow_version, contact_id, status, \
           current_step_id, attempt, waiting_reason, resume_at) \
         SELECT $1, $2, 1, (SELECT id FROM contacts LIMIT 1), 'WAITING', 'woke', 1, 'enrollment', \
                now() + make_interval(secs => $4 + g::float8 / $3 * $5) \
         FROM generate_series(1, $3) g",
    )
    .bind(account)
    .bind(workflow)
    .bind(n)
    .bind(from_s)
    .bind(over_s)
    .execute(pool)
    .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let redis = scratch::redis_url()?;
    let waiting: i64 = scratch::env("FLOWPILOT_BENCH_WAITING", 1_000_000);
    let soon: i64 = 2_000;
    let db = scratch::Scratch::create(25).await?;
    let pool = db.pool.clone();
    store::partition::ensure_ahead(&pool, chrono::Utc::now()).await?;
    let prefix = format!("bench-timers-{}", uuid::Uuid::new_v4().simple());
    let queue = Client::connect(&redis, Serializer::Pickle).await?;
    let runtime = scratch::runtime(
        &pool,
        &queue,
        Settings {
            queue_prefix: prefix.clone(),
            ..Settings::default()
        },
        flowpilot::worker::Settings {
            queues: keys::priority_queues(&prefix),
            max_jobs: 20,
            ..flowpilot::worker::Settings::default()
        },
    )?;
    let account = store::account::create(&pool, "bench").await?.id;
    let workflow = runtime
        .engine
        .create_workflow(
            account,
            "bench",
            None,
            true,
            &json!({"steps": [{"id": "woke", "type": "add_tag", "tag": "woke"}]}),
        )
        .await?
        .id;
    let seeding = Instant::now();
    sqlx::query("INSERT INTO contacts (account_id) VALUES ($1)")
        .bind(account)
        .execute(&pool)
        .await?;
    // Far wake-ups over 14 days; then, once the table is vacuumed, the near
    // ones over the next 20 s (from 5 s on, past the pump's first pass).
    park(&pool, account, workflow, waiting, 60.0, 14.0 * 86_400.0).await?;
    sqlx::query("VACUUM ANALYZE").execute(&pool).await?;
    park(&pool, account, workflow, soon, 5.0, 15.0).await?;
    // The times of those due within the minute (not those the seeding
    // outlasted), which the claim clears from the rows.
    sqlx::query(
        "CREATE TABLE bench_due AS SELECT id, resume_at FROM workflow_executions \
         WHERE resume_at > now() AND resume_at < now() + interval '1 minute'",
    )
    .execute(&pool)
    .await?;
    println!(
        "timers: seeded {waiting} WAITING executions over 14 days and {soon} due within 20 s in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );

    let (mem_before, keys_before) = redis_memory(&redis).await?;
    // The pump's passes, timed alone (this process leads maintenance).
    let mut maintenance = Maintenance::new(std::sync::Arc::clone(&runtime.engine));
    let mut passes = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        maintenance.pass().await?;
        passes.push(t.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(maintenance);
    let (mem_after, keys_after) = redis_memory(&redis).await?;
    println!(
        "timers: maintenance passes with the pump: {} ms; Redis {:.1} MB / {} keys before, {:.1} MB / {} keys after ({} jobs in the queue)",
        passes
            .iter()
            .map(|p| format!("{p:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        mem_before,
        keys_before,
        mem_after,
        keys_after,
        redis::cmd("ZCARD")
            .arg(&prefix)
            .query_async::<i64>(
                &mut redis::Client::open(redis.as_str())?
                    .get_multiplexed_async_connection()
                    .await?
            )
            .await?
    );

    let mut tasks = Tasks::new(CancellationToken::new());
    runtime.spawn_worker(&mut tasks)?;
    loop {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM execution_logs WHERE step_id = 'woke'")
                .fetch_one(&pool)
                .await?;
        if done >= soon {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (p50, p99, max): (f64, f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms) \
         FROM (SELECT extract(epoch FROM l.started_at - d.resume_at)::float8 * 1000 AS ms FROM execution_logs l \
               JOIN bench_due d ON d.id = l.execution_id WHERE l.step_id = 'woke') x",
    )
    .fetch_one(&pool)
    .await?;
    println!(
        "timers: {soon} wake-ups: late by p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms; process RSS {:.0} MB",
        scratch::rss_mb()
    );
    tasks.token().cancel();
    tasks.wait().await?;
    db.finish().await
}
