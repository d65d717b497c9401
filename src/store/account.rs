//! `accounts`: tenants.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use super::Result;

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
