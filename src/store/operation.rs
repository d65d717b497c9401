//! `operations`: bulk retries, cancels and enrollments, and their
//! progress. A worker holds an operation by a lease, and every batch
//! commits its targets' changes with [`advance`] in one transaction, after
//! [`lock`] proved the lease still its own: two workers never both work on
//! one operation, and a killed one's successor starts at `position`.

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use sqlx::types::Json as SqlJson;
use sqlx::{AssertSqlSafe, FromRow, PgConnection, PgPool};
use uuid::Uuid;

use super::Result;

/// How many errors an operation keeps.
pub const MAX_ERRORS: usize = 100;

/// An operation row.
#[derive(Debug, Clone, FromRow)]
pub struct Operation {
    /// Id.
    pub id: Uuid,
    /// Owning account.
    pub account_id: Uuid,
    /// `retry`, `cancel` or `enroll`.
    pub kind: String,
    /// `pending`, `running`, `completed`, `cancelled`, `failed`.
    pub state: String,
    /// What was asked, as asked.
    pub request: SqlJson<Json>,
    /// How many executions or contacts it names (0 for a contact filter);
    /// read them a batch at a time with [`targets`].
    pub target_count: i32,
    /// Workflow enrolled into.
    pub workflow_id: Option<Uuid>,
    /// Its version, pinned when the operation was created.
    pub workflow_version: Option<i32>,
    /// Targets in all.
    pub total: i32,
    /// Targets worked on so far (index into `targets`, or contacts walked).
    pub position: i32,
    /// Last contact walked by an enrollment by filter.
    pub cursor: Option<Uuid>,
    /// Targets changed.
    pub done: i32,
    /// Targets left as they were (not in a state the operation applies to,
    /// already enrolled, opted out).
    pub skipped: i32,
    /// Targets that could not be worked on.
    pub failed: i32,
    /// The first errors, `[{"target", "error"}]`.
    pub errors: SqlJson<Json>,
    /// Why the operation failed as a whole.
    pub error: Option<String>,
    /// Number of its current job.
    pub job_seq: i32,
    /// Worker holding it.
    pub lease_owner: Option<String>,
    /// Until when.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// API key that created it (none from the CLI).
    pub created_by: Option<Uuid>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last written.
    pub updated_at: DateTime<Utc>,
    /// First batch taken.
    pub started_at: Option<DateTime<Utc>>,
    /// Reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
}

impl Operation {
    /// Whether it reached a final state.
    pub fn is_finished(&self) -> bool {
        self.finished_at.is_some()
    }
}

/// Every column but the targets (up to 100,000 ids: read a batch at a
/// time with [`targets`], never with the row).
const COLUMNS: &str = "id, account_id, kind, state, request, workflow_id, workflow_version, total, \
    position, cursor, done, skipped, failed, errors, error, job_seq, lease_owner, lease_expires_at, \
    created_by, created_at, updated_at, started_at, finished_at, \
    coalesce(cardinality(targets), 0) AS target_count";

/// A new operation.
#[derive(Debug, Clone)]
pub struct NewOperation<'a> {
    /// Owning account.
    pub account_id: Uuid,
    /// `retry`, `cancel`, `enroll`.
    pub kind: &'a str,
    /// What was asked.
    pub request: &'a Json,
    /// Its targets, fixed now.
    pub targets: &'a [Uuid],
    /// Workflow and version enrolled into.
    pub workflow: Option<(Uuid, i32)>,
    /// Targets in all.
    pub total: i32,
    /// The API key creating it.
    pub created_by: Option<Uuid>,
}

/// Inserts an operation, pending.
///
/// # Errors
/// Database errors.
pub async fn insert(pool: &PgPool, new: &NewOperation<'_>) -> Result<Operation> {
    Ok(sqlx::query_as(
        AssertSqlSafe(format!("INSERT INTO operations (account_id, kind, request, targets, workflow_id, workflow_version, total, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}")),
    )
    .bind(new.account_id)
    .bind(new.kind)
    .bind(SqlJson(new.request))
    .bind(new.targets)
    .bind(new.workflow.map(|w| w.0))
    .bind(new.workflow.map(|w| w.1))
    .bind(new.total)
    .bind(new.created_by)
    .fetch_one(pool)
    .await?)
}

/// The operation `id` of `account_id`.
///
/// # Errors
/// Database errors.
pub async fn get(pool: &PgPool, account_id: Uuid, id: Uuid) -> Result<Option<Operation>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM operations WHERE id = $1 AND account_id = $2"
    )))
    .bind(id)
    .bind(account_id)
    .fetch_optional(pool)
    .await?)
}

/// A page of the account's operations, newest first.
///
/// # Errors
/// Database errors.
pub async fn list(
    pool: &PgPool,
    account_id: Uuid,
    after: Option<super::page::After>,
    limit: i64,
) -> Result<Vec<Operation>> {
    let mut qb = sqlx::QueryBuilder::new("SELECT ");
    qb.push(COLUMNS)
        .push(" FROM operations WHERE account_id = ")
        .push_bind(account_id);
    super::page::push_after_and_limit(&mut qb, after, limit);
    Ok(qb.build_query_as().fetch_all(pool).await?)
}

/// Up to `n` of the operation's targets after the first `from`.
///
/// # Errors
/// Database errors.
pub async fn targets(conn: &mut PgConnection, id: Uuid, from: i32, n: i32) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(targets[$2 + 1 : $2 + $3], '{}') FROM operations WHERE id = $1",
    )
    .bind(id)
    .bind(from)
    .bind(n)
    .fetch_one(conn)
    .await?)
}

