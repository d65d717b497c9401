//! `alert_rules`, `alerts` and `alert_deliveries`: what to watch, what it
//! raised, and the outbox of messages about it (one row per alert and
//! channel, so each channel hears of an alert once).
//!
//! - this file: rules, and alerts (raised, folded, escalated, acknowledged);
//! - [`delivery`]: the outbox the dispatcher sends from;
//! - [`signal`]: what the evaluator reads (new failures, counts).

pub mod delivery;
pub mod signal;

pub use delivery::{Delivery, Taken};
pub use signal::Failure;

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use sqlx::types::Json as SqlJson;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use super::Result;
use super::page::After;

/// A rule row.
#[derive(Debug, Clone, FromRow)]
pub struct Rule {
    /// Id.
    pub id: Uuid,
    /// Owning account; `None` for a global rule.
    pub account_id: Option<Uuid>,
    /// Name.
    pub name: String,
    /// `execution_failed`, `failure_rate`, `breaker_open`, `queue_stalled`,
    /// `dead_letters`.
    pub kind: String,
    /// The kind's parameters.
    pub params: SqlJson<Json>,
    /// Channels in escalation order.
    pub channels: SqlJson<Json>,
    /// Occurrences of one key within this many seconds fold into one alert.
    pub dedup_window_s: i32,
    /// Seconds before an unacknowledged alert goes to the next channel.
    pub escalate_after_s: i32,
    /// Whether it is evaluated.
    pub enabled: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// A new rule.
#[derive(Debug, Clone)]
pub struct NewRule<'a> {
    /// Owning account; `None` for a global rule.
    pub account_id: Option<Uuid>,
    /// Name.
    pub name: &'a str,
    /// Kind.
    pub kind: &'a str,
    /// Parameters.
    pub params: &'a Json,
    /// Channels.
    pub channels: &'a Json,
    /// Dedup window, seconds.
    pub dedup_window_s: i32,
    /// Escalation delay, seconds.
    pub escalate_after_s: i32,
}

/// Inserts a rule.
///
/// # Errors
/// Database errors.
pub async fn insert_rule(pool: &PgPool, r: &NewRule<'_>) -> Result<Rule> {
    Ok(sqlx::query_as(
        "INSERT INTO alert_rules (account_id, name, kind, params, channels, dedup_window_s, escalate_after_s) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
    )
    .bind(r.account_id)
    .bind(r.name)
    .bind(r.kind)
    .bind(SqlJson(r.params))
    .bind(SqlJson(r.channels))
    .bind(r.dedup_window_s)
    .bind(r.escalate_after_s)
    .fetch_one(pool)
    .await?)
}

/// The rule `id` as `account_id` sees it: its own, and global ones when
/// `global` (an admin key).
///
/// # Errors
/// Database errors.
pub async fn get_rule(
    pool: &PgPool,
    account_id: Uuid,
    global: bool,
    id: Uuid,
) -> Result<Option<Rule>> {
    Ok(sqlx::query_as(
        "SELECT * FROM alert_rules WHERE id = $1 AND (account_id = $2 OR ($3 AND account_id IS NULL))",
    )
    .bind(id)
    .bind(account_id)
    .bind(global)
    .fetch_optional(pool)
    .await?)
}

/// The rules `account_id` sees (global ones too when `global`), newest first.
///
/// # Errors
/// Database errors.
pub async fn list_rules(pool: &PgPool, account_id: Uuid, global: bool) -> Result<Vec<Rule>> {
    Ok(sqlx::query_as(
        "SELECT * FROM alert_rules WHERE account_id = $1 OR ($2 AND account_id IS NULL) \
         ORDER BY created_at DESC, id DESC LIMIT 1000",
    )
    .bind(account_id)
    .bind(global)
    .fetch_all(pool)
    .await?)
}

/// Deletes a rule (and its alerts); the rule deleted, if there was one.
///
/// # Errors
/// Database errors.
pub async fn delete_rule(
    pool: &PgPool,
    account_id: Uuid,
    global: bool,
    id: Uuid,
) -> Result<Option<Rule>> {
    Ok(sqlx::query_as(
        "DELETE FROM alert_rules WHERE id = $1 AND (account_id = $2 OR ($3 AND account_id IS NULL)) RETURNING *",
    )
    .bind(id)
    .bind(account_id)
    .bind(global)
    .fetch_optional(pool)
    .await?)
}

