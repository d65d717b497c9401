//! How fast the analytics API answers on a large record: one workflow
//! version with 1,000,000 executions and 10,000,000 log rows by default
//! (the worst case: everything in the one version asked about).
//!
//!   cargo bench --bench analytics       # needs DATABASE_URL (`make services`)
//!   FLOWPILOT_BENCH_EXECUTIONS=1000000 FLOWPILOT_BENCH_RUNS=200 cargo bench --bench analytics
//!
//! Seeds a scratch database with SQL: 100,000 contacts, a ten-step
//! workflow, executions over the last 30 days inserted QUEUED and then
//! ended (so the triggers write their events as the engine's updates
//! would), ten log rows each with run and parked times, errors and branch
//! sides. Then times the fold that builds the rollups from scratch, and
//! the analytics and suggestions answers as the handlers compute them
//! (workflow, definition, rollups, funnel, timings, bottleneck, trends,
//! suggestions), and the raw GROUP BY over the log rows the rollups
//! replace. Prints p50 / p95 / max and each rollup query's plan.

use std::time::Instant;

use chrono::Utc;
use flowpilot::engine::{definition::Definition, insight};
use flowpilot::store::{self, Reader};

mod scratch;
mod seed;

use scratch::{env, timed};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let executions: i64 = env("FLOWPILOT_BENCH_EXECUTIONS", 1_000_000);
    let runs: usize = env("FLOWPILOT_BENCH_RUNS", 200);

    let db = scratch::Scratch::create(8).await?;
    let pool = db.pool.clone();
    store::partition::ensure_ahead(&pool, Utc::now() - chrono::Duration::days(31)).await?;

    let seeding = Instant::now();
    let (account, workflow) = seed::nurture(&pool, executions).await?;
    sqlx::query("VACUUM ANALYZE").execute(&pool).await?;
    let (logs, events): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM execution_logs), (SELECT count(*) FROM analytics_events)",
    )
    .fetch_one(&pool)
    .await?;
    println!(
        "analytics: seeded {executions} executions, {logs} log rows, {events} execution events in {:.0} s",
        seeding.elapsed().as_secs_f64()
    );

    // The rollups from nothing: what a first fold after upgrading does.
    let folding = Instant::now();
    let (folded_logs, folded_events) = seed::fold_all(&pool).await?;
    let took = folding.elapsed().as_secs_f64();
    sqlx::query("VACUUM ANALYZE").execute(&pool).await?;
    let sizes: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM analytics_steps), (SELECT count(*) FROM analytics_step_times), \
                (SELECT count(*) FROM analytics_errors), (SELECT count(*) FROM analytics_executions)",
    )
    .fetch_one(&pool)
    .await?;
    println!(
        "analytics: fold from scratch: {folded_logs} log rows and {folded_events} events in {took:.1} s ({:.0} log rows/s); \
         rollup rows: steps {}, step_times {}, errors {}, executions {}",
        folded_logs as f64 / took,
        sizes.0,
        sizes.1,
        sizes.2,
        sizes.3
    );

    let reader = Reader::new(pool.clone());
    let today = Utc::now().date_naive();
    let days = (today - chrono::Duration::days(29), today);
    let answer = || {
        let reader = reader.clone();
        async move {
            let w = reader
                .workflow(account, workflow)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no workflow"))?;
            let doc = reader
                .definition(workflow, w.latest_version)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no version"))?;
            let def = Definition::parse(&doc).map_err(|e| anyhow::anyhow!("{e}"))?;
            let a = reader.analytics(account, workflow, 1, days).await?;
            let out = (
                insight::funnel(&def, &a),
                insight::timings(&def, &a),
                insight::bottleneck(&def, &a),
                insight::trends(&a, days.0, days.1),
                insight::suggestions(&def, &a),
            );
            anyhow::Ok(out)
        }
    };
    let (funnel, timings, bottleneck, trends, suggestions) = answer().await?;
    let entered: Vec<i64> = funnel.iter().map(|f| f.entered).collect();
    println!(
        "analytics: funnel entered {entered:?}; {} timings, bottleneck {:?}, {} days of trends, suggestions {:?}",
        timings.len(),
        bottleneck.map(|b| b.step_id),
        trends.len(),
        suggestions
            .iter()
            .map(|s| (&s.kind, &s.step_id))
            .collect::<Vec<_>>()
    );
    let (p50, p95, max) = timed(runs, answer).await?;
    println!(
        "analytics: GET /workflows/{{id}}/analytics (+ suggestions), 30 days, {runs} runs: p50 {p50:.1} ms  p95 {p95:.1} ms  max {max:.1} ms"
    );
    let year = (today - chrono::Duration::days(365), today);
    let (p50, p95, max) = timed(runs / 4, || {
        let reader = reader.clone();
        async move { anyhow::Ok(reader.analytics(account, workflow, 1, year).await?) }
    })
    .await?;
    println!(
        "analytics: rollups over 366 days, {} runs: p50 {p50:.1} ms  p95 {p95:.1} ms  max {max:.1} ms",
        runs / 4
    );

    // What the rollups replace: the funnel's counts straight from the log.
    let raw = "SELECT step_id, count(*) FILTER (WHERE status = 'SUCCEEDED'), count(*) FILTER (WHERE status = 'FAILED'), \
                 sum(duration_ms) FROM execution_logs \
               WHERE account_id = $1 AND workflow_id = $2 AND workflow_version = 1 \
                 AND created_at >= now() - interval '30 days' GROUP BY step_id";
    let (p50, _, max) = timed(3, || {
        let pool = pool.clone();
        async move {
            sqlx::query(raw)
                .bind(account)
                .bind(workflow)
                .fetch_all(&pool)
                .await?;
            anyhow::Ok(())
        }
    })
    .await?;
    println!(
        "analytics: the same counts from the raw log rows, 3 runs: p50 {p50:.0} ms  max {max:.0} ms"
    );

    for (name, sql) in [
        (
            "steps",
            "SELECT step_id, sum(succeeded), sum(exec_ms) FROM analytics_steps WHERE account_id = $1 AND workflow_id = $2 AND workflow_version = 1 AND day BETWEEN $3 AND $4 GROUP BY step_id",
        ),
        (
            "step_times",
            "SELECT step_id, kind, bucket, sum(count) FROM analytics_step_times WHERE account_id = $1 AND workflow_id = $2 AND workflow_version = 1 AND day BETWEEN $3 AND $4 GROUP BY step_id, kind, bucket",
        ),
        (
            "errors",
            "SELECT step_id, error_class, fingerprint, sum(count) AS n FROM analytics_errors WHERE account_id = $1 AND workflow_id = $2 AND workflow_version = 1 AND day BETWEEN $3 AND $4 GROUP BY 1, 2, 3 ORDER BY n DESC LIMIT 50",
        ),
        (
            "open",
            "SELECT current_step_id, count(*) FROM workflow_executions WHERE account_id = $1 AND workflow_id = $2 AND workflow_version = 1 AND status IN ('QUEUED','RUNNING','WAITING','RETRYING') AND $3::date IS NOT NULL AND $4::date IS NOT NULL GROUP BY current_step_id",
        ),
    ] {
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) {sql}"
        )))
        .bind(account)
        .bind(workflow)
        .bind(days.0)
        .bind(days.1)
        .fetch_all(&pool)
        .await?;
        println!("analytics: plan of {name}:");
        for line in plan {
            println!("    {line}");
        }
    }
    db.finish().await
}
