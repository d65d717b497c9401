//! What `make dev` prints works as printed: `flowpilot dev --seed-demo`
//! runs, the console it opens with signs in with the printed key, and the
//! curl sequence of `tests/support/next-steps.sh` (create a
//! workflow and a contact, execute, poll, read the logs) succeeds against it.

mod common;

use std::process::Stdio;

use sqlx::PgPool;
use tokio::process::Command;

#[sqlx::test]
async fn the_printed_curl_sequence_runs_against_flowpilot_dev(pool: PgPool) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let key = format!("fp_demo_{}", uuid::Uuid::new_v4().simple());
    let prefix = common::unique("dev-queue");
    let root = env!("CARGO_MANIFEST_DIR");
    let env = [
        ("DATABASE_URL", common::database_url(&pool)),
        ("REDIS_URL", common::redis_url()),
        ("FLOWPILOT_LISTEN", listen.clone()),
        ("FLOWPILOT_DEMO_API_KEY", key.clone()),
        ("FLOWPILOT_QUEUE_PREFIX", prefix),
        ("PYTHON", "python3".to_owned()),
    ];
    let mut dev = Command::new(env!("CARGO_BIN_EXE_flowpilot"))
        .args(["dev", "--seed-demo", "--log", "warn"])
        .envs(env.iter().cloned())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    common::until_listening(&listen).await;

    let printed = Command::new("bash")
        .arg(format!("{root}/tests/support/next-steps.sh"))
        .envs(env.iter().cloned())
        .output()
        .await
        .unwrap();
    assert!(printed.status.success());
    let text = String::from_utf8(printed.stdout).unwrap();
    // The next steps open with the console, which signs in with the key.
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap();
    let console = first
        .split_whitespace()
        .find(|w| w.ends_with("/ui/"))
        .unwrap_or_else(|| panic!("the first line names the console: {first}"));
    assert!(first.contains(&key), "{first}");
    flowpilot::tls::install_crypto_provider();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http.get(console).send().await.unwrap();
    assert_eq!(page.status(), 303, "a visitor is sent to sign in");
    let signed = http
        .post(format!("{console}login"))
        .form(&[("key", key.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 303);
    let cookie = signed.headers()["set-cookie"].to_str().unwrap();
    let overview = http
        .get(console)
        .header("cookie", cookie.split(';').next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), 200);
    assert!(overview.text().await.unwrap().contains("<h1>Overview</h1>"));
    let start = text
        .find("# the HTTP API")
        .expect("a curl sequence is printed");
    let block: String = text[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let ran = Command::new("bash")
        .args(["-euc", &block])
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "{block}\n--- stdout\n{out}\n--- stderr\n{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[1].contains("\"status\":\"COMPLETED\""), "{out}");
    assert!(lines[2].contains("\"step_id\":\"vip\""), "{out}");

    // The same process exports engine, worker and API metrics.
    flowpilot::tls::install_crypto_provider();
    let metrics = reqwest::get(format!("http://{listen}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "flowpilot_engine_steps_total{action=\"wait\",outcome=\"SUCCEEDED\"} 1",
        "flowpilot_engine_steps_total{action=\"wait\",outcome=\"WAITING\"} 1",
        "flowpilot_engine_steps_total{action=\"send_email\",outcome=\"SUCCEEDED\"} 1",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in\n{metrics}");
    }
    assert!(
        metrics.contains("flowpilot_worker_jobs_total{outcome=\"complete\""),
        "{metrics}"
    );
    assert!(metrics.contains("flowpilot_api_requests_total{method=\"POST\",route=\"/api/v1/workflows/{id}/execute\",status=\"2xx\"} 1"), "{metrics}");
    dev.kill().await.unwrap();
}
