//! `/ui/failures`: failure groups by fingerprint over a window, each with
//! a bulk retry or cancel that first shows its dry-run count and sample,
//! then starts the operation and follows it; open dead letters.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{Duration, Utc};
use maud::html;
use serde::Deserialize;
use uuid::Uuid;

use super::page::{self, Nav, PageError};
use super::session::{Posted, Session};
use super::{Filters, link};
use crate::api::extract::ApiQuery;
use crate::api::operation::{BulkFilter, BulkOutcome, BulkRequest};
use crate::api::{AppState, failure, operation};
use crate::domain::ALL_ERROR_CLASSES;
use crate::engine::operation::Bulk;

/// Windows offered, `(name, hours)`. The API goes to 31 days, but a
/// month of a busy account's failing attempts is more than a page should
/// scan: 215,000 rows on the console bench's record, p95 197 ms.
const WINDOWS: [(&str, i64); 3] = [("1h", 1), ("24h", 24), ("7d", 168)];

/// The page's own query (the window by name), the rest is the API's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    window: Option<String>,
    workflow_id: Option<Uuid>,
    error_class: Option<String>,
    cursor: Option<String>,
}

/// `GET /ui/failures`.
pub async fn list(
    State(state): State<AppState>,
    s: Session,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let f = Filters::from_query(raw.as_deref());
    let q: Query = f.parse()?;
    let window = q.window.as_deref().unwrap_or("24h");
    let hours = WINDOWS
        .iter()
        .find(|(n, _)| *n == window)
        .map(|(_, h)| *h)
        .ok_or_else(|| PageError::invalid("window", "must be 1h, 24h or 7d"))?;
    let now = Utc::now();
    let groups = failure::errors(
        State(state.clone()),
        s.auth,
        ApiQuery(failure::ErrorQuery {
            since: Some(now - Duration::hours(hours)),
            until: Some(now),
            workflow_id: q.workflow_id,
            error_class: q.error_class.clone(),
            cursor: q.cursor,
            limit: Some(50),
        }),
    )
    .await?
    .0;
    let dead = failure::dead_letters(
        State(state.clone()),
        s.auth,
        ApiQuery(failure::DeadLetterQuery {
            workflow_id: q.workflow_id,
            error_class: q.error_class.clone(),
            fingerprint: None,
            resolved: Some(false),
            cursor: None,
            limit: Some(20),
        }),
    )
    .await?
    .0;
    let body = html! {
        form.filters method="get" action="/ui/failures" {
            label { "Window" select name="window" { @for (n, _) in WINDOWS { option value=(n) selected[n == window] { (n) } } } }
            label { "Error class" select name="error_class" {
                option value="" { "any" }
                @for c in ALL_ERROR_CLASSES { option value=(c.as_str()) selected[q.error_class.as_deref() == Some(c.as_str())] { (c.as_str()) } }
            } }
            @if let Some(w) = q.workflow_id { input type="hidden" name="workflow_id" value=(w); }
            button.primary type="submit" { "Show" }
        }
        p.muted { "Failed or retried attempts from " (page::time(groups.since)) " to " (page::time(groups.until)) ", most recently seen first." }
        div.table-wrap { table #groups {
            thead { tr { th { "Fingerprint" } th { "Class" } th { "Step" } th.num { "Attempts" } th { "Over the window" } th { "First · last seen" } th.wide { "Last message" } th { "Act on its failed executions" } } }
            tbody {
                @if groups.items.is_empty() { tr { td colspan="8" .muted { "No failure in this window." } } }
                @for g in &groups.items {
                    tr {
                        td { a.mono href={"/ui/executions?fingerprint=" (g.fingerprint)} { (g.fingerprint) } }
                        td { @if let Some(c) = &g.error_class { span.badge { (c) } } }
                        td { span.mono { (g.step_id) } " " span.muted { (g.action_type) } }
                        td.num { (page::thousands(g.count)) }
                        td { (page::sparkline(&g.histogram)) }
                        td { (page::time(g.first_seen)) br; (page::time(g.last_seen)) }
                        td.wide { (g.message.as_deref().unwrap_or("")) }
                        td { div.actions {
                            @for (kind, label) in [("retry", "Retry…"), ("cancel", "Cancel…")] {
                                form method="post" action="/ui/failures/bulk" {
                                    (page::csrf(&s))
                                    input type="hidden" name="kind" value=(kind);
                                    input type="hidden" name="fingerprint" value=(g.fingerprint);
                                    @if let Some(w) = g.workflow_id { input type="hidden" name="workflow_id" value=(w); }
                                    button type="submit" aria-label={(label) " executions of " (g.fingerprint)} { (label) }
                                }
                            }
                        } }
                    }
                }
            }
        } }
        @if let Some(c) = &groups.next_cursor { div.pager { a rel="next" href={"/ui/failures" (link(&f.with("cursor", c)))} { "Next page" } } }
        h2 { "Dead letters (open)" }
        div.table-wrap { table {
            thead { tr { th { "Execution" } th { "Step" } th.num { "Attempts" } th { "Class" } th.wide { "Error" } th { "At (UTC)" } } }
            tbody {
                @if dead.items.is_empty() { tr { td colspan="6" .muted { "None." } } }
                @for d in &dead.items {
                    tr {
                        td { a href={"/ui/executions/" (d.execution_id)} { (page::short_id(d.execution_id)) } }
                        td.mono { (d.step_id.as_deref().unwrap_or("")) }
                        td.num { (d.attempts) }
                        td { @if let Some(c) = &d.error_class { span.badge { (c) } } }
                        td.wide { (d.error) }
                        td { (page::time(d.created_at)) }
                    }
                }
            }
        } }
    };
    Ok(page::layout(&s, Nav::Failures, "Failures", body).into_response())
}

