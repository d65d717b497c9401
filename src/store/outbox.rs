//! `outbox`: messages of the default email and SMS providers.

use sqlx::PgPool;
use uuid::Uuid;

use super::{Result, column};

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

/// Records `messages` in one statement, each once per idempotency key;
/// returns each one's id and whether this call recorded it, in order.
///
/// # Errors
/// Database errors.
pub async fn record_many(pool: &PgPool, messages: &[NewMessage<'_>]) -> Result<Vec<(Uuid, bool)>> {
    let keys = column(messages, |m| m.idempotency_key);
    // The outer SELECT sees the table as the statement began: it finds the
    // keys recorded before, the CTE those it records now.
    let rows: Vec<(Uuid, String, bool)> = sqlx::query_as(
        "WITH new AS ( \
           INSERT INTO outbox (account_id, execution_id, channel, recipient, subject, body, idempotency_key) \
           SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) \
           ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, idempotency_key) \
         SELECT id, idempotency_key, true FROM new \
         UNION ALL \
         SELECT id, idempotency_key, false FROM outbox WHERE idempotency_key = ANY($7)",
    )
    .bind(column(messages, |m| m.account_id))
    .bind(column(messages, |m| m.execution_id))
    .bind(column(messages, |m| m.channel))
    .bind(column(messages, |m| m.recipient))
    .bind(column(messages, |m| m.subject))
    .bind(column(messages, |m| m.body))
    .bind(&keys)
    .fetch_all(pool)
    .await?;
    let mut found: std::collections::HashMap<String, (Uuid, bool)> = rows
        .into_iter()
        .map(|(id, key, recorded)| (key, (id, recorded)))
        .collect();
    // A key another transaction was recording as this one began: neither
    // half saw it; it is there now.
    let unseen: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| !found.contains_key(*k))
        .collect();
    if !unseen.is_empty() {
        let late: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT id, idempotency_key FROM outbox WHERE idempotency_key = ANY($1)",
        )
        .bind(&unseen)
        .fetch_all(pool)
        .await?;
        found.extend(late.into_iter().map(|(id, key)| (key, (id, false))));
    }
    keys.iter()
        .map(|k| {
            found
                .get(*k)
                .copied()
                .ok_or(super::Error::Database(sqlx::Error::RowNotFound))
        })
        .collect()
}
