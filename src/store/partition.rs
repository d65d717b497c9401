//! Monthly partitions of the tables that only grow, `execution_logs` and
//! `audit_log`: `<table>_yYYYYmMM` holds rows with `created_at` in that
//! UTC month. Both follow the same retention.
//!
//! Created ahead (this month plus [`MONTHS_AHEAD`]) by `migrate` and by the
//! maintenance loop, so an insert never finds its month missing; dropped
//! whole once past retention, which is why logs are partitioned at all.
//! Both run under a transaction-scoped advisory lock, so several processes
//! starting at once do not race on the DDL.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use sqlx::{AssertSqlSafe, PgPool};

use super::Result;

/// Months created beyond the current one (DESIGN.md: current month + 2).
pub const MONTHS_AHEAD: u32 = 2;

/// Advisory lock key serialising partition DDL (arbitrary, fixed).
const PARTITION_LOCK: i64 = 0x666c_6f77_0001;

/// The partitioned tables.
pub const PARENTS: [&str; 2] = ["execution_logs", "audit_log"];

/// First day of the month `offset` months after the month of `t`.
fn month_start(t: DateTime<Utc>, offset: i32) -> NaiveDate {
    let months = t.year() * 12 + t.month0() as i32 + offset;
    NaiveDate::from_ymd_opt(months.div_euclid(12), months.rem_euclid(12) as u32 + 1, 1)
        .expect("day 1 of a month in chrono's range always exists")
}

/// The partition of `parent` for the month starting at `start`.
pub fn name(parent: &str, start: NaiveDate) -> String {
    format!("{parent}_y{:04}m{:02}", start.year(), start.month())
}

/// Creates missing partitions from the month of `now` through
/// [`MONTHS_AHEAD`] months later. Returns the names it created.
///
/// # Errors
/// Database errors.
pub async fn ensure_ahead(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<String>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PARTITION_LOCK)
        .execute(&mut *tx)
        .await?;
    let existing = list_in(&mut tx).await?;
    let mut created = Vec::new();
    for parent in PARENTS {
        for offset in 0..=MONTHS_AHEAD as i32 {
            let from = month_start(now, offset);
            let to = month_start(now, offset + 1);
            let table = name(parent, from);
            if existing.contains(&table) {
                continue;
            }
            // Identifiers and dates come from our own formatting, not input.
            sqlx::query(AssertSqlSafe(format!(
                "CREATE TABLE IF NOT EXISTS {table} PARTITION OF {parent} \
                 FOR VALUES FROM ('{from}') TO ('{to}')"
            )))
            .execute(&mut *tx)
            .await?;
            created.push(table);
        }
    }
    tx.commit().await?;
    Ok(created)
}

/// The first day kept with a retention of `retention_months` (whole months
/// before the month of `now`).
pub fn retention_cutoff(now: DateTime<Utc>, retention_months: u32) -> NaiveDate {
    month_start(now, -(retention_months as i32))
}

/// Drops partitions whose whole month ended more than `retention_months`
/// before the month of `now`. Returns the names it dropped.
///
/// # Errors
/// Database errors.
pub async fn drop_expired(
    pool: &PgPool,
    now: DateTime<Utc>,
    retention_months: u32,
) -> Result<Vec<String>> {
    let oldest_kept = retention_cutoff(now, retention_months);
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PARTITION_LOCK)
        .execute(&mut *tx)
        .await?;
    let mut dropped = Vec::new();
    // Names sort by month because the year and month are zero-padded.
    for table in list_in(&mut tx).await? {
        let expired = PARENTS
            .iter()
            .any(|parent| table.starts_with(parent) && table < name(parent, oldest_kept));
        if expired {
            // `table` matched our own name pattern in `list_in`.
            sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
                .execute(&mut *tx)
                .await?;
            dropped.push(table);
        }
    }
    tx.commit().await?;
    Ok(dropped)
}

/// Months after the month of `now` that every partitioned table has a
/// partition for, counted from the next one up to the first missing: what
/// `flowpilot_log_partitions_ahead` shows ([`MONTHS_AHEAD`] when healthy).
///
/// # Errors
/// Database errors.
pub async fn months_ahead(pool: &PgPool, now: DateTime<Utc>) -> Result<u32> {
    let existing = list(pool).await?;
    let has = |offset: u32| {
        let start = month_start(now, offset as i32);
        PARENTS.iter().all(|p| existing.contains(&name(p, start)))
    };
    Ok((1..=120).take_while(|&m| has(m)).count() as u32)
}

/// Existing partitions, sorted by month.
///
/// # Errors
/// Database errors.
pub async fn list(pool: &PgPool) -> Result<Vec<String>> {
    let mut conn = pool.acquire().await?;
    list_in(&mut conn).await
}

async fn list_in(conn: &mut sqlx::PgConnection) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT c.relname::text FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid \
         JOIN pg_class p ON p.oid = i.inhparent \
         WHERE p.relname = ANY($1) AND c.relname ~ '^[a-z_]+_y[0-9]{4}m[0-9]{2}$' \
         ORDER BY 1",
    )
    .bind(&PARENTS[..])
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(n,)| n).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn month_arithmetic_crosses_year_boundaries() {
        let t = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
        let n = |offset| name("execution_logs", month_start(t, offset));
        assert_eq!(n(0), "execution_logs_y2026m11");
        assert_eq!(n(2), "execution_logs_y2027m01");
        assert_eq!(n(-11), "execution_logs_y2025m12");
        assert_eq!(n(-23), "execution_logs_y2024m12");
    }

    #[sqlx::test]
    async fn partitions_are_created_ahead_once_and_dropped_past_retention(pool: PgPool) {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap();
        let created = ensure_ahead(&pool, now).await.unwrap();
        assert_eq!(
            created,
            [
                "execution_logs_y2026m11",
                "execution_logs_y2026m12",
                "execution_logs_y2027m01",
                "audit_log_y2026m11",
                "audit_log_y2026m12",
                "audit_log_y2027m01"
            ]
        );
        assert!(
            ensure_ahead(&pool, now).await.unwrap().is_empty(),
            "idempotent"
        );
        assert_eq!(months_ahead(&pool, now).await.unwrap(), MONTHS_AHEAD);

        // A month later one more appears; a year on, the old ones go.
        let later = Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap();
        assert_eq!(months_ahead(&pool, later).await.unwrap(), 1, "one short");
        assert_eq!(
            ensure_ahead(&pool, later).await.unwrap(),
            ["execution_logs_y2027m02", "audit_log_y2027m02"]
        );
        let year_on = Utc.with_ymd_and_hms(2027, 12, 15, 0, 0, 0).unwrap();
        ensure_ahead(&pool, year_on).await.unwrap();
        let dropped = drop_expired(&pool, year_on, 12).await.unwrap();
        assert_eq!(dropped, ["audit_log_y2026m11", "execution_logs_y2026m11"]);
        let left = list(&pool).await.unwrap();
        assert_eq!(left.first().unwrap(), "audit_log_y2026m12");
        assert!(left.contains(&"execution_logs_y2026m12".to_owned()));
    }
}
