//! Chaos while 200 executions run through `flowpilot worker` processes:
//! workers SIGKILLed at random moments (and started again), Redis wiped
//! (`FLUSHALL`), PostgreSQL restarted, and the workers' database
//! connections terminated. Every execution completes, none is left
//! behind, and no once-only effect happens twice: one log row per step
//! and attempt, one email and one SMS per execution, each contact change
//! applied once.
//!
//! The test runs its own PostgreSQL and Redis (`tests/support/services.sh`
//! with a private state directory), so restarting and wiping them touches
//! no other test.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::flow::{Flow, duplicate_attempts, outbox_by_channel, statuses};
use serde_json::json;
use tokio::process::{Child, Command};

const EXECUTIONS: usize = 200;
const WORKERS: usize = 3;
const STEPS: i64 = 8;

/// A PostgreSQL and a Redis of this test's own, stopped on drop.
struct Services {
    state: PathBuf,
    database_url: String,
    redis_url: String,
}

impl Services {
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/services.sh")
    }

    fn run(state: &Path, command: &str) {
        let out = std::process::Command::new(Self::script())
            .arg(command)
            .env("FLOWPILOT_STATE_DIR", state)
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .output()
            .expect("run services.sh");
        assert!(
            out.status.success(),
            "services.sh {command} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start() -> Services {
        let state = std::env::temp_dir().join(common::unique("chaos-services"));
        std::fs::create_dir_all(&state).unwrap();
        Self::run(&state, "start");
        let env = std::fs::read_to_string(state.join("env")).unwrap();
        let var = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("{name} missing from {env}"))
                .to_owned()
        };
        Services {
            database_url: var("DATABASE_URL"),
            redis_url: var("REDIS_URL"),
            state,
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        Self::run(&self.state, "stop");
        std::fs::remove_dir_all(&self.state).ok();
    }
}

fn spawn_worker(s: &Services, prefix: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_flowpilot"))
        .args(["worker", "--queue-prefix", prefix])
        .args([
            "--job-timeout",
            "5s",
            "--max-jobs",
            "20",
            "--poll-delay",
            "20ms",
        ])
        .args([
            "--maintenance-interval",
            "300ms",
            "--stale-queued-after",
            "3s",
        ])
        .args(["--retry-backoff", "200ms", "--webhook-allow", "127.0.0.1"])
        .args(["--log", "error"])
        .env("DATABASE_URL", &s.database_url)
        .env("REDIS_URL", &s.redis_url)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn flowpilot worker")
}

#[derive(Debug, Clone, Copy)]
enum Chaos {
    KillWorker,
    FlushRedis,
    RestartPostgres,
    TerminateConnections,
}

#[test]
fn killed_workers_a_wiped_redis_and_a_restarted_postgres_lose_nothing_and_repeat_nothing() {
    // Own runtime: the services must stop (Drop) after every connection of
    // the test is gone, whatever happens.
    let services = Services::start();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(chaos(&services));
}

