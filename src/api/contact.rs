//! `/api/v1/contacts`: the CRM owns contacts; this is the mirror the engine reads.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value as Json_};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiQuery, Auth, Id};
use super::view::{self, Contact, ContactPage};
use crate::store::{self, contact};

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

impl ContactFields {
    fn validate(&self) -> Result<(), ApiError> {
        let bad =
            |field: &str, message: String| Err(ApiError::invalid(field, message).unprocessable());
        for (field, value, max) in [
            ("external_id", &self.external_id, contact::MAX_EXTERNAL_ID),
            ("email", &self.email, contact::MAX_EMAIL),
            ("phone", &self.phone, contact::MAX_PHONE),
        ] {
            if let Some(v) = value
                && v.chars().count() > max
            {
                return bad(field, format!("must be at most {max} characters"));
            }
        }
        if let Some(tz) = &self.timezone
            && tz.parse::<chrono_tz::Tz>().is_err()
        {
            return bad("timezone", format!("`{tz}` is not an IANA timezone"));
        }
        if let Some(e) = &self.email
            && !e.contains('@')
        {
            return bad("email", "not an email address".into());
        }
        if let Some(tags) = &self.tags {
            if tags.len() > contact::MAX_TAGS {
                return bad("tags", format!("at most {} tags", contact::MAX_TAGS));
            }
            if let Some(i) = tags
                .iter()
                .position(|t| t.trim().is_empty() || t.chars().count() > contact::MAX_TAG)
            {
                return bad(
                    &format!("tags[{i}]"),
                    format!(
                        "must be 1 to {} characters, not only spaces",
                        contact::MAX_TAG
                    ),
                );
            }
        }
        if let Some(a) = &self.attributes {
            // A map of JSON values always serializes.
            let size = serde_json::to_string(a).unwrap_or_default().len();
            if size > contact::MAX_ATTRIBUTES_BYTES {
                return bad(
                    "attributes",
                    format!(
                        "is {size} bytes as JSON; at most {} allowed",
                        contact::MAX_ATTRIBUTES_BYTES
                    ),
                );
            }
        }
        Ok(())
    }
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

fn duplicate(e: store::Error) -> ApiError {
    if let store::Error::Database(sqlx::Error::Database(db)) = &e
        && db.is_unique_violation()
    {
        return ApiError::conflict("a contact with this external_id exists").field("external_id");
    }
    e.into()
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
    req.validate()?;
    let c = store::contact::insert(
        state.engine.pool(),
        auth.account_id,
        &store::contact::NewContact {
            external_id: req.external_id,
            email: req.email,
            phone: req.phone,
            timezone: req.timezone,
            attributes: req.attributes.unwrap_or_default(),
            tags: req.tags.unwrap_or_default(),
            opted_out: req.opted_out.unwrap_or(false),
        },
    )
    .await
    .map_err(duplicate)?;
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
    req.validate()?;
    let c = store::contact::update(
        state.engine.pool(),
        auth.account_id,
        id,
        &store::contact::Patch {
            external_id: req.external_id,
            email: req.email,
            phone: req.phone,
            timezone: req.timezone,
            attributes: req.attributes,
            tags: req.tags,
            opted_out: req.opted_out,
        },
    )
    .await
    .map_err(duplicate)?
    .ok_or_else(|| ApiError::not_found("contact"))?;
    Ok(Json(c.into()))
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
    let c = store::contact::get(state.engine.pool(), auth.account_id, id)
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
    let filter = store::contact::Filter {
        email: q.email,
        external_id: q.external_id,
        tag: q.tag,
    };
    let rows =
        store::contact::list(state.engine.pool(), auth.account_id, &filter, after, limit).await?;
    let next_cursor = view::next_cursor(&rows, limit, |c| view::encode_after(c.created_at, c.id));
    Ok(Json(ContactPage {
        items: rows.into_iter().map(Contact::from).collect(),
        next_cursor,
    }))
}
