//! Failures seen together: groups of failed and retried attempts by
//! fingerprint, and the dead letters of executions that failed for good.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use super::Result;
use super::page::After;
use crate::domain::ErrorClass;

/// Like failures: one fingerprint's attempts in a time window.
#[derive(Debug, Clone, FromRow)]
pub struct ErrorGroup {
    /// What groups them.
    pub fingerprint: String,
    /// Their class.
    pub error_class: Option<ErrorClass>,
    /// The workflow.
    pub workflow_id: Option<Uuid>,
    /// Its version.
    pub workflow_version: Option<i32>,
    /// The step.
    pub step_id: String,
    /// Its action type.
    pub action_type: String,
    /// Attempts in the window.
    pub count: i64,
    /// The first in the window.
    pub first_seen: DateTime<Utc>,
    /// The last.
    pub last_seen: DateTime<Utc>,
    /// The last one's message.
    pub message: Option<String>,
    /// Sample executions (at most five, each once), the latest attempt's
    /// first.
    pub samples: Vec<Uuid>,
    /// Attempts before the end of each of [`HISTOGRAM_BUCKETS`] equal
    /// slices of the window (the last is `count`); see
    /// [`ErrorGroup::histogram`].
    pub cumulative: Vec<i64>,
}

impl ErrorGroup {
    /// Attempts in each of [`HISTOGRAM_BUCKETS`] equal slices of the
    /// window, oldest first.
    pub fn histogram(&self) -> Vec<i64> {
        let mut before = 0;
        self.cumulative
            .iter()
            .map(|&n| {
                let slice = n - before;
                before = n;
                slice
            })
            .collect()
    }
}

/// Filters of the failure groups.
#[derive(Debug, Clone)]
pub struct GroupFilter {
    /// Attempts at or after.
    pub since: DateTime<Utc>,
    /// Attempts before.
    pub until: DateTime<Utc>,
    /// Only this workflow.
    pub workflow_id: Option<Uuid>,
    /// Only this class.
    pub error_class: Option<ErrorClass>,
}

/// Position after the last group of a page: groups are ordered by when
/// they were last seen, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupAfter {
    /// The group's `last_seen`.
    pub last_seen: DateTime<Utc>,
    /// Its fingerprint, breaking ties.
    pub fingerprint: String,
}

/// Buckets of a failure group's histogram.
pub const HISTOGRAM_BUCKETS: usize = 12;

/// A page of the account's failure groups.
///
/// # Errors
/// Database errors.
pub async fn groups(
    pool: &PgPool,
    account_id: Uuid,
    f: &GroupFilter,
    after: Option<&GroupAfter>,
    limit: i64,
) -> Result<Vec<ErrorGroup>> {
    // The groups of the page first, by fingerprint alone (it names the
    // workflow, version, step and class): one pass over a covering index of
    // the window's failing rows, which also counts the rows before the end
    // of each slice of the window (twelve comparisons a row; grouping by
    // fingerprint and slice first lost the parallel scan and took twice as
    // long: README, Benchmarks). Then, through the fingerprint index, each
    // group's latest attempt (found by its time, no sort) describes it, and
    // a few of its attempts name sample executions. NB: no ORDER BY in
    // those lookups: over the monthly partitions the planner would read a
    // group's every row to sort them.
    let mut qb = sqlx::QueryBuilder::new(
        "WITH g AS (SELECT fingerprint, count(*) AS count, min(created_at) AS first_seen, \
           max(created_at) AS last_seen, ARRAY[",
    );
    let slice = (f.until - f.since) / HISTOGRAM_BUCKETS as i32;
    for i in 1..=HISTOGRAM_BUCKETS as i32 {
        let end = if i == HISTOGRAM_BUCKETS as i32 {
            f.until
        } else {
            f.since + slice * i
        };
        if i > 1 {
            qb.push(", ");
        }
        qb.push("count(*) FILTER (WHERE created_at < ")
            .push_bind(end)
            .push(")");
    }
    qb.push(
        "]::bigint[] AS cumulative \
         FROM execution_logs WHERE fingerprint IS NOT NULL AND account_id = ",
    );
    qb.push_bind(account_id)
        .push(" AND created_at >= ")
        .push_bind(f.since)
        .push(" AND created_at < ")
        .push_bind(f.until);
    if let Some(w) = f.workflow_id {
        qb.push(" AND workflow_id = ").push_bind(w);
    }
    if let Some(c) = f.error_class {
        qb.push(" AND error_class = ").push_bind(c.as_str());
    }
    qb.push(" GROUP BY fingerprint");
    if let Some(a) = after {
        qb.push(" HAVING (max(created_at), fingerprint) < (")
            .push_bind(a.last_seen)
            .push(", ")
            .push_bind(&a.fingerprint)
            .push(")");
    }
    qb.push(" ORDER BY last_seen DESC, fingerprint DESC LIMIT ")
        .push_bind(limit)
        .push(
            ") SELECT g.fingerprint, s.error_class, s.workflow_id, s.workflow_version, s.step_id, \
               s.action_type, g.count, g.first_seen, g.last_seen, s.message, \
               s.execution_id || x.samples AS samples, g.cumulative \
             FROM g, LATERAL ( \
               SELECT l.error_class, l.workflow_id, l.workflow_version, l.step_id, l.action_type, \
                 l.error AS message, l.execution_id FROM execution_logs l \
               WHERE l.fingerprint = g.fingerprint AND l.account_id = ",
        )
        .push_bind(account_id)
        .push(
            " AND l.created_at = g.last_seen LIMIT 1) s, LATERAL ( \
               SELECT coalesce(array_agg(execution_id), '{}') AS samples FROM ( \
                 SELECT l.execution_id FROM execution_logs l \
                 WHERE l.fingerprint = g.fingerprint AND l.account_id = ",
        )
        .push_bind(account_id)
        .push(" AND l.created_at >= ")
        .push_bind(f.since)
        .push(" AND l.created_at <= g.last_seen LIMIT ")
        .push_bind(SAMPLES)
        .push(") few) x ORDER BY g.last_seen DESC, g.fingerprint DESC");
    let mut groups: Vec<ErrorGroup> = qb.build_query_as().fetch_all(pool).await?;
    for g in &mut groups {
        // Retries of one execution share a fingerprint: name it once.
        let mut seen = std::collections::HashSet::new();
        g.samples.retain(|id| seen.insert(*id));
        g.samples.truncate(SAMPLES as usize);
    }
    Ok(groups)
}

