//! Interop with the real Python arq (PyPI), in both directions and with all
//! three serializers:
//! (a) jobs Python enqueues run on our worker, and Python's `Job.result()` /
//!     `Job.status()` read what our function returned;
//! (b) jobs we enqueue run on a Python arq `Worker`, and our result reader
//!     gets the Python function's return value;
//! (c) an exception in our job is raised in Python as that exception
//!     (pickle), not a SerializationError;
//! (d) a deferred job is not run before its time, either way.

mod common;

use std::time::Duration;

use flowpilot::queue::{Defer, EnqueueOptions, JobStatus, Serializer, Value, now_ms};
use flowpilot::worker::{Function, JobError, Registry};
use serde_json::json;

fn our_functions() -> Registry {
    let mut r = Registry::new();
    r.register(
        "add",
        Function::new(|_, args| async move {
            let a = args
                .get(0, "a")
                .and_then(Value::as_i64)
                .ok_or_else(|| JobError::failed("a"))?;
            let b = args
                .get(1, "b")
                .and_then(Value::as_i64)
                .ok_or_else(|| JobError::failed("b"))?;
            Ok(Value::Int(a + b))
        }),
    );
    r.register(
        "fail",
        Function::new(|_, args| async move {
            let msg = args
                .get(0, "message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            Err::<Value, _>(JobError::Failed {
                class: "builtins.ValueError".into(),
                message: msg,
            })
        }),
    );
    r
}

