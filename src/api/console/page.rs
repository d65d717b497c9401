//! The console's frame: the layout every page shares (navigation, account,
//! sign-out), its error page, and how values are shown (times, durations,
//! statuses, counts). Every string goes through maud, which escapes it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use uuid::Uuid;

use super::assets;
use super::session::Session;
use crate::api::error::ApiError;
use crate::api::view;

/// The sections in the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// `/ui/`.
    Overview,
    /// `/ui/executions`.
    Executions,
    /// `/ui/workflows`.
    Workflows,
    /// `/ui/failures`.
    Failures,
    /// `/ui/alerts`.
    Alerts,
    /// `/ui/operations`.
    Operations,
}

const SECTIONS: [(Nav, &str, &str); 6] = [
    (Nav::Overview, "/ui/", "Overview"),
    (Nav::Executions, "/ui/executions", "Executions"),
    (Nav::Workflows, "/ui/workflows", "Workflows"),
    (Nav::Failures, "/ui/failures", "Failures"),
    (Nav::Alerts, "/ui/alerts", "Alerts"),
    (Nav::Operations, "/ui/operations", "Operations"),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // htmx would add an inline <style>, which the CSP refuses.
            meta name="htmx-config" content=r#"{"includeIndicatorStyles":false}"#;
            title { (title) " · flowpilot" }
            link rel="stylesheet" href=(assets::url("console.css"));
            link rel="stylesheet" href=(assets::url("uPlot.min.css"));
            script src=(assets::url("htmx.min.js")) defer {}
            script src=(assets::url("uPlot.iife.min.js")) defer {}
            script src=(assets::url("console.js")) defer {}
        }
    }
}

/// A page of the signed-in console.
pub fn layout(s: &Session, nav: Nav, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui/" { "flowpilot" }
                    nav aria-label="Sections" {
                        ul {
                            @for (n, href, label) in SECTIONS {
                                li {
                                    @if n == nav {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    div.who {
                        span title=(s.row.account_id) { (s.row.account_name) }
                        " · key " span.mono { (s.row.key_name) }
                        @if s.auth.admin { " (admin)" }
                        form method="post" action="/ui/logout" {
                            (csrf(s))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden CSRF field of a state-changing form.
pub fn csrf(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf()); }
}

/// The sign-in page, with an error when the last attempt failed.
pub fn login(next: &str, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in"))
            body.login {
                main #main {
                    h1 { "flowpilot console" }
                    @if let Some(e) = error { p.error role="alert" { (e) } }
                    form method="post" action="/ui/login" {
                        input type="hidden" name="next" value=(next);
                        label for="key" { "API key" }
                        input #key type="password" name="key" required autocomplete="current-password"
                            placeholder="fp_…" autofocus;
                        button type="submit" { "Sign in" }
                    }
                    p.hint {
                        "Any API key signs in, scoped to its account; an admin key may switch accounts. "
                        "Create one with " code { "flowpilot apikey create --account <id> --name ops" } "."
                    }
                }
            }
        }
    }
}

/// An error shown as a page: the status, the message and the field at
/// fault.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl PageError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        PageError {
            status,
            message: message.into(),
            field: None,
        }
    }

    /// 400 naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        PageError {
            field: Some(field.into()),
            ..Self::new(StatusCode::BAD_REQUEST, message)
        }
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 500, the cause logged, not shown.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        ApiError::internal(cause).into()
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError {
            status: e.status(),
            message: e.message().to_owned(),
            field: e.field_name().map(str::to_owned),
        }
    }
}

impl From<crate::store::Error> for PageError {
    fn from(e: crate::store::Error) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = html! {
            (DOCTYPE)
            html lang="en" {
                (head("Error"))
                body {
                    main #main {
                        h1 { (self.status.as_u16()) " " (self.status.canonical_reason().unwrap_or("")) }
                        p.error role="alert" data-field=[self.field.as_deref()] {
                            @if let Some(f) = &self.field { code { (f) } ": " }
                            (self.message)
                        }
                        p { a href="/ui/" { "Back to the console" } }
                    }
                }
            }
        };
        (self.status, body).into_response()
    }
}

/// A time, in UTC, machine-readable too.
pub fn time(t: DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S")) } }
}

/// An optional time, or a dash.
pub fn time_or_dash(t: Option<DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => time(t),
        None => html! { "—" },
    }
}

