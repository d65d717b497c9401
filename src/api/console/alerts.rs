//! `/ui/alerts`: rules, alerts (firing first, then history) and
//! acknowledgement; `/ui/operations`: bulk operations with their progress
//! (refreshed in place while they run) and cancel.

use axum::extract::{RawQuery, State};
use axum::response::Redirect;
use maud::{Markup, html};

use super::page::{self, Nav, PageError};
use super::session::{Empty, Posted, Session};
use super::{Filters, link};
use crate::api::extract::{ApiQuery, Id};
use crate::api::{AppState, alert, operation};

/// `GET /ui/alerts`.
pub async fn list(
    State(state): State<AppState>,
    s: Session,
    RawQuery(raw): RawQuery,
) -> Result<Markup, PageError> {
    let f = Filters::from_query(raw.as_deref());
    let mut q: alert::AlertQuery = f.parse()?;
    q.limit = Some(q.limit.unwrap_or(50));
    let alerts = alert::list(State(state.clone()), s.auth, ApiQuery(q))
        .await?
        .0;
    let rules = alert::list_rules(State(state.clone()), s.auth).await?.0;
    let body = html! {
        form.filters method="get" action="/ui/alerts" {
            label { "State" select name="state" {
                option value="" { "any" }
                @for st in ["firing", "acknowledged"] { option value=(st) selected[f.get("state") == Some(st)] { (st) } }
            } }
            button.primary type="submit" { "Show" }
        }
        div.table-wrap { table #alerts {
            thead { tr { th { "State" } th { "Summary" } th.num { "Level" } th.num { "Seen" } th { "Since · last (UTC)" } th { "" } } }
            tbody {
                @if alerts.items.is_empty() { tr { td colspan="6" .muted { "No alert." } } }
                @for a in &alerts.items {
                    tr {
                        td { (page::status(&a.state)) }
                        td { (a.summary) div.muted.mono { (a.key) } }
                        td.num { (a.level) }
                        td.num { (a.occurrences) }
                        td { (page::time(a.occurred_at)) br; (page::time(a.last_seen_at)) }
                        td {
                            @if a.acknowledged_at.is_none() && a.state == "firing" {
                                form method="post" action={"/ui/alerts/" (a.id) "/ack"} {
                                    (page::csrf(&s))
                                    button type="submit" aria-label={"Acknowledge " (a.summary)} { "Acknowledge" }
                                }
                            } @else if let Some(t) = a.acknowledged_at { "acknowledged " (page::time(t)) }
                        }
                    }
                }
            }
        } }
        @if let Some(c) = &alerts.next_cursor { div.pager { a rel="next" href={"/ui/alerts" (link(&f.with("cursor", c)))} { "Next page" } } }
        h2 { "Rules" }
        div.table-wrap { table {
            thead { tr { th { "Name" } th { "Kind" } th { "Scope" } th.wide { "Parameters" } th.num { "Dedup" } th.num { "Escalate" } } }
            tbody {
                @if rules.items.is_empty() { tr { td colspan="6" .muted { "No rule: create them with POST /api/v1/alert-rules." } } }
                @for r in &rules.items {
                    tr {
                        td { (r.name) } td.mono { (r.kind) }
                        td { @if r.account_id.is_none() { "global" } @else { "account" } }
                        td.wide { code { (r.params.to_string()) } }
                        td.num { (page::duration_ms(f64::from(r.dedup_window_s) * 1000.0)) }
                        td.num { (page::duration_ms(f64::from(r.escalate_after_s) * 1000.0)) }
                    }
                }
            }
        } }
    };
    Ok(page::layout(&s, Nav::Alerts, "Alerts", body))
}

/// `POST /ui/alerts/{id}/ack`.
pub async fn ack(
    State(state): State<AppState>,
    Id(id): Id,
    posted: Posted<Empty>,
) -> Result<Redirect, PageError> {
    let _changed = alert::ack(State(state), posted.session.auth, Id(id)).await?;
    Ok(Redirect::to("/ui/alerts"))
}

