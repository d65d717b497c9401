//! `/ui/workflows`: the account's workflows; one workflow version as a
//! graph, its diff from the version before, the funnel and time in step
//! (p50/p95) from the analytics API, suggestions, activate/deactivate.

use axum::extract::{RawQuery, State};
use axum::response::Redirect;
use maud::{Markup, html};
use similar::{ChangeTag, TextDiff};

use super::page::{self, Nav, PageError};
use super::session::{Empty, Posted, Session};
use super::{Filters, graph};
use crate::api::extract::{ApiQuery, Id};
use crate::api::{AppState, analytics, workflow};
use crate::engine::definition::Definition;

/// `GET /ui/workflows`.
pub async fn list(
    State(state): State<AppState>,
    s: Session,
    RawQuery(raw): RawQuery,
) -> Result<Markup, PageError> {
    let f = Filters::from_query(raw.as_deref());
    let mut q: workflow::PageQuery = f.parse()?;
    q.limit = Some(q.limit.unwrap_or(100));
    let page = workflow::list(State(state), s.auth, ApiQuery(q)).await?.0;
    let body = html! {
        div.table-wrap { table {
            thead { tr { th { "Workflow" } th { "Active" } th.num { "Latest version" } th { "Updated (UTC)" } th.wide { "Description" } } }
            tbody {
                @if page.items.is_empty() { tr { td colspan="5" .muted { "No workflow yet: create one with POST /api/v1/workflows." } } }
                @for w in &page.items {
                    tr {
                        td { a href={"/ui/workflows/" (w.id)} { (w.name) } }
                        td { @if w.archived_at.is_some() { span.badge { "archived" } } @else if w.is_active { span.badge.s-completed { "active" } } @else { span.badge { "inactive" } } }
                        td.num { (w.latest_version) }
                        td { (page::time(w.updated_at)) }
                        td.wide { (w.description.as_deref().unwrap_or("")) }
                    }
                }
            }
        } }
        @if let Some(c) = &page.next_cursor { div.pager { a rel="next" href={"/ui/workflows" (super::link(&f.with("cursor", c)))} { "Next page" } } }
    };
    Ok(page::layout(&s, Nav::Workflows, "Workflows", body))
}

/// `GET /ui/workflows/{id}?version=N`.
pub async fn show(
    State(state): State<AppState>,
    s: Session,
    Id(id): Id,
    RawQuery(raw): RawQuery,
) -> Result<Markup, PageError> {
    let f = Filters::from_query(raw.as_deref());
    let q: workflow::VersionQuery = f.parse()?;
    let version = q.version;
    let w = workflow::get(State(state.clone()), s.auth, Id(id), ApiQuery(q))
        .await?
        .0;
    let versions = workflow::versions(State(state.clone()), s.auth, Id(id))
        .await?
        .0;
    let previous = if w.version > 1 {
        let q = workflow::VersionQuery {
            version: Some(w.version - 1),
        };
        Some(
            workflow::get(State(state.clone()), s.auth, Id(id), ApiQuery(q))
                .await?
                .0,
        )
    } else {
        None
    };
    let range = analytics::AnalyticsQuery {
        version,
        from: None,
        to: None,
    };
    let report = analytics::Report::read(&state, s.auth, id, &range).await?;
    let tips = report.suggestions();
    let stats = report.analytics();
    let def = Definition::parse(&w.definition).ok();
    let sm = &w.summary;
    let body = html! {
        p {
            @if sm.is_active { span.badge.s-completed { "active" } } @else { span.badge { "inactive" } }
            " · version " (w.version) " of " (sm.latest_version)
            @if let Some(d) = &sm.description { " · " (d) }
        }
        div.actions {
            @if sm.archived_at.is_none() {
                @if sm.is_active {
                    form method="post" action={"/ui/workflows/" (id) "/deactivate"} { (page::csrf(&s)) button type="submit" { "Deactivate" } }
                } @else {
                    form method="post" action={"/ui/workflows/" (id) "/activate"} { (page::csrf(&s)) button.primary type="submit" { "Activate" } }
                }
            }
            a href={"/ui/executions?workflow_id=" (id)} { "Executions" }
        }
        nav aria-label="Versions" { "Versions: "
            @for v in &versions.items {
                @if v.version == w.version { strong { "v" (v.version) } " " }
                @else { a href={"/ui/workflows/" (id) "?version=" (v.version)} { "v" (v.version) } " " }
            }
        }
        h2 { "Graph" }
        @match &def {
            Some(d) => (graph::svg(d)),
            None => p.error { "This version cannot be read by this engine." },
        }
        h2 { "Funnel, " (stats.from) " to " (stats.to) }
        (funnel(&stats))
        h2 { "Suggestions" }
        @if tips.items.is_empty() { p.muted { "None for this version and range." } }
        ul { @for t in &tips.items { li { span.badge { (t.kind) } " " span.mono { (t.step_id) } ": " (t.message) } } }
        @if let Some(p) = &previous {
            h2 { "Changes from version " (p.version) }
            (diff(&p.definition, &w.definition))
        }
        h2 { "Definition" }
        (page::json(&w.definition))
    };
    Ok(page::layout(&s, Nav::Workflows, &sm.name, body))
}

