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

use std::time::{Duration, Instant};

use chrono::Utc;
use flowpilot::engine::{definition::Definition, insight};
use flowpilot::store::{self, Reader};

mod scratch;

use scratch::env;

const DEFINITION: &str = r#"{"steps": [
  {"id": "welcome", "type": "send_email", "subject": "Hi", "body": "Welcome"},
  {"id": "pause", "type": "wait", "duration": "1d"},
  {"id": "check", "type": "condition", "if": {"tag": "t1"}, "then": "crm"},
  {"id": "nudge", "type": "send_sms", "body": "Still there?"},
  {"id": "crm", "type": "webhook", "url": "https://crm.example.com/hook"},
  {"id": "follow", "type": "wait", "duration": "2h"},
  {"id": "mark", "type": "update_contact", "attributes": {"nurtured": "yes"}},
  {"id": "enrich", "type": "webhook", "url": "https://enrich.example.com/hook"},
  {"id": "final", "type": "send_email", "subject": "Thanks", "body": "Thanks"},
  {"id": "done", "type": "end"}
]}"#;

/// The action type of step `s<k>` in [`DEFINITION`], for the seeded rows.
const KINDS: &str = "ARRAY['send_email','wait','condition','send_sms','webhook','wait','update_contact','webhook','send_email','end']";
const IDS: &str =
    "ARRAY['welcome','pause','check','nudge','crm','follow','mark','enrich','final','done']";

async fn timed<F, Fut, T>(runs: usize, mut f: F) -> anyhow::Result<(f64, f64, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f().await?;
        times.push(t.elapsed());
    }
    Ok(scratch::percentiles(times))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let executions: i64 = env("FLOWPILOT_BENCH_EXECUTIONS", 1_000_000);
    let runs: usize = env("FLOWPILOT_BENCH_RUNS", 200);

    let db = scratch::Scratch::create(8).await?;
    let pool = db.pool.clone();
    store::partition::ensure_ahead(&pool, Utc::now() - chrono::Duration::days(31)).await?;

    let seeding = Instant::now();
    let account = store::account::create(&pool, "bench").await?.id;
    sqlx::query(
        "INSERT INTO contacts (account_id, email, tags, timezone) \
         SELECT $1, 'c' || g || '@example.com', ARRAY['t' || (g % 3)], \
                (ARRAY['UTC','Europe/Paris','America/New_York','Asia/Tokyo'])[1 + g % 4] \
         FROM generate_series(1, 100000) g",
    )
    .bind(account)
    .execute(&pool)
    .await?;
    let workflow: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO workflows (account_id, name, latest_version, is_active) VALUES ($1, 'nurture', 1, true) RETURNING id",
    )
    .bind(account)
    .fetch_one(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO workflow_versions (workflow_id, version, account_id, definition) VALUES ($1, 1, $2, $3::jsonb)",
    )
    .bind(workflow)
    .bind(account)
    .bind(DEFINITION)
    .execute(&pool)
    .await?;
    // Inserted QUEUED, in batches of 100,000 (one statement-level trigger
    // event each), then ended as the engine's checkpoints end them: 85%
    // completed, 6% failed, 2% cancelled; the rest stay open at a step.
    for from in (0..executions).step_by(100_000) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO workflow_executions (account_id, workflow_id, workflow_version, contact_id, status, \
               current_step_index, current_step_id, created_at) \
             SELECT $1, $2, 1, c.ids[1 + g % 100000], 'QUEUED', g % 10, ({IDS})[1 + g % 10], \
                    now() - (g::float8 / $4) * interval '29 days' \
             FROM generate_series($3, least($3 + 99999, $4 - 1)) g, \
                  (SELECT array_agg(id) AS ids FROM contacts) c"
        )))
        .bind(account)
        .bind(workflow)
        .bind(from)
        .bind(executions)
        .execute(&pool)
        .await?;
    }
    sqlx::query(
        "UPDATE workflow_executions SET \
           status = CASE WHEN n < 85 THEN 'COMPLETED' WHEN n < 91 THEN 'FAILED' WHEN n < 93 THEN 'CANCELLED' \
                         WHEN n < 97 THEN 'WAITING' ELSE 'QUEUED' END, \
           waiting_reason = CASE WHEN n BETWEEN 93 AND 96 THEN 'wait' END, \
           resume_at = CASE WHEN n BETWEEN 93 AND 96 THEN now() + interval '1 hour' END, \
           completed_at = CASE WHEN n < 93 THEN created_at + interval '1 day' END \
         FROM (SELECT id AS eid, abs(hashtext(id::text)) % 100 AS n FROM workflow_executions) x \
         WHERE id = x.eid",
    )
    .execute(&pool)
    .await?;
    // Ten attempts each: waits parked for their duration, providers a few
    // hundred ms, one in twelve webhook attempts retried, failed
    // executions' webhook failed for good (five fingerprints).
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO execution_logs (execution_id, account_id, step_index, step_id, action_type, attempt, status, \
           response, error, error_class, fingerprint, workflow_id, workflow_version, started_at, completed_at, \
           duration_ms, exec_ms, created_at) \
         SELECT e.id, e.account_id, s, ({IDS})[1 + s], k.kind, 1, st.status, \
           CASE WHEN k.kind = 'condition' THEN jsonb_build_object('result', h % 3 = 1) \
                WHEN k.kind = 'wait' THEN jsonb_build_object('local_hour', (h % 24)) END, \
           CASE WHEN st.status <> 'SUCCEEDED' THEN 'webhook answered HTTP ' || (500 + h % 5) END, \
           CASE WHEN st.status <> 'SUCCEEDED' THEN 'transient' END, \
           CASE WHEN st.status <> 'SUCCEEDED' THEN lpad(to_hex(h % 5), 16, '0') END, \
           e.workflow_id, 1, t.at, t.at + d.ms * interval '1 millisecond', d.ms, d.exec, \
           t.at + d.ms * interval '1 millisecond' \
         FROM workflow_executions e, generate_series(0, 9) s, \
           LATERAL (SELECT abs(hashtext(e.id::text || s)) AS h) hh, \
           LATERAL (SELECT ({KINDS})[1 + s] AS kind) k, \
           LATERAL (SELECT CASE WHEN k.kind = 'webhook' AND e.status = 'FAILED' AND s = 7 THEN 'FAILED' \
                                WHEN k.kind = 'webhook' AND h % 12 = 0 THEN 'RETRYING' ELSE 'SUCCEEDED' END AS status) st, \
           LATERAL (SELECT CASE WHEN s = 1 THEN 86400000 + h % 600000 WHEN s = 5 THEN 7200000 + h % 60000 \
                                WHEN k.kind IN ('send_email','send_sms','webhook') THEN 50 + h % 900 ELSE h % 3 END AS ms, \
                           CASE WHEN k.kind IN ('send_email','send_sms','webhook') THEN 50 + h % 900 ELSE h % 3 END AS exec) d, \
           LATERAL (SELECT e.created_at + s * interval '3 hours' AS at) t \
         WHERE t.at < now() - interval '1 hour'"
    )))
    .execute(&pool)
    .await?;
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
    let (mut folded_logs, mut folded_events) = (0, 0);
    loop {
        let f = store::analytics::fold(&pool, Duration::from_secs(3600)).await?;
        folded_logs += f.logs;
        folded_events += f.events;
        if f.logs == 0 && f.events == 0 {
            break;
        }
    }
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