/// Milliseconds as people read them: `850 ms`, `12.4 s`, `3 min 5 s`,
/// `2 h 10 min`, `3 d 4 h`.
pub fn duration_ms(ms: f64) -> String {
    let s = ms / 1000.0;
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{} min {} s", (s / 60.0) as i64, (s % 60.0) as i64)
    } else if s < 86_400.0 {
        format!(
            "{} h {} min",
            (s / 3600.0) as i64,
            ((s % 3600.0) / 60.0) as i64
        )
    } else {
        format!(
            "{} d {} h",
            (s / 86_400.0) as i64,
            ((s % 86_400.0) / 3600.0) as i64
        )
    }
}

/// An optional duration, or a dash.
pub fn duration_or_dash(ms: Option<f64>) -> String {
    ms.map_or_else(|| "—".to_owned(), duration_ms)
}

/// A status as a badge (`FAILED`, `running`, `firing`...).
pub fn status(s: &str) -> Markup {
    html! { span class={"badge s-" (s.to_ascii_lowercase())} { (s) } }
}

/// A capped count: `1,234`, `10,000+`, `~52,000`.
pub fn count(c: &view::Count) -> String {
    let n = thousands(c.value);
    if c.estimated {
        format!("~{n}")
    } else if c.exact {
        n
    } else {
        format!("{n}+")
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `s` cut to `n` characters, with an ellipsis when cut.
pub fn clip(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The first characters of an id, the whole one in its title.
pub fn short_id(id: Uuid) -> Markup {
    let s = id.to_string();
    html! { span.mono title=(s) { (s[..8]) } }
}

/// Counts over time as a small bar chart (SVG, no script), the figures in
/// its title for screen readers and hover.
pub fn sparkline(counts: &[i64]) -> Markup {
    let most = counts.iter().copied().max().unwrap_or(0).max(1);
    let figures: Vec<String> = counts.iter().map(i64::to_string).collect();
    let label = format!(
        "attempts per twelfth of the window, oldest first: {}",
        figures.join(", ")
    );
    html! {
        svg.spark xmlns="http://www.w3.org/2000/svg" viewBox={"0 0 " (counts.len() * 6) " 20"} width=(counts.len() * 6) height="20"
            role="img" aria-label=(label) {
            title { (label) }
            @for (i, n) in counts.iter().enumerate() {
                @let h = if *n > 0 { (n * 18 / most).max(1) } else { 0 };
                rect x=(i * 6) y=(20 - h) width="5" height=(h) {}
            }
        }
    }
}

/// Pretty JSON in a `<pre>`.
pub fn json(v: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    html! { pre.json { (text) } }
}

/// Data for the page's script, in a JSON `<script>` element it reads: JSON
/// cannot end the element (`<` is escaped), and the CSP runs no inline
/// script.
pub fn data(id: &str, v: &serde_json::Value) -> Markup {
    let text = serde_json::to_string(v)
        .unwrap_or_default()
        .replace('<', "\\u003c");
    html! { script type="application/json" id=(id) { (PreEscaped(text)) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration_ms(850.0), "850 ms");
        assert_eq!(duration_ms(12_400.0), "12.4 s");
        assert_eq!(duration_ms(185_000.0), "3 min 5 s");
        assert_eq!(duration_ms(7_800_000.0), "2 h 10 min");
        assert_eq!(duration_ms(273_600_000.0), "3 d 4 h");
    }

    #[test]
    fn counts_say_when_they_stop_or_guess() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        let c = |value, exact, estimated| view::Count {
            value,
            exact,
            estimated,
        };
        assert_eq!(count(&c(12, true, false)), "12");
        assert_eq!(count(&c(10_000, false, false)), "10,000+");
        assert_eq!(count(&c(52_000, false, true)), "~52,000");
    }

    #[test]
    fn script_data_cannot_close_its_element() {
        let m = data(
            "d",
            &serde_json::json!({"x": "</script><script>alert(1)</script>"}),
        );
        assert!(!m.0.contains("</script><script>"), "{}", m.0);
    }

    #[test]
    fn markup_escapes_what_it_is_given() {
        let m = status("<script>alert(1)</script>");
        assert!(m.0.contains("&lt;script&gt;"), "{}", m.0);
        assert!(!m.0.contains("<script>"));
    }
}
