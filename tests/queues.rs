//! Queue health: ready, held and deferred jobs, the oldest ready job's age
//! and the minute's enqueue/claim rates, read from a real Redis by the
//! client, `GET /api/v1/queues` and the queue gauges of `/metrics`.

mod common;

use std::time::Duration;

use axum::http::Method;
use common::api::Api;
use flowpilot::queue::{Defer, EnqueueOptions, Rest, Serializer, keys, now_ms};
use sqlx::PgPool;

async fn enqueue(client: &flowpilot::queue::Client, queue: &str, id: &str, defer: Defer) {
    let opts = EnqueueOptions {
        job_id: Some(id.to_owned()),
        queue: Some(queue.to_owned()),
        defer,
        ..Default::default()
    };
    let added = client.enqueue("noop", vec![], vec![], opts).await.unwrap();
    assert!(added.is_some(), "{id} enqueued");
}

#[tokio::test]
async fn health_counts_ready_held_and_deferred_jobs_the_oldest_wait_and_the_minute_s_rates() {
    let client = common::client(Serializer::Pickle).await;
    let queue = common::unique("health");
    let empty = client.health(&queue, now_ms()).await.unwrap();
    assert_eq!(
        (
            empty.ready,
            empty.in_progress,
            empty.deferred,
            empty.oldest_ready_ms
        ),
        (0, 0, 0, None)
    );

    // Five due (the first one a second old), two due in an hour.
    let start = now_ms();
    enqueue(
        &client,
        &queue,
        &format!("{queue}-0"),
        Defer::UntilMs(start - 1_000),
    )
    .await;
    for i in 1..5 {
        enqueue(&client, &queue, &format!("{queue}-{i}"), Defer::No).await;
    }
    for i in 5..7 {
        enqueue(
            &client,
            &queue,
            &format!("{queue}-{i}"),
            Defer::By(Duration::from_secs(3_600)),
        )
        .await;
    }
    // A worker holds the two oldest.
    let claimed = client
        .claim(
            &[(&queue, 2)],
            100,
            now_ms(),
            Duration::from_secs(60),
            false,
        )
        .await
        .unwrap();
    let ids: Vec<&str> = claimed.claims[0]
        .jobs
        .iter()
        .map(|j| j.id.as_str())
        .collect();
    assert_eq!(ids, [format!("{queue}-0"), format!("{queue}-1")]);
    assert_eq!(claimed.claims[0].rest, Rest::Wanted);

    let now = now_ms();
    let h = client.health(&queue, now).await.unwrap();
    assert_eq!((h.ready, h.in_progress, h.deferred), (3, 2, 2), "{h:?}");
    // The oldest job no worker holds is one enqueued now, not the held one.
    let age = h.oldest_ready_age(now).unwrap();
    assert!(age < Duration::from_millis(900), "{age:?}");
    // Counts land in the ten-second bucket being filled, not yet in the
    // last full minute ...
    assert_eq!(
        (h.enqueued_last_minute, h.dequeued_last_minute),
        (0, 0),
        "{h:?}"
    );
    // ... and are in it once that bucket is over (read as of 10 s later).
    let later = client
        .health(&queue, now + keys::STATS_BUCKET_MS)
        .await
        .unwrap();
    assert_eq!(
        (later.enqueued_last_minute, later.dequeued_last_minute),
        (7, 2),
        "{later:?}"
    );
    // A re-enqueue of an existing id is refused and not counted.
    let opts = EnqueueOptions {
        job_id: Some(format!("{queue}-2")),
        queue: Some(queue.clone()),
        ..Default::default()
    };
    assert!(
        client
            .enqueue("noop", vec![], vec![], opts)
            .await
            .unwrap()
            .is_none()
    );
    let again = client
        .health(&queue, now + keys::STATS_BUCKET_MS)
        .await
        .unwrap();
    assert_eq!(again.enqueued_last_minute, 7);
    // Past the minute and the buckets' lifetime the rates read zero.
    let gone = client
        .health(&queue, now + 8 * keys::STATS_BUCKET_MS)
        .await
        .unwrap();
    assert_eq!(
        (gone.enqueued_last_minute, gone.dequeued_last_minute),
        (0, 0)
    );
}

#[sqlx::test]
async fn the_queues_endpoint_is_for_admin_keys_and_the_metrics_carry_the_same_figures(
    pool: PgPool,
) {
    let api = Api::start_with_no_worker(pool).await;
    let client = api.flow.runtime.queue.clone();
    let normal = api.flow.prefix.clone();
    for i in 0..3 {
        enqueue(&client, &normal, &format!("{normal}-{i}"), Defer::No).await;
    }
    let high = keys::high_queue(&normal);
    enqueue(
        &client,
        &high,
        &format!("{normal}-later"),
        Defer::By(Duration::from_secs(600)),
    )
    .await;

    let (status, refused) = api.get("/api/v1/queues").await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("admin"),
        "{refused}"
    );
    let (status, _) = api.call_as(None, Method::GET, "/api/v1/queues", None).await;
    assert_eq!(status, 401);

    let (admin, _) = api.other_account(true).await;
    let (status, body) = api
        .call_as(Some(&admin), Method::GET, "/api/v1/queues", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            high.as_str(),
            &normal,
            &keys::low_queue(&normal),
            "arq:queue"
        ]
    );
    let (h, n) = (&items[0], &items[1]);
    assert_eq!(
        (h["ready"].as_u64(), h["deferred"].as_u64()),
        (Some(0), Some(1)),
        "{h}"
    );
    assert!(h["oldest_ready_age_s"].is_null(), "{h}");
    assert_eq!(
        (n["ready"].as_u64(), n["in_progress"].as_u64()),
        (Some(3), Some(0)),
        "{n}"
    );
    assert!(n["oldest_ready_age_s"].as_f64().unwrap() >= 0.0, "{n}");
    assert_eq!(n["served_by"], "flowpilot");
    assert_eq!(items[3]["served_by"], "python");
    assert!(items[3]["dequeue_rate"].is_null(), "{}", items[3]);
    // KEDA's metrics-api scaler reads the Python queue's ready depth with
    // the example's GJSON path (examples/keda/scaledobject.yaml).
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/keda/scaledobject.yaml"
    ))
    .unwrap();
    let path = example
        .lines()
        .find_map(|l| l.trim().strip_prefix("valueLocation: "))
        .unwrap()
        .trim_matches('\'');
    let text = body.to_string();
    let read = gjson::get(&text, path);
    assert!(read.exists(), "{path} finds nothing in {body}");
    assert_eq!(Some(read.u64()), items[3]["ready"].as_u64(), "{path}");

    let (status, text) = api.get("/metrics").await;
    assert_eq!(status, 200);
    let text = text.as_str().unwrap();
    for line in [
        format!("flowpilot_queue_jobs{{queue=\"{normal}\",state=\"ready\"}} 3"),
        format!("flowpilot_queue_jobs{{queue=\"{high}\",state=\"deferred\"}} 1"),
        format!("flowpilot_queue_jobs{{queue=\"{normal}\",state=\"in_progress\"}} 0"),
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in /metrics");
    }
    assert!(
        text.contains(&format!(
            "flowpilot_queue_oldest_ready_seconds{{queue=\"{normal}\"}}"
        )),
        "no oldest-ready gauge"
    );
    api.finish().await;
}
