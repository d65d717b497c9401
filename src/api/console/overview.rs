//! `/ui/`: how the account stands now: executions by status, throughput
//! and failure rate per hour (a chart, and its table), alerts firing and
//! operations running; for admin keys also the queues and open breakers,
//! which every account shares.

use axum::extract::State;
use chrono::Utc;
use maud::{Markup, html};
use serde_json::json;

use super::page::{self, Nav, PageError};
use super::session::Session;
use crate::api::extract::ApiQuery;
use crate::api::{AppState, alert, execution, operation, queue};
use crate::queue::BreakerState;

/// Hours the throughput chart spans.
const HOURS: i64 = 24;

/// `GET /ui/`.
pub async fn show(State(state): State<AppState>, s: Session) -> Result<Markup, PageError> {
    let summary = execution::summary(
        State(state.clone()),
        s.auth,
        ApiQuery(execution::SummaryQuery { hours: Some(HOURS) }),
    )
    .await?
    .0;
    let firing = alert::list(
        State(state.clone()),
        s.auth,
        ApiQuery(alert::AlertQuery {
            rule_id: None,
            state: Some("firing".into()),
            cursor: None,
            limit: Some(10),
        }),
    )
    .await?
    .0;
    let ops = operation::list(
        State(state.clone()),
        s.auth,
        ApiQuery(operation::OperationQuery {
            cursor: None,
            limit: Some(20),
        }),
    )
    .await?
    .0;
    let running: Vec<_> = ops
        .items
        .iter()
        .filter(|o| matches!(o.state.as_str(), "pending" | "running"))
        .collect();
    let shared = if s.auth.admin {
        Some(shared(&state, &s).await?)
    } else {
        None
    };
    let body = html! {
        section aria-labelledby="by-status" {
            h2 #by-status { "Executions by status" }
            div.cards {
                @for c in &summary.by_status {
                    a.card href={"/ui/executions?status=" (c.status)} {
                        div.n { (page::count(&c.count)) }
                        div.l { (page::status(&c.status)) }
                    }
                }
            }
        }
        section aria-labelledby="throughput" {
            h2 #throughput { "Ended per hour, last " (HOURS) " hours" }
            (chart(&summary.hours))
        }
        section aria-labelledby="alerts" {
            h2 #alerts { "Alerts firing" }
            @if firing.items.is_empty() { p.muted { "None." } }
            @else {
                ul {
                    @for a in &firing.items {
                        li { (page::status(&a.state)) " " a href="/ui/alerts" { (a.summary) } " · since " (page::time(a.occurred_at)) }
                    }
                }
            }
        }
        section aria-labelledby="ops" {
            h2 #ops { "Operations running" }
            @if running.is_empty() { p.muted { "None." } }
            @else {
                ul {
                    @for o in &running {
                        li { a href={"/ui/operations/" (o.id)} { (o.kind) " " (page::short_id(o.id)) } " · " (o.done + o.skipped + o.failed) " of " (o.total) }
                    }
                }
            }
        }
        @if let Some(shared) = shared { (shared) }
        @else { p.hint { "Queues and circuit breakers are shared by every account: an admin key sees them here." } }
    };
    Ok(page::layout(&s, Nav::Overview, "Overview", body))
}

/// Of `ended` executions, the share that `failed`, in percent (0 of 0).
fn failure_percent(ended: i64, failed: i64) -> f64 {
    100.0 * failed as f64 / ended.max(1) as f64
}

/// The hourly chart: ended and failed (left axis), failure rate (right).
fn chart(hours: &[execution::Hour]) -> Markup {
    if hours.is_empty() {
        return html! { p.muted { "No execution ended in this window." } };
    }
    // Every hour of the window up to this one, those without an end as
    // zeros, so the chart spans the window rather than the hours with ends.
    let now = Utc::now().timestamp();
    let this_hour = now - now.rem_euclid(3600);
    let x: Vec<i64> = (0..HOURS).rev().map(|i| this_hour - i * 3600).collect();
    let at = |t: i64| hours.iter().find(|h| h.hour.timestamp() == t);
    let ended: Vec<i64> = x.iter().map(|t| at(*t).map_or(0, |h| h.ended)).collect();
    let failed: Vec<i64> = x.iter().map(|t| at(*t).map_or(0, |h| h.failed)).collect();
    let rate: Vec<f64> = ended
        .iter()
        .zip(&failed)
        .map(|(e, f)| failure_percent(*e, *f))
        .collect();
    let data = json!({
        "x": x, "y": [ended, failed, rate],
        "labels": ["ended", "failed", "failure %"],
        "colors": ["#1f5fbf", "#c4261d", "#9a6700"],
        "scales": ["y", "y", "%"],
    });
    html! {
        (page::data("hourly-data", &data))
        div.chart data-series="hourly-data" role="img" aria-label="Executions ended and failed per hour" {}
        details.chart-fallback {
            summary { "As a table" }
            div.table-wrap { table {
                thead { tr { th { "Hour (UTC)" } th.num { "Ended" } th.num { "Failed" } th.num { "Failure rate" } } }
                tbody {
                    @for h in hours {
                        tr {
                            td { (page::time(h.hour)) } td.num { (h.ended) } td.num { (h.failed) }
                            td.num { (format!("{:.1}%", failure_percent(h.ended, h.failed))) }
                        }
                    }
                }
            } }
        }
    }
}

/// Queues and breakers (admin keys): what every account shares, and the
/// account switcher.
async fn shared(state: &AppState, s: &Session) -> Result<Markup, PageError> {
    let accounts = super::session::accounts(state).await?;
    let queues = queue::list(State(state.clone()), s.auth).await;
    let breakers = state
        .queue
        .breakers_not_closed(state.engine.queue_prefix())
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "breakers not read for the console"));
    Ok(html! {
        section aria-labelledby="account" {
            h2 #account { "Act for another account" }
            form.filters method="post" action="/ui/account" {
                (page::csrf(s))
                label { "Account"
                    select name="account_id" {
                        @for (id, name) in &accounts {
                            option value=(id) selected[*id == s.auth.account_id] { (name) " (" (id.to_string()[..8]) ")" }
                        }
                    }
                }
                button type="submit" { "Switch" }
            }
        }
        section aria-labelledby="queues" {
            h2 #queues { "Queues" }
            @match queues {
                Ok(q) => div.table-wrap { table {
                    thead { tr { th { "Queue" } th { "Served by" } th.num { "Ready" } th.num { "In progress" } th.num { "Deferred" } th.num { "Oldest ready" } th.num { "In/s" } th.num { "Out/s" } } }
                    tbody { @for v in &q.0.items {
                        tr {
                            td.mono { (v.name) } td { (v.served_by) } td.num { (v.ready) } td.num { (v.in_progress) } td.num { (v.deferred) }
                            td.num { (page::duration_or_dash(v.oldest_ready_age_s.map(|a| a * 1000.0))) }
                            td.num { (format!("{:.1}", v.enqueue_rate)) }
                            td.num { (v.dequeue_rate.map_or_else(|| "—".to_owned(), |r| format!("{r:.1}"))) }
                        }
                    } }
                } },
                Err(e) => p.error { (e.message()) },
            }
        }
        section aria-labelledby="breakers" {
            h2 #breakers { "Circuit breakers not closed" }
            @match breakers {
                Ok(b) if b.is_empty() => p.muted { "All closed." },
                Ok(b) => ul { @for (name, st) in &b {
                    li.mono { (name) " " (page::status(if *st == BreakerState::Open { "open" } else { "half_open" })) }
                } },
                Err(_) => p.error { "Redis did not answer; the breakers are not known." },
            }
        }
    })
}
