//! [`Reader`]: the read handle the API, the controller and the console use.
//! Writes to workflows, contacts and executions go through the engine,
//! which checks them first; everything that only looks goes through here,
//! so a handler can never write by accident.

use serde_json::Value as Json;
use sqlx::PgPool;
use uuid::Uuid;

use super::alert::{self, Alert, AlertFilter, Rule};
use super::api_key::Grant;
use super::contact::{self, Contact};
use super::execution::{self, Execution};
use super::execution_count;
use super::log::{self, Log, LogFilter};
use super::operation::{self, Operation};
use super::page::{After, Count};
use super::workflow::{self, Workflow};
use super::{Result, api_key, failure};

/// Reads, scoped by account wherever rows belong to one.
#[derive(Clone)]
pub struct Reader {
    pool: PgPool,
}

impl Reader {
    /// A reader on `pool`'s database.
    pub fn new(pool: PgPool) -> Self {
        Reader { pool }
    }

    /// Whether the database answers (the readiness probe).
    ///
    /// # Errors
    /// When it does not.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// See [`super::execution_count::count_open`], counting each status for at
    /// most 200 ms.
    ///
    /// # Errors
    /// Database errors.
    pub async fn open_executions(
        &self,
    ) -> Result<Vec<(crate::domain::Status, super::page::Count)>> {
        super::execution_count::count_open(&self.pool, "200ms").await
    }

