//! Email over SMTP (lettre): STARTTLS, TLS or plain for a local relay.

use lettre::message::Mailbox;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncTransport, Tokio1Executor};
use serde_json::{Value as Json, json};

use super::EmailProvider;
use crate::action::email::Message;
use crate::action::{ActionError, Delivery, ErrorClass, mask};

/// An SMTP provider: `smtp://user:pass@host:587?tls=required` (STARTTLS),
/// `smtps://...` (TLS), `smtp://host:25` (plain).
#[derive(Clone)]
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// `smtp:<host>:<port>`, its circuit breaker's key.
    breaker: String,
}

impl Smtp {
    /// A provider sending through `url` as `from` by default.
    ///
    /// # Errors
    /// A message when the URL or the sender does not parse.
    pub fn new(url: &str, from: &str) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("--smtp-url: {e}"))?
            .build();
        let from = from.parse().map_err(|e| format!("--email-from: {e}"))?;
        let parsed = url::Url::parse(url).map_err(|e| format!("--smtp-url: {e}"))?;
        let breaker = format!(
            "smtp:{}:{}",
            parsed.host_str().unwrap_or_default(),
            parsed
                .port()
                .unwrap_or(if parsed.scheme() == "smtps" { 465 } else { 587 })
        );
        Ok(Smtp {
            transport,
            from,
            breaker,
        })
    }

    /// Sends `msg`; the idempotency key travels as a header so a relay can
    /// drop a duplicate of one attempt.
    ///
    /// # Errors
    /// Transient for connection problems and 4xx SMTP replies, permanent
    /// for 5xx replies and unparseable addresses.
    pub async fn send(&self, msg: &Message, idempotency_key: &str) -> Result<Json, ActionError> {
        let from = match &msg.from {
            Some(f) => f
                .parse()
                .map_err(|e| ActionError::invalid_config(format!("from: {e}")))?,
            None => self.from.clone(),
        };
        let to: Mailbox = msg
            .to
            .parse()
            .map_err(|_| ActionError::contact_data("the contact's email address is invalid"))?;
        let email = lettre::Message::builder()
            .from(from)
            .to(to)
            .subject(&msg.subject)
            .header(IdempotencyKey(idempotency_key.to_owned()))
            .body(msg.body.clone())
            .map_err(|e| ActionError::invalid_config(format!("building the message: {e}")))?;
        match self.transport.send(email).await {
            Ok(resp) => Ok(json!({
                "provider": "smtp",
                "to": mask(&msg.to),
                "code": resp.code().to_string(),
            })),
            Err(e) if e.is_permanent() => Err(ActionError::permanent(format!("smtp: {e}"))),
            Err(e) if e.is_timeout() => {
                Err(ActionError::new(ErrorClass::Timeout, format!("smtp: {e}")))
            }
            Err(e) => Err(ActionError::transient(format!("smtp: {e}"))),
        }
    }
}

#[async_trait::async_trait]
impl EmailProvider for Smtp {
    async fn send(&self, msg: &Message, delivery: &Delivery) -> Result<Json, ActionError> {
        Smtp::send(self, msg, &delivery.idempotency_key).await
    }

    fn breaker_key(&self) -> Option<String> {
        Some(self.breaker.clone())
    }
}

/// `Idempotency-Key` header on outgoing mail.
#[derive(Clone)]
struct IdempotencyKey(String);

impl lettre::message::header::Header for IdempotencyKey {
    fn name() -> lettre::message::header::HeaderName {
        lettre::message::header::HeaderName::new_from_ascii_str("Idempotency-Key")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(IdempotencyKey(s.to_owned()))
    }
    fn display(&self) -> lettre::message::header::HeaderValue {
        lettre::message::header::HeaderValue::new(Self::name(), self.0.clone())
    }
}
