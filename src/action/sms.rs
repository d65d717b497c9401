//! `send_sms`: render a text from the contact and hand it to the configured
//! SMS provider (`crate::provider`: the outbox by default, or a
//! Twilio-style HTTP API).
//!
//! ```json
//! {"id": "nudge", "type": "send_sms", "body": "Your code expires soon", "to": "{{contact.phone}}"}
//! ```

use serde::Deserialize;
use serde_json::Value as Json;

use super::{ActionError, FieldError, template};

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
            return Err(ActionError::contact_data("the contact has no phone number"));
        }
        Ok(Message {
            to,
            body: render("body", &self.body)?,
        })
    }
}