async fn chaos(s: &Services) {
    let pool = flowpilot::store::connect(&s.database_url, 5).await.unwrap();
    flowpilot::store::migrate(&pool).await.unwrap();
    let flow =
        Flow::start_queued(pool.clone(), &s.redis_url, &common::unique("chaos"), false).await;
    let workflow = flow
        .workflow(json!({"steps": [
            {"id": "welcome", "type": "send_email", "subject": "Hi {{contact.attributes.first_name}}", "body": "Welcome."},
            {"id": "pause", "type": "wait", "duration": "1s"},
            {"id": "notify", "type": "webhook", "url": format!("{}/hook", flow.base),
             "body": {"contact": "{{contact.id}}"}},
            {"id": "is_pro", "type": "condition",
             "if": {"field": "contact.attributes.plan", "op": "eq", "value": "pro"}, "else": "sms"},
            // Applied twice, this would leave "xx": it reads what it writes.
            {"id": "mark", "type": "update_contact",
             "attributes": {"marks": "{{contact.attributes.marks}}x", "stage": "onboarded"}},
            {"id": "tag", "type": "add_tag", "tag": "chaos"},
            {"id": "pause2", "type": "wait", "duration": "2s"},
            {"id": "sms", "type": "send_sms", "body": "Welcome {{contact.attributes.first_name}}"}
        ]}))
        .await;
    for i in 0..EXECUTIONS {
        let contact = flow.contact(&format!("c{i}@example.com"), false).await;
        flow.start_execution(workflow, contact).await;
    }
    // Their jobs went to the test's Redis; the workers share it.
    let mut workers: Vec<Child> = (0..WORKERS)
        .map(|_| spawn_worker(s, &flow.prefix))
        .collect();
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut plan = vec![
        Chaos::KillWorker,
        Chaos::KillWorker,
        Chaos::KillWorker,
        Chaos::KillWorker,
        Chaos::FlushRedis,
        Chaos::FlushRedis,
        Chaos::RestartPostgres,
        Chaos::TerminateConnections,
        Chaos::TerminateConnections,
    ];
    rng.shuffle(&mut plan);
    println!("chaos seed {seed}: {plan:?}");
    let started = Instant::now();
    let mut redis = redis::Client::open(s.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for event in plan {
        tokio::time::sleep(Duration::from_millis(rng.u64(200..1200))).await;
        match event {
            Chaos::KillWorker => {
                let i = rng.usize(..WORKERS);
                workers[i].kill().await.unwrap();
                workers[i] = spawn_worker(s, &flow.prefix);
            }
            Chaos::FlushRedis => {
                let _: () = redis::cmd("FLUSHALL")
                    .query_async(&mut redis)
                    .await
                    .unwrap();
            }
            Chaos::RestartPostgres => {
                let s = s.state.clone();
                tokio::task::spawn_blocking(move || Services::run(&s, "restart-postgres"))
                    .await
                    .unwrap();
            }
            Chaos::TerminateConnections => {
                // Every session but this one: the workers' pools and
                // their maintenance leader.
                let killed: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                println!("terminated {killed} sessions");
            }
        }
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM workflow_executions WHERE status = 'COMPLETED'",
        )
        .fetch_one(&pool)
        .await
        .unwrap_or(-1);
        println!("{:>6.1?} {event:?}: {done} completed", started.elapsed());
    }
    flow.wait_all_final(Duration::from_secs(120)).await;
    println!(
        "all final {:?} after the workers started",
        started.elapsed()
    );
    for mut w in workers {
        w.kill().await.ok();
    }
    let _ = s; // the services outlive every connection below

    assert_eq!(
        statuses(&pool).await,
        vec![("COMPLETED".to_owned(), EXECUTIONS as i64)]
    );
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM workflow_executions WHERE lease_owner IS NOT NULL \
         OR waiting_reason IS NOT NULL OR resume_at IS NOT NULL OR next_attempt_at IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "an execution was left holding a lease or a wait");

    // Once-only effects.
    assert_eq!(
        duplicate_attempts(&pool).await,
        0,
        "a step was recorded twice within one attempt"
    );
    // One success per step. A step may also have failed transiently (its
    // provider was the database being restarted) and succeeded as a new
    // attempt: those rows are RETRYING, never a second success.
    let per_execution: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'SUCCEEDED'), count(DISTINCT step_index) \
         FROM execution_logs GROUP BY execution_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        per_execution,
        vec![(STEPS, STEPS); EXECUTIONS],
        "one success per step"
    );
    let others: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT status, coalesce(error, ''), count(*) FROM execution_logs \
         WHERE status <> 'SUCCEEDED' GROUP BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    println!("attempts that did not succeed: {others:?}");
    assert!(
        others.iter().all(|(status, ..)| status == "RETRYING"),
        "{others:?}"
    );
    assert_eq!(
        outbox_by_channel(&pool).await,
        vec![
            ("email".into(), EXECUTIONS as i64),
            ("sms".into(), EXECUTIONS as i64)
        ]
    );
    let marks: Vec<(String, i64)> =
        sqlx::query_as("SELECT attributes->>'marks', count(*) FROM contacts GROUP BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        marks,
        vec![("x".to_owned(), EXECUTIONS as i64)],
        "each change applied once"
    );
    let tagged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM contacts WHERE array_length(array_positions(tags, 'chaos'), 1) = 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tagged, EXECUTIONS as i64);

    // The webhook is at least once: a delivery may repeat after a kill, but
    // always with its attempt's key, and every execution delivered.
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
    let attempts: HashSet<String> = sqlx::query_scalar(
        "SELECT execution_id::text || ':2:' || attempt FROM execution_logs WHERE step_index = 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert!(
        per_key.keys().all(|k| attempts.contains(k)),
        "every delivery carries the key of an attempt the log records"
    );
    let redelivered = per_key.values().filter(|n| **n > 1).count();
    println!(
        "webhook deliveries {} for {} attempt keys ({redelivered} redelivered)",
        hooks.len(),
        per_key.len()
    );
    flow.stop().await;
    pool.close().await;
}
