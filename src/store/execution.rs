//! `workflow_executions`: one row per contact in a workflow, and the log,
//! dead-letter and lock statements that go with it.
//!
//! Every update is optimistic: [`super::checkpoint::commit`] writes the
//! row the caller holds `WHERE revision = <the revision it read>` and
//! bumps the revision, so a decision taken on a stale read (a cancel
//! racing a checkpoint, a second worker handed the same job) fails instead
//! of overwriting.

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use sqlx::types::Json as SqlJson;
use sqlx::{AssertSqlSafe, FromRow, PgConnection, PgPool};
use uuid::Uuid;

use super::Result;
use crate::domain::{ErrorClass, Priority, Status};

/// An execution row.
#[derive(Debug, Clone, FromRow)]
pub struct Execution {
    /// Id.
    pub id: Uuid,
    /// Owning account.
    pub account_id: Uuid,
    /// Workflow.
    pub workflow_id: Uuid,
    /// Pinned version of the workflow.
    pub workflow_version: i32,
    /// Contact.
    pub contact_id: Uuid,
    /// Status.
    pub status: Status,
    /// The queue its jobs go to. A stored value this engine cannot read
    /// fails the row's read loudly instead of becoming `normal`.
    pub priority: Priority,
    /// Index of the step to run next.
    pub current_step_index: i32,
    /// Id of that step.
    pub current_step_id: Option<String>,
    /// Attempt at the current step, from 1; goes on across manual retries.
    pub attempt: i32,
    /// The attempt the current round of the step started at: 1, or the
    /// attempt a manual retry started. The retry policy counts from here.
    pub first_attempt: i32,
    /// Outputs of finished steps by step id.
    pub context: SqlJson<Json>,
    /// Caller's metadata.
    pub metadata: SqlJson<Json>,
    /// Caller's idempotency key.
    pub idempotency_key: Option<String>,
    /// `api`, `arq`, `kubernetes`.
    pub source: String,
    /// Why it is not moving (`wait`, `arq_job`, `retry_backoff`, ...).
    pub waiting_reason: Option<String>,
    /// When a WAITING execution resumes.
    pub resume_at: Option<DateTime<Utc>>,
    /// When a RETRYING execution tries again.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Worker holding the lease.
    pub lease_owner: Option<String>,
    /// When that lease lapses.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Last error.
    pub error: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last written.
    pub updated_at: DateTime<Utc>,
    /// First claimed.
    pub started_at: Option<DateTime<Utc>>,
    /// Reached a final status.
    pub completed_at: Option<DateTime<Utc>>,
    /// In-flight state of the current step.
    pub step_state: Option<SqlJson<Json>>,
    /// Number of the current queue job (`run_execution:<id>:<wake_seq>`).
    pub wake_seq: i32,
    /// Optimistic concurrency counter.
    pub revision: i64,
    /// Class of the last failure.
    pub error_class: Option<ErrorClass>,
    /// Fingerprint of the last failure.
    pub fingerprint: Option<String>,
    /// When the current round of attempts of the step started.
    pub step_started_at: Option<DateTime<Utc>>,
}

impl Execution {
    /// When it will move next on its own: resume or retry time.
    pub fn next_action_at(&self) -> Option<DateTime<Utc>> {
        match self.status {
            Status::Waiting => self.resume_at,
            Status::Retrying => self.next_attempt_at,
            Status::Running => self.lease_expires_at,
            _ => None,
        }
    }
}

// === typed text columns ===
//
// `status` and `priority` are text in PostgreSQL (readable in psql, checked
// by constraints) and enums here. A value this engine cannot read (a newer
// engine's, or one written by hand past the checks) fails the read with an
// error naming it, never becomes a default.

macro_rules! text_column {
    ($ty:ty) => {
        impl sqlx::Type<sqlx::Postgres> for $ty {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <String as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <String as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $ty {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <String as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Ok(<$ty>::try_from(text)?)
            }
        }
    };
}

text_column!(Status);
text_column!(Priority);
text_column!(ErrorClass);

