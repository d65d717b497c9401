//! Every SQL statement of flowpilot lives under this module (STYLE.md §1).
//!
//! - this file: the pool, migrations, and the store's error type;
//! - one file per aggregate: [`account`], [`contact`], [`workflow`],
//!   [`execution`] (and [`execution_count`]), [`log`] (step attempts and dead letters), [`outbox`],
//!   [`api_key`];
//! - [`checkpoint`]: a step's checkpoint in one statement (the execution
//!   row, its log rows, the contact change), alone or in a [`group`]
//!   commit with other executions' checkpoints;
//! - [`alert`]: alert rules, alerts and their deliveries (an outbox);
//! - [`audit`]: the append-only audit trail;
//! - [`operation`]: bulk operations and their progress; [`bulk`]: the
//!   set-based statements of their batches;
//! - [`failure`]: failure groups by fingerprint, and dead letters;
//! - [`due`]: the maintenance loop's scans (recovery, timer pump);
//! - [`reader`]: the read handle everything outside the engine reads with;
//! - [`lock`]: the leaders' advisory locks (maintenance, alerts);
//! - [`page`]: keyset pagination types shared by the list queries;
//! - [`partition`]: monthly `execution_logs` partitions, created ahead and
//!   dropped past retention;
//! - [`session`]: operator console sessions;
//! - [`text`]: the NUL character, which `text` and `jsonb` refuse.
//!
//! The store imports nothing of flowpilot's but the shared vocabulary in
//! [`crate::domain`]: it knows rows, not what the engine decides on them.

pub mod account;
pub mod alert;
pub mod analytics;
pub mod api_key;
pub mod audit;
pub mod bulk;
pub mod checkpoint;
pub mod contact;
pub mod due;
pub mod execution;
pub mod execution_count;
pub mod failure;
pub mod group;
pub mod lock;
pub mod log;
pub mod operation;
pub mod outbox;
pub mod page;
pub mod partition;
pub mod reader;
pub mod session;
pub mod text;
pub mod workflow;

use std::time::Duration;

use sqlx::PgPool;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// The embedded `migrations/` directory.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long to wait for a pooled connection before failing a request.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database refused or the connection failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl Error {
    /// Whether a unique constraint refused the write (a duplicate key).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Error::Database(sqlx::Error::Database(db)) if db.is_unique_violation())
    }

    /// Whether the database could not be reached (rather than refusing).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_))
        )
    }
}

pub use reader::Reader;

/// One field of every row of `rows`: a column to bind as an array (and
/// `UNNEST` in the statement), for statements that write many rows at once.
fn column<'a, R, T>(rows: &'a [R], f: impl Fn(&'a R) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}

/// Local result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Opens a pool of at most `max_connections`.
///
/// # Errors
/// When the URL is invalid or the server unreachable.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool> {
    // NB: JIT off. Every statement here is short; PostgreSQL's JIT, on by
    // default, compiles a plan whose cost estimate passes a threshold
    // (a failure grouping over a day's rows does) and spends 100-150 ms
    // doing it, longer than the query itself.
    let options = PgConnectOptions::from_str(url)?.options([("jit", "off")]);
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?)
}

