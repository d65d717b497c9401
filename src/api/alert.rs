//! Alerts: `/api/v1/alert-rules` (create, list, read, delete) and
//! `/api/v1/alerts` (history, one with its deliveries, acknowledge).
//! Global rules (every account; the only ones that may watch breakers and
//! queues) are created and seen by admin keys.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json_;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiQuery, Auth, Id};
use super::view;
use crate::alert::{self, Channel, Kind, RuleSpec};
use crate::store::alert as rows;

/// A rule to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "welcome flow fails", "kind": "execution_failed",
    "params": {"error_classes": ["permanent", "invalid_config"]},
    "channels": [{"type": "slack", "url": "https://hooks.slack.com/services/T0/B0/XYZ"},
                 {"type": "webhook", "url": "https://pager.example.com/flowpilot", "secret": "a-long-shared-secret"}],
    "dedup_window": "10m", "escalate_after": "15m"}))]
pub struct NewRule {
    /// Name, 1-200 characters.
    pub name: String,
    /// `execution_failed`, `failure_rate`, `dead_letters`, and for global
    /// rules also `breaker_open`, `queue_stalled`.
    pub kind: String,
    /// The kind's parameters: `execution_failed` `{workflow_ids?,
    /// error_classes?}`; `failure_rate` `{threshold_percent, window_s? =
    /// 300, min_count? = 20, workflow_id?}`; `dead_letters` `{threshold,
    /// window_s? = 300}`; `queue_stalled` `{older_than_s, queues?}`;
    /// `breaker_open` `{}`.
    #[schema(value_type = Option<Object>)]
    pub params: Option<Json_>,
    /// 1-5 channels in escalation order: `{type: email, to}`, `{type: sms,
    /// to}`, `{type: slack, url}`, `{type: webhook, url, secret}`.
    #[schema(value_type = Vec<Object>)]
    pub channels: Vec<Json_>,
    /// Occurrences of one key within this window fold into one alert
    /// (`5m` default; 1 s to 7 days).
    pub dedup_window: Option<String>,
    /// An unacknowledged alert goes to the next channel after this (`15m`
    /// default).
    pub escalate_after: Option<String>,
    /// Watch every account (admin keys only).
    #[serde(default)]
    pub global: bool,
}

/// A rule (secrets masked).
#[derive(Debug, Serialize, ToSchema)]
pub struct Rule {
    /// Id.
    pub id: Uuid,
    /// Its account; null for a global rule.
    pub account_id: Option<Uuid>,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Parameters.
    #[schema(value_type = Object)]
    pub params: Json_,
    /// Channels, the webhook secret and the Slack URL's path masked.
    #[schema(value_type = Vec<Object>)]
    pub channels: Vec<Json_>,
    /// Dedup window, seconds.
    pub dedup_window_s: i32,
    /// Escalation delay, seconds.
    pub escalate_after_s: i32,
    /// Evaluated.
    pub enabled: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
}

impl From<rows::Rule> for Rule {
    fn from(r: rows::Rule) -> Self {
        Rule {
            id: r.id,
            account_id: r.account_id,
            name: r.name,
            kind: r.kind,
            params: r.params.0,
            channels: alert::rule::stored_channels(&r.channels.0)
                .iter()
                .map(Channel::masked)
                .collect(),
            dedup_window_s: r.dedup_window_s,
            escalate_after_s: r.escalate_after_s,
            enabled: r.enabled,
            created_at: r.created_at,
        }
    }
}

/// Rules.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleList {
    /// Newest first (at most 1000).
    pub items: Vec<Rule>,
}

