//! The statements of bulk operations: which executions or contacts a
//! filter names, and the set-based writes of one batch (a cancel of many
//! executions, an enrollment of many contacts), each on the batch's
//! transaction.

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use sqlx::types::Json as SqlJson;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use uuid::Uuid;

use super::Result;
use super::execution::{Ended, Execution, Filter};
use crate::domain::{Priority, Status};

/// The ids of the account's executions `filter` names, by id, at most
/// `cap + 1` of them (one more tells the caller there are too many).
///
/// # Errors
/// Database errors.
pub async fn execution_ids(
    pool: &PgPool,
    account_id: Uuid,
    filter: &Filter,
    cap: i64,
) -> Result<Vec<Uuid>> {
    let mut qb = sqlx::QueryBuilder::new("SELECT id FROM workflow_executions");
    super::execution::push_filter(&mut qb, account_id, filter);
    qb.push(" ORDER BY id LIMIT ").push_bind(cap + 1);
    Ok(qb.build_query_scalar().fetch_all(pool).await?)
}

/// The executions `ids` of `account_id`, locked for the batch's
/// transaction (in id order, so that two batches never deadlock).
///
/// # Errors
/// Database errors.
pub async fn lock_executions(
    conn: &mut PgConnection,
    account_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<Execution>> {
    Ok(sqlx::query_as(
        "SELECT * FROM workflow_executions WHERE account_id = $1 AND id = ANY($2) ORDER BY id FOR UPDATE",
    )
    .bind(account_id)
    .bind(ids)
    .fetch_all(conn)
    .await?)
}

/// Cancels, as [`super::execution::cancel`] does, those of `ids` whose
/// status is one of `from`; returns those it cancelled.
///
/// # Errors
/// Database errors.
pub async fn cancel_executions(
    conn: &mut PgConnection,
    account_id: Uuid,
    ids: &[Uuid],
    from: &[Status],
    to: Status,
    reason: &str,
) -> Result<Vec<Ended>> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE workflow_executions SET {} \
         WHERE account_id = $1 AND id = ANY($2) AND status = ANY($3) \
         RETURNING workflow_id, created_at",
        super::execution::CANCEL_SET
    )))
    .bind(account_id)
    .bind(ids)
    .bind(&from)
    .bind(to.as_str())
    .bind(reason)
    .fetch_all(conn)
    .await?)
}

/// Contacts an enrollment by filter takes: every tag in `tags`, and
/// `attributes` contained in the contact's.
#[derive(Debug, Clone, Default)]
pub struct ContactFilter {
    /// Tags the contact must all carry.
    pub tags: Vec<String>,
    /// An object the contact's attributes must contain.
    pub attributes: Option<Json>,
}

fn push_contact_filter(
    qb: &mut sqlx::QueryBuilder<sqlx::Postgres>,
    account_id: Uuid,
    f: &ContactFilter,
    created_before: DateTime<Utc>,
) {
    qb.push(" WHERE account_id = ")
        .push_bind(account_id)
        .push(" AND created_at <= ")
        .push_bind(created_before);
    if !f.tags.is_empty() {
        qb.push(" AND tags @> ").push_bind(f.tags.clone());
    }
    if let Some(a) = &f.attributes {
        qb.push(" AND attributes @> ").push_bind(SqlJson(a.clone()));
    }
}

/// How many contacts `f` names among those created by `created_before`.
///
/// # Errors
/// Database errors.
pub async fn count_contacts(
    pool: &PgPool,
    account_id: Uuid,
    f: &ContactFilter,
    created_before: DateTime<Utc>,
) -> Result<i64> {
    let mut qb = sqlx::QueryBuilder::new("SELECT count(*) FROM contacts");
    push_contact_filter(&mut qb, account_id, f, created_before);
    Ok(qb.build_query_scalar().fetch_one(pool).await?)
}

/// The next `limit` contacts `f` names after `after`, by id.
///
/// # Errors
/// Database errors.
pub async fn contact_ids(
    conn: &mut PgConnection,
    account_id: Uuid,
    f: &ContactFilter,
    created_before: DateTime<Utc>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Uuid>> {
    let mut qb = sqlx::QueryBuilder::new("SELECT id FROM contacts");
    push_contact_filter(&mut qb, account_id, f, created_before);
    if let Some(a) = after {
        qb.push(" AND id > ").push_bind(a);
    }
    qb.push(" ORDER BY id LIMIT ").push_bind(limit);
    Ok(qb.build_query_scalar().fetch_all(conn).await?)
}

/// When a contact already in the workflow is enrolled again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reenroll {
    /// Never: one execution per contact and workflow, ever.
    Never,
    /// Once its earlier executions have all finished.
    AfterFinished,
    /// Always.
    Always,
}

