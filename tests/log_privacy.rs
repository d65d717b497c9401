//! No contact data and no secret in any log line, at any level: the real
//! `flowpilot dev` at `trace` (JSON lines) runs a workflow that emails
//! (SMTP with a password, to a real aiosmtpd server), texts (the HTTP SMS
//! API with its auth token), calls a webhook with the contact's email in
//! its body, and an execution that fails so that an alert goes to a
//! webhook channel signed with its secret. Then every line of the log is
//! searched for the seeded values. The same log shows the span fields an
//! operator filters on (`execution_id`, `workflow_id`, `account_id`,
//! `step_id`).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value as Json, json};
use sqlx::PgPool;
use tokio::process::Command;

/// Paths the receiver was called on.
type Seen = Arc<Mutex<Vec<String>>>;

async fn receiver() -> (String, Seen) {
    let seen = Seen::default();
    let record = |path: &'static str, status: StatusCode, body: Json| {
        move |State(seen): State<Seen>| async move {
            seen.lock().unwrap().push(path.to_owned());
            (status, axum::Json(body))
        }
    };
    let app = Router::new()
        .route("/hook", post(record("/hook", StatusCode::OK, json!({}))))
        .route(
            "/gone",
            post(record("/gone", StatusCode::NOT_FOUND, json!({}))),
        )
        .route(
            "/alerts",
            post(record("/alerts", StatusCode::OK, json!({}))),
        )
        .route(
            "/2010-04-01/Accounts/{sid}/Messages.json",
            post(record(
                "/sms",
                StatusCode::CREATED,
                json!({"sid": "SM1", "status": "queued"}),
            )),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

#[sqlx::test]
async fn a_workflow_run_at_trace_level_logs_no_contact_data_and_no_secret(pool: PgPool) {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let email = format!("probe.{}@example.com", &tag[..12]);
    let phone = format!(
        "+1555{}",
        &tag.bytes()
            .map(|b| (b % 10 + b'0') as char)
            .collect::<String>()[..7]
    );
    let first_name = format!("Zelda{}", &tag[..8]);
    let api_key = format!("fp_probe_{tag}");
    let smtp_password = format!("smtp-pw-{tag}");
    let sms_token = format!("sms-token-{tag}");
    let webhook_secret = format!("webhook-secret-{tag}");

    let (base, seen) = receiver().await;
    let smtp_port = common::free_port();
    let mail = std::env::temp_dir().join(format!("{}.jsonl", common::unique("mail")));
    let auth = format!("probe-user:{smtp_password}");
    let _smtp = common::smtp_sink(smtp_port, &mail, Some(&auth)).await;

    let listen = format!("127.0.0.1:{}", common::free_port());
    let log = std::env::temp_dir().join(format!("{}.log", common::unique("trace")));
    let out = std::fs::File::create(&log).unwrap();
    let env = [
        ("DATABASE_URL", common::database_url(&pool)),
        ("REDIS_URL", common::redis_url()),
        ("FLOWPILOT_LISTEN", listen.clone()),
        ("FLOWPILOT_DEMO_API_KEY", api_key.clone()),
        ("FLOWPILOT_QUEUE_PREFIX", common::unique("privacy-queue")),
        ("FLOWPILOT_LOG", "trace".to_owned()),
        ("FLOWPILOT_LOG_FORMAT", "json".to_owned()),
        ("FLOWPILOT_EMAIL_PROVIDER", "smtp".to_owned()),
        (
            "FLOWPILOT_SMTP_URL",
            format!("smtp://probe-user:{smtp_password}@127.0.0.1:{smtp_port}"),
        ),
        ("FLOWPILOT_SMS_PROVIDER", "http".to_owned()),
        ("FLOWPILOT_SMS_BASE_URL", base.clone()),
        ("FLOWPILOT_SMS_ACCOUNT_SID", "AC123".to_owned()),
        ("FLOWPILOT_SMS_AUTH_TOKEN", sms_token.clone()),
        ("FLOWPILOT_SMS_FROM", "+15550001111".to_owned()),
        ("FLOWPILOT_WEBHOOK_ALLOW", "127.0.0.1".to_owned()),
        ("FLOWPILOT_ALERT_INTERVAL", "1s".to_owned()),
    ];
    let mut dev = Command::new(env!("CARGO_BIN_EXE_flowpilot"))
        .args(["dev", "--seed-demo"])
        .envs(env.iter().cloned())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    common::until_listening(&listen).await;

    flowpilot::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: Option<Json>| {
        let mut req = http
            .request(method, format!("http://{listen}{path}"))
            .bearer_auth(&api_key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let path = path.to_owned();
        async move {
            let res = req.send().await.unwrap();
            let status = res.status();
            let body: Json = res.json().await.unwrap_or(Json::Null);
            assert!(status.is_success(), "{path}: {status} {body}");
            body
        }
    };
    use reqwest::Method;
    let contact = call(
        Method::POST,
        "/api/v1/contacts",
        Some(json!({"email": email, "phone": phone, "attributes": {"first_name": first_name}})),
    )
    .await;
    call(
        Method::POST,
        "/api/v1/alert-rules",
        Some(json!({"name": "failures", "kind": "execution_failed",
            "channels": [{"type": "webhook", "url": format!("{base}/alerts"), "secret": webhook_secret}]})),
    )
    .await;
    let start = |steps: Json| {
        let call = &call;
        let contact = contact["id"].clone();
        async move {
            let wf = call(
                Method::POST,
                "/api/v1/workflows",
                Some(json!({"name": common::unique("privacy"), "definition": {"steps": steps}})),
            )
            .await;
            let path = format!("/api/v1/workflows/{}/execute", wf["id"].as_str().unwrap());
            call(Method::POST, &path, Some(json!({"contact_id": contact}))).await["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let ok = start(json!([
        {"id": "hello", "type": "send_email", "subject": "Hi {{contact.attributes.first_name}}",
         "body": "Welcome, {{contact.email}}"},
        {"id": "text", "type": "send_sms", "body": "Hi {{contact.attributes.first_name}}"},
        {"id": "tell", "type": "webhook", "url": format!("{base}/hook"),
         "body": {"email": "{{contact.email}}", "phone": "{{contact.phone}}"}},
        {"id": "vip", "type": "add_tag", "tag": "welcomed"}
    ]))
    .await;
    let failing = start(json!([
        {"id": "gone", "type": "webhook", "url": format!("{base}/gone"),
         "body": {"email": "{{contact.email}}"}}
    ]))
    .await;
    for (id, status) in [(&ok, "COMPLETED"), (&failing, "FAILED")] {
        let path = format!("/api/v1/executions/{id}");
        common::eventually(Duration::from_secs(60), status, || {
            let call = &call;
            let path = path.clone();
            async move { (call(Method::GET, &path, None).await["status"] == status).then_some(()) }
        })
        .await;
    }
    common::eventually(Duration::from_secs(30), "the alert", || async {
        seen.lock()
            .unwrap()
            .iter()
            .any(|p| p == "/alerts")
            .then_some(())
    })
    .await;
    let delivered = std::fs::read_to_string(&mail).unwrap();
    assert!(
        delivered.contains(&email),
        "the email went out: {delivered}"
    );
    assert!(
        seen.lock().unwrap().iter().any(|p| p == "/sms"),
        "the SMS went out"
    );
    dev.kill().await.unwrap();
    let _ = dev.wait().await;

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let traced = lines
        .iter()
        .filter(|l| l.contains("\"level\":\"TRACE\""))
        .count();
    assert!(
        traced > 0,
        "no trace line of {}: is the filter on?",
        lines.len()
    );
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    for (what, value) in [
        ("email address", email.as_str()),
        ("phone number", phone.as_str()),
        ("phone digits", digits.as_str()),
        ("first name", first_name.as_str()),
        ("API key", api_key.as_str()),
        ("SMTP password", smtp_password.as_str()),
        ("SMS auth token", sms_token.as_str()),
        ("webhook secret", webhook_secret.as_str()),
    ] {
        let found: Vec<&&str> = lines.iter().filter(|l| l.contains(value)).take(3).collect();
        assert!(
            found.is_empty(),
            "the {what} appears in {} of {} log lines, e.g.:\n{}",
            lines.iter().filter(|l| l.contains(value)).count(),
            lines.len(),
            found
                .iter()
                .map(|l| l.chars().take(600).collect::<String>())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    for field in ["execution_id", "workflow_id", "account_id", "step_id"] {
        assert!(
            lines.iter().any(|l| l.contains(&format!("\"{field}\":"))),
            "no log line carries {field}"
        );
    }
    // Lists are JSON arrays, not their Debug text.
    let started: serde_json::Value = lines
        .iter()
        .find(|l| l.contains("\"worker started\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .expect("a worker started line");
    let queues = started["queues"]
        .as_array()
        .unwrap_or_else(|| panic!("{started}"));
    assert_eq!(queues.len(), 3, "high, normal and low: {started}");
    assert!(queues.iter().all(|q| q.is_string()), "{started}");
    let _ = std::fs::remove_file(&log);
}
