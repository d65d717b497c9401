//! The built-in actions a workflow step can take, one file per kind.
//!
//! Each action parses and validates its own configuration (errors name the
//! field), and [`run`] turns a step plus the execution's scope into an
//! [`Outcome`]: done (with a response, the next step, a contact change), or
//! parked until a time. Side effects go through the [`Effects`] trait, which
//! the engine implements with real providers; what touches the execution
//! row or the contact is returned as data for the engine to commit inside
//! the step's checkpoint transaction.
//!
//! Every failure carries an [`ErrorClass`], set where the cause is known
//! (the action or its provider); the class decides whether the engine
//! retries the step, waits for the provider, or fails it.

pub mod arq;
pub mod condition;
pub mod contact;
pub mod email;
mod error;
mod foresight;
pub mod sms;
pub mod template;
mod throttle;
pub mod wait;
pub mod webhook;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::{Value as Json, json};

pub use crate::domain::ErrorClass;
pub use error::{ActionError, FieldError};
pub use foresight::Foresight;
pub use throttle::RATE_LIMITED;
use throttle::throttle;

/// Renders the step's text `field`; past the template cap the step fails
/// for good, naming the field.
fn render(field: &str, text: &str, scope: &Json) -> Result<String, ActionError> {
    template::render_str(text, scope).map_err(|e| ActionError::too_large(field, e))
}

/// As [`render`], for a JSON `field` (a body, arguments).
fn render_json(field: &str, value: &Json, scope: &Json) -> Result<Json, ActionError> {
    template::render_json(value, scope).map_err(|e| ActionError::too_large(field, e))
}

/// A built-in action with its configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send an email through the configured provider.
    SendEmail(email::SendEmail),
    /// Send an SMS through the configured provider.
    SendSms(sms::SendSms),
    /// Call an HTTP endpoint.
    Webhook(webhook::Webhook),
    /// Wait for a duration or until a time, optionally inside a send window.
    Wait(wait::Wait),
    /// Branch on contact fields and tags.
    Condition(condition::Condition),
    /// Change contact fields and attributes.
    UpdateContact(contact::UpdateContact),
    /// Add a tag to the contact.
    AddTag(contact::Tag),
    /// Remove a tag from the contact.
    RemoveTag(contact::Tag),
    /// A goal reached: the execution completes.
    Goal(contact::Goal),
    /// The execution completes.
    End,
    /// Run a job on an external arq worker and resume with its result.
    Arq(arq::ArqJob),
}

impl Action {
    /// The `type` of the step.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::SendEmail(_) => "send_email",
            Action::SendSms(_) => "send_sms",
            Action::Webhook(_) => "webhook",
            Action::Wait(_) => "wait",
            Action::Condition(_) => "condition",
            Action::UpdateContact(_) => "update_contact",
            Action::AddTag(_) => "add_tag",
            Action::RemoveTag(_) => "remove_tag",
            Action::Goal(_) => "goal",
            Action::End => "end",
            Action::Arq(_) => "arq",
        }
    }

    /// Whether the action touches nothing outside PostgreSQL (no provider,
    /// no queue, no clock): running it again gives the same outcome, so it
    /// may commit together with the steps after it.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            Action::Condition(_)
                | Action::UpdateContact(_)
                | Action::AddTag(_)
                | Action::RemoveTag(_)
                | Action::Goal(_)
                | Action::End
        )
    }

    /// Every action type, as spelled in definitions.
    pub const KINDS: [&'static str; 11] = [
        "send_email",
        "send_sms",
        "webhook",
        "wait",
        "condition",
        "update_contact",
        "add_tag",
        "remove_tag",
        "goal",
        "end",
        "arq",
    ];

    /// Parses the configuration of a step of type `kind` (the step object
    /// without `id`, `type`, `next` and `retry`).
    ///
    /// # Errors
    /// [`FieldError`] naming the field at fault, or `type` for an unknown kind.
    pub fn parse(kind: &str, config: Json) -> Result<Action, FieldError> {
        let action = match kind {
            "send_email" => Action::SendEmail(from_config(config)?),
            "send_sms" => Action::SendSms(from_config(config)?),
            "webhook" => Action::Webhook(from_config(config)?),
            "wait" => Action::Wait(from_config(config)?),
            "condition" => Action::Condition(from_config(config)?),
            "update_contact" => Action::UpdateContact(from_config(config)?),
            "add_tag" => Action::AddTag(from_config(config)?),
            "remove_tag" => Action::RemoveTag(from_config(config)?),
            "goal" => Action::Goal(from_config(config)?),
            "end" => {
                let _: contact::NoFields = from_config(config)?;
                Action::End
            }
            "arq" => Action::Arq(from_config(config)?),
            other => {
                return Err(FieldError::new(
                    "type",
                    format!(
                        "unknown action type `{other}` (expected one of {})",
                        Action::KINDS.join(", ")
                    ),
                ));
            }
        };
        action.validate()?;
        Ok(action)
    }

    /// Checks beyond the shape: durations, URLs, windows, templates.
    fn validate(&self) -> Result<(), FieldError> {
        match self {
            Action::SendEmail(a) => a.validate(),
            Action::SendSms(a) => a.validate(),
            Action::Webhook(a) => a.validate(),
            Action::Wait(a) => a.validate(),
            Action::Condition(a) => a.validate(),
            Action::UpdateContact(a) => a.validate(),
            Action::AddTag(t) | Action::RemoveTag(t) => t.validate(),
            Action::Arq(a) => a.validate(),
            Action::Goal(_) | Action::End => Ok(()),
        }
    }

    /// Every way [`run`] may route on after this action, for checks of the
    /// whole definition.
    pub fn exits(&self) -> Vec<Next> {
        match self {
            Action::Condition(c) => c.exits(),
            Action::Goal(_) | Action::End => vec![Next::End],
            _ => vec![Next::Following],
        }
    }

    /// Step ids this action may jump to (condition branches).
    pub fn targets(&self) -> Vec<(&'static str, &str)> {
        match self {
            Action::Condition(c) => c.targets(),
            _ => Vec::new(),
        }
    }
}

