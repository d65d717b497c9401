//! The engine's errors, one variant per cause, so each boundary (HTTP,
//! Kubernetes, arq) maps them in one `match` without reading strings.

use super::definition::ValidationError;
use super::plan::{self, Event};
use crate::{queue, store};

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such workflow in the account.
    #[error("workflow not found")]
    WorkflowNotFound,
    /// No such version of a workflow.
    #[error("workflow version not found")]
    VersionNotFound,
    /// No such contact in the account.
    #[error("contact not found")]
    ContactNotFound,
    /// No such execution in the account.
    #[error("execution not found")]
    ExecutionNotFound,
    /// No such bulk operation in the account.
    #[error("operation not found")]
    OperationNotFound,
    /// The operation already ended: it cannot be cancelled.
    #[error("operation is {0}: it can no longer be cancelled")]
    OperationFinished(String),
    /// The workflow is not active: nothing starts in it.
    #[error("workflow is not active")]
    WorkflowInactive,
    /// The workflow is archived: it cannot be activated.
    #[error("workflow is archived")]
    WorkflowArchived,
    /// The contact opted out of messages: it enters no workflow.
    #[error("contact has opted out")]
    ContactOptedOut,
    /// Another contact of the account has this `external_id`.
    #[error("a contact with this external_id exists")]
    ContactExists,
    /// The execution's status does not allow what was asked.
    #[error("execution is {}: cannot {}", .0.from, verb(.0.event))]
    Illegal(plan::Illegal),
    /// The row kept changing under a user's request; trying again later
    /// may succeed.
    #[error("the execution is changing too fast; try again")]
    Contended,
    /// Bad input, naming the field.
    #[error("{field}: {message}")]
    Invalid {
        /// The field (a dotted path).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// PostgreSQL.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Redis.
    #[error(transparent)]
    Queue(#[from] queue::Error),
}

/// Local result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The request field the error is about, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::WorkflowNotFound | Error::WorkflowInactive | Error::WorkflowArchived => {
                Some("workflow_id")
            }
            Error::VersionNotFound => Some("workflow_version"),
            Error::ContactNotFound | Error::ContactOptedOut => Some("contact_id"),
            Error::ExecutionNotFound => Some("execution_id"),
            Error::OperationNotFound => Some("operation_id"),
            Error::ContactExists => Some("external_id"),
            Error::Invalid { field, .. } => Some(field),
            Error::Illegal(_)
            | Error::OperationFinished(_)
            | Error::Contended
            | Error::Store(_)
            | Error::Queue(_) => None,
        }
    }

    /// Whether the cause is a dependency (PostgreSQL, Redis, a row too busy
    /// to write): trying again later may succeed, and nothing was lost.
    pub fn is_infrastructure(&self) -> bool {
        matches!(self, Error::Store(_) | Error::Queue(_) | Error::Contended)
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<ValidationError> for Error {
    fn from(e: ValidationError) -> Self {
        Error::Invalid {
            field: if e.field == "definition" {
                e.field
            } else {
                format!("definition.{}", e.field)
            },
            message: match e.step {
                Some(s) => format!("step `{s}`: {}", e.message),
                None => e.message,
            },
        }
    }
}

impl From<plan::Illegal> for Error {
    fn from(e: plan::Illegal) -> Self {
        Error::Illegal(e)
    }
}

impl From<crate::domain::contact::Invalid> for Error {
    fn from(e: crate::domain::contact::Invalid) -> Self {
        Error::Invalid {
            field: e.field,
            message: e.message,
        }
    }
}

fn verb(e: Event) -> &'static str {
    match e {
        Event::Cancel => "cancel it",
        Event::Retry => "retry it (only FAILED executions can be retried)",
        _ => "do that",
    }
}
