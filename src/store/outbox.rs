//! `outbox`: messages of the default email and SMS providers.

use sqlx::PgPool;
use uuid::Uuid;

use super::Result;

/// A message to record.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    /// Owning account (none for an alert of a global rule).
    pub account_id: Option<Uuid>,
    /// Execution that sent it (none for an alert).
    pub execution_id: Option<Uuid>,
    /// `email` or `sms`.
    pub channel: &'a str,
    /// Address or number.
    pub recipient: &'a str,
    /// Email subject.
    pub subject: Option<&'a str>,
    /// Text.
    pub body: &'a str,
    /// `<execution>:<step>:<attempt>`.
    pub idempotency_key: &'a str,
}

/// Records a message once per idempotency key; returns its id and whether
/// this call recorded it (`false`: a re-run of the same attempt).
///
/// # Errors
/// Database errors.
pub async fn record(pool: &PgPool, m: &NewMessage<'_>) -> Result<(Uuid, bool)> {
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO outbox (account_id, execution_id, channel, recipient, subject, body, idempotency_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
    )
    .bind(m.account_id)
    .bind(m.execution_id)
    .bind(m.channel)
    .bind(m.recipient)
    .bind(m.subject)
    .bind(m.body)
    .bind(m.idempotency_key)
    .fetch_optional(pool)
    .await?;
    if let Some(id) = inserted {
        return Ok((id, true));
    }
    let id = sqlx::query_scalar("SELECT id FROM outbox WHERE idempotency_key = $1")
        .bind(m.idempotency_key)
        .fetch_one(pool)
        .await?;
    Ok((id, false))
}
