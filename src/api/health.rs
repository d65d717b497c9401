//! `/healthz` (the process answers), `/readyz` (PostgreSQL and Redis
//! answer), `/metrics` (Prometheus text).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, Auth};
use super::view::Health;
use crate::queue::BreakerState;
use crate::telemetry::FilterError;

/// A log filter in `tracing` EnvFilter syntax.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogFilterBody {
    /// e.g. `info,flowpilot=debug`.
    pub filter: String,
}

/// Change the process's log filter at runtime (admin keys only).
#[utoipa::path(operation_id = "set_log_filter", put, path = "/api/v1/admin/log-filter", tag = "admin",
    request_body = LogFilterBody,
    responses((status = 200, body = LogFilterBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_log_filter(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<LogFilterBody>,
) -> Result<Json<LogFilterBody>, ApiError> {
    if !auth.admin {
        return Err(ApiError::forbidden(
            "changing the log filter needs an admin key",
        ));
    }
    let handle = state
        .log_filter
        .as_ref()
        .ok_or_else(|| ApiError::conflict("this process has no reloadable log filter"))?;
    match handle.set(&body.filter) {
        Ok(()) => {
            tracing::info!(filter = %body.filter, "log filter changed");
            Ok(Json(body))
        }
        Err(FilterError::Invalid(m)) => Err(ApiError::invalid("filter", m).unprocessable()),
        Err(FilterError::Gone) => Err(ApiError::conflict("the log subscriber is gone")),
    }
}

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
    let (db, redis) = reachable(&state).await;
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

/// Whether PostgreSQL and Redis answer, asked at once.
async fn reachable(state: &AppState) -> (bool, bool) {
    let (db, redis) = tokio::join!(state.reader.ping(), state.queue.ping());
    (db.is_ok(), redis.is_ok())
}

/// Counts of the whole record for an API process's `/metrics`: open
/// executions by status, operations and alerts open. At most once per
/// [`COUNT_EVERY`] in a process, however often it is scraped; worker
/// processes leave them to the API (each would count the same rows).
pub async fn count_open(state: &AppState) {
    let gauges = &state.health_metrics;
    if !gauges.count_due(COUNT_EVERY) {
        return;
    }
    match state.reader.open_executions().await {
        Ok(counts) => {
            for (status, n) in counts {
                gauges.executions(status.as_str(), n.value);
            }
        }
        Err(e) => tracing::warn!(error = %e, "execution gauges not refreshed"),
    }
    match state.reader.open_work().await {
        Ok((operations, alerts)) => gauges.open_work(operations, alerts),
        Err(e) => tracing::warn!(error = %e, "operation and alert gauges not refreshed"),
    }
}

/// Least time between two counts of [`count_open`] in one process.
pub const COUNT_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// Prometheus metrics.
///
/// The dependency, breaker and partition gauges are read first; a check
/// that fails leaves the others as they were, and the scrape answers.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let gauges = &state.health_metrics;
    let (db, redis) = reachable(&state).await;
    gauges.up("postgres", db);
    gauges.up("redis", redis);
    if redis {
        let prefix = state.engine.queue_prefix();
        match state.queue.breakers_not_closed(prefix).await {
            Ok(found) => {
                let open = found.iter().filter(|(_, s)| *s == BreakerState::Open);
                let open = open.count();
                gauges.breakers(open, found.len() - open);
            }
            Err(e) => tracing::warn!(error = %e, "breaker gauges not refreshed"),
        }
    }
    if db {
        match state.reader.partitions_ahead().await {
            Ok(months) => gauges.partitions_ahead(months as usize),
            Err(e) => tracing::warn!(error = %e, "partition gauge not refreshed"),
        }
    }
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&state.registry.gather())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text)
}
