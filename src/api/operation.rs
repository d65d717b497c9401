//! Bulk operations: `POST /api/v1/executions/bulk-retry` and
//! `.../bulk-cancel` (a filter, or a dry run), `POST
//! /api/v1/workflows/{id}/enroll`, and `/api/v1/operations` to follow and
//! cancel them.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json_};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::execution::{Filter, view_of};
use super::extract::{ApiJson, ApiQuery, Auth, Id};
use super::view::{self, Execution};
use crate::engine::Priority;
use crate::engine::operation::{Bulk, Contacts, EnrollRequest};
use crate::store::bulk::{ContactFilter, Reenroll};
use crate::store::operation::Operation as Row;

/// Largest enrollment body: 100 000 ids with room to spare.
const ENROLL_BODY: usize = 8 * 1024 * 1024;
/// Largest metadata object of an enrollment, serialized bytes.
const MAX_METADATA: usize = 64 * 1024;
/// Most tags an enrollment filter names.
const MAX_TAGS: usize = 50;

/// Which executions a bulk operation takes; at least one field.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkFilter {
    /// Only this workflow.
    pub workflow_id: Option<Uuid>,
    /// Only this version of it.
    pub version: Option<i32>,
    /// Only these statuses (a retry takes FAILED ones; a cancel QUEUED,
    /// RUNNING, WAITING, RETRYING ones; default: all it applies to).
    pub status: Option<Vec<String>>,
    /// Only with this class of last error.
    pub error_class: Option<String>,
    /// Only with this fingerprint of last error.
    pub fingerprint: Option<String>,
    /// Only at this step (its id).
    pub step: Option<String>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
    /// Failed (finished) at or after.
    pub failed_after: Option<DateTime<Utc>>,
    /// Failed (finished) before.
    pub failed_before: Option<DateTime<Utc>>,
}

/// A bulk retry or cancel.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"filter": {"workflow_id": "0b5c1d8e-3f7a-4a53-9d0e-6f1b2c3d4e5f",
    "error_class": "provider_unavailable", "failed_after": "2026-11-27T00:00:00Z"}, "dry_run": true}))]