async fn python_jobs_run_on_our_worker(serializer: &str) {
    let queue = common::unique("interop-a");
    let worker = common::RunningWorker::start(
        our_functions(),
        common::settings(&queue),
        Serializer::Pickle,
    )
    .await;
    let (ok, fail, deferred) = (
        common::unique("ok"),
        common::unique("fail"),
        common::unique("deferred"),
    );
    let jobs = json!([
        {"id": ok, "function": "add", "args": [2, 3]},
        {"id": fail, "function": "fail", "args": ["boom"]},
        {"id": deferred, "function": "add", "kwargs": {"a": 1, "b": 1}, "defer_by": 1.5},
    ]);
    let report = common::python_peer(&[
        "produce",
        "--queue",
        &queue,
        "--serializer",
        serializer,
        "--jobs",
        &jobs.to_string(),
        "--timeout",
        "20",
    ])
    .await;
    worker.shutdown().await;

    // (a) the value and status Python reads.
    let r = &report[&ok];
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["value"], json!(5));
    assert_eq!(r["status"], json!("complete"));
    assert_eq!(r["info"]["job_try"], json!(1));
    assert_eq!(r["info"]["success"], json!(true));
    assert_eq!(r["info"]["queue"], json!(queue));

    // (c) the exception Python raises.
    let r = &report[&fail];
    assert_eq!(r["ok"], json!(false), "{r}");
    let expected = if serializer == "pickle" {
        json!({"$exception": "builtins.ValueError", "args": ["boom"]})
    } else {
        // What arq itself stores for every failure outside pickle.
        json!({"$exception": "arq.jobs.SerializationError", "args": ["unable to serialize result"]})
    };
    assert_eq!(r["raised"], expected);

    // (d) deferred: seen deferred, started no earlier than its time.
    let r = &report[&deferred];
    assert_eq!(r["status_after_enqueue"], json!("deferred"), "{r}");
    assert_eq!(r["value"], json!(2));
    let due = r["enqueued_at_ms"].as_i64().unwrap() + 1500;
    let started = r["info"]["start_ms"].as_i64().unwrap();
    assert!(started >= due, "ran {} ms before its time", due - started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_python_enqueues_with_pickle_run_on_our_worker() {
    python_jobs_run_on_our_worker("pickle").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_python_enqueues_with_json_run_on_our_worker() {
    python_jobs_run_on_our_worker("json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_python_enqueues_with_msgpack_run_on_our_worker() {
    python_jobs_run_on_our_worker("msgpack").await;
}

async fn our_jobs_run_on_a_python_worker(serializer: Serializer) {
    let queue = common::unique("interop-b");
    let client = common::client(serializer).await;
    let opts = |id: &str| EnqueueOptions {
        job_id: Some(id.to_owned()),
        queue: Some(queue.clone()),
        ..EnqueueOptions::default()
    };
    let (mul, fail, retry, deferred) = (
        common::unique("mul"),
        common::unique("fail"),
        common::unique("retry"),
        common::unique("deferred"),
    );
    client
        .enqueue(
            "py_mul",
            vec![Value::Int(6), Value::Int(7)],
            vec![],
            opts(&mul),
        )
        .await
        .unwrap()
        .expect("fresh id is enqueued");
    client
        .enqueue(
            "py_fail",
            vec![],
            vec![("message".into(), Value::str("kaput"))],
            opts(&fail),
        )
        .await
        .unwrap()
        .unwrap();
    client
        .enqueue("py_retry_once", vec![], vec![], opts(&retry))
        .await
        .unwrap()
        .unwrap();
    let enqueued_at = now_ms();
    client
        .enqueue(
            "py_started_at",
            vec![],
            vec![],
            EnqueueOptions {
                defer: Defer::By(Duration::from_millis(1500)),
                ..opts(&deferred)
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        client.status(&queue, &deferred).await.unwrap(),
        JobStatus::Deferred
    );
    // A second enqueue of a queued id writes nothing.
    assert_eq!(
        client
            .enqueue("py_mul", vec![], vec![], opts(&mul))
            .await
            .unwrap(),
        None
    );

    let counters = common::python_peer(&[
        "consume",
        "--queue",
        &queue,
        "--serializer",
        &serializer.to_string(),
        "--timeout",
        "30",
    ])
    .await;
    assert_eq!(counters, json!({"complete": 3, "failed": 1, "retried": 1}));

    // (b) our reader gets Python's return value.
    let r = client.result(&mul).await.unwrap().expect("result stored");
    assert!(r.success);
    assert_eq!(r.result, Value::Int(42));
    assert_eq!(r.job.job_try, Some(1));
    assert_eq!(
        client.status(&queue, &mul).await.unwrap(),
        JobStatus::Complete
    );
    let info = client
        .info(&queue, &mul)
        .await
        .unwrap()
        .expect("info of a finished job");
    assert_eq!(info.job.function, "py_mul");
    assert_eq!(info.result.map(|r| r.result), Some(Value::Int(42)));
    assert!(client.info(&queue, "no-such-job").await.unwrap().is_none());

    let r = client.result(&fail).await.unwrap().unwrap();
    assert!(!r.success);
    if serializer == Serializer::Pickle {
        assert_eq!(r.result, Value::exception("builtins.ValueError", "kaput"));
    } else {
        assert_eq!(r.result, Value::str("unable to serialize result"));
    }

    let r = client.result(&retry).await.unwrap().unwrap();
    assert_eq!(
        (r.success, r.result, r.job.job_try),
        (true, Value::Int(2), Some(2))
    );

    // (d) the Python worker did not start it before its time.
    let r = client.result(&deferred).await.unwrap().unwrap();
    let started = r.result.as_i64().expect("py_started_at returns ms");
    assert!(
        started >= enqueued_at + 1500,
        "ran {} ms early",
        enqueued_at + 1500 - started
    );
}

#[tokio::test]
async fn jobs_we_enqueue_with_pickle_run_on_a_python_worker() {
    our_jobs_run_on_a_python_worker(Serializer::Pickle).await;
}

#[tokio::test]
async fn jobs_we_enqueue_with_json_run_on_a_python_worker() {
    our_jobs_run_on_a_python_worker(Serializer::Json).await;
}

#[tokio::test]
async fn jobs_we_enqueue_with_msgpack_run_on_a_python_worker() {
    our_jobs_run_on_a_python_worker(Serializer::Msgpack).await;
}
