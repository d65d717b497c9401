//! Counts of executions that stay fast on millions of rows: a list's
//! count, capped and bounded in time (past the budget, the planner's
//! estimate); the open executions per status; the ends per hour.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::Result;
use super::execution::{Filter, push_filter};
use crate::domain::Status;

/// How many executions match, capped at [`super::page::COUNT_CAP`].
///
/// # Errors
/// Database errors.
pub async fn count(pool: &PgPool, account_id: Uuid, filter: &Filter) -> Result<super::page::Count> {
    count_within(pool, account_id, filter, super::page::COUNT_BUDGET).await
}

/// As [`count`], counting for at most `budget` (`"20ms"`) before falling
/// back to the planner's estimate.
///
/// # Errors
/// Database errors.
pub async fn count_within(
    pool: &PgPool,
    account_id: Uuid,
    filter: &Filter,
    budget: &str,
) -> Result<super::page::Count> {
    let cap = Some(super::page::COUNT_CAP);
    bounded_count(pool, budget, cap, |qb| push_filter(qb, account_id, filter)).await
}

/// The account's executions that ended in each hour from `since` on:
/// `(hour, ended, failed)`, oldest first, hours with none left out. Reads
/// the `executions_finished` index.
///
/// # Errors
/// Database errors.
pub async fn hourly_ends(
    pool: &PgPool,
    account_id: Uuid,
    since: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, i64, i64)>> {
    Ok(sqlx::query_as(
        "SELECT date_trunc('hour', completed_at), count(*), \
                count(*) FILTER (WHERE status = 'FAILED') \
         FROM workflow_executions WHERE account_id = $1 AND completed_at >= $2 AND completed_at <= now() \
         GROUP BY 1 ORDER BY 1",
    )
    .bind(account_id)
    .bind(since)
    .fetch_all(pool)
    .await?)
}

/// Executions in each status that is not final (`QUEUED`, `RUNNING`,
/// `WAITING`, `RETRYING`), across accounts, each counted for at most
/// `budget` before the planner's estimate stands in (each status has a
/// partial index, so a count reads only its rows).
///
/// # Errors
/// Database errors.
pub async fn count_open(pool: &PgPool, budget: &str) -> Result<Vec<(Status, super::page::Count)>> {
    let mut out = Vec::new();
    for status in [
        Status::Queued,
        Status::Running,
        Status::Waiting,
        Status::Retrying,
    ] {
        let n = bounded_count(pool, budget, None, |qb| {
            qb.push(" WHERE status = ").push_bind(status.as_str());
        })
        .await?;
        out.push((status, n));
    }
    Ok(out)
}

/// Counts the executions `filter` narrows (it pushes a WHERE clause), up to
/// `cap` when given, for at most `budget`; past it, the planner's estimate.
async fn bounded_count(
    pool: &PgPool,
    budget: &str,
    cap: Option<i64>,
    filter: impl Fn(&mut sqlx::QueryBuilder<sqlx::Postgres>),
) -> Result<super::page::Count> {
    use super::page::Count;
    let cap = cap.unwrap_or(i64::MAX - 1);
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('statement_timeout', $1, true)")
        .bind(budget)
        .execute(&mut *tx)
        .await?;
    let mut qb = sqlx::QueryBuilder::new("SELECT count(*) FROM (SELECT 1 FROM workflow_executions");
    filter(&mut qb);
    qb.push(" LIMIT ").push_bind(cap + 1).push(") capped");
    match qb.build_query_scalar::<i64>().fetch_one(&mut *tx).await {
        Ok(n) => {
            tx.commit().await?;
            Ok(Count {
                value: n.min(cap),
                exact: n <= cap,
                estimated: false,
            })
        }
        // 57014: cancelled by the statement timeout.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("57014") => {
            drop(tx);
            let mut qb =
                sqlx::QueryBuilder::new("EXPLAIN (FORMAT JSON) SELECT 1 FROM workflow_executions");
            filter(&mut qb);
            let plan: sqlx::types::Json<serde_json::Value> =
                qb.build_query_scalar().fetch_one(pool).await?;
            let rows = plan.0[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(0.0);
            Ok(Count {
                value: (rows.round() as i64).clamp(0, cap),
                exact: false,
                estimated: true,
            })
        }
        Err(e) => Err(e.into()),
    }
}
