//! `/metrics` as Prometheus's own linter reads it: once a workflow has run
//! through the API, the queue and the worker (so the labelled families
//! have series), `promtool check metrics` (Debian's `prometheus` package,
//! installed by `make test`) finds nothing to report.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::api::Api;
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test]
async fn promtool_finds_nothing_to_report_in_metrics_after_a_workflow_ran(pool: PgPool) {
    let api = Api::start(pool.clone()).await;
    let flow = &api.flow;
    let id = flow
        .enter(json!({"steps": [
            {"id": "welcome", "type": "send_email", "subject": "Hi", "body": "Welcome."},
            {"id": "notify", "type": "webhook", "url": format!("{}/hook", flow.base)},
            {"id": "tag", "type": "add_tag", "tag": "onboarded"}
        ]}))
        .await;
    flow.wait_status(id, "COMPLETED", Duration::from_secs(30))
        .await;
    // One that fails for good: its error class is counted.
    let failed = flow
        .enter(json!({"steps": [
            {"id": "gone", "type": "webhook", "url": format!("{}/gone", flow.base)}
        ]}))
        .await;
    flow.wait_status(failed, "FAILED", Duration::from_secs(30))
        .await;
    // One that waits two seconds: the wait's step time leaves them out.
    let waited = flow
        .enter(json!({"steps": [
            {"id": "pause", "type": "wait", "duration": "2s"},
            {"id": "tag", "type": "add_tag", "tag": "waited"}
        ]}))
        .await;
    flow.wait_status(waited, "COMPLETED", Duration::from_secs(30))
        .await;
    // One parked for an hour: the status gauge counts it.
    let parked = flow
        .enter(json!({"steps": [{"id": "later", "type": "wait", "duration": "1h"}]}))
        .await;
    flow.wait_status(parked, "WAITING", Duration::from_secs(30))
        .await;
    let mut workflows = Vec::new();
    for e in [id, failed] {
        let (_, e) = api.get(&format!("/api/v1/executions/{e}")).await;
        workflows.push(e["workflow_id"].as_str().unwrap().to_owned());
    }
    let (done_wf, failed_wf) = (&workflows[0], &workflows[1]);
    let (status, _) = api.get(&format!("/api/v1/executions/{id}")).await;
    assert_eq!(status, 200);
    let (status, text) = api.get("/metrics").await;
    assert_eq!(status, 200);
    let text = text.as_str().unwrap().to_owned();
    for family in [
        "flowpilot_api_requests_total",
        "flowpilot_engine_steps_total",
        "flowpilot_engine_step_seconds",
        "flowpilot_worker_jobs_total",
        "flowpilot_queue_jobs",
        "flowpilot_provider_batch_size",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "no {family} in /metrics"
        );
    }
    // What the alert rules read (charts/flowpilot/rules/): both
    // dependencies answered, no breaker open, partitions made ahead, and
    // the worker's slots (the tests' 20, none busy once it is done).
    for sample in [
        "flowpilot_dependency_up{dependency=\"postgres\"} 1",
        "flowpilot_dependency_up{dependency=\"redis\"} 1",
        "flowpilot_breakers{state=\"open\"} 0",
        "flowpilot_breakers{state=\"half_open\"} 0",
        "flowpilot_log_partitions_ahead 2",
        "flowpilot_worker_slots 20",
        "flowpilot_worker_slots_busy 0",
        "flowpilot_engine_step_errors_total{action=\"webhook\",error_class=\"permanent\"} 1",
        &format!("flowpilot_executions_started_total{{workflow=\"{done_wf}\"}} 1"),
        &format!(
            "flowpilot_executions_finished_total{{status=\"COMPLETED\",workflow=\"{done_wf}\"}} 1"
        ),
        &format!(
            "flowpilot_executions_finished_total{{status=\"FAILED\",workflow=\"{failed_wf}\"}} 1"
        ),
        &format!("flowpilot_execution_seconds_count{{workflow=\"{failed_wf}\"}} 1"),
        "flowpilot_executions{status=\"WAITING\"} 1",
        "flowpilot_executions{status=\"RUNNING\"} 0",
        "flowpilot_engine_parks_total{reason=\"wait\"} 2",
        "flowpilot_open_work{kind=\"operations\"} 0",
        "flowpilot_open_work{kind=\"alerts\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == sample),
            "no `{sample}` in /metrics:\n{text}"
        );
    }
    let wait_seconds: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("flowpilot_engine_step_seconds_sum{action=\"wait\"} "))
        .expect("the wait step's time")
        .parse()
        .unwrap();
    assert!(
        wait_seconds < 1.0,
        "the wait's step time holds its 2 s parked: {wait_seconds}"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; `make test` installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    api.finish().await;
}

#[sqlx::test]
async fn an_execution_cancelled_by_erasing_its_contact_counts_as_finished(pool: PgPool) {
    let api = Api::start(pool.clone()).await;
    let flow = &api.flow;
    let grace = flow.contact("grace@example.com", false).await;
    let workflow = flow
        .workflow(json!({"steps": [{"id": "later", "type": "wait", "duration": "1h"}]}))
        .await;
    let id = flow.start_execution(workflow, grace).await;
    flow.wait_status(id, "WAITING", Duration::from_secs(30))
        .await;
    let (status, _) = api
        .call(
            axum::http::Method::DELETE,
            &format!("/api/v1/contacts/{grace}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (_, text) = api.get("/metrics").await;
    let sample = format!(
        "flowpilot_executions_finished_total{{status=\"CANCELLED\",workflow=\"{workflow}\"}} 1"
    );
    let text = text.as_str().unwrap();
    assert!(
        text.lines().any(|l| l == sample),
        "no `{sample}` in:\n{text}"
    );
    api.finish().await;
}
