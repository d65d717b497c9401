//! Durable step throughput, and what each step costs PostgreSQL:
//!
//!   cargo bench --bench checkpoints            # needs DATABASE_URL, REDIS_URL (`make services`)
//!   FLOWPILOT_BENCH_EXECUTIONS=400 FLOWPILOT_BENCH_STEPS=25 cargo bench --bench checkpoints
//!
//! Runs N executions of a K-step workflow through the real worker and
//! Redis queue, each case in a scratch database of its own, and prints a
//! table: steps per second, execution time p50/p95/p99, and per step the
//! write transactions committed and the WAL written. Two workflows: `local`,
//! whose steps only touch PostgreSQL (tags, attributes, conditions), and
//! `mixed`, where every fifth step calls a webhook on a local server (a
//! side effect: its checkpoint must commit before the next step). Each runs
//! with one step per checkpoint and each checkpoint its own transaction,
//! with group commit (`FLOWPILOT_BENCH_LANES`, 2), with the defaults (local
//! steps committed together, group commit off), and with both. Then
//! pgbench in the same run: the raw
//! ceiling of one step's writes (a log row and the execution row) per
//! transaction, with as many clients as the worker runs jobs; and the
//! ceiling of group commit: ten executions' steps per transaction from two
//! clients (one per core), each step still a statement pair of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use flowpilot::engine::Settings;
use flowpilot::queue::{Client, Serializer, keys};
use flowpilot::store;
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

mod scratch;

/// What one case measured.
struct Figures {
    steps_per_s: f64,
    /// Execution time (started to completed), ms.
    p50: f64,
    p95: f64,
    p99: f64,
    xacts_per_step: f64,
    wal_per_step: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let redis = scratch::redis_url()?;
    let executions: usize = scratch::env("FLOWPILOT_BENCH_EXECUTIONS", 200);
    let steps: usize = scratch::env("FLOWPILOT_BENCH_STEPS", 20);
    let concurrency: usize = scratch::env("FLOWPILOT_BENCH_CONCURRENCY", 20);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    let app = Router::new().route("/hook", post(|| async { "{\"ok\": true}" }));
    tokio::spawn(async move { axum::serve(listener, app).await });

    println!(
        "checkpoints: {executions} executions x {steps} steps, {concurrency} concurrent jobs\n\
         | workflow | steps per checkpoint | group commit | steps/s | execution p50 / p95 / p99 ms | write transactions per step | WAL bytes per step |\n\
         | --- | --- | --- | --- | --- | --- | --- |"
    );
    // Group commit's lanes where it is on.
    let lanes = scratch::env("FLOWPILOT_BENCH_LANES", 2);
    let defaults = Settings::default();
    let many = defaults.steps_per_checkpoint;
    for (shape, webhook) in [("local", None), ("mixed", Some(hook.as_str()))] {
        let mut rates = Vec::new();
        let cases = [
            (1, 0),
            (1, lanes),
            (many, defaults.commit_lanes),
            (many, lanes),
        ];
        for (per_checkpoint, commit_lanes) in cases {
            let case = Case {
                redis: &redis,
                executions,
                steps,
                concurrency,
                per_checkpoint,
                commit_lanes,
                webhook,
            };
            let f = case.run().await?;
            let group = match commit_lanes {
                0 => "off".to_owned(),
                n => format!("{n} lanes"),
            };
            println!(
                "| {shape} | {per_checkpoint} | {group} | {:.0} | {:.1} / {:.1} / {:.1} | {:.2} | {:.0} |",
                f.steps_per_s, f.p50, f.p95, f.p99, f.xacts_per_step, f.wal_per_step
            );
            rates.push(f.steps_per_s);
        }
        println!(
            "{shape}: {:.2}x with group commit, {:.2}x with local steps committed together, {:.2}x with both",
            rates[1] / rates[0],
            rates[2] / rates[0],
            rates[3] / rates[0]
        );
    }
    match pgbench_ceiling(concurrency, 1).await {
        Ok(tps) => println!(
            "pgbench, one step's writes per transaction, {concurrency} clients: {tps:.0} steps/s"
        ),
        Err(e) => println!("pgbench ceiling not measured: {e}"),
    }
    // Group commit's ceiling: the steps of ten executions per transaction,
    // from a committer connection per core.
    match pgbench_ceiling(2, 10).await {
        Ok(tps) => println!(
            "pgbench, ten executions' steps per transaction (group commit), 2 clients: {:.0} steps/s",
            tps * 10.0
        ),
        Err(e) => println!("pgbench group ceiling not measured: {e}"),
    }
    Ok(())
}

/// One case of the table.
struct Case<'a> {
    redis: &'a str,
    executions: usize,
    steps: usize,
    concurrency: usize,
    per_checkpoint: usize,
    /// Group commit's lanes (0: off).
    commit_lanes: usize,
    /// Every fifth step calls this webhook.
    webhook: Option<&'a str>,
}

