//! `audit_log`: who did what to which resource, when, and how it ended:
//! every state-changing API call and CLI admin command. Append-only (the
//! table refuses updates and deletes); partitioned by month and dropped
//! past the logs' retention.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use super::Result;

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// An API key (its id is the entry's `key_id`; none when the request
    /// did not authenticate).
    Api,
    /// The command line (`flowpilot apikey revoke`, ...).
    Cli,
}

impl Actor {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Api => "api",
            Actor::Cli => "cli",
        }
    }
}

/// An entry to append.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    /// The account acted for, when known.
    pub account_id: Option<Uuid>,
    /// The API key that acted.
    pub key_id: Option<Uuid>,
    /// API or CLI.
    pub actor: Actor,
    /// `POST /api/v1/workflows/{id}/archive`, or `apikey revoke`.
    pub action: &'a str,
    /// The path, or what the command named.
    pub target: Option<&'a str>,
    /// The HTTP status, or the exit code.
    pub result: i32,
}

/// An entry.
#[derive(Debug, Clone, FromRow)]
pub struct Entry {
    /// Id, increasing.
    pub id: i64,
    /// The account acted for.
    pub account_id: Option<Uuid>,
    /// The API key that acted.
    pub key_id: Option<Uuid>,
    /// `api` or `cli`.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// To what.
    pub target: Option<String>,
    /// HTTP status or exit code.
    pub result: i32,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Filters of the audit trail.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only what was done for this account.
    pub account_id: Option<Uuid>,
    /// Only what this key did.
    pub key_id: Option<Uuid>,
}

/// The audit trail's room: append and read, nothing else.
#[derive(Clone)]
pub struct Audit {
    pool: PgPool,
}

impl Audit {
    /// The trail in `pool`'s database.
    pub fn new(pool: PgPool) -> Self {
        Audit { pool }
    }

    /// Appends `e`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn append(&self, e: &NewEntry<'_>) -> Result<()> {
        let cut = |s: &str, max: usize| s.chars().take(max).collect::<String>();
        sqlx::query(
            "INSERT INTO audit_log (account_id, key_id, actor, action, target, result) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(e.account_id)
        .bind(e.key_id)
        .bind(e.actor.as_str())
        .bind(cut(e.action, 300))
        .bind(e.target.map(|t| cut(t, 2000)))
        .bind(e.result)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A page of entries, newest first, before entry id `before`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list(&self, f: &Filter, before: Option<i64>, limit: i64) -> Result<Vec<Entry>> {
        let mut qb = sqlx::QueryBuilder::new(
            "SELECT id, account_id, key_id, actor, action, target, result, created_at FROM audit_log WHERE true",
        );
        if let Some(a) = f.account_id {
            qb.push(" AND account_id = ").push_bind(a);
        }
        if let Some(k) = f.key_id {
            qb.push(" AND key_id = ").push_bind(k);
        }
        if let Some(b) = before {
            qb.push(" AND id < ").push_bind(b);
        }
        qb.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
        Ok(qb.build_query_as().fetch_all(&self.pool).await?)
    }
}