/// What a new execution needs.
#[derive(Debug, Clone)]
pub struct NewExecution {
    /// Owning account.
    pub account_id: Uuid,
    /// Workflow.
    pub workflow_id: Uuid,
    /// Version pinned.
    pub workflow_version: i32,
    /// Contact.
    pub contact_id: Uuid,
    /// Queue priority.
    pub priority: Priority,
    /// Caller's idempotency key.
    pub idempotency_key: Option<String>,
    /// Caller's metadata (an object).
    pub metadata: Json,
    /// Where it came from.
    pub source: String,
    /// Id of step 0.
    pub first_step_id: String,
}

/// Inserts an execution, or returns the one already started with the same
/// idempotency key in the account. The flag says whether it is new.
///
/// # Errors
/// Database errors.
pub async fn insert(pool: &PgPool, new: &NewExecution) -> Result<(Execution, bool)> {
    let inserted: Option<Execution> = sqlx::query_as(
        "INSERT INTO workflow_executions \
           (account_id, workflow_id, workflow_version, contact_id, priority, idempotency_key, metadata, source, current_step_id, attempt) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1) \
         ON CONFLICT (account_id, idempotency_key) DO NOTHING RETURNING *",
    )
    .bind(new.account_id)
    .bind(new.workflow_id)
    .bind(new.workflow_version)
    .bind(new.contact_id)
    .bind(new.priority.as_str())
    .bind(&new.idempotency_key)
    .bind(SqlJson(&new.metadata))
    .bind(&new.source)
    .bind(&new.first_step_id)
    .fetch_optional(pool)
    .await?;
    if let Some(e) = inserted {
        return Ok((e, true));
    }
    let existing: Execution = sqlx::query_as(
        "SELECT * FROM workflow_executions WHERE account_id = $1 AND idempotency_key = $2",
    )
    .bind(new.account_id)
    .bind(&new.idempotency_key)
    .fetch_one(pool)
    .await?;
    Ok((existing, false))
}

/// The execution `id`, whatever its account (workers act for every account).
///
/// # Errors
/// Database errors.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Execution>> {
    Ok(
        sqlx::query_as("SELECT * FROM workflow_executions WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

/// The execution `id` if it belongs to `account_id`.
///
/// # Errors
/// Database errors.
pub async fn get_in(pool: &PgPool, account_id: Uuid, id: Uuid) -> Result<Option<Execution>> {
    Ok(
        sqlx::query_as("SELECT * FROM workflow_executions WHERE id = $1 AND account_id = $2")
            .bind(id)
            .bind(account_id)
            .fetch_optional(pool)
            .await?,
    )
}

/// What a cancel writes, as `engine::plan` says a `Cancel` writes it
/// (`$4` the status, `$5` the waiting reason); one statement so that it
/// waits for a checkpoint in flight instead of racing it.
pub(super) const CANCEL_SET: &str = "status = $4, completed_at = now(), lease_owner = NULL, \
    lease_expires_at = NULL, waiting_reason = $5, resume_at = NULL, next_attempt_at = NULL, \
    error_class = 'cancelled', fingerprint = NULL, revision = revision + 1, updated_at = now()";

/// Moves the execution `id` of `account_id` to `to` (CANCELLED, waiting
/// reason `reason`) if its status is one of `from`, in one statement: it waits for a checkpoint in
/// flight and then judges the row as committed, so a busy execution cannot
/// outrun it. `None` when no row matched (missing, or not in `from`).
///
/// # Errors
/// Database errors.
pub async fn cancel(
    pool: &PgPool,
    account_id: Uuid,
    id: Uuid,
    from: &[Status],
    to: Status,
    reason: &str,
) -> Result<Option<Execution>> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE workflow_executions SET {CANCEL_SET} \
         WHERE id = $1 AND account_id = $2 AND status = ANY($3) RETURNING *"
    )))
    .bind(id)
    .bind(account_id)
    .bind(&from)
    .bind(to.as_str())
    .bind(reason)
    .fetch_optional(pool)
    .await?)
}

/// Cancels, as [`cancel`] does, every execution of the contact
/// `contact_id` whose status is one of `from`, on `conn` (the erasure's
/// transaction); returns how many.
///
/// # Errors
/// Database errors.
pub async fn cancel_of_contact(
    conn: &mut PgConnection,
    account_id: Uuid,
    contact_id: Uuid,
    from: &[Status],
    to: Status,
    reason: &str,
) -> Result<Vec<Ended>> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE workflow_executions SET {CANCEL_SET} \
         WHERE account_id = $1 AND contact_id = $2 AND status = ANY($3) \
         RETURNING workflow_id, created_at"
    )))
    .bind(account_id)
    .bind(contact_id)
    .bind(&from)
    .bind(to.as_str())
    .bind(reason)
    .fetch_all(conn)
    .await?)
}

