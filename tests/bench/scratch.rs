//! What the benchmarks share: a scratch database created and migrated for
//! one run (dropped after it unless `FLOWPILOT_BENCH_KEEP_DB=1`), and the
//! application's runtime over it with outbox providers.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Instant;

use flowpilot::engine::Settings;
use flowpilot::provider::{Breakers, Limiter, Outbox, Providers, webhook};
use flowpilot::queue::Client;
use flowpilot::runtime::{Runtime, Spec};
use flowpilot::store;
use sqlx::{Connection, PgConnection, PgPool};

/// `name` from the environment, or `default`.
pub fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A scratch database of one run.
pub struct Scratch {
    /// A pool on it.
    pub pool: PgPool,
    /// Its name.
    pub name: String,
    /// Whether it was there before (kept by `finish`).
    pub reused: bool,
    admin: PgConnection,
}

impl Scratch {
    /// Creates and migrates a database next to `DATABASE_URL`'s, with a
    /// pool of `connections`.
    pub async fn create(connections: u32) -> anyhow::Result<Scratch> {
        let base = std::env::var("DATABASE_URL").map_err(|_| {
            anyhow::anyhow!("DATABASE_URL is not set: run `make services` and source .local/env")
        })?;
        let name = format!("flowpilot_bench_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&base).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        let mut url = url::Url::parse(&base)?;
        url.set_path(&name);
        let pool = store::connect(url.as_str(), connections).await?;
        store::migrate(&pool).await?;
        Ok(Scratch {
            pool,
            name,
            reused: false,
            admin,
        })
    }

    /// The database `name` next to `DATABASE_URL`'s, kept by an earlier
    /// run (`FLOWPILOT_BENCH_KEEP_DB=1`), migrated, never dropped.
    pub async fn reuse(name: &str, connections: u32) -> anyhow::Result<Scratch> {
        let base = std::env::var("DATABASE_URL")
            .map_err(|_| anyhow::anyhow!("DATABASE_URL is not set"))?;
        let admin = PgConnection::connect(&base).await?;
        let mut url = url::Url::parse(&base)?;
        url.set_path(name);
        let pool = store::connect(url.as_str(), connections).await?;
        store::migrate(&pool).await?;
        Ok(Scratch {
            pool,
            name: name.to_owned(),
            reused: true,
            admin,
        })
    }

    /// Closes the pool and drops the database, or keeps it (and says so)
    /// with `FLOWPILOT_BENCH_KEEP_DB=1`.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        self.pool.close().await;
        if self.reused || env("FLOWPILOT_BENCH_KEEP_DB", 0) == 1 {
            println!("kept the database {} for EXPLAIN", self.name);
            return Ok(());
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut self.admin)
        .await?;
        Ok(())
    }
}

/// This process's resident memory, MB.
pub fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// `REDIS_URL`.
pub fn redis_url() -> anyhow::Result<String> {
    std::env::var("REDIS_URL").map_err(|_| anyhow::anyhow!("REDIS_URL is not set"))
}

/// The runtime over `pool` and `queue` with outbox providers, breakers off,
/// `engine` and `worker` settings, alerts under the engine's queue prefix.
pub fn runtime(
    pool: &PgPool,
    queue: &Client,
    engine: Settings,
    worker: flowpilot::worker::Settings,
) -> anyhow::Result<Runtime> {
    let outbox = Arc::new(Outbox::batched(pool.clone(), 100, None));
    runtime_with(pool, queue, engine, worker, outbox)
}

/// [`runtime`] with `outbox` for email and SMS.
pub fn runtime_with(
    pool: &PgPool,
    queue: &Client,
    engine: Settings,
    worker: flowpilot::worker::Settings,
    outbox: Arc<Outbox>,
) -> anyhow::Result<Runtime> {
    flowpilot::tls::install_crypto_provider();
    let providers = Providers::new(
        queue.clone(),
        outbox.clone(),
        outbox,
        // Benchmarks call webhooks on servers of their own.
        webhook::Client::new(webhook::Guard::new(vec![
            "127.0.0.1".parse().map_err(anyhow::Error::msg)?,
        ]))?,
        Breakers::off(queue.clone()),
        Limiter::new(
            queue.clone(),
            pool.clone(),
            &engine.queue_prefix,
            Default::default(),
        ),
        flowpilot::provider::batch_sizes(),
    );
    let alerts = flowpilot::alert::Settings::for_prefix(&engine.queue_prefix);
    Ok(Runtime::new(
        pool.clone(),
        queue.clone(),
        Spec {
            engine,
            providers,
            worker,
            alerts,
        },
    )?)
}

