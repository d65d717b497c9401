//! `/api/v1/contacts`: the CRM owns contacts; this is the mirror the engine reads.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json_};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiQuery, Auth, Id};
use super::view::{self, Contact, ContactPage};
use crate::store::contact;

/// Contact fields; on update, absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"external_id": "crm-42", "email": "ada@example.com", "phone": "+15550100001",
    "timezone": "Europe/London", "attributes": {"first_name": "Ada", "plan": "pro"}, "tags": ["trial"]}))]
pub struct ContactFields {
    /// The CRM's id, unique per account; at most 255 characters.
    #[serde(default)]
    #[schema(max_length = 255)]
    pub external_id: Option<String>,
    /// Email; at most 320 characters.
    #[serde(default)]
    #[schema(max_length = 320)]
    pub email: Option<String>,
    /// Phone (E.164 preferred); at most 64 characters.
    #[serde(default)]
    #[schema(max_length = 64)]
    pub phone: Option<String>,
    /// IANA timezone, e.g. `Europe/Paris` (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Attributes (an object of at most 64 KiB as JSON; replaces the old
    /// one on update).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Map<String, Json_>>,
    /// Tags, at most 100 of 1-100 characters each (replace the old ones on
    /// update).
    #[serde(default)]
    #[schema(max_items = 100)]
    pub tags: Option<Vec<String>>,
    /// Opted out of messages.
    #[serde(default)]
    pub opted_out: Option<bool>,
}

/// Contact filters and paging.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ContactQuery {
    /// Email, case-insensitive.
    pub email: Option<String>,
    /// The CRM's id.
    pub external_id: Option<String>,
    /// Has this tag.
    pub tag: Option<String>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
}

/// Create a contact.
#[utoipa::path(operation_id = "create_contact", post, path = "/api/v1/contacts", tag = "contacts", request_body = ContactFields,
    responses((status = 201, body = Contact), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<ContactFields>,
) -> Result<(StatusCode, Json<Contact>), ApiError> {
    let c = state
        .engine
        .create_contact(
            auth.account_id,
            &contact::NewContact {
                external_id: req.external_id,
                email: req.email,
                phone: req.phone,
                timezone: req.timezone,
                attributes: req.attributes.unwrap_or_default(),
                tags: req.tags.unwrap_or_default(),
                opted_out: req.opted_out.unwrap_or(false),
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(c.into())))
}

/// Update a contact.
#[utoipa::path(operation_id = "update_contact", patch, path = "/api/v1/contacts/{id}", tag = "contacts", params(("id" = Uuid, Path)),
    request_body = ContactFields,
    responses((status = 200, body = Contact), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
    ApiJson(req): ApiJson<ContactFields>,
) -> Result<Json<Contact>, ApiError> {
    let c = state
        .engine
        .update_contact(
            auth.account_id,
            id,
            &contact::Patch {
                external_id: req.external_id,
                email: req.email,
                phone: req.phone,
                timezone: req.timezone,
                attributes: req.attributes,
                tags: req.tags,
                opted_out: req.opted_out,
            },
        )
        .await?;
    Ok(Json(c.into()))
}

/// What an erasure changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Erasure {
    /// When the contact was erased.
    pub erased_at: chrono::DateTime<chrono::Utc>,
    /// Its executions that were still running, now CANCELLED.
    pub executions_cancelled: u64,
    /// Its executions, context, metadata and error redacted.
    pub executions_redacted: u64,
    /// Their log rows, response and error redacted.
    pub logs_redacted: u64,
    /// Their outbox messages, recipient, subject and body redacted.
    pub messages_redacted: u64,
}

/// Erase a contact: its email, phone, external id, attributes and tags are
/// deleted; its running executions are cancelled; its executions, their
/// log rows and outbox messages keep their shape with personal data
/// redacted. The contact is no longer found afterwards.
#[utoipa::path(operation_id = "erase_contact", delete, path = "/api/v1/contacts/{id}", tag = "contacts", params(("id" = Uuid, Path)),
    responses((status = 200, body = Erasure), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn erase(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> Result<Json<Erasure>, ApiError> {
    let e = state.engine.erase_contact(auth.account_id, id).await?;
    let cancelled = e.cancelled.len() as u64;
    tracing::info!(contact_id = %id, cancelled, "contact erased");
    Ok(Json(Erasure {
        erased_at: e.erased_at,
        executions_cancelled: cancelled,
        executions_redacted: e.executions,
        logs_redacted: e.logs,
        messages_redacted: e.messages,
    }))
}

/// A contact.
#[utoipa::path(operation_id = "get_contact", get, path = "/api/v1/contacts/{id}", tag = "contacts", params(("id" = Uuid, Path)),
    responses((status = 200, body = Contact), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> Result<Json<Contact>, ApiError> {
    let c = state
        .reader
        .contact(auth.account_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("contact"))?;
    Ok(Json(c.into()))
}

/// List contacts, newest first.
#[utoipa::path(operation_id = "list_contacts", get, path = "/api/v1/contacts", tag = "contacts", params(ContactQuery),
    responses((status = 200, body = ContactPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ContactQuery>,
) -> Result<Json<ContactPage>, ApiError> {
    let limit = view::limit(q.limit)?;
    let after = view::decode_after(q.cursor.as_deref())?;
    let filter = contact::Filter {
        email: q.email,
        external_id: q.external_id,
        tag: q.tag,
    };
    let rows = state
        .reader
        .contacts(auth.account_id, &filter, after, limit)
        .await?;
    let next_cursor = view::next_cursor(&rows, limit, |c| view::encode_after(c.created_at, c.id));
    Ok(Json(ContactPage {
        items: rows.into_iter().map(Contact::from).collect(),
        next_cursor,
    }))
}