/// An alert.
#[derive(Debug, Serialize, ToSchema)]
pub struct Alert {
    /// Id.
    pub id: Uuid,
    /// The rule that raised it.
    pub rule_id: Uuid,
    /// The account it is about, when one.
    pub account_id: Option<Uuid>,
    /// What it deduplicates on (a workflow and fingerprint, a queue, a
    /// provider).
    pub key: String,
    /// `firing` or `acknowledged`.
    pub state: String,
    /// One line.
    pub summary: String,
    /// What triggered it.
    #[schema(value_type = Object)]
    pub details: Json_,
    /// Occurrences folded into it (for a condition rule: evaluations it
    /// held for).
    pub occurrences: i32,
    /// When the first occurrence happened.
    pub occurred_at: DateTime<Utc>,
    /// When it was raised.
    pub created_at: DateTime<Utc>,
    /// Last occurrence.
    pub last_seen_at: DateTime<Utc>,
    /// The channel last told (0 the first).
    pub level: i32,
    /// When the next channel is told unless acknowledged.
    pub next_escalation_at: Option<DateTime<Utc>>,
    /// When acknowledged.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// The API key that acknowledged it.
    pub acknowledged_by: Option<Uuid>,
    /// Its deliveries (on `GET /api/v1/alerts/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<Vec<AlertDelivery>>,
}

impl From<rows::Alert> for Alert {
    fn from(a: rows::Alert) -> Self {
        Alert {
            id: a.id,
            rule_id: a.rule_id,
            account_id: a.account_id,
            key: a.key,
            state: a.state,
            summary: a.summary,
            details: a.details.0,
            occurrences: a.occurrences,
            occurred_at: a.occurred_at,
            created_at: a.created_at,
            last_seen_at: a.last_seen_at,
            level: a.level,
            next_escalation_at: a.next_escalation_at,
            acknowledged_at: a.acknowledged_at,
            acknowledged_by: a.acknowledged_by,
            deliveries: None,
        }
    }
}

/// One message about an alert, to one channel.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertDelivery {
    /// Id (`X-Flowpilot-Delivery` of a webhook channel).
    pub id: Uuid,
    /// Index of the channel in the rule.
    pub channel: i32,
    /// `email`, `sms`, `slack`, `webhook`.
    pub kind: String,
    /// `pending`, `sent`, `failed`.
    pub state: String,
    /// Sends tried.
    pub attempts: i32,
    /// The last failure.
    pub last_error: Option<String>,
    /// Queued.
    pub created_at: DateTime<Utc>,
    /// Sent.
    pub sent_at: Option<DateTime<Utc>>,
}

/// A page of alerts.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertPage {
    /// Newest first.
    pub items: Vec<Alert>,
    /// Cursor of the next page.
    pub next_cursor: Option<String>,
}

/// Alert history filters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    /// Only of this rule.
    pub rule_id: Option<Uuid>,
    /// Only `firing` or `acknowledged`.
    pub state: Option<String>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
}

fn duration(
    field: &str,
    text: Option<&str>,
    default: u64,
) -> Result<std::time::Duration, ApiError> {
    match text {
        None => Ok(std::time::Duration::from_secs(default)),
        Some(t) => humantime::parse_duration(t)
            .map_err(|e| ApiError::invalid(field, format!("`{t}`: {e}")).unprocessable()),
    }
}

/// Create an alert rule.
#[utoipa::path(operation_id = "create_alert_rule", post, path = "/api/v1/alert-rules", tag = "alerts",
    request_body = NewRule,
    responses((status = 201, body = Rule), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn create_rule(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<NewRule>,
) -> Result<(StatusCode, Json<Rule>), ApiError> {
    let kind: Kind = req
        .kind
        .parse()
        .map_err(|m: String| ApiError::invalid("kind", m).unprocessable())?;
    let mut channels = Vec::with_capacity(req.channels.len());
    for (i, c) in req.channels.into_iter().enumerate() {
        let channel: Channel = serde_json::from_value(c).map_err(|e| {
            ApiError::invalid(format!("channels[{i}]"), e.to_string()).unprocessable()
        })?;
        channels.push(channel);
    }
    let spec = RuleSpec {
        name: req.name,
        kind,
        params: req.params.unwrap_or_else(|| serde_json::json!({})),
        channels,
        dedup_window: duration("dedup_window", req.dedup_window.as_deref(), 300)?,
        escalate_after: duration("escalate_after", req.escalate_after.as_deref(), 900)?,
        global: req.global,
    };
    let rule = state
        .alerts
        .create_rule(auth.account_id, auth.admin, spec)
        .await?;
    Ok((StatusCode::CREATED, Json(rule.into())))
}

/// The alert rules of the account (and the global ones, for admin keys).
#[utoipa::path(operation_id = "list_alert_rules", get, path = "/api/v1/alert-rules", tag = "alerts",
    responses((status = 200, body = RuleList), (status = 401, body = ErrorBody)))]
