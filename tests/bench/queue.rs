//! The queue alone, with the worker's default settings (10 jobs at once,
//! `poll_delay` 500 ms):
//!
//!   cargo bench --bench queue       # needs REDIS_URL (`make services`)
//!   FLOWPILOT_BENCH_JOBS=30000 FLOWPILOT_TEST_PYTHON=$(tests/support/python.sh) cargo bench --bench queue
//!
//! (1) N no-op jobs enqueued, then one worker started: jobs per second
//! until the last one finished, and the process's RSS; (2) an idle worker,
//! one job enqueued every 20 ms, 200 times: enqueue-to-start delay p50 /
//! p95 / p99; (3) with `FLOWPILOT_TEST_PYTHON`, Python arq's worker with
//! its defaults on 5,000 of the same jobs, in the same run; (4) where
//! Node.js and npm are installed, BullMQ (pinned in
//! `tests/bench/bullmq/package.json`, installed into `.local/bench-bullmq`)
//! on N no-op jobs with concurrency 50, in the same run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowpilot::queue::{Client, EnqueueOptions, Serializer, Value, now_ms};
use flowpilot::worker::{Function, Registry, Settings, Worker};
use tokio_util::sync::CancellationToken;

mod scratch;

/// Enqueues `n` `noop` jobs on `queue`.
async fn fill(client: &Client, queue: &str, n: usize) -> anyhow::Result<()> {
    for _ in 0..n {
        client
            .enqueue(
                "noop",
                vec![],
                vec![],
                EnqueueOptions {
                    queue: Some(queue.to_owned()),
                    ..EnqueueOptions::default()
                },
            )
            .await?;
    }
    Ok(())
}

fn pct(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let redis = scratch::redis_url()?;
    let jobs: usize = scratch::env("FLOWPILOT_BENCH_JOBS", 30_000);
    let queue = format!("bench-queue-{}", uuid::Uuid::new_v4().simple());
    let client = Client::connect(&redis, Serializer::Pickle).await?;

    // Each run records when it started, against its enqueue time.
    let delays: Arc<Mutex<Vec<i64>>> = Arc::default();
    let mut registry = Registry::new();
    let seen = Arc::clone(&delays);
    registry.register(
        "noop",
        Function::new(move |ctx, _| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push(now_ms() - ctx.enqueue_time_ms);
                Ok(Value::None)
            }
        })
        .keep_result(Some(Duration::ZERO)),
    );
    let settings = Settings {
        queues: vec![queue.clone()],
        ..Settings::default()
    };

    // (1) Throughput on a full queue.
    fill(&client, &queue, jobs).await?;
    let stop = CancellationToken::new();
    let worker = Worker::new(client.clone(), registry, settings);
    let began = Instant::now();
    let running = tokio::spawn(worker.run(stop.clone()));
    while delays.lock().unwrap().len() < jobs {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = began.elapsed().as_secs_f64();
    println!(
        "queue: {jobs} no-op jobs, defaults (10 at once, poll_delay 500 ms): {took:.2} s, {:.0} jobs/s, RSS {:.0} MB",
        jobs as f64 / took,
        scratch::rss_mb()
    );

    // (2) Enqueue-to-start delay of an idle worker.
    delays.lock().unwrap().clear();
    for _ in 0..200 {
        fill(&client, &queue, 1).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while delays.lock().unwrap().len() < 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut d = delays.lock().unwrap().clone();
    d.sort_unstable();
    println!(
        "queue: idle worker, enqueue to start over 200 jobs: p50 {} ms, p95 {} ms, p99 {} ms",
        pct(&d, 0.5),
        pct(&d, 0.95),
        pct(&d, 0.99)
    );
    stop.cancel();
    running.await??;

    // (3) Python arq with its defaults, on the same kind of jobs.
    if let Ok(python) = std::env::var("FLOWPILOT_TEST_PYTHON") {
        let arq_jobs = 5_000;
        let arq_queue = format!("{queue}-arq");
        fill(&client, &arq_queue, arq_jobs).await?;
        let script = r#"
import asyncio, os, sys, time
from arq.connections import RedisSettings
from arq.worker import Worker
async def noop(ctx):
    return None
async def main():
    w = Worker(functions=[noop], redis_settings=RedisSettings.from_dsn(os.environ["REDIS_URL"]),
               queue_name=sys.argv[1], burst=True, keep_result=0, handle_signals=False)
    t = time.monotonic()
    await w.main()
    print(time.monotonic() - t)
    await w.close()
asyncio.run(main())
"#;
        let out = tokio::process::Command::new(&python)
            .args(["-c", script, &arq_queue])
            .env("REDIS_URL", &redis)
            .output()
            .await?;
        let secs: f64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(f64::NAN);
        println!(
            "queue: Python arq, defaults (max_jobs 10, poll_delay 0.5 s), {arq_jobs} no-op jobs: {secs:.2} s, {:.0} jobs/s",
            arq_jobs as f64 / secs
        );
    }
    bullmq(&redis, &queue, jobs).await?;
    Ok(())
}

/// (4) BullMQ with concurrency 50 on `jobs` no-op jobs, when Node.js and
/// npm are there (skipped with a line saying so otherwise).
async fn bullmq(redis: &str, queue: &str, jobs: usize) -> anyhow::Result<()> {
    use tokio::process::Command;
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = format!("{root}/.local/bench-bullmq");
    let has = |tool: &'static str| async move {
        Command::new(tool)
            .arg("--version")
            .output()
            .await
            .is_ok_and(|o| o.status.success())
    };
    if !(has("node").await && has("npm").await) {
        println!("queue: BullMQ skipped: node and npm are not installed");
        return Ok(());
    }
    std::fs::create_dir_all(&dir)?;
    for file in ["package.json", "bench.js"] {
        std::fs::copy(
            format!("{root}/tests/bench/bullmq/{file}"),
            format!("{dir}/{file}"),
        )?;
    }
    let install = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent"])
        .current_dir(&dir)
        .status()
        .await?;
    anyhow::ensure!(install.success(), "npm install of BullMQ failed in {dir}");
    let out = Command::new("node")
        .args([
            "bench.js",
            redis,
            &format!("{queue}-bullmq"),
            &jobs.to_string(),
            "50",
        ])
        .current_dir(&dir)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "BullMQ bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace();
    let secs: f64 = fields.next().unwrap_or("nan").parse()?;
    let rss: f64 = fields.next().unwrap_or("0").parse()?;
    println!(
        "queue: BullMQ 6.7.0, concurrency 50, {jobs} no-op jobs: {secs:.2} s, {:.0} jobs/s, RSS {rss:.0} MB",
        jobs as f64 / secs
    );
    Ok(())
}
