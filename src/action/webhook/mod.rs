//! `webhook`: an HTTP call with a templated JSON body, the step's
//! idempotency key in an `Idempotency-Key` header, and a timeout; the
//! client that makes it, with the address guard of DESIGN.md, is
//! `provider::webhook`.
//!
//! ```json
//! {"id": "crm", "type": "webhook", "method": "POST", "url": "https://crm.example.com/hooks/signup",
//!  "headers": {"X-Source": "flowpilot"}, "body": {"email": "{{contact.email}}"}, "timeout": "10s"}
//! ```
//!
//! With `"batch": {"max": 50, "within": "2s"}` a step's call waits up to
//! `within` for calls of other steps to the same method, URL, headers and
//! timeout, and goes with up to `max - 1` of them as one request whose
//! body is `{"batch": [{"idempotency_key": ..., "body": ...}, ...]}`
//! (POST, PUT or PATCH only). Each step still judges its own answer and
//! keeps its own log row: when the receiver answers 2xx with
//! `{"results": [...]}`, one element per item in order, a step's answer is
//! its element (with the element's `"status"` as its status when it has
//! one); otherwise every step of the batch gets the whole answer.
//!
//! The answer is read up to [`MAX_BODY`]; a step that fails on it keeps
//! its status, the headers of [`KEPT_HEADERS`] and the first
//! [`FAILED_BODY_BYTES`] of its body in the attempt's log row.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value as Json, json};

use chrono::{DateTime, Utc};

use super::{ActionError, ErrorClass, FieldError, template};

mod batch;
pub use batch::{Batch, BatchConfig, DEFAULT_BATCH_WAIT, InBatch, MAX_BATCH, MAX_BATCH_WAIT};

/// Default request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest timeout a step may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);
/// Most bytes of an answer's body read and kept (the step's response).
pub const MAX_BODY: usize = 64 * 1024;
/// Bytes of an answer's body kept in the log row of a failed attempt.
pub const FAILED_BODY_BYTES: usize = 4 * 1024;
/// Answer headers kept with the response: what tells why a call failed or
/// when to call again.
pub const KEPT_HEADERS: [&str; 8] = [
    "content-type",
    "retry-after",
    "location",
    "x-request-id",
    "request-id",
    "ratelimit-remaining",
    "ratelimit-reset",
    "www-authenticate",
];
/// Headers flowpilot sets itself: a step may not.
const RESERVED_HEADERS: [&str; 6] = [
    "idempotency-key",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "upgrade",
];
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Configuration of a `webhook` step.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http(s)://` URL template.
    pub url: String,
    /// GET, POST (default), PUT, PATCH or DELETE.
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra headers; values are templates.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON body template, sent as `application/json`.
    #[serde(default)]
    pub body: Option<Json>,
    /// Timeout like `10s`; default 10 s, at most 120 s.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Deliver the call together with other steps' calls.
    #[serde(default)]
    pub batch: Option<BatchConfig>,
}

fn default_method() -> String {
    "POST".into()
}

/// A rendered request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Full URL.
    pub url: String,
    /// Headers, `Idempotency-Key` included.
    pub headers: Vec<(String, String)>,
    /// JSON body.
    pub body: Option<Json>,
    /// Timeout.
    pub timeout: Duration,
    /// Whether and how it goes together with other steps' calls.
    pub batch: Option<Batch>,
}

/// What came back.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// The headers of [`KEPT_HEADERS`] that were there, lower-case names.
    pub headers: BTreeMap<String, String>,
    /// Body as JSON when it parses, else as text (lossy UTF-8).
    pub body: Json,
    /// Whether the body was longer than [`MAX_BODY`] and cut there.
    pub truncated: bool,
    /// Time taken.
    pub duration_ms: u64,
    /// Set when the call went in a batch.
    pub batch: Option<InBatch>,
}

