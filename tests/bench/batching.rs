//! `cargo bench --bench batching`: provider calls with and without
//! batching. N executions of a two-step workflow (a webhook to a local
//! receiver that takes `FLOWPILOT_BENCH_PROVIDER_MS` (20) per request, then
//! an email to the outbox) run through the real worker, Redis queue and
//! engine, each case in a scratch database: once with one call per step
//! (no `batch`, the outbox inserting each message alone) and twice batched
//! (the outbox's default batching, and the webhook step with `batch:
//! {max: 50, within: "0s"}`, then `{max: 10, within: "100ms"}`).
//! Two receivers: one serving every request at once, one serving
//! `FLOWPILOT_BENCH_PROVIDER_AT_ONCE` (4) at a time, as a provider does
//! that limits connections or calls. The executions are started before the worker runs, so the figures are
//! those of the steps (starts coming as they go would bound the run).
//! Prints per case the steps per second, the receiver's requests, the
//! outbox's inserts, provider calls per step and PostgreSQL write
//! transactions per execution; then each batched case against the first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use flowpilot::engine::Settings;
use flowpilot::provider::Outbox;
use flowpilot::queue::{Client, Serializer, keys};
use flowpilot::store;
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

mod scratch;

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    requests: AtomicU64,
    items: AtomicU64,
}

struct Figures {
    steps_per_s: f64,
    requests: u64,
    inserts: u64,
    xacts_per_execution: f64,
    p50: f64,
    p95: f64,
    p99: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let redis = scratch::redis_url()?;
    let executions: usize = scratch::env("FLOWPILOT_BENCH_EXECUTIONS", 2000);
    let concurrency: usize = scratch::env("FLOWPILOT_BENCH_CONCURRENCY", 20);
    let latency = Duration::from_millis(scratch::env("FLOWPILOT_BENCH_PROVIDER_MS", 20));
    // A provider that takes all the calls they send, and one that serves
    // four at a time (connections or a per-call rate limit), the rest queueing.
    for at_once in [0, scratch::env("FLOWPILOT_BENCH_PROVIDER_AT_ONCE", 4)] {
        compare(&redis, executions, concurrency, latency, at_once).await?;
    }
    Ok(())
}

/// One table: the three modes against one provider.
async fn compare(
    redis: &str,
    executions: usize,
    concurrency: usize,
    latency: Duration,
    at_once: usize,
) -> anyhow::Result<()> {
    let serves = if at_once == 0 {
        "every request at once".to_owned()
    } else {
        format!("{at_once} requests at a time")
    };
    println!(
        "\nbatching: {executions} executions x 2 steps (webhook, email), {concurrency} concurrent jobs, \
         receiver takes {} ms per request and serves {serves}\n\
         | mode | steps/s | webhook requests | outbox inserts | provider calls per step | write transactions per execution | execution p50 / p95 / p99 ms (from its start, before the worker ran) |\n\
         | --- | --- | --- | --- | --- | --- | --- |",
        latency.as_millis()
    );
    let mut figures = Vec::new();
    for mode in [None, Some(NO_WAIT), Some(WINDOW)] {
        let f = run(redis, executions, concurrency, (latency, at_once), mode).await?;
        let calls = (f.requests + f.inserts) as f64 / (2 * executions) as f64;
        println!(
            "| {} | {:.0} | {} | {} | {calls:.3} | {:.2} | {:.1} / {:.1} / {:.1} |",
            mode.map_or("one call per step".to_owned(), |b| format!(
                "batched, webhook `batch: {b}`"
            )),
            f.steps_per_s,
            f.requests,
            f.inserts,
            f.xacts_per_execution,
            f.p50,
            f.p95,
            f.p99
        );
        figures.push(f);
    }
    let calls = |f: &Figures| (f.requests + f.inserts) as f64;
    let one = &figures[0];
    for (mode, f) in [NO_WAIT, WINDOW].iter().zip(&figures[1..]) {
        println!(
            "batched ({mode}): {:.0}% fewer provider calls, {:.2}x the steps/s",
            100.0 * (1.0 - calls(f) / calls(one)),
            f.steps_per_s / one.steps_per_s
        );
    }
    Ok(())
}

/// A webhook step's `batch` with no wait: what piles up behind the call in
/// flight goes in the next.
const NO_WAIT: &str = r#"{"max": 50, "within": "0s"}"#;
/// A webhook step's `batch` waiting up to 100 ms for others.
const WINDOW: &str = r#"{"max": 10, "within": "100ms"}"#;

