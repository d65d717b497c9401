//! `workflows` and `workflow_versions`: definitions are immutable once
//! written; a change is a new version.

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use sqlx::types::Json as SqlJson;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use super::Result;

/// A workflow row.
#[derive(Debug, Clone, FromRow)]
pub struct Workflow {
    /// Id.
    pub id: Uuid,
    /// Owning account.
    pub account_id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Whether new executions may start.
    pub is_active: bool,
    /// Newest version (0: none yet).
    pub latest_version: i32,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Archived: starts nothing, left out of the default listing.
    pub archived_at: Option<DateTime<Utc>>,
}

/// Creates a workflow with `definition` as version 1, in one transaction.
///
/// # Errors
/// Database errors.
pub async fn create(
    pool: &PgPool,
    account_id: Uuid,
    name: &str,
    description: Option<&str>,
    active: bool,
    definition: &Json,
) -> Result<Workflow> {
    let mut tx = pool.begin().await?;
    let wf: Workflow = sqlx::query_as(
        "INSERT INTO workflows (account_id, name, description, is_active, latest_version) \
         VALUES ($1, $2, $3, $4, 1) RETURNING *",
    )
    .bind(account_id)
    .bind(name)
    .bind(description)
    .bind(active)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO workflow_versions (workflow_id, version, account_id, definition) VALUES ($1, 1, $2, $3)")
        .bind(wf.id)
        .bind(account_id)
        .bind(SqlJson(definition))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(wf)
}

/// Adds the next version; returns the workflow with its new latest version,
/// or `None` when it is not in the account.
///
/// # Errors
/// Database errors.
pub async fn add_version(
    pool: &PgPool,
    account_id: Uuid,
    id: Uuid,
    definition: &Json,
) -> Result<Option<Workflow>> {
    let mut tx = pool.begin().await?;
    // The row lock orders concurrent version additions.
    let wf: Option<Workflow> = sqlx::query_as(
        "UPDATE workflows SET latest_version = latest_version + 1, updated_at = now() \
         WHERE id = $1 AND account_id = $2 RETURNING *",
    )
    .bind(id)
    .bind(account_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(wf) = wf else {
        return Ok(None);
    };
    sqlx::query("INSERT INTO workflow_versions (workflow_id, version, account_id, definition) VALUES ($1, $2, $3, $4)")
        .bind(wf.id)
        .bind(wf.latest_version)
        .bind(account_id)
        .bind(SqlJson(definition))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(wf))
}

/// Activates or deactivates; `None` when not in the account.
///
/// # Errors
/// Database errors.
pub async fn set_active(
    pool: &PgPool,
    account_id: Uuid,
    id: Uuid,
    active: bool,
) -> Result<Option<Workflow>> {
    Ok(sqlx::query_as(
        "UPDATE workflows SET is_active = $3, updated_at = now() WHERE id = $1 AND account_id = $2 RETURNING *",
    )
    .bind(id)
    .bind(account_id)
    .bind(active)
    .fetch_optional(pool)
    .await?)
}

/// The workflow `id` of `account_id`.
///
/// # Errors
/// Database errors.
pub async fn get(pool: &PgPool, account_id: Uuid, id: Uuid) -> Result<Option<Workflow>> {
    Ok(
        sqlx::query_as("SELECT * FROM workflows WHERE id = $1 AND account_id = $2")
            .bind(id)
            .bind(account_id)
            .fetch_optional(pool)
            .await?,
    )
}

/// The account owning workflow `id` (for arq callers, who name no account).
///
/// # Errors
/// Database errors.
pub async fn account_of(pool: &PgPool, id: Uuid) -> Result<Option<Uuid>> {
    Ok(
        sqlx::query_scalar("SELECT account_id FROM workflows WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

/// The definition of one version.
///
/// # Errors
/// Database errors.
pub async fn definition(pool: &PgPool, id: Uuid, version: i32) -> Result<Option<Json>> {
    let row: Option<(SqlJson<Json>,)> = sqlx::query_as(
        "SELECT definition FROM workflow_versions WHERE workflow_id = $1 AND version = $2",
    )
    .bind(id)
    .bind(version)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(d,)| d.0))
}

/// The workflow called `name` in the account, if any (newest first).
///
/// # Errors
/// Database errors.
pub async fn find_by_name(pool: &PgPool, account_id: Uuid, name: &str) -> Result<Option<Workflow>> {
    Ok(sqlx::query_as("SELECT * FROM workflows WHERE account_id = $1 AND name = $2 ORDER BY created_at DESC LIMIT 1")
        .bind(account_id)
        .bind(name)
        .fetch_optional(pool)
        .await?)
}

/// A page of the account's workflows, newest first.
///
/// # Errors
/// Database errors.
pub async fn list(
    pool: &PgPool,
    account_id: Uuid,
    include_archived: bool,
    after: Option<super::page::After>,
    limit: i64,
) -> Result<Vec<Workflow>> {
    let mut qb = sqlx::QueryBuilder::new("SELECT * FROM workflows WHERE account_id = ");
    qb.push_bind(account_id);
    if !include_archived {
        qb.push(" AND archived_at IS NULL");
    }
    super::page::push_after_and_limit(&mut qb, after, limit);
    Ok(qb.build_query_as().fetch_all(pool).await?)
}

/// A version of a workflow, without its definition.
#[derive(Debug, Clone, FromRow)]
pub struct Version {
    /// Its number, from 1.
    pub version: i32,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// The versions of the workflow `id` of the account, newest first; `None`
/// when there is no such workflow.
///
/// # Errors
/// Database errors.
pub async fn versions(pool: &PgPool, account_id: Uuid, id: Uuid) -> Result<Option<Vec<Version>>> {
    if get(pool, account_id, id).await?.is_none() {
        return Ok(None);
    }
    Ok(Some(
        sqlx::query_as(
            "SELECT version, created_at FROM workflow_versions WHERE workflow_id = $1 AND account_id = $2 \
             ORDER BY version DESC",
        )
        .bind(id)
        .bind(account_id)
        .fetch_all(pool)
        .await?,
    ))
}

/// Archives the workflow `id` (once: it keeps its first archive time) and
/// deactivates it; `None` when there is no such workflow.
///
/// # Errors
/// Database errors.
pub async fn archive(pool: &PgPool, account_id: Uuid, id: Uuid) -> Result<Option<Workflow>> {
    Ok(sqlx::query_as(
        "UPDATE workflows SET archived_at = coalesce(archived_at, now()), is_active = false, updated_at = now() \
         WHERE id = $1 AND account_id = $2 RETURNING *",
    )
    .bind(id)
    .bind(account_id)
    .fetch_optional(pool)
    .await?)
}
