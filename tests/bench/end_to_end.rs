//! End to end through the real binary: one `flowpilot api` and two
//! `flowpilot worker` processes with their default settings, executions
//! started over HTTP, a five-step workflow (tag, webhook, condition,
//! attributes, email to the outbox):
//!
//!   cargo bench --bench end_to_end            # needs DATABASE_URL, REDIS_URL (`make services`)
//!   FLOWPILOT_BENCH_EXECUTIONS=5000 FLOWPILOT_BENCH_PACE=200 cargo bench --bench end_to_end
//!
//! Two rounds: executions started flat out from 16 HTTP clients (the
//! saturated figures), then `FLOWPILOT_BENCH_PACED` more at
//! `FLOWPILOT_BENCH_PACE` per second (below saturation: the latency a
//! step has when the system keeps up). Each prints steps per second from
//! the first request to the last completion, the latency of
//! `POST .../execute`, execution time, and each step's time from its start
//! to the next step's (the step, its checkpoint, the way to the next).

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
    // Then this many more, started at `pace` per second (below saturation).
    let paced: usize = scratch::env("FLOWPILOT_BENCH_PACED", 1_000);
    let pace: f64 = scratch::env("FLOWPILOT_BENCH_PACE", 100.0);
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
    .bind((executions + paced) as i64)
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

    let url = format!("{base}/workflows/{workflow}/execute");
    let (flat_out, paced) = contacts.split_at(executions);
    let flat = Round {
        http: &http,
        url: &url,
        key: &key,
        pool: &pool,
    };
    let fast = flat.run(flat_out, None).await?;
    let slow = flat.run(paced, Some(pace)).await?;
    for p in &mut processes {
        p.kill().await?;
    }
    println!(
        "end to end: {executions} executions x {STEPS} steps flat out ({CLIENTS} HTTP clients), then {} paced at {pace}/s, \
         through `flowpilot api` + 2 `flowpilot worker` (defaults)\n\
         | starts | steps/s | POST .../execute p50 / p95 / p99 ms | execution p50 / p95 / p99 ms | step (with its checkpoint) p50 / p95 / p99 ms | failed |\n\
         | --- | --- | --- | --- | --- | --- |\n{}\n{}",
        paced.len(),
        fast.row("flat out"),
        slow.row(&format!("{pace}/s")),
    );
    db.finish().await?;
    scratch::forget_queues(&redis, &prefix).await?;
    Ok(())
}

/// One round of starts over HTTP, and what it measured.
struct Round<'a> {
    http: &'a reqwest::Client,
    url: &'a str,
    key: &'a str,
    pool: &'a sqlx::PgPool,
}

/// What one round measured, in ms but `steps_per_s`.
struct Figures {
    steps_per_s: f64,
    post: (f64, f64, f64),
    execution: (f64, f64, f64),
    step: (f64, f64, f64),
    failed: i64,
}

impl Figures {
    fn row(&self, starts: &str) -> String {
        let t = |(a, b, c): (f64, f64, f64)| format!("{a:.1} / {b:.1} / {c:.1}");
        format!(
            "| {starts} | {:.0} | {} | {} | {} | {} |",
            self.steps_per_s,
            t(self.post),
            t(self.execution),
            t(self.step),
            self.failed
        )
    }
}

impl Round<'_> {
    /// Starts an execution for each of `contacts`: from `CLIENTS` clients
    /// as fast as they go, or at `pace` per second; waits for them all.
    async fn run(&self, contacts: &[uuid::Uuid], pace: Option<f64>) -> anyhow::Result<Figures> {
        let began = Instant::now();
        let mut posts = tokio::task::JoinSet::new();
        let (http, url, key) = (self.http.clone(), self.url.to_owned(), self.key.to_owned());
        let post = move |contact: uuid::Uuid| {
            let (http, url, key) = (http.clone(), url.clone(), key.clone());
            async move {
                let sent = Instant::now();
                http.post(&url)
                    .bearer_auth(&key)
                    .json(&json!({"contact_id": contact}))
                    .send()
                    .await?
                    .error_for_status()?;
                anyhow::Ok(vec![sent.elapsed()])
            }
        };
        match pace {
            Some(per_second) => {
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
                for &c in contacts {
                    tick.tick().await;
                    posts.spawn(post(c));
                }
            }
            None => {
                let contacts = Arc::new(contacts.to_vec());
                for client in 0..CLIENTS {
                    let contacts = Arc::clone(&contacts);
                    let post = post.clone();
                    posts.spawn(async move {
                        let mut times = Vec::new();
                        for &c in contacts.iter().skip(client).step_by(CLIENTS) {
                            times.extend(post(c).await?);
                        }
                        anyhow::Ok(times)
                    });
                }
            }
        }
        let mut times = Vec::new();
        while let Some(t) = posts.join_next().await {
            times.extend(t??);
        }
        scratch::wait_all_final(self.pool).await?;
        let took = began.elapsed();
        times.sort();
        let pct = |p: usize| times[(times.len() - 1) * p / 100].as_secs_f64() * 1e3;
        let three = |sql: &str| {
            sqlx::query_as::<_, (f64, f64, f64)>(sqlx::AssertSqlSafe(format!(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), \
                        percentile_cont(0.95) WITHIN GROUP (ORDER BY ms), \
                        percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) FROM ({sql}) t"
            )))
            .bind(contacts)
            .fetch_one(self.pool)
        };
        let execution = three(
            "SELECT extract(epoch FROM completed_at - created_at) * 1000 AS ms \
             FROM workflow_executions WHERE contact_id = ANY($1)",
        )
        .await?;
        // From a step's start to the next one's (or the execution's end):
        // the step, its checkpoint and the way to the next step.
        let step = three(
            "SELECT extract(epoch FROM coalesce(lead(l.started_at) OVER w, e.completed_at) \
                 - l.started_at) * 1000 AS ms \
             FROM execution_logs l JOIN workflow_executions e ON e.id = l.execution_id \
             WHERE e.contact_id = ANY($1) \
             WINDOW w AS (PARTITION BY l.execution_id ORDER BY l.step_index, l.id)",
        )
        .await?;
        let failed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM workflow_executions WHERE status = 'FAILED' AND contact_id = ANY($1)",
        )
        .bind(contacts)
        .fetch_one(self.pool)
        .await?;
        Ok(Figures {
            steps_per_s: (contacts.len() * STEPS) as f64 / took.as_secs_f64(),
            post: (pct(50), pct(95), pct(99)),
            execution,
            step,
            failed,
        })
    }
}
