//! Shared harness of the integration tests: real Redis from `REDIS_URL`,
//! Python arq from `FLOWPILOT_TEST_PYTHON` (both set up by `make test`),
//! unique names so parallel tests never see each other's keys.

#![allow(dead_code)]

pub mod api;
pub mod flow;

use std::path::PathBuf;
use std::time::Duration;

use flowpilot::queue::{Client, Serializer, Value};
use flowpilot::worker::{Registry, Settings, Worker};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// `REDIS_URL`, which `make test` points at a real Redis.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").expect("REDIS_URL must point at a Redis server: run `make test`")
}

/// A client on the test Redis.
pub async fn client(serializer: Serializer) -> Client {
    client_at(&redis_url(), serializer).await
}

/// A client on the Redis at `url`.
pub async fn client_at(url: &str, serializer: Serializer) -> Client {
    Client::connect(url, serializer)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// A raw connection for assertions on keys.
pub async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A name no other test uses: `<prefix>-<uuid>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Worker settings for tests: one queue, fast polling.
pub fn settings(queue: &str) -> Settings {
    Settings {
        queues: vec![queue.to_owned()],
        poll_delay: Duration::from_millis(50),
        job_timeout: Duration::from_secs(10),
        drain_timeout: Duration::from_secs(10),
        ..Settings::default()
    }
}

/// A worker running in this process until the returned token is cancelled.
pub struct RunningWorker {
    pub stop: CancellationToken,
    pub handle: tokio::task::JoinHandle<flowpilot::queue::Result<()>>,
}

impl RunningWorker {
    pub async fn start(registry: Registry, settings: Settings, serializer: Serializer) -> Self {
        let worker = Worker::new(client(serializer).await, registry, settings);
        let stop = CancellationToken::new();
        let handle = tokio::spawn(worker.run(stop.clone()));
        RunningWorker { stop, handle }
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

/// Runs `tests/support/arq_peer.py` with the real Python arq; returns its
/// JSON report.
pub async fn python_peer(args: &[&str]) -> serde_json::Value {
    python_peer_at(&redis_url(), args).await
}

/// As [`python_peer`], on the Redis at `redis_url`.
pub async fn python_peer_at(redis_url: &str, args: &[&str]) -> serde_json::Value {
    let python = std::env::var("FLOWPILOT_TEST_PYTHON")
        .expect("FLOWPILOT_TEST_PYTHON must name a Python with arq installed: run `make test`");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/arq_peer.py");
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .args(["--redis-url", redis_url])
        .output()
        .await
        .expect("run python");
    assert!(
        out.status.success(),
        "arq_peer.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "arq_peer.py printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The tagged-JSON form of a value, as the vectors and arq_peer.py write it.
pub fn tagged(v: &Value) -> serde_json::Value {
    use base64::Engine;
    use serde_json::json;
    match v {
        Value::None => json!(null),
        Value::Bool(b) => json!(b),
        Value::Int(i) if i.unsigned_abs() < (1 << 53) => json!(i),
        Value::Int(i) => json!({ "$bigint": i.to_string() }),
        Value::BigInt(b) => json!({ "$bigint": b.to_string() }),
        Value::Float(f) => json!(f),
        Value::Str(s) => json!(s),
        Value::Bytes(b) => {
            json!({ "$bytes_b64": base64::engine::general_purpose::STANDARD.encode(b) })
        }
        Value::List(items) => json!(items.iter().map(tagged).collect::<Vec<_>>()),
        Value::Tuple(items) => json!({ "$tuple": items.iter().map(tagged).collect::<Vec<_>>() }),
        Value::Dict(pairs) if pairs.iter().all(|(k, _)| matches!(k, Value::Str(_))) => {
            serde_json::Value::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (k.as_str().unwrap().to_owned(), tagged(v)))
                    .collect(),
            )
        }
        Value::Dict(pairs) => json!({
            "$dict_pairs": pairs.iter().map(|(k, v)| json!([tagged(k), tagged(v)])).collect::<Vec<_>>()
        }),
        Value::Object { class, args, .. } => match flowpilot::queue::value::datetime_iso(v) {
            Some(iso) => json!({ "$datetime": iso }),
            None => {
                json!({ "$exception": class, "args": args.iter().map(tagged).collect::<Vec<_>>() })
            }
        },
        other => json!({ "$repr": format!("{other:?}") }),
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The URL of the database behind `pool` (a `#[sqlx::test]` database), for
/// child processes.
pub fn database_url(pool: &sqlx::PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL: run `make test`");
    let db = pool
        .connect_options()
        .get_database()
        .expect("test database name")
        .to_owned();
    let mut url = url::Url::parse(&base).expect("DATABASE_URL is a URL");
    url.set_path(&db);
    url.to_string()
}

/// A TCP port on 127.0.0.1 free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real SMTP server (`tests/support/smtp_sink.py`, aiosmtpd) on `port`,
/// appending each message as a JSON line to `file`; with `auth`
/// (`user:password`) it requires AUTH. Returns once it is ready.
pub async fn smtp_sink(
    port: u16,
    file: &std::path::Path,
    auth: Option<&str>,
) -> tokio::process::Child {
    use tokio::io::AsyncBufReadExt;
    let python = std::env::var("FLOWPILOT_TEST_PYTHON").expect("run `make test`");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_sink.py");
    let mut server = Command::new(python)
        .args([script, &port.to_string(), file.to_str().unwrap()])
        .args(auth)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ready.as_deref(), Some("ready"));
    server
}

/// Waits (up to 30 s) until something accepts connections on `addr`.
pub async fn until_listening(addr: &str) {
    eventually(Duration::from_secs(30), "the API to listen", || async {
        tokio::net::TcpStream::connect(addr).await.ok()
    })
    .await;
}
