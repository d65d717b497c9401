//! A webhook step's `batch` (see [`super`]): how many calls may go
//! together and how long one waits for the others.

use std::time::Duration;

use serde::Deserialize;

use super::FieldError;

/// Most steps' calls in one batched request.
pub const MAX_BATCH: usize = 1000;
/// Longest a step's call may wait for others to batch with.
pub const MAX_BATCH_WAIT: Duration = Duration::from_secs(60);
/// How long a call waits for others when a step's `batch` names no `within`.
pub const DEFAULT_BATCH_WAIT: Duration = Duration::from_secs(1);
/// Most batched requests of one batch key in flight at once.
pub const MAX_BATCH_CALLS: usize = 64;
/// Batched requests in flight at once when a step's `batch` names no
/// `calls`: with 20 steps waiting, batches of two or three, which made
/// 30% fewer calls at no loss of throughput even against a receiver that
/// serves every request at once (`cargo bench --bench batching`).
pub const DEFAULT_BATCH_CALLS: usize = 8;

/// A step's `batch`: how many calls may go together and how long one
/// waits for the others.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most calls in one request, 2 to [`MAX_BATCH`].
    pub max: usize,
    /// Longest wait like `2s`, at most [`MAX_BATCH_WAIT`]; default 1 s.
    #[serde(default)]
    pub within: Option<String>,
    /// Batched requests in flight at once (per worker process), 1 to
    /// [`MAX_BATCH_CALLS`]; default [`DEFAULT_BATCH_CALLS`]. Fewer make
    /// bigger batches, and steps wait longer for a free one.
    #[serde(default)]
    pub calls: Option<usize>,
}

/// How a rendered call is batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Batch {
    /// Most calls in one request.
    pub max: usize,
    /// Longest wait for the others.
    pub within: Duration,
    /// Batched requests in flight at once.
    pub calls: usize,
}

/// Where a step's answer came from when its call went in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InBatch {
    /// Calls in the request.
    pub size: usize,
    /// This call's place among them, from 0.
    pub index: usize,
}

impl BatchConfig {
    /// The batching of a step whose method is `method`.
    pub(super) fn check(&self, method: &str) -> Result<Batch, FieldError> {
        if !matches!(method, "POST" | "PUT" | "PATCH") {
            return Err(FieldError::new(
                "batch",
                "a batch goes as one JSON body: the method must be POST, PUT or PATCH",
            ));
        }
        if !(2..=MAX_BATCH).contains(&self.max) {
            return Err(FieldError::new(
                "batch.max",
                format!("must be between 2 and {MAX_BATCH}"),
            ));
        }
        let within = match &self.within {
            None => DEFAULT_BATCH_WAIT,
            Some(t) => humantime::parse_duration(t)
                .map_err(|e| FieldError::new("batch.within", e.to_string()))?,
        };
        if within > MAX_BATCH_WAIT {
            return Err(FieldError::new(
                "batch.within",
                format!("must be at most {}s", MAX_BATCH_WAIT.as_secs()),
            ));
        }
        let calls = self.calls.unwrap_or(DEFAULT_BATCH_CALLS);
        if !(1..=MAX_BATCH_CALLS).contains(&calls) {
            return Err(FieldError::new(
                "batch.calls",
                format!("must be between 1 and {MAX_BATCH_CALLS}"),
            ));
        }
        Ok(Batch {
            max: self.max,
            within,
            calls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Webhook;
    use super::*;
    use serde_json::{Value as Json, json};

    #[test]
    fn a_batch_is_checked_field_by_field_and_rendered_with_its_wait() {
        let field = |cfg: Json| {
            let w: Webhook = serde_json::from_value(cfg).unwrap();
            w.validate().err().map(|e| e.field)
        };
        let url = "https://x.test";
        for (batch, method, wrong) in [
            (json!({"max": 1}), "POST", Some("batch.max")),
            (json!({"max": 1001}), "POST", Some("batch.max")),
            (
                json!({"max": 5, "within": "soon"}),
                "POST",
                Some("batch.within"),
            ),
            (
                json!({"max": 5, "within": "2m"}),
                "POST",
                Some("batch.within"),
            ),
            (json!({"max": 5}), "GET", Some("batch")),
            (json!({"max": 5}), "DELETE", Some("batch")),
            (json!({"max": 5, "within": "0s"}), "PUT", None),
            (json!({"max": 5, "calls": 0}), "POST", Some("batch.calls")),
            (json!({"max": 5, "calls": 65}), "POST", Some("batch.calls")),
            (json!({"max": 5, "calls": 64}), "PATCH", None),
        ] {
            let cfg = json!({"url": url, "method": method, "batch": batch});
            assert_eq!(field(cfg).as_deref(), wrong, "{batch} {method}");
        }
        assert!(
            serde_json::from_value::<Webhook>(json!({"url": url, "batch": {"max": 2, "size": 1}}))
                .is_err(),
            "unknown fields of batch are refused"
        );
        let w: Webhook =
            serde_json::from_value(json!({"url": url, "batch": {"max": 50, "within": "2s"}}))
                .unwrap();
        let req = w.render(&json!({}), "k".into()).unwrap();
        let within = Duration::from_secs(2);
        let calls = DEFAULT_BATCH_CALLS;
        assert_eq!(
            req.batch,
            Some(Batch {
                max: 50,
                within,
                calls
            })
        );
        let w: Webhook = serde_json::from_value(json!({"url": url, "batch": {"max": 9}})).unwrap();
        let req = w.render(&json!({}), "k".into()).unwrap();
        assert_eq!(req.batch.unwrap().within, DEFAULT_BATCH_WAIT);
        let w: Webhook =
            serde_json::from_value(json!({"url": url, "batch": {"max": 9, "calls": 2}})).unwrap();
        let req = w.render(&json!({}), "k".into()).unwrap();
        assert_eq!(req.batch.unwrap().calls, 2);
    }
}
