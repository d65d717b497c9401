//! Every SQL statement of flowpilot lives under this module (STYLE.md §1).
//!
//! - this file: the pool, migrations, and the store's error type;
//! - [`partition`]: monthly `execution_logs` partitions, created ahead and
//!   dropped past retention.
//!
//! Aggregates (executions, workflows, contacts, ...) get one file each as
//! the engine and API arrive.

pub mod partition;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

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

/// Local result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Opens a pool of at most `max_connections`.
///
/// # Errors
/// When the URL is invalid or the server unreachable.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect(url)
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
