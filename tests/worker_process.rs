//! The `flowpilot worker` process under SIGKILL and SIGTERM, against real
//! Redis: jobs survive the process exactly as they survive an arq worker.
//! Each worker gets its own database and queue prefix, so its engine and
//! maintenance loop touch nothing of other tests.

mod common;

use std::process::Stdio;
use std::time::Duration;

use flowpilot::queue::{EnqueueOptions, Serializer, Value, keys, now_ms};
use flowpilot::worker::{Registry, diagnostic};
use redis::AsyncCommands;
use sqlx::PgPool;
use tokio::process::{Child, Command};

/// Starts the real binary on `queue` with `extra` flags.
fn spawn_worker(pool: &PgPool, queue: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_flowpilot"))
        .args(["worker", "--queues", queue, "--queue-prefix", queue])
        .args(["--poll-delay", "50ms", "--log", "warn"])
        .args(extra)
        .env("DATABASE_URL", common::database_url(pool))
        .env("REDIS_URL", common::redis_url())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn flowpilot worker")
}

async fn enqueue_sleep(queue: &str, seconds: f64) -> String {
    let id = common::unique("sleep");
    common::client(Serializer::Pickle)
        .await
        .enqueue(
            "sleep",
            vec![Value::Float(seconds)],
            vec![],
            EnqueueOptions {
                job_id: Some(id.clone()),
                queue: Some(queue.to_owned()),
                ..EnqueueOptions::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    id
}

/// Waits until a worker holds `id` (in-progress key set, first try counted).
async fn wait_running(id: &str) {
    let r = common::raw().await;
    common::eventually(Duration::from_secs(20), "the job to start", || {
        let mut r = r.clone();
        async move {
            let held: bool = r.exists(keys::in_progress(id)).await.unwrap();
            let tries: Option<i64> = r.get(keys::retry(id)).await.unwrap();
            (held && tries == Some(1)).then_some(())
        }
    })
    .await;
}

fn diagnostics() -> Registry {
    let mut r = Registry::new();
    diagnostic::register(&mut r);
    r
}

#[sqlx::test]
async fn a_sigkilled_workers_job_is_rerun_by_another_after_its_in_progress_key_expires(
    pool: PgPool,
) {
    let queue = common::unique("crash");
    let id = enqueue_sleep(&queue, 3.0).await;
    // Job timeout 4 s: the in-progress key lives 4 + 10 s, as arq sets it.
    let mut first = spawn_worker(&pool, &queue, &["--job-timeout", "4s"]);
    wait_running(&id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.kill().await.unwrap(); // SIGKILL
    let killed_at = now_ms();

    // What a dead arq worker leaves: queue entry, job key, try counter, and
    // the in-progress key until it expires; no result.
    let mut r = common::raw().await;
    let pttl: i64 = r.pttl(keys::in_progress(&id)).await.unwrap();
    assert!(pttl > 10_000 && pttl <= 14_000, "in-progress pttl {pttl}");
    let score: Option<f64> = r.zscore(&queue, &id).await.unwrap();
    assert!(score.is_some(), "queue entry kept");
    assert!(
        r.exists::<_, bool>(keys::job(&id)).await.unwrap(),
        "job key kept"
    );
    assert_eq!(
        r.get::<_, Option<i64>>(keys::retry(&id)).await.unwrap(),
        Some(1)
    );
    assert!(!r.exists::<_, bool>(keys::result(&id)).await.unwrap());

    let second =
        common::RunningWorker::start(diagnostics(), common::settings(&queue), Serializer::Pickle)
            .await;
    let client = common::client(Serializer::Pickle).await;
    let result = client
        .wait_result(
            &queue,
            &id,
            Duration::from_millis(50),
            Duration::from_secs(30),
        )
        .await
        .unwrap()
        .expect("the re-run result");
    second.shutdown().await;

    assert!(result.success, "{result:?}");
    assert_eq!(result.result, Value::Float(3.0));
    assert_eq!(result.job.job_try, Some(2), "try counter advanced");
    let expired_at = killed_at + pttl;
    assert!(
        result.start_ms >= expired_at - 100,
        "re-run {} ms before the in-progress key expired",
        expired_at - result.start_ms
    );
    assert!(!r.exists::<_, bool>(keys::in_progress(&id)).await.unwrap());
    assert!(!r.exists::<_, bool>(keys::retry(&id)).await.unwrap());
    assert!(!r.exists::<_, bool>(keys::job(&id)).await.unwrap());
}

#[sqlx::test]
async fn sigterm_lets_a_running_job_finish_then_the_worker_exits_cleanly(pool: PgPool) {
    let queue = common::unique("drain");
    let id = enqueue_sleep(&queue, 1.0).await;
    let mut worker = spawn_worker(&pool, &queue, &["--drain-timeout", "20s"]);
    wait_running(&id).await;
    sigterm(&worker);
    let status = tokio::time::timeout(Duration::from_secs(20), worker.wait())
        .await
        .expect("worker exits after draining")
        .unwrap();
    assert!(status.success(), "{status}");

    let client = common::client(Serializer::Pickle).await;
    let result = client
        .result(&id)
        .await
        .unwrap()
        .expect("finished before exit");
    assert!(result.success);
    let mut r = common::raw().await;
    assert!(
        !r.exists::<_, bool>(keys::health_check(&queue))
            .await
            .unwrap(),
        "health key removed"
    );
}

#[sqlx::test]
async fn a_job_still_running_at_the_drain_deadline_is_released_as_arq_leaves_it(pool: PgPool) {
    let queue = common::unique("cutoff");
    let id = enqueue_sleep(&queue, 30.0).await;
    let mut worker = spawn_worker(&pool, &queue, &["--drain-timeout", "500ms"]);
    wait_running(&id).await;
    let before = common::raw()
        .await
        .zscore::<_, _, Option<f64>>(&queue, &id)
        .await
        .unwrap();
    sigterm(&worker);
    let status = tokio::time::timeout(Duration::from_secs(10), worker.wait())
        .await
        .expect("worker exits at the drain deadline")
        .unwrap();
    assert!(status.success(), "{status}");

    // Only the in-progress key is gone: the job runs again at its old score,
    // with its try counter already advanced (arq's CancelledError path).
    let mut r = common::raw().await;
    assert!(!r.exists::<_, bool>(keys::in_progress(&id)).await.unwrap());
    assert_eq!(
        r.zscore::<_, _, Option<f64>>(&queue, &id).await.unwrap(),
        before
    );
    assert!(r.exists::<_, bool>(keys::job(&id)).await.unwrap());
    assert_eq!(
        r.get::<_, Option<i64>>(keys::retry(&id)).await.unwrap(),
        Some(1)
    );
    assert!(!r.exists::<_, bool>(keys::result(&id)).await.unwrap());
    let _: () = r.del(&[keys::job(&id), keys::retry(&id)]).await.unwrap();
    let _: () = r.del(&queue).await.unwrap();
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("running").to_string();
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM {pid}");
}