/// Deserializes a step's configuration, reporting the path of a bad field.
fn from_config<T: DeserializeOwned>(config: Json) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(config).map_err(|e| {
        let field = field_path(&e).unwrap_or_else(|| "(step)".to_owned());
        FieldError::new(field, e.into_inner().to_string())
    })
}

/// The dotted path of the field a deserialization error is about, if any:
/// serde names missing and unknown fields only in its message, so they are
/// read from there. Shared with the API's request parsing.
pub fn field_path<E: std::fmt::Display>(e: &serde_path_to_error::Error<E>) -> Option<String> {
    let path = e.path().to_string();
    let inner = e.inner().to_string();
    let named = ["missing field `", "unknown field `"].iter().find_map(|p| {
        inner
            .split_once(p)
            .and_then(|(_, r)| r.split_once('`'))
            .map(|(f, _)| f.to_owned())
    });
    match (path.as_str(), named) {
        (".", None) => None,
        (".", Some(f)) => Some(f),
        (p, Some(f)) if inner.starts_with("missing") => Some(format!("{p}.{f}")),
        (p, _) => Some(p.to_owned()),
    }
}

/// What a step sees when it runs.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// The execution's account.
    pub account_id: uuid::Uuid,
    /// The execution's id.
    pub execution_id: uuid::Uuid,
    /// The step's id in the definition.
    pub step_id: &'a str,
    /// Its position.
    pub step_index: usize,
    /// Attempt at this step, from 1; part of the idempotency key.
    pub attempt: i32,
    /// State this step stored when it parked earlier, if any.
    pub state: Option<&'a Json>,
    /// Template scope: `contact`, `execution`, `steps`.
    pub scope: &'a Json,
    /// The contact's IANA timezone.
    pub timezone: &'a str,
    /// The contact's tags.
    pub tags: &'a [String],
    /// Whether the contact opted out of messages.
    pub opted_out: bool,
    /// The time the step runs at.
    pub now: DateTime<Utc>,
}

impl Input<'_> {
    /// `<execution id>:<step index>:<attempt>`: the same for a re-run of
    /// one attempt after a crash, new for each retry (DESIGN.md).
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}:{}", self.execution_id, self.step_index, self.attempt)
    }

    /// Who a message is sent for, for the providers.
    pub fn delivery(&self) -> Delivery {
        Delivery {
            account_id: Some(self.account_id),
            execution_id: Some(self.execution_id),
            idempotency_key: self.idempotency_key(),
        }
    }
}

/// Who a message is sent for: what an email or SMS provider needs besides
/// the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The account (none for an alert of a global rule).
    pub account_id: Option<uuid::Uuid>,
    /// The execution sending it (none for an alert).
    pub execution_id: Option<uuid::Uuid>,
    /// `<execution>:<step>:<attempt>`, or `alert:<delivery id>`; providers
    /// dedupe on it where they can.
    pub idempotency_key: String,
}

/// Where the execution goes after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The step after this one (or completion after the last).
    Following,
    /// The step with this id.
    Step(String),
    /// Complete now.
    End,
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Finished: log `response`, apply `change` to the contact, go on.
    Done {
        /// Recorded in the step's log row and under `steps.<id>`.
        response: Json,
        /// Where to go.
        next: Next,
        /// Contact change to commit with the checkpoint.
        change: Option<crate::domain::Change>,
    },
    /// Park until `until`, keeping `state` for the resumed run.
    Park {
        /// When to run this step again.
        until: DateTime<Utc>,
        /// Why (shown as the execution's waiting reason).
        reason: &'static str,
        /// What the resumed run needs.
        state: Json,
    },
}

impl Outcome {
    fn done(response: Json) -> Self {
        Outcome::Done {
            response,
            next: Next::Following,
            change: None,
        }
    }
}

