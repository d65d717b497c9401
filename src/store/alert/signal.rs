//! What the alert evaluator reads: failures it has not looked at yet, and
//! the counts condition rules compare with their thresholds.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use crate::store::Result;

/// Failures not yet looked at by the evaluator, oldest first, each taken
/// (marked looked at) on `conn`: `(account, workflow, execution, class,
/// fingerprint, step, when)`.
///
/// # Errors
/// Database errors.
pub async fn take_new_failures(conn: &mut PgConnection, limit: i64) -> Result<Vec<Failure>> {
    Ok(sqlx::query_as(
        "UPDATE dead_letters d SET alert_checked_at = now() \
         FROM (SELECT id FROM dead_letters WHERE alert_checked_at IS NULL ORDER BY created_at LIMIT $1 \
               FOR UPDATE SKIP LOCKED) n, workflow_executions e \
         WHERE d.id = n.id AND e.id = d.execution_id \
         RETURNING d.account_id, e.workflow_id, d.execution_id, d.error_class, d.fingerprint, \
                   d.step_id, d.created_at",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// A failure the evaluator takes.
#[derive(Debug, Clone, FromRow)]
pub struct Failure {
    /// Account.
    pub account_id: Uuid,
    /// Workflow.
    pub workflow_id: Uuid,
    /// Execution.
    pub execution_id: Uuid,
    /// Class.
    pub error_class: Option<String>,
    /// Fingerprint.
    pub fingerprint: Option<String>,
    /// Step.
    pub step_id: Option<String>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// Failed and retried attempts, and all attempts, over the last `window_s`
/// seconds, of `account_id` (every account when `None`), of one workflow
/// when given.
///
/// # Errors
/// Database errors.
pub async fn attempt_counts(
    pool: &PgPool,
    account_id: Option<Uuid>,
    workflow_id: Option<Uuid>,
    window_s: i32,
) -> Result<(i64, i64)> {
    let mut qb = sqlx::QueryBuilder::new(
        "SELECT count(*) FILTER (WHERE status IN ('FAILED', 'RETRYING')), count(*) FROM execution_logs \
         WHERE created_at > now() - make_interval(secs => ",
    );
    qb.push_bind(f64::from(window_s)).push(")");
    if let Some(a) = account_id {
        qb.push(" AND account_id = ").push_bind(a);
    }
    if let Some(w) = workflow_id {
        qb.push(" AND workflow_id = ").push_bind(w);
    }
    Ok(qb.build_query_as().fetch_one(pool).await?)
}

/// Dead letters recorded over the last `window_s` seconds, of `account_id`
/// (every account when `None`).
///
/// # Errors
/// Database errors.
pub async fn dead_letter_count(
    pool: &PgPool,
    account_id: Option<Uuid>,
    window_s: i32,
) -> Result<i64> {
    let mut qb = sqlx::QueryBuilder::new(
        "SELECT count(*) FROM dead_letters WHERE created_at > now() - make_interval(secs => ",
    );
    qb.push_bind(f64::from(window_s)).push(")");
    if let Some(a) = account_id {
        qb.push(" AND account_id = ").push_bind(a);
    }
    Ok(qb.build_query_scalar().fetch_one(pool).await?)
}