impl std::str::FromStr for Reenroll {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "never" => Ok(Reenroll::Never),
            "after_finished" => Ok(Reenroll::AfterFinished),
            "always" => Ok(Reenroll::Always),
            _ => Err(format!(
                "`{s}` is not a policy: never, after_finished or always"
            )),
        }
    }
}

impl Reenroll {
    /// Spelling in requests and in SQL.
    pub fn as_str(self) -> &'static str {
        match self {
            Reenroll::Never => "never",
            Reenroll::AfterFinished => "after_finished",
            Reenroll::Always => "always",
        }
    }
}

/// One batch of an enrollment.
#[derive(Debug, Clone)]
pub struct Enroll<'a> {
    /// Account.
    pub account_id: Uuid,
    /// The operation, whose id keys each execution (`enroll:<op>:<contact>`).
    pub operation_id: Uuid,
    /// Workflow and pinned version.
    pub workflow_id: Uuid,
    /// Pinned version.
    pub workflow_version: i32,
    /// Id of its first step.
    pub first_step_id: &'a str,
    /// Queue priority of the executions.
    pub priority: Priority,
    /// Metadata given to each.
    pub metadata: &'a Json,
    /// Contacts of the batch, in order.
    pub contacts: &'a [Uuid],
    /// Re-enrollment policy.
    pub policy: Reenroll,
    /// Time between two starts in the account, microseconds.
    pub spacing_us: i64,
}

/// Enrolls a batch in one statement: skips contacts missing, opted out, or
/// in the workflow already as `policy` says; inserts the rest as WAITING
/// (reason `enrollment`) at the account's next free start times, which it
/// reserves; returns how many it inserted. Serialised per workflow, so two
/// enrollments cannot both find a contact not yet enrolled.
///
/// # Errors
/// Database errors.
pub async fn enroll(conn: &mut PgConnection, b: &Enroll<'_>) -> Result<u64> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 7))")
        .bind(b.workflow_id)
        .execute(&mut *conn)
        .await?;
    let inserted: i64 = sqlx::query_scalar(
        "WITH batch AS ( \
           SELECT c.id AS contact_id, t.ord FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, ord) \
           JOIN contacts c ON c.account_id = $2 AND c.id = t.id AND NOT c.opted_out), \
         eligible AS ( \
           SELECT contact_id, row_number() OVER (ORDER BY ord) - 1 AS n FROM batch b \
           WHERE $3 = 'always' OR NOT EXISTS ( \
             SELECT 1 FROM workflow_executions e \
             WHERE e.account_id = $2 AND e.contact_id = b.contact_id AND e.workflow_id = $4 \
               AND ($3 = 'never' OR e.status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED')))), \
         pace AS ( \
           UPDATE accounts SET enroll_next_at = greatest(coalesce(enroll_next_at, now()), now()) \
               + make_interval(secs => (SELECT count(*) FROM eligible) * $5 / 1e6) \
           WHERE id = $2 \
           RETURNING enroll_next_at - make_interval(secs => (SELECT count(*) FROM eligible) * $5 / 1e6) AS first), \
         ins AS ( \
           INSERT INTO workflow_executions (account_id, workflow_id, workflow_version, contact_id, priority, \
               idempotency_key, metadata, source, current_step_id, attempt, status, waiting_reason, resume_at) \
           SELECT $2, $4, $6, contact_id, $7, 'enroll:' || $8::text || ':' || contact_id::text, $9, \
               'enrollment', $10, 1, 'WAITING', 'enrollment', \
               (SELECT first FROM pace) + make_interval(secs => n * $5 / 1e6) \
           FROM eligible ON CONFLICT (account_id, idempotency_key) DO NOTHING RETURNING 1) \
         SELECT count(*) FROM ins",
    )
    .bind(b.contacts)
    .bind(b.account_id)
    .bind(b.policy.as_str())
    .bind(b.workflow_id)
    .bind(b.spacing_us)
    .bind(b.workflow_version)
    .bind(b.priority.as_str())
    .bind(b.operation_id)
    .bind(SqlJson(b.metadata))
    .bind(b.first_step_id)
    .fetch_one(conn)
    .await?;
    Ok(u64::try_from(inserted).unwrap_or_default())
}
