//! Engine harness: a fresh database (from `#[sqlx::test]`), our own queue
//! prefix in the shared Redis, the application's own runtime (engine,
//! worker, maintenance loop) built by `flowpilot::runtime`, and a local
//! webhook receiver.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json as AxumJson, Router};
use flowpilot::engine::retry::{RetryPolicies, RetryPolicy};
use flowpilot::engine::{Engine, Settings, StartRequest};
use flowpilot::provider::{Breakers, Limiter, Outbox, Providers, webhook};
use flowpilot::queue::{Serializer, keys};
use flowpilot::runtime::{Runtime, Spec, Tasks};
use flowpilot::store;
use serde_json::{Value as Json, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hook {
    pub path: String,
    pub idempotency_key: String,
    pub body: Json,
}

/// A local HTTP receiver recording every request; `/flaky/<n>` answers 503
/// to the first `n` requests of each idempotency-key prefix, `/limited/<n>`
/// 429 with `Retry-After: 1` likewise, `/gone` 404,
/// `/refuse` 400 with a JSON reason and an `X-Request-Id`, `/nul` 200 with
/// a NUL character in its JSON, `/batch` one result per item of a batch.
#[derive(Clone, Default)]
pub struct Receiver {
    pub hooks: Arc<Mutex<Vec<Hook>>>,
}

impl Receiver {
    pub async fn start() -> (Receiver, String) {
        let receiver = Receiver::default();
        let app = Router::new()
            .route("/hook", post(record))
            .route("/batch", post(batch))
            .route("/flaky/{n}", post(flaky))
            .route("/limited/{n}", post(limited))
            .route("/gone", post(gone))
            .route("/refuse", post(refuse))
            .route("/nul", post(nul))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, base)
    }

    pub fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().unwrap().clone()
    }

    /// The idempotency keys of the requests, in order.
    pub fn keys(&self) -> Vec<String> {
        self.hooks()
            .into_iter()
            .map(|h| h.idempotency_key)
            .collect()
    }

    fn push(&self, path: &str, headers: &HeaderMap, body: axum::body::Bytes) -> Vec<Hook> {
        let body = serde_json::from_slice(&body).unwrap_or(Json::Null);
        let key = headers
            .get("idempotency-key")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let mut hooks = self.hooks.lock().unwrap();
        hooks.push(Hook {
            path: path.to_owned(),
            idempotency_key: key,
            body,
        });
        hooks.clone()
    }
}

