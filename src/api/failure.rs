//! `/api/v1/errors` and `/api/v1/dead-letters`: failures seen together.
//! Like failures share a fingerprint (workflow, version, step, class and
//! the message with ids and numbers normalised); a group says how often,
//! since when, and which executions to look at.

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiQuery, Auth, Id};
use super::view;
use crate::domain::ErrorClass;
use crate::store::failure::{self as store_failure, DeadLetterFilter, GroupAfter, GroupFilter};

/// Window of `/errors` when `since` is not given.
const DEFAULT_WINDOW_HOURS: i64 = 24;
/// Longest window of `/errors`.
const MAX_WINDOW_DAYS: i64 = 31;

/// Failure-group filters and paging.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ErrorQuery {
    /// Attempts at or after (RFC 3339); default 24 hours before `until`.
    pub since: Option<DateTime<Utc>>,
    /// Attempts before (RFC 3339); default now. At most 31 days after `since`.
    pub until: Option<DateTime<Utc>>,
    /// Only this workflow.
    pub workflow_id: Option<Uuid>,
    /// Only this class.
    pub error_class: Option<String>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
}

/// Like failures.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorGroup {
    /// What groups them (16 hex digits); filter executions by it.
    pub fingerprint: String,
    /// Their class.
    pub error_class: Option<String>,
    /// The workflow.
    pub workflow_id: Option<Uuid>,
    /// Its version.
    pub workflow_version: Option<i32>,
    /// The step.
    pub step_id: String,
    /// Its action type.
    pub action_type: String,
    /// Failed or retried attempts in the window.
    pub count: i64,
    /// First in the window.
    pub first_seen: DateTime<Utc>,
    /// Last in the window.
    pub last_seen: DateTime<Utc>,
    /// The last one's message.
    pub message: Option<String>,
    /// Sample executions (at most five, each once), the latest attempt's
    /// first.
    pub sample_execution_ids: Vec<Uuid>,
    /// Its attempts in each twelfth of the window, oldest first: how it
    /// went over time.
    pub histogram: Vec<i64>,
}

/// A page of failure groups, the most recently seen first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorGroupPage {
    /// This page.
    pub items: Vec<ErrorGroup>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
    /// The window counted: attempts at or after this...
    pub since: DateTime<Utc>,
    /// ...and before this.
    pub until: DateTime<Utc>,
}

fn class(field: &str, c: Option<&str>) -> Result<Option<ErrorClass>, ApiError> {
    c.map(|c| c.parse().map_err(|m| ApiError::invalid(field, m)))
        .transpose()
}

fn encode_group(last_seen: DateTime<Utc>, fingerprint: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "grp:{}:{fingerprint}",
        last_seen.timestamp_micros()
    ))
}

fn decode_group(cursor: Option<&str>) -> Result<Option<GroupAfter>, ApiError> {
    let Some(c) = cursor else { return Ok(None) };
    let bad = || ApiError::invalid("cursor", "not a cursor this API returned");
    let text =
        String::from_utf8(URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?).map_err(|_| bad())?;
    let rest = text.strip_prefix("grp:").ok_or_else(bad)?;
    let (micros, fingerprint) = rest.split_once(':').ok_or_else(bad)?;
    let last_seen = micros
        .parse()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad)?;
    view::time_filter("cursor", Some(last_seen))?;
    if fingerprint.len() != 16 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok(Some(GroupAfter {
        last_seen,
        fingerprint: fingerprint.to_owned(),
    }))
}

