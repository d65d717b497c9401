//! `accounts`: tenants.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use super::Result;
use crate::domain::Limits;

/// An account row.
#[derive(Debug, Clone, FromRow)]
pub struct Account {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// Creates an account.
///
/// # Errors
/// Database errors.
pub async fn create(pool: &PgPool, name: &str) -> Result<Account> {
    Ok(
        sqlx::query_as("INSERT INTO accounts (name) VALUES ($1) RETURNING *")
            .bind(name)
            .fetch_one(pool)
            .await?,
    )
}

/// The oldest account called `name`, if any.
///
/// # Errors
/// Database errors.
pub async fn find_by_name(pool: &PgPool, name: &str) -> Result<Option<Account>> {
    Ok(
        sqlx::query_as("SELECT * FROM accounts WHERE name = $1 ORDER BY created_at LIMIT 1")
            .bind(name)
            .fetch_optional(pool)
            .await?,
    )
}

/// The rate limits `account` set (`{}` when none), `None` for no such
/// account.
///
/// # Errors
/// Database errors; a stored value that no longer parses.
pub async fn limits(pool: &PgPool, account: Uuid) -> Result<Option<Limits>> {
    let row: Option<Json<Limits>> = sqlx::query_scalar("SELECT limits FROM accounts WHERE id = $1")
        .bind(account)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|j| j.0))
}

/// Replaces `account`'s rate limits; `false` when there is no such account.
///
/// # Errors
/// Database errors.
pub async fn set_limits(pool: &PgPool, account: Uuid, limits: &Limits) -> Result<bool> {
    let done = sqlx::query("UPDATE accounts SET limits = $2 WHERE id = $1")
        .bind(account)
        .bind(Json(limits))
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}
