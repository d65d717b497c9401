//! Command line and environment: the only module that reads either.
//!
//! Every setting has a long flag, an environment name (`FLOWPILOT_*`, plus
//! the conventional `DATABASE_URL` and `REDIS_URL`), a default, and a doc
//! comment that clap prints as help. Each subsystem gets its own flattened
//! group; `main` destructures them so none is silently ignored.
//!
//! An environment variable set to the empty string counts as unset
//! ([`Cli::from_env`]): templating tools (Helm, Compose, systemd) render an
//! unset value as `NAME=""`, which must mean "the default", not "the empty
//! value".

use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

mod bulk;
mod connection;
mod controller;
mod engine;
mod worker;

pub use bulk::{
    BulkArgs, BulkTarget, EnrollArgs, ExecutionFilter, ExecutionsCommand, Follow, OperationsCommand,
};
pub use connection::{DEFAULT_QUEUE_PREFIX, DbConfig, RedisConfig, SerializerName};
pub use controller::{ApiConfig, ControllerConfig};
pub use engine::{Allowed, EmailProviderKind, EngineConfig, SmsProviderKind, Switch};
pub use worker::WorkerConfig;

/// flowpilot: durable workflow execution for marketing and CRM automation.
#[derive(Debug, Parser)]
#[command(name = "flowpilot", version, about, propagate_version = true)]
pub struct Cli {
    /// Logging.
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process's command line and environment, treating empty
    /// environment variables as unset; on bad input prints clap's message
    /// and exits with code 2.
    pub fn from_env() -> Self {
        let command = without_blank_env(Cli::command());
        let matches = command.get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// `command` with the environment fallback removed from every argument
/// (in every subcommand) whose variable is set but empty.
fn without_blank_env(mut command: clap::Command) -> clap::Command {
    let ids: Vec<clap::Id> = command
        .get_arguments()
        .filter(|a| {
            a.get_env()
                .and_then(std::env::var_os)
                .is_some_and(|v| v.is_empty())
        })
        .map(|a| a.get_id().clone())
        .collect();
    for id in ids {
        command = command.mut_arg(id, |a| a.env(None::<&'static str>));
    }
    let subcommands: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in subcommands {
        command = command.mut_subcommand(name, without_blank_env);
    }
    command
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply database migrations and create log partitions ahead, then exit.
    Migrate {
        /// PostgreSQL.
        #[command(flatten)]
        db: DbConfig,
    },
    /// Run an ARQ-compatible worker: the engine's functions
    /// (`execute_workflow`, `run_execution`) and the maintenance loop.
    Worker {
        /// PostgreSQL.
        #[command(flatten)]
        db: DbConfig,
        /// Redis.
        #[command(flatten)]
        redis: RedisConfig,
        /// Worker.
        #[command(flatten)]
        worker: WorkerConfig,
        /// Engine.
        #[command(flatten)]
        engine: EngineConfig,
    },
    /// Local development: migrate, then run the API, the worker and the
    /// maintenance loop in one process.
    Dev {
        /// PostgreSQL.
        #[command(flatten)]
        db: DbConfig,
        /// Redis.
        #[command(flatten)]
        redis: RedisConfig,
        /// Worker.
        #[command(flatten)]
        worker: WorkerConfig,
        /// Engine.
        #[command(flatten)]
        engine: EngineConfig,
        /// API.
        #[command(flatten)]
        api: ApiConfig,
        /// Create a demo account, contact and workflow if missing, and print
        /// how to run them.
        #[arg(long, env = "FLOWPILOT_SEED_DEMO")]
        seed_demo: bool,
        /// With `--seed-demo`: an API key for the demo account (created if
        /// its hash is unknown), so the printed curl commands work.
        #[arg(long, env = "FLOWPILOT_DEMO_API_KEY", hide_env_values = true)]
        demo_api_key: Option<String>,
    },
    /// Serve the HTTP API.
    Api {
        /// PostgreSQL.
        #[command(flatten)]
        db: DbConfig,
        /// Redis.
        #[command(flatten)]
        redis: RedisConfig,
        /// API.
        #[command(flatten)]
        api: ApiConfig,
        /// Engine (the API starts executions through it).
        #[command(flatten)]
        engine: EngineConfig,
    },
    /// Manage accounts.
    Account {
        /// What to do.
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Manage API keys.
    Apikey {
        /// What to do.
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// Retry or cancel many executions at once, as a durable operation.
    Executions {
        /// What to do.
        #[command(subcommand)]
        command: ExecutionsCommand,
    },
    /// Enroll many contacts into a workflow, as a durable operation.
    Enroll(EnrollArgs),
    /// Follow or cancel bulk operations.
    Operations {
        /// What to do.
        #[command(subcommand)]
        command: OperationsCommand,
    },
    /// Run the Kubernetes controller for `WorkflowExecution` and `WorkerPool`.
    Controller {
        /// PostgreSQL.
        #[command(flatten)]
        db: DbConfig,
        /// Redis.
        #[command(flatten)]
        redis: RedisConfig,
        /// Engine (executions start through it).
        #[command(flatten)]
        engine: EngineConfig,
        /// Controller.
        #[command(flatten)]
        controller: ControllerConfig,
    },
    /// Print the CRD YAML (`WorkflowExecution`, `WorkerPool`), as in `crds/`.
    Crds,
}

/// `flowpilot account ...`
#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an account; prints its id.
    Create {
        /// PostgreSQL.
        #[command(flatten)]
        db: DbConfig,
        /// Its name.
        #[arg(long)]
        name: String,
    },
}

/// `flowpilot apikey ...`
#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Create an API key for an account; prints the key once (only its
    /// hash is stored).
    Create {
        /// PostgreSQL.
        #[command(flatten)]
        db: DbConfig,
        /// The account's id.
        #[arg(long)]
        account: uuid::Uuid,
        /// A label to tell keys apart.
        #[arg(long, default_value = "default")]
        name: String,
        /// An admin key may act for any account (`X-Flowpilot-Account`).
        #[arg(long)]
        admin: bool,
    },
    /// List API keys (never the keys themselves): one JSON object a line.
    List {
        /// PostgreSQL.
        #[command(flatten)]
        db: DbConfig,
        /// Only this account's keys.
        #[arg(long)]
        account: Option<uuid::Uuid>,
    },
    /// Revoke an API key: it is refused from the next request on.
    Revoke {
        /// PostgreSQL.
        #[command(flatten)]
        db: DbConfig,
        /// The key's id (as `apikey create` and `apikey list` print it).
        #[arg(long)]
        id: uuid::Uuid,
    },
}

/// Log output.
#[derive(Debug, Args)]
pub struct TelemetryConfig {
    /// Log filter in `tracing` EnvFilter syntax, e.g. `info,flowpilot=debug`.
    /// Default `info,sqlx=warn`: lifecycle events, not one line per job or query.
    #[arg(
        long = "log",
        env = "FLOWPILOT_LOG",
        default_value = "info,sqlx=warn",
        global = true
    )]
    pub log_filter: String,
    /// Log format: `text` for people, `json` (one object per line) for log
    /// pipelines. Default `text`.
    #[arg(long, env = "FLOWPILOT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("flowpilot").chain(args.iter().copied()))
    }

    #[test]
    fn worker_defaults_follow_arq_and_serve_three_priority_queues() {
        let cli = parse(&["worker", "--database-url", "postgres://x"]).unwrap();
        let Command::Worker { worker, redis, .. } = cli.command else {
            panic!("not worker")
        };
        assert_eq!(redis.queue_prefix, "flowpilot:queue");
        assert_eq!(worker.queues, None);
        assert_eq!(worker.max_jobs, 10);
        assert_eq!(worker.job_timeout, Duration::from_secs(300));
        assert_eq!(worker.drain_timeout, None);
        assert_eq!(redis.serializer, SerializerName::Pickle);
    }

    #[test]
    fn bad_values_are_refused_naming_the_flag() {
        let err = parse(&["worker", "--max-jobs", "0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--max-jobs"), "{err}");
        let err = parse(&["worker", "--job-timeout", "soon"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--job-timeout"), "{err}");
        let err = parse(&["worker", "--serializer", "xml"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown serializer"), "{err}");
        let cli = parse(&[
            "worker",
            "--database-url",
            "postgres://x",
            "--queues",
            "a,a",
        ])
        .unwrap();
        let Command::Worker { worker, .. } = cli.command else {
            panic!("not worker")
        };
        assert!(worker.validate().unwrap_err().contains("listed twice"));
        let cli = parse(&[
            "worker",
            "--database-url",
            "p://x",
            "--sms-provider",
            "http",
        ])
        .unwrap();
        let Command::Worker { engine, .. } = cli.command else {
            panic!("not worker")
        };
        assert!(engine.validate().unwrap_err().contains("--sms-base-url"));
        let err = parse(&["worker", "--webhook-allow", "not a host!"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--webhook-allow"), "{err}");
    }

    #[test]
    fn every_subcommand_is_well_formed() {
        // clap's own checks (unique names, valid requirements) for every
        // subcommand, which parsing alone only runs for the one parsed.
        Cli::command().debug_assert();
    }
}
