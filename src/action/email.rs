//! `send_email`: render a message from the contact and hand it to the
//! configured [`EmailProvider`] (the engine's outbox by default, or [`Smtp`]).
//!
//! ```json
//! {"id": "welcome", "type": "send_email", "subject": "Hi {{contact.attributes.first_name}}",
//!  "body": "Welcome aboard.", "to": "{{contact.email}}", "from": "team@example.com"}
//! ```

use lettre::message::Mailbox;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncTransport, Tokio1Executor};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{ActionError, Delivery, FieldError, mask, template};

/// Delivers emails. Implementations: [`Smtp`] here, the PostgreSQL outbox
/// in `engine::effects`.
#[async_trait::async_trait]
pub trait EmailProvider: Send + Sync {
    /// Delivers `msg`; returns a receipt for the step's log (recipient masked).
    ///
    /// # Errors
    /// Transient when a retry may succeed, permanent when it cannot.
    async fn send(&self, msg: &Message, delivery: &Delivery) -> Result<Json, ActionError>;
}

/// Configuration of a `send_email` step.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendEmail {
    /// Recipient template; default `{{contact.email}}`.
    #[serde(default)]
    pub to: Option<String>,
    /// Subject template.
    pub subject: String,
    /// Plain-text body template.
    pub body: String,
    /// Sender; default the provider's configured sender.
    #[serde(default)]
    pub from: Option<String>,
}

/// A rendered email.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Recipient address.
    pub to: String,
    /// Sender, when the step names one.
    pub from: Option<String>,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

impl SendEmail {
    pub(super) fn validate(&self) -> Result<(), FieldError> {
        if self.subject.trim().is_empty() {
            return Err(FieldError::new("subject", "must not be empty"));
        }
        for (field, t) in [
            ("to", self.to.as_deref()),
            ("subject", Some(&self.subject)),
            ("body", Some(&self.body)),
        ] {
            if let Some(t) = t {
                template::check(t).map_err(|m| FieldError::new(field, m))?;
            }
        }
        if let Some(from) = &self.from {
            from.parse::<Mailbox>()
                .map_err(|e| FieldError::new("from", format!("not an email address: {e}")))?;
        }
        Ok(())
    }

    pub(super) fn render(&self, scope: &Json) -> Result<Message, ActionError> {
        let render = |field, text| super::render(field, text, scope);
        let to = render("to", self.to.as_deref().unwrap_or("{{contact.email}}"))?;
        let to = to.trim().to_owned();
        if !to.contains('@') {
            return Err(ActionError::permanent("the contact has no email address"));
        }
        Ok(Message {
            to,
            from: self.from.clone(),
            subject: render("subject", &self.subject)?,
            body: render("body", &self.body)?,
        })
    }
}

/// An SMTP provider: `smtp://user:pass@host:587?tls=required` (STARTTLS),
/// `smtps://...` (TLS), `smtp://host:25` (plain).
#[derive(Clone)]
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
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
        Ok(Smtp { transport, from })
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
                .map_err(|e| ActionError::permanent(format!("from: {e}")))?,
            None => self.from.clone(),
        };
        let to: Mailbox = msg
            .to
            .parse()
            .map_err(|_| ActionError::permanent("the contact's email address is invalid"))?;
        let email = lettre::Message::builder()
            .from(from)
            .to(to)
            .subject(&msg.subject)
            .header(IdempotencyKey(idempotency_key.to_owned()))
            .body(msg.body.clone())
            .map_err(|e| ActionError::permanent(format!("building the message: {e}")))?;
        match self.transport.send(email).await {
            Ok(resp) => Ok(json!({
                "provider": "smtp",
                "to": mask(&msg.to),
                "code": resp.code().to_string(),
            })),
            Err(e) if e.is_permanent() => Err(ActionError::permanent(format!("smtp: {e}"))),
            Err(e) => Err(ActionError::transient(format!("smtp: {e}"))),
        }
    }
}

#[async_trait::async_trait]
impl EmailProvider for Smtp {
    async fn send(&self, msg: &Message, delivery: &Delivery) -> Result<Json, ActionError> {
        Smtp::send(self, msg, &delivery.idempotency_key).await
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
