//! `contacts`: the engine's mirror of the CRM's contacts.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json};
use sqlx::types::Json as SqlJson;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use super::Result;
use crate::domain::Change;

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
    Ok(sqlx::query_as(
        "SELECT * FROM contacts WHERE id = $1 AND account_id = $2 AND erased_at IS NULL",
    )
    .bind(id)
    .bind(account_id)
    .fetch_optional(pool)
    .await?)
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
    Ok(sqlx::query_as(
        "SELECT * FROM contacts WHERE account_id = $1 AND external_id = $2 AND erased_at IS NULL",
    )
    .bind(account_id)
    .bind(external_id)
    .fetch_optional(pool)
    .await?)
}

impl Contact {
    /// Applies `change` to this copy as its checkpoint does to the row
    /// ([`super::checkpoint::commit`]), so a run goes on with the contact
    /// it wrote without reading it again.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Update {
                email,
                phone,
                timezone,
                attributes,
                unset,
            } => {
                if let Some(v) = email {
                    self.email = Some(v.clone());
                }
                if let Some(v) = phone {
                    self.phone = Some(v.clone());
                }
                if let Some(v) = timezone {
                    self.timezone = v.clone();
                }
                if !self.attributes.0.is_object() {
                    self.attributes.0 = Json::Object(Map::new());
                }
                if let Json::Object(map) = &mut self.attributes.0 {
                    map.extend(attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
                    for key in unset {
                        map.remove(key);
                    }
                }
            }
            Change::AddTag(tag) => {
                if !self.tags.contains(tag) {
                    self.tags.push(tag.clone());
                }
            }
            Change::RemoveTag(tag) => self.tags.retain(|t| t != tag),
        }
    }
}

/// Filters of the contact list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Email, case-insensitive.
    pub email: Option<String>,
    /// The CRM's id.
    pub external_id: Option<String>,
    /// Has this tag.
    pub tag: Option<String>,
}

/// A page of the account's contacts, newest first.
///
/// # Errors
/// Database errors.
pub async fn list(
    pool: &PgPool,
    account_id: Uuid,
    f: &Filter,
    after: Option<super::page::After>,
    limit: i64,
) -> Result<Vec<Contact>> {
    let mut qb =
        sqlx::QueryBuilder::new("SELECT * FROM contacts WHERE erased_at IS NULL AND account_id = ");
    qb.push_bind(account_id);
    if let Some(e) = &f.email {
        qb.push(" AND lower(email) = lower(").push_bind(e).push(")");
    }
    if let Some(x) = &f.external_id {
        qb.push(" AND external_id = ").push_bind(x);
    }
    if let Some(t) = &f.tag {
        qb.push(" AND ").push_bind(t).push(" = ANY(tags)");
    }
    super::page::push_after_and_limit(&mut qb, after, limit);
    Ok(qb.build_query_as().fetch_all(pool).await?)
}

/// Changes to a contact; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct Patch {
    /// New CRM id.
    pub external_id: Option<String>,
    /// New email.
    pub email: Option<String>,
    /// New phone.
    pub phone: Option<String>,
    /// New timezone.
    pub timezone: Option<String>,
    /// New attributes (replacing the old ones).
    pub attributes: Option<Map<String, Json>>,
    /// New tags (replacing the old ones).
    pub tags: Option<Vec<String>>,
    /// New opt-out state.
    pub opted_out: Option<bool>,
}

/// Updates the contact `id` of `account_id`; `None` when it is not there.
///
/// # Errors
/// Database errors.
pub async fn update(
    pool: &PgPool,
    account_id: Uuid,
    id: Uuid,
    p: &Patch,
) -> Result<Option<Contact>> {
    Ok(sqlx::query_as(
        "UPDATE contacts SET external_id = coalesce($3, external_id), email = coalesce($4, email), \
           phone = coalesce($5, phone), timezone = coalesce($6, timezone), attributes = coalesce($7, attributes), \
           tags = coalesce($8, tags), opted_out = coalesce($9, opted_out), updated_at = now() \
         WHERE id = $1 AND account_id = $2 AND erased_at IS NULL RETURNING *",
    )
    .bind(id)
    .bind(account_id)
    .bind(&p.external_id)
    .bind(&p.email)
    .bind(&p.phone)
    .bind(&p.timezone)
    .bind(p.attributes.as_ref().map(SqlJson))
    .bind(&p.tags)
    .bind(p.opted_out)
    .fetch_optional(pool)
    .await?)
}

