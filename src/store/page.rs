//! Keyset pagination: lists are ordered newest first by `(created_at, id)`
//! and a page resumes strictly after the last row of the previous one, so
//! rows inserted while a client pages appear on no later page and no row is
//! seen twice or skipped.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Position after the last row of a page (newest-first lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct After {
    /// The row's `created_at`.
    pub created_at: DateTime<Utc>,
    /// The row's id, breaking ties.
    pub id: Uuid,
}

/// Counts stop here: "at least 10 000" is as useful as an exact figure
/// and stays fast on millions of rows.
pub const COUNT_CAP: i64 = 10_000;

/// A count spends at most this long counting; past it, the planner's
/// estimate is given instead (and says so), so a filter no index serves
/// well cannot make a page slow.
pub const COUNT_BUDGET: &str = "20ms";

/// A capped count: `exact` is false when there are at least [`COUNT_CAP`]
/// or when it is an estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// Rows counted, at most `COUNT_CAP`.
    pub value: i64,
    /// Whether `value` is the true total.
    pub exact: bool,
    /// Whether `value` is the planner's estimate (counting took longer
    /// than [`COUNT_BUDGET`]).
    pub estimated: bool,
}

/// Appends `AND (created_at, id) < after` (when paging on) and the
/// newest-first order with `LIMIT limit` to a query filtered by `WHERE`.
pub fn push_after_and_limit(
    qb: &mut sqlx::QueryBuilder<sqlx::Postgres>,
    after: Option<After>,
    limit: i64,
) {
    if let Some(a) = after {
        qb.push(" AND (created_at, id) < (")
            .push_bind(a.created_at)
            .push(", ")
            .push_bind(a.id)
            .push(")");
    }
    qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(limit);
}
