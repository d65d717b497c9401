//! The dispatcher: every worker process takes due rows of the alert
//! outbox (`alert_deliveries`, `FOR UPDATE SKIP LOCKED`, held for a minute
//! while it sends), sends each through its channel, and records it sent,
//! or retries it with backoff (8 attempts, a failure a retry cannot cure
//! at once ends it).
//!
//! A webhook channel's POST is signed: `X-Flowpilot-Signature: t=<unix
//! seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the channel's
//! secret>`, with the delivery's id in `X-Flowpilot-Delivery`. A receiver
//! recomputes the HMAC over the raw body, compares in constant time,
//! refuses a `t` more than 5 minutes from its clock, and drops a delivery
//! id it has seen (README, "Alerts").

use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use hmac::{KeyInit, Mac};
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::rule::{Channel, stored_channels};
use super::{Alerts, Error};
use crate::action::webhook::Request;
use crate::action::{ActionError, Delivery, email, sms};
use crate::store::alert::delivery::{self as outbox, Taken};

/// Deliveries taken per round.
const BATCH: i64 = 50;
/// Sends at once.
const CONCURRENCY: usize = 10;
/// How long a taken delivery is held from other dispatchers.
const HOLD_S: f64 = 60.0;
/// Sends tried before a delivery fails for good.
const MAX_ATTEMPTS: i32 = 8;
/// Longest backoff between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Timeout of a Slack or webhook call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// `t=<t>,v1=<hex HMAC-SHA256("<t>.<body>")>` under `secret`.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The dispatcher.
pub struct Dispatcher {
    alerts: Alerts,
}

impl Dispatcher {
    /// A dispatcher of `alerts`.
    pub fn new(alerts: Alerts) -> Self {
        Dispatcher { alerts }
    }

    /// Runs until `shutdown`.
    ///
    /// # Errors
    /// None: errors are logged and the next round tries again.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let interval = self.alerts.settings.dispatch_interval;
        loop {
            match self.round().await {
                // A full batch: there may be more at once.
                Ok(n) if n == usize::try_from(BATCH).unwrap_or(usize::MAX) => continue,
                Ok(_) => {}
                Err(e) => warn!(error = %e, "alert dispatch failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(interval) => {}
            }
        }
        Ok(())
    }

    /// Sends what is due; returns how many deliveries it took.
    ///
    /// # Errors
    /// Database errors.
    pub async fn round(&self) -> Result<usize, Error> {
        let taken = outbox::take_due(&self.alerts.pool, BATCH, HOLD_S).await?;
        let n = taken.len();
        let results: Vec<Result<(), Error>> = futures::stream::iter(taken)
            .map(|t| self.deliver(t))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for r in results {
            r?;
        }
        Ok(n)
    }

    async fn deliver(&self, t: Taken) -> Result<(), Error> {
        let pool = &self.alerts.pool;
        let channels = stored_channels(&t.channels.0);
        let Some(channel) = usize::try_from(t.channel)
            .ok()
            .and_then(|i| channels.get(i))
        else {
            outbox::not_sent(pool, t.id, "the rule no longer has this channel", None).await?;
            return Ok(());
        };
        match self.send(channel, &t).await {
            Ok(()) => {
                debug!(delivery_id = %t.id, alert_id = %t.alert_id, channel = channel.kind(), "alert delivered");
                outbox::sent(pool, t.id).await?;
            }
            Err(mut e) => {
                e.message = scrub(channel, &e.message);
                let retry = (e.class.retryable() && t.attempts < MAX_ATTEMPTS).then(|| {
                    let backoff = Duration::from_secs(1 << t.attempts.clamp(0, 9)).min(MAX_BACKOFF);
                    Utc::now() + e.retry_after.unwrap_or(backoff).min(MAX_BACKOFF)
                });
                warn!(delivery_id = %t.id, alert_id = %t.alert_id, channel = channel.kind(),
                      attempt = t.attempts, error = %e, retry = retry.is_some(), "alert delivery failed");
                outbox::not_sent(pool, t.id, &e.to_string(), retry).await?;
            }
        }
        Ok(())
    }

