//! What the maintenance loop scans `workflow_executions` for: rows to
//! recover (due, lapsed, possibly lost) and wake-ups coming within the
//! timer horizon. Each a range scan on a partial index.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Result;
use super::execution::Execution;

/// Rows the recovery loop must move: waits and retries due for longer than
/// `grace`, lapsed leases, and QUEUED rows untouched since `stale_before`
/// (their job may have been lost with Redis). Oldest first.
///
/// # Errors
/// Database errors.
pub async fn due(
    pool: &PgPool,
    now: DateTime<Utc>,
    due_before: DateTime<Utc>,
    stale_before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Execution>> {
    Ok(sqlx::query_as(
        "(SELECT * FROM workflow_executions WHERE status = 'WAITING' AND resume_at <= $1 ORDER BY resume_at LIMIT $4) \
         UNION ALL \
         (SELECT * FROM workflow_executions WHERE status = 'RETRYING' AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $4) \
         UNION ALL \
         (SELECT * FROM workflow_executions WHERE status = 'RUNNING' AND lease_expires_at < $2 ORDER BY lease_expires_at LIMIT $4) \
         UNION ALL \
         (SELECT * FROM workflow_executions WHERE status = 'QUEUED' AND updated_at < $3 ORDER BY updated_at LIMIT $4)",
    )
    .bind(due_before)
    .bind(now)
    .bind(stale_before)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// WAITING and RETRYING rows whose time falls in `(after, until]`, by
/// that time, at most `limit`: what the timer pump moves into Redis.
///
/// # Errors
/// Database errors.
pub async fn coming_due(
    pool: &PgPool,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Execution>> {
    Ok(sqlx::query_as(
        "SELECT * FROM ((SELECT * FROM workflow_executions WHERE status = 'WAITING' \
             AND resume_at > $1 AND resume_at <= $2 ORDER BY resume_at LIMIT $3) \
           UNION ALL \
           (SELECT * FROM workflow_executions WHERE status = 'RETRYING' \
             AND next_attempt_at > $1 AND next_attempt_at <= $2 ORDER BY next_attempt_at LIMIT $3)) due \
         ORDER BY coalesce(resume_at, next_attempt_at) LIMIT $3",
    )
    .bind(after)
    .bind(until)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
