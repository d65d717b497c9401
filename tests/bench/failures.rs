//! How fast `GET /api/v1/errors` groups failures with 1,000,000 log rows:
//!
//!   cargo bench --bench failures        # needs DATABASE_URL (`make services`)
//!   FLOWPILOT_BENCH_LOG_ROWS=1000000 FLOWPILOT_BENCH_FAILING=0.1 cargo bench --bench failures
//!
//! Seeds a scratch database with executions of 10 workflows, 10 log rows
//! each, spread over the last 24 hours, a share of them failed or retried
//! with 200 fingerprints; then times the store query the endpoint runs
//! (default window, a workflow filter, a second page), each 50 times, and
//! prints p50 / p95 / max. `FLOWPILOT_BENCH_KEEP_DB=1` keeps the scratch
//! database to look at query plans.

use std::time::{Duration, Instant};

use chrono::Utc;
use flowpilot::store::{self, failure::GroupFilter};

fn summary(times: Vec<Duration>) -> String {
    let (p50, p95, max) = scratch::percentiles(times);
    format!("p50 {p50:.1} ms, p95 {p95:.1} ms, max {max:.1} ms")
}

mod scratch;

use scratch::env;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows: i64 = env("FLOWPILOT_BENCH_LOG_ROWS", 1_000_000);
    let failing: f64 = env("FLOWPILOT_BENCH_FAILING", 0.1);
    let executions = rows / 10;

    let db = scratch::Scratch::create(4).await?;
    let pool = db.pool.clone();
    store::partition::ensure_ahead(&pool, Utc::now() - chrono::Duration::days(1)).await?;

    let seeding = Instant::now();
    let account = store::account::create(&pool, "bench").await?.id;
    sqlx::query("INSERT INTO contacts (account_id, email) VALUES ($1, 'a@example.com')")
        .bind(account)
        .execute(&pool)
        .await?;
    scratch::ten_workflows(&pool, account).await?;
    sqlx::query(
        "INSERT INTO workflow_executions (account_id, workflow_id, workflow_version, contact_id, status, created_at) \
         SELECT $1, w.ids[1 + g % 10], 1, (SELECT id FROM contacts LIMIT 1), 'COMPLETED', \
                now() - random() * interval '24 hours' \
         FROM generate_series(1, $2) g, (SELECT array_agg(id ORDER BY name) AS ids FROM workflows) w",
    )
    .bind(account)
    .bind(executions)
    .execute(&pool)
    .await?;
    // Ten log rows per execution; a share of them failed or retried, each
    // with one of 20 fingerprints per workflow.
    sqlx::query(
        "INSERT INTO execution_logs (execution_id, account_id, step_index, step_id, action_type, attempt, status, \
           error, error_class, fingerprint, workflow_id, workflow_version, started_at, completed_at, created_at) \
         SELECT e.id, e.account_id, s, 's' || s, 'webhook', 1, \
                CASE WHEN f THEN 'RETRYING' ELSE 'SUCCEEDED' END, \
                CASE WHEN f THEN 'webhook answered HTTP 503' END, \
                CASE WHEN f THEN 'transient' END, \
                CASE WHEN f THEN lpad(to_hex(abs(hashtext(e.workflow_id::text || s))), 16, '0') END, \
                e.workflow_id, 1, t, t, t \
         FROM workflow_executions e, generate_series(0, 9) s, \
              LATERAL (SELECT random() < $1 AS f, e.created_at + s * interval '1 second' AS t) x",
    )
    .bind(failing)
    .execute(&pool)
    .await?;
    // What autovacuum does to an insert-only table soon after: the
    // visibility map lets the grouping read its covering index alone.
    sqlx::query("VACUUM ANALYZE").execute(&pool).await?;
    let (logs, failures): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(fingerprint) FROM execution_logs")
            .fetch_one(&pool)
            .await?;
    let workflow: uuid::Uuid = sqlx::query_scalar("SELECT id FROM workflows ORDER BY name LIMIT 1")
        .fetch_one(&pool)
        .await?;
    println!(
        "failures: seeded {executions} executions, {logs} log rows ({failures} failed or retried) in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );

    let now = Utc::now();
    let window = GroupFilter {
        since: now - chrono::Duration::hours(24),
        until: now,
        workflow_id: None,
        error_class: None,
    };
    let one_workflow = GroupFilter {
        workflow_id: Some(workflow),
        ..window.clone()
    };
    let first = store::failure::groups(&pool, account, &window, None, 50).await?;
    let after = first.last().map(|g| store::failure::GroupAfter {
        last_seen: g.last_seen,
        fingerprint: g.fingerprint.clone(),
    });
    for (name, filter, after) in [
        ("last 24 h, first page of 50", &window, None),
        ("last 24 h, one workflow", &one_workflow, None),
        ("last 24 h, second page", &window, after.as_ref()),
    ] {
        let mut times = Vec::new();
        let mut groups = 0;
        for _ in 0..50 {
            let t = Instant::now();
            groups = store::failure::groups(&pool, account, filter, after, 50)
                .await?
                .len();
            times.push(t.elapsed());
        }
        println!("failures: {name}: {groups} groups; {}", summary(times));
    }

    println!("failures: account {account}");
    db.finish().await
}
