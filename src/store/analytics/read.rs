//! Reading the rollups of one workflow version over a range of days.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::QueryAs;
use sqlx::{FromRow, PgPool, Postgres};
use uuid::Uuid;

use super::BOUNDS_MS;
use crate::store::Result;

/// One step's attempts in the range, and their time.
#[derive(Debug, Clone, Default, FromRow)]
pub struct StepCounts {
    /// The step.
    pub step_id: String,
    /// Attempts that succeeded.
    pub succeeded: i64,
    /// Attempts that failed for good.
    pub failed: i64,
    /// Attempts retried.
    pub retried: i64,
    /// Executions cancelled at the step.
    pub cancelled: i64,
    /// Milliseconds its attempts ran, summed.
    pub exec_ms: i64,
    /// Milliseconds its attempts were parked, summed.
    pub parked_ms: i64,
    /// Condition steps: attempts whose condition held.
    pub branch_true: i64,
    /// Wait steps: waits that ended outside [`super::SENDING_HOURS`] of the
    /// contact's time.
    pub off_hours: i64,
}

impl StepCounts {
    /// Attempts that ended the step (succeeded or failed).
    pub fn ended(&self) -> i64 {
        self.succeeded + self.failed
    }

    /// Mean milliseconds from the step's start to its end (run and parked,
    /// retries included), if any attempt ended it.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.ended() > 0).then(|| (self.exec_ms + self.parked_ms) as f64 / self.ended() as f64)
    }
}

/// A histogram of times over [`BOUNDS_MS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Times(pub Vec<i64>);

impl Default for Times {
    fn default() -> Self {
        Times(vec![0; BOUNDS_MS.len() + 1])
    }
}

impl Times {
    /// Observations.
    pub fn count(&self) -> i64 {
        self.0.iter().sum()
    }

    /// The `q` quantile (0..=1) in milliseconds, interpolated within its
    /// bucket (as Prometheus' `histogram_quantile`); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0.0;
        for (i, &n) in self.0.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let lower = if i == 0 { 0 } else { BOUNDS_MS[i - 1] } as f64;
            let upper = BOUNDS_MS
                .get(i)
                .copied()
                .unwrap_or_else(|| BOUNDS_MS[i - 1] * 2) as f64;
            if seen + n as f64 >= rank {
                return Some(lower + (upper - lower) * ((rank - seen) / n as f64));
            }
            seen += n as f64;
        }
        Some(*BOUNDS_MS.last().unwrap_or(&0) as f64)
    }
}

/// One step's histograms.
#[derive(Debug, Clone, Default)]
pub struct StepTimes {
    /// Time run.
    pub exec: Times,
    /// Time parked.
    pub parked: Times,
}

/// Failed and retried attempts of one class and fingerprint at a step.
#[derive(Debug, Clone, FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorCount {
    /// The step.
    pub step_id: String,
    /// The class.
    pub error_class: String,
    /// The fingerprint.
    pub fingerprint: String,
    /// Attempts.
    pub count: i64,
    /// One message.
    pub sample: Option<String>,
}

/// One day's executions.
#[derive(Debug, Clone, FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct Trend {
    /// The UTC day.
    pub day: NaiveDate,
    /// Started.
    pub started: i64,
    /// Completed.
    pub completed: i64,
    /// Failed.
    pub failed: i64,
    /// Cancelled.
    pub cancelled: i64,
}

/// Executions not ended, at one step now.
#[derive(Debug, Clone, FromRow)]
pub struct OpenAt {
    /// The step (none before the first run).
    pub step_id: Option<String>,
    /// How many.
    pub count: i64,
}

/// Everything the rollups say of one workflow version over a range.
#[derive(Debug, Clone, Default)]
pub struct Analytics {
    /// Per step, in no order.
    pub steps: Vec<StepCounts>,
    /// Per step id.
    pub times: BTreeMap<String, StepTimes>,
    /// Most frequent first, at most 50.
    pub errors: Vec<ErrorCount>,
    /// Per day with anything, in order.
    pub trends: Vec<Trend>,
    /// Executions open now, per step (not limited to the range).
    pub open: Vec<OpenAt>,
    /// Log rows before this time are counted.
    pub upto: Option<chrono::DateTime<chrono::Utc>>,
}

/// One workflow version over a range of UTC days.
#[derive(Debug, Clone, Copy)]
struct Range {
    account_id: Uuid,
    workflow_id: Uuid,
    version: i32,
    days: (NaiveDate, NaiveDate),
}

impl Range {
    /// `SELECT <select> FROM <table>` of this range's rows, then `rest`,
    /// bound.
    fn query<'q, O>(
        self,
        select: &str,
        table: &str,
        rest: &str,
    ) -> QueryAs<'q, Postgres, O, PgArguments>
    where
        O: for<'r> FromRow<'r, PgRow>,
    {
        // The parts are this module's constants, not input.
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {select} FROM {table} WHERE account_id = $1 AND workflow_id = $2 \
             AND workflow_version = $3 AND day BETWEEN $4 AND $5 {rest}"
        )))
        .bind(self.account_id)
        .bind(self.workflow_id)
        .bind(self.version)
        .bind(self.days.0)
        .bind(self.days.1)
    }

    /// Each step's attempts.
    fn steps<'q>(self) -> QueryAs<'q, Postgres, StepCounts, PgArguments> {
        self.query(
            "step_id, sum(succeeded)::int8 AS succeeded, sum(failed)::int8 AS failed, \
             sum(retried)::int8 AS retried, sum(cancelled)::int8 AS cancelled, \
             sum(exec_ms)::int8 AS exec_ms, sum(parked_ms)::int8 AS parked_ms, \
             sum(branch_true)::int8 AS branch_true, sum(off_hours)::int8 AS off_hours",
            "analytics_steps",
            "GROUP BY step_id",
        )
    }
}

