//! `api_keys`: bearer keys scoped to one account, stored as SHA-256 hashes.

use sqlx::PgPool;
use uuid::Uuid;

use super::Result;

/// What a valid key grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The key's id.
    pub key_id: Uuid,
    /// The account it belongs to.
    pub account_id: Uuid,
    /// Whether it may act for other accounts.
    pub admin: bool,
}

/// Stores a key's hash; returns its id.
///
/// # Errors
/// Database errors (an unknown account among them: a foreign key violation).
pub async fn insert(
    pool: &PgPool,
    account_id: Uuid,
    name: &str,
    prefix: &str,
    hash: &[u8; 32],
    admin: bool,
) -> Result<Uuid> {
    Ok(sqlx::query_scalar(
        "INSERT INTO api_keys (account_id, name, prefix, key_hash, is_admin) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(account_id)
    .bind(name)
    .bind(prefix)
    .bind(hash.as_slice())
    .bind(admin)
    .fetch_one(pool)
    .await?)
}

/// The grant of the unrevoked key with this hash.
///
/// # Errors
/// Database errors.
pub async fn find(pool: &PgPool, hash: &[u8; 32]) -> Result<Option<Grant>> {
    let row: Option<(Uuid, Uuid, bool)> = sqlx::query_as(
        "SELECT id, account_id, is_admin FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
    )
    .bind(hash.as_slice())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(key_id, account_id, admin)| Grant {
        key_id,
        account_id,
        admin,
    }))
}

/// Whether the account exists.
///
/// # Errors
/// Database errors.
pub async fn account_exists(pool: &PgPool, account_id: Uuid) -> Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM accounts WHERE id = $1)")
            .bind(account_id)
            .fetch_one(pool)
            .await?,
    )
}
