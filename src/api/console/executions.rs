//! `/ui/executions`: the list with every filter the API has, keyset pages
//! and a live-refreshed table; one execution as a timeline of its steps,
//! with cancel and retry. Reads and writes are the API's handlers.

use axum::extract::{RawQuery, State};
use axum::response::Redirect;
use maud::{Markup, html};

use super::page::{self, Nav, PageError};
use super::session::{Posted, Session};
use super::{Filters, link};
use crate::api::extract::{ApiQuery, Id};
use crate::api::view::{Execution, Log};
use crate::api::{AppState, contact, execution, workflow};
use crate::domain::{ALL_ERROR_CLASSES, ALL_STATUSES};
use crate::store::log::LogFilter;

/// Why an execution waits, as the API names them.
const WAITING_REASONS: [&str; 6] = [
    "wait",
    "arq_job",
    "retry_backoff",
    "provider_unavailable",
    "enrollment",
    "cancelled",
];

/// Page size of the list.
const PAGE: i64 = 50;
/// Attempts a timeline shows.
const LOGS: i64 = 500;

async fn list_page(
    state: &AppState,
    s: &Session,
    f: &Filters,
) -> Result<crate::api::view::ExecutionPage, PageError> {
    let mut q: execution::ExecutionQuery = f.parse()?;
    q.limit = Some(q.limit.unwrap_or(PAGE));
    Ok(execution::list(State(state.clone()), s.auth, ApiQuery(q))
        .await?
        .0)
}

/// `GET /ui/executions`.
pub async fn list(
    State(state): State<AppState>,
    s: Session,
    RawQuery(raw): RawQuery,
) -> Result<Markup, PageError> {
    let f = Filters::from_query(raw.as_deref());
    let page = list_page(&state, &s, &f).await?;
    let workflows = workflow::list(
        State(state.clone()),
        s.auth,
        ApiQuery(workflow::PageQuery {
            include_archived: None,
            cursor: None,
            limit: Some(200),
        }),
    )
    .await?
    .0
    .items;
    let selected = |k: &str, v: &str| f.get(k) == Some(v);
    let body = html! {
        form.filters method="get" action="/ui/executions" role="search" {
            label { "Status"
                select name="status" {
                    option value="" { "any" }
                    @for st in ALL_STATUSES { option value=(st.as_str()) selected[selected("status", st.as_str())] { (st.as_str()) } }
                    option value="FAILED,RETRYING" selected[selected("status", "FAILED,RETRYING")] { "FAILED or RETRYING" }
                }
            }
            label { "Workflow"
                select name="workflow_id" {
                    option value="" { "any" }
                    @for w in &workflows { option value=(w.id) selected[selected("workflow_id", &w.id.to_string())] { (w.name) } }
                }
            }
            label { "Waiting for"
                select name="waiting_reason" {
                    option value="" { "any" }
                    @for r in WAITING_REASONS { option value=(r) selected[selected("waiting_reason", r)] { (r) } }
                }
            }
            label { "Error class"
                select name="error_class" {
                    option value="" { "any" }
                    @for c in ALL_ERROR_CLASSES { option value=(c.as_str()) selected[selected("error_class", c.as_str())] { (c.as_str()) } }
                }
            }
            label { "Step" input type="text" name="current_step" size="12" value=[f.get("current_step")]; }
            label { "Fingerprint" input type="text" name="fingerprint" size="16" value=[f.get("fingerprint")]; }
            label { "Contact" input type="text" name="contact_id" size="12" value=[f.get("contact_id")]; }
            label { "Created after (UTC)" input type="datetime-local" name="created_after" value=[f.get("created_after").map(super::local_input)]; }
            label { "Created before (UTC)" input type="datetime-local" name="created_before" value=[f.get("created_before").map(super::local_input)]; }
            button.primary type="submit" { "Filter" }
            a href="/ui/executions" { "Clear" }
        }
        p.muted { (page::count(&page.count)) " match · newest first · refreshed every 5 s" }
        div.table-wrap { (rows(&page, &f)) }
        div.pager {
            @if f.get("cursor").is_some() { a href={"/ui/executions" (link(&f.without("cursor")))} { "First page" } }
            @if let Some(c) = &page.next_cursor { a rel="next" href={"/ui/executions" (link(&f.with("cursor", c)))} { "Next page" } }
        }
    };
    Ok(page::layout(&s, Nav::Executions, "Executions", body))
}

