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

/// A key as listed (never its hash).
#[derive(Debug, Clone, sqlx::FromRow)]
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
    pub is_admin: bool,
    /// Created.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Revoked, if it was.
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Keys of `account_id` (every account's when `None`), newest first.
///
/// # Errors
/// Database errors.
pub async fn list(pool: &PgPool, account_id: Option<Uuid>) -> Result<Vec<ApiKey>> {
    Ok(sqlx::query_as(
        "SELECT id, account_id, name, prefix, is_admin, created_at, revoked_at FROM api_keys \
         WHERE $1::uuid IS NULL OR account_id = $1 ORDER BY created_at DESC, id DESC",
    )
    .bind(account_id)
    .fetch_all(pool)
    .await?)
}

/// Revokes the key `id` (once: a revoked key keeps its first revocation
/// time); `None` when there is no such key.
///
/// # Errors
/// Database errors.
pub async fn revoke(pool: &PgPool, id: Uuid) -> Result<Option<ApiKey>> {
    Ok(sqlx::query_as(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 \
         RETURNING id, account_id, name, prefix, is_admin, created_at, revoked_at",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?)
}
