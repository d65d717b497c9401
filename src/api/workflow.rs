//! `/api/v1/workflows`: create, version, read, list, (de)activate, execute.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json_;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiQuery, Auth, Id};
use super::view::{self, Execution, Workflow, WorkflowPage, WorkflowSummary};
use crate::domain::Priority;
use crate::engine::StartRequest;
use crate::store;

/// A new workflow.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "welcome", "description": "greets new contacts", "definition": {"steps": [
    {"id": "hello", "type": "send_email", "subject": "Hi {{contact.attributes.first_name | default: \"there\"}}", "body": "Welcome!"},
    {"id": "pause", "type": "wait", "duration": "2d"},
    {"id": "welcomed", "type": "add_tag", "tag": "welcomed"}
]}}))]
pub struct CreateWorkflow {
    /// Name, 1-200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Description, at most 2000 characters.
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    /// The definition: `{"steps": [...]}`.
    #[schema(value_type = Object)]
    pub definition: Json_,
    /// Whether executions may start at once (default true).
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

/// A new version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"definition": {"steps": [
    {"id": "hello", "type": "send_sms", "body": "Hi {{contact.attributes.first_name | default: \"there\"}}"},
    {"id": "done", "type": "goal", "name": "greeted"}
]}}))]
pub struct NewVersion {
    /// The definition: `{"steps": [...]}`.
    #[schema(value_type = Object)]
    pub definition: Json_,
}

/// Which version to read.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    /// Version number; default the latest.
    pub version: Option<i32>,
}

/// Paging.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// List archived workflows too (default false).
    pub include_archived: Option<bool>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
}

/// Start an execution.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"contact_id": "3f2a6c1e-8d47-4b0a-9a55-0c1f2e3d4b5a", "priority": "high",
    "idempotency_key": "signup-42", "metadata": {"campaign": "spring"}}))]
pub struct Execute {
    /// The contact entering the workflow.
    pub contact_id: Uuid,
    /// `high`, `normal` (default) or `low`.
    #[serde(default)]
    pub priority: Option<String>,
    /// A repeated request with the same key returns the first execution;
    /// 1-255 characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255)]
    pub idempotency_key: Option<String>,
    /// Free-form object (at most 64 KiB as JSON), readable by templates as
    /// `execution.metadata`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Json_>,
}

async fn with_definition(
    state: &AppState,
    w: store::workflow::Workflow,
    version: i32,
) -> Result<Workflow, ApiError> {
    let doc = state
        .reader
        .definition(w.id, version)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow version").field("version"))?;
    Ok(Workflow::new(w, version, doc))
}

/// Create a workflow with its first version.
#[utoipa::path(operation_id = "create_workflow", post, path = "/api/v1/workflows", tag = "workflows", request_body = CreateWorkflow,
    responses((status = 201, body = Workflow), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<CreateWorkflow>,
) -> Result<(StatusCode, Json<Workflow>), ApiError> {
    let w = state
        .engine
        .create_workflow(
            auth.account_id,
            &req.name,
            req.description.as_deref(),
            req.active,
            &req.definition,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Workflow::new(w, 1, req.definition)),
    ))
}

