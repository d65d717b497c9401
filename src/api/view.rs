//! Response bodies and opaque cursors: what clients see of rows.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;
use serde_json::Value as Json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::ApiError;
use crate::engine::definition::Definition;
use crate::store::{self, page::After};

/// Default page size.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest page size.
pub const MAX_LIMIT: i64 = 500;

/// Checks a `limit` parameter.
///
/// # Errors
/// 400 naming `limit` outside 1..=500.
pub fn limit(l: Option<i64>) -> Result<i64, ApiError> {
    match l {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid(
            "limit",
            format!("must be 1 to {MAX_LIMIT}"),
        )),
    }
}

/// The cursor of the page after `rows`, or `None` when `rows` is the last
/// page (fewer rows than asked for).
pub fn next_cursor<T>(rows: &[T], limit: i64, cursor: impl Fn(&T) -> String) -> Option<String> {
    if rows.len() as i64 == limit {
        rows.last().map(cursor)
    } else {
        None
    }
}

/// Whether PostgreSQL can hold `t` and RFC 3339 can print it: years 1 to
/// 9999. Outside that, a timestamp is a client's mistake, not a 500.
fn representable(t: DateTime<Utc>) -> bool {
    (1..=9999).contains(&t.year())
}

/// Checks a time filter of a list.
///
/// # Errors
/// 400 naming `field` for a time outside years 1 to 9999.
pub fn time_filter(field: &str, t: Option<DateTime<Utc>>) -> Result<(), ApiError> {
    match t {
        Some(t) if !representable(t) => Err(ApiError::invalid(
            field,
            "must lie between the years 1 and 9999",
        )),
        _ => Ok(()),
    }
}

/// Cursor after a row of a newest-first list.
pub fn encode_after(created_at: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", created_at.timestamp_micros()))
}

/// Reads a cursor of [`encode_after`].
///
/// # Errors
/// 400 naming `cursor`.
pub fn decode_after(cursor: Option<&str>) -> Result<Option<After>, ApiError> {
    let Some(c) = cursor else { return Ok(None) };
    let bad = || ApiError::invalid("cursor", "not a cursor this API returned");
    let text =
        String::from_utf8(URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?).map_err(|_| bad())?;
    let (micros, id) = text.split_once(':').ok_or_else(bad)?;
    let created_at = DateTime::from_timestamp_micros(micros.parse().map_err(|_| bad())?)
        .filter(|t| representable(*t))
        .ok_or_else(bad)?;
    let id = Uuid::parse_str(id).map_err(|_| bad())?;
    Ok(Some(After { created_at, id }))
}

/// Cursor after a log row.
pub fn encode_log_cursor(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("log:{id}"))
}

/// Reads a cursor of [`encode_log_cursor`].
///
/// # Errors
/// 400 naming `cursor`.
pub fn decode_log_cursor(cursor: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(c) = cursor else { return Ok(None) };
    let bad = || ApiError::invalid("cursor", "not a cursor this API returned");
    let text =
        String::from_utf8(URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?).map_err(|_| bad())?;
    text.strip_prefix("log:")
        .and_then(|n| n.parse().ok())
        .map(Some)
        .ok_or_else(bad)
}

/// A workflow with one version's definition.
#[derive(Debug, Serialize, ToSchema)]
pub struct Workflow {
    /// The workflow.
    #[serde(flatten)]
    pub summary: WorkflowSummary,
    /// The version `definition` belongs to.
    pub version: i32,
    /// The definition (see the README for the format).
    #[schema(value_type = Object)]
    pub definition: Json,
}

impl Workflow {
    /// The view of `w` with `definition` of `version`.
    pub fn new(w: store::workflow::Workflow, version: i32, definition: Json) -> Self {
        Workflow {
            summary: w.into(),
            version,
            definition,
        }
    }
}

/// A workflow in a list (without its definition).
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowSummary {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Whether executions may start.
    pub is_active: bool,
    /// Newest version.
    pub latest_version: i32,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// When it was archived; absent for a workflow in use.
    pub archived_at: Option<DateTime<Utc>>,
}

impl From<store::workflow::Workflow> for WorkflowSummary {
    fn from(w: store::workflow::Workflow) -> Self {
        WorkflowSummary {
            id: w.id,
            name: w.name,
            description: w.description,
            is_active: w.is_active,
            latest_version: w.latest_version,
            created_at: w.created_at,
            updated_at: w.updated_at,
            archived_at: w.archived_at,
        }
    }
}

