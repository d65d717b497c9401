//! Fair scheduling: an account flooding starts must not hold back the
//! others. A quiet account's start latency (created → started) is
//! measured alone, then while a noisy account floods starts (landing as a
//! worker runs, or landed whole during an outage), with the fair share on
//! and off; on, the quiet account keeps its latency; off (the control), it
//! waits behind the flood.

mod common;

use std::time::Duration;

use common::flow::Flow;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// Executions the noisy account starts at once: 3,000, or
/// `FLOWPILOT_TEST_FLOOD` (the figure is 100,000: run it by hand,
/// `FLOWPILOT_TEST_FLOOD=100000 cargo test --release --test fairness -- --nocapture`).
fn flood() -> usize {
    std::env::var("FLOWPILOT_TEST_FLOOD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}
/// Each of the 16 starters' pause between starts of a flood landing during
/// an outage.
const OUTAGE_PACE: Duration = Duration::from_millis(50);
/// Executions the quiet account starts, one every `QUIET_EVERY`.
const QUIET: usize = 40;
const QUIET_EVERY: Duration = Duration::from_millis(60);

/// An engine on `prefix` (with a worker when `run`), its fair share on or off.
async fn flow(pool: PgPool, prefix: &str, fair: bool, run: bool) -> Flow {
    Flow::start_tuned(pool, &common::redis_url(), prefix, run, |s| {
        s.fair_share = fair.then(|| "20/s:20".parse().unwrap());
    })
    .await
}

/// An account with an active one-step workflow and `n` contacts.
async fn account(flow: &mut Flow, n: usize) -> (Uuid, Uuid, Vec<Uuid>) {
    let account = flowpilot::store::account::create(&flow.pool, "a")
        .await
        .unwrap()
        .id;
    flow.account = account;
    let workflow = flow
        .workflow(json!({"steps": [{"id": "t", "type": "add_tag", "tag": "seen"}]}))
        .await;
    let contacts = sqlx::query_scalar(
        "INSERT INTO contacts (account_id, email) \
         SELECT $1, 'c' || g || '@example.com' FROM generate_series(1, $2) g RETURNING id",
    )
    .bind(account)
    .bind(n as i64)
    .fetch_all(&flow.pool)
    .await
    .unwrap();
    (account, workflow, contacts)
}

/// The quiet account's starts, paced, then its p95 start latency in ms.
async fn quiet_p95(flow: &Flow, quiet: &(Uuid, Uuid, Vec<Uuid>)) -> f64 {
    let mut ids = Vec::new();
    for c in &quiet.2 {
        ids.push(flow.start_execution_in(quiet.0, quiet.1, *c).await);
        tokio::time::sleep(QUIET_EVERY).await;
    }
    common::eventually(Duration::from_secs(120), "the quiet executions", || async {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM workflow_executions WHERE id = ANY($1) AND status = 'COMPLETED'",
        )
        .bind(&ids)
        .fetch_one(&flow.pool)
        .await
        .unwrap();
        (done as usize == ids.len()).then_some(())
    })
    .await;
    let mut ms: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM started_at - created_at)::float8 * 1000 \
         FROM workflow_executions WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&flow.pool)
    .await
    .unwrap();
    ms.sort_by(f64::total_cmp);
    // The executions started this round are done: the next round's ids are new.
    ms[((ms.len() - 1) as f64 * 0.95).round() as usize]
}