/// Runs `f` `runs` times; p50, p95 and max in ms.
pub async fn timed<F, Fut, T>(runs: usize, mut f: F) -> anyhow::Result<(f64, f64, f64)>
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
    Ok(percentiles(times))
}

/// p50, p95 and max of `times`, in ms.
pub fn percentiles(mut times: Vec<std::time::Duration>) -> (f64, f64, f64) {
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
    (pct(0.5), pct(0.95), pct(1.0))
}

/// Ten active workflows `w1`..`w10` of `account`, each with an empty
/// version 1, written with SQL as the seeding benchmarks need them.
pub async fn ten_workflows(pool: &PgPool, account: uuid::Uuid) -> anyhow::Result<()> {
    for sql in [
        "INSERT INTO workflows (account_id, name, latest_version) SELECT $1, 'w' || g, 1 FROM generate_series(1, 10) g",
        "INSERT INTO workflow_versions (workflow_id, version, account_id, definition) \
         SELECT id, 1, account_id, '{\"steps\": []}' FROM workflows WHERE account_id = $1",
    ] {
        sqlx::query(sql).bind(account).execute(pool).await?;
    }
    Ok(())
}

/// Waits until no execution in `pool` is open (at most ten minutes).
pub async fn wait_all_final(pool: &PgPool) -> anyhow::Result<()> {
    let began = std::time::Instant::now();
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM workflow_executions \
             WHERE status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED')",
        )
        .fetch_one(pool)
        .await?;
        if open == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            began.elapsed() < std::time::Duration::from_secs(600),
            "{open} executions still open after 10 minutes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// p50, p95 and p99 of the executions' times from created to completed,
/// in ms.
pub async fn execution_times(pool: &PgPool) -> anyhow::Result<(f64, f64, f64)> {
    Ok(sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), \
                percentile_cont(0.95) WITHIN GROUP (ORDER BY ms), \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) \
         FROM (SELECT extract(epoch FROM completed_at - created_at) * 1000 AS ms \
               FROM workflow_executions) t",
    )
    .fetch_one(pool)
    .await?)
}

/// Starts an execution of `workflow` for each of `contacts` of `account`,
/// from eight concurrent callers, as API calls come.
pub async fn start_all(
    engine: &Arc<flowpilot::engine::Engine>,
    account: uuid::Uuid,
    workflow: uuid::Uuid,
    contacts: &[uuid::Uuid],
) -> anyhow::Result<()> {
    let mut starts = tokio::task::JoinSet::new();
    for chunk in contacts.chunks(contacts.len().div_ceil(8).max(1)) {
        let (engine, chunk) = (Arc::clone(engine), chunk.to_vec());
        starts.spawn(async move {
            for contact in chunk {
                engine
                    .start(flowpilot::engine::StartRequest {
                        account_id: account,
                        workflow_id: workflow,
                        contact_id: contact,
                        priority: Default::default(),
                        idempotency_key: None,
                        metadata: serde_json::json!({}),
                        source: "api",
                    })
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(started) = starts.join_next().await {
        started??;
    }
    Ok(())
}

/// `n` contacts of `account` (`c<i>@example.com`), inserted one by one
/// as the API does.
pub async fn contacts(
    pool: &PgPool,
    account: uuid::Uuid,
    n: usize,
) -> anyhow::Result<Vec<uuid::Uuid>> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let c = flowpilot::store::contact::NewContact {
            email: Some(format!("c{i}@example.com")),
            ..Default::default()
        };
        ids.push(
            flowpilot::store::contact::insert(pool, account, &c)
                .await?
                .id,
        );
    }
    Ok(ids)
}

/// Transaction ids assigned and WAL written so far, cluster-wide (nothing
/// else should run meanwhile): only a transaction that writes takes an id,
/// so the first counts write transactions exactly, where the statistics
/// views lag by up to their flush interval.
pub async fn counters(pool: &PgPool) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT pg_current_xact_id()::text::bigint, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint",
    )
    .fetch_one(pool)
    .await?)
}

/// Drops the priority queues and the dead set under `prefix` from `redis`.
pub async fn forget_queues(redis: &str, prefix: &str) -> anyhow::Result<()> {
    let mut r = redis::Client::open(redis)?
        .get_multiplexed_async_connection()
        .await?;
    let _: () = redis::cmd("DEL")
        .arg(flowpilot::queue::keys::priority_queues(prefix))
        .arg(flowpilot::queue::keys::dead_queue(prefix))
        .query_async(&mut r)
        .await?;
    Ok(())
}
