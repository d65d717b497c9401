//! Leaders' locks: PostgreSQL session advisory locks, each held as long as
//! the connection that took it lives. Every process runs the maintenance
//! loop and the alert evaluator; a lock per loop makes all but one of each
//! idle, and a leader whose connection drops loses the lock with it.

use sqlx::{PgConnection, PgPool};

use super::Result;

/// What a leader leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The maintenance loop (recovery, operations' jobs, partitions).
    Maintenance,
    /// The alert evaluator.
    Alerts,
}

impl Role {
    /// Its advisory lock key (arbitrary, fixed).
    fn key(self) -> i64 {
        match self {
            Role::Maintenance => 0x666c_6f77_0002,
            Role::Alerts => 0x666c_6f77_0003,
        }
    }
}

/// A leader's lock, held.
pub struct LeaderLock {
    /// Detached from the pool: the session lock must die with this
    /// connection, never travel back into the pool with it.
    conn: PgConnection,
}

impl LeaderLock {
    /// Takes the lock of `role` on a connection of its own; `None` when
    /// another process holds it.
    ///
    /// # Errors
    /// Database errors.
    pub async fn try_take(pool: &PgPool, role: Role) -> Result<Option<LeaderLock>> {
        let mut conn = pool.acquire().await?.detach();
        let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(role.key())
            .fetch_one(&mut conn)
            .await?;
        Ok(got.then_some(LeaderLock { conn }))
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
