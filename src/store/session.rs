//! Operator console sessions (`console_sessions`): a token's hash, the API
//! key that opened it, the account acted for and the CSRF token. A session
//! is found only while its key is not revoked and it has not expired.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::Result;

/// A live session.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Session {
    /// The API key that signed in.
    pub key_id: Uuid,
    /// Its name.
    pub key_name: String,
    /// Whether it is an admin key.
    pub admin: bool,
    /// The account acted for.
    pub account_id: Uuid,
    /// The account's name.
    pub account_name: String,
    /// What state-changing forms must carry.
    pub csrf: String,
}

/// Opens a session for `key_id`, acting for its own account, until
/// `expires_at`; sessions already expired go at the same time.
///
/// # Errors
/// Database errors.
pub async fn open(
    pool: &PgPool,
    token_hash: &[u8; 32],
    key_id: Uuid,
    csrf: &str,
    expires_at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "WITH gone AS (DELETE FROM console_sessions WHERE expires_at < now()) \
         INSERT INTO console_sessions (token_hash, key_id, account_id, csrf, expires_at) \
         SELECT $1, id, account_id, $3, $4 FROM api_keys WHERE id = $2",
    )
    .bind(token_hash.as_slice())
    .bind(key_id)
    .bind(csrf)
    .bind(expires_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// The live session of `token_hash`, if any.
///
/// # Errors
/// Database errors.
pub async fn find(pool: &PgPool, token_hash: &[u8; 32]) -> Result<Option<Session>> {
    Ok(sqlx::query_as(
        "SELECT s.key_id, k.name AS key_name, k.is_admin AS admin, s.account_id, \
                a.name AS account_name, s.csrf \
         FROM console_sessions s \
         JOIN api_keys k ON k.id = s.key_id AND k.revoked_at IS NULL \
         JOIN accounts a ON a.id = s.account_id \
         WHERE s.token_hash = $1 AND s.expires_at > now()",
    )
    .bind(token_hash.as_slice())
    .fetch_optional(pool)
    .await?)
}

/// Makes the session act for `account_id`; false when the account does not
/// exist.
///
/// # Errors
/// Database errors.
pub async fn switch(pool: &PgPool, token_hash: &[u8; 32], account_id: Uuid) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE console_sessions SET account_id = a.id FROM accounts a \
         WHERE token_hash = $1 AND a.id = $2",
    )
    .bind(token_hash.as_slice())
    .bind(account_id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends the session.
///
/// # Errors
/// Database errors.
pub async fn close(pool: &PgPool, token_hash: &[u8; 32]) -> Result<()> {
    sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
        .bind(token_hash.as_slice())
        .execute(pool)
        .await?;
    Ok(())
}

/// Accounts an admin may switch to, by name (at most 500).
///
/// # Errors
/// Database errors.
pub async fn accounts(pool: &PgPool) -> Result<Vec<(Uuid, String)>> {
    Ok(
        sqlx::query_as("SELECT id, name FROM accounts ORDER BY name, id LIMIT 500")
            .fetch_all(pool)
            .await?,
    )
}