/// `GET /ui/fragment/executions`: the table alone, for the live refresh.
pub async fn rows_fragment(
    State(state): State<AppState>,
    s: Session,
    RawQuery(raw): RawQuery,
) -> Result<Markup, PageError> {
    let f = Filters::from_query(raw.as_deref());
    Ok(rows(&list_page(&state, &s, &f).await?, &f))
}

fn rows(page: &crate::api::view::ExecutionPage, f: &Filters) -> Markup {
    html! {
        table #executions hx-get={"/ui/fragment/executions" (link(f))} hx-trigger="every 5s" hx-swap="outerHTML" {
            thead { tr {
                th { "Execution" } th { "Status" } th { "Step" } th { "Waiting" } th.num { "Attempts" }
                th.wide { "Error" } th { "Created (UTC)" }
            } }
            tbody {
                @if page.items.is_empty() { tr { td colspan="7" .muted { "No execution matches." } } }
                @for e in &page.items {
                    tr {
                        td { a href={"/ui/executions/" (e.id)} { (page::short_id(e.id)) } }
                        td { (page::status(&e.status)) }
                        td.mono { @if let Some(c) = &e.current_step { (c.id) } }
                        td { @if let Some(r) = &e.waiting_reason { (r) @if let Some(t) = e.next_action_at { " until " (page::time(t)) } } }
                        td.num { (e.attempts) }
                        td.wide { @if let Some(c) = &e.error_class { span.badge { (c) } " " } @if let Some(m) = &e.error { (page::clip(m, 80)) } }
                        td { (page::time(e.created_at)) }
                    }
                }
            }
        }
    }
}

/// `GET /ui/executions/{id}`: the timeline.
pub async fn show(
    State(state): State<AppState>,
    s: Session,
    Id(id): Id,
) -> Result<Markup, PageError> {
    let e = execution::get(State(state.clone()), s.auth, Id(id))
        .await?
        .0;
    // The store's read the logs handler makes, without its second lookup
    // of the execution just read.
    let rows = state
        .reader
        .logs(s.auth.account_id, id, &LogFilter::default(), None, LOGS + 1)
        .await?;
    let more = rows.len() > LOGS as usize;
    let logs: Vec<Log> = rows
        .into_iter()
        .take(LOGS as usize)
        .map(Log::from)
        .collect();
    // An erased contact is gone (404); any other failure is the page's.
    let contact = match contact::get(State(state.clone()), s.auth, Id(e.contact_id)).await {
        Ok(c) => Some(c.0),
        Err(err) if err.status() == axum::http::StatusCode::NOT_FOUND => None,
        Err(err) => return Err(err.into()),
    };
    let ended = matches!(e.status.as_str(), "COMPLETED" | "FAILED" | "CANCELLED");
    let body = html! {
        (summary(&e))
        div.actions {
            @if !ended {
                form method="post" action={"/ui/executions/" (e.id) "/cancel"} {
                    (page::csrf(&s)) button.danger type="submit" { "Cancel execution" }
                }
            }
            @if e.status == "FAILED" {
                form method="post" action={"/ui/executions/" (e.id) "/retry"} {
                    (page::csrf(&s)) button.primary type="submit" { "Retry from the failed step" }
                }
            }
        }
        h2 { "Timeline" }
        (timeline(&e, &logs))
        @if more { p.hint { "The first " (LOGS) " attempts are shown; the API pages the rest." } }
        h2 { "Contact" }
        @match &contact {
            Some(c) => dl {
                dt { "Id" } dd.mono { (c.id) }
                @if let Some(x) = &c.external_id { dt { "External id" } dd { (x) } }
                @if let Some(x) = &c.email { dt { "Email" } dd { (x) } }
                dt { "Timezone" } dd { (c.timezone) }
                dt { "Tags" } dd { @for t in &c.tags { span.badge { (t) } " " } }
                dt { "Attributes" } dd { (page::json(&c.attributes)) }
            },
            None => p.muted { "The contact was erased." },
        }
        h2 { "Metadata" }
        (page::json(&e.metadata))
    };
    Ok(page::layout(
        &s,
        Nav::Executions,
        &format!("Execution {}", &e.id.to_string()[..8]),
        body,
    ))
}