async fn record(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> AxumJson<Json> {
    r.push("/hook", &headers, body);
    AxumJson(json!({"ok": true}))
}

/// A batch receiver: one result per item, `{"status": 422}` for an item
/// whose body's `email` starts with `bad`.
async fn batch(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> AxumJson<Json> {
    let hooks = r.push("/batch", &headers, body);
    let items = hooks.last().unwrap().body["batch"].as_array().cloned();
    let results = items
        .unwrap_or_default()
        .iter()
        .map(|i| match i["body"]["email"].as_str() {
            Some(e) if e.starts_with("bad") => json!({"status": 422, "error": "refused"}),
            _ => json!({"accepted": i["idempotency_key"]}),
        })
        .collect::<Vec<_>>();
    AxumJson(json!({ "results": results }))
}

/// How many of `hooks` came from the execution of the last one (by the
/// idempotency key's `<execution>:` prefix).
fn seen_for_last_execution(hooks: &[Hook]) -> usize {
    let last = &hooks.last().unwrap().idempotency_key;
    let execution = last.split(':').next().unwrap();
    hooks
        .iter()
        .filter(|h| h.idempotency_key.starts_with(execution))
        .count()
}

async fn flaky(
    State(r): State<Receiver>,
    axum::extract::Path(n): axum::extract::Path<usize>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, AxumJson<Json>) {
    let seen = seen_for_last_execution(&r.push("/flaky", &headers, body));
    if seen <= n {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            AxumJson(json!({"error": "try later"})),
        )
    } else {
        (StatusCode::OK, AxumJson(json!({"ok": true, "seen": seen})))
    }
}

/// 429 with `Retry-After: 1` to the first `n` requests of each
/// execution, then 200.
async fn limited(
    State(r): State<Receiver>,
    axum::extract::Path(n): axum::extract::Path<usize>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (
    StatusCode,
    [(&'static str, &'static str); 1],
    AxumJson<Json>,
) {
    let seen = seen_for_last_execution(&r.push("/limited", &headers, body));
    if seen <= n {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            AxumJson(json!({"error": "slow down"})),
        )
    } else {
        (
            StatusCode::OK,
            [("retry-after", "0")],
            AxumJson(json!({"ok": true})),
        )
    }
}

async fn gone(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    r.push("/gone", &headers, body);
    StatusCode::NOT_FOUND
}

async fn refuse(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (
    StatusCode,
    [(&'static str, &'static str); 1],
    AxumJson<Json>,
) {
    r.push("/refuse", &headers, body);
    (
        StatusCode::BAD_REQUEST,
        [("x-request-id", "req-7")],
        AxumJson(json!({"error": "email is not deliverable"})),
    )
}

async fn nul(State(r): State<Receiver>, headers: HeaderMap, body: axum::body::Bytes) -> String {
    r.push("/nul", &headers, body);
    "{\"note\": \"a\\u0000b\"}".to_owned()
}

/// A running engine over one test database.
pub struct Flow {
    pub pool: PgPool,
    pub engine: Arc<Engine>,
    pub prefix: String,
    pub receiver: Receiver,
    pub base: String,
    pub account: Uuid,
    /// The Redis the engine (and the in-process worker) use.
    pub redis_url: String,
    /// The wiring the application runs with.
    pub runtime: Runtime,
    tasks: Option<Tasks>,
}

pub fn engine_settings(prefix: &str) -> Settings {
    Settings {
        lease: Duration::from_secs(20),
        run_budget: Duration::from_secs(5),
        retry: RetryPolicies::uniform(RetryPolicy {
            max_attempts: 3,
            initial: Duration::from_millis(200),
            max: Duration::from_secs(1),
            max_elapsed: None,
        }),
        maintenance_interval: Duration::from_millis(200),
        due_grace: Duration::from_secs(1),
        stale_queued_after: Duration::from_secs(5),
        queue_prefix: prefix.to_owned(),
        // Off by default; the in-process engines of the tests run with it
        // (the `flowpilot` processes they start run with the default).
        commit_lanes: 2,
        ..Settings::default()
    }
}

impl Flow {
    /// Starts an engine, worker and maintenance loop on `pool`.
    pub async fn start(pool: PgPool) -> Flow {
        Self::start_with(pool, true).await
    }

    /// As [`Flow::start`]; `run` false starts no worker (jobs stay queued).
    pub async fn start_with(pool: PgPool, run: bool) -> Flow {
        Self::start_queued(pool, &super::redis_url(), &super::unique("test-queue"), run).await
    }

    /// As [`Flow::start_with`], on the Redis at `redis_url` with the queue
    /// prefix `prefix`.
    pub async fn start_queued(pool: PgPool, redis_url: &str, prefix: &str, run: bool) -> Flow {
        Self::start_tuned(pool, redis_url, prefix, run, |_| {}).await
    }

    /// As [`Flow::start_queued`], with the engine's settings changed by
    /// `tune` first.
    pub async fn start_tuned(
        pool: PgPool,
        redis_url: &str,
        prefix: &str,
        run: bool,
        tune: impl FnOnce(&mut Settings),
    ) -> Flow {
        store::partition::ensure_ahead(&pool, chrono::Utc::now())
            .await
            .unwrap();
        let prefix = prefix.to_owned();
        let client = super::client_at(redis_url, Serializer::Pickle).await;
        let (receiver, base) = Receiver::start().await;
        let providers = Providers::new(
            client.clone(),
            Arc::new(Outbox::batched(pool.clone(), 100, None)),
            Arc::new(Outbox::new(pool.clone())),
            webhook::Client::new(webhook::Guard::new(vec!["127.0.0.1".parse().unwrap()])).unwrap(),
            Breakers::off(client.clone()),
            Limiter::new(client.clone(), pool.clone(), &prefix, Default::default()),
            flowpilot::provider::batch_sizes(),
        );
        let worker = flowpilot::worker::Settings {
            queues: keys::priority_queues(&prefix),
            max_jobs: 20,
            poll_delay: Duration::from_millis(20),
            job_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            ..flowpilot::worker::Settings::default()
        };
        let mut engine = engine_settings(&prefix);
        tune(&mut engine);
        let runtime = Runtime::new(
            pool.clone(),
            client,
            Spec {
                engine,
                providers,
                worker,
                alerts: flowpilot::alert::Settings {
                    interval: Duration::from_millis(200),
                    dispatch_interval: Duration::from_millis(100),
                    ..flowpilot::alert::Settings::for_prefix(&prefix)
                },
            },
        )
        .unwrap();
        let engine = Arc::clone(&runtime.engine);
        let account = store::account::create(&pool, "test").await.unwrap().id;
        let mut flow = Flow {
            pool,
            engine,
            prefix,
            receiver,
            base,
            account,
            redis_url: redis_url.to_owned(),
            runtime,
            tasks: None,
        };
        if run {
            flow.spawn_worker().await;
        }
        flow
    }

    /// Starts the in-process worker (on this flow's queues) and maintenance
    /// loop; [`Flow::stop`] stops them.
    pub async fn spawn_worker(&mut self) {
        let mut tasks = Tasks::new(CancellationToken::new());
        self.runtime.spawn_worker(&mut tasks).unwrap();
        self.runtime.spawn_change_listener(&mut tasks);
        self.tasks = Some(tasks);
    }

    pub async fn stop(self) {
        if let Some(tasks) = self.tasks {
            tasks.token().cancel();
            tasks.wait().await.unwrap();
        }
    }

    pub async fn contact(&self, email: &str, opted_out: bool) -> Uuid {
        store::contact::insert(
            &self.pool,
            self.account,
            &store::contact::NewContact {
                email: Some(email.into()),
                phone: Some("+15550100002".into()),
                timezone: Some("Europe/Paris".into()),
                attributes: json!({"first_name": "Ada", "plan": "pro"})
                    .as_object()
                    .cloned()
                    .unwrap(),
                tags: vec!["trial".into()],
                opted_out,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .id
    }

    pub async fn workflow(&self, definition: Json) -> Uuid {
        self.engine
            .create_workflow(self.account, "test workflow", None, true, &definition)
            .await
            .unwrap()
            .id
    }

    /// The six steps of the acceptance test: email, wait 1 s, webhook,
    /// condition, update_contact, sms.
    pub fn six_steps(&self) -> Json {
        json!({"steps": [
            {"id": "welcome", "type": "send_email", "subject": "Hi {{contact.attributes.first_name}}", "body": "Welcome aboard."},
            {"id": "pause", "type": "wait", "duration": "1s"},
            {"id": "notify", "type": "webhook", "url": format!("{}/hook", self.base),
             "body": {"contact": "{{contact.id}}", "plan": "{{contact.attributes.plan}}"}},
            {"id": "is_pro", "type": "condition",
             "if": {"field": "contact.attributes.plan", "op": "eq", "value": "pro"}, "else": "sms"},
            {"id": "upgrade", "type": "update_contact",
             "attributes": {"stage": "onboarded", "hook_status": "{{steps.notify.status}}"}},
            {"id": "sms", "type": "send_sms", "body": "Welcome {{contact.attributes.first_name}}"}
        ]})
    }

    /// A new contact (`ada@example.com`) entering a new workflow of
    /// `definition`; returns the execution.
    pub async fn enter(&self, definition: Json) -> Uuid {
        let contact = self.contact("ada@example.com", false).await;
        let workflow = self.workflow(definition).await;
        self.start_execution(workflow, contact).await
    }

    pub async fn start_execution(&self, workflow: Uuid, contact: Uuid) -> Uuid {
        self.start_execution_in(self.account, workflow, contact)
            .await
    }

    /// As [`Flow::start_execution`], in `account`.
    pub async fn start_execution_in(&self, account: Uuid, workflow: Uuid, contact: Uuid) -> Uuid {
        self.engine
            .start(StartRequest {
                account_id: account,
                workflow_id: workflow,
                contact_id: contact,
                priority: Default::default(),
                idempotency_key: None,
                metadata: json!({}),
                source: "api",
            })
            .await
            .unwrap()
            .0
            .id
    }

    pub async fn status(&self, id: Uuid) -> String {
        sqlx::query_scalar("SELECT status FROM workflow_executions WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Waits until every execution of the database is in a final status.
    pub async fn wait_all_final(&self, timeout: Duration) {
        super::eventually(timeout, "every execution to finish", || {
            let pool = self.pool.clone();
            async move {
                let open: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM workflow_executions WHERE status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED')",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                (open == 0).then_some(())
            }
        })
        .await;
    }

    pub async fn wait_status(&self, id: Uuid, status: &str, timeout: Duration) {
        super::eventually(timeout, status, || async move {
            (self.status(id).await == status).then_some(())
        })
        .await;
    }
}

// === assertions' queries ===

/// `(step_index, step_id, action_type, status, attempt)` of an execution's logs.
pub async fn logs(pool: &PgPool, id: Uuid) -> Vec<(i32, String, String, String, i32)> {
    sqlx::query_as(
        "SELECT step_index, step_id, action_type, status, attempt FROM execution_logs WHERE execution_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Log rows repeated for one (execution, step, attempt): must be none.
pub async fn duplicate_attempts(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT execution_id, step_index, attempt FROM execution_logs \
         GROUP BY 1, 2, 3 HAVING count(*) > 1) d",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Executions by status.
pub async fn statuses(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT status, count(*) FROM workflow_executions GROUP BY 1 ORDER BY 1")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Messages in the outbox by channel.
pub async fn outbox_by_channel(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT channel, count(*) FROM outbox GROUP BY 1 ORDER BY 1")
        .fetch_all(pool)
        .await
        .unwrap()
}