impl Response {
    /// What the log keeps: status, headers, body, time; `body_bytes` at
    /// most of the body (as text when cut).
    fn summary(&self, body_bytes: usize) -> Json {
        let text = self.body.to_string();
        let (body, truncated) = if text.len() <= body_bytes {
            (self.body.clone(), self.truncated)
        } else {
            let cut = match &self.body {
                Json::String(s) => s.as_str(),
                _ => text.as_str(),
            };
            (Json::String(prefix(cut, body_bytes).to_owned()), true)
        };
        let mut summary = json!({
            "status": self.status,
            "headers": self.headers,
            "body": body,
            "duration_ms": self.duration_ms,
        });
        if truncated {
            summary["body_truncated"] = json!(true);
        }
        if let Some(b) = self.batch {
            summary["batch"] = json!({"size": b.size, "index": b.index});
        }
        summary
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn prefix(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Webhook {
    fn timeout(&self) -> Result<Duration, String> {
        match &self.timeout {
            None => Ok(DEFAULT_TIMEOUT),
            Some(t) => {
                let d = humantime::parse_duration(t).map_err(|e| e.to_string())?;
                if d.is_zero() || d > MAX_TIMEOUT {
                    return Err(format!(
                        "must be between 1ms and {}s",
                        MAX_TIMEOUT.as_secs()
                    ));
                }
                Ok(d)
            }
        }
    }

    pub(super) fn validate(&self) -> Result<(), FieldError> {
        if !(self.url.starts_with("https://") || self.url.starts_with("http://")) {
            return Err(FieldError::new(
                "url",
                "must start with http:// or https://",
            ));
        }
        template::check(&self.url).map_err(|m| FieldError::new("url", m))?;
        if !METHODS.contains(&self.method.as_str()) {
            return Err(FieldError::new(
                "method",
                format!("must be one of {}", METHODS.join(", ")),
            ));
        }
        for (name, value) in &self.headers {
            let field = || format!("headers.{name}");
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| FieldError::new(field(), "not a valid header name"))?;
            if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(FieldError::new(
                    field(),
                    "set by flowpilot; a step may not set it",
                ));
            }
            header_value(value).map_err(|m| FieldError::new(field(), m))?;
            template::check(value).map_err(|m| FieldError::new(field(), m))?;
        }
        self.timeout().map_err(|m| FieldError::new("timeout", m))?;
        self.batch()?;
        Ok(())
    }

    fn batch(&self) -> Result<Option<Batch>, FieldError> {
        self.batch
            .as_ref()
            .map(|b| b.check(&self.method))
            .transpose()
    }

    pub(super) fn render(
        &self,
        scope: &Json,
        idempotency_key: String,
    ) -> Result<Request, ActionError> {
        let mut headers = Vec::with_capacity(self.headers.len() + 1);
        for (name, value) in &self.headers {
            let field = format!("headers.{name}");
            let value = super::render(&field, value, scope)?;
            header_value(&value)
                .map_err(|m| ActionError::invalid_config(format!("`{field}` as rendered {m}")))?;
            headers.push((name.clone(), value));
        }
        headers.push(("Idempotency-Key".into(), idempotency_key));
        let body = match &self.body {
            Some(b) => Some(super::render_json("body", b, scope)?),
            None => None,
        };
        Ok(Request {
            method: self.method.clone(),
            url: super::render("url", &self.url, scope)?,
            headers,
            body,
            timeout: self.timeout().map_err(ActionError::invalid_config)?,
            batch: self
                .batch()
                .map_err(|e| ActionError::invalid_config(e.to_string()))?,
        })
    }

    /// 2xx is done; 408 is a timeout, 429 a rate limit, 425 and 5xx
    /// transient (all retried; a `Retry-After` on 429 and 503 is passed on);
    /// the rest is permanent. A failure keeps the answer (status, headers,
    /// the first [`FAILED_BODY_BYTES`] of the body) for the attempt's log row.
    pub(super) fn judge(&self, resp: Response, now: DateTime<Utc>) -> Result<Json, ActionError> {
        let text = format!("webhook answered HTTP {}", resp.status);
        let class = match resp.status {
            200..=299 => return Ok(resp.summary(MAX_BODY)),
            408 => ErrorClass::Timeout,
            429 => ErrorClass::RateLimited,
            425 | 500..=599 => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        };
        let after = match resp.status {
            429 | 503 => resp
                .headers
                .get("retry-after")
                .and_then(|v| retry_after(v, now)),
            _ => None,
        };
        Err(ActionError::new(class, text)
            .retry_after(after)
            .with_response(resp.summary(FAILED_BODY_BYTES)))
    }
}

/// A `Retry-After` value: delay-seconds or an HTTP date (RFC 9110 §10.2.3);
/// a date in the past is no wait, a value that parses as neither is ignored.
pub fn retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// Whether `value` may be sent as a header value: no CR, LF, NUL or other
/// control character (a tab is fine), so that it cannot split the header.
fn header_value(value: &str) -> Result<(), &'static str> {
    reqwest::header::HeaderValue::from_bytes(value.as_bytes())
        .map(drop)
        .map_err(|_| "must not contain CR, LF or another control character")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_that_could_split_the_header_are_refused_naming_it() {
        for bad in ["a\r\nX-Evil: 1", "a\nb", "nul\u{0}"] {
            let w: Webhook = serde_json::from_value(
                json!({"url": "https://x.test", "headers": {"X-Trace": bad}}),
            )
            .unwrap();
            let e = w.validate().unwrap_err();
            assert_eq!(e.field, "headers.X-Trace", "{bad:?}");
        }
        let w: Webhook = serde_json::from_value(
            json!({"url": "https://x.test", "headers": {"Idempotency-Key": "mine"}}),
        )
        .unwrap();
        assert_eq!(w.validate().unwrap_err().field, "headers.Idempotency-Key");
        // A value that only renders badly fails the step, naming the header.
        let w: Webhook = serde_json::from_value(
            json!({"url": "https://x.test", "headers": {"X-Name": "{{contact.attributes.name}}"}}),
        )
        .unwrap();
        w.validate().unwrap();
        let scope = json!({"contact": {"attributes": {"name": "a\r\nb"}}});
        let err = w.render(&scope, "k".into()).unwrap_err();
        assert!(
            !err.retryable() && err.message.contains("headers.X-Name"),
            "{err}"
        );
    }

