//! `send_sms`: render a text from the contact and hand it to the configured
//! [`SmsProvider`] (the engine's outbox by default, or [`HttpSms`], a
//! Twilio-style form POST).
//!
//! ```json
//! {"id": "nudge", "type": "send_sms", "body": "Your code expires soon", "to": "{{contact.phone}}"}
//! ```

use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{ActionError, Delivery, FieldError, mask, template};

/// Delivers SMS. Implementations: [`HttpSms`] here, the PostgreSQL outbox
/// in `engine::effects`.
#[async_trait::async_trait]
pub trait SmsProvider: Send + Sync {
    /// Delivers `msg`; returns a receipt for the step's log (number masked).
    ///
    /// # Errors
    /// Transient when a retry may succeed, permanent when it cannot.
    async fn send(&self, msg: &Message, delivery: &Delivery) -> Result<Json, ActionError>;
}

/// Configuration of a `send_sms` step.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendSms {
    /// Recipient template; default `{{contact.phone}}`.
    #[serde(default)]
    pub to: Option<String>,
    /// Text template.
    pub body: String,
}

/// A rendered SMS.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Recipient number.
    pub to: String,
    /// Text.
    pub body: String,
}

impl SendSms {
    pub(super) fn validate(&self) -> Result<(), FieldError> {
        if self.body.trim().is_empty() {
            return Err(FieldError::new("body", "must not be empty"));
        }
        template::check(&self.body).map_err(|m| FieldError::new("body", m))?;
        if let Some(to) = &self.to {
            template::check(to).map_err(|m| FieldError::new("to", m))?;
        }
        Ok(())
    }

    pub(super) fn render(&self, scope: &Json) -> Result<Message, ActionError> {
        let render = |field, text| super::render(field, text, scope);
        let to = render("to", self.to.as_deref().unwrap_or("{{contact.phone}}"))?;
        let to = to.trim().to_owned();
        if to.chars().filter(char::is_ascii_digit).count() < 5 {
            return Err(ActionError::permanent("the contact has no phone number"));
        }
        Ok(Message {
            to,
            body: render("body", &self.body)?,
        })
    }
}

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
    /// Transient for connection errors, 429 and 5xx; permanent for other 4xx.
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
            .map_err(|e| ActionError::transient(format!("sms provider: {}", without_url(&e))))?;
        let status = resp.status();
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
        if status.as_u16() == 429 || status.is_server_error() {
            Err(ActionError::transient(text))
        } else {
            Err(ActionError::permanent(text))
        }
    }
}

#[async_trait::async_trait]
impl SmsProvider for HttpSms {
    async fn send(&self, msg: &Message, delivery: &Delivery) -> Result<Json, ActionError> {
        HttpSms::send(self, msg, &delivery.idempotency_key).await
    }
}

/// A reqwest error's text without the URL, which may carry credentials.
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_request() {
        "request failed"
    } else {
        "failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {cause}")
    }
}