/// Every enabled rule, for the evaluator.
///
/// # Errors
/// Database errors.
pub async fn enabled_rules(pool: &PgPool) -> Result<Vec<Rule>> {
    Ok(
        sqlx::query_as("SELECT * FROM alert_rules WHERE enabled ORDER BY created_at")
            .fetch_all(pool)
            .await?,
    )
}

/// An alert row.
#[derive(Debug, Clone, FromRow)]
pub struct Alert {
    /// Id.
    pub id: Uuid,
    /// The rule that raised it.
    pub rule_id: Uuid,
    /// Its account; `None` for a global rule's.
    pub account_id: Option<Uuid>,
    /// What it deduplicates on.
    pub key: String,
    /// `firing` or `acknowledged`.
    pub state: String,
    /// One line.
    pub summary: String,
    /// What triggered it.
    pub details: SqlJson<Json>,
    /// Occurrences folded into it.
    pub occurrences: i32,
    /// When the first occurrence happened.
    pub occurred_at: DateTime<Utc>,
    /// When it was raised.
    pub created_at: DateTime<Utc>,
    /// When the last occurrence was seen.
    pub last_seen_at: DateTime<Utc>,
    /// The channel last told.
    pub level: i32,
    /// When the next channel is told, unless acknowledged.
    pub next_escalation_at: Option<DateTime<Utc>>,
    /// When acknowledged.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// The API key that acknowledged it.
    pub acknowledged_by: Option<Uuid>,
}

/// One occurrence of what a rule watches.
#[derive(Debug, Clone)]
pub struct Occurrence {
    /// What it deduplicates on.
    pub key: String,
    /// Its account (for a global rule's alert: the account it happened in,
    /// if one).
    pub account_id: Option<Uuid>,
    /// One line.
    pub summary: String,
    /// Details.
    pub details: Json,
    /// When it happened.
    pub at: DateTime<Utc>,
}

/// Raises an alert of `rule` for `o`, on `conn` (the evaluator's
/// transaction), or folds it into the alert of the same key raised within
/// the rule's window. A new alert gets its first channel's delivery and,
/// with more channels, an escalation time. Returns the alert and whether
/// it is new.
///
/// # Errors
/// Database errors.
pub async fn raise(conn: &mut PgConnection, rule: &Rule, o: &Occurrence) -> Result<(Uuid, bool)> {
    let folded: Option<Uuid> = sqlx::query_scalar(
        "UPDATE alerts SET occurrences = occurrences + 1, last_seen_at = now() \
         WHERE id = (SELECT id FROM alerts WHERE rule_id = $1 AND key = $2 \
                       AND created_at > now() - make_interval(secs => $3) \
                     ORDER BY created_at DESC LIMIT 1) \
         RETURNING id",
    )
    .bind(rule.id)
    .bind(&o.key)
    .bind(f64::from(rule.dedup_window_s))
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = folded {
        return Ok((id, false));
    }
    let account = rule.account_id.or(o.account_id);
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO alerts (rule_id, account_id, key, summary, details, occurred_at, next_escalation_at) \
         VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $7 > 1 THEN now() + make_interval(secs => $8) END) \
         RETURNING id",
    )
    .bind(rule.id)
    .bind(account)
    .bind(&o.key)
    .bind(&o.summary)
    .bind(SqlJson(&o.details))
    .bind(o.at)
    .bind(i64::try_from(channel_count(&rule.channels.0)).unwrap_or(i64::MAX))
    .bind(f64::from(rule.escalate_after_s))
    .fetch_one(&mut *conn)
    .await?;
    add_delivery(conn, id, 0, &rule.channels.0).await?;
    Ok((id, true))
}

/// How many channels a rule's `channels` array holds.
fn channel_count(channels: &Json) -> usize {
    channels.as_array().map_or(0, Vec::len)
}