/// Each step's attempts of `workflow_id` `version` over the UTC days
/// `days` (both included).
///
/// # Errors
/// Database errors.
pub async fn step_counts(
    pool: &PgPool,
    account_id: Uuid,
    workflow_id: Uuid,
    version: i32,
    days: (NaiveDate, NaiveDate),
) -> Result<Vec<StepCounts>> {
    let range = Range {
        account_id,
        workflow_id,
        version,
        days,
    };
    Ok(range.steps().fetch_all(pool).await?)
}

/// The rollups of `workflow_id` `version` for the UTC days `days` (both
/// included), and the executions of that version open now.
///
/// # Errors
/// Database errors.
pub async fn analytics(
    pool: &PgPool,
    account_id: Uuid,
    workflow_id: Uuid,
    version: i32,
    days: (NaiveDate, NaiveDate),
) -> Result<Analytics> {
    let range = Range {
        account_id,
        workflow_id,
        version,
        days,
    };
    let steps = range.steps().fetch_all(pool);
    let times = range
        .query::<(String, String, i16, i64)>(
            "step_id, kind, bucket, sum(count)::int8",
            "analytics_step_times",
            "GROUP BY step_id, kind, bucket",
        )
        .fetch_all(pool);
    let errors = range
        .query(
            "step_id, error_class, fingerprint, sum(count)::int8 AS count, max(sample) AS sample",
            "analytics_errors",
            "GROUP BY step_id, error_class, fingerprint ORDER BY count DESC, fingerprint LIMIT 50",
        )
        .fetch_all(pool);
    let trends = range
        .query(
            "day, sum(started)::int8 AS started, sum(completed)::int8 AS completed, \
             sum(failed)::int8 AS failed, sum(cancelled)::int8 AS cancelled",
            "analytics_executions",
            "GROUP BY day ORDER BY day",
        )
        .fetch_all(pool);
    let open = sqlx::query_as(
        "SELECT current_step_id AS step_id, count(*) AS count FROM workflow_executions \
         WHERE account_id = $1 AND workflow_id = $2 AND workflow_version = $3 \
           AND status IN ('QUEUED', 'RUNNING', 'WAITING', 'RETRYING') \
         GROUP BY current_step_id",
    )
    .bind(account_id)
    .bind(workflow_id)
    .bind(version)
    .fetch_all(pool);
    let upto = sqlx::query_scalar("SELECT upto FROM analytics_progress WHERE name = $1")
        .bind(super::LOGS)
        .fetch_optional(pool);
    let sql = |e: sqlx::Error| crate::store::Error::from(e);
    let (steps, times, errors, trends, open, upto) = tokio::try_join!(
        async { steps.await.map_err(sql) },
        async { times.await.map_err(sql) },
        async { errors.await.map_err(sql) },
        async { trends.await.map_err(sql) },
        async { open.await.map_err(sql) },
        async { upto.await.map_err(sql) },
    )?;
    let mut by_step: BTreeMap<String, StepTimes> = BTreeMap::new();
    for (step, kind, bucket, count) in times {
        let t = by_step.entry(step).or_default();
        let h = if kind == "exec" {
            &mut t.exec
        } else {
            &mut t.parked
        };
        if let Some(slot) = usize::try_from(bucket).ok().and_then(|b| h.0.get_mut(b)) {
            *slot += count;
        }
    }
    Ok(Analytics {
        steps,
        times: by_step,
        errors,
        trends,
        open,
        upto,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let mut t = Times::default();
        assert_eq!(t.quantile(0.5), None);
        // Ten observations in [100, 200) ms.
        t.0[7] = 10;
        assert_eq!(t.quantile(0.5), Some(150.0));
        assert_eq!(t.quantile(1.0), Some(200.0));
        // Zero-millisecond times are bucket 0, [0, 1).
        let mut zeros = Times::default();
        zeros.0[0] = 4;
        assert_eq!(zeros.quantile(0.5), Some(0.5));
        // Ten more in [1, 2) s: the median is the top of the first bucket.
        t.0[10] = 10;
        assert_eq!(t.quantile(0.5), Some(200.0));
        assert_eq!(t.quantile(0.95), Some(1_900.0));
    }

    #[test]
    fn a_step_s_mean_counts_retries_and_parked_time() {
        let s = StepCounts {
            succeeded: 3,
            failed: 1,
            exec_ms: 400,
            parked_ms: 3_600,
            ..StepCounts::default()
        };
        assert_eq!(s.mean_ms(), Some(1_000.0));
        assert_eq!(StepCounts::default().mean_ms(), None);
    }
}
