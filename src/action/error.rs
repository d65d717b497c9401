//! How an action fails: [`ActionError`] when it runs (with the class that
//! decides what happens next), [`FieldError`] when its configuration does
//! not parse.

use std::time::Duration;

use serde_json::Value as Json;

use super::{ErrorClass, template};

/// A configuration problem, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Dotted path of the field within the step (`url`, `window.start`, ...).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// How an action failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class}: {message}")]
pub struct ActionError {
    /// Why: decides whether the step is retried (see [`ErrorClass::retryable`]).
    pub class: ErrorClass,
    /// What went wrong, for the log row and the execution's `error`.
    pub message: String,
    /// The answer that failed the attempt (a webhook's status, headers and
    /// first KiB of body), kept in the attempt's log row.
    pub response: Option<Json>,
    /// How long the provider asked us to wait (`Retry-After`), or until its
    /// circuit breaker lets a call through.
    pub retry_after: Option<Duration>,
}

impl ActionError {
    /// A failure of `class`.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        ActionError {
            class,
            message: message.into(),
            response: None,
            retry_after: None,
        }
    }

    /// A failure a later attempt may not meet.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Transient, message)
    }

    /// A failure no retry can help.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Permanent, message)
    }

    /// The step's configuration cannot work.
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::InvalidConfig, message)
    }

    /// The contact's data cannot work.
    pub fn contact_data(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::ContactData, message)
    }

    /// Whether another attempt may succeed.
    pub fn retryable(&self) -> bool {
        self.class.retryable()
    }

    /// Asks the engine to wait at least `after` before the next attempt.
    pub fn retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }

    /// Keeps the answer that failed the attempt.
    pub fn with_response(mut self, response: Json) -> Self {
        self.response = Some(response);
        self
    }

    /// A field of the step that renders past the template cap.
    pub(super) fn too_large(field: &str, e: template::TooLarge) -> Self {
        Self::invalid_config(format!("`{field}` {e}"))
    }
}
