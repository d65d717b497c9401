//! `alert_deliveries`: the alert outbox. A dispatcher takes due rows
//! (`FOR UPDATE SKIP LOCKED`, held for a while), sends, and records each.

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use sqlx::types::Json as SqlJson;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use crate::store::Result;

/// A delivery row.
#[derive(Debug, Clone, FromRow)]
pub struct Delivery {
    /// Id (the receiver's dedupe key).
    pub id: Uuid,
    /// The alert.
    pub alert_id: Uuid,
    /// Index into the rule's channels.
    pub channel: i32,
    /// `email`, `sms`, `slack`, `webhook`.
    pub kind: String,
    /// `pending`, `sent`, `failed`.
    pub state: String,
    /// Sends tried.
    pub attempts: i32,
    /// When it is tried next.
    pub next_attempt_at: DateTime<Utc>,
    /// Held by a dispatcher until.
    pub locked_until: Option<DateTime<Utc>>,
    /// The last failure.
    pub last_error: Option<String>,
    /// Queued.
    pub created_at: DateTime<Utc>,
    /// Sent.
    pub sent_at: Option<DateTime<Utc>>,
}

/// The deliveries of an alert, by channel.
///
/// # Errors
/// Database errors.
pub async fn deliveries(pool: &PgPool, alert_id: Uuid) -> Result<Vec<Delivery>> {
    Ok(
        sqlx::query_as("SELECT * FROM alert_deliveries WHERE alert_id = $1 ORDER BY channel")
            .bind(alert_id)
            .fetch_all(pool)
            .await?,
    )
}

/// A delivery taken for sending, with what it needs.
#[derive(Debug, Clone, FromRow)]
pub struct Taken {
    /// Delivery id.
    pub id: Uuid,
    /// Channel index.
    pub channel: i32,
    /// Attempts so far, this one included.
    pub attempts: i32,
    /// The alert.
    pub alert_id: Uuid,
    /// Its account.
    pub account_id: Option<Uuid>,
    /// Its summary.
    pub summary: String,
    /// Its details.
    pub details: SqlJson<Json>,
    /// Its occurrences.
    pub occurrences: i32,
    /// When its first occurrence happened.
    pub occurred_at: DateTime<Utc>,
    /// Its rule's id, name, kind and channels.
    pub rule_id: Uuid,
    /// Rule name.
    pub rule_name: String,
    /// Rule kind.
    pub rule_kind: String,
    /// Rule channels.
    pub channels: SqlJson<Json>,
}

/// Takes up to `limit` due deliveries for `hold` seconds (a dispatcher
/// that dies lets them go when that lapses), counting an attempt.
///
/// # Errors
/// Database errors.
pub async fn take_due(pool: &PgPool, limit: i64, hold_s: f64) -> Result<Vec<Taken>> {
    Ok(sqlx::query_as(
        "WITH due AS ( \
           SELECT id FROM alert_deliveries WHERE state = 'pending' AND next_attempt_at <= now() \
             AND (locked_until IS NULL OR locked_until < now()) \
           ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED), \
         taken AS ( \
           UPDATE alert_deliveries d SET locked_until = now() + make_interval(secs => $2), attempts = attempts + 1 \
           FROM due WHERE d.id = due.id RETURNING d.id, d.channel, d.attempts, d.alert_id) \
         SELECT t.id, t.channel, t.attempts, t.alert_id, a.account_id, a.summary, a.details, a.occurrences, \
                a.occurred_at, r.id AS rule_id, r.name AS rule_name, r.kind AS rule_kind, r.channels \
         FROM taken t JOIN alerts a ON a.id = t.alert_id JOIN alert_rules r ON r.id = a.rule_id",
    )
    .bind(limit)
    .bind(hold_s)
    .fetch_all(pool)
    .await?)
}

/// Records a delivery sent.
///
/// # Errors
/// Database errors.
pub async fn sent(pool: &PgPool, id: Uuid) -> Result<()> {
    sqlx::query(
        "UPDATE alert_deliveries SET state = 'sent', sent_at = now(), locked_until = NULL, last_error = NULL \
         WHERE id = $1",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a failed send: tried again at `retry_at`, or failed for good
/// when `None`.
///
/// # Errors
/// Database errors.
pub async fn not_sent(
    pool: &PgPool,
    id: Uuid,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
) -> Result<()> {
    sqlx::query(
        "UPDATE alert_deliveries SET last_error = $2, locked_until = NULL, \
           state = CASE WHEN $3::timestamptz IS NULL THEN 'failed' ELSE 'pending' END, \
           next_attempt_at = coalesce($3, next_attempt_at) \
         WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .bind(retry_at)
    .execute(pool)
    .await?;
    Ok(())
}