pub async fn list_rules(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<RuleList>, ApiError> {
    let rows = state
        .reader
        .alert_rules(auth.account_id, auth.admin)
        .await?;
    Ok(Json(RuleList {
        items: rows.into_iter().map(Rule::from).collect(),
    }))
}

/// One alert rule.
#[utoipa::path(operation_id = "get_alert_rule", get, path = "/api/v1/alert-rules/{id}", tag = "alerts", params(("id" = Uuid, Path)),
    responses((status = 200, body = Rule), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn get_rule(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> Result<Json<Rule>, ApiError> {
    let rule = state
        .reader
        .alert_rule(auth.account_id, auth.admin, id)
        .await?
        .ok_or_else(|| ApiError::not_found("alert rule"))?;
    Ok(Json(rule.into()))
}

/// Delete an alert rule, with its alerts; answers the rule deleted.
#[utoipa::path(operation_id = "delete_alert_rule", delete, path = "/api/v1/alert-rules/{id}", tag = "alerts", params(("id" = Uuid, Path)),
    responses((status = 200, body = Rule), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn delete_rule(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> Result<Json<Rule>, ApiError> {
    let rule = state
        .alerts
        .delete_rule(auth.account_id, auth.admin, id)
        .await?;
    Ok(Json(rule.into()))
}

/// Alert history, newest first.
#[utoipa::path(operation_id = "list_alerts", get, path = "/api/v1/alerts", tag = "alerts", params(AlertQuery),
    responses((status = 200, body = AlertPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<AlertQuery>,
) -> Result<Json<AlertPage>, ApiError> {
    let limit = view::limit(q.limit)?;
    let after = view::decode_after(q.cursor.as_deref())?;
    if let Some(s) = &q.state
        && s != "firing"
        && s != "acknowledged"
    {
        return Err(ApiError::invalid("state", "must be firing or acknowledged"));
    }
    let filter = rows::AlertFilter {
        rule_id: q.rule_id,
        state: q.state,
    };
    let rows = state
        .reader
        .alerts(auth.account_id, auth.admin, &filter, after, limit)
        .await?;
    let next_cursor = view::next_cursor(&rows, limit, |a| view::encode_after(a.created_at, a.id));
    Ok(Json(AlertPage {
        items: rows.into_iter().map(Alert::from).collect(),
        next_cursor,
    }))
}

/// One alert, with its deliveries.
#[utoipa::path(operation_id = "get_alert", get, path = "/api/v1/alerts/{id}", tag = "alerts", params(("id" = Uuid, Path)),
    responses((status = 200, body = Alert), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> Result<Json<Alert>, ApiError> {
    let (a, deliveries) = state
        .reader
        .alert(auth.account_id, auth.admin, id)
        .await?
        .ok_or_else(|| ApiError::not_found("alert"))?;
    let mut view = Alert::from(a);
    view.deliveries = Some(
        deliveries
            .into_iter()
            .map(|d| AlertDelivery {
                id: d.id,
                channel: d.channel,
                kind: d.kind,
                state: d.state,
                attempts: d.attempts,
                last_error: d.last_error,
                created_at: d.created_at,
                sent_at: d.sent_at,
            })
            .collect(),
    );
    Ok(Json(view))
}

/// Acknowledge an alert: it escalates no further. Again changes nothing.
#[utoipa::path(operation_id = "ack_alert", post, path = "/api/v1/alerts/{id}/ack", tag = "alerts", params(("id" = Uuid, Path)),
    responses((status = 200, body = Alert), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn ack(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> Result<Json<Alert>, ApiError> {
    let a = state
        .alerts
        .acknowledge(auth.account_id, auth.admin, id, auth.key_id)
        .await?;
    Ok(Json(a.into()))
}