    async fn send(&self, channel: &Channel, t: &Taken) -> Result<(), ActionError> {
        let text = text_of(t);
        let delivery = Delivery {
            account_id: t.account_id,
            execution_id: None,
            idempotency_key: format!("alert:{}", t.id),
        };
        match channel {
            Channel::Email { to } => {
                let msg = email::Message {
                    to: to.clone(),
                    from: None,
                    subject: format!("[flowpilot] {}: {}", t.rule_name, first_line(&t.summary)),
                    body: text,
                };
                self.alerts.email.send(&msg, &delivery).await.map(drop)
            }
            Channel::Sms { to } => {
                let msg = sms::Message {
                    to: to.clone(),
                    body: text.chars().take(300).collect(),
                };
                self.alerts.sms.send(&msg, &delivery).await.map(drop)
            }
            Channel::Slack { url } => self.post(url, &json!({"text": text}), vec![]).await,
            Channel::Webhook { url, secret } => {
                let body = payload(t);
                let bytes = serde_json::to_vec(&body).unwrap_or_default();
                let sig = signature(secret.as_bytes(), Utc::now().timestamp(), &bytes);
                let headers = vec![
                    ("X-Flowpilot-Signature".to_owned(), sig),
                    ("X-Flowpilot-Delivery".to_owned(), t.id.to_string()),
                    ("X-Flowpilot-Event".to_owned(), "alert".to_owned()),
                ];
                self.post(url, &body, headers).await
            }
        }
    }

    /// POSTs `body` through the guarded webhook client (the address guard
    /// of webhook steps applies); a 2xx delivers.
    async fn post(
        &self,
        url: &str,
        body: &Json,
        headers: Vec<(String, String)>,
    ) -> Result<(), ActionError> {
        let resp = self
            .alerts
            .webhook
            .call(&Request {
                method: "POST".into(),
                url: url.to_owned(),
                headers,
                body: Some(body.clone()),
                timeout: CALL_TIMEOUT,
                batch: None,
            })
            .await?;
        match resp.status {
            200..=299 => Ok(()),
            408 | 425 | 429 | 500..=599 => Err(ActionError::transient(format!(
                "answered HTTP {}",
                resp.status
            ))),
            s => Err(ActionError::permanent(format!("answered HTTP {s}"))),
        }
    }
}

/// `text` without the channel's secret: a Slack URL is one (an error
/// naming the URL would show it in logs and in the alert's deliveries).
fn scrub(channel: &Channel, text: &str) -> String {
    match channel {
        Channel::Slack { url } => text.replace(url.as_str(), "<slack webhook url>"),
        _ => text.to_owned(),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(120).collect()
}

/// What email, SMS and Slack say.
fn text_of(t: &Taken) -> String {
    let escalated = if t.channel > 0 {
        format!(" Escalated (channel {}): not acknowledged.", t.channel + 1)
    } else {
        String::new()
    };
    format!(
        "[flowpilot] {} ({}): {}\n{} occurrence(s) since {}.{escalated}\nAlert {}: acknowledge with POST /api/v1/alerts/{}/ack",
        t.rule_name,
        t.rule_kind,
        t.summary,
        t.occurrences,
        t.occurred_at.to_rfc3339(),
        t.alert_id,
        t.alert_id
    )
}

/// The JSON a webhook channel receives.
fn payload(t: &Taken) -> Json {
    json!({
        "type": "alert",
        "delivery_id": t.id,
        "alert_id": t.alert_id,
        "rule": {"id": t.rule_id, "name": t.rule_name, "kind": t.rule_kind},
        "account_id": t.account_id,
        "summary": t.summary,
        "details": t.details.0,
        "occurrences": t.occurrences,
        "occurred_at": t.occurred_at,
        "channel": t.channel,
        "escalated": t.channel > 0,
        "sent_at": Utc::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::signature;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_timestamp_a_dot_and_the_body() {
        // The value of Python's
        // hmac.new(b"0123456789abcdef", b'1700000000.{"a":1}', "sha256").hexdigest()
        assert_eq!(
            signature(b"0123456789abcdef", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=9eb18f493f8ec135d9eb2dad817c369bb4e9cbfa818657897a7437c1cd8c3a23"
        );
    }
}
