//! `/api/v1/limits`: the account's rate limits of outbound calls. Every
//! key reads its account's; only admin keys change them (limits protect
//! the installation and its providers from any one account), naming the
//! account with the `X-Flowpilot-Account` header.

use axum::Json;
use axum::extract::State;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, Auth};
use crate::domain::Limits;

/// The account's own limits (`{}`: every limit from the installation's
/// defaults, `FLOWPILOT_LIMIT_*`).
#[utoipa::path(operation_id = "get_limits", get, path = "/api/v1/limits", tag = "limits",
    responses((status = 200, body = Limits), (status = 401, body = ErrorBody)))]
pub async fn get(State(state): State<AppState>, auth: Auth) -> Result<Json<Limits>, ApiError> {
    Ok(Json(state.reader.limits(auth.account_id).await?))
}

/// Replace the account's limits (admin keys only). A change reaches every
/// worker at once; steps already parked keep the slot they were given.
#[utoipa::path(operation_id = "put_limits", put, path = "/api/v1/limits", tag = "limits",
    request_body = Limits,
    responses((status = 200, body = Limits), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(limits): ApiJson<Limits>,
) -> Result<Json<Limits>, ApiError> {
    if !auth.admin {
        return Err(ApiError::forbidden(
            "rate limits protect every account: changing them needs an admin key",
        ));
    }
    state.engine.set_limits(auth.account_id, &limits).await?;
    Ok(Json(limits))
}
