//! Analytics, suggestions and the ETA end to end on a real database and
//! Redis: executions run through the engine, the fold counts them, the
//! API answers from the rollups.

mod common;

use std::time::Duration;

use chrono::{Timelike, Utc};
use common::api::Api;
use serde_json::{Value as Json, json};
use sqlx::PgPool;

/// Executions of the main workflow (at least `insight::MIN_SAMPLES`).
const RUNS: usize = 25;

/// A timezone where it is 03:00-03:59 now, so every wait in the test ends
/// outside sending hours whatever time the test runs at.
fn three_in_the_morning() -> String {
    let hour = Utc::now().hour() as i32;
    let mut offset = 3 - hour;
    if offset < -12 {
        offset += 24;
    }
    // `Etc/GMT+5` is five hours *behind* UTC.
    match offset {
        0 => "Etc/GMT".to_owned(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    }
}

async fn contact(api: &Api, n: usize, tz: &str) -> String {
    let (status, c) = api
        .post(
            "/api/v1/contacts",
            json!({"email": format!("c{n}@example.com"), "timezone": tz}),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    c["id"].as_str().unwrap().to_owned()
}

/// Folds until every log row written before `since` is counted.
async fn fold_past(pool: &PgPool, since: chrono::DateTime<Utc>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let f = flowpilot::store::analytics::fold(pool, Duration::from_secs(5))
            .await
            .unwrap();
        if f.upto.is_some_and(|t| t > since) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fold stayed behind: {f:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn step<'a>(list: &'a Json, id: &str) -> &'a Json {
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["step_id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {list}"))
}

#[sqlx::test]
async fn analytics_count_what_executions_did_and_suggest_from_it(pool: PgPool) {
    let api = Api::start(pool.clone()).await;
    let base = api.flow.base.clone();
    let workflow = api
        .workflow(json!({"steps": [
            {"id": "tag", "type": "add_tag", "tag": "seen"},
            {"id": "check", "type": "condition", "if": {"tag": "seen"}, "else": "never"},
            {"id": "refused", "type": "webhook", "url": format!("{base}/refuse"), "on_error": "continue"},
            {"id": "pause", "type": "wait", "duration": "2s"},
            {"id": "done", "type": "end"},
            {"id": "never", "type": "add_tag", "tag": "x"}
        ]}))
        .await;
    let (status, _) = api
        .action(&format!("/api/v1/workflows/{workflow}/activate"))
        .await;
    assert_eq!(status, 200);
    let tz = three_in_the_morning();
    for n in 0..RUNS {
        let c = contact(&api, n, &tz).await;
        api.execute(&workflow, &c).await;
    }
    api.flow.wait_all_final(Duration::from_secs(60)).await;

    // One more, caught waiting at `pause`: its ETA, then a cancel there.
    let c = contact(&api, RUNS, &tz).await;
    let last = api.execute(&workflow, &c).await;
    let waiting = loop {
        let (_, e) = api.get(&format!("/api/v1/executions/{last}")).await;
        if e["status"] == "WAITING" {
            break e;
        }
        assert_ne!(e["status"], "COMPLETED", "missed the wait: {e}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let eta = &waiting["eta"];
    let resume: chrono::DateTime<Utc> =
        waiting["next_action_at"].as_str().unwrap().parse().unwrap();
    let at: chrono::DateTime<Utc> = eta["at"].as_str().unwrap().parse().unwrap();
    assert!(at >= resume, "{waiting}");
    assert!(at - resume < chrono::Duration::seconds(1), "{waiting}");
    assert_eq!(eta["basis"]["path"], json!(["pause", "done"]), "{eta}");
    assert!(eta["basis"]["timers_ms"].as_i64().unwrap() > 0, "{eta}");

    let in_step = {
        fold_past(&pool, Utc::now()).await;
        let (status, a) = api
            .get(&format!("/api/v1/workflows/{workflow}/analytics"))
            .await;
        assert_eq!(status, 200, "{a}");
        step(&a["funnel"], "pause")["in_step"].clone()
    };
    assert_eq!(in_step, 1);
    let (status, _) = api
        .action(&format!("/api/v1/executions/{last}/cancel"))
        .await;
    assert_eq!(status, 200);
    let (_, done) = api.get(&format!("/api/v1/executions/{last}")).await;
    assert!(
        done.get("eta").is_none(),
        "an ended execution has no ETA: {done}"
    );
    // Wait for the maintenance-free fold to see the cancel's event.
    tokio::time::sleep(Duration::from_millis(50)).await;
    fold_past(&pool, Utc::now()).await;

    let (status, a) = api
        .get(&format!("/api/v1/workflows/{workflow}/analytics"))
        .await;
    assert_eq!(status, 200, "{a}");
    let funnel = &a["funnel"];
    let n = RUNS as i64;
    // The cancelled one passed the first three steps too.
    for id in ["tag", "check"] {
        assert_eq!(step(funnel, id)["completed"], n + 1, "{funnel}");
    }
    assert_eq!(step(funnel, "tag")["entered"], n + 1, "{funnel}");
    assert_eq!(step(funnel, "refused")["failed"], n + 1, "{funnel}");
    let pause = step(funnel, "pause");
    assert_eq!(
        (
            &pause["completed"],
            &pause["cancelled"],
            &pause["entered"],
            &pause["in_step"]
        ),
        (&json!(n), &json!(1), &json!(n + 1), &json!(0)),
        "{funnel}"
    );
    assert_eq!(step(funnel, "never")["entered"], 0, "{funnel}");

    // Time in step: the wait's two seconds are parked time, not run time.
    let t = step(&a["timings"], "pause");
    let parked = t["parked_ms"]["p50"].as_f64().unwrap();
    assert!((1_000.0..=5_000.0).contains(&parked), "{t}");
    assert!(t["exec_ms"]["p95"].as_f64().unwrap() < 1_000.0, "{t}");
    assert_eq!(a["bottleneck"]["step_id"], "refused", "{}", a["bottleneck"]);

    let errors = a["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (
            &errors[0]["step_id"],
            &errors[0]["error_class"],
            &errors[0]["count"]
        ),
        (&json!("refused"), &json!("permanent"), &json!(n + 1))
    );
    let trends = a["trends"].as_array().unwrap();
    assert_eq!(trends.len(), 30);
    let today = trends.last().unwrap();
    assert_eq!(
        (&today["started"], &today["completed"], &today["cancelled"]),
        (&json!(n + 1), &json!(n), &json!(1)),
        "{today}"
    );

    let (status, s) = api
        .get(&format!("/api/v1/workflows/{workflow}/suggestions"))
        .await;
    assert_eq!(status, 200, "{s}");
    let kinds: Vec<(String, String)> = s["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap().to_owned(),
                i["step_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("never_reached", "never"),
        ("high_failure_rate", "refused"),
        ("off_hours_wait", "pause"),
        ("one_sided_branch", "check"),
    ] {
        assert!(
            kinds.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} missing from {s}"
        );
    }
    let failing = s["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "high_failure_rate")
        .unwrap();
    assert_eq!(
        failing["evidence"]["top_fingerprint"],
        errors[0]["fingerprint"]
    );

    // Bad input is named; another account sees nothing of it.
    let (status, e) = api
        .get(&format!(
            "/api/v1/workflows/{workflow}/analytics?from=2026-13-01"
        ))
        .await;
    assert_eq!(
        (status, e["error"]["field"].as_str()),
        (400, Some("from")),
        "{e}"
    );
    let (status, e) = api
        .get(&format!("/api/v1/workflows/{workflow}/analytics?version=9"))
        .await;
    assert_eq!(
        (status, e["error"]["field"].as_str()),
        (400, Some("version")),
        "{e}"
    );
    let (other, _) = api.other_account(false).await;
    let (status, _) = api
        .call_as(
            Some(&other),
            axum::http::Method::GET,
            &format!("/api/v1/workflows/{workflow}/suggestions"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    api.finish().await;
}

#[sqlx::test]
async fn a_fold_counts_each_log_row_once_however_often_it_runs(pool: PgPool) {
    let api = Api::start(pool.clone()).await;
    let workflow = api
        .workflow(json!({"steps": [{"id": "tag", "type": "add_tag", "tag": "a"}]}))
        .await;
    api.action(&format!("/api/v1/workflows/{workflow}/activate"))
        .await;
    for n in 0..5 {
        let c = contact(&api, n, "UTC").await;
        api.execute(&workflow, &c).await;
        // Folds racing the writes, from two tasks.
        let (a, b) = tokio::join!(
            flowpilot::store::analytics::fold(&pool, Duration::from_secs(1)),
            flowpilot::store::analytics::fold(&pool, Duration::from_secs(1)),
        );
        a.unwrap();
        b.unwrap();
    }
    api.flow.wait_all_final(Duration::from_secs(30)).await;
    fold_past(&pool, Utc::now()).await;
    fold_past(&pool, Utc::now()).await;
    let (succeeded, started): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT sum(succeeded)::int8 FROM analytics_steps), \
                (SELECT sum(started)::int8 FROM analytics_executions)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let logs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM execution_logs WHERE status = 'SUCCEEDED'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((succeeded, started, logs), (5, 5, 5));
    api.finish().await;
}