/// What an erasure changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erased {
    /// When.
    pub erased_at: DateTime<Utc>,
    /// Executions of the contact still running, cancelled.
    pub cancelled: Vec<super::execution::Ended>,
    /// Executions of the contact, their context, metadata and error redacted.
    pub executions: u64,
    /// Their log rows, response and error redacted.
    pub logs: u64,
    /// Their outbox messages, recipient, subject and body redacted.
    pub messages: u64,
}

/// What stands in for erased text.
pub const REDACTED: &str = "redacted";

/// Erases the contact `id` of `account_id` in one transaction: its
/// personal data (email, phone, external id, attributes, tags) goes, it is
/// marked opted out and erased; its executions that are not final move to
/// `cancelled` (from a status in `cancel_from`, with `reason`); every one
/// of its executions keeps its shape with context, metadata and error
/// redacted, and so do their log rows, outbox messages and dead letters.
/// `None` when there is no such contact (or it is erased already).
///
/// # Errors
/// Database errors.
pub async fn erase(
    pool: &PgPool,
    account_id: Uuid,
    id: Uuid,
    cancel_from: &[crate::domain::Status],
    cancelled: crate::domain::Status,
    reason: &str,
) -> Result<Option<Erased>> {
    let mut tx = pool.begin().await?;
    let erased_at: Option<DateTime<Utc>> = sqlx::query_scalar(
        "UPDATE contacts SET email = NULL, phone = NULL, external_id = NULL, attributes = '{}', tags = '{}', \
           opted_out = true, erased_at = now(), updated_at = now() \
         WHERE id = $1 AND account_id = $2 AND erased_at IS NULL RETURNING erased_at",
    )
    .bind(id)
    .bind(account_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(erased_at) = erased_at else {
        return Ok(None);
    };
    let cancelled = super::execution::cancel_of_contact(
        &mut tx,
        account_id,
        id,
        cancel_from,
        cancelled,
        reason,
    )
    .await?;
    // Each statement binds the account ($1), the contact ($2) and the
    // stand-in text ($3).
    let of_contact =
        "(SELECT id FROM workflow_executions WHERE account_id = $1 AND contact_id = $2)";
    let redactions = [
        "UPDATE workflow_executions SET context = '{}', metadata = '{}', \
           error = CASE WHEN error IS NULL THEN NULL ELSE $3 END, \
           revision = revision + 1, updated_at = now() \
         WHERE account_id = $1 AND contact_id = $2"
            .to_owned(),
        format!(
            "UPDATE execution_logs SET \
               response = CASE WHEN response IS NULL THEN NULL ELSE jsonb_build_object($3::text, true) END, \
               error = CASE WHEN error IS NULL THEN NULL ELSE $3 END \
             WHERE account_id = $1 AND execution_id IN {of_contact}"
        ),
        format!(
            "UPDATE outbox SET recipient = $3, body = $3, \
               subject = CASE WHEN subject IS NULL THEN NULL ELSE $3 END \
             WHERE account_id = $1 AND execution_id IN {of_contact}"
        ),
        format!(
            "UPDATE dead_letters SET error = $3 WHERE account_id = $1 AND execution_id IN {of_contact}"
        ),
    ];
    let mut changed = [0u64; 4];
    for (sql, n) in redactions.into_iter().zip(&mut changed) {
        // The statements are ours, with only binds from the caller.
        *n = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(account_id)
            .bind(id)
            .bind(REDACTED)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    let [executions, logs, messages, _] = changed;
    tx.commit().await?;
    Ok(Some(Erased {
        erased_at,
        cancelled,
        executions,
        logs,
        messages,
    }))
}
