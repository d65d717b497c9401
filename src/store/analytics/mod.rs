//! Analytics rollups (migration `analytics`): per workflow version, step
//! and UTC day, the attempts and how they ended, the time they ran and were
//! parked (sums and histograms), errors by class and fingerprint, and the
//! executions started and ended. The analytics API reads these, a few
//! thousand rows for a month, instead of millions of executions and log
//! rows.
//!
//! [`fold`] keeps them up to date, run by the maintenance leader:
//!
//! - Log rows are read by `created_at` from where the last fold stopped up
//!   to a *horizon* no uncommitted row can fall behind: `created_at`
//!   defaults to `now()`, its transaction's start, so every row older than
//!   the oldest transaction still open is committed. Progress and the
//!   rollup change commit together: each row is counted exactly once.
//! - Executions starting and ending are events that triggers append;
//!   the fold deletes what it counts in the same statement.

mod read;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use sqlx::PgPool;

pub use read::{
    Analytics, ErrorCount, OpenAt, StepCounts, StepTimes, Times, Trend, analytics, step_counts,
};

use super::Result;

/// Upper bounds (ms) of the histogram buckets; bucket `i` holds times in
/// `[BOUNDS_MS[i-1], BOUNDS_MS[i])`, bucket 0 those under 1 ms, the last
/// those of 30 days or more. PostgreSQL's `width_bucket` numbers them.
pub const BOUNDS_MS: [i64; 29] = [
    1,
    2,
    5,
    10,
    20,
    50,
    100,
    200,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    30_000,
    60_000,
    120_000,
    300_000,
    600_000,
    1_800_000,
    3_600_000,
    7_200_000,
    21_600_000,
    43_200_000,
    86_400_000,
    172_800_000,
    345_600_000,
    604_800_000,
    1_209_600_000,
    2_592_000_000,
];

/// A contact's local hours a wait may end in without being "off-hours":
/// `[8, 21)`. Waits ending outside them are counted for suggestions.
pub const SENDING_HOURS: (u32, u32) = (8, 21);

/// The progress row of the log fold.
const LOGS: &str = "execution_logs";
/// The first span of `created_at` a fold statement reads; it grows while
/// spans hold few rows (a quiet night, a backfill of sparse months) and
/// shrinks when they hold many, between [`MIN_SPAN`] and [`MAX_SPAN`].
const SPAN: Duration = Duration::hours(1);
const MIN_SPAN: Duration = Duration::minutes(1);
const MAX_SPAN: Duration = Duration::days(7);
/// Rows a fold statement aims at.
const ROWS: (i64, i64) = (20_000, 200_000);
/// Advisory lock key of the log fold (arbitrary, fixed; the partitions,
/// maintenance and alert leaders hold `..0001` to `..0003`).
const FOLD_LOCK: i64 = 0x666c_6f77_0004;
/// Events folded per statement.
const EVENTS: i64 = 50_000;

/// What one [`fold`] counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folded {
    /// Log rows.
    pub logs: i64,
    /// Execution events.
    pub events: i64,
    /// The log rows before this time are all folded.
    pub upto: Option<DateTime<Utc>>,
}

/// The oldest time an uncommitted log row may carry: the start of the
/// oldest transaction still open (other than ours), or now.
const HORIZON: &str = "SELECT least(now(), (SELECT min(xact_start) FROM pg_stat_activity \
     WHERE datname = current_database() AND pid <> pg_backend_pid() \
       AND backend_type = 'client backend' AND xact_start IS NOT NULL))";

