//! `send_email`: render a message from the contact and hand it to the
//! configured email provider (`crate::provider`: the outbox by default, or SMTP).
//!
//! ```json
//! {"id": "welcome", "type": "send_email", "subject": "Hi {{contact.attributes.first_name}}",
//!  "body": "Welcome aboard.", "to": "{{contact.email}}", "from": "team@example.com"}
//! ```

use serde::Deserialize;
use serde_json::Value as Json;

use super::{ActionError, FieldError, template};

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
            from.parse::<lettre::message::Mailbox>()
                .map_err(|e| FieldError::new("from", format!("not an email address: {e}")))?;
        }
        Ok(())
    }

    pub(super) fn render(&self, scope: &Json) -> Result<Message, ActionError> {
        let render = |field, text| super::render(field, text, scope);
        let to = render("to", self.to.as_deref().unwrap_or("{{contact.email}}"))?;
        let to = to.trim().to_owned();
        if !to.contains('@') {
            return Err(ActionError::contact_data(
                "the contact has no email address",
            ));
        }
        Ok(Message {
            to,
            from: self.from.clone(),
            subject: render("subject", &self.subject)?,
            body: render("body", &self.body)?,
        })
    }
}