/// Sample executions of a group: the latest attempt's, and those of a few
/// attempts in the window.
const SAMPLES: i64 = 5;

/// A dead letter: an execution that failed for good.
#[derive(Debug, Clone, FromRow)]
pub struct DeadLetter {
    /// Id.
    pub id: Uuid,
    /// The execution.
    pub execution_id: Uuid,
    /// Its workflow.
    pub workflow_id: Uuid,
    /// The version it ran.
    pub workflow_version: i32,
    /// The step that failed.
    pub step_index: i32,
    /// Its id.
    pub step_id: Option<String>,
    /// Its action type (`definition` or `contact` when no step could run).
    pub action_type: Option<String>,
    /// Attempts spent.
    pub attempts: i32,
    /// What went wrong.
    pub error: String,
    /// Its class.
    pub error_class: Option<ErrorClass>,
    /// What groups it with like failures.
    pub fingerprint: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When a retry or an operator settled it.
    pub resolved_at: Option<DateTime<Utc>>,
}

/// Filters of the dead letters.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    /// Only this workflow.
    pub workflow_id: Option<Uuid>,
    /// Only this class.
    pub error_class: Option<ErrorClass>,
    /// Only this fingerprint.
    pub fingerprint: Option<String>,
    /// Only resolved (`true`) or unresolved (`false`) ones.
    pub resolved: Option<bool>,
}

const DEAD_LETTER_COLUMNS: &str = "SELECT d.id, d.execution_id, e.workflow_id, e.workflow_version, d.step_index, \
       d.step_id, d.action_type, d.attempts, d.error, d.error_class, d.fingerprint, d.created_at, d.resolved_at \
     FROM dead_letters d JOIN workflow_executions e ON e.id = d.execution_id WHERE d.account_id = ";

/// A page of the account's dead letters, newest first.
///
/// # Errors
/// Database errors.
pub async fn dead_letters(
    pool: &PgPool,
    account_id: Uuid,
    f: &DeadLetterFilter,
    after: Option<After>,
    limit: i64,
) -> Result<Vec<DeadLetter>> {
    let mut qb = sqlx::QueryBuilder::new(DEAD_LETTER_COLUMNS);
    qb.push_bind(account_id);
    if let Some(w) = f.workflow_id {
        qb.push(" AND e.workflow_id = ").push_bind(w);
    }
    if let Some(c) = f.error_class {
        qb.push(" AND d.error_class = ").push_bind(c.as_str());
    }
    if let Some(fp) = &f.fingerprint {
        qb.push(" AND d.fingerprint = ").push_bind(fp);
    }
    match f.resolved {
        Some(true) => {
            qb.push(" AND d.resolved_at IS NOT NULL");
        }
        Some(false) => {
            qb.push(" AND d.resolved_at IS NULL");
        }
        None => {}
    }
    if let Some(a) = after {
        qb.push(" AND (d.created_at, d.id) < (")
            .push_bind(a.created_at)
            .push(", ")
            .push_bind(a.id)
            .push(")");
    }
    qb.push(" ORDER BY d.created_at DESC, d.id DESC LIMIT ")
        .push_bind(limit);
    Ok(qb.build_query_as().fetch_all(pool).await?)
}

/// Marks the unresolved dead letters of execution `id` resolved (it is
/// being retried), inside the retry's transaction.
///
/// # Errors
/// Database errors.
pub async fn resolve_dead_letters(conn: &mut PgConnection, id: Uuid) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE dead_letters SET resolved_at = now() WHERE execution_id = $1 AND resolved_at IS NULL",
    )
    .bind(id)
    .execute(conn)
    .await?
    .rows_affected())
}

/// The dead letter `id` of the account.
///
/// # Errors
/// Database errors.
pub async fn dead_letter(pool: &PgPool, account_id: Uuid, id: Uuid) -> Result<Option<DeadLetter>> {
    let mut qb = sqlx::QueryBuilder::new(DEAD_LETTER_COLUMNS);
    qb.push_bind(account_id).push(" AND d.id = ").push_bind(id);
    Ok(qb.build_query_as().fetch_optional(pool).await?)
}
