//! How fast the API's lists answer on a large record: 1,000,000
//! executions and 10,000,000 log rows by default.
//!
//!   cargo bench --bench lists           # needs DATABASE_URL (`make services`)
//!   FLOWPILOT_BENCH_EXECUTIONS=1000000 FLOWPILOT_BENCH_LOGS_PER=10 cargo bench --bench lists
//!
//! Seeds a scratch database with SQL (one account, 10 workflows, 100,000
//! contacts, executions over the last 30 days in every status, ten log rows
//! each), runs `VACUUM ANALYZE` as autovacuum would, then times each list
//! the API serves through the store's read handle (the page of 50 and its
//! capped count, as the handlers call them), 50 times each, and the
//! maintenance loop's scan for due work (a batch of up to 500 of the
//! seeded QUEUED rows, all counted stale). Prints p50 / p95 / max, and marks
//! counts that stopped at the cap (`+`) or passed their time budget and
//! are PostgreSQL's estimate. `FLOWPILOT_BENCH_KEEP_DB=1` keeps the
//! database for `EXPLAIN`.

use std::time::{Duration, Instant};

use chrono::Utc;
use flowpilot::domain::{ErrorClass, Status};
use flowpilot::store::{self, Reader, contact, execution::Filter, log::LogFilter, page::After};
use uuid::Uuid;

mod scratch;

use scratch::env;

fn summary(times: Vec<Duration>) -> (f64, String) {
    let (p50, p95, max) = scratch::percentiles(times);
    (
        p95,
        format!("p50 {p50:6.1} ms  p95 {p95:6.1} ms  max {max:6.1} ms"),
    )
}

