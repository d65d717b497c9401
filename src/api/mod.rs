//! The HTTP API (axum): workflows, contacts, executions and their logs,
//! with bearer API keys scoped to one account, one JSON error shape, and
//! an OpenAPI document generated from the handlers (`GET /openapi.json`).
//!
//! - [`extract`]: request parsing, every failure a 4xx naming the field;
//! - [`error`]: the one place errors become responses;
//! - [`view`]: response bodies and cursors;
//! - one file per resource: [`workflow`], [`contact`], [`execution`],
//!   [`failure`] (failure groups and dead letters), [`operation`] (bulk
//!   retry, cancel and enrollment), [`alert`] (alert rules, history,
//!   acknowledgement), [`queue`] (queue health), [`limit`] (rate limits), [`admin`] (API keys),
//!   [`health`];
//! - [`console`]: the operator console (HTML under `/ui/`), calling the
//!   handlers above.
//!
//! Driven by `flowpilot api` and `flowpilot dev`. One door per room: every
//! write goes through the engine, which checks it; every read through the
//! store's read handle ([`AppState::reader`]); both scoped to the caller's
//! account.

pub mod admin;
pub mod alert;
pub mod analytics;
pub mod console;
pub mod contact;
pub mod error;
pub mod execution;
pub mod extract;
pub mod failure;
pub mod health;
pub mod limit;
pub mod operation;
pub mod queue;
pub mod view;
pub mod workflow;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::engine::Engine;
use crate::metrics::ApiMetrics;
use error::ApiError;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The engine: every write.
    pub engine: Arc<Engine>,
    /// Alert rules and acknowledgements.
    pub alerts: crate::alert::Alerts,
    /// Every read.
    pub reader: crate::store::Reader,
    /// API keys (the admin endpoints).
    pub keys: crate::auth::Keys,
    /// The audit trail every state-changing call is appended to.
    pub audit: crate::store::audit::Audit,
    /// Redis, for readiness.
    pub queue: crate::queue::Client,
    /// Request metrics.
    pub metrics: Arc<ApiMetrics>,
    /// Queue gauges, refreshed when an API process's `/metrics` is read.
    pub queue_metrics: Arc<crate::metrics::QueueMetrics>,
    /// Dependency, breaker and partition gauges, refreshed likewise.
    pub health_metrics: Arc<crate::metrics::HealthMetrics>,
    /// The Prometheus registry `/metrics` renders.
    pub registry: prometheus::Registry,
    /// The process's reloadable log filter, when it has one.
    pub log_filter: Option<crate::telemetry::LogFilter>,
    /// Operator console sessions.
    pub sessions: console::Sessions,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "flowpilot", description = "Durable workflow execution for marketing and CRM automation."),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
    components(schemas(error::ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi.info.license = None;
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "api_key",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("API key")
                        .build(),
                ),
            );
        }
    }
}

fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(workflow::create, workflow::list))
        .routes(routes!(workflow::get))
        .routes(routes!(workflow::add_version))
        .routes(routes!(workflow::activate))
        .routes(routes!(workflow::deactivate))
        .routes(routes!(workflow::archive))
        .routes(routes!(workflow::versions))
        .routes(routes!(workflow::execute))
        .routes(routes!(analytics::analytics))
        .routes(routes!(analytics::suggestions))
        .routes(routes!(contact::create, contact::list))
        .routes(routes!(contact::get, contact::update, contact::erase))
        .routes(routes!(execution::list))
        .routes(routes!(execution::summary))
        .routes(routes!(execution::get))
        .routes(routes!(execution::logs))
        .routes(routes!(execution::cancel))
        .routes(routes!(execution::retry))
        .routes(routes!(operation::bulk_retry))
        .routes(routes!(operation::bulk_cancel))
        .routes(routes!(operation::enroll))
        .routes(routes!(operation::list))
        .routes(routes!(operation::get))
        .routes(routes!(operation::cancel))
        .routes(routes!(alert::create_rule, alert::list_rules))
        .routes(routes!(alert::get_rule, alert::delete_rule))
        .routes(routes!(alert::list))
        .routes(routes!(alert::get))
        .routes(routes!(alert::ack))
        .routes(routes!(failure::errors))
        .routes(routes!(failure::dead_letters))
        .routes(routes!(failure::dead_letter))
        .routes(routes!(queue::list))
        .routes(routes!(limit::get, limit::put))
        .routes(routes!(health::set_log_filter))
        .routes(routes!(admin::list_api_keys))
        .routes(routes!(admin::revoke_api_key))
        .routes(routes!(admin::audit))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
}