/// Takes the lease of an unfinished operation whose lease is free, lapsed
/// or `owner`'s own, until `until`; `None` if another worker holds it or it
/// is finished.
///
/// # Errors
/// Database errors.
pub async fn claim(
    pool: &PgPool,
    id: Uuid,
    owner: &str,
    until: DateTime<Utc>,
) -> Result<Option<Operation>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE operations SET state = 'running', started_at = coalesce(started_at, now()), \
           lease_owner = $2, lease_expires_at = $3, updated_at = now() \
         WHERE id = $1 AND state IN ('pending', 'running') \
           AND (lease_owner IS NULL OR lease_expires_at < now() OR lease_owner = $2) \
         RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(owner)
    .bind(until)
    .fetch_optional(pool)
    .await?)
}

/// Locks the operation for a batch if `owner` still holds it and it still
/// runs (a cancel waits for the batch, then wins); `None` otherwise.
///
/// # Errors
/// Database errors.
pub async fn lock(conn: &mut PgConnection, id: Uuid, owner: &str) -> Result<Option<Operation>> {
    Ok(sqlx::query_as(
        AssertSqlSafe(format!("SELECT {COLUMNS} FROM operations WHERE id = $1 AND state = 'running' AND lease_owner = $2 FOR UPDATE")),
    )
    .bind(id)
    .bind(owner)
    .fetch_optional(conn)
    .await?)
}

/// What one batch did.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Targets taken by the batch.
    pub taken: i32,
    /// Last contact walked (enrollment by filter).
    pub cursor: Option<Uuid>,
    /// Targets changed.
    pub done: i32,
    /// Targets left alone.
    pub skipped: i32,
    /// `(target, error)` of each target that failed.
    pub errors: Vec<(Uuid, String)>,
}

/// Records a batch, on the batch's transaction, and renews the lease until
/// `until`; `finished` completes the operation.
///
/// # Errors
/// Database errors.
pub async fn advance(
    conn: &mut PgConnection,
    id: Uuid,
    p: &Progress,
    until: DateTime<Utc>,
    finished: bool,
) -> Result<Operation> {
    let errors: Vec<Json> = p
        .errors
        .iter()
        .take(MAX_ERRORS)
        .map(|(target, error)| serde_json::json!({"target": target, "error": error}))
        .collect();
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE operations SET position = position + $2, cursor = coalesce($3, cursor), \
           done = done + $4, skipped = skipped + $5, failed = failed + $6, \
           errors = (SELECT coalesce(jsonb_agg(e), '[]') FROM \
                     (SELECT e FROM jsonb_array_elements(errors || $7) e LIMIT $10) kept), \
           lease_expires_at = CASE WHEN $8 THEN NULL ELSE $9 END, \
           lease_owner = CASE WHEN $8 THEN NULL ELSE lease_owner END, \
           state = CASE WHEN $8 THEN 'completed' ELSE state END, \
           finished_at = CASE WHEN $8 THEN now() END, updated_at = now() \
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(p.taken)
    .bind(p.cursor)
    .bind(p.done)
    .bind(p.skipped)
    .bind(i32::try_from(p.errors.len()).unwrap_or(i32::MAX))
    .bind(SqlJson(&errors))
    .bind(finished)
    .bind(until)
    .bind(i64::try_from(MAX_ERRORS).unwrap_or(i64::MAX))
    .fetch_one(conn)
    .await?)
}

/// Ends a running operation held by `owner` as failed with `error`.
///
/// # Errors
/// Database errors.
pub async fn fail(pool: &PgPool, id: Uuid, owner: &str, error: &str) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE operations SET state = 'failed', error = $3, finished_at = now(), updated_at = now(), \
           lease_owner = NULL, lease_expires_at = NULL \
         WHERE id = $1 AND state = 'running' AND lease_owner = $2",
    )
    .bind(id)
    .bind(owner)
    .bind(error)
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

/// Gives the lease of `owner` back (its run's time is up; the next job
/// goes on) and takes the next job number; `None` if the lease was lost.
///
/// # Errors
/// Database errors.
pub async fn hand_over(pool: &PgPool, id: Uuid, owner: &str) -> Result<Option<Operation>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE operations SET lease_owner = NULL, lease_expires_at = NULL, job_seq = job_seq + 1, \
           updated_at = now() \
         WHERE id = $1 AND state = 'running' AND lease_owner = $2 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(owner)
    .fetch_optional(pool)
    .await?)
}

/// Cancels an unfinished operation of `account_id`: it stops between
/// batches (a batch in flight holds the row; this waits for it). `None`
/// when there is no such operation or it is finished.
///
/// # Errors
/// Database errors.
pub async fn cancel(pool: &PgPool, account_id: Uuid, id: Uuid) -> Result<Option<Operation>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE operations SET state = 'cancelled', finished_at = now(), updated_at = now(), \
           lease_owner = NULL, lease_expires_at = NULL \
         WHERE id = $1 AND account_id = $2 AND state IN ('pending', 'running') RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(account_id)
    .fetch_optional(pool)
    .await?)
}

/// Unfinished operations whose job may be lost: pending or handed over
/// and untouched since `stale_before`, or held by a lease that lapsed.
/// Each moves to its next job number (`None` for one that moved meanwhile).
///
/// # Errors
/// Database errors.
pub async fn take_stale(
    pool: &PgPool,
    stale_before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Operation>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE operations SET job_seq = job_seq + 1, lease_owner = NULL, lease_expires_at = NULL, \
           updated_at = now() \
         WHERE id IN (SELECT id FROM operations WHERE state IN ('pending', 'running') \
             AND ((lease_owner IS NULL AND updated_at < $1) OR lease_expires_at < now()) \
             ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
         RETURNING {COLUMNS}"
    )))
    .bind(stale_before)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
