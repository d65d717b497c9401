//! `execution_logs` (one row per step attempt, partitioned by month) and
//! `dead_letters` (one row per execution that failed for good).

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use sqlx::types::Json as SqlJson;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use super::Result;
use super::execution::Execution;
use crate::domain::{ErrorClass, LogStatus};

/// A log row: one action attempt, written by [`super::checkpoint::commit`].
#[derive(Debug, Clone)]
pub struct NewLog<'a> {
    /// Execution.
    pub execution_id: Uuid,
    /// Its workflow.
    pub workflow_id: Uuid,
    /// The version it runs.
    pub workflow_version: i32,
    /// Account.
    pub account_id: Uuid,
    /// Step position.
    pub step_index: i32,
    /// Step id.
    pub step_id: &'a str,
    /// Action type.
    pub action_type: &'a str,
    /// Attempt.
    pub attempt: i32,
    /// How the attempt ended.
    pub status: LogStatus,
    /// The step's definition (templates, not rendered values).
    pub config: &'a Json,
    /// What the action returned.
    pub response: Option<&'a Json>,
    /// Error text.
    pub error: Option<&'a str>,
    /// Class of the failure, if the attempt failed.
    pub error_class: Option<ErrorClass>,
    /// What groups the failure with like ones.
    pub fingerprint: Option<&'a str>,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// Finished.
    pub completed_at: DateTime<Utc>,
    /// Milliseconds it ran: `completed_at - started_at` less the time it
    /// was parked (a wait, a provider hold, an arq job).
    pub exec_ms: i64,
}

/// Records a dead letter for a failed execution (with its class and
/// fingerprint).
///
/// # Errors
/// Database errors.
pub async fn insert_dead_letter(
    conn: &mut PgConnection,
    e: &Execution,
    action_type: &str,
    error: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO dead_letters (account_id, execution_id, step_index, step_id, action_type, attempts, error, \
           error_class, fingerprint) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(e.account_id)
    .bind(e.id)
    .bind(e.current_step_index)
    .bind(&e.current_step_id)
    .bind(action_type)
    .bind(e.attempt)
    .bind(error)
    .bind(e.error_class.map(ErrorClass::as_str))
    .bind(&e.fingerprint)
    .execute(conn)
    .await?;
    Ok(())
}

/// A log row.
#[derive(Debug, Clone, FromRow)]
pub struct Log {
    /// Id, increasing.
    pub id: i64,
    /// Step position.
    pub step_index: i32,
    /// Step id.
    pub step_id: String,
    /// Action type.
    pub action_type: String,
    /// Attempt.
    pub attempt: i32,
    /// SUCCEEDED, FAILED, RETRYING.
    pub status: String,
    /// The step's definition.
    pub config: Option<SqlJson<Json>>,
    /// What the action returned.
    pub response: Option<SqlJson<Json>>,
    /// Error text.
    pub error: Option<String>,
    /// Class of the failure.
    pub error_class: Option<ErrorClass>,
    /// What groups the failure with like ones.
    pub fingerprint: Option<String>,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// Finished.
    pub completed_at: Option<DateTime<Utc>>,
    /// Duration.
    pub duration_ms: Option<i32>,
    /// Of it, the time the action ran (`null` before it was recorded).
    pub exec_ms: Option<i32>,
    /// The execution.
    pub execution_id: Uuid,
    /// Written.
    pub created_at: DateTime<Utc>,
}

/// Filters of an execution's logs.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Only this status.
    pub status: Option<String>,
    /// Only this action type.
    pub action_type: Option<String>,
    /// Steps from this index.
    pub step_from: Option<i32>,
    /// Steps up to this index.
    pub step_to: Option<i32>,
    /// Started at or after.
    pub since: Option<DateTime<Utc>>,
    /// Started before.
    pub until: Option<DateTime<Utc>>,
}

/// A page of an execution's logs in order, after log id `after`.
///
/// # Errors
/// Database errors.
pub async fn logs(
    pool: &PgPool,
    account_id: Uuid,
    execution_id: Uuid,
    f: &LogFilter,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<Log>> {
    let mut qb = sqlx::QueryBuilder::new(
        "SELECT id, step_index, step_id, action_type, attempt, status, config, response, error, \
         error_class, fingerprint, started_at, completed_at, duration_ms, exec_ms, execution_id, \
         created_at FROM execution_logs WHERE execution_id = ",
    );
    qb.push_bind(execution_id)
        .push(" AND account_id = ")
        .push_bind(account_id);
    if let Some(s) = &f.status {
        qb.push(" AND status = ").push_bind(s);
    }
    if let Some(a) = &f.action_type {
        qb.push(" AND action_type = ").push_bind(a);
    }
    if let Some(n) = f.step_from {
        qb.push(" AND step_index >= ").push_bind(n);
    }
    if let Some(n) = f.step_to {
        qb.push(" AND step_index <= ").push_bind(n);
    }
    if let Some(t) = f.since {
        qb.push(" AND started_at >= ").push_bind(t);
    }
    if let Some(t) = f.until {
        qb.push(" AND started_at < ").push_bind(t);
    }
    if let Some(a) = after {
        qb.push(" AND id > ").push_bind(a);
    }
    qb.push(" ORDER BY id LIMIT ").push_bind(limit);
    Ok(qb.build_query_as().fetch_all(pool).await?)
}