/// One response's links: the operation and status it belongs to, and the
/// `(link name, target operation)` pairs.
type Links = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// What a response leads to, each link passing the response's `id` as the
/// next operation's `{id}`. Client generators and stateful fuzzers follow
/// them from a created resource to the operations on it.
const LINKS: &[Links] = &[
    (
        "create_workflow",
        "201",
        &[
            ("GetWorkflow", "get_workflow"),
            ("AddVersion", "add_workflow_version"),
            ("Activate", "activate_workflow"),
            ("Deactivate", "deactivate_workflow"),
            ("Archive", "archive_workflow"),
            ("Versions", "list_workflow_versions"),
            ("Execute", "execute_workflow"),
            ("Enroll", "enroll_contacts"),
        ],
    ),
    (
        "add_workflow_version",
        "201",
        &[("GetWorkflow", "get_workflow")],
    ),
    (
        "create_contact",
        "201",
        &[
            ("GetContact", "get_contact"),
            ("UpdateContact", "update_contact"),
            ("EraseContact", "erase_contact"),
        ],
    ),
    (
        "execute_workflow",
        "202",
        &[
            ("GetExecution", "get_execution"),
            ("ListLogs", "list_execution_logs"),
            ("Cancel", "cancel_execution"),
            ("Retry", "retry_execution"),
        ],
    ),
    (
        "create_alert_rule",
        "201",
        &[
            ("GetRule", "get_alert_rule"),
            ("DeleteRule", "delete_alert_rule"),
        ],
    ),
    (
        "enroll_contacts",
        "202",
        &[
            ("GetOperation", "get_operation"),
            ("CancelOperation", "cancel_operation"),
        ],
    ),
    (
        "bulk_retry_executions",
        "202",
        &[
            ("GetOperation", "get_operation"),
            ("CancelOperation", "cancel_operation"),
        ],
    ),
    (
        "bulk_cancel_executions",
        "202",
        &[
            ("GetOperation", "get_operation"),
            ("CancelOperation", "cancel_operation"),
        ],
    ),
];

/// Adds [`LINKS`] to the responses of `doc`.
fn link(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::link::LinkBuilder;
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.get, &mut item.post, &mut item.patch]
            .into_iter()
            .flatten()
        {
            let Some(id) = op.operation_id.as_deref() else {
                continue;
            };
            for (_, status, targets) in LINKS.iter().filter(|(from, ..)| *from == id) {
                if let Some(RefOr::T(resp)) = op.responses.responses.get_mut(*status) {
                    for (name, target) in *targets {
                        let link = LinkBuilder::new()
                            .operation_id(*target)
                            .parameter("id", "$response.body#/id")
                            .build();
                        resp.links.insert((*name).to_owned(), RefOr::T(link));
                    }
                }
            }
        }
    }
}

/// The router's routes and the OpenAPI document, links added.
fn document() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = routes().split_for_parts();
    link(&mut doc);
    (router, doc)
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    document().1
}

/// The router with every endpoint, `/openapi.json` and `/metrics`.
pub fn router(state: AppState) -> Router {
    let (router, doc) = document();
    let doc = Arc::new(doc);
    router
        .route(
            "/openapi.json",
            axum::routing::get(move || async move { axum::Json((*doc).clone()) }),
        )
        .route("/metrics", axum::routing::get(queue::metrics))
        .merge(console::router())
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(extract::MAX_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), audit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// `/healthz`, `/readyz` and `/metrics` alone, for processes without the
/// API (the controller).
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", axum::routing::get(health::healthz))
        .route("/readyz", axum::routing::get(health::readyz))
        .route("/metrics", axum::routing::get(health::metrics))
        .fallback(|| async { ApiError::no_route() })
        .with_state(state)
}

/// Binds `addr` for [`serve`] or [`serve_router`]: done before anything
/// starts, so a taken port stops the process at once with a message.
///
/// # Errors
/// When the address cannot be bound, naming `what` and the address.
pub async fn bind(what: &str, addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("binding the {what} listener on {addr}: {e}"),
        )
    })
}

/// Serves `router` on `listener` until `shutdown`.
///
/// # Errors
/// When serving fails.
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    info!(addr = %listener.local_addr()?, "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

/// Who called, as the `Auth` extractor found: where it leaves the key for
/// the audit middleware, which runs around the handler.
#[derive(Clone, Default)]
pub(crate) struct Caller(Arc<std::sync::Mutex<Option<extract::Auth>>>);

impl Caller {
    fn set(&self, auth: extract::Auth) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(auth);
    }

    fn get(&self) -> Option<extract::Auth> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Appends every state-changing call (POST, PUT, PATCH, DELETE) to the
/// audit trail once it is answered: the key, the route, the path, the
/// status. A call that did not authenticate is recorded without a key.
async fn audit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    use axum::http::Method;
    let method = req.method().clone();
    if !matches!(
        method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        return next.run(req).await;
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let target = req.uri().path().to_owned();
    let caller = Caller::default();
    req.extensions_mut().insert(caller.clone());
    let resp = next.run(req).await;
    let auth = caller.get();
    let action = format!("{method} {route}");
    let entry = crate::store::audit::NewEntry {
        account_id: auth.map(|a| a.account_id),
        key_id: auth.map(|a| a.key_id),
        actor: crate::store::audit::Actor::Api,
        action: &action,
        target: Some(&target),
        result: i32::from(resp.status().as_u16()),
    };
    if let Err(e) = state.audit.append(&entry).await {
        tracing::warn!(error = %e, action, "audit entry not written");
    }
    resp
}

/// Counts and times every request by route template and status.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().clone();
    let started = Instant::now();
    let resp = next.run(req).await;
    state.metrics.observe(
        method.as_str(),
        &route,
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp.into_response()
}

/// Serves the API on `listener` until `shutdown`, then finishes in-flight
/// requests.
///
/// # Errors
/// When serving fails.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    info!(addr = %listener.local_addr()?, "api listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    info!("api stopped");
    Ok(())
}
