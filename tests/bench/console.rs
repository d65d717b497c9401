//! How fast the operator console's pages answer on a large record: the
//! analytics benchmark's 1,000,000 executions and 10,000,000 log rows in
//! one account (the worst case: every page reads that account).
//!
//!   cargo bench --bench console       # needs DATABASE_URL and REDIS_URL (`make services`)
//!   FLOWPILOT_BENCH_EXECUTIONS=1000000 FLOWPILOT_BENCH_RUNS=50 cargo bench --bench console
//!
//! Seeds as `--bench analytics` does (or reuses the database a run kept:
//! `FLOWPILOT_BENCH_KEEP_DB=1`, then `FLOWPILOT_BENCH_REUSE_DB=<name>`),
//! folds the analytics rollups, signs in
//! through `POST /ui/login`, then requests each page through the API's
//! router (in process: the time is the handler's, the queries' and the
//! rendering's, not a socket's) and prints p50 / p95 / max per page.

use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use flowpilot::engine::Settings;
use flowpilot::queue::{Client, Serializer, keys};
use flowpilot::store;
use http_body_util::BodyExt;
use tower::ServiceExt;
use uuid::Uuid;

mod scratch;
mod seed;

use scratch::{env, timed};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let executions: i64 = env("FLOWPILOT_BENCH_EXECUTIONS", 1_000_000);
    let runs: usize = env("FLOWPILOT_BENCH_RUNS", 50);
    let redis = scratch::redis_url()?;

    // `FLOWPILOT_BENCH_REUSE_DB=<name>`: the record a run kept with
    // `FLOWPILOT_BENCH_KEEP_DB=1`, without seeding it again.
    let (db, account, workflow) = match std::env::var("FLOWPILOT_BENCH_REUSE_DB") {
        Ok(name) => {
            let db = scratch::Scratch::reuse(&name, 16).await?;
            let (account, workflow) =
                sqlx::query_as("SELECT account_id, id FROM workflows LIMIT 1")
                    .fetch_one(&db.pool)
                    .await?;
            (db, account, workflow)
        }
        Err(_) => {
            let db = scratch::Scratch::create(16).await?;
            let pool = &db.pool;
            store::partition::ensure_ahead(pool, chrono::Utc::now() - chrono::Duration::days(31))
                .await?;
            let seeding = Instant::now();
            let (account, workflow) = seed::nurture(pool, executions).await?;
            seed::fold_all(pool).await?;
            sqlx::query("VACUUM ANALYZE").execute(pool).await?;
            println!(
                "console: seeded {executions} executions in one account, folded, in {:.0} s",
                seeding.elapsed().as_secs_f64()
            );
            (db, account, workflow)
        }
    };
    let pool = db.pool.clone();
    let (rows, logs): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM workflow_executions), (SELECT count(*) FROM execution_logs)",
    )
    .fetch_one(&pool)
    .await?;
    println!(
        "console: {rows} executions, {logs} log rows (database {})",
        db.name
    );

    let prefix = format!("bench-{}", Uuid::new_v4().simple());
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
            ..flowpilot::worker::Settings::default()
        },
    )?;
    let router = flowpilot::api::router(runtime.api_state(None));
    let (key, _) = flowpilot::auth::mint(&pool, account, "bench", false).await?;
    let login = router
        .clone()
        .oneshot(
            Request::post("/ui/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!("key={key}")))?,
        )
        .await?;
    let cookie = login
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("no session cookie: {}", login.status()))?
        .to_owned();

    // A failed execution with its ten attempts for the timeline.
    let failed: Uuid = sqlx::query_scalar(
        "SELECT execution_id FROM execution_logs WHERE status = 'FAILED' AND step_index = 7 LIMIT 1",
    )
    .fetch_one(&pool)
    .await?;
    let pages = [
        "/ui/".to_owned(),
        "/ui/executions".to_owned(),
        "/ui/executions?status=FAILED".to_owned(),
        "/ui/executions?status=WAITING&waiting_reason=wait".to_owned(),
        format!("/ui/executions?workflow_id={workflow}&current_step=crm"),
        "/ui/executions?status=FAILED,RETRYING&error_class=transient".to_owned(),
        "/ui/fragment/executions".to_owned(),
        format!("/ui/executions/{failed}"),
        "/ui/workflows".to_owned(),
        format!("/ui/workflows/{workflow}"),
        "/ui/failures".to_owned(),
        "/ui/failures?window=7d".to_owned(),
        "/ui/alerts".to_owned(),
        "/ui/operations".to_owned(),
    ];
    let mut worst: (f64, &str) = (0.0, "");
    for page in &pages {
        let get = || {
            let router = router.clone();
            let cookie = cookie.clone();
            async move {
                let resp = router
                    .oneshot(
                        Request::get(page.as_str())
                            .header(header::COOKIE, cookie)
                            .body(Body::empty())?,
                    )
                    .await?;
                let status = resp.status();
                let body = resp.into_body().collect().await?.to_bytes();
                anyhow::ensure!(status == StatusCode::OK, "{page}: {status}");
                anyhow::Ok(body.len())
            }
        };
        let bytes = get().await?;
        let (p50, p95, max) = timed(runs, get).await?;
        println!(
            "console: GET {page:<58} {bytes:>7} B  {runs} runs: p50 {p50:6.1} ms  p95 {p95:6.1} ms  max {max:6.1} ms"
        );
        if p95 > worst.0 {
            worst = (p95, page);
        }
    }
    println!("console: slowest p95 {:.1} ms ({})", worst.0, worst.1);
    // The API's longest failure window, which the console does not offer.
    let since = (chrono::Utc::now() - chrono::Duration::days(31) + chrono::Duration::minutes(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let path = format!("/api/v1/errors?since={since}");
    let (p50, p95, max) = timed(runs, || {
        let router = router.clone();
        let request = Request::get(path.as_str())
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .body(Body::empty());
        async move {
            let resp = router.oneshot(request?).await?;
            anyhow::ensure!(resp.status() == StatusCode::OK, "{}", resp.status());
            anyhow::Ok(resp.into_body().collect().await?.to_bytes().len())
        }
    })
    .await?;
    println!(
        "console: GET /api/v1/errors over 31 days, {runs} runs: p50 {p50:.1} ms  p95 {p95:.1} ms  max {max:.1} ms"
    );
    db.finish().await
}
