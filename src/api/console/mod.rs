//! The operator console: server-rendered HTML under `/ui/`, served by the
//! API process.
//!
//! - [`session`]: sign-in with an API key, the session cookie, CSRF;
//! - [`page`]: the layout, the error page, how values are shown;
//! - [`assets`]: the stylesheet, the script, vendored htmx and uPlot;
//! - one file per section: [`overview`], [`executions`], [`workflows`]
//!   (with [`graph`]), [`failures`], [`alerts`] (alerts and operations).
//!
//! Pages call the API's own handlers with the session's [`Auth`]: the same
//! checks, the same queries, the same account scoping; there is no second
//! implementation of a read or a write. Every page reads without
//! JavaScript (forms post and redirect); htmx refreshes tables in place and
//! uPlot draws charts when scripts run. Every response carries a strict
//! Content-Security-Policy: scripts only from `/ui/assets/`, nothing inline.
//!
//! [`Auth`]: crate::api::extract::Auth

pub mod alerts;
pub mod assets;
pub mod executions;
pub mod failures;
pub mod graph;
pub mod overview;
pub mod page;
pub mod session;
pub mod workflows;

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::middleware::{self, Next};
use axum::response::{Redirect, Response};
use axum::routing::{get, post};

pub use session::Sessions;

use super::AppState;
use page::PageError;

/// Scripts and styles from the console's own assets only; no inline
/// script, no framing, forms post only here.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes, under `/ui`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(overview::show))
        .route("/ui/login", get(session::login_form).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/account", post(session::switch))
        .route("/ui/assets/{name}", get(assets::serve))
        .route("/ui/executions", get(executions::list))
        .route("/ui/fragment/executions", get(executions::rows_fragment))
        .route("/ui/executions/{id}", get(executions::show))
        .route("/ui/executions/{id}/cancel", post(executions::cancel))
        .route("/ui/executions/{id}/retry", post(executions::retry))
        .route("/ui/workflows", get(workflows::list))
        .route("/ui/workflows/{id}", get(workflows::show))
        .route("/ui/workflows/{id}/activate", post(workflows::activate))
        .route("/ui/workflows/{id}/deactivate", post(workflows::deactivate))
        .route("/ui/failures", get(failures::list))
        .route("/ui/failures/bulk", post(failures::bulk))
        .route("/ui/alerts", get(alerts::list))
        .route("/ui/alerts/{id}/ack", post(alerts::ack))
        .route("/ui/operations", get(alerts::operations))
        .route("/ui/operations/{id}", get(alerts::operation))
        .route(
            "/ui/fragment/operations/{id}",
            get(alerts::operation_fragment),
        )
        .route("/ui/operations/{id}/cancel", post(alerts::cancel_operation))
        .route(
            "/ui/{*rest}",
            get(|| async { PageError::new(axum::http::StatusCode::NOT_FOUND, "no such page") }),
        )
        .layer(middleware::from_fn(headers))
}

/// Security headers on every console response; pages are not cached.
async fn headers(req: Request, next: Next) -> Response {
    let asset = req.uri().path().starts_with("/ui/assets/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !asset {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The query of a page, empty fields left out, kept in order to build the
/// links of the next page and the live refresh.
#[derive(Debug, Clone, Default)]
pub struct Filters(Vec<(String, String)>);

impl Filters {
    /// From a raw query string.
    pub fn from_query(raw: Option<&str>) -> Self {
        Self::from_form(raw.unwrap_or("").as_bytes())
    }

    /// From a urlencoded body (a posted form).
    pub fn from_form(body: &[u8]) -> Self {
        Filters(
            url::form_urlencoded::parse(body)
                .filter(|(_, v)| !v.trim().is_empty())
                .map(|(k, v)| (k.into_owned(), v.trim().to_owned()))
                .collect(),
        )
    }

    /// Removes `key` and gives its value.
    pub fn take(&mut self, key: &str) -> Option<String> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(i).1)
    }

    /// `k=v&...`, urlencoded.
    fn encoded(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&self.0)
            .finish()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// These filters with `key` set to `value`.
    pub fn with(&self, key: &str, value: &str) -> Filters {
        let mut f = self.without(key);
        f.0.push((key.to_owned(), value.to_owned()));
        f
    }

    /// These filters without `key`.
    pub fn without(&self, key: &str) -> Filters {
        Filters(self.0.iter().filter(|(k, _)| k != key).cloned().collect())
    }

    /// As the API's query type `T`; a time from a `datetime-local` input
    /// (`*_after`, `*_before`: no offset) is read as UTC.
    ///
    /// # Errors
    /// A 400 page naming the field.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, PageError> {
        let utc = Filters(
            self.0
                .iter()
                .map(|(k, v)| {
                    let time = k.ends_with("_after") || k.ends_with("_before");
                    let v = time
                        .then(|| utc_input(v))
                        .flatten()
                        .unwrap_or_else(|| v.clone());
                    (k.clone(), v)
                })
                .collect(),
        );
        Ok(super::extract::parse_query(&utc.encoded())?)
    }
}

/// `?k=v&...` of `f`, or nothing.
pub fn link(f: &Filters) -> String {
    if f.0.is_empty() {
        String::new()
    } else {
        format!("?{}", f.encoded())
    }
}

/// `2026-11-28T09:30` (a `datetime-local` input) as RFC 3339 UTC.
fn utc_input(v: &str) -> Option<String> {
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(v, f).ok())
        .map(|t| t.and_utc().to_rfc3339())
}

/// An RFC 3339 time as a `datetime-local` input's value (UTC).
pub fn local_input(v: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(v).map_or_else(
        |_| v.to_owned(),
        |t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M")
                .to_string()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_drop_empty_fields_and_read_local_times_as_utc() {
        let f = Filters::from_query(Some(
            "status=FAILED&workflow_id=&created_after=2026-11-28T09:30",
        ));
        assert_eq!(f.get("workflow_id"), None);
        #[derive(serde::Deserialize)]
        struct Q {
            status: Option<String>,
            created_after: Option<chrono::DateTime<chrono::Utc>>,
        }
        let q: Q = f.parse().unwrap();
        assert_eq!(q.status.as_deref(), Some("FAILED"));
        assert_eq!(
            q.created_after.unwrap().to_rfc3339(),
            "2026-11-28T09:30:00+00:00"
        );
        assert_eq!(local_input("2026-11-28T09:30:00+00:00"), "2026-11-28T09:30");
        assert_eq!(
            link(&f.with("cursor", "a b&c")),
            "?status=FAILED&created_after=2026-11-28T09%3A30&cursor=a+b%26c"
        );
    }

    #[test]
    fn a_bad_filter_names_its_field() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Q {
            workflow_id: Option<uuid::Uuid>,
        }
        let e = Filters::from_query(Some("workflow_id=nope"))
            .parse::<Q>()
            .unwrap_err();
        assert!(format!("{e:?}").contains("workflow_id"), "{e:?}");
    }
}