pub struct BulkRequest {
    /// Which executions.
    pub filter: BulkFilter,
    /// Answer the count and a sample, change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a dry run found.
#[derive(Debug, Serialize, ToSchema)]
pub struct Preview {
    /// Always true.
    pub dry_run: bool,
    /// Executions the operation would take now.
    pub count: usize,
    /// The newest of them, at most 10.
    pub sample: Vec<Execution>,
}

/// A target an operation could not work on.
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetError {
    /// The execution or contact.
    pub target: Option<Uuid>,
    /// Why.
    pub error: String,
}

/// A bulk operation and its progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct Operation {
    /// Id.
    pub id: Uuid,
    /// `retry`, `cancel` or `enroll`.
    pub kind: String,
    /// `pending`, `running`, `completed`, `cancelled` or `failed`.
    pub state: String,
    /// Targets in all (an enrollment by filter: contacts matching when it
    /// was created).
    pub total: i32,
    /// Targets changed: executions retried or cancelled, contacts enrolled.
    pub done: i32,
    /// Targets left alone: executions no longer in a status it applies to,
    /// contacts missing, opted out or already enrolled (per the policy).
    pub skipped: i32,
    /// Targets that could not be worked on.
    pub failed: i32,
    /// The first errors, at most 100.
    pub errors: Vec<TargetError>,
    /// Why the operation failed, when it did.
    pub error: Option<String>,
    /// Workflow enrolled into.
    pub workflow_id: Option<Uuid>,
    /// Its version, pinned when the operation was created.
    pub workflow_version: Option<i32>,
    /// The request, as recorded.
    #[schema(value_type = Object)]
    pub request: Json_,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// First batch taken.
    pub started_at: Option<DateTime<Utc>>,
    /// Ended.
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<Row> for Operation {
    fn from(r: Row) -> Self {
        let errors = r
            .errors
            .0
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| TargetError {
                        target: e["target"].as_str().and_then(|t| t.parse().ok()),
                        error: e["error"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Operation {
            id: r.id,
            kind: r.kind,
            state: r.state,
            total: r.total,
            done: r.done,
            skipped: r.skipped,
            failed: r.failed,
            errors,
            error: r.error,
            workflow_id: r.workflow_id,
            workflow_version: r.workflow_version,
            request: r.request.0,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
        }
    }
}

/// A page of operations.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationPage {
    /// Newest first.
    pub items: Vec<Operation>,
    /// Cursor of the next page.
    pub next_cursor: Option<String>,
}

/// Paging of operations.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OperationQuery {
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
}

/// What a bulk request did.
pub enum BulkOutcome {
    /// A dry run: what it would take.
    Preview(Preview),
    /// The operation it started.
    Started(Operation),
}

impl IntoResponse for BulkOutcome {
    fn into_response(self) -> Response {
        match self {
            BulkOutcome::Preview(p) => Json(p).into_response(),
            BulkOutcome::Started(op) => (StatusCode::ACCEPTED, Json(op)).into_response(),
        }
    }
}

/// Previews or starts the bulk `kind` (the handlers' and the console's
/// one path).
///
/// # Errors
/// A filter field at fault (422), database errors.
pub async fn bulk(
    state: AppState,
    auth: Auth,
    kind: Bulk,
    req: BulkRequest,
) -> Result<BulkOutcome, ApiError> {
    let f = &req.filter;
    if f.version.is_some() && f.workflow_id.is_none() {
        return Err(
            ApiError::invalid("filter.version", "needs filter.workflow_id").unprocessable(),
        );
    }
    let statuses: Vec<&str> = f.status.iter().flatten().map(String::as_str).collect();
    let filter = Filter {
        workflow_id: f.workflow_id,
        workflow_version: f.version,
        statuses: &statuses,
        error_class: f.error_class.as_deref(),
        fingerprint: f.fingerprint.clone(),
        current_step: f.step.clone(),
        created: (f.created_after, f.created_before),
        finished: (f.failed_after, f.failed_before),
        ..Filter::default()
    }
    .parse("filter.")
    .map_err(ApiError::unprocessable)?;
    if req.dry_run {
        let p = state
            .engine
            .bulk_preview(auth.account_id, kind, filter)
            .await?;
        let mut sample = Vec::with_capacity(p.sample.len());
        for e in p.sample {
            sample.push(view_of(&state, e).await?);
        }
        return Ok(BulkOutcome::Preview(Preview {
            dry_run: true,
            count: p.count,
            sample,
        }));
    }
    let op = state
        .engine
        .bulk_start(auth.account_id, kind, filter, Some(auth.key_id))
        .await?;
    Ok(BulkOutcome::Started(Operation::from(op)))
}

/// Retry the FAILED executions a filter names, each from the step that
/// failed with a new attempt (and so new idempotency keys): 202 with the
/// operation, or with `dry_run` 200 with the count and a sample.
#[utoipa::path(operation_id = "bulk_retry_executions", post, path = "/api/v1/executions/bulk-retry", tag = "operations",
    request_body = BulkRequest,
    responses((status = 202, body = Operation), (status = 200, body = Preview), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn bulk_retry(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<BulkRequest>,
) -> Result<Response, ApiError> {
    Ok(bulk(state, auth, Bulk::Retry, req).await?.into_response())
}

/// Cancel the unfinished executions a filter names: 202 with the
/// operation, or with `dry_run` 200 with the count and a sample.
#[utoipa::path(operation_id = "bulk_cancel_executions", post, path = "/api/v1/executions/bulk-cancel", tag = "operations",
    request_body = BulkRequest,
    responses((status = 202, body = Operation), (status = 200, body = Preview), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn bulk_cancel(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<BulkRequest>,
) -> Result<Response, ApiError> {
    Ok(bulk(state, auth, Bulk::Cancel, req).await?.into_response())
}

/// Contacts an enrollment by filter takes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollFilter {
    /// Tags the contact must all carry.
    #[serde(default)]
    pub tags: Vec<String>,
    /// An object the contact's attributes must contain
    /// (`{"plan": "pro"}`).
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Map<String, Json_>>,
}

/// An enrollment: `contact_ids` or `contact_filter`, not both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"contact_filter": {"tags": ["trial"]}, "policy": "after_finished"}))]
pub struct Enroll {
    /// Up to 100 000 contact ids (duplicates count once).
    pub contact_ids: Option<Vec<Uuid>>,
    /// The account's contacts matching this (those created by now).
    pub contact_filter: Option<EnrollFilter>,
    /// A contact already in the workflow enters again: `never` (default),
    /// `after_finished` (once its executions there have all finished), or
    /// `always`.
    pub policy: Option<String>,
    /// Queue priority of the executions: `high`, `normal` (default), `low`.
    pub priority: Option<String>,
    /// Metadata of each execution (an object).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Json_>>,
}

/// Enroll many contacts into an active workflow, as one durable
/// operation: executions are inserted in batches (at most one per contact
/// and operation) and start under the account's pacing
/// (`FLOWPILOT_ENROLL_RATE` per second), waiting with reason
/// `enrollment` until their start time. 202 with the operation.
#[utoipa::path(operation_id = "enroll_contacts", post, path = "/api/v1/workflows/{id}/enroll", tag = "operations",
    params(("id" = Uuid, Path)), request_body = Enroll,
    responses((status = 202, body = Operation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn enroll(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
    ApiJson(req): ApiJson<Enroll, ENROLL_BODY>,
) -> Result<(StatusCode, Json<Operation>), ApiError> {
    let bad = |field: &str, m: String| ApiError::invalid(field, m).unprocessable();
    let contacts = match (req.contact_ids, req.contact_filter) {
        // How many (1 to 100,000, duplicates counted once) is the engine's
        // to check.
        (Some(ids), None) => Contacts::Ids(ids),
        (None, Some(f)) => {
            if f.tags.len() > MAX_TAGS || f.tags.iter().any(|t| t.is_empty() || t.len() > 100) {
                return Err(bad(
                    "contact_filter.tags",
                    format!("at most {MAX_TAGS} tags of 1 to 100 bytes"),
                ));
            }
            if f.tags.is_empty() && f.attributes.as_ref().is_none_or(Map::is_empty) {
                return Err(bad(
                    "contact_filter",
                    "name tags or attributes (an empty filter would take every contact)".into(),
                ));
            }
            Contacts::Filter(ContactFilter {
                tags: f.tags,
                attributes: f.attributes.map(Json_::Object),
            })
        }
        _ => {
            return Err(bad(
                "contact_ids",
                "give either contact_ids or contact_filter".into(),
            ));
        }
    };
    let policy: Reenroll = req
        .policy
        .as_deref()
        .map_or(Ok(Reenroll::Never), str::parse)
        .map_err(|m| bad("policy", m))?;
    let priority: Priority = req
        .priority
        .as_deref()
        .map_or(Ok(Priority::Normal), str::parse)
        .map_err(|m| bad("priority", m))?;
    let metadata = Json_::Object(req.metadata.unwrap_or_default());
    if metadata.to_string().len() > MAX_METADATA {
        return Err(bad(
            "metadata",
            format!("must be at most {MAX_METADATA} bytes"),
        ));
    }
    let op = state
        .engine
        .enroll(EnrollRequest {
            account_id: auth.account_id,
            workflow_id: id,
            contacts,
            policy,
            priority,
            metadata,
            created_by: Some(auth.key_id),
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(op.into())))
}

/// A bulk operation: state and progress.
#[utoipa::path(operation_id = "get_operation", get, path = "/api/v1/operations/{id}", tag = "operations", params(("id" = Uuid, Path)),
    responses((status = 200, body = Operation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> Result<Json<Operation>, ApiError> {
    let op = state
        .reader
        .operation(auth.account_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("operation"))?;
    Ok(Json(op.into()))
}

/// The account's bulk operations, newest first.
#[utoipa::path(operation_id = "list_operations", get, path = "/api/v1/operations", tag = "operations", params(OperationQuery),
    responses((status = 200, body = OperationPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<OperationQuery>,
) -> Result<Json<OperationPage>, ApiError> {
    let limit = view::limit(q.limit)?;
    let after = view::decode_after(q.cursor.as_deref())?;
    let rows = state
        .reader
        .operations(auth.account_id, after, limit)
        .await?;
    let next_cursor = view::next_cursor(&rows, limit, |o| view::encode_after(o.created_at, o.id));
    Ok(Json(OperationPage {
        items: rows.into_iter().map(Operation::from).collect(),
        next_cursor,
    }))
}

/// Cancel a bulk operation: it stops before its next batch; what earlier
/// batches did stays done.
#[utoipa::path(operation_id = "cancel_operation", post, path = "/api/v1/operations/{id}/cancel", tag = "operations", params(("id" = Uuid, Path)),
    responses((status = 200, body = Operation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> Result<Json<Operation>, ApiError> {
    let op = state.engine.cancel_operation(auth.account_id, id).await?;
    Ok(Json(op.into()))
}