/// A page of workflows.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowPage {
    /// This page, newest first.
    pub items: Vec<WorkflowSummary>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

/// A contact.
#[derive(Debug, Serialize, ToSchema)]
pub struct Contact {
    /// Id.
    pub id: Uuid,
    /// The CRM's id.
    pub external_id: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// IANA timezone.
    pub timezone: String,
    /// Attributes.
    #[schema(value_type = Object)]
    pub attributes: Json,
    /// Tags.
    pub tags: Vec<String>,
    /// Opted out of messages.
    pub opted_out: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<store::contact::Contact> for Contact {
    fn from(c: store::contact::Contact) -> Self {
        Contact {
            id: c.id,
            external_id: c.external_id,
            email: c.email,
            phone: c.phone,
            timezone: c.timezone,
            attributes: c.attributes.0,
            tags: c.tags,
            opted_out: c.opted_out,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// A page of contacts.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactPage {
    /// This page, newest first.
    pub items: Vec<Contact>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

/// The step an execution is at.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrentStep {
    /// Step id.
    pub id: String,
    /// Action type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Position.
    pub index: i32,
}

/// An execution.
#[derive(Debug, Serialize, ToSchema)]
pub struct Execution {
    /// Id.
    pub id: Uuid,
    /// Workflow.
    pub workflow_id: Uuid,
    /// The workflow version it runs.
    pub workflow_version: i32,
    /// Contact.
    pub contact_id: Uuid,
    /// QUEUED, RUNNING, WAITING, RETRYING, COMPLETED, FAILED or CANCELLED.
    pub status: String,
    /// high, normal or low.
    pub priority: String,
    /// The step it is at (the last one when finished).
    pub current_step: Option<CurrentStep>,
    /// Why it is not moving: `wait`, `arq_job`, `retry_backoff`,
    /// `provider_unavailable`, `enrollment` (until its start time), `cancelled`.
    pub waiting_reason: Option<String>,
    /// When it moves next on its own (resume, retry, lease expiry).
    pub next_action_at: Option<DateTime<Utc>>,
    /// Attempt at the current step, from 1.
    pub attempts: i32,
    /// Last error.
    pub error: Option<String>,
    /// Class of the last error: `transient`, `timeout`, `rate_limited`,
    /// `provider_unavailable`, `permanent`, `invalid_config`,
    /// `contact_data`, `cancelled`, `internal`.
    pub error_class: Option<String>,
    /// What groups the last error with like ones (16 hex digits).
    pub fingerprint: Option<String>,
    /// Caller's metadata.
    #[schema(value_type = Object)]
    pub metadata: Json,
    /// Caller's idempotency key.
    pub idempotency_key: Option<String>,
    /// api, arq or kubernetes.
    pub source: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// First run.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished.
    pub completed_at: Option<DateTime<Utc>>,
    /// Set when this engine cannot read the workflow version the execution
    /// pins (`current_step.type` is then `unknown`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition_error: Option<String>,
    /// When it should complete (`GET /api/v1/executions/{id}` of an
    /// execution not yet ended; absent in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta: Option<Eta>,
}

/// An estimated completion and what it is made of.
#[derive(Debug, Serialize, ToSchema)]
pub struct Eta {
    /// When the execution should complete.
    pub at: DateTime<Utc>,
    /// What the estimate adds up.
    pub basis: EtaBasis,
}

/// The parts of an estimate, in milliseconds from now.
#[derive(Debug, Serialize, ToSchema)]
pub struct EtaBasis {
    /// Known timers ahead: waits (with their send windows), a retry's or a
    /// hold's time, an enrollment's start.
    pub timers_ms: i64,
    /// The mean time of the steps ahead over the last 30 days.
    pub history_ms: i64,
    /// The wait of its queue's oldest ready job (queued executions).
    pub queue_ms: i64,
    /// The steps ahead as foreseen for the contact now (conditions
    /// evaluated), the current one first.
    pub path: Vec<String>,
    /// Steps ahead with no history yet, counted as no time.
    pub without_history: Vec<String>,
}

impl From<crate::engine::eta::Eta> for Eta {
    fn from(e: crate::engine::eta::Eta) -> Self {
        Eta {
            at: e.at,
            basis: EtaBasis {
                timers_ms: e.timers_ms,
                history_ms: e.history_ms,
                queue_ms: e.queue_ms,
                path: e.path,
                without_history: e.without_history,
            },
        }
    }
}

impl Execution {
    /// The view of `e`; `def` names the current step's type.
    pub fn new(e: store::execution::Execution, def: Option<&Definition>) -> Self {
        let current_step = e.current_step_id.clone().map(|id| CurrentStep {
            kind: def
                .and_then(|d| d.steps.get(e.current_step_index as usize))
                .map_or("unknown", |s| s.action.kind())
                .to_owned(),
            id,
            index: e.current_step_index,
        });
        Execution {
            next_action_at: e.next_action_at(),
            id: e.id,
            workflow_id: e.workflow_id,
            workflow_version: e.workflow_version,
            contact_id: e.contact_id,
            status: e.status.as_str().to_owned(),
            priority: e.priority.as_str().to_owned(),
            current_step,
            waiting_reason: e.waiting_reason,
            attempts: e.attempt,
            error: e.error,
            error_class: e.error_class.map(|c| c.as_str().to_owned()),
            fingerprint: e.fingerprint,
            metadata: e.metadata.0,
            idempotency_key: e.idempotency_key,
            source: e.source,
            created_at: e.created_at,
            updated_at: e.updated_at,
            started_at: e.started_at,
            completed_at: e.completed_at,
            definition_error: None,
            eta: None,
        }
    }
}

/// A capped count.
#[derive(Debug, Serialize, ToSchema)]
pub struct Count {
    /// Matching rows, at most 10 000.
    pub value: i64,
    /// False when there are at least 10 000 (the count stops there) or
    /// when `value` is an estimate.
    pub exact: bool,
    /// True when counting would have taken longer than 20 ms and `value`
    /// is PostgreSQL's estimate instead.
    pub estimated: bool,
}

impl From<store::page::Count> for Count {
    fn from(c: store::page::Count) -> Self {
        Count {
            value: c.value,
            exact: c.exact,
            estimated: c.estimated,
        }
    }
}

/// A page of executions.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionPage {
    /// This page, newest first.
    pub items: Vec<Execution>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
    /// Rows matching the filters (capped, see `exact`).
    pub count: Count,
}

/// One action attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct Log {
    /// Id (increasing).
    pub id: i64,
    /// Step position.
    pub step_index: i32,
    /// Step id.
    pub step_id: String,
    /// Action type.
    pub action_type: String,
    /// Attempt.
    pub attempt: i32,
    /// SUCCEEDED, FAILED or RETRYING.
    pub status: String,
    /// The step as defined.
    #[schema(value_type = Option<Object>)]
    pub config: Option<Json>,
    /// What the action returned; for a failed or retried webhook, the
    /// answer that failed it. `null` when there is none.
    #[schema(value_type = Option<Object>)]
    pub response: Option<Json>,
    /// Error text.
    pub error: Option<String>,
    /// Class of the failure (see `Execution.error_class`).
    pub error_class: Option<String>,
    /// What groups the failure with like ones.
    pub fingerprint: Option<String>,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// Finished.
    pub completed_at: Option<DateTime<Utc>>,
    /// Duration in ms.
    pub duration_ms: Option<i32>,
    /// Of `duration_ms`, the time the action ran (a step that parked, for
    /// a timer or an arq job, ran less than its duration). `null` for rows
    /// written before it was recorded.
    pub exec_ms: Option<i32>,
    /// What the action passed providers to deduplicate the attempt:
    /// `<execution id>:<step index>:<attempt>`.
    pub idempotency_key: String,
}

impl From<store::log::Log> for Log {
    fn from(l: store::log::Log) -> Self {
        Log {
            id: l.id,
            step_index: l.step_index,
            step_id: l.step_id,
            action_type: l.action_type,
            attempt: l.attempt,
            status: l.status,
            config: l.config.map(|c| c.0),
            response: l.response.map(|r| r.0),
            error: l.error,
            error_class: l.error_class.map(|c| c.as_str().to_owned()),
            fingerprint: l.fingerprint,
            started_at: l.started_at,
            completed_at: l.completed_at,
            duration_ms: l.duration_ms,
            exec_ms: l.exec_ms,
            idempotency_key: format!("{}:{}:{}", l.execution_id, l.step_index, l.attempt),
        }
    }
}

/// A page of logs.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogPage {
    /// This page, in order.
    pub items: Vec<Log>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

/// Liveness / readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` with the failing checks.
    pub status: String,
    /// Per dependency: `ok` or `unavailable`.
    #[schema(value_type = Object)]
    pub checks: Json,
}