/// Applies pending migrations, then makes sure log partitions exist for
/// this month and the next [`partition::MONTHS_AHEAD`].
///
/// # Errors
/// When a migration or a partition DDL fails.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await?;
    partition::ensure_ahead(pool, chrono::Utc::now()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::PgPool;
    use uuid::Uuid;

    /// Seeds an account, a contact and a workflow with version 1; returns their ids.
    async fn seed(pool: &PgPool) -> (Uuid, Uuid, Uuid) {
        let (account,): (Uuid,) =
            sqlx::query_as("INSERT INTO accounts (name) VALUES ('acme') RETURNING id")
                .fetch_one(pool)
                .await
                .unwrap();
        let (contact,): (Uuid,) = sqlx::query_as(
            "INSERT INTO contacts (account_id, email) VALUES ($1, 'a@example.com') RETURNING id",
        )
        .bind(account)
        .fetch_one(pool)
        .await
        .unwrap();
        let (workflow,): (Uuid,) = sqlx::query_as(
            "INSERT INTO workflows (account_id, name, latest_version) VALUES ($1, 'welcome', 1) RETURNING id",
        )
        .bind(account)
        .fetch_one(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO workflow_versions (workflow_id, version, account_id, definition) \
             VALUES ($1, 1, $2, '{\"steps\": []}')",
        )
        .bind(workflow)
        .bind(account)
        .execute(pool)
        .await
        .unwrap();
        (account, contact, workflow)
    }

    async fn execute(
        pool: &PgPool,
        ids: (Uuid, Uuid, Uuid),
        key: Option<&str>,
    ) -> sqlx::Result<Uuid> {
        let (account, contact, workflow) = ids;
        sqlx::query_as::<_, (Uuid,)>(
            "INSERT INTO workflow_executions (account_id, workflow_id, workflow_version, contact_id, idempotency_key) \
             VALUES ($1, $2, 1, $3, $4) RETURNING id",
        )
        .bind(account)
        .bind(workflow)
        .bind(contact)
        .bind(key)
        .fetch_one(pool)
        .await
        .map(|(id,)| id)
    }

    #[sqlx::test]
    async fn the_schema_holds_an_execution_with_its_logs_in_a_monthly_partition(pool: PgPool) {
        super::partition::ensure_ahead(&pool, chrono::Utc::now())
            .await
            .unwrap();
        let ids = seed(&pool).await;
        let execution = execute(&pool, ids, None).await.unwrap();
        sqlx::query(
            "INSERT INTO execution_logs (execution_id, account_id, step_index, step_id, action_type, attempt, status, started_at) \
             VALUES ($1, $2, 0, 'welcome', 'send_email', 1, 'SUCCEEDED', now())",
        )
        .bind(execution)
        .bind(ids.0)
        .execute(&pool)
        .await
        .unwrap();
        let (partition,): (String,) = sqlx::query_as(
            "SELECT tableoid::regclass::text FROM execution_logs WHERE execution_id = $1",
        )
        .bind(execution)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(partition.starts_with("execution_logs_y"), "{partition}");
    }

    #[sqlx::test]
    async fn an_idempotency_key_starts_one_execution_per_account(pool: PgPool) {
        let ids = seed(&pool).await;
        execute(&pool, ids, Some("signup-42")).await.unwrap();
        let err = execute(&pool, ids, Some("signup-42")).await.unwrap_err();
        assert_eq!(
            err.as_database_error().and_then(|e| e.constraint()),
            Some("workflow_executions_account_id_idempotency_key_key")
        );
        // Another account may use the same key.
        let other = seed(&pool).await;
        execute(&pool, other, Some("signup-42")).await.unwrap();
    }

    #[sqlx::test]
    async fn workflow_versions_cannot_be_changed_once_written(pool: PgPool) {
        let (_, _, workflow) = seed(&pool).await;
        let err =
            sqlx::query("UPDATE workflow_versions SET definition = '{}' WHERE workflow_id = $1")
                .bind(workflow)
                .execute(&pool)
                .await
                .unwrap_err();
        assert!(err.to_string().contains("immutable"), "{err}");
    }

    #[sqlx::test]
    async fn a_priority_the_engine_cannot_read_is_an_error_never_normal(pool: PgPool) {
        let ids = seed(&pool).await;
        let id = execute(&pool, ids, None).await.unwrap();
        let read = super::execution::get(&pool, id).await.unwrap().unwrap();
        assert_eq!(read.priority, crate::domain::Priority::Normal);
        // A row written by a newer engine (or by hand) past the check.
        for sql in [
            "ALTER TABLE workflow_executions DROP CONSTRAINT workflow_executions_priority_check",
            "UPDATE workflow_executions SET priority = 'urgent'",
        ] {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        let err = super::execution::get(&pool, id).await.unwrap_err();
        assert!(err.to_string().contains("urgent"), "{err}");
    }

    #[sqlx::test]
    async fn an_execution_cannot_reference_another_accounts_contact(pool: PgPool) {
        let (account, _, workflow) = seed(&pool).await;
        let (_, foreign_contact, _) = seed(&pool).await;
        let err = execute(&pool, (account, foreign_contact, workflow), None)
            .await
            .unwrap_err();
        assert!(
            err.as_database_error()
                .is_some_and(|e| e.is_foreign_key_violation()),
            "{err}"
        );
    }
}