async fn run(
    redis: &str,
    executions: usize,
    concurrency: usize,
    (latency, at_once): (Duration, usize),
    batch: Option<&str>,
) -> anyhow::Result<Figures> {
    let batched = batch.is_some();
    let seen = Arc::new(Seen::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(Provider {
            seen: seen.clone(),
            latency,
            at_once: (at_once > 0).then(|| Arc::new(tokio::sync::Semaphore::new(at_once))),
        });
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let db = scratch::Scratch::create((concurrency + 5) as u32).await?;
    let pool = db.pool.clone();
    let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let queue = Client::connect(redis, Serializer::Pickle).await?;
    let sizes = prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("s", "s"))?;
    let outbox = Outbox::batched(
        pool.clone(),
        if batched { 100 } else { 1 },
        Some(sizes.clone()),
    );
    let runtime = scratch::runtime_with(
        &pool,
        &queue,
        Settings {
            queue_prefix: prefix.clone(),
            run_budget: Duration::from_secs(60),
            commit_lanes: scratch::env("FLOWPILOT_BENCH_LANES", Settings::default().commit_lanes),
            ..Settings::default()
        },
        flowpilot::worker::Settings {
            queues: keys::priority_queues(&prefix),
            max_jobs: concurrency,
            ..flowpilot::worker::Settings::default()
        },
        Arc::new(outbox),
    )?;
    let engine = Arc::clone(&runtime.engine);
    let account = store::account::create(&pool, "bench").await?.id;
    let mut webhook = json!({"id": "sync", "type": "webhook", "url": hook,
                             "body": {"email": "{{contact.email}}"}});
    if let Some(batch) = batch {
        webhook["batch"] = serde_json::from_str(batch)?;
    }
    let definition = json!({"steps": [
        webhook,
        {"id": "welcome", "type": "send_email", "subject": "Hi", "body": "Welcome."}
    ]});
    let workflow = engine
        .create_workflow(account, "bench", None, true, &definition)
        .await?
        .id;
    let contacts = scratch::contacts(&pool, account, executions).await?;

    // Started before the worker runs: the run measures the steps, not
    // the rate of starts (which bounds a run that starts as it goes).
    scratch::start_all(&engine, account, workflow, &contacts).await?;
    let (before, _) = scratch::counters(&pool).await?;
    let began = Instant::now();
    let stop = CancellationToken::new();
    let running = tokio::spawn(runtime.worker()?.run(stop.clone()));
    scratch::wait_all_final(&pool).await?;
    let took = began.elapsed();
    let (after, _) = scratch::counters(&pool).await?;
    let (p50, p95, p99) = scratch::execution_times(&pool).await?;
    let (sent, completed): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM outbox), \
                (SELECT count(*) FROM workflow_executions WHERE status = 'COMPLETED')",
    )
    .fetch_one(&pool)
    .await?;
    anyhow::ensure!(
        sent == executions as i64 && completed == executions as i64,
        "{completed} of {executions} completed, {sent} emails"
    );
    anyhow::ensure!(seen.items.load(Ordering::SeqCst) == executions as u64);
    stop.cancel();
    running.await??;
    server.abort();
    db.finish().await?;
    scratch::forget_queues(redis, &prefix).await?;
    Ok(Figures {
        steps_per_s: (2 * executions) as f64 / took.as_secs_f64(),
        requests: seen.requests.load(Ordering::SeqCst),
        // Unbatched, each message is its own insert (no duplicates here).
        inserts: if batched {
            sizes.get_sample_count()
        } else {
            sent as u64
        },
        xacts_per_execution: (after - before) as f64 / executions as f64,
        p50,
        p95,
        p99,
    })
}

/// The local provider.
#[derive(Clone)]
struct Provider {
    seen: Arc<Seen>,
    /// Time per request.
    latency: Duration,
    /// Requests served at once, the rest waiting; `None`: all.
    at_once: Option<Arc<tokio::sync::Semaphore>>,
}

/// Counts a request and its items, takes the provider's time, answers one
/// result per item of a batch.
async fn receive(State(p): State<Provider>, body: axum::Json<Json>) -> axum::Json<Json> {
    let seen = &p.seen;
    seen.requests.fetch_add(1, Ordering::SeqCst);
    let _serving = match &p.at_once {
        Some(s) => Some(s.acquire().await.expect("never closed")),
        None => None,
    };
    tokio::time::sleep(p.latency).await;
    match body["batch"].as_array() {
        Some(items) => {
            seen.items.fetch_add(items.len() as u64, Ordering::SeqCst);
            let results: Vec<Json> = items.iter().map(|_| json!({"ok": true})).collect();
            axum::Json(json!({ "results": results }))
        }
        None => {
            seen.items.fetch_add(1, Ordering::SeqCst);
            axum::Json(json!({"ok": true}))
        }
    }
}