/// Folds log rows `[$1, $2)` into the rollups; `$3` the bucket bounds,
/// `$4`/`$5` the sending hours.
const FOLD_LOGS: &str = "WITH rows AS ( \
       SELECT account_id, workflow_id, workflow_version, step_id, \
         (created_at AT TIME ZONE 'UTC')::date AS day, status, error_class, fingerprint, error, \
         coalesce(exec_ms, duration_ms, 0)::int8 AS exec_ms, \
         greatest(coalesce(duration_ms, 0) - coalesce(exec_ms, duration_ms, 0), 0)::int8 AS parked_ms, \
         CASE WHEN action_type = 'condition' THEN response->>'result' = 'true' ELSE false END AS took_true, \
         CASE WHEN action_type = 'wait' AND status = 'SUCCEEDED' \
                   AND jsonb_typeof(response->'local_hour') = 'number' \
              THEN (response->>'local_hour')::numeric NOT BETWEEN $4 AND $5 - 1 ELSE false END AS off_hours \
       FROM execution_logs \
       WHERE created_at >= $1 AND created_at < $2 AND workflow_id IS NOT NULL), \
     steps AS (INSERT INTO analytics_steps AS a (account_id, workflow_id, workflow_version, step_id, day, \
         succeeded, failed, retried, exec_ms, parked_ms, branch_true, off_hours) \
       SELECT account_id, workflow_id, workflow_version, step_id, day, \
         count(*) FILTER (WHERE status = 'SUCCEEDED'), count(*) FILTER (WHERE status = 'FAILED'), \
         count(*) FILTER (WHERE status = 'RETRYING'), sum(exec_ms), sum(parked_ms), \
         count(*) FILTER (WHERE took_true), count(*) FILTER (WHERE off_hours) \
       FROM rows GROUP BY 1, 2, 3, 4, 5 \
       ON CONFLICT (account_id, workflow_id, workflow_version, step_id, day) DO UPDATE SET \
         succeeded = a.succeeded + EXCLUDED.succeeded, failed = a.failed + EXCLUDED.failed, \
         retried = a.retried + EXCLUDED.retried, exec_ms = a.exec_ms + EXCLUDED.exec_ms, \
         parked_ms = a.parked_ms + EXCLUDED.parked_ms, branch_true = a.branch_true + EXCLUDED.branch_true, \
         off_hours = a.off_hours + EXCLUDED.off_hours), \
     times AS (INSERT INTO analytics_step_times AS a (account_id, workflow_id, workflow_version, day, \
         step_id, kind, bucket, count) \
       SELECT account_id, workflow_id, workflow_version, day, step_id, t.kind, \
         width_bucket(t.ms, $3::int8[])::int2, count(*) \
       FROM rows CROSS JOIN LATERAL (VALUES ('exec', exec_ms), ('parked', parked_ms)) t(kind, ms) \
       GROUP BY 1, 2, 3, 4, 5, 6, 7 \
       ON CONFLICT (account_id, workflow_id, workflow_version, day, step_id, kind, bucket) \
         DO UPDATE SET count = a.count + EXCLUDED.count), \
     errors AS (INSERT INTO analytics_errors AS a (account_id, workflow_id, workflow_version, day, \
         step_id, error_class, fingerprint, count, sample) \
       SELECT account_id, workflow_id, workflow_version, day, step_id, coalesce(error_class, 'internal'), \
         fingerprint, count(*), max(left(error, 500)) \
       FROM rows WHERE status IN ('FAILED', 'RETRYING') AND fingerprint IS NOT NULL \
       GROUP BY 1, 2, 3, 4, 5, 6, 7 \
       ON CONFLICT (account_id, workflow_id, workflow_version, day, step_id, error_class, fingerprint) \
         DO UPDATE SET count = a.count + EXCLUDED.count, sample = EXCLUDED.sample) \
     SELECT count(*) FROM rows";

/// Folds and deletes up to `$1` execution events.
const FOLD_EVENTS: &str = "WITH gone AS ( \
       DELETE FROM analytics_events WHERE id IN ( \
         SELECT id FROM analytics_events ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
       RETURNING account_id, workflow_id, workflow_version, kind, step_id, n, \
         (created_at AT TIME ZONE 'UTC')::date AS day), \
     executions AS (INSERT INTO analytics_executions AS a (account_id, workflow_id, workflow_version, day, \
         started, completed, failed, cancelled) \
       SELECT account_id, workflow_id, workflow_version, day, \
         coalesce(sum(n) FILTER (WHERE kind = 'STARTED'), 0), coalesce(sum(n) FILTER (WHERE kind = 'COMPLETED'), 0), \
         coalesce(sum(n) FILTER (WHERE kind = 'FAILED'), 0), coalesce(sum(n) FILTER (WHERE kind = 'CANCELLED'), 0) \
       FROM gone GROUP BY 1, 2, 3, 4 \
       ON CONFLICT (account_id, workflow_id, workflow_version, day) DO UPDATE SET \
         started = a.started + EXCLUDED.started, completed = a.completed + EXCLUDED.completed, \
         failed = a.failed + EXCLUDED.failed, cancelled = a.cancelled + EXCLUDED.cancelled), \
     cancels AS (INSERT INTO analytics_steps AS a (account_id, workflow_id, workflow_version, step_id, day, cancelled) \
       SELECT account_id, workflow_id, workflow_version, step_id, day, sum(n) \
       FROM gone WHERE kind = 'CANCELLED' AND step_id IS NOT NULL GROUP BY 1, 2, 3, 4, 5 \
       ON CONFLICT (account_id, workflow_id, workflow_version, step_id, day) DO UPDATE SET \
         cancelled = a.cancelled + EXCLUDED.cancelled) \
     SELECT count(*) FROM gone";

