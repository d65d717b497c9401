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
//! - [`domain`]: the shared vocabulary (execution status and events,
//!   priority, log status, contact changes and limits); a leaf;
//! - [`config`]: command line and environment, the only reader of either;
//!   imports only [`domain`]: each subsystem converts its own settings;
//! - [`telemetry`]: tracing subscriber (text or JSON lines), reloadable filter;
//! - [`shutdown`]: the root cancellation token and signal handling;
//! - [`store`]: PostgreSQL: pool, migrations, every SQL statement, and the
//!   read handle ([`store::Reader`]);
//! - [`queue`]: the ARQ wire protocol (keys, pickle/JSON/msgpack, client);
//! - [`worker`]: claims ARQ jobs and runs registered functions;
//! - [`action`]: the built-in actions, one file per kind;
//! - [`provider`]: the services behind actions' side effects (outbox,
//!   SMTP, HTTP SMS, the guarded webhook client, arq);
//! - [`engine`]: durable executions: the state machine, definitions, the
//!   executor, maintenance; every write to workflows, contacts and
//!   executions;
//! - [`alert`]: admin alerts: rules, the evaluator, the delivery outbox;
//! - [`auth`]: API keys (minted, hashed, looked up);
//! - [`api`]: the HTTP API (axum) with its OpenAPI document;
//! - [`metrics`]: Prometheus metrics;
//! - [`cache`]: a bounded in-process cache with a TTL and hit counts;
//! - [`crd`]: the `WorkflowExecution` and `WorkerPool` CRD types;
//! - [`controller`]: the Kubernetes controller (reconcilers, autoscaler,
//!   leader election);
//! - [`tls`]: the process-wide TLS crypto provider;
//! - [`runtime`]: builds the running system (engine, worker, maintenance,
//!   API state) for [`app`] and the tests alike;
//! - [`demo`]: `flowpilot dev --seed-demo`;
//! - [`app`]: runs each subcommand.
//!
//! Dependencies point one way:
//!
//! ```text
//! app -> runtime -> api | controller -> engine -> provider -> action
//!                                          |          \-> queue
//!                                          v
//!                                  store, queue, worker
//! everything -> config -> domain (the leaf: it imports nothing of ours)
//! ```
//!
//! One door per room: the API and the controller write only through the
//! engine (alert rules through [`alert`]) and read only through
//! [`store::Reader`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod action;
pub mod alert;
pub mod api;
pub mod app;
pub mod auth;
pub mod cache;
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
