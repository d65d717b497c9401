//! Our worker against real Redis: every way a run ends is recorded as arq
//! records it, bad input included, and nothing else in Redis is touched.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use flowpilot::queue::{Client, EnqueueOptions, JobResult, JobStatus, Serializer, Value, keys};
use flowpilot::worker::{Function, JobError, Registry, Settings};
use redis::AsyncCommands;
use serde_json::json;

fn opts(queue: &str, id: &str) -> EnqueueOptions {
    EnqueueOptions {
        job_id: Some(id.to_owned()),
        queue: Some(queue.to_owned()),
        ..EnqueueOptions::default()
    }
}

/// `Job.result()`: the library's poller, 20 s at most.
async fn wait_result(client: &Client, queue: &str, id: &str) -> JobResult {
    client
        .wait_result(
            queue,
            id,
            Duration::from_millis(50),
            Duration::from_secs(20),
        )
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no result for {id}"))
}

/// Every key under `pattern` with its type, value and whether it expires.
async fn until_in_progress(client: &Client, queue: &str, id: &str) {
    common::eventually(Duration::from_secs(10), "the job to start", || async {
        (client.status(queue, id).await.unwrap() == JobStatus::InProgress).then_some(())
    })
    .await;
}

async fn snapshot(pattern: &str) -> BTreeMap<String, String> {
    let mut r = common::raw().await;
    let found: Vec<String> = r.keys(pattern).await.unwrap();
    let mut out = BTreeMap::new();
    for k in found {
        let dump: Option<Vec<u8>> = redis::cmd("DUMP")
            .arg(&k)
            .query_async(&mut r)
            .await
            .unwrap();
        let ttl: i64 = r.ttl(&k).await.unwrap();
        out.insert(k, format!("{dump:?} ttl>0:{}", ttl > 0));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_ends_as_failed_results_the_way_arq_records_them_and_touches_nothing_else() {
    let queue = common::unique("bad");
    let tag = common::unique("sentinel");
    let client = common::client(Serializer::Pickle).await;
    let mut r = common::raw().await;

    // Sentinels: another queue with a job, and unrelated keys of every type.
    let other_queue = format!("{tag}:queue");
    client
        .enqueue(
            "ping",
            vec![],
            vec![],
            opts(&other_queue, &format!("{tag}-job")),
        )
        .await
        .unwrap()
        .unwrap();
    let _: () = r.set(format!("{tag}:string"), "keep me").await.unwrap();
    let _: () = r.hset(format!("{tag}:hash"), "f", "v").await.unwrap();
    let _: () = r.zadd(format!("{tag}:zset"), "m", 7).await.unwrap();
    let before = snapshot(&format!("*{tag}*")).await;

    // (1) an undecodable payload, (2) an unknown function, (3) a queue entry
    // whose job key expired.
    let (garbage, unknown, expired) = (
        common::unique("garbage"),
        common::unique("unknown"),
        common::unique("expired"),
    );
    let _: () = r
        .set(keys::job(&garbage), b"\x80\x04not a pickle".as_slice())
        .await
        .unwrap();
    let _: () = r
        .zadd(&queue, &garbage, flowpilot::queue::now_ms())
        .await
        .unwrap();
    client
        .enqueue(
            "not_registered",
            vec![Value::Int(1)],
            vec![],
            opts(&queue, &unknown),
        )
        .await
        .unwrap()
        .unwrap();
    let _: () = r
        .zadd(&queue, &expired, flowpilot::queue::now_ms())
        .await
        .unwrap();

    let mut registry = Registry::new();
    flowpilot::worker::diagnostic::register(&mut registry);
    let worker =
        common::RunningWorker::start(registry, common::settings(&queue), Serializer::Pickle).await;

    let exc = |class: &str, msg: &str| Value::exception(class, msg);
    let r1 = wait_result(&client, &queue, &garbage).await;
    assert_eq!(
        (
            r1.success,
            r1.result.clone(),
            r1.job.function.as_str(),
            r1.job.enqueue_time_ms
        ),
        (
            false,
            exc("arq.jobs.DeserializationError", "unable to deserialize job"),
            "<unknown>",
            0
        )
    );
    let r2 = wait_result(&client, &queue, &unknown).await;
    assert_eq!(
        (r2.success, r2.result.clone(), r2.job.function.as_str()),
        (
            false,
            exc(
                "arq.worker.JobExecutionFailed",
                "function 'not_registered' not found"
            ),
            "not_registered"
        )
    );
    assert_eq!(r2.job.args, vec![Value::Int(1)]);
    let r3 = wait_result(&client, &queue, &expired).await;
    assert_eq!(
        (r3.success, r3.result.clone(), r3.job.function.as_str()),
        (
            false,
            exc("arq.worker.JobExecutionFailed", "job expired"),
            "<unknown>"
        )
    );
    for r in [&r1, &r2, &r3] {
        assert_eq!(r.job.job_try, Some(1));
        assert_eq!(r.queue.as_deref(), Some(queue.as_str()));
    }

    // The worker keeps running: a good job after the bad ones completes.
    let ping = common::unique("ping");
    client
        .enqueue("ping", vec![], vec![], opts(&queue, &ping))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        wait_result(&client, &queue, &ping).await.result,
        Value::str("pong")
    );
    worker.shutdown().await;

    // Python's arq reads these results as the exceptions arq raises.
    let report = common::python_peer(&[
        "results",
        "--queue",
        &queue,
        "--ids",
        &[garbage.as_str(), unknown.as_str(), expired.as_str()].join(","),
        "--timeout",
        "5",
    ])
    .await;
    assert_eq!(
        report[&unknown]["raised"],
        json!({"$exception": "arq.worker.JobExecutionFailed", "args": ["function 'not_registered' not found"]})
    );
    assert_eq!(
        report[&garbage]["raised"],
        json!({"$exception": "arq.jobs.DeserializationError", "args": ["unable to deserialize job"]})
    );
    assert_eq!(report[&expired]["status"], json!("complete"));

    // Each failed job left only its result; the sentinels are untouched.
    let mut r = common::raw().await;
    for id in [&garbage, &unknown, &expired] {
        for key in [keys::job(id), keys::retry(id), keys::in_progress(id)] {
            assert!(
                !r.exists::<_, bool>(&key).await.unwrap(),
                "{key} left behind"
            );
        }
    }
    assert_eq!(r.zcard::<_, u64>(&queue).await.unwrap(), 0);
    assert_eq!(snapshot(&format!("*{tag}*")).await, before);
    let _: () = r.del(format!("{tag}:string")).await.unwrap();
}

fn scripted() -> Registry {
    let mut r = Registry::new();
    r.register(
        "retry_then_ok",
        Function::new(|ctx, _| async move {
            if ctx.job_try < 3 {
                return Err(JobError::Retry {
                    defer: Some(Duration::from_millis(200)),
                });
            }
            Ok(Value::Int(ctx.job_try))
        }),
    );
    r.register(
        "always_retry",
        Function::new(|_, _| async { Err::<Value, _>(JobError::Retry { defer: None }) })
            .max_tries(2),
    );
    r.register(
        "defer_then_ok",
        Function::new(|ctx, _| async move {
            static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            if RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 3 {
                return Err(JobError::Defer {
                    defer: Duration::from_millis(100),
                });
            }
            Ok(Value::Int(ctx.job_try))
        })
        .max_tries(2),
    );
    r.register(
        "too_slow",
        Function::new(|_, _| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(Value::None)
        })
        .timeout(Duration::from_millis(200)),
    );
    r.register(
        "slow",
        Function::new(|_, _| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(Value::None)
        }),
    );
    r.register(
        "discard",
        Function::new(|_, _| async { Ok(Value::str("gone")) }).keep_result(Some(Duration::ZERO)),
    );
    r.register(
        "panics",
        Function::new(|_, _| async { panic!("function bug") }),
    );
    r.register(
        "try_number",
        Function::new(|ctx, _| async move { Ok(Value::Int(ctx.job_try)) }),
    );
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_timeouts_tries_aborts_and_panics_end_as_arq_ends_them() {
    let queue = common::unique("outcomes");
    let client = common::client(Serializer::Pickle).await;
    let ids: BTreeMap<&str, String> = [
        "retry_then_ok",
        "always_retry",
        "defer_then_ok",
        "too_slow",
        "discard",
        "panics",
        "try_number",
        "slow",
    ]
    .into_iter()
    .map(|f| (f, common::unique(f)))
    .collect();
    for (f, id) in &ids {
        let mut o = opts(&queue, id);
        if *f == "try_number" {
            o.job_try = Some(3);
        }
        client.enqueue(f, vec![], vec![], o).await.unwrap().unwrap();
    }
    let deferred_abort = common::unique("abort-deferred");
    client
        .enqueue(
            "try_number",
            vec![],
            vec![],
            EnqueueOptions {
                defer: flowpilot::queue::Defer::By(Duration::from_secs(60)),
                ..opts(&queue, &deferred_abort)
            },
        )
        .await
        .unwrap()
        .unwrap();
    let worker = common::RunningWorker::start(
        scripted(),
        Settings {
            max_jobs: 20,
            ..common::settings(&queue)
        },
        Serializer::Pickle,
    )
    .await;

    let r = wait_result(&client, &queue, &ids["retry_then_ok"]).await;
    assert_eq!(
        (r.success, r.result, r.job.job_try),
        (true, Value::Int(3), Some(3))
    );

    let r = wait_result(&client, &queue, &ids["always_retry"]).await;
    assert_eq!(
        (r.success, r.result, r.job.job_try),
        (
            false,
            Value::exception("arq.worker.JobExecutionFailed", "max 2 retries exceeded"),
            Some(3)
        )
    );

    // Deferred three times, with two tries allowed: a deferral is no try.
    let r = wait_result(&client, &queue, &ids["defer_then_ok"]).await;
    assert_eq!(
        (r.success, r.result, r.job.job_try),
        (true, Value::Int(1), Some(1))
    );

    let r = wait_result(&client, &queue, &ids["too_slow"]).await;
    assert!(!r.success);
    assert!(
        matches!(r.result, Value::Object { ref class, .. } if class == "builtins.TimeoutError")
    );

    let r = wait_result(&client, &queue, &ids["panics"]).await;
    assert_eq!(
        (r.success, r.result),
        (
            false,
            Value::exception("builtins.RuntimeError", "job panicked")
        )
    );

    let r = wait_result(&client, &queue, &ids["try_number"]).await;
    assert_eq!(
        (r.result, r.job.job_try),
        (Value::Int(3), Some(3)),
        "_job_try overrides the counter"
    );

    // keep_result 0: no result, and the id is free again at once.
    let discard = &ids["discard"];
    common::eventually(Duration::from_secs(10), "discard to finish", || {
        let client = client.clone();
        let (q, id) = (queue.clone(), discard.clone());
        async move { (client.status(&q, &id).await.unwrap() == JobStatus::NotFound).then_some(()) }
    })
    .await;
    assert!(client.result(discard).await.unwrap().is_none());

    // Abort: a running job is cancelled; a deferred one is pulled forward
    // and failed before it starts. Both store CancelledError.
    let slow = &ids["slow"];
    until_in_progress(&client, &queue, slow).await;
    client.abort(&queue, slow).await.unwrap();
    client.abort(&queue, &deferred_abort).await.unwrap();
    let cancelled = Value::Object {
        class: "asyncio.exceptions.CancelledError".into(),
        args: vec![],
        state: None,
    };
    for id in [slow, &deferred_abort] {
        let r = wait_result(&client, &queue, id).await;
        assert_eq!((r.success, &r.result), (false, &cancelled), "{id}");
    }
    worker.shutdown().await;

    let mut r = common::raw().await;
    assert_eq!(
        r.zcard::<_, u64>(&queue).await.unwrap(),
        0,
        "every job left the queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_every_slot_taken_still_cancels_an_aborted_job() {
    // Abort requests are read with the claims; a worker with no free slot
    // claims nothing, yet must still see them.
    let queue = common::unique("abort-full");
    let client = common::client(Serializer::Pickle).await;
    let slow = common::unique("slow");
    client
        .enqueue("slow", vec![], vec![], opts(&queue, &slow))
        .await
        .unwrap()
        .unwrap();
    let worker = common::RunningWorker::start(
        scripted(),
        Settings {
            max_jobs: 1,
            poll_delay: Duration::from_millis(50),
            ..common::settings(&queue)
        },
        Serializer::Pickle,
    )
    .await;
    until_in_progress(&client, &queue, &slow).await;
    client.abort(&queue, &slow).await.unwrap();
    let r = wait_result(&client, &queue, &slow).await;
    assert!(
        matches!(r.result, Value::Object { ref class, .. } if class == "asyncio.exceptions.CancelledError"),
        "{:?}",
        r.result
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_looks_past_jobs_another_worker_holds() {
    // Worker A holds the oldest job for seconds; worker B, with one free
    // slot, must still find the newer job behind it.
    let queue = common::unique("held");
    let client = common::client(Serializer::Pickle).await;
    let mut functions = Registry::new();
    flowpilot::worker::diagnostic::register(&mut functions);
    let one_slot = || Settings {
        max_jobs: 1,
        ..common::settings(&queue)
    };
    let a = common::RunningWorker::start(functions.clone(), one_slot(), Serializer::Pickle).await;
    let slow = common::unique("slow");
    client
        .enqueue(
            "sleep",
            vec![Value::Float(3.0)],
            vec![],
            opts(&queue, &slow),
        )
        .await
        .unwrap()
        .unwrap();
    common::eventually(Duration::from_secs(10), "A to hold the slow job", || {
        let client = client.clone();
        let (q, id) = (queue.clone(), slow.clone());
        async move { (client.status(&q, &id).await.unwrap() == JobStatus::InProgress).then_some(()) }
    })
    .await;
    let b = common::RunningWorker::start(functions, one_slot(), Serializer::Pickle).await;
    let quick = common::unique("quick");
    client
        .enqueue("ping", vec![], vec![], opts(&queue, &quick))
        .await
        .unwrap()
        .unwrap();
    let started = std::time::Instant::now();
    let r = wait_result(&client, &queue, &quick).await;
    assert_eq!(r.result, Value::str("pong"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "B waited {:?} behind the held job",
        started.elapsed()
    );
    assert!(
        client.result(&slow).await.unwrap().is_none(),
        "A still holds the slow job"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// Time from enqueue to the job's start, as the job sees it.
fn started_after(r: &JobResult) -> i64 {
    r.start_ms - r.job.enqueue_time_ms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_starts_an_announced_job_at_once_and_finds_others_by_polling() {
    let queue = common::unique("wake");
    let client = common::client(Serializer::Pickle).await;
    let mut registry = Registry::new();
    flowpilot::worker::diagnostic::register(&mut registry);
    // A poll delay far longer than any wake-up may take.
    let settings = Settings {
        poll_delay: Duration::from_secs(3),
        ..common::settings(&queue)
    };
    let worker = common::RunningWorker::start(registry, settings, Serializer::Pickle).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // idle, subscribed

    // Our enqueue announces the job: it starts within milliseconds.
    for i in 0..5 {
        let id = format!("{queue}-announced-{i}");
        client
            .enqueue("ping", vec![], vec![], opts(&queue, &id))
            .await
            .unwrap();
        let r = wait_result(&client, &queue, &id).await;
        assert!(
            started_after(&r) < 500,
            "started {} ms after enqueue",
            started_after(&r)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A job written without the announcement (as Python arq writes them)
    // is found by the next poll, within the poll delay.
    let id = format!("{queue}-silent");
    let payload = flowpilot::queue::Job {
        function: "ping".into(),
        args: vec![],
        kwargs: vec![],
        job_try: None,
        enqueue_time_ms: flowpilot::queue::now_ms(),
    }
    .encode(Serializer::Pickle)
    .unwrap();
    let mut r = common::raw().await;
    let _: () = r.set_ex(keys::job(&id), payload, 60).await.unwrap();
    let _: () = r
        .zadd(&queue, &id, flowpilot::queue::now_ms())
        .await
        .unwrap();
    let got = wait_result(&client, &queue, &id).await;
    assert!(got.success);
    assert!(
        started_after(&got) <= 3_500,
        "found {} ms after",
        started_after(&got)
    );
    worker.shutdown().await;
}
