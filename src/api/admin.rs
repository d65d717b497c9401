//! `/api/v1/admin/api-keys`: list and revoke API keys (admin keys only).
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
use crate::store::api_key;

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
