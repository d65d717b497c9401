//! The maintenance leader's lock: a PostgreSQL session advisory lock,
//! held as long as the connection that took it lives. Every process runs
//! the maintenance loop; the lock makes all but one idle, and a leader
//! whose connection drops loses the lock with it.

use sqlx::{PgConnection, PgPool};

use super::Result;

/// Advisory lock key of the maintenance leader (arbitrary, fixed).
const MAINTENANCE_LOCK: i64 = 0x666c_6f77_0002;

/// The maintenance lock, held.
pub struct MaintenanceLock {
    /// Detached from the pool: the session lock must die with this
    /// connection, never travel back into the pool with it.
    conn: PgConnection,
}

impl MaintenanceLock {
    /// Takes the lock on a connection of its own; `None` when another
    /// process holds it.
    ///
    /// # Errors
    /// Database errors.
    pub async fn try_take(pool: &PgPool) -> Result<Option<MaintenanceLock>> {
        let mut conn = pool.acquire().await?.detach();
        let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(MAINTENANCE_LOCK)
            .fetch_one(&mut conn)
            .await?;
        Ok(got.then_some(MaintenanceLock { conn }))
    }

    /// Checks that the lock's connection is alive: the lock lives as long
    /// as it does.
    ///
    /// # Errors
    /// When the connection is gone (and the lock with it).
    pub async fn check(&mut self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&mut self.conn).await?;
        Ok(())
    }
}
