//! `/api/v1/admin/api-keys` (list and revoke API keys) and
//! `/api/v1/admin/audit` (the audit trail), for admin keys only.
//! A revoked key is refused from the next request on: keys are looked up
//! on every request, never cached.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiQuery, Auth, Id};
use super::view;
use crate::store::{api_key, audit};

/// An API key as listed (never the key itself).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKey {
    /// Id.
    pub id: Uuid,
    /// The account it acts for.
    pub account_id: Uuid,
    /// Its label.
    pub name: String,
    /// Its first characters, to tell keys apart.
    pub prefix: String,
    /// Whether it may act for other accounts.
    pub admin: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<api_key::ApiKey> for ApiKey {
    fn from(k: api_key::ApiKey) -> Self {
        ApiKey {
            id: k.id,
            account_id: k.account_id,
            name: k.name,
            prefix: k.prefix,
            admin: k.is_admin,
            created_at: k.created_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// Keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    /// Newest first.
    pub items: Vec<ApiKey>,
}

/// Key filters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyQuery {
    /// Only this account's keys; every account's when absent.
    pub account_id: Option<Uuid>,
}

fn admin_only(auth: Auth) -> Result<(), ApiError> {
    if auth.admin {
        Ok(())
    } else {
        Err(ApiError::forbidden("managing API keys needs an admin key"))
    }
}

/// List API keys (admin keys only).
#[utoipa::path(operation_id = "list_api_keys", get, path = "/api/v1/admin/api-keys", tag = "admin", params(ApiKeyQuery),
    responses((status = 200, body = ApiKeyList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ApiKeyQuery>,
) -> Result<Json<ApiKeyList>, ApiError> {
    admin_only(auth)?;
    let keys = state.keys.list(q.account_id).await?;
    Ok(Json(ApiKeyList {
        items: keys.into_iter().map(ApiKey::from).collect(),
    }))
}

/// Revoke an API key (admin keys only); revoking it again changes nothing.
#[utoipa::path(operation_id = "revoke_api_key", post, path = "/api/v1/admin/api-keys/{id}/revoke", tag = "admin",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ApiKey), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> Result<Json<ApiKey>, ApiError> {
    admin_only(auth)?;
    let key = state
        .keys
        .revoke(id)
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    tracing::info!(key_id = %key.id, account_id = %key.account_id, "API key revoked");
    Ok(Json(key.into()))
}

/// Audit-trail filters and paging.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only what was done for this account.
    pub account_id: Option<Uuid>,
    /// Only what this API key did.
    pub key_id: Option<Uuid>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
}

/// One entry of the audit trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    /// Id, increasing.
    pub id: i64,
    /// The account acted for, when known.
    pub account_id: Option<Uuid>,
    /// The API key that acted; absent for the CLI and for calls that did
    /// not authenticate.
    pub key_id: Option<Uuid>,
    /// `api` or `cli`.
    pub actor: String,
    /// What was done: `POST /api/v1/workflows/{id}/archive`, `apikey revoke`.
    pub action: String,
    /// To what: the path, or what the command named.
    pub target: Option<String>,
    /// How it ended: the HTTP status, or the command's exit code.
    pub result: i32,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A page of the audit trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub items: Vec<AuditEntry>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

/// The audit trail: every state-changing API call and CLI admin command,
/// newest first (admin keys only).
#[utoipa::path(operation_id = "list_audit", get, path = "/api/v1/admin/audit", tag = "admin", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub async fn audit(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    if !auth.admin {
        return Err(ApiError::forbidden(
            "reading the audit trail needs an admin key",
        ));
    }
    let limit = view::limit(q.limit)?;
    let before = view::decode_log_cursor(q.cursor.as_deref())?;
    let filter = audit::Filter {
        account_id: q.account_id,
        key_id: q.key_id,
    };
    let rows = state.audit.list(&filter, before, limit).await?;
    let next_cursor = view::next_cursor(&rows, limit, |e| view::encode_log_cursor(e.id));
    Ok(Json(AuditPage {
        items: rows
            .into_iter()
            .map(|e| AuditEntry {
                id: e.id,
                account_id: e.account_id,
                key_id: e.key_id,
                actor: e.actor,
                action: e.action,
                target: e.target,
                result: e.result,
                created_at: e.created_at,
            })
            .collect(),
        next_cursor,
    }))
}