/// An execution a statement over many ended (cancelled): what the
/// execution metrics count it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromRow)]
pub struct Ended {
    /// Its workflow.
    pub workflow_id: Uuid,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

// === listing ===

/// Filters of the execution list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Only this workflow.
    pub workflow_id: Option<Uuid>,
    /// Only this version of it.
    pub workflow_version: Option<i32>,
    /// Only this contact.
    pub contact_id: Option<Uuid>,
    /// Only these statuses (any when empty).
    pub statuses: Vec<Status>,
    /// Only with this class of last error.
    pub error_class: Option<ErrorClass>,
    /// Only with this fingerprint of last error.
    pub fingerprint: Option<String>,
    /// Only waiting for this reason.
    pub waiting_reason: Option<String>,
    /// Only at this step (id).
    pub current_step: Option<String>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
    /// Finished (failed, completed, cancelled) at or after.
    pub finished_after: Option<DateTime<Utc>>,
    /// Finished before.
    pub finished_before: Option<DateTime<Utc>>,
}

pub(super) fn push_filter(
    qb: &mut sqlx::QueryBuilder<sqlx::Postgres>,
    account_id: Uuid,
    f: &Filter,
) {
    qb.push(" WHERE account_id = ").push_bind(account_id);
    if let Some(w) = f.workflow_id {
        qb.push(" AND workflow_id = ").push_bind(w);
    }
    if let Some(v) = f.workflow_version {
        qb.push(" AND workflow_version = ").push_bind(v);
    }
    if let Some(c) = f.contact_id {
        qb.push(" AND contact_id = ").push_bind(c);
    }
    if !f.statuses.is_empty() {
        let statuses: Vec<&str> = f.statuses.iter().map(|s| s.as_str()).collect();
        qb.push(" AND status = ANY(").push_bind(statuses).push(")");
    }
    if let Some(c) = f.error_class {
        qb.push(" AND error_class = ").push_bind(c.as_str());
    }
    if let Some(fp) = &f.fingerprint {
        qb.push(" AND fingerprint = ").push_bind(fp.clone());
    }
    if let Some(r) = &f.waiting_reason {
        qb.push(" AND waiting_reason = ").push_bind(r.clone());
    }
    if let Some(step) = &f.current_step {
        qb.push(" AND current_step_id = ").push_bind(step.clone());
    }
    if let Some(t) = f.created_after {
        qb.push(" AND created_at >= ").push_bind(t);
    }
    if let Some(t) = f.created_before {
        qb.push(" AND created_at < ").push_bind(t);
    }
    if let Some(t) = f.finished_after {
        qb.push(" AND completed_at >= ").push_bind(t);
    }
    if let Some(t) = f.finished_before {
        qb.push(" AND completed_at < ").push_bind(t);
        // Nothing finishes before it was created: the bound lets the
        // newest-first index start near `t` instead of at the newest row
        // (an hour's slack for the clocks of the database and the engines).
        qb.push(" AND created_at < ")
            .push_bind(t + chrono::Duration::hours(1));
    }
}

/// A page of the account's executions, newest first.
///
/// # Errors
/// Database errors.
pub async fn list(
    pool: &PgPool,
    account_id: Uuid,
    filter: &Filter,
    after: Option<super::page::After>,
    limit: i64,
) -> Result<Vec<Execution>> {
    let mut qb = sqlx::QueryBuilder::new("SELECT * FROM workflow_executions");
    push_filter(&mut qb, account_id, filter);
    super::page::push_after_and_limit(&mut qb, after, limit);
    Ok(qb.build_query_as().fetch_all(pool).await?)
}

/// The execution started with `key` in the account, if any.
///
/// # Errors
/// Database errors.
pub async fn get_by_key(pool: &PgPool, account_id: Uuid, key: &str) -> Result<Option<Execution>> {
    Ok(sqlx::query_as(
        "SELECT * FROM workflow_executions WHERE account_id = $1 AND idempotency_key = $2",
    )
    .bind(account_id)
    .bind(key)
    .fetch_optional(pool)
    .await?)
}
