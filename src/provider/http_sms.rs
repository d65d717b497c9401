//! SMS through a Twilio-style HTTP API.

use serde_json::{Value as Json, json};

use chrono::Utc;

use super::{SmsProvider, http_failure};
use crate::action::sms::Message;
use crate::action::webhook::retry_after;
use crate::action::{ActionError, Delivery, ErrorClass, mask};

/// Twilio-style HTTP SMS provider: `POST {base}/2010-04-01/Accounts/{sid}/Messages.json`
/// with form fields `To`, `From`, `Body` and basic auth.
#[derive(Clone)]
pub struct HttpSms {
    http: reqwest::Client,
    /// Base URL, e.g. `https://api.twilio.com`.
    base_url: String,
    account_sid: String,
    auth_token: String,
    from: String,
}

impl HttpSms {
    /// A provider for one account.
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        account_sid: &str,
        auth_token: &str,
        from: &str,
    ) -> Self {
        HttpSms {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            account_sid: account_sid.to_owned(),
            auth_token: auth_token.to_owned(),
            from: from.to_owned(),
        }
    }

    /// Sends `msg`.
    ///
    /// # Errors
    /// Timeout or transient for connection errors, rate limited for 429,
    /// transient for 5xx (with `Retry-After` on 429 and 503 passed on),
    /// permanent for other 4xx.
    pub async fn send(&self, msg: &Message, idempotency_key: &str) -> Result<Json, ActionError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.base_url, self.account_sid
        );
        let resp = self
            .http
            .post(&url)
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .header("Idempotency-Key", idempotency_key)
            .form(&[
                ("To", msg.to.as_str()),
                ("From", self.from.as_str()),
                ("Body", msg.body.as_str()),
            ])
            .send()
            .await
            .map_err(|e| http_failure("sms provider", &e))?;
        let status = resp.status();
        let after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, Utc::now()));
        let body: Json = resp.json().await.unwrap_or(Json::Null);
        if status.is_success() {
            return Ok(json!({
                "provider": "http",
                "to": mask(&msg.to),
                "sid": body.get("sid").cloned().unwrap_or(Json::Null),
                "status": body.get("status").cloned().unwrap_or(Json::Null),
            }));
        }
        let text = format!("sms provider answered HTTP {}", status.as_u16());
        let class = match status.as_u16() {
            429 => ErrorClass::RateLimited,
            500..=599 => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        };
        let after = after.filter(|_| matches!(status.as_u16(), 429 | 503));
        Err(ActionError::new(class, text).retry_after(after))
    }
}

#[async_trait::async_trait]
impl SmsProvider for HttpSms {
    async fn send(&self, msg: &Message, delivery: &Delivery) -> Result<Json, ActionError> {
        HttpSms::send(self, msg, &delivery.idempotency_key).await
    }

    fn breaker_key(&self) -> Option<String> {
        Some(format!("sms:{}", self.account_sid))
    }
}