/// The side effects actions need; the engine implements it with real
/// providers, tests may implement it with recorders.
pub trait Effects: Send + Sync {
    /// Delivers an email; returns the provider's receipt.
    fn send_email(
        &self,
        msg: &email::Message,
        input: &Input<'_>,
    ) -> impl Future<Output = Result<Json, ActionError>> + Send;
    /// Delivers an SMS; returns the provider's receipt.
    fn send_sms(
        &self,
        msg: &sms::Message,
        input: &Input<'_>,
    ) -> impl Future<Output = Result<Json, ActionError>> + Send;
    /// Performs an HTTP call through the address guard.
    fn call(
        &self,
        req: &webhook::Request,
    ) -> impl Future<Output = Result<webhook::Response, ActionError>> + Send;
    /// Enqueues an arq job (idempotent by job id).
    fn enqueue(&self, job: &arq::Enqueue) -> impl Future<Output = Result<(), ActionError>> + Send;
    /// Reads an arq job's state.
    fn job_state(
        &self,
        queue: &str,
        job_id: &str,
    ) -> impl Future<Output = Result<arq::JobState, ActionError>> + Send;
    /// Reserves a slot of the account's rate limits for one call on
    /// `channel`; answers how long until that slot (zero: now). Default:
    /// no limits.
    fn reserve(
        &self,
        channel: Channel<'_>,
        input: &Input<'_>,
    ) -> impl Future<Output = Duration> + Send {
        let _ = (channel, input);
        async { Duration::ZERO }
    }
}

/// What an outbound call draws on, besides the account's overall budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel<'a> {
    /// An email.
    Email,
    /// An SMS.
    Sms,
    /// A webhook call to this host.
    Webhook(&'a str),
}

/// Runs one step.
///
/// # Errors
/// [`ActionError`] classified as transient or permanent.
pub async fn run(
    action: &Action,
    input: &Input<'_>,
    fx: &impl Effects,
) -> Result<Outcome, ActionError> {
    match action {
        Action::SendEmail(a) => {
            if input.opted_out {
                return Ok(Outcome::done(json!({"skipped": "contact opted out"})));
            }
            let msg = a.render(input.scope)?;
            if let Some(park) = throttle(fx, Channel::Email, input).await {
                return Ok(park);
            }
            Ok(Outcome::done(fx.send_email(&msg, input).await?))
        }
        Action::SendSms(a) => {
            if input.opted_out {
                return Ok(Outcome::done(json!({"skipped": "contact opted out"})));
            }
            let msg = a.render(input.scope)?;
            if let Some(park) = throttle(fx, Channel::Sms, input).await {
                return Ok(park);
            }
            Ok(Outcome::done(fx.send_sms(&msg, input).await?))
        }
        Action::Webhook(a) => {
            let req = a.render(input.scope, input.idempotency_key())?;
            let host = url::Url::parse(&req.url).ok();
            let host = host.as_ref().and_then(url::Url::host_str).unwrap_or("");
            if let Some(park) = throttle(fx, Channel::Webhook(host), input).await {
                return Ok(park);
            }
            let resp = fx.call(&req).await?;
            a.judge(resp, input.now).map(Outcome::done)
        }
        Action::Wait(a) => a.run(input),
        Action::Condition(c) => Ok(c.run(input)),
        Action::UpdateContact(a) => a.run(input),
        Action::AddTag(t) => Ok(t.run(input, true)),
        Action::RemoveTag(t) => Ok(t.run(input, false)),
        Action::Goal(g) => Ok(Outcome::Done {
            response: json!({"goal": g.name}),
            next: Next::End,
            change: None,
        }),
        Action::End => Ok(Outcome::Done {
            response: json!({}),
            next: Next::End,
            change: None,
        }),
        Action::Arq(a) => a.run(input, fx).await,
    }
}

/// Masks an email address or phone number for logs and responses:
/// `ada@example.com` -> `a***@example.com`, `+15551234567` -> `+*******4567`.
pub fn mask(recipient: &str) -> String {
    if let Some((local, domain)) = recipient.split_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}***@{domain}");
    }
    let chars: Vec<char> = recipient.chars().collect();
    let keep = chars.len().min(4);
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i >= chars.len() - keep || (i == 0 && *c == '+') {
                *c
            } else {
                '*'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_types_and_bad_fields_are_named() {
        let e = Action::parse("fax", json!({})).unwrap_err();
        assert_eq!(e.field, "type");
        let e = Action::parse("webhook", json!({"method": "POST"})).unwrap_err();
        assert_eq!(e.field, "url", "{e}");
        let e =
            Action::parse("webhook", json!({"url": "https://x.test", "colour": 1})).unwrap_err();
        assert_eq!(e.field, "colour", "{e}");
        let e =
            Action::parse("webhook", json!({"url": "https://x.test", "timeout": 5})).unwrap_err();
        assert_eq!(e.field, "timeout", "{e}");
        let e = Action::parse("end", json!({"x": 1})).unwrap_err();
        assert_eq!(e.field, "x", "{e}");
    }

    #[test]
    fn recipients_are_masked_for_logs() {
        assert_eq!(mask("ada@example.com"), "a***@example.com");
        assert_eq!(mask("+15551234567"), "+*******4567");
        assert_eq!(mask("12"), "12");
    }
}
