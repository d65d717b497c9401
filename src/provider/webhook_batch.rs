//! Webhook aggregation: the calls of steps that opt in with `batch` (see
//! [`crate::action::webhook`]) go to their receiver together, one request
//! per batch through the same address guard and circuit breaker as a
//! single call; each step gets its own answer out of the batch's.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use super::batch::{Batcher, Rule};
use super::{Breakers, webhook};
use crate::action::ActionError;
use crate::action::webhook::{InBatch, MAX_BODY, Request, Response};

/// Most bytes of a batch's answer read: its items' answers together.
const MAX_BATCH_BODY: usize = 4 * 1024 * 1024;

/// The batches of a process.
pub type Batches = Batcher<Key, Item, Result<Response, ActionError>>;

/// What calls must share to go together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    method: String,
    url: String,
    /// Every header but the idempotency key.
    headers: Vec<(String, String)>,
    timeout: Duration,
    rule: Rule,
}

/// One step's part of a batch.
#[derive(Debug)]
pub struct Item {
    idempotency_key: String,
    body: Option<Json>,
}

/// Batches delivered with `client` behind `breakers`.
pub fn batches(client: webhook::Client, breakers: Breakers) -> Batches {
    Batcher::new(Arc::new(move |key: Key, items: Vec<Item>| {
        let (client, breakers) = (client.clone(), breakers.clone());
        async move { deliver(&client, &breakers, key, items).await }.boxed()
    }))
}

/// Splits `req`, when it asks to be batched, into its batch key, rule and
/// item.
pub fn part(req: &Request) -> Option<(Key, Rule, Item)> {
    let batch = req.batch?;
    let is_key = |name: &str| name.eq_ignore_ascii_case("idempotency-key");
    let idempotency_key = req
        .headers
        .iter()
        .find(|(n, _)| is_key(n))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mut headers: Vec<_> = req
        .headers
        .iter()
        .filter(|(n, _)| !is_key(n))
        .cloned()
        .collect();
    headers.sort();
    let rule = Rule {
        max: batch.max,
        within: batch.within,
        calls: batch.calls,
    };
    let key = Key {
        method: req.method.clone(),
        url: req.url.clone(),
        headers,
        timeout: req.timeout,
        rule,
    };
    let item = Item {
        idempotency_key,
        body: req.body.clone(),
    };
    Some((key, rule, item))
}

/// One request for `items`; an answer for each.
async fn deliver(
    client: &webhook::Client,
    breakers: &Breakers,
    key: Key,
    items: Vec<Item>,
) -> Vec<Result<Response, ActionError>> {
    let n = items.len();
    let mut headers = key.headers;
    headers.push(("Idempotency-Key".into(), batch_key(&items)));
    let body = items
        .into_iter()
        .map(|i| json!({"idempotency_key": i.idempotency_key, "body": i.body}))
        .collect::<Vec<_>>();
    let req = Request {
        method: key.method,
        url: key.url,
        headers,
        body: Some(json!({ "batch": body })),
        timeout: key.timeout,
        batch: None,
    };
    let most = MAX_BODY.saturating_mul(n).min(MAX_BATCH_BODY);
    match webhook::call_guarded(client, breakers, &req, most).await {
        Ok(resp) => split(&resp, n).into_iter().map(Ok).collect(),
        Err(e) => vec![Err(e); n],
    }
}

/// The batch's own idempotency key: the same items make the same key.
fn batch_key(items: &[Item]) -> String {
    let mut h = Sha256::new();
    for i in items {
        h.update(i.idempotency_key.as_bytes());
        h.update(b"\n");
    }
    format!("batch:{}", &hex::encode(h.finalize())[..32])
}

/// Each item's answer: its element of a 2xx `{"results": [...]}` with one
/// element per item (the element's `status` as its status when it has
/// one), else the whole answer.
fn split(resp: &Response, n: usize) -> Vec<Response> {
    let results = match &resp.body {
        Json::Object(o) if (200..300).contains(&resp.status) => o
            .get("results")
            .and_then(Json::as_array)
            .filter(|r| r.len() == n),
        _ => None,
    };
    (0..n)
        .map(|index| {
            let mut r = resp.clone();
            if let Some(results) = results {
                let mine = &results[index];
                r.body = mine.clone();
                if let Some(s) = mine.get("status").and_then(Json::as_u64) {
                    r.status = u16::try_from(s)
                        .ok()
                        .filter(|s| (100..=599).contains(s))
                        .unwrap_or(r.status);
                }
            }
            r.batch = Some(InBatch { size: n, index });
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn answer(status: u16, body: Json) -> Response {
        Response {
            status,
            headers: BTreeMap::new(),
            body,
            truncated: false,
            duration_ms: 4,
            batch: None,
        }
    }

    #[test]
    fn each_item_gets_its_result_or_the_whole_answer() {
        let results =
            json!({"results": [{"id": 1}, {"status": 422, "error": "bad"}, {"status": 99}]});
        let got = split(&answer(200, results), 3);
        assert_eq!(got[0].status, 200);
        assert_eq!(got[0].body, json!({"id": 1}));
        assert_eq!(got[1].status, 422, "an item's own status counts");
        assert_eq!(got[2].status, 200, "a status out of range is ignored");
        assert_eq!(got[2].batch, Some(InBatch { size: 3, index: 2 }));
        // Wrong length, or not a success: everyone gets the whole answer.
        for whole in [
            answer(200, json!({"results": [1, 2]})),
            answer(503, json!({"results": [1, 2, 3]})),
        ] {
            let got = split(&whole, 3);
            assert!(
                got.iter()
                    .all(|r| r.body == whole.body && r.status == whole.status)
            );
        }
    }

    #[test]
    fn calls_batch_by_everything_but_their_idempotency_key() {
        let req = |key: &str, trace: &str| Request {
            method: "POST".into(),
            url: "https://x.test/in".into(),
            headers: vec![
                ("X-Trace".into(), trace.into()),
                ("Idempotency-Key".into(), key.into()),
            ],
            body: Some(json!({"k": key})),
            timeout: Duration::from_secs(10),
            batch: Some(crate::action::webhook::Batch {
                max: 5,
                within: Duration::from_secs(1),
                calls: 4,
            }),
        };
        let (a, _, ia) = part(&req("e1:s:1", "t")).unwrap();
        let (b, _, _) = part(&req("e2:s:1", "t")).unwrap();
        let (c, _, _) = part(&req("e3:s:1", "other")).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c, "a different header is a different batch");
        assert_eq!(ia.idempotency_key, "e1:s:1");
        let single = Request {
            batch: None,
            ..req("e4:s:1", "t")
        };
        assert!(part(&single).is_none());
        let key = |ks: &[&str]| {
            batch_key(
                &ks.iter()
                    .map(|k| Item {
                        idempotency_key: (*k).into(),
                        body: None,
                    })
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(key(&["a", "b"]), key(&["a", "b"]));
        assert_ne!(key(&["a", "b"]), key(&["b", "a"]));
    }
}