/// Failures grouped by fingerprint.
#[utoipa::path(operation_id = "list_error_groups", get, path = "/api/v1/errors", tag = "failures", params(ErrorQuery),
    responses((status = 200, body = ErrorGroupPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn errors(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ErrorQuery>,
) -> Result<Json<ErrorGroupPage>, ApiError> {
    let limit = view::limit(q.limit)?;
    view::time_filter("since", q.since)?;
    view::time_filter("until", q.until)?;
    let until = q.until.unwrap_or_else(Utc::now);
    let since = q
        .since
        .unwrap_or_else(|| until - Duration::hours(DEFAULT_WINDOW_HOURS));
    if since >= until {
        return Err(ApiError::invalid("until", "must be after since"));
    }
    if until - since > Duration::days(MAX_WINDOW_DAYS) {
        return Err(ApiError::invalid(
            "since",
            format!("the window may span at most {MAX_WINDOW_DAYS} days"),
        ));
    }
    let filter = GroupFilter {
        since,
        until,
        workflow_id: q.workflow_id,
        error_class: class("error_class", q.error_class.as_deref())?,
    };
    let after = decode_group(q.cursor.as_deref())?;
    let rows = state
        .reader
        .error_groups(auth.account_id, &filter, after.as_ref(), limit)
        .await?;
    let next_cursor =
        view::next_cursor(&rows, limit, |g| encode_group(g.last_seen, &g.fingerprint));
    let items = rows
        .into_iter()
        .map(|g| ErrorGroup {
            histogram: g.histogram(),
            fingerprint: g.fingerprint,
            error_class: g.error_class.map(|c| c.as_str().to_owned()),
            workflow_id: g.workflow_id,
            workflow_version: g.workflow_version,
            step_id: g.step_id,
            action_type: g.action_type,
            count: g.count,
            first_seen: g.first_seen,
            last_seen: g.last_seen,
            message: g.message,
            sample_execution_ids: g.samples,
        })
        .collect();
    Ok(Json(ErrorGroupPage {
        items,
        next_cursor,
        since,
        until,
    }))
}

/// Dead-letter filters and paging.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterQuery {
    /// Only this workflow.
    pub workflow_id: Option<Uuid>,
    /// Only this class.
    pub error_class: Option<String>,
    /// Only this fingerprint (16 hex digits).
    pub fingerprint: Option<String>,
    /// Only resolved (`true`: retried since) or unresolved (`false`) ones.
    pub resolved: Option<bool>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
}

/// An execution that failed for good, as it stood then.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetter {
    /// Id.
    pub id: Uuid,
    /// The execution.
    pub execution_id: Uuid,
    /// Its workflow.
    pub workflow_id: Uuid,
    /// The version it ran.
    pub workflow_version: i32,
    /// The step that failed.
    pub step_index: i32,
    /// Its id.
    pub step_id: Option<String>,
    /// Its action type (`definition` or `contact` when no step could run).
    pub action_type: Option<String>,
    /// Attempts spent.
    pub attempts: i32,
    /// What went wrong.
    pub error: String,
    /// Its class.
    pub error_class: Option<String>,
    /// What groups it with like failures.
    pub fingerprint: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When it was settled, if it was.
    pub resolved_at: Option<DateTime<Utc>>,
}

impl From<store_failure::DeadLetter> for DeadLetter {
    fn from(d: store_failure::DeadLetter) -> Self {
        DeadLetter {
            id: d.id,
            execution_id: d.execution_id,
            workflow_id: d.workflow_id,
            workflow_version: d.workflow_version,
            step_index: d.step_index,
            step_id: d.step_id,
            action_type: d.action_type,
            attempts: d.attempts,
            error: d.error,
            error_class: d.error_class.map(|c| c.as_str().to_owned()),
            fingerprint: d.fingerprint,
            created_at: d.created_at,
            resolved_at: d.resolved_at,
        }
    }
}

/// A page of dead letters.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterPage {
    /// This page, newest first.
    pub items: Vec<DeadLetter>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

/// Dead letters, newest first.
#[utoipa::path(operation_id = "list_dead_letters", get, path = "/api/v1/dead-letters", tag = "failures", params(DeadLetterQuery),
    responses((status = 200, body = DeadLetterPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn dead_letters(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<DeadLetterQuery>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    let limit = view::limit(q.limit)?;
    let after = view::decode_after(q.cursor.as_deref())?;
    if let Some(fp) = &q.fingerprint
        && (fp.len() != 16 || !fp.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ApiError::invalid("fingerprint", "must be 16 hex digits"));
    }
    let filter = DeadLetterFilter {
        workflow_id: q.workflow_id,
        error_class: class("error_class", q.error_class.as_deref())?,
        fingerprint: q.fingerprint,
        resolved: q.resolved,
    };
    let rows = state
        .reader
        .dead_letters(auth.account_id, &filter, after, limit)
        .await?;
    let next_cursor = view::next_cursor(&rows, limit, |d| view::encode_after(d.created_at, d.id));
    Ok(Json(DeadLetterPage {
        items: rows.into_iter().map(DeadLetter::from).collect(),
        next_cursor,
    }))
}

/// One dead letter.
#[utoipa::path(operation_id = "get_dead_letter", get, path = "/api/v1/dead-letters/{id}", tag = "failures", params(("id" = Uuid, Path)),
    responses((status = 200, body = DeadLetter), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn dead_letter(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> Result<Json<DeadLetter>, ApiError> {
    let d = state
        .reader
        .dead_letter(auth.account_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("dead letter"))?;
    Ok(Json(d.into()))
}
