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
//! on N no-op jobs with concurrency 50, in the same run. (1) and (4) run
//! in turns, `FLOWPILOT_BENCH_ROUNDS` times (3), and the ratio of each
//! round's pair is printed with their median: this machine's speed swings
//! between minutes, so only runs next to each other compare.

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

/// A worker with the default settings but `queues`, recording for each
/// run of `noop` its delay from enqueue to start.
fn worker(client: &Client, queue: &str, delays: &Arc<Mutex<Vec<i64>>>) -> Worker {
    let mut registry = Registry::new();
    let seen = Arc::clone(delays);
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
        queues: vec![queue.to_owned()],
        ..Settings::default()
    };
    Worker::new(client.clone(), registry, settings)
}

async fn wait_for(delays: &Arc<Mutex<Vec<i64>>>, n: usize) {
    while delays.lock().unwrap().len() < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// (1) `jobs` no-op jobs enqueued, then a worker started: jobs per second
/// until the last one finished.
async fn throughput(client: &Client, queue: &str, jobs: usize) -> anyhow::Result<f64> {
    let delays: Arc<Mutex<Vec<i64>>> = Arc::default();
    fill(client, queue, jobs).await?;
    let stop = CancellationToken::new();
    let began = Instant::now();
    let running = tokio::spawn(worker(client, queue, &delays).run(stop.clone()));
    wait_for(&delays, jobs).await;
    let took = began.elapsed().as_secs_f64();
    stop.cancel();
    running.await??;
    println!(
        "queue: {jobs} no-op jobs, defaults (10 at once, poll_delay 500 ms): {took:.2} s, {:.0} jobs/s, RSS {:.0} MB",
        jobs as f64 / took,
        scratch::rss_mb()
    );
    Ok(jobs as f64 / took)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let redis = scratch::redis_url()?;
    let jobs: usize = scratch::env("FLOWPILOT_BENCH_JOBS", 30_000);
    let rounds: usize = scratch::env("FLOWPILOT_BENCH_ROUNDS", 3);
    let queue = format!("bench-queue-{}", uuid::Uuid::new_v4().simple());
    let client = Client::connect(&redis, Serializer::Pickle).await?;

    // (1) and (4) in turns, so that the machine's ups and downs fall on
    // both: each round's ratio is of runs next to each other.
    let peer = bullmq_installed().await?;
    let mut ratios = Vec::new();
    for _ in 0..rounds {
        let ours = throughput(&client, &queue, jobs).await?;
        if let Some(dir) = &peer {
            let theirs = bullmq(dir, &redis, &queue, jobs).await?;
            ratios.push(ours / theirs);
        }
    }
    if !ratios.is_empty() {
        ratios.sort_by(f64::total_cmp);
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "queue: flowpilot / BullMQ, round by round: {} (median {:.2})",
            shown.join(", "),
            ratios[ratios.len() / 2]
        );
    }

    // (2) Enqueue-to-start delay of an idle worker.
    let delays: Arc<Mutex<Vec<i64>>> = Arc::default();
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker(&client, &queue, &delays).run(stop.clone()));
    for _ in 0..200 {
        fill(&client, &queue, 1).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for(&delays, 200).await;
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
    Ok(())
}

/// Where BullMQ is installed for the bench (`.local/bench-bullmq`), when
/// Node.js and npm are there (`None`, with a line saying so, otherwise).
async fn bullmq_installed() -> anyhow::Result<Option<String>> {
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
        return Ok(None);
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
    Ok(Some(dir))
}

/// (4) BullMQ, installed in `dir`, with concurrency 50 on `jobs` no-op
/// jobs: jobs per second.
async fn bullmq(dir: &str, redis: &str, queue: &str, jobs: usize) -> anyhow::Result<f64> {
    let out = tokio::process::Command::new("node")
        .args([
            "bench.js",
            redis,
            &format!("{queue}-bullmq"),
            &jobs.to_string(),
            "50",
        ])
        .current_dir(dir)
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
    Ok(jobs as f64 / secs)
}