fn summary(e: &Execution) -> Markup {
    html! {
        dl.summary {
            dt { "Status" } dd { (page::status(&e.status)) }
            dt { "Workflow" } dd { a href={"/ui/workflows/" (e.workflow_id) "?version=" (e.workflow_version)} { (page::short_id(e.workflow_id)) " v" (e.workflow_version) } }
            dt { "Id" } dd.mono { (e.id) }
            dt { "Priority" } dd { (e.priority) } dt { "Source" } dd { (e.source) }
            @if let Some(c) = &e.current_step { dt { "Step" } dd { span.mono { (c.id) } " (" (c.kind) ", #" (c.index) ")" } }
            @if let Some(r) = &e.waiting_reason { dt { "Waiting for" } dd { (r) @if let Some(t) = e.next_action_at { ", next action at " (page::time(t)) } } }
            @if let Some(eta) = &e.eta {
                dt { "Expected to end" } dd { (page::time(eta.at)) span.muted { " (timers " (page::duration_ms(eta.basis.timers_ms as f64)) ", history " (page::duration_ms(eta.basis.history_ms as f64)) ", queue " (page::duration_ms(eta.basis.queue_ms as f64)) "; path " (eta.basis.path.join(" → ")) ")" } }
            }
            dt { "Attempts" } dd { (e.attempts) }
            @if let Some(m) = &e.error { dt { "Error" } dd.error { @if let Some(c) = &e.error_class { span.badge { (c) } " " } (m) @if let Some(f) = &e.fingerprint { " " a href={"/ui/executions?fingerprint=" (f)} .mono { (f) } } } }
            @if let Some(k) = &e.idempotency_key { dt { "Idempotency key" } dd.mono { (k) } }
            dt { "Created" } dd { (page::time(e.created_at)) } dt { "Started" } dd { (page::time_or_dash(e.started_at)) } dt { "Ended" } dd { (page::time_or_dash(e.completed_at)) }
            @if let Some(d) = &e.definition_error { dt { "Definition" } dd.error { (d) } }
        }
    }
}

fn timeline(e: &Execution, logs: &[Log]) -> Markup {
    html! {
        ol.timeline {
            @for l in logs {
                li class={"s-" (l.status.to_ascii_lowercase())} {
                    strong.mono { (l.step_id) } " " span.muted { (l.action_type) " · attempt " (l.attempt) } " " (page::status(&l.status))
                    div.meta {
                        "started " (page::time(l.started_at))
                        @if let Some(d) = l.duration_ms {
                            " · took " (page::duration_ms(f64::from(d)))
                            @if let Some(x) = l.exec_ms { @if x < d { " (ran " (page::duration_ms(f64::from(x))) ", parked " (page::duration_ms(f64::from(d - x))) ")" } }
                        }
                        " · key " span.mono { (l.idempotency_key) }
                    }
                    @if let Some(err) = &l.error { div.error { @if let Some(c) = &l.error_class { span.badge { (c) } " " } (err) } }
                    @if let Some(r) = &l.response { details { summary { "Response" } (page::json(r)) } }
                }
            }
            @if let (Some(c), Some(r)) = (&e.current_step, &e.waiting_reason) {
                li.now {
                    strong.mono { (c.id) } " " span.muted { (c.kind) } " " (page::status(&e.status))
                    div.meta { "waiting for " (r) @if let Some(t) = e.next_action_at { " until " (page::time(t)) } }
                }
            } @else if let Some(c) = &e.current_step {
                li.now { strong.mono { (c.id) } " " span.muted { (c.kind) } " " (page::status(&e.status)) }
            }
        }
    }
}

/// `POST /ui/executions/{id}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    Id(id): Id,
    posted: Posted<super::session::Empty>,
) -> Result<Redirect, PageError> {
    let _changed = execution::cancel(State(state), posted.session.auth, Id(id)).await?;
    Ok(Redirect::to(&format!("/ui/executions/{id}")))
}

/// `POST /ui/executions/{id}/retry`.
pub async fn retry(
    State(state): State<AppState>,
    Id(id): Id,
    posted: Posted<super::session::Empty>,
) -> Result<Redirect, PageError> {
    let _changed = execution::retry(State(state), posted.session.auth, Id(id)).await?;
    Ok(Redirect::to(&format!("/ui/executions/{id}")))
}
