//! `/api/v1/executions`: read, list, logs, cancel, retry.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, DurationRound, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiQuery, Auth, Id};
use super::view::{self, Execution, ExecutionPage, Log, LogPage};
use crate::domain::{ErrorClass, LogStatus, Status};
use crate::engine;
use crate::store;
use tracing::warn;

/// Execution filters and paging.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExecutionQuery {
    /// Only this workflow.
    pub workflow_id: Option<Uuid>,
    /// Only this contact.
    pub contact_id: Option<Uuid>,
    /// Only these statuses, comma-separated (QUEUED, RUNNING, WAITING,
    /// RETRYING, COMPLETED, FAILED, CANCELLED), e.g. `FAILED,RETRYING`.
    pub status: Option<String>,
    /// Only with this class of last error (`transient`, `timeout`,
    /// `rate_limited`, `provider_unavailable`, `permanent`,
    /// `invalid_config`, `contact_data`, `cancelled`, `internal`).
    pub error_class: Option<String>,
    /// Only with this fingerprint of last error (16 hex digits).
    pub fingerprint: Option<String>,
    /// Only waiting for this reason (`wait`, `arq_job`, `retry_backoff`,
    /// `provider_unavailable`, `enrollment`, `cancelled`).
    pub waiting_reason: Option<String>,
    /// Only at this step (its id).
    pub current_step: Option<String>,
    /// Created at or after (RFC 3339).
    pub created_after: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    pub created_before: Option<DateTime<Utc>>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
}

/// Log filters and paging.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Only this status (SUCCEEDED, FAILED, RETRYING).
    pub status: Option<String>,
    /// Only this action type.
    pub action_type: Option<String>,
    /// Steps from this index.
    pub step_from: Option<i32>,
    /// Steps up to this index.
    pub step_to: Option<i32>,
    /// Started at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Started before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
}

const LOG_STATUSES: [LogStatus; 3] = [LogStatus::Succeeded, LogStatus::Failed, LogStatus::Retrying];

/// An execution filter as a request gives it, before it is checked.
#[derive(Debug, Default)]
pub(super) struct Filter<'a> {
    pub workflow_id: Option<Uuid>,
    pub workflow_version: Option<i32>,
    pub contact_id: Option<Uuid>,
    pub statuses: &'a [&'a str],
    pub error_class: Option<&'a str>,
    pub fingerprint: Option<String>,
    pub waiting_reason: Option<String>,
    pub current_step: Option<String>,
    pub created: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    pub finished: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
}