fn funnel(a: &analytics::WorkflowAnalytics) -> Markup {
    let most = a.funnel.iter().map(|f| f.entered).max().unwrap_or(0).max(1);
    html! {
        @if let Some(b) = &a.bottleneck {
            p.notice { "Bottleneck: " span.mono { (b.step_id) } ", " (format!("{:.0}%", b.share * 100.0)) " of the time in steps" }
        }
        div.table-wrap { table {
            thead { tr { th { "Step" } th.num { "Entered" } th.bar-cell { "" } th.num { "Completed" } th.num { "Failed" } th.num { "Retried" } th.num { "In step now" } th.num { "Run p50" } th.num { "Run p95" } th.num { "Parked p50" } th.num { "Parked p95" } } }
            tbody {
                @for (f, t) in a.funnel.iter().zip(&a.timings) {
                    tr {
                        td { span.mono { (f.step_id) } " " span.muted { (f.action_type) } }
                        td.num { (page::thousands(f.entered)) }
                        td.bar-cell { progress value=(f.entered) max=(most) title={(f.entered) " entered"} { (f.entered) } }
                        td.num { (page::thousands(f.completed)) }
                        td.num { (page::thousands(f.failed)) }
                        td.num { (page::thousands(f.retried)) }
                        td.num { (page::thousands(f.in_step)) }
                        td.num { (page::duration_or_dash(t.exec_ms.p50)) }
                        td.num { (page::duration_or_dash(t.exec_ms.p95)) }
                        td.num { (page::duration_or_dash(t.parked_ms.p50)) }
                        td.num { (page::duration_or_dash(t.parked_ms.p95)) }
                    }
                }
            }
        } }
    }
}

/// A line diff of two definitions, pretty-printed.
fn diff(old: &serde_json::Value, new: &serde_json::Value) -> Markup {
    let old = serde_json::to_string_pretty(old).unwrap_or_default();
    let new = serde_json::to_string_pretty(new).unwrap_or_default();
    let d = TextDiff::from_lines(&old, &new);
    html! {
        pre.json.diff {
            @for op in d.ops() {
                @for change in d.iter_changes(op) {
                    @match change.tag() {
                        ChangeTag::Delete => span.del { "- " (change.value()) },
                        ChangeTag::Insert => span.add { "+ " (change.value()) },
                        ChangeTag::Equal => span { "  " (change.value()) },
                    }
                }
            }
        }
    }
}

/// `POST /ui/workflows/{id}/activate`.
pub async fn activate(
    State(state): State<AppState>,
    Id(id): Id,
    posted: Posted<Empty>,
) -> Result<Redirect, PageError> {
    let _changed = workflow::activate(State(state), posted.session.auth, Id(id)).await?;
    Ok(Redirect::to(&format!("/ui/workflows/{id}")))
}

/// `POST /ui/workflows/{id}/deactivate`.
pub async fn deactivate(
    State(state): State<AppState>,
    Id(id): Id,
    posted: Posted<Empty>,
) -> Result<Redirect, PageError> {
    let _changed = workflow::deactivate(State(state), posted.session.auth, Id(id)).await?;
    Ok(Redirect::to(&format!("/ui/workflows/{id}")))
}
