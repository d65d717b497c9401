//! The shared vocabulary: the words every layer speaks (an execution's
//! status and the events that move it, queue priority, a log row's status,
//! the class of a failure and its fingerprint, a change to a contact and
//! the limits a contact keeps, an account's rate limits).
//!
//! A leaf: it imports nothing of flowpilot's, so the store, the engine, the
//! actions and the API can all use it without pointing at each other (as
//! river's `rivertype` package does for river). Logic that decides
//! something (which transition is legal, what a step does) lives with its
//! owner; only the nouns live here.

pub mod contact;
pub mod error_class;
pub mod limit;
pub mod log;
pub mod priority;
pub mod retry;
pub mod status;

pub use contact::Change;
pub use error_class::{ALL_ERROR_CLASSES, ErrorClass, UnknownErrorClass};
pub use limit::{Limits, Rate};
pub use log::LogStatus;
pub use priority::{Priority, UnknownPriority};
pub use retry::RetryOverride;
pub use status::{ALL_EVENTS, ALL_STATUSES, Event, Status, UnknownStatus};