impl Filter<'_> {
    /// The store's filter, every field checked; errors name the field
    /// under `prefix` (`filter.` in a body, nothing in a query).
    pub(super) fn parse(self, prefix: &str) -> Result<store::execution::Filter, ApiError> {
        let name = |f: &str| format!("{prefix}{f}");
        for (field, t) in [
            ("created_after", self.created.0),
            ("created_before", self.created.1),
            ("failed_after", self.finished.0),
            ("failed_before", self.finished.1),
        ] {
            view::time_filter(&name(field), t)?;
        }
        let statuses = self
            .statuses
            .iter()
            .map(|s| {
                s.parse::<Status>()
                    .map_err(|m| ApiError::invalid(name("status"), m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let error_class = self
            .error_class
            .map(|c| {
                c.parse::<ErrorClass>()
                    .map_err(|m| ApiError::invalid(name("error_class"), m))
            })
            .transpose()?;
        for (field, value, max) in [
            ("fingerprint", &self.fingerprint, 16),
            ("waiting_reason", &self.waiting_reason, 64),
            ("current_step", &self.current_step, 64),
        ] {
            if let Some(v) = value
                && (v.is_empty() || v.chars().count() > max || v.contains('\0'))
            {
                return Err(ApiError::invalid(
                    name(field),
                    format!("must be 1 to {max} characters, without NUL"),
                ));
            }
        }
        Ok(store::execution::Filter {
            workflow_id: self.workflow_id,
            workflow_version: self.workflow_version,
            contact_id: self.contact_id,
            statuses,
            error_class,
            fingerprint: self.fingerprint,
            waiting_reason: self.waiting_reason,
            current_step: self.current_step,
            created_after: self.created.0,
            created_before: self.created.1,
            finished_after: self.finished.0,
            finished_before: self.finished.1,
        })
    }
}

/// The view of `e` with its current step's type from the pinned version.
/// A version this engine cannot read is reported in the view (and logged),
/// never hidden; a database error is an error.
pub(super) async fn view_of(
    state: &AppState,
    e: store::execution::Execution,
) -> Result<Execution, ApiError> {
    match state
        .engine
        .definition(e.workflow_id, e.workflow_version)
        .await
    {
        Ok(def) => Ok(Execution::new(e, Some(&def))),
        Err(err @ (engine::Error::Invalid { .. } | engine::Error::VersionNotFound)) => {
            warn!(execution_id = %e.id, workflow_id = %e.workflow_id, version = e.workflow_version,
                  error = %err, "pinned workflow version cannot be read");
            let mut view = Execution::new(e, None);
            view.definition_error = Some(err.to_string());
            Ok(view)
        }
        Err(err) => Err(err.into()),
    }
}

async fn find(
    state: &AppState,
    auth: Auth,
    id: Uuid,
) -> Result<store::execution::Execution, ApiError> {
    state
        .reader
        .execution(auth.account_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("execution"))
}

/// An execution: status, current step, why it waits and until when, and
/// (not yet ended) when it should complete.
#[utoipa::path(operation_id = "get_execution", get, path = "/api/v1/executions/{id}", tag = "executions", params(("id" = Uuid, Path)),
    responses((status = 200, body = Execution), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> Result<Json<Execution>, ApiError> {
    let e = find(&state, auth, id).await?;
    let eta = match state.engine.eta(&e).await {
        Ok(eta) => eta.map(Into::into),
        // The view without an estimate, rather than no view.
        Err(err) => {
            warn!(execution_id = %e.id, error = %err, "no estimate for the execution");
            None
        }
    };
    let mut view = view_of(&state, e).await?;
    view.eta = eta;
    Ok(Json(view))
}

/// List executions, newest first, with a count capped at 10 000.
#[utoipa::path(operation_id = "list_executions", get, path = "/api/v1/executions", tag = "executions", params(ExecutionQuery),
    responses((status = 200, body = ExecutionPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ExecutionQuery>,
) -> Result<Json<ExecutionPage>, ApiError> {
    let limit = view::limit(q.limit)?;
    let after = view::decode_after(q.cursor.as_deref())?;
    let statuses = q
        .status
        .as_deref()
        .map(|list| list.split(',').map(str::trim).collect::<Vec<_>>())
        .unwrap_or_default();
    let filter = Filter {
        workflow_id: q.workflow_id,
        contact_id: q.contact_id,
        statuses: &statuses,
        error_class: q.error_class.as_deref(),
        fingerprint: q.fingerprint,
        waiting_reason: q.waiting_reason,
        current_step: q.current_step,
        created: (q.created_after, q.created_before),
        ..Filter::default()
    }
    .parse("")?;
    let (rows, count) = state
        .reader
        .executions(auth.account_id, &filter, after, limit)
        .await?;
    let next_cursor = view::next_cursor(&rows, limit, |e| view::encode_after(e.created_at, e.id));
    let mut items = Vec::with_capacity(rows.len());
    for e in rows {
        items.push(view_of(&state, e).await?);
    }
    Ok(Json(ExecutionPage {
        items,
        next_cursor,
        count: count.into(),
    }))
}

/// An execution's step log, in order.
#[utoipa::path(operation_id = "list_execution_logs", get, path = "/api/v1/executions/{id}/logs", tag = "executions", params(("id" = Uuid, Path), LogQuery),
    responses((status = 200, body = LogPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn logs(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> Result<Json<LogPage>, ApiError> {
    let limit = view::limit(q.limit)?;
    let after = view::decode_log_cursor(q.cursor.as_deref())?;
    view::time_filter("since", q.since)?;
    view::time_filter("until", q.until)?;
    if let Some(s) = &q.status
        && !LOG_STATUSES.iter().any(|l| l.as_str() == s)
    {
        let all: Vec<&str> = LOG_STATUSES.iter().map(|l| l.as_str()).collect();
        return Err(ApiError::invalid(
            "status",
            format!("must be one of {}", all.join(", ")),
        ));
    }
    if let Some(a) = &q.action_type
        && !crate::action::Action::KINDS.contains(&a.as_str())
    {
        return Err(ApiError::invalid(
            "action_type",
            format!("unknown action type `{a}`"),
        ));
    }
    if let (Some(from), Some(to)) = (q.step_from, q.step_to)
        && from > to
    {
        return Err(ApiError::invalid("step_to", "must not be below step_from"));
    }
    find(&state, auth, id).await?;
    let filter = store::log::LogFilter {
        status: q.status,
        action_type: q.action_type,
        step_from: q.step_from,
        step_to: q.step_to,
        since: q.since,
        until: q.until,
    };
    let rows = state
        .reader
        .logs(auth.account_id, id, &filter, after, limit)
        .await?;
    let next_cursor = view::next_cursor(&rows, limit, |l| view::encode_log_cursor(l.id));
    Ok(Json(LogPage {
        items: rows.into_iter().map(Log::from).collect(),
        next_cursor,
    }))
}

/// Cancel an execution that has not finished.
#[utoipa::path(operation_id = "cancel_execution", post, path = "/api/v1/executions/{id}/cancel", tag = "executions", params(("id" = Uuid, Path)),
    responses((status = 200, body = Execution), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> Result<Json<Execution>, ApiError> {
    let e = state.engine.cancel(auth.account_id, id).await?;
    Ok(Json(view_of(&state, e).await?))
}

/// Retry a FAILED execution from the step that failed.
#[utoipa::path(operation_id = "retry_execution", post, path = "/api/v1/executions/{id}/retry", tag = "executions", params(("id" = Uuid, Path)),
    responses((status = 200, body = Execution), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn retry(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> Result<Json<Execution>, ApiError> {
    let e = state.engine.retry(auth.account_id, id).await?;
    Ok(Json(view_of(&state, e).await?))
}

/// Summary window: hours back.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    /// Hours of throughput, 1-168 (default 24).
    pub hours: Option<i64>,
}

/// Executions ended in one hour.
#[derive(Debug, Serialize, ToSchema)]
pub struct Hour {
    /// The hour's start.
    pub hour: DateTime<Utc>,
    /// Executions that ended (completed, failed or cancelled) in it.
    pub ended: i64,
    /// Of them, failed.
    pub failed: i64,
}

/// Executions in one status.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusCount {
    /// The status.
    pub status: String,
    /// How many (capped as a list's count).
    pub count: view::Count,
}

/// How the account's executions stand now, and how many ended per hour.
#[derive(Debug, Serialize, ToSchema)]
pub struct Summary {
    /// Every status, in lifecycle order.
    pub by_status: Vec<StatusCount>,
    /// Hours with executions ended, oldest first (hours with none left out).
    pub hours: Vec<Hour>,
}

/// Executions by status now, and the hourly throughput and failures of the
/// last `hours`.
#[utoipa::path(operation_id = "execution_summary", get, path = "/api/v1/executions/summary", tag = "executions",
    params(SummaryQuery),
    responses((status = 200, body = Summary), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn summary(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<SummaryQuery>,
) -> Result<Json<Summary>, ApiError> {
    let hours = q.hours.unwrap_or(24);
    if !(1..=168).contains(&hours) {
        return Err(ApiError::invalid("hours", "must be 1 to 168"));
    }
    // The start of the hour `hours - 1` before this one.
    let since = Utc::now() - chrono::Duration::hours(hours - 1);
    let since = since
        .duration_trunc(chrono::Duration::hours(1))
        .unwrap_or(since);
    let (by_status, ends) = state
        .reader
        .execution_summary(auth.account_id, since)
        .await?;
    Ok(Json(Summary {
        by_status: by_status
            .into_iter()
            .map(|(s, c)| StatusCount {
                status: s.as_str().to_owned(),
                count: c.into(),
            })
            .collect(),
        hours: ends
            .into_iter()
            .map(|(hour, ended, failed)| Hour {
                hour,
                ended,
                failed,
            })
            .collect(),
    }))
}