/// A real `flowpilot worker` process on `prefix`, with its defaults.
fn worker(pool: &PgPool, prefix: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_flowpilot"))
        .args(["worker", "--queue-prefix", prefix, "--log", "warn"])
        .env("DATABASE_URL", common::database_url(pool))
        .env("REDIS_URL", common::redis_url())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// p95 start latency of the quiet account alone, then while a worker
/// process works through the noisy account's flood: landing as it works,
/// or, with `outage`, landed whole while no worker ran.
/// Also says how many of the flood's executions were still to run when
/// the quiet round ended.
async fn measure(pool: PgPool, fair: bool, outage: bool) -> (f64, f64, usize, usize) {
    let prefix = common::unique("fair");
    // This process only starts executions; workers come and go beside it.
    let mut flow = flow(pool.clone(), &prefix, fair, false).await;
    let flood = flood();
    let noisy = account(&mut flow, flood).await;
    let quiet = account(&mut flow, QUIET).await;
    let quiet_again = account(&mut flow, QUIET).await;
    let mut workers = worker(&pool, &prefix);
    let alone = quiet_p95(&flow, &quiet).await;
    workers.kill().await.unwrap();
    // The flood lands while a worker runs, faster than it drains (16
    // starters against one worker), so a backlog builds up behind it; or
    // it lands while none runs, over some ten seconds (long enough for its
    // fair rate alone to let some 200 through at normal priority), and the
    // worker comes back to all of it.
    let mut workers = (!outage).then(|| worker(&pool, &prefix));
    let pause = if outage { OUTAGE_PACE } else { Duration::ZERO };
    let mut starts = tokio::task::JoinSet::new();
    for chunk in noisy.2.chunks(noisy.2.len().div_ceil(16)) {
        let (engine, chunk) = (std::sync::Arc::clone(&flow.engine), chunk.to_vec());
        let (account, workflow) = (noisy.0, noisy.1);
        starts.spawn(async move {
            for contact_id in chunk {
                engine
                    .start(flowpilot::engine::StartRequest {
                        account_id: account,
                        workflow_id: workflow,
                        contact_id,
                        priority: Default::default(),
                        idempotency_key: None,
                        metadata: json!({}),
                        source: "api",
                    })
                    .await
                    .unwrap();
                tokio::time::sleep(pause).await;
            }
        });
    }
    if outage {
        while let Some(started) = starts.join_next().await {
            started.unwrap();
        }
        workers = Some(worker(&pool, &prefix));
    }
    // Measured once the worker is up and into the flood (a process that
    // is still starting delays everyone alike), and while it still is.
    let done = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM workflow_executions WHERE account_id = $1 AND status = 'COMPLETED'",
        )
        .bind(noisy.0)
        .fetch_one(&pool)
        .await
        .unwrap() as usize
    };
    // After an outage, from the worker's first job: what waits ahead of
    // the quiet account then is what the fair share let through.
    let into = if outage { 1 } else { 100 };
    common::eventually(Duration::from_secs(30), "the flood to drain", || async {
        (done().await >= into).then_some(())
    })
    .await;
    let flooded = quiet_p95(&flow, &quiet_again).await;
    let left = flood - done().await;
    while let Some(started) = starts.join_next().await {
        started.unwrap();
    }
    eprintln!("{left} of the flood's {flood} executions still to run after the quiet round");
    flow.wait_all_final(Duration::from_secs(600)).await;
    workers.unwrap().kill().await.unwrap();
    flow.stop().await;
    (alone, flooded, left, flood)
}

#[sqlx::test]
async fn a_flooding_account_does_not_hold_back_a_quiet_one(pool: PgPool) {
    // One after the other, so the two runs do not share the machine.
    for outage in [false, true] {
        let (alone, flooded, left, flood) = measure(pool.clone(), true, outage).await;
        let landed = if outage {
            "landed during an outage"
        } else {
            "landing"
        };
        eprintln!(
            "fair share on: quiet p95 start latency {alone:.1} ms alone, {flooded:.1} ms while another account's flood of {flood} starts ({landed}) runs"
        );
        assert!(left > 0, "the flood was over before the quiet round ended");
        assert!(
            flooded <= (alone * 1.1).max(alone + 50.0),
            "quiet p95 went from {alone:.1} ms to {flooded:.1} ms ({landed})"
        );
    }
    // The control: the same run with the fair share off must show the
    // harm the assertion above says is gone, or it proves nothing.
    let (alone, flooded, _, flood) = measure(pool, false, false).await;
    eprintln!(
        "fair share off: quiet p95 start latency {alone:.1} ms alone, {flooded:.1} ms while another account floods {flood} starts"
    );
    assert!(
        flooded > (alone * 1.1).max(alone + 50.0),
        "the flood did not hurt ({alone:.1} ms → {flooded:.1} ms): the test measures nothing"
    );
}
