//! The `flowpilot worker` process SIGKILLed at random moments while it runs
//! 200 executions of the six-step workflow: every execution completes, no
//! effect is recorded twice for one attempt, none is stuck.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

use common::flow::Flow;
use sqlx::PgPool;
use tokio::process::{Child, Command};

const EXECUTIONS: usize = 200;
const KILLS: usize = 6;

fn spawn_worker(database_url: &str, prefix: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_flowpilot"))
        .args([
            "worker",
            "--queue-prefix",
            prefix,
            "--job-timeout",
            "3s",
            "--max-jobs",
            "20",
            "--poll-delay",
            "20ms",
            "--maintenance-interval",
            "500ms",
            "--retry-backoff",
            "200ms",
            "--webhook-allow",
            "127.0.0.1",
            "--log",
            "warn",
        ])
        .env("DATABASE_URL", database_url)
        .env("REDIS_URL", common::redis_url())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn flowpilot worker")
}

#[sqlx::test]
async fn sigkilling_the_worker_at_random_moments_loses_no_execution_and_records_no_effect_twice(
    pool: PgPool,
) {
    let flow = Flow::start_with(pool.clone(), false).await;
    let workflow = flow.workflow(flow.six_steps()).await;
    for i in 0..EXECUTIONS {
        let contact = flow.contact(&format!("c{i}@example.com"), false).await;
        flow.start_execution(workflow, contact).await;
    }
    let url = common::database_url(&pool);
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    println!("kill schedule seed {seed}");
    for round in 0..KILLS {
        let mut worker = spawn_worker(&url, &flow.prefix);
        let after = Duration::from_millis(rng.u64(200..1500));
        tokio::time::sleep(after).await;
        worker.kill().await.unwrap();
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM workflow_executions WHERE status = 'COMPLETED'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        println!("kill {round} after {after:?}: {done} completed so far");
    }
    let mut last = spawn_worker(&url, &flow.prefix);
    flow.wait_all_final(Duration::from_secs(120)).await;
    last.kill().await.unwrap();

    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM workflow_executions GROUP BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(statuses, vec![("COMPLETED".to_owned(), EXECUTIONS as i64)]);

    // From the logs: exactly six steps each, no (step, attempt) twice.
    let dup: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT execution_id, step_index, attempt FROM execution_logs GROUP BY 1, 2, 3 HAVING count(*) > 1) d",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(dup, 0, "a step was recorded twice within one attempt");
    let per_execution: Vec<i64> =
        sqlx::query_scalar("SELECT count(*) FROM execution_logs GROUP BY execution_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(per_execution, vec![6; EXECUTIONS]);

    // Effects: one email and one SMS per execution (the outbox dedupes by
    // attempt key); the webhook receiver saw each attempt key, maybe more
    // than once (at least once delivery across a kill), never a stray key.
    let outbox: Vec<(String, i64)> =
        sqlx::query_as("SELECT channel, count(*) FROM outbox GROUP BY 1 ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        outbox,
        vec![
            ("email".into(), EXECUTIONS as i64),
            ("sms".into(), EXECUTIONS as i64)
        ]
    );
    let hooks = flow.receiver.hooks();
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for h in &hooks {
        *per_key.entry(h.idempotency_key.clone()).or_default() += 1;
    }
    let executions: HashSet<&str> = per_key
        .keys()
        .map(|k| k.split(':').next().unwrap())
        .collect();
    assert_eq!(
        executions.len(),
        EXECUTIONS,
        "every execution called the webhook"
    );
    let redelivered = per_key.values().filter(|n| **n > 1).count();
    println!(
        "webhook deliveries {} for {} attempt keys ({redelivered} redelivered after a kill)",
        hooks.len(),
        per_key.len()
    );
    let stuck: i64 = sqlx::query_scalar("SELECT count(*) FROM workflow_executions WHERE lease_owner IS NOT NULL OR waiting_reason IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stuck, 0);
    flow.stop().await;
}
