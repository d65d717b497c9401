//! The real router over a fresh engine, driven in-process: every response
//! of a test is checked against the router's own `/openapi.json` when the
//! test calls [`Api::finish`].

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use flowpilot::api;
use http_body_util::BodyExt;
use serde_json::{Value as Json, json};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

use super::flow::Flow;

/// A recorded exchange: method, path, status, body.
type Exchange = (Method, String, u16, Json);

pub struct Api {
    pub flow: Flow,
    pub router: Router,
    pub key: String,
    recorded: Arc<Mutex<Vec<Exchange>>>,
}

impl Api {
    pub async fn start(pool: PgPool) -> Api {
        Self::start_with(pool, true, None).await
    }

    pub async fn start_with_no_worker(pool: PgPool) -> Api {
        Self::start_with(pool, false, None).await
    }

    /// The router over a fresh engine (with a worker when `worker`), a key
    /// of the test account, and the log filter handle if any.
    pub async fn start_with(
        pool: PgPool,
        worker: bool,
        log_filter: Option<flowpilot::telemetry::LogFilter>,
    ) -> Api {
        let flow = Flow::start_with(pool.clone(), worker).await;
        let state = flow.runtime.api_state(log_filter);
        let (key, _) = flowpilot::auth::mint(&pool, flow.account, "test", false)
            .await
            .unwrap();
        Api {
            flow,
            router: api::router(state),
            key,
            recorded: Arc::default(),
        }
    }

    /// A key for a fresh account (and that account's id).
    pub async fn other_account(&self, admin: bool) -> (String, Uuid) {
        let account = flowpilot::store::account::create(&self.flow.pool, "other")
            .await
            .unwrap()
            .id;
        let (key, _) = flowpilot::auth::mint(&self.flow.pool, account, "other", admin)
            .await
            .unwrap();
        (key, account)
    }

    pub async fn raw(&self, req: Request<Body>) -> (u16, Json) {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body: Json = if path == "/metrics" {
            Json::String(String::from_utf8_lossy(&bytes).into_owned())
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("{method} {path} answered non-JSON: {bytes:?}"))
        };
        assert!(status < 500, "{method} {path} answered {status}: {body}");
        self.recorded
            .lock()
            .unwrap()
            .push((method, path, status, body.clone()));
        (status, body)
    }

    pub async fn call_as(
        &self,
        key: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Json>,
    ) -> (u16, Json) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        self.raw(req.unwrap()).await
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Json>) -> (u16, Json) {
        self.call_as(Some(&self.key.clone()), method, path, body)
            .await
    }

    pub async fn get(&self, path: &str) -> (u16, Json) {
        self.call(Method::GET, path, None).await
    }

    /// POST without a body (activate, cancel, retry, ...).
    pub async fn action(&self, path: &str) -> (u16, Json) {
        self.call(Method::POST, path, None).await
    }

    pub async fn post(&self, path: &str, body: Json) -> (u16, Json) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn workflow(&self, definition: Json) -> String {
        let (status, w) = self
            .post(
                "/api/v1/workflows",
                json!({"name": "w", "definition": definition}),
            )
            .await;
        assert_eq!(status, 201, "{w}");
        w["id"].as_str().unwrap().to_owned()
    }

    /// Starts `workflow` for `contact`; the execution's id.
    pub async fn execute(&self, workflow: &str, contact: &str) -> String {
        let (status, e) = self
            .post(
                &format!("/api/v1/workflows/{workflow}/execute"),
                json!({"contact_id": contact}),
            )
            .await;
        assert_eq!(status, 202, "{e}");
        e["id"].as_str().unwrap().to_owned()
    }

    pub async fn contact(&self, email: &str) -> String {
        let (status, c) = self
            .post("/api/v1/contacts", json!({"email": email, "tags": ["t"]}))
            .await;
        assert_eq!(status, 201, "{c}");
        c["id"].as_str().unwrap().to_owned()
    }

    /// Validates every recorded response against `/openapi.json`, then stops.
    pub async fn finish(self) {
        let (status, spec) = self.get("/openapi.json").await;
        assert_eq!(status, 200);
        let recorded = self.recorded.lock().unwrap().clone();
        let mut checked = 0;
        for (method, path, status, body) in &recorded {
            if path == "/openapi.json" || path == "/metrics" {
                continue;
            }
            let Some(template) = spec["paths"]
                .as_object()
                .unwrap()
                .keys()
                .find(|t| matches(t, path))
            else {
                assert_eq!(
                    *status, 404,
                    "{method} {path} is not in the OpenAPI document"
                );
                continue;
            };
            let op = &spec["paths"][template][method.as_str().to_lowercase()];
            if op.is_null() {
                assert_eq!(
                    *status, 405,
                    "{method} {template} is not in the OpenAPI document"
                );
                continue;
            }
            let pointer = format!(
                "#/paths/{}/{}/responses/{status}/content/application~1json/schema",
                template
                    .replace('~', "~0")
                    .replace('/', "~1")
                    .replace('{', "%7B")
                    .replace('}', "%7D"),
                method.as_str().to_lowercase()
            );
            assert!(
                !op["responses"][status.to_string()].is_null(),
                "{method} {template} answered {status}, which the OpenAPI document does not list: {body}"
            );
            let mut root = spec.clone();
            root["$ref"] = json!(pointer);
            let validator = jsonschema::validator_for(&root).unwrap();
            if let Err(e) = validator.validate(body) {
                panic!("{method} {path} {status} does not match the OpenAPI document: {e}\n{body}");
            }
            checked += 1;
        }
        assert!(checked > 0);
        // The check is not vacuous: a body of the wrong shape fails it.
        let mut root = spec.clone();
        root["$ref"] =
            json!("#/paths/~1healthz/get/responses/200/content/application~1json/schema");
        assert!(
            !jsonschema::validator_for(&root)
                .unwrap()
                .is_valid(&json!({"status": 1}))
        );
        self.flow.stop().await;
    }
}

/// Whether a concrete path matches an OpenAPI path template.
pub fn matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(a, b)| (a.starts_with('{') && a.ends_with('}')) || a == b)
}
