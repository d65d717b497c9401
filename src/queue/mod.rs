//! The ARQ wire protocol as a library (`tests/fixtures/arq/PROTOCOL.md`).
//!
//! - [`keys`]: Redis key names, the only place they are spelled;
//! - [`value`]: the Python value model payloads carry;
//! - [`pickle`]: a purpose-built pickle reader and writer;
//! - [`codec`]: job / result payloads in pickle, JSON and msgpack;
//! - [`client`]: enqueue, claim, start, finish, retry, abort, status, info,
//!   result and the health-check key.
//!
//! This module knows nothing of workflows: `crate::worker` drives the
//! worker-side calls, and producers (the engine, the API) call
//! [`Client::enqueue`].

pub mod client;
pub mod codec;
pub mod keys;
pub mod pickle;
pub mod value;

pub use client::{
    Admission, BreakerPolicy, BreakerState, Bucket, Claimed, Claims, Client, Defer, EnqueueOptions,
    Error, Finish, Health, JobInfo, JobStatus, Presence, Rest, Result, Round, RunningSlot, Started,
    now_ms,
};
pub use codec::{Job, JobResult, Serializer};
pub use value::Value;