async fn time<F, Fut>(runs: usize, mut f: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f().await.expect("query");
        times.push(t.elapsed());
    }
    times
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let executions: i64 = env("FLOWPILOT_BENCH_EXECUTIONS", 1_000_000);
    let logs_per: i64 = env("FLOWPILOT_BENCH_LOGS_PER", 10);
    let runs: usize = env("FLOWPILOT_BENCH_RUNS", 50);

    let db = scratch::Scratch::create(4).await?;
    let pool = db.pool.clone();
    store::partition::ensure_ahead(&pool, Utc::now() - chrono::Duration::days(31)).await?;

    let seeding = Instant::now();
    let account = store::account::create(&pool, "bench").await?.id;
    sqlx::query(
        "INSERT INTO contacts (account_id, email, tags) \
         SELECT $1, 'c' || g || '@example.com', ARRAY['t' || (g % 20)] FROM generate_series(1, 100000) g",
    )
    .bind(account)
    .execute(&pool)
    .await?;
    scratch::ten_workflows(&pool, account).await?;
    // Statuses as a CRM's record holds them: most finished, some failed
    // (with classes and fingerprints), some waiting on timers, a few live.
    sqlx::query(
        "INSERT INTO workflow_executions (account_id, workflow_id, workflow_version, contact_id, status, \
           current_step_id, waiting_reason, resume_at, next_attempt_at, error, error_class, fingerprint, \
           created_at, completed_at) \
         SELECT $1, w.ids[1 + g % 10], 1, c.ids[1 + g % 100000], s.status, \
                's' || (g % 7), \
                CASE WHEN s.status = 'WAITING' THEN 'wait' END, \
                CASE WHEN s.status = 'WAITING' THEN now() + (g % 1000) * interval '1 hour' END, \
                CASE WHEN s.status = 'RETRYING' THEN now() + interval '1 hour' END, \
                CASE WHEN s.status = 'FAILED' THEN 'webhook answered HTTP 404' END, \
                CASE WHEN s.status = 'FAILED' THEN (ARRAY['permanent','contact_data','transient'])[1 + g % 3] END, \
                CASE WHEN s.status = 'FAILED' THEN lpad(to_hex(g % 50), 16, '0') END, \
                t.at, CASE WHEN s.status IN ('COMPLETED','FAILED','CANCELLED') THEN t.at + interval '1 minute' END \
         FROM generate_series(1, $2) g, \
              (SELECT array_agg(id ORDER BY name) AS ids FROM workflows) w, \
              (SELECT array_agg(id) AS ids FROM contacts) c, \
              LATERAL (SELECT CASE WHEN g % 100 < 85 THEN 'COMPLETED' WHEN g % 100 < 91 THEN 'FAILED' \
                                   WHEN g % 100 < 96 THEN 'WAITING' WHEN g % 100 < 98 THEN 'CANCELLED' \
                                   WHEN g % 100 < 99 THEN 'RETRYING' ELSE 'QUEUED' END AS status) s, \
              LATERAL (SELECT now() - (g::float8 / $2) * interval '30 days' AS at) t",
    )
    .bind(account)
    .bind(executions)
    .execute(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO execution_logs (execution_id, account_id, step_index, step_id, action_type, attempt, status, \
           workflow_id, workflow_version, started_at, completed_at, created_at) \
         SELECT e.id, e.account_id, s, 's' || s, 'add_tag', 1, 'SUCCEEDED', e.workflow_id, 1, t, t, t \
         FROM workflow_executions e, generate_series(0, $1 - 1) s, \
              LATERAL (SELECT e.created_at + s * interval '1 second' AS t) x",
    )
    .bind(logs_per)
    .execute(&pool)
    .await?;
    sqlx::query("VACUUM ANALYZE").execute(&pool).await?;
    let logs: i64 = sqlx::query_scalar("SELECT count(*) FROM execution_logs")
        .fetch_one(&pool)
        .await?;
    println!(
        "lists: seeded {executions} executions, {logs} log rows, 100000 contacts in {:.0} s",
        seeding.elapsed().as_secs_f64()
    );

    let reader = Reader::new(pool.clone());
    let one = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            let v: Uuid = sqlx::query_scalar(sql).fetch_one(&pool).await?;
            anyhow::Ok(v)
        }
    };
    let workflow = one("SELECT id FROM workflows ORDER BY name LIMIT 1").await?;
    let contact_id = one("SELECT contact_id FROM workflow_executions LIMIT 1").await?;
    let execution =
        one("SELECT id FROM workflow_executions ORDER BY created_at DESC LIMIT 1").await?;
    let page: (chrono::DateTime<Utc>, Uuid) = sqlx::query_as(
        "SELECT created_at, id FROM workflow_executions ORDER BY created_at DESC, id DESC OFFSET 49 LIMIT 1",
    )
    .fetch_one(&pool)
    .await?;
    let second = After {
        created_at: page.0,
        id: page.1,
    };
    let fingerprint: String = sqlx::query_scalar(
        "SELECT fingerprint FROM workflow_executions WHERE fingerprint IS NOT NULL LIMIT 1",
    )
    .fetch_one(&pool)
    .await?;

    let filters: Vec<(&str, Filter, Option<After>)> = vec![
        ("executions, no filter", Filter::default(), None),
        ("executions, second page", Filter::default(), Some(second)),
        (
            "executions, workflow",
            Filter {
                workflow_id: Some(workflow),
                ..Filter::default()
            },
            None,
        ),
        (
            "executions, status FAILED",
            Filter {
                statuses: vec![Status::Failed],
                ..Filter::default()
            },
            None,
        ),
        (
            "executions, workflow + status FAILED",
            Filter {
                workflow_id: Some(workflow),
                statuses: vec![Status::Failed],
                ..Filter::default()
            },
            None,
        ),
        (
            "executions, workflow + status QUEUED",
            Filter {
                workflow_id: Some(workflow),
                statuses: vec![Status::Queued],
                ..Filter::default()
            },
            None,
        ),
        (
            "executions, contact",
            Filter {
                contact_id: Some(contact_id),
                ..Filter::default()
            },
            None,
        ),
        (
            "executions, error class",
            Filter {
                error_class: Some(ErrorClass::ContactData),
                ..Filter::default()
            },
            None,
        ),
        (
            "executions, fingerprint",
            Filter {
                fingerprint: Some(fingerprint),
                ..Filter::default()
            },
            None,
        ),
        (
            "executions, waiting reason",
            Filter {
                waiting_reason: Some("wait".into()),
                ..Filter::default()
            },
            None,
        ),
        (
            "executions, current step",
            Filter {
                current_step: Some("s3".into()),
                ..Filter::default()
            },
            None,
        ),
        (
            "executions, created in the last day",
            Filter {
                created_after: Some(Utc::now() - chrono::Duration::days(1)),
                ..Filter::default()
            },
            None,
        ),
        (
            "executions, finished 10-11 days ago",
            Filter {
                finished_after: Some(Utc::now() - chrono::Duration::days(11)),
                finished_before: Some(Utc::now() - chrono::Duration::days(10)),
                ..Filter::default()
            },
            None,
        ),
    ];
    let mut slow = Vec::new();
    for (name, filter, after) in &filters {
        let times = time(runs, || async {
            reader.executions(account, filter, *after, 50).await?;
            Ok(())
        })
        .await;
        let (_, c) = reader.executions(account, filter, *after, 50).await?;
        let (p95, line) = summary(times);
        let more = match (c.exact, c.estimated) {
            (_, true) => " (estimated: counting passed its budget)",
            (false, _) => "+",
            _ => "",
        };
        println!("{name:<40} {line}  count {}{more}", c.value);
        if p95 >= 50.0 {
            slow.push(*name);
        }
    }
    let tag = contact::Filter {
        tag: Some("t7".into()),
        ..contact::Filter::default()
    };
    let everyone = contact::Filter::default();
    // Every seeded QUEUED row counts as stale (as after an outage): the
    // recovery check takes a batch of up to 500 of them.
    let due = || async {
        let now = Utc::now();
        anyhow::Ok(store::due::due(&pool, now, now, now, 500).await?.len())
    };
    let batch = due().await?;
    let due_label = format!("maintenance: due work ({batch} rows)");
    let others: Vec<(&str, Vec<Duration>)> = vec![
        (
            "logs of one execution",
            time(runs, || async {
                reader
                    .logs(account, execution, &LogFilter::default(), None, 100)
                    .await?;
                Ok(())
            })
            .await,
        ),
        (
            "contacts, no filter",
            time(runs, || async {
                reader.contacts(account, &everyone, None, 50).await?;
                Ok(())
            })
            .await,
        ),
        (
            "contacts, tag",
            time(runs, || async {
                reader.contacts(account, &tag, None, 50).await?;
                Ok(())
            })
            .await,
        ),
        (
            &due_label,
            time(runs, || async {
                due().await?;
                Ok(())
            })
            .await,
        ),
    ];
    for (name, times) in others {
        let (p95, line) = summary(times);
        println!("{name:<40} {line}");
        if p95 >= 50.0 {
            slow.push(name);
        }
    }
    if !slow.is_empty() {
        println!("over 50 ms p95: {}", slow.join(", "));
    }
    db.finish().await
}
