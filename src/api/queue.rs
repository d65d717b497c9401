//! `/api/v1/queues` (admin keys only): how each queue stands, read from
//! Redis on every call, and the same figures as gauges on `/metrics`.

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::Auth;
use crate::queue::{self, Health, keys};

/// One queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    /// The Redis key of the queue (`flowpilot:queue:high`, `arq:queue`, ...).
    pub name: String,
    /// Who runs its jobs: `flowpilot` workers, or `python` arq workers
    /// (`arq:queue`, where `arq` steps send their jobs).
    pub served_by: &'static str,
    /// Due now and not held by a worker.
    pub ready: u64,
    /// Due and held by a worker (among the 1,000 oldest due jobs).
    pub in_progress: u64,
    /// Scheduled for later (timers beyond the pump's horizon stay in
    /// PostgreSQL and are not counted here).
    pub deferred: u64,
    /// Seconds the oldest ready job has waited; `null` when none is ready.
    pub oldest_ready_age_s: Option<f64>,
    /// Jobs per second flowpilot enqueued over the last full minute (jobs
    /// Python producers enqueue are not counted).
    pub enqueue_rate: f64,
    /// Jobs per second flowpilot's workers claimed over the last full
    /// minute; `null` for a queue Python workers serve.
    pub dequeue_rate: Option<f64>,
}

/// Every queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueList {
    /// flowpilot's queues, highest priority first, then arq's default queue.
    pub items: Vec<QueueView>,
}

/// How each queue stands (admin keys only).
#[utoipa::path(operation_id = "list_queues", get, path = "/api/v1/queues", tag = "queues",
    responses((status = 200, body = QueueList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>, auth: Auth) -> Result<Json<QueueList>, ApiError> {
    if !auth.admin {
        return Err(ApiError::forbidden(
            "queues are shared by every account: reading them needs an admin key",
        ));
    }
    let now = queue::now_ms();
    let mut items = Vec::new();
    for (name, health) in read(&state, now)
        .await
        .map_err(|e| ApiError::unavailable(&e))?
    {
        let python = name == keys::DEFAULT_QUEUE;
        items.push(QueueView {
            served_by: if python { "python" } else { "flowpilot" },
            ready: health.ready,
            in_progress: health.in_progress,
            deferred: health.deferred,
            oldest_ready_age_s: health.oldest_ready_age(now).map(|d| d.as_secs_f64()),
            enqueue_rate: per_s(health.enqueued_last_minute),
            dequeue_rate: (!python).then_some(per_s(health.dequeued_last_minute)),
            name,
        });
    }
    Ok(Json(QueueList { items }))
}

/// `/metrics` of an API process: the queue gauges are read first. When
/// Redis does not answer they keep their last values (and the log says so)
/// rather than failing the scrape of every other metric.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let now = queue::now_ms();
    match read(&state, now).await {
        Ok(queues) => {
            let gauges = &state.queue_metrics;
            for (name, h) in &queues {
                gauges.jobs(name, "ready", h.ready);
                gauges.jobs(name, "in_progress", h.in_progress);
                gauges.jobs(name, "deferred", h.deferred);
                gauges.oldest_ready(name, h.oldest_ready_age(now).unwrap_or_default());
                gauges.rate(name, "enqueued", per_s(h.enqueued_last_minute));
                gauges.rate(name, "dequeued", per_s(h.dequeued_last_minute));
            }
        }
        Err(e) => tracing::warn!(error = %e, "queue gauges not refreshed"),
    }
    super::health::count_open(&state).await;
    super::health::metrics(State(state)).await
}

/// flowpilot's queues and arq's default queue, each with its health.
async fn read(state: &AppState, now: i64) -> queue::Result<Vec<(String, Health)>> {
    let mut names = keys::priority_queues(state.engine.queue_prefix());
    names.push(keys::DEFAULT_QUEUE.to_owned());
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let health = state.queue.health(&name, now).await?;
        out.push((name, health));
    }
    Ok(out)
}

/// Jobs per second of a minute's count.
fn per_s(last_minute: u64) -> f64 {
    last_minute as f64 / 60.0
}