/// A bulk action on a failure group: without `confirm`, a dry run.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkForm {
    kind: String,
    fingerprint: String,
    workflow_id: Option<Uuid>,
    confirm: Option<String>,
}

/// `POST /ui/failures/bulk`: the dry run's count and sample with a confirm
/// button, or (confirmed) the operation started.
pub async fn bulk(
    State(state): State<AppState>,
    posted: Posted<BulkForm>,
) -> Result<Response, PageError> {
    let Posted { session: s, form } = posted;
    let kind = match form.kind.as_str() {
        "retry" => Bulk::Retry,
        "cancel" => Bulk::Cancel,
        _ => return Err(PageError::invalid("kind", "must be retry or cancel")),
    };
    let req = BulkRequest {
        filter: BulkFilter {
            workflow_id: form.workflow_id,
            fingerprint: Some(form.fingerprint.clone()),
            ..BulkFilter::default()
        },
        dry_run: form.confirm.is_none(),
    };
    match operation::bulk(state, s.auth, kind, req).await? {
        BulkOutcome::Started(op) => {
            Ok(Redirect::to(&format!("/ui/operations/{}", op.id)).into_response())
        }
        BulkOutcome::Preview(p) => {
            let verb = if matches!(kind, Bulk::Retry) {
                "retried"
            } else {
                "cancelled"
            };
            let body = html! {
                p.notice #dry-run {
                    strong #dry-run-count { (p.count) } " execution(s) with fingerprint " span.mono { (form.fingerprint) }
                    " would be " (verb) " now (dry run: nothing changed yet)."
                }
                @if !p.sample.is_empty() {
                    h2 { "The newest of them" }
                    ul { @for e in &p.sample { li { a href={"/ui/executions/" (e.id)} { (page::short_id(e.id)) } " " (page::status(&e.status)) " " (e.error.as_deref().unwrap_or("")) } } }
                }
                div.actions {
                    @if p.count > 0 {
                        form method="post" action="/ui/failures/bulk" {
                            (page::csrf(&s))
                            input type="hidden" name="kind" value=(form.kind);
                            input type="hidden" name="fingerprint" value=(form.fingerprint);
                            @if let Some(w) = form.workflow_id { input type="hidden" name="workflow_id" value=(w); }
                            input type="hidden" name="confirm" value="1";
                            button.primary #confirm type="submit" { "Confirm: " (form.kind) " " (p.count) }
                        }
                    }
                    a href="/ui/failures" { "Back" }
                }
            };
            let title = format!("Bulk {}: dry run", form.kind);
            Ok(page::layout(&s, Nav::Failures, &title, body).into_response())
        }
    }
}
