//! The `flowpilot` binary as an operator starts it: environment variables
//! rendered empty by templating tools mean "unset", and a subsystem that
//! cannot start stops the process with a message and a non-zero exit.

mod common;

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn flowpilot() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowpilot"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Reads the child's stderr until a line contains `needle`; returns every
/// line read, or panics after `timeout`.
async fn stderr_until(child: &mut Child, needle: &str, timeout: Duration) -> Vec<String> {
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let found = tokio::time::timeout(timeout, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let hit = line.contains(needle);
            seen.push(line);
            if hit {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(found, Ok(true)),
        "no line with `{needle}`; stderr:\n{}",
        seen.join("\n")
    );
    seen
}

async fn exit_within(child: &mut Child, timeout: Duration) -> ExitStatus {
    tokio::time::timeout(timeout, child.wait())
        .await
        .expect("the process should have exited")
        .unwrap()
}

#[sqlx::test]
async fn empty_environment_variables_count_as_unset(pool: PgPool) {
    let prefix = common::unique("cli");
    let mut cmd = flowpilot();
    cmd.args(["worker", "--queue-prefix", &prefix])
        .env("DATABASE_URL", common::database_url(&pool))
        .env("REDIS_URL", common::redis_url());
    // As `helm template` renders values left at "" and Compose renders
    // `NAME=` lines: each would be refused (or worse, used) if read as "".
    for name in [
        "FLOWPILOT_QUEUES",
        "FLOWPILOT_DRAIN_TIMEOUT",
        "FLOWPILOT_JOB_TIMEOUT",
        "FLOWPILOT_MAX_JOBS",
        "FLOWPILOT_SMTP_URL",
        "FLOWPILOT_WEBHOOK_ALLOW",
        "FLOWPILOT_ADMIN_LISTEN",
        "FLOWPILOT_LOG",
        "FLOWPILOT_LOG_FORMAT",
    ] {
        cmd.env(name, "");
    }
    let mut child = cmd.spawn().unwrap();
    let lines = stderr_until(&mut child, "worker started", Duration::from_secs(20)).await;
    let started = lines.last().unwrap();
    assert!(started.contains("max_jobs=10"), "{started}");
    assert!(started.contains(&format!("{prefix}:high")), "{started}");
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = exit_within(&mut child, Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
}

#[sqlx::test]
async fn a_taken_admin_port_stops_the_controller_even_while_it_waits_to_lead(pool: PgPool) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    // An API server that never answers: the controller waits to lead.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let kubeconfig = std::env::temp_dir().join(format!("{}.yaml", common::unique("kubeconfig")));
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             clusters: [{{name: test, cluster: {{server: \"http://{}\"}}}}]\n\
             users: [{{name: test, user: {{}}}}]\n\
             contexts: [{{name: test, context: {{cluster: test, user: test}}}}]\n",
            silent.local_addr().unwrap()
        ),
    )
    .unwrap();
    let mut child = flowpilot()
        .args(["controller", "--admin-listen", &format!("127.0.0.1:{port}")])
        .args(["--queue-prefix", &common::unique("cli")])
        .env("DATABASE_URL", common::database_url(&pool))
        .env("REDIS_URL", common::redis_url())
        .env("KUBECONFIG", &kubeconfig)
        .spawn()
        .unwrap();
    let status = exit_within(&mut child, Duration::from_secs(15)).await;
    let mut err = String::new();
    tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut err)
        .await
        .unwrap();
    std::fs::remove_file(&kubeconfig).ok();
    assert!(!status.success(), "{status}");
    assert!(
        err.contains(&format!("binding the admin listener on 127.0.0.1:{port}")),
        "{err}"
    );
    drop((taken, silent));
}

/// Runs `flowpilot args...` on the database of `pool`; returns exit code,
/// stdout and stderr.
async fn run(pool: &PgPool, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flowpilot"))
        .args(args)
        .args(["--log", "error"])
        .env("DATABASE_URL", common::database_url(pool))
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[sqlx::test]
async fn an_operator_creates_lists_and_revokes_api_keys_from_the_cli(pool: PgPool) {
    flowpilot::store::partition::ensure_ahead(&pool, chrono::Utc::now())
        .await
        .unwrap();
    let account = flowpilot::store::account::create(&pool, "ops")
        .await
        .unwrap()
        .id
        .to_string();
    let (code, out, err) = run(
        &pool,
        &["apikey", "create", "--account", &account, "--name", "ci"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let created: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let key = created["key"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    let hash = flowpilot::auth::hash_key(key);
    assert!(
        flowpilot::store::api_key::find(&pool, &hash)
            .await
            .unwrap()
            .is_some()
    );

    let (code, out, _) = run(&pool, &["apikey", "list", "--account", &account]).await;
    assert_eq!(code, 0);
    let listed: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], created["id"]);
    assert_eq!(listed[0]["name"], "ci");
    assert!(listed[0]["revoked_at"].is_null());
    assert!(!out.contains(key), "the key itself is never listed");

    let (code, out, _) = run(&pool, &["apikey", "revoke", "--id", id]).await;
    assert_eq!(code, 0);
    let revoked: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(revoked["revoked_at"].is_string());
    assert!(
        flowpilot::store::api_key::find(&pool, &hash)
            .await
            .unwrap()
            .is_none()
    );

    let unknown = uuid::Uuid::new_v4().to_string();
    let (code, _, err) = run(&pool, &["apikey", "revoke", "--id", &unknown]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no API key"), "{err}");

    // The audit trail has both commands, by the CLI, on the key.
    let trail: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT actor, action, target FROM audit_log ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let id = Some(id.to_owned());
    assert_eq!(
        trail,
        [
            ("cli".to_owned(), "apikey create".to_owned(), id.clone()),
            ("cli".to_owned(), "apikey revoke".to_owned(), id)
        ]
    );
}