    #[test]
    fn a_failed_answer_keeps_its_status_headers_and_first_kib() {
        let w: Webhook = serde_json::from_value(json!({"url": "https://x.test"})).unwrap();
        let resp = Response {
            status: 400,
            headers: BTreeMap::from([("content-type".into(), "text/plain".into())]),
            body: Json::String("e".repeat(10_000)),
            truncated: false,
            duration_ms: 3,
            batch: None,
        };
        let err = w.judge(resp, Utc::now()).unwrap_err();
        let kept = err.response.unwrap();
        assert_eq!(kept["status"], 400);
        assert_eq!(kept["headers"]["content-type"], "text/plain");
        assert_eq!(kept["body"].as_str().unwrap().len(), FAILED_BODY_BYTES);
        assert_eq!(kept["body_truncated"], true);
    }

    #[test]
    fn responses_are_judged_by_status_class() {
        let w: Webhook = serde_json::from_value(json!({"url": "https://x.test"})).unwrap();
        let resp = |status| Response {
            status,
            headers: BTreeMap::new(),
            body: Json::Null,
            truncated: false,
            duration_ms: 1,
            batch: None,
        };
        let now = Utc::now();
        assert!(w.judge(resp(204), now).is_ok());
        for (status, class) in [
            (408, ErrorClass::Timeout),
            (425, ErrorClass::Transient),
            (429, ErrorClass::RateLimited),
            (500, ErrorClass::Transient),
            (503, ErrorClass::Transient),
            (400, ErrorClass::Permanent),
            (404, ErrorClass::Permanent),
        ] {
            let err = w.judge(resp(status), now).unwrap_err();
            assert_eq!(err.class, class, "HTTP {status}");
            assert_eq!(err.retryable(), status != 400 && status != 404);
        }
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_an_http_date_on_429_and_503_only() {
        let w: Webhook = serde_json::from_value(json!({"url": "https://x.test"})).unwrap();
        let now = DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let resp = |status, after: &str| Response {
            status,
            headers: BTreeMap::from([("retry-after".into(), after.into())]),
            body: Json::Null,
            truncated: false,
            duration_ms: 1,
            batch: None,
        };
        let after = |status, value| w.judge(resp(status, value), now).unwrap_err().retry_after;
        assert_eq!(after(429, "7"), Some(Duration::from_secs(7)));
        assert_eq!(
            after(503, "Fri, 27 Nov 2026 12:01:30 GMT"),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            after(429, "Fri, 27 Nov 2026 11:00:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(after(429, "soon"), None);
        assert_eq!(after(500, "7"), None, "only 429 and 503 carry it");
    }
}
