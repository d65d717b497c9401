//! Extractors that turn every bad request into an [`ApiError`] naming the
//! field: JSON bodies (size limit, unknown fields, wrong types), query
//! strings, UUID path segments, and the bearer key.

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use crate::auth::hash_key;
use crate::store;

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;
/// Header an admin key uses to act for another account.
pub const ACCOUNT_HEADER: &str = "x-flowpilot-account";

/// A JSON body of `T` of at most `LIMIT` bytes (`deny_unknown_fields`
/// types reject unknown keys).
pub struct ApiJson<T, const LIMIT: usize = MAX_BODY>(pub T);

impl<T: DeserializeOwned, S: Send + Sync, const LIMIT: usize> FromRequest<S> for ApiJson<T, LIMIT> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json") || v.contains("+json"));
        if !json_type {
            return Err(ApiError::unsupported_media_type());
        }
        let _ = state;
        let bytes = axum::body::to_bytes(req.into_body(), LIMIT)
            .await
            .map_err(|e| {
                if too_large(e) {
                    ApiError::too_large(LIMIT)
                } else {
                    ApiError::invalid_json("could not read the request body")
                }
            })?;
        // Syntax first (trailing garbage included), then the shape, so that
        // malformed JSON is a 400 and a wrong field a 422 naming it.
        let doc: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::invalid_json(format!("malformed JSON: {e}")))?;
        if let Some(field) = store::text::first_nul(&doc, "") {
            return Err(ApiError::invalid(field, store::text::NUL_MESSAGE).unprocessable());
        }
        let value = serde_path_to_error::deserialize(doc).map_err(|e| {
            let field = crate::action::field_path(&e).unwrap_or_else(|| "body".into());
            ApiError::invalid(field, e.inner().to_string()).unprocessable()
        })?;
        Ok(ApiJson(value))
    }
}

/// Whether reading a body failed on its length limit (the limit's error
/// comes wrapped in axum's, once or more).
fn too_large(e: axum::Error) -> bool {
    let mut err = e.into_inner();
    loop {
        match err.downcast::<axum::Error>() {
            Ok(inner) => err = inner.into_inner(),
            Err(other) => return other.is::<http_body_util::LengthLimitError>(),
        }
    }
}

/// Query parameters as `T`.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parse_query(parts.uri.query().unwrap_or("")).map(ApiQuery)
    }
}

/// A query string (or urlencoded form) as `T`; a NUL or a bad value is a
/// 400 naming the field.
///
/// # Errors
/// As said.
pub fn parse_query<T: DeserializeOwned>(q: &str) -> Result<T, ApiError> {
    let pairs = url::form_urlencoded::parse(q.as_bytes());
    if let Some((k, _)) = pairs
        .clone()
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        let field = if k.contains('\0') { "query".into() } else { k };
        return Err(ApiError::invalid(field, store::text::NUL_MESSAGE));
    }
    let de = serde_urlencoded::Deserializer::new(pairs);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = crate::action::field_path(&e).unwrap_or_else(|| "query".into());
        ApiError::invalid(field, e.inner().to_string())
    })
}

/// A UUID path segment (`{id}`); anything else is a 400 naming `id`.
pub struct Id(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::invalid("id", "missing path parameter"))?;
        Uuid::parse_str(&raw)
            .map(Id)
            .map_err(|_| ApiError::invalid("id", format!("`{raw}` is not a UUID")))
    }
}

/// The caller, from `Authorization: Bearer <key>`: the account every query
/// of the request is scoped to. An admin key may name another account in
/// `X-Flowpilot-Account`.
#[derive(Debug, Clone, Copy)]
pub struct Auth {
    /// The account acted for.
    pub account_id: Uuid,
    /// Whether the key is an admin key.
    pub admin: bool,
    /// The key's id, for the audit trail.
    pub key_id: Uuid,
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <api key>`"))?;
        let key = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ApiError::unauthorized("expected `Authorization: Bearer <api key>`"))?;
        let grant = state
            .reader
            .api_key(&hash_key(key))
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked API key"))?;
        let mut auth = Auth {
            account_id: grant.account_id,
            admin: grant.admin,
            key_id: grant.key_id,
        };
        // The audit trail names the key even when the request fails later.
        let caller = parts.extensions.get::<super::Caller>().cloned();
        if let Some(c) = &caller {
            c.set(auth);
        }
        if let Some(other) = parts.headers.get(ACCOUNT_HEADER) {
            if !grant.admin {
                return Err(ApiError::invalid(
                    ACCOUNT_HEADER,
                    "only admin keys may act for another account",
                ));
            }
            let id = other
                .to_str()
                .ok()
                .and_then(|s| Uuid::parse_str(s.trim()).ok())
                .ok_or_else(|| ApiError::invalid(ACCOUNT_HEADER, "must be an account UUID"))?;
            if !state.reader.account_exists(id).await? {
                return Err(ApiError::not_found("account").field(ACCOUNT_HEADER));
            }
            auth.account_id = id;
            if let Some(c) = &caller {
                c.set(auth);
            }
        }
        Ok(auth)
    }
}