/// Folds what was written since the last fold into the rollups, for at
/// most about `budget`: log rows in spans of `created_at` sized to a few
/// ten thousand rows, each with its progress in one transaction, then
/// execution events.
/// Safe to run from several processes at once (one folds log rows at a
/// time, under an advisory lock the others do not wait for; events are
/// claimed with `SKIP LOCKED`), though the maintenance leader alone runs
/// it.
///
/// # Errors
/// Database errors; what was committed before one stays counted.
pub async fn fold(pool: &PgPool, budget: std::time::Duration) -> Result<Folded> {
    let began = std::time::Instant::now();
    let mut folded = Folded::default();
    let bounds = BOUNDS_MS.to_vec();
    let mut span = SPAN;
    loop {
        let mut tx = pool.begin().await?;
        // Another process folding: leave it to them (waiting here would
        // hold their horizon back with this transaction's start).
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(FOLD_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            tx.rollback().await?;
            break;
        }
        let horizon: DateTime<Utc> = sqlx::query_scalar(HORIZON).fetch_one(&mut *tx).await?;
        let upto: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT upto FROM analytics_progress WHERE name = $1")
                .bind(LOGS)
                .fetch_optional(&mut *tx)
                .await?;
        let from = match upto {
            Some(t) => t,
            // The first fold starts at the oldest row (rows written before
            // the rollups existed are counted too).
            None => sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
                "SELECT min(created_at) FROM execution_logs",
            )
            .fetch_one(&mut *tx)
            .await?
            .unwrap_or(horizon),
        };
        let to = horizon.min(from + span);
        if to <= from {
            tx.rollback().await?;
            folded.upto = Some(from);
            break;
        }
        let rows: i64 = sqlx::query_scalar(FOLD_LOGS)
            .bind(from)
            .bind(to)
            .bind(&bounds)
            .bind(i32::try_from(SENDING_HOURS.0).unwrap_or(8))
            .bind(i32::try_from(SENDING_HOURS.1).unwrap_or(21))
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO analytics_progress (name, upto) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET upto = EXCLUDED.upto",
        )
        .bind(LOGS)
        .bind(to)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        folded.logs += rows;
        if rows < ROWS.0 {
            span = (span * 4).min(MAX_SPAN);
        } else if rows > ROWS.1 {
            span = (span / 2).max(MIN_SPAN);
        }
        folded.upto = Some(to);
        if to >= horizon || began.elapsed() >= budget {
            break;
        }
    }
    loop {
        let n: i64 = sqlx::query_scalar(FOLD_EVENTS)
            .bind(EVENTS)
            .fetch_one(pool)
            .await?;
        folded.events += n;
        if n < EVENTS || began.elapsed() >= budget {
            break;
        }
    }
    Ok(folded)
}

/// Deletes rollup days before `before` (the log retention's cutoff).
///
/// # Errors
/// Database errors.
pub async fn expire(pool: &PgPool, before: NaiveDate) -> Result<u64> {
    let mut deleted = 0;
    for table in [
        "analytics_steps",
        "analytics_step_times",
        "analytics_errors",
        "analytics_executions",
    ] {
        // The table names are ours, not input.
        deleted += sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE day < $1"
        )))
        .bind(before)
        .execute(pool)
        .await?
        .rows_affected();
    }
    Ok(deleted)
}
