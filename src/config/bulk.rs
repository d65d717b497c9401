//! The bulk operations' command line: `flowpilot executions retry|cancel`,
//! `flowpilot enroll`, `flowpilot operations get|cancel`.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use uuid::Uuid;

use super::{DbConfig, EngineConfig, RedisConfig};
use crate::domain::{ErrorClass, Priority, Status};

/// What the bulk commands connect to, and for which account.
#[derive(Debug, Args)]
pub struct BulkTarget {
    /// PostgreSQL.
    #[command(flatten)]
    pub db: DbConfig,
    /// Redis (the operation's job is enqueued there).
    #[command(flatten)]
    pub redis: RedisConfig,
    /// Engine.
    #[command(flatten)]
    pub engine: EngineConfig,
    /// The account acted for.
    #[arg(long)]
    pub account: Uuid,
}

/// How a command that starts an operation ends.
#[derive(Debug, Clone, Copy, Args)]
pub struct Follow {
    /// Print the operation as created and exit, instead of following it
    /// with a progress bar until it ends.
    #[arg(long)]
    pub no_wait: bool,
}

/// Which executions a bulk retry or cancel takes (at least one).
#[derive(Debug, Clone, Args)]
pub struct ExecutionFilter {
    /// Only this workflow.
    #[arg(long)]
    pub workflow: Option<Uuid>,
    /// Only this version of it (with `--workflow`).
    #[arg(long, requires = "workflow")]
    pub workflow_version: Option<i32>,
    /// Only these statuses, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub status: Vec<Status>,
    /// Only with this class of last error.
    #[arg(long)]
    pub error_class: Option<ErrorClass>,
    /// Only with this fingerprint of last error.
    #[arg(long)]
    pub fingerprint: Option<String>,
    /// Only at this step (its id).
    #[arg(long)]
    pub step: Option<String>,
    /// Created at or after (RFC 3339).
    #[arg(long)]
    pub created_after: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    #[arg(long)]
    pub created_before: Option<DateTime<Utc>>,
    /// Failed at or after (RFC 3339).
    #[arg(long)]
    pub failed_after: Option<DateTime<Utc>>,
    /// Failed before (RFC 3339).
    #[arg(long)]
    pub failed_before: Option<DateTime<Utc>>,
}

/// What `executions retry` and `executions cancel` take.
#[derive(Debug, Args)]
pub struct BulkArgs {
    /// Connections and account.
    #[command(flatten)]
    pub target: BulkTarget,
    /// Which executions.
    #[command(flatten)]
    pub filter: ExecutionFilter,
    /// Count and sample only; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Follow or not.
    #[command(flatten)]
    pub follow: Follow,
}

/// `flowpilot executions ...`.
#[derive(Debug, Subcommand)]
pub enum ExecutionsCommand {
    /// Retry the FAILED executions a filter names, each at its failed step
    /// with a new attempt; `--dry-run` prints the count and a sample.
    Retry(BulkArgs),
    /// Cancel the unfinished executions a filter names; `--dry-run` prints
    /// the count and a sample.
    Cancel(BulkArgs),
}

/// `flowpilot enroll`: contacts into an active workflow.
#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// Connections and account.
    #[command(flatten)]
    pub target: BulkTarget,
    /// The workflow.
    #[arg(long)]
    pub workflow: Uuid,
    /// A file of contact ids, one a line (`-` for stdin); at most 100,000.
    #[arg(long, conflicts_with_all = ["tag", "attribute"])]
    pub contacts_file: Option<PathBuf>,
    /// Contacts carrying this tag (repeat for all of several).
    #[arg(long)]
    pub tag: Vec<String>,
    /// Contacts whose attribute KEY has the JSON value VALUE (a bare word
    /// is a string): `--attribute plan=pro --attribute seats=3`.
    #[arg(long, value_name = "KEY=VALUE")]
    pub attribute: Vec<String>,
    /// `never` (default), `after_finished` or `always`.
    #[arg(long, default_value = "never")]
    pub policy: String,
    /// Queue priority of the executions.
    #[arg(long, default_value = "normal")]
    pub priority: Priority,
    /// Follow or not.
    #[command(flatten)]
    pub follow: Follow,
}

/// `flowpilot operations ...`.
#[derive(Debug, Subcommand)]
pub enum OperationsCommand {
    /// Print an operation; `--follow` shows its progress until it ends.
    Get {
        /// Connections and account.
        #[command(flatten)]
        target: BulkTarget,
        /// The operation.
        #[arg(long)]
        id: Uuid,
        /// Follow it with a progress bar until it ends.
        #[arg(long)]
        follow: bool,
    },
    /// Cancel an operation: it stops before its next batch.
    Cancel {
        /// Connections and account.
        #[command(flatten)]
        target: BulkTarget,
        /// The operation.
        #[arg(long)]
        id: Uuid,
    },
}