impl Case<'_> {
    fn definition(&self) -> Json {
        json!({"steps": (0..self.steps).map(|i| match (i % 5, self.webhook) {
            (4, Some(url)) => json!({"id": format!("s{i}"), "type": "webhook", "url": url}),
            (0 | 3, _) => json!({"id": format!("s{i}"), "type": "add_tag", "tag": format!("t{i}")}),
            (1, _) => json!({"id": format!("s{i}"), "type": "condition", "if": {"tag": format!("t{}", i - 1)}}),
            _ => json!({"id": format!("s{i}"), "type": "update_contact", "attributes": {format!("a{i}"): i}}),
        }).collect::<Vec<_>>()})
    }

    async fn run(&self) -> anyhow::Result<Figures> {
        let db = scratch::Scratch::create((self.concurrency + 5) as u32).await?;
        let pool = db.pool.clone();
        let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let queue = Client::connect(self.redis, Serializer::Pickle).await?;
        let runtime = scratch::runtime(
            &pool,
            &queue,
            Settings {
                queue_prefix: prefix.clone(),
                run_budget: Duration::from_secs(60),
                steps_per_checkpoint: self.per_checkpoint,
                commit_lanes: self.commit_lanes,
                ..Settings::default()
            },
            flowpilot::worker::Settings {
                queues: keys::priority_queues(&prefix),
                max_jobs: self.concurrency,
                ..flowpilot::worker::Settings::default()
            },
        )?;
        let engine = Arc::clone(&runtime.engine);
        let account = store::account::create(&pool, "bench").await?.id;
        let workflow = engine
            .create_workflow(account, "bench", None, true, &self.definition())
            .await?
            .id;
        let contacts = scratch::contacts(&pool, account, self.executions).await?;

        let stop = CancellationToken::new();
        let running = tokio::spawn(runtime.worker()?.run(stop.clone()));
        let before = scratch::counters(&pool).await?;
        let began = Instant::now();
        // Starts come in concurrently, as API calls do.
        scratch::start_all(&engine, account, workflow, &contacts).await?;
        scratch::wait_all_final(&pool).await?;
        let took = began.elapsed();
        let after = scratch::counters(&pool).await?;
        let (p50, p95, p99) = scratch::execution_times(&pool).await?;
        stop.cancel();
        running.await??;
        db.finish().await?;
        scratch::forget_queues(self.redis, &prefix).await?;
        let total = (self.executions * self.steps) as f64;
        Ok(Figures {
            steps_per_s: total / took.as_secs_f64(),
            p50,
            p95,
            p99,
            xacts_per_step: (after.0 - before.0) as f64 / total,
            wal_per_step: (after.1 - before.1) as f64 / total,
        })
    }
}

/// pgbench's transactions per second for `per_tx` steps' writes (each a
/// log row and an update of an execution row; with several, of different
/// executions, each client its own) per transaction, in a scratch database.
async fn pgbench_ceiling(clients: usize, per_tx: usize) -> anyhow::Result<f64> {
    let db = scratch::Scratch::create(2).await?;
    let account = store::account::create(&db.pool, "bench").await?.id;
    scratch::ten_workflows(&db.pool, account).await?;
    sqlx::query(
        "INSERT INTO contacts (account_id, email) SELECT $1, 'c' || g || '@example.com' FROM generate_series(1, 1000) g",
    )
    .bind(account)
    .execute(&db.pool)
    .await?;
    for sql in [
        "INSERT INTO workflow_executions (account_id, workflow_id, workflow_version, contact_id, status, current_step_index) \
         SELECT c.account_id, w.id, 1, c.id, 'RUNNING', 0 \
         FROM contacts c, (SELECT id FROM workflows WHERE name = 'w1') w",
        "CREATE TABLE bench_ids (n int PRIMARY KEY, id uuid NOT NULL)",
        "INSERT INTO bench_ids SELECT row_number() OVER () - 1, id FROM workflow_executions",
    ] {
        sqlx::query(sql).execute(&db.pool).await?;
    }
    let script = std::env::temp_dir().join(format!("{}.sql", db.name));
    let step = |i: usize| {
        // One client, one range of rows: transactions of two clients never
        // wait for each other's row locks.
        let set = if per_tx == 1 {
            "\\set n random(0, 999)\n".to_owned()
        } else {
            format!("\\set n{i} (:client_id % 10) * 100 + random(0, 99)\n")
        };
        let n = if per_tx == 1 {
            "n".to_owned()
        } else {
            format!("n{i}")
        };
        let sql = format!(
            "INSERT INTO execution_logs (execution_id, account_id, step_index, step_id, action_type, attempt, status, \
               config, response, started_at, completed_at, duration_ms, workflow_id, workflow_version) \
             SELECT id, account_id, current_step_index, 's', 'add_tag', 1, 'SUCCEEDED', '{{}}', '{{}}', now(), now(), 0, \
               workflow_id, 1 FROM workflow_executions WHERE id = (SELECT id FROM bench_ids WHERE n = :{n});\n\
             UPDATE workflow_executions SET current_step_index = current_step_index + 1, revision = revision + 1, \
               context = context || '{{\"s\": {{}}}}', updated_at = now() \
             WHERE id = (SELECT id FROM bench_ids WHERE n = :{n});\n"
        );
        (set, sql)
    };
    let (sets, sqls): (Vec<String>, Vec<String>) = (0..per_tx).map(step).unzip();
    std::fs::write(
        &script,
        format!("{}BEGIN;\n{}COMMIT;\n", sets.concat(), sqls.concat()),
    )?;
    let url = url::Url::parse(&std::env::var("DATABASE_URL")?)?;
    let out = tokio::process::Command::new("pgbench")
        .args([
            "-n",
            "-T",
            "10",
            "-j",
            "2",
            "-c",
            &clients.to_string(),
            "-f",
        ])
        .arg(&script)
        .args(["-h", url.host_str().unwrap_or("localhost")])
        .args(["-p", &url.port().unwrap_or(5432).to_string()])
        .args(["-U", url.username(), &db.name])
        .env("PGPASSWORD", url.password().unwrap_or(""))
        .output()
        .await?;
    let _ = std::fs::remove_file(&script);
    db.finish().await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok());
    tps.ok_or_else(|| {
        anyhow::anyhow!(
            "pgbench printed no tps: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
