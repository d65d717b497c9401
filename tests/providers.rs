//! The real email and SMS providers against real peers: an aiosmtpd SMTP
//! server and a local Twilio-style HTTP endpoint.

mod common;

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Form, Json as AxumJson, Router};
use flowpilot::action::{ErrorClass, email, sms};
use flowpilot::provider::{HttpSms, Smtp};
use serde_json::{Value as Json, json};

use common::free_port;

#[tokio::test]
async fn smtp_delivers_to_a_real_server_and_classifies_a_rejected_recipient_as_permanent() {
    flowpilot::tls::install_crypto_provider();
    let port = free_port();
    let file = std::env::temp_dir().join(format!("{}.jsonl", common::unique("smtp")));
    let _server = common::smtp_sink(port, &file, None).await;

    let smtp = Smtp::new(&format!("smtp://127.0.0.1:{port}"), "team@flowpilot.test").unwrap();
    let msg = email::Message {
        to: "ada@example.com".into(),
        from: None,
        subject: "Welcome, Ada".into(),
        body: "Thanks for signing up.".into(),
    };
    let receipt = smtp.send(&msg, "exec:0:1").await.unwrap();
    assert_eq!(receipt["provider"], json!("smtp"));
    assert_eq!(receipt["to"], json!("a***@example.com"));
    // Connections for many messages: lettre's pool keeps them open (a
    // connection goes back to the pool just after its send, so messages
    // sent back to back alternate between two).
    for i in 0..4 {
        smtp.send(&msg, &format!("more:0:{i}")).await.unwrap();
    }

    let bounced = email::Message {
        to: "nobody@bounce.test".into(),
        ..msg.clone()
    };
    let err = smtp.send(&bounced, "exec:0:2").await.unwrap_err();
    assert!(!err.retryable(), "{err}");
    assert_eq!(err.class, ErrorClass::Permanent);

    let received: Vec<Json> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(received.len(), 5);
    let connections: std::collections::HashSet<String> =
        received.iter().map(|r| r["peer"].to_string()).collect();
    let peers: Vec<String> = received.iter().map(|r| r["peer"].to_string()).collect();
    // Unpooled, each message opens its own connection (five).
    assert!(
        connections.len() <= 3,
        "five messages, {} connections: {peers:?}",
        connections.len()
    );
    assert_eq!(received[0]["from"], json!("team@flowpilot.test"));
    assert_eq!(received[0]["to"], json!(["ada@example.com"]));
    let data = received[0]["data"].as_str().unwrap();
    assert!(data.contains("Subject: Welcome, Ada"), "{data}");
    assert!(data.contains("Idempotency-Key: exec:0:1"), "{data}");
    assert!(data.contains("Thanks for signing up."), "{data}");

    // Nobody listening: transient.
    let down = Smtp::new(&format!("smtp://127.0.0.1:{}", free_port()), "a@b.test").unwrap();
    let err = down.send(&msg, "k").await.unwrap_err();
    assert!(err.retryable(), "{err}");
    assert_eq!(err.class, ErrorClass::Transient);
    std::fs::remove_file(&file).ok();
}

/// One request: authorization header, idempotency key, form fields.
type Seen = (String, String, Vec<(String, String)>);

#[derive(Clone, Default)]
struct Twilio {
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn messages(
    State(t): State<Twilio>,
    axum::extract::Path(sid): axum::extract::Path<String>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> (StatusCode, AxumJson<Json>) {
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    t.seen
        .lock()
        .unwrap()
        .push((auth.clone(), key, form.clone()));
    let to = form
        .iter()
        .find(|(k, _)| k == "To")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if to == "+15550000500" {
        return (
            StatusCode::BAD_GATEWAY,
            AxumJson(json!({"message": "upstream down"})),
        );
    }
    if to == "+15550000400" || sid != "AC123" {
        return (
            StatusCode::BAD_REQUEST,
            AxumJson(json!({"message": "invalid To"})),
        );
    }
    (
        StatusCode::CREATED,
        AxumJson(json!({"sid": "SM1", "status": "queued"})),
    )
}

#[tokio::test]
async fn http_sms_posts_twilio_style_forms_and_classifies_errors() {
    let twilio = Twilio::default();
    let app = Router::new()
        .route("/2010-04-01/Accounts/{sid}/Messages.json", post(messages))
        .with_state(twilio.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    flowpilot::tls::install_crypto_provider();
    let provider = HttpSms::new(
        reqwest::Client::new(),
        &base,
        "AC123",
        "secret",
        "+15550001111",
    );
    let msg = |to: &str| sms::Message {
        to: to.into(),
        body: "Your code is 1234".into(),
    };
    let receipt = provider
        .send(&msg("+15551234567"), "exec:3:1")
        .await
        .unwrap();
    assert_eq!(
        receipt,
        json!({"provider": "http", "to": "+*******4567", "sid": "SM1", "status": "queued"})
    );
    let err = provider.send(&msg("+15550000500"), "k").await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient, "{err}");
    let err = provider.send(&msg("+15550000400"), "k").await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent, "{err}");
    assert!(!err.retryable());

    let seen = twilio.seen.lock().unwrap().clone();
    let (auth, key, form) = &seen[0];
    use base64::Engine;
    let expected_auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("AC123:secret")
    );
    assert_eq!(auth, &expected_auth);
    assert_eq!(key, "exec:3:1");
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        (field("To"), field("From"), field("Body")),
        (
            Some("+15551234567"),
            Some("+15550001111"),
            Some("Your code is 1234")
        )
    );
}