    /// Bulk operations pending or running, and alerts firing (not
    /// acknowledged), across accounts.
    ///
    /// # Errors
    /// Database errors.
    pub async fn open_work(&self) -> Result<(i64, i64)> {
        Ok(sqlx::query_as(
            "SELECT (SELECT count(*) FROM operations WHERE state IN ('pending', 'running')), \
                    (SELECT count(*) FROM alerts WHERE state = 'firing')",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// See [`super::partition::months_ahead`].
    ///
    /// # Errors
    /// Database errors.
    pub async fn partitions_ahead(&self) -> Result<u32> {
        super::partition::months_ahead(&self.pool, chrono::Utc::now()).await
    }

    /// The execution `id` of the account.
    ///
    /// # Errors
    /// Database errors.
    pub async fn execution(&self, account_id: Uuid, id: Uuid) -> Result<Option<Execution>> {
        execution::get_in(&self.pool, account_id, id).await
    }

    /// The execution started with idempotency key `key` in the account.
    ///
    /// # Errors
    /// Database errors.
    pub async fn execution_by_key(&self, account_id: Uuid, key: &str) -> Result<Option<Execution>> {
        execution::get_by_key(&self.pool, account_id, key).await
    }

    /// A page of the account's executions, newest first, and how many
    /// match in all (capped).
    ///
    /// # Errors
    /// Database errors.
    pub async fn executions(
        &self,
        account_id: Uuid,
        filter: &execution::Filter,
        after: Option<After>,
        limit: i64,
    ) -> Result<(Vec<Execution>, Count)> {
        let rows = execution::list(&self.pool, account_id, filter, after, limit).await?;
        let count = execution_count::count(&self.pool, account_id, filter).await?;
        Ok((rows, count))
    }

    /// How many of the account's executions are in each status now
    /// (each count capped and bounded as a list's), and how many ended and
    /// failed in each hour from `since` on.
    ///
    /// # Errors
    /// Database errors.
    pub async fn execution_summary(
        &self,
        account_id: Uuid,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<(
        Vec<(crate::domain::Status, Count)>,
        Vec<(chrono::DateTime<chrono::Utc>, i64, i64)>,
    )> {
        let mut by_status = Vec::with_capacity(crate::domain::ALL_STATUSES.len());
        for status in crate::domain::ALL_STATUSES {
            let filter = execution::Filter {
                statuses: vec![status],
                ..execution::Filter::default()
            };
            by_status.push((
                status,
                execution_count::count(&self.pool, account_id, &filter).await?,
            ));
        }
        let hours = execution_count::hourly_ends(&self.pool, account_id, since).await?;
        Ok((by_status, hours))
    }

    /// A page of an execution's log rows, in order.
    ///
    /// # Errors
    /// Database errors.
    pub async fn logs(
        &self,
        account_id: Uuid,
        execution_id: Uuid,
        filter: &LogFilter,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Log>> {
        log::logs(&self.pool, account_id, execution_id, filter, after, limit).await
    }

    /// The workflow `id` of the account.
    ///
    /// # Errors
    /// Database errors.
    pub async fn workflow(&self, account_id: Uuid, id: Uuid) -> Result<Option<Workflow>> {
        workflow::get(&self.pool, account_id, id).await
    }

    /// The analytics rollups of a workflow version over UTC days.
    ///
    /// # Errors
    /// Database errors.
    pub async fn analytics(
        &self,
        account_id: Uuid,
        workflow_id: Uuid,
        version: i32,
        days: (chrono::NaiveDate, chrono::NaiveDate),
    ) -> Result<super::analytics::Analytics> {
        super::analytics::analytics(&self.pool, account_id, workflow_id, version, days).await
    }

    /// A page of the account's workflows.
    ///
    /// # Errors
    /// Database errors.
    pub async fn workflows(
        &self,
        account_id: Uuid,
        include_archived: bool,
        after: Option<After>,
        limit: i64,
    ) -> Result<Vec<Workflow>> {
        workflow::list(&self.pool, account_id, include_archived, after, limit).await
    }

    /// The versions of a workflow of the account, newest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn versions(
        &self,
        account_id: Uuid,
        id: Uuid,
    ) -> Result<Option<Vec<workflow::Version>>> {
        workflow::versions(&self.pool, account_id, id).await
    }

    /// The stored definition of a workflow version.
    ///
    /// # Errors
    /// Database errors.
    pub async fn definition(&self, workflow_id: Uuid, version: i32) -> Result<Option<Json>> {
        workflow::definition(&self.pool, workflow_id, version).await
    }

    /// The contact `id` of the account.
    ///
    /// # Errors
    /// Database errors.
    pub async fn contact(&self, account_id: Uuid, id: Uuid) -> Result<Option<Contact>> {
        contact::get(&self.pool, account_id, id).await
    }

    /// A page of the account's contacts, newest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn contacts(
        &self,
        account_id: Uuid,
        filter: &contact::Filter,
        after: Option<After>,
        limit: i64,
    ) -> Result<Vec<Contact>> {
        contact::list(&self.pool, account_id, filter, after, limit).await
    }

    /// The alert rules the account sees (global ones too for an admin).
    ///
    /// # Errors
    /// Database errors.
    pub async fn alert_rules(&self, account_id: Uuid, admin: bool) -> Result<Vec<Rule>> {
        alert::list_rules(&self.pool, account_id, admin).await
    }

    /// One alert rule the account sees.
    ///
    /// # Errors
    /// Database errors.
    pub async fn alert_rule(
        &self,
        account_id: Uuid,
        admin: bool,
        id: Uuid,
    ) -> Result<Option<Rule>> {
        alert::get_rule(&self.pool, account_id, admin, id).await
    }

    /// A page of the alerts the account sees, newest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn alerts(
        &self,
        account_id: Uuid,
        admin: bool,
        filter: &AlertFilter,
        after: Option<After>,
        limit: i64,
    ) -> Result<Vec<Alert>> {
        alert::list(&self.pool, account_id, admin, filter, after, limit).await
    }

    /// One alert the account sees, with its deliveries.
    ///
    /// # Errors
    /// Database errors.
    pub async fn alert(
        &self,
        account_id: Uuid,
        admin: bool,
        id: Uuid,
    ) -> Result<Option<(Alert, Vec<alert::Delivery>)>> {
        let Some(a) = alert::get(&self.pool, account_id, admin, id).await? else {
            return Ok(None);
        };
        let deliveries = alert::delivery::deliveries(&self.pool, id).await?;
        Ok(Some((a, deliveries)))
    }

    /// The bulk operation `id` of the account.
    ///
    /// # Errors
    /// Database errors.
    pub async fn operation(&self, account_id: Uuid, id: Uuid) -> Result<Option<Operation>> {
        operation::get(&self.pool, account_id, id).await
    }

    /// A page of the account's bulk operations, newest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn operations(
        &self,
        account_id: Uuid,
        after: Option<After>,
        limit: i64,
    ) -> Result<Vec<Operation>> {
        operation::list(&self.pool, account_id, after, limit).await
    }

    /// A page of the account's failure groups.
    ///
    /// # Errors
    /// Database errors.
    pub async fn error_groups(
        &self,
        account_id: Uuid,
        filter: &failure::GroupFilter,
        after: Option<&failure::GroupAfter>,
        limit: i64,
    ) -> Result<Vec<failure::ErrorGroup>> {
        failure::groups(&self.pool, account_id, filter, after, limit).await
    }

    /// A page of the account's dead letters.
    ///
    /// # Errors
    /// Database errors.
    pub async fn dead_letters(
        &self,
        account_id: Uuid,
        filter: &failure::DeadLetterFilter,
        after: Option<After>,
        limit: i64,
    ) -> Result<Vec<failure::DeadLetter>> {
        failure::dead_letters(&self.pool, account_id, filter, after, limit).await
    }

    /// The dead letter `id` of the account.
    ///
    /// # Errors
    /// Database errors.
    pub async fn dead_letter(
        &self,
        account_id: Uuid,
        id: Uuid,
    ) -> Result<Option<failure::DeadLetter>> {
        failure::dead_letter(&self.pool, account_id, id).await
    }

    /// What the API key with this hash may do, if it is known.
    ///
    /// # Errors
    /// Database errors.
    pub async fn api_key(&self, hash: &[u8; 32]) -> Result<Option<Grant>> {
        api_key::find(&self.pool, hash).await
    }

    /// The rate limits the account set itself (`{}`: all from the
    /// installation's defaults).
    ///
    /// # Errors
    /// Database errors.
    pub async fn limits(&self, account_id: Uuid) -> Result<crate::domain::Limits> {
        Ok(super::account::limits(&self.pool, account_id)
            .await?
            .unwrap_or_default())
    }

    /// Whether the account exists.
    ///
    /// # Errors
    /// Database errors.
    pub async fn account_exists(&self, account_id: Uuid) -> Result<bool> {
        api_key::account_exists(&self.pool, account_id).await
    }
}