/// List workflows, newest first.
#[utoipa::path(operation_id = "list_workflows", get, path = "/api/v1/workflows", tag = "workflows", params(PageQuery),
    responses((status = 200, body = WorkflowPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<WorkflowPage>, ApiError> {
    let limit = view::limit(q.limit)?;
    let after = view::decode_after(q.cursor.as_deref())?;
    let rows = state
        .reader
        .workflows(
            auth.account_id,
            q.include_archived.unwrap_or(false),
            after,
            limit,
        )
        .await?;
    let next_cursor = view::next_cursor(&rows, limit, |w| view::encode_after(w.created_at, w.id));
    Ok(Json(WorkflowPage {
        items: rows.into_iter().map(WorkflowSummary::from).collect(),
        next_cursor,
    }))
}

/// A workflow with the definition of its latest (or the given) version.
#[utoipa::path(operation_id = "get_workflow", get, path = "/api/v1/workflows/{id}", tag = "workflows", params(("id" = Uuid, Path), VersionQuery),
    responses((status = 200, body = Workflow), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
    ApiQuery(q): ApiQuery<VersionQuery>,
) -> Result<Json<Workflow>, ApiError> {
    let w = state
        .reader
        .workflow(auth.account_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    let version = q.version.unwrap_or(w.latest_version);
    Ok(Json(with_definition(&state, w, version).await?))
}

/// Add a version; new executions use it, running ones keep theirs.
#[utoipa::path(operation_id = "add_workflow_version", post, path = "/api/v1/workflows/{id}/versions", tag = "workflows", params(("id" = Uuid, Path)),
    request_body = NewVersion,
    responses((status = 201, body = Workflow), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn add_version(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
    ApiJson(req): ApiJson<NewVersion>,
) -> Result<(StatusCode, Json<Workflow>), ApiError> {
    let w = state
        .engine
        .add_version(auth.account_id, id, &req.definition)
        .await?;
    let version = w.latest_version;
    Ok((
        StatusCode::CREATED,
        Json(Workflow::new(w, version, req.definition)),
    ))
}

async fn set_active(
    state: &AppState,
    auth: Auth,
    id: Uuid,
    active: bool,
) -> Result<Json<Workflow>, ApiError> {
    let w = state.engine.set_active(auth.account_id, id, active).await?;
    let version = w.latest_version;
    Ok(Json(with_definition(state, w, version).await?))
}

/// Allow new executions (not of an archived workflow: 409).
#[utoipa::path(operation_id = "activate_workflow", post, path = "/api/v1/workflows/{id}/activate", tag = "workflows", params(("id" = Uuid, Path)),
    responses((status = 200, body = Workflow), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn activate(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> Result<Json<Workflow>, ApiError> {
    set_active(&state, auth, id, true).await
}

/// Refuse new executions (running ones go on).
#[utoipa::path(operation_id = "deactivate_workflow", post, path = "/api/v1/workflows/{id}/deactivate", tag = "workflows", params(("id" = Uuid, Path)),
    responses((status = 200, body = Workflow), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn deactivate(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> Result<Json<Workflow>, ApiError> {
    set_active(&state, auth, id, false).await
}

/// Archive a workflow: it starts nothing more and leaves the default
/// listing; running executions go on; its versions stay readable.
#[utoipa::path(operation_id = "archive_workflow", post, path = "/api/v1/workflows/{id}/archive", tag = "workflows", params(("id" = Uuid, Path)),
    responses((status = 200, body = Workflow), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn archive(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> Result<Json<Workflow>, ApiError> {
    let w = state.engine.archive_workflow(auth.account_id, id).await?;
    let version = w.latest_version;
    Ok(Json(with_definition(&state, w, version).await?))
}

/// A version of a workflow.
#[derive(Debug, Serialize, ToSchema)]
pub struct Version {
    /// Its number, from 1.
    pub version: i32,
    /// When it was written.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// The versions of a workflow.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionList {
    /// Newest first; read one with `GET /api/v1/workflows/{id}?version=N`.
    pub items: Vec<Version>,
}

/// The versions of a workflow, newest first.
#[utoipa::path(operation_id = "list_workflow_versions", get, path = "/api/v1/workflows/{id}/versions", tag = "workflows", params(("id" = Uuid, Path)),
    responses((status = 200, body = VersionList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn versions(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> Result<Json<VersionList>, ApiError> {
    let rows = state
        .reader
        .versions(auth.account_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    Ok(Json(VersionList {
        items: rows
            .into_iter()
            .map(|v| Version {
                version: v.version,
                created_at: v.created_at,
            })
            .collect(),
    }))
}

/// Start an execution for a contact: 202 with the new execution, or 200
/// with the existing one when the idempotency key was used before.
#[utoipa::path(operation_id = "execute_workflow", post, path = "/api/v1/workflows/{id}/execute", tag = "executions", params(("id" = Uuid, Path)),
    request_body = Execute,
    responses((status = 202, body = Execution), (status = 200, body = Execution), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn execute(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
    ApiJson(req): ApiJson<Execute>,
) -> Result<(StatusCode, Json<Execution>), ApiError> {
    let priority: Priority = match req.priority.as_deref() {
        None => Priority::Normal,
        Some(p) => p
            .parse()
            .map_err(|m: String| ApiError::invalid("priority", m).unprocessable())?,
    };
    let (e, created) = state
        .engine
        .start(StartRequest {
            account_id: auth.account_id,
            workflow_id: id,
            contact_id: req.contact_id,
            priority,
            idempotency_key: req.idempotency_key,
            metadata: req.metadata.unwrap_or_else(|| serde_json::json!({})),
            source: "api",
        })
        .await?;
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(super::execution::view_of(&state, e).await?)))
}
