//! `contacts`: the engine's mirror of the CRM's contacts.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json};
use sqlx::types::Json as SqlJson;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use super::Result;
use crate::action::contact::Change;

/// A contact row.
#[derive(Debug, Clone, FromRow)]
pub struct Contact {
    /// Id.
    pub id: Uuid,
    /// Owning account.
    pub account_id: Uuid,
    /// The CRM's id for it.
    pub external_id: Option<String>,
    /// Email address.
    pub email: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// IANA timezone.
    pub timezone: String,
    /// Free-form attributes.
    pub attributes: SqlJson<Json>,
    /// Tags.
    pub tags: Vec<String>,
    /// Opted out of messages.
    pub opted_out: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// Fields of a new contact.
#[derive(Debug, Clone, Default)]
pub struct NewContact {
    /// The CRM's id.
    pub external_id: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// IANA timezone; `None` for UTC.
    pub timezone: Option<String>,
    /// Attributes (an object).
    pub attributes: Map<String, Json>,
    /// Tags.
    pub tags: Vec<String>,
    /// Opted out.
    pub opted_out: bool,
}

/// Inserts a contact.
///
/// # Errors
/// Database errors (a duplicate `external_id` in the account among them).
pub async fn insert(pool: &PgPool, account_id: Uuid, c: &NewContact) -> Result<Contact> {
    Ok(sqlx::query_as(
        "INSERT INTO contacts (account_id, external_id, email, phone, timezone, attributes, tags, opted_out) \
         VALUES ($1, $2, $3, $4, coalesce($5, 'UTC'), $6, $7, $8) RETURNING *",
    )
    .bind(account_id)
    .bind(&c.external_id)
    .bind(&c.email)
    .bind(&c.phone)
    .bind(&c.timezone)
    .bind(SqlJson(&c.attributes))
    .bind(&c.tags)
    .bind(c.opted_out)
    .fetch_one(pool)
    .await?)
}

/// The contact `id` of `account_id`.
///
/// # Errors
/// Database errors.
pub async fn get(pool: &PgPool, account_id: Uuid, id: Uuid) -> Result<Option<Contact>> {
    Ok(
        sqlx::query_as("SELECT * FROM contacts WHERE id = $1 AND account_id = $2")
            .bind(id)
            .bind(account_id)
            .fetch_optional(pool)
            .await?,
    )
}

/// The contact with the CRM id `external_id` in `account_id`.
///
/// # Errors
/// Database errors.
pub async fn get_by_external_id(
    pool: &PgPool,
    account_id: Uuid,
    external_id: &str,
) -> Result<Option<Contact>> {
    Ok(
        sqlx::query_as("SELECT * FROM contacts WHERE account_id = $1 AND external_id = $2")
            .bind(account_id)
            .bind(external_id)
            .fetch_optional(pool)
            .await?,
    )
}

/// Applies a step's contact change (inside its checkpoint transaction).
///
/// # Errors
/// Database errors.
pub async fn apply(
    conn: &mut PgConnection,
    account_id: Uuid,
    id: Uuid,
    change: &Change,
) -> Result<()> {
    match change {
        Change::Update {
            email,
            phone,
            timezone,
            attributes,
            unset,
        } => {
            sqlx::query(
                "UPDATE contacts SET email = coalesce($3, email), phone = coalesce($4, phone), \
                   timezone = coalesce($5, timezone), attributes = (attributes || $6) - $7::text[], updated_at = now() \
                 WHERE id = $1 AND account_id = $2",
            )
            .bind(id)
            .bind(account_id)
            .bind(email)
            .bind(phone)
            .bind(timezone)
            .bind(SqlJson(attributes))
            .bind(unset)
            .execute(conn)
            .await?;
        }
        Change::AddTag(tag) => {
            sqlx::query(
                "UPDATE contacts SET tags = array_append(tags, $3), updated_at = now() \
                 WHERE id = $1 AND account_id = $2 AND NOT ($3 = ANY(tags))",
            )
            .bind(id)
            .bind(account_id)
            .bind(tag)
            .execute(conn)
            .await?;
        }
        Change::RemoveTag(tag) => {
            sqlx::query(
                "UPDATE contacts SET tags = array_remove(tags, $3), updated_at = now() WHERE id = $1 AND account_id = $2",
            )
            .bind(id)
            .bind(account_id)
            .bind(tag)
            .execute(conn)
            .await?;
        }
    }
    Ok(())
}
