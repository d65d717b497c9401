//! End to end through the real binary: one `flowpilot api` and two
//! `flowpilot worker` processes with their default settings, executions
//! started over HTTP, a five-step workflow (tag, webhook, condition,
//! attributes, email to the outbox):
//!
//!   cargo bench --bench end_to_end            # needs DATABASE_URL, REDIS_URL (`make services`)
//!   FLOWPILOT_BENCH_EXECUTIONS=5000 cargo bench --bench end_to_end
//!
//! Prints steps per second from the first request to the last completion,
//! the latency of `POST .../execute` (16 clients), execution time and the
//! gap between one step's end and the next one's start.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use serde_json::json;
use tokio::process::{Child, Command};

mod scratch;

const STEPS: usize = 5;
const CLIENTS: usize = 16;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    flowpilot::tls::install_crypto_provider();
    let redis = scratch::redis_url()?;
    let executions: usize = scratch::env("FLOWPILOT_BENCH_EXECUTIONS", 2_000);
    let db = scratch::Scratch::create(5).await?;
    let pool = db.pool.clone();
    let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let mut url = url::Url::parse(&std::env::var("DATABASE_URL")?)?;
    url.set_path(&db.name);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    let app = Router::new().route("/hook", post(|| async { "{\"ok\": true}" }));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let account = flowpilot::store::account::create(&pool, "bench").await?.id;
    let (key, _) = flowpilot::auth::mint(&pool, account, "bench", false).await?;
    sqlx::query(
        "INSERT INTO contacts (account_id, email) SELECT $1, 'c' || g || '@example.com' FROM generate_series(1, $2) g",
    )
    .bind(account)
    .bind(executions as i64)
    .execute(&pool)
    .await?;
    let contacts: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM contacts WHERE account_id = $1")
            .bind(account)
            .fetch_all(&pool)
            .await?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let spawn = |args: &[&str]| -> anyhow::Result<Child> {
        Ok(Command::new(env!("CARGO_BIN_EXE_flowpilot"))
            .args(args)
            .args(["--log", "error"])
            .env("DATABASE_URL", url.as_str())
            .env("REDIS_URL", &redis)
            .env("FLOWPILOT_QUEUE_PREFIX", &prefix)
            .env("FLOWPILOT_WEBHOOK_ALLOW", "127.0.0.1")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?)
    };
    let listen = format!("127.0.0.1:{port}");
    let mut processes = vec![
        spawn(&["api", "--listen", &listen])?,
        spawn(&["worker"])?,
        spawn(&["worker"])?,
    ];
    let base = format!("http://{listen}/api/v1");
    let http = reqwest::Client::new();
    let definition = json!({"name": "bench", "definition": {"steps": [
        {"id": "tag", "type": "add_tag", "tag": "lead"},
        {"id": "notify", "type": "webhook", "url": hook, "body": {"contact": "{{contact.id}}"}},
        {"id": "is_lead", "type": "condition", "if": {"tag": "lead"}},
        {"id": "stage", "type": "update_contact", "attributes": {"stage": "notified"}},
        {"id": "welcome", "type": "send_email", "subject": "Hi", "body": "Welcome aboard."},
    ]}});
    let began_waiting = Instant::now();
    let created = loop {
        match http
            .post(format!("{base}/workflows"))
            .bearer_auth(&key)
            .json(&definition)
            .send()
            .await
        {
            Ok(r) => break r.error_for_status()?.json::<serde_json::Value>().await?,
            Err(_) if began_waiting.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let workflow = created["id"].as_str().unwrap_or_default().to_owned();

    let began = Instant::now();
    let contacts = Arc::new(contacts);
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let (http, key, contacts) = (http.clone(), key.clone(), Arc::clone(&contacts));
        let url = format!("{base}/workflows/{workflow}/execute");
        clients.spawn(async move {
            let mut times = Vec::new();
            for contact in contacts.iter().skip(c).step_by(CLIENTS) {
                let sent = Instant::now();
                http.post(&url)
                    .bearer_auth(&key)
                    .json(&json!({"contact_id": contact}))
                    .send()
                    .await?
                    .error_for_status()?;
                times.push(sent.elapsed());
            }
            anyhow::Ok(times)
        });
    }
    let mut posts = Vec::new();
    while let Some(times) = clients.join_next().await {
        posts.extend(times??);
    }
    let posted = began.elapsed();
    scratch::wait_all_final(&pool).await?;
    let took = began.elapsed();
    for p in &mut processes {
        p.kill().await?;
    }

    let failed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM workflow_executions WHERE status = 'FAILED'")
            .fetch_one(&pool)
            .await?;
    let (e50, e95, e99) = scratch::execution_times(&pool).await?;
    let (g50, g95): (f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), \
                percentile_cont(0.95) WITHIN GROUP (ORDER BY ms) \
         FROM (SELECT extract(epoch FROM started_at - lag(completed_at) \
                 OVER (PARTITION BY execution_id ORDER BY step_index)) * 1000 AS ms \
               FROM execution_logs) t WHERE ms IS NOT NULL",
    )
    .fetch_one(&pool)
    .await?;
    posts.sort();
    let pct = |p: usize| posts[(posts.len() - 1) * p / 100].as_secs_f64() * 1e3;
    let (p50, p95, p99) = (pct(50), pct(95), pct(99));
    let total = executions * STEPS;
    println!(
        "end to end: {executions} executions x {STEPS} steps through `flowpilot api` + 2 `flowpilot worker` (defaults), {CLIENTS} HTTP clients\n\
         | steps/s | POST .../execute p50 / p95 / p99 ms | all posted after | execution p50 / p95 / p99 ms | step-to-step gap p50 / p95 ms | failed |\n\
         | --- | --- | --- | --- | --- | --- |\n\
         | {:.0} | {p50:.1} / {p95:.1} / {p99:.1} | {:.1} s | {e50:.0} / {e95:.0} / {e99:.0} | {g50:.2} / {g95:.2} | {failed} |",
        total as f64 / took.as_secs_f64(),
        posted.as_secs_f64(),
    );
    db.finish().await?;
    let mut r = redis::Client::open(redis.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let _: () = redis::cmd("DEL")
        .arg(flowpilot::queue::keys::priority_queues(&prefix))
        .query_async(&mut r)
        .await?;
    Ok(())
}
