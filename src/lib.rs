//! flowpilot: durable workflow execution for marketing and CRM automation.
//!
//! A contact enters a versioned workflow (send email, wait two days, call a
//! webhook, branch, update the contact); every step commits a checkpoint in
//! PostgreSQL, so a killed worker loses nothing and the next one resumes at
//! the last completed step. Work moves through Redis queues that speak
//! Python arq's wire protocol, so Python applications and arq workers are
//! first-class peers.
//!
//! # Layout
//!
//! - [`config`]: command line and environment, the only reader of either;
//! - [`telemetry`]: tracing subscriber (text or JSON lines), reloadable filter;
//! - [`shutdown`]: the root cancellation token and signal handling;
//! - [`store`]: PostgreSQL: pool, migrations, every SQL statement;
//! - [`queue`]: the ARQ wire protocol (keys, pickle/JSON/msgpack, client);
//! - [`worker`]: claims ARQ jobs and runs registered functions;
//! - [`engine`]: durable executions: state machine, definitions, executor,
//!   maintenance;
//! - [`action`]: the built-in actions, one file per kind;
//! - [`api`]: the HTTP API (axum) with its OpenAPI document;
//! - [`metrics`]: Prometheus metrics;
//! - [`crd`]: the `WorkflowExecution` and `WorkerPool` CRD types;
//! - [`controller`]: the Kubernetes controller (reconcilers, autoscaler,
//!   leader election);
//! - [`tls`]: the process-wide TLS crypto provider;
//! - [`app`]: wires the subsystems for each subcommand.
//!
//! Dependencies point one way: `app` -> `api` | `controller` -> `engine` ->
//! `store`, `queue`,
//! `action`; `engine` registers its functions on a `worker`. (`store` reads
//! the engine's `Status` type, a plain enum.)

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod action;
pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod controller;
pub mod crd;
pub mod demo;
pub mod domain;
pub mod engine;
pub mod metrics;
pub mod provider;
pub mod queue;
pub mod runtime;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod worker;
