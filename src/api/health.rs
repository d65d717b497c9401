//! `/healthz` (the process answers), `/readyz` (PostgreSQL and Redis
//! answer), `/metrics` (Prometheus text).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;
use super::view::Health;

/// Alive.
#[utoipa::path(operation_id = "healthz", get, path = "/healthz", tag = "health", security(()), responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        checks: json!({}),
    })
}

/// Ready: PostgreSQL and Redis reachable.
#[utoipa::path(operation_id = "readyz", get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let db = sqlx::query("SELECT 1")
        .execute(state.engine.pool())
        .await
        .is_ok();
    let redis = state.queue.ping().await.is_ok();
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let status = if db && redis {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Health {
            status: word(db && redis).into(),
            checks: json!({"postgres": word(db), "redis": word(redis)}),
        }),
    )
}

/// Prometheus metrics.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&state.registry.gather())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text)
}