/// `GET /ui/operations`.
pub async fn operations(
    State(state): State<AppState>,
    s: Session,
    RawQuery(raw): RawQuery,
) -> Result<Markup, PageError> {
    let f = Filters::from_query(raw.as_deref());
    let mut q: operation::OperationQuery = f.parse()?;
    q.limit = Some(q.limit.unwrap_or(50));
    let ops = operation::list(State(state), s.auth, ApiQuery(q)).await?.0;
    let body = html! {
        div.table-wrap { table {
            thead { tr { th { "Operation" } th { "Kind" } th { "State" } th { "Progress" } th.num { "Done" } th.num { "Skipped" } th.num { "Failed" } th { "Created (UTC)" } } }
            tbody {
                @if ops.items.is_empty() { tr { td colspan="8" .muted { "No bulk operation yet." } } }
                @for o in &ops.items {
                    tr {
                        td { a href={"/ui/operations/" (o.id)} { (page::short_id(o.id)) } }
                        td { (o.kind) } td { (page::status(&o.state)) }
                        td { progress value=(o.done + o.skipped + o.failed) max=(o.total.max(1)) {} }
                        td.num { (o.done) } td.num { (o.skipped) } td.num { (o.failed) }
                        td { (page::time(o.created_at)) }
                    }
                }
            }
        } }
        @if let Some(c) = &ops.next_cursor { div.pager { a rel="next" href={"/ui/operations" (link(&f.with("cursor", c)))} { "Next page" } } }
    };
    Ok(page::layout(&s, Nav::Operations, "Operations", body))
}

async fn find(
    state: &AppState,
    s: &Session,
    id: uuid::Uuid,
) -> Result<operation::Operation, PageError> {
    Ok(operation::get(State(state.clone()), s.auth, Id(id))
        .await?
        .0)
}

/// `GET /ui/operations/{id}`.
pub async fn operation(
    State(state): State<AppState>,
    s: Session,
    Id(id): Id,
) -> Result<Markup, PageError> {
    let op = find(&state, &s, id).await?;
    let body = html! {
        (progress(&s, &op))
        h2 { "Request" }
        (page::json(&op.request))
    };
    Ok(page::layout(
        &s,
        Nav::Operations,
        &format!("Bulk {} {}", op.kind, &op.id.to_string()[..8]),
        body,
    ))
}

/// `GET /ui/fragment/operations/{id}`: the progress alone.
pub async fn operation_fragment(
    State(state): State<AppState>,
    s: Session,
    Id(id): Id,
) -> Result<Markup, PageError> {
    Ok(progress(&s, &find(&state, &s, id).await?))
}

/// The progress, refreshing itself every 2 s while the operation runs,
/// with its cancel button until it ends.
fn progress(s: &Session, op: &operation::Operation) -> Markup {
    let open = matches!(op.state.as_str(), "pending" | "running");
    let handled = op.done + op.skipped + op.failed;
    html! {
        section #progress hx-get=[open.then(|| format!("/ui/fragment/operations/{}", op.id))]
            hx-trigger=[open.then_some("every 2s")] hx-swap="outerHTML" {
            p { (page::status(&op.state)) " " strong #handled { (handled) } " of " strong #total { (op.total) } " handled: "
                span #done { (op.done) } " " (op.kind) " done, " (op.skipped) " skipped, " (op.failed) " failed" }
            progress value=(handled) max=(op.total.max(1)) {}
            @if let Some(e) = &op.error { p.error { (e) } }
            @if !op.errors.is_empty() {
                ul { @for e in &op.errors { li { @if let Some(t) = e.target { span.mono { (t) } ": " } (e.error) } } }
            }
            @if open {
                form method="post" action={"/ui/operations/" (op.id) "/cancel"} {
                    (page::csrf(s)) button.danger type="submit" { "Cancel operation" }
                }
            }
        }
    }
}

/// `POST /ui/operations/{id}/cancel`.
pub async fn cancel_operation(
    State(state): State<AppState>,
    Id(id): Id,
    posted: Posted<Empty>,
) -> Result<Redirect, PageError> {
    let _changed = operation::cancel(State(state), posted.session.auth, Id(id)).await?;
    Ok(Redirect::to(&format!("/ui/operations/{id}")))
}