/// Queues the delivery of alert `id` to channel `index` of `channels`
/// (once: a second call for the same channel adds nothing).
async fn add_delivery(
    conn: &mut PgConnection,
    id: Uuid,
    index: i32,
    channels: &Json,
) -> Result<()> {
    let kind = channels[usize::try_from(index).unwrap_or_default()]["type"]
        .as_str()
        .unwrap_or("webhook");
    sqlx::query(
        "INSERT INTO alert_deliveries (alert_id, channel, kind) VALUES ($1, $2, $3) \
         ON CONFLICT (alert_id, channel) DO NOTHING",
    )
    .bind(id)
    .bind(index)
    .bind(kind)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves firing alerts whose escalation time passed to their next channel
/// (queuing its delivery); returns how many.
///
/// # Errors
/// Database errors.
pub async fn escalate(pool: &PgPool) -> Result<usize> {
    let mut tx = pool.begin().await?;
    let due: Vec<(Uuid, i32, SqlJson<Json>, i32)> = sqlx::query_as(
        "SELECT a.id, a.level, r.channels, r.escalate_after_s FROM alerts a JOIN alert_rules r ON r.id = a.rule_id \
         WHERE a.state = 'firing' AND a.next_escalation_at <= now() \
         ORDER BY a.next_escalation_at LIMIT 500 FOR UPDATE OF a SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (id, level, channels, after) in &due {
        let next = level + 1;
        let count = channel_count(&channels.0);
        let more = usize::try_from(next + 1).unwrap_or(usize::MAX) < count;
        sqlx::query(
            "UPDATE alerts SET level = $2, \
               next_escalation_at = CASE WHEN $3 THEN now() + make_interval(secs => $4) END \
             WHERE id = $1",
        )
        .bind(id)
        .bind(next)
        .bind(more)
        .bind(f64::from(*after))
        .execute(&mut *tx)
        .await?;
        add_delivery(&mut tx, *id, next, &channels.0).await?;
    }
    tx.commit().await?;
    Ok(due.len())
}

/// Acknowledges an alert `account_id` sees (global ones too when
/// `global`): no further escalation. `None` when there is no such alert.
///
/// # Errors
/// Database errors.
pub async fn acknowledge(
    pool: &PgPool,
    account_id: Uuid,
    global: bool,
    id: Uuid,
    by: Uuid,
) -> Result<Option<Alert>> {
    Ok(sqlx::query_as(
        "UPDATE alerts SET state = 'acknowledged', \
           acknowledged_at = coalesce(acknowledged_at, now()), \
           acknowledged_by = coalesce(acknowledged_by, $4), next_escalation_at = NULL \
         WHERE id = $1 AND rule_id IN \
           (SELECT id FROM alert_rules WHERE account_id = $2 OR ($3 AND account_id IS NULL)) \
         RETURNING *",
    )
    .bind(id)
    .bind(account_id)
    .bind(global)
    .bind(by)
    .fetch_optional(pool)
    .await?)
}

/// Which alerts a history lists.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// Only of this rule.
    pub rule_id: Option<Uuid>,
    /// Only in this state.
    pub state: Option<String>,
}

/// Alerts `account_id` sees (of its rules; with `global`, of global rules
/// too), newest first.
///
/// # Errors
/// Database errors.
pub async fn list(
    pool: &PgPool,
    account_id: Uuid,
    global: bool,
    f: &AlertFilter,
    after: Option<After>,
    limit: i64,
) -> Result<Vec<Alert>> {
    let mut qb = sqlx::QueryBuilder::new(
        "SELECT * FROM alerts WHERE (rule_id IN (SELECT id FROM alert_rules WHERE account_id = ",
    );
    qb.push_bind(account_id);
    if global {
        qb.push(" OR account_id IS NULL");
    }
    qb.push("))");
    if let Some(r) = f.rule_id {
        qb.push(" AND rule_id = ").push_bind(r);
    }
    if let Some(s) = &f.state {
        qb.push(" AND state = ").push_bind(s.clone());
    }
    super::page::push_after_and_limit(&mut qb, after, limit);
    Ok(qb.build_query_as().fetch_all(pool).await?)
}

/// The alert `id` as `account_id` sees it.
///
/// # Errors
/// Database errors.
pub async fn get(pool: &PgPool, account_id: Uuid, global: bool, id: Uuid) -> Result<Option<Alert>> {
    Ok(sqlx::query_as(
        "SELECT * FROM alerts WHERE id = $1 AND rule_id IN \
           (SELECT id FROM alert_rules WHERE account_id = $2 OR ($3 AND account_id IS NULL))",
    )
    .bind(id)
    .bind(account_id)
    .bind(global)
    .fetch_optional(pool)
    .await?)
}
