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

use crate::queue::{Serializer, keys};

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
}

/// The Kubernetes controller.
#[derive(Debug, Clone, Args)]
pub struct ControllerConfig {
    /// Watch only this namespace. Default: every namespace.
    #[arg(long, env = "FLOWPILOT_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Namespace of the leader-election Lease. Default `POD_NAMESPACE`
    /// (the Downward API), else `default`.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader-election Lease. Default `flowpilot-controller`.
    #[arg(
        long,
        env = "FLOWPILOT_LEASE_NAME",
        default_value = "flowpilot-controller"
    )]
    pub lease_name: String,
    /// This replica's identity in the Lease. Default `POD_NAME` (the
    /// Downward API), else a random id.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Lease duration: a dead leader is replaced after this. Default 15s.
    #[arg(long, env = "FLOWPILOT_LEASE_DURATION", default_value = "15s", value_parser = positive_duration)]
    pub lease_duration: Duration,
    /// Image of `flowpilot worker` for pools that name none.
    #[arg(
        long,
        env = "FLOWPILOT_WORKER_IMAGE",
        default_value = "flowpilot:latest"
    )]
    pub worker_image: String,
    /// How often running executions' status is refreshed. Default 5s.
    #[arg(long, env = "FLOWPILOT_STATUS_INTERVAL", default_value = "5s", value_parser = positive_duration)]
    pub status_interval: Duration,
    /// How often pools are re-evaluated. Default 15s, as the HPA.
    #[arg(long, env = "FLOWPILOT_SCALE_INTERVAL", default_value = "15s", value_parser = positive_duration)]
    pub scale_interval: Duration,
    /// Address of `/healthz`, `/readyz` and `/metrics`. Default `0.0.0.0:8081`.
    #[arg(
        long = "admin-listen",
        env = "FLOWPILOT_ADMIN_LISTEN",
        default_value = "0.0.0.0:8081"
    )]
    pub admin_listen: std::net::SocketAddr,
}

/// The HTTP API.
#[derive(Debug, Clone, Args)]
pub struct ApiConfig {
    /// Address the API listens on. Default `0.0.0.0:8080`; `make dev` uses
    /// `127.0.0.1:8080`.
    #[arg(long, env = "FLOWPILOT_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: std::net::SocketAddr,
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

/// PostgreSQL, where every execution lives.
#[derive(Debug, Clone, Args)]
pub struct DbConfig {
    /// PostgreSQL URL, e.g. `postgres://user:pass@host:5432/flowpilot`. No
    /// default: the database is the system of record, so it must be named.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Connections in the pool. Default 10: a worker's concurrent jobs plus
    /// the maintenance loop, within PostgreSQL's default 100 for ~8 processes.
    #[arg(long, env = "FLOWPILOT_DB_MAX_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub db_max_connections: u32,
}

/// Redis, which moves work.
#[derive(Debug, Clone, Args)]
pub struct RedisConfig {
    /// Redis URL, `redis://host:port/db`. Default `redis://127.0.0.1:6379/0`,
    /// arq's own default.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/0")]
    pub redis_url: String,
    /// Serializer for payloads we write: `pickle` (arq's default), `json` or
    /// `msgpack`; must match the Python side's `job_serializer`. Reading
    /// accepts all three. Default `pickle`.
    #[arg(long, env = "FLOWPILOT_SERIALIZER", default_value = "pickle")]
    pub serializer: Serializer,
    /// Prefix of the priority queues the engine uses: `<prefix>:high`,
    /// `<prefix>` and `<prefix>:low`, plus the dead set `<prefix>:dead`.
    /// Default `flowpilot:queue`: apart from `arq:queue`, where Python arq
    /// workers started with defaults look (they would take our jobs and
    /// fail them). Give separate flowpilot installations sharing one Redis
    /// database their own prefix.
    #[arg(long, env = "FLOWPILOT_QUEUE_PREFIX", default_value = keys::FLOWPILOT_QUEUE)]
    pub queue_prefix: String,
}

/// The worker.
#[derive(Debug, Clone, Args)]
pub struct WorkerConfig {
    /// Queues to serve, highest priority first, comma-separated. Default the
    /// three priority queues of `--queue-prefix`:
    /// `flowpilot:queue:high,flowpilot:queue,flowpilot:queue:low`.
    #[arg(long, env = "FLOWPILOT_QUEUES", value_delimiter = ',')]
    pub queues: Option<Vec<String>>,
    /// Jobs run at once. Default 10, as arq.
    #[arg(long, env = "FLOWPILOT_MAX_JOBS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_jobs: u32,
    /// Per-job timeout, e.g. `300s`, `5m`. Default 300s, as arq.
    #[arg(long, env = "FLOWPILOT_JOB_TIMEOUT", default_value = "300s", value_parser = positive_duration)]
    pub job_timeout: Duration,
    /// Pause between polls of the queues. Default 500ms, as arq.
    #[arg(long, env = "FLOWPILOT_POLL_DELAY", default_value = "500ms", value_parser = positive_duration)]
    pub poll_delay: Duration,
    /// How long results are kept in Redis; `0s` keeps none. Default 1h, as arq.
    #[arg(long, env = "FLOWPILOT_KEEP_RESULT", default_value = "1h", value_parser = humantime::parse_duration)]
    pub keep_result: Duration,
    /// Runs of one job before it fails as "max N retries exceeded". Default 5, as arq.
    #[arg(long, env = "FLOWPILOT_MAX_TRIES", default_value_t = 5, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_tries: i64,
    /// How often the `<queue>:health-check` key is written. Default 1h, as arq.
    #[arg(long, env = "FLOWPILOT_HEALTH_CHECK_INTERVAL", default_value = "1h", value_parser = positive_duration)]
    pub health_check_interval: Duration,
    /// How long running jobs may finish after SIGTERM before they are
    /// released for re-run. Default: the job timeout, so a job that can
    /// finish does; keep the pod's termination grace period above it.
    #[arg(long, env = "FLOWPILOT_DRAIN_TIMEOUT", value_parser = humantime::parse_duration)]
    pub drain_timeout: Option<Duration>,
    /// Serve `/healthz`, `/readyz` and `/metrics` here (`worker` without the
    /// API; `dev` has them on the API). Default: off.
    #[arg(long = "admin-listen", env = "FLOWPILOT_ADMIN_LISTEN")]
    pub admin_listen: Option<std::net::SocketAddr>,
}

/// Email delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmailProviderKind {
    /// Record messages in the `outbox` table.
    Outbox,
    /// Send over SMTP (`--smtp-url`).
    Smtp,
}

/// SMS delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SmsProviderKind {
    /// Record messages in the `outbox` table.
    Outbox,
    /// POST to a Twilio-style HTTP API (`--sms-base-url`).
    Http,
}

/// The engine: providers, safety, retries, maintenance.
#[derive(Debug, Clone, Args)]
pub struct EngineConfig {
    /// Internal addresses webhooks may call anyway, comma-separated IPs,
    /// CIDR networks or host names (e.g. `10.1.0.0/16,hooks.internal`).
    /// Default none: loopback, private, link-local and metadata addresses
    /// are refused.
    #[arg(long, env = "FLOWPILOT_WEBHOOK_ALLOW", value_delimiter = ',')]
    pub webhook_allow: Vec<crate::action::webhook::Allowed>,
    /// Email provider. Default `outbox`: messages land in the `outbox`
    /// table for your relay, so nothing is sent by accident.
    #[arg(long, env = "FLOWPILOT_EMAIL_PROVIDER", value_enum, default_value_t = EmailProviderKind::Outbox)]
    pub email_provider: EmailProviderKind,
    /// SMTP server for `--email-provider smtp`:
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS), `smtps://...`
    /// (TLS), or `smtp://host:25` (plain, for a local relay).
    #[arg(long, env = "FLOWPILOT_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// Default sender of emails. Default `flowpilot@localhost`.
    #[arg(
        long,
        env = "FLOWPILOT_EMAIL_FROM",
        default_value = "flowpilot@localhost"
    )]
    pub email_from: String,
    /// SMS provider. Default `outbox`.
    #[arg(long, env = "FLOWPILOT_SMS_PROVIDER", value_enum, default_value_t = SmsProviderKind::Outbox)]
    pub sms_provider: SmsProviderKind,
    /// Base URL of the HTTP SMS API, e.g. `https://api.twilio.com`.
    #[arg(long, env = "FLOWPILOT_SMS_BASE_URL")]
    pub sms_base_url: Option<String>,
    /// Account SID (basic-auth user) of the HTTP SMS API.
    #[arg(long, env = "FLOWPILOT_SMS_ACCOUNT_SID")]
    pub sms_account_sid: Option<String>,
    /// Auth token (basic-auth password) of the HTTP SMS API.
    #[arg(long, env = "FLOWPILOT_SMS_AUTH_TOKEN", hide_env_values = true)]
    pub sms_auth_token: Option<String>,
    /// Sender number of the HTTP SMS API.
    #[arg(long, env = "FLOWPILOT_SMS_FROM")]
    pub sms_from: Option<String>,
    /// Attempts of a step with transient errors, the first included. Default 5.
    #[arg(long, env = "FLOWPILOT_RETRY_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(i32).range(1..=50))]
    pub retry_max_attempts: i32,
    /// Backoff before the first retry (doubling, with jitter). Default 10s.
    #[arg(long, env = "FLOWPILOT_RETRY_BACKOFF", default_value = "10s", value_parser = positive_duration)]
    pub retry_backoff: Duration,
    /// Longest backoff between retries. Default 1h.
    #[arg(long, env = "FLOWPILOT_RETRY_MAX_BACKOFF", default_value = "1h", value_parser = positive_duration)]
    pub retry_max_backoff: Duration,
    /// How often the maintenance loop looks for due and lost executions.
    /// Default 1s.
    #[arg(long, env = "FLOWPILOT_MAINTENANCE_INTERVAL", default_value = "1s", value_parser = positive_duration)]
    pub maintenance_interval: Duration,
    /// QUEUED executions untouched this long are checked against Redis:
    /// one whose job is gone (lost with Redis, or ended without running)
    /// gets a fresh job. Default 30s, well past the moment between a row's
    /// insert and its first enqueue.
    #[arg(long, env = "FLOWPILOT_STALE_QUEUED_AFTER", default_value = "30s", value_parser = positive_duration)]
    pub stale_queued_after: Duration,
    /// Drop execution log partitions older than this many months; 0 keeps
    /// them forever. Default 0.
    #[arg(long, env = "FLOWPILOT_LOG_RETENTION_MONTHS", default_value_t = 0)]
    pub log_retention_months: u32,
}

impl EngineConfig {
    /// Cross-field checks.
    ///
    /// # Errors
    /// A message naming the missing flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.email_provider == EmailProviderKind::Smtp && self.smtp_url.is_none() {
            return Err("--email-provider smtp needs --smtp-url".into());
        }
        if self.sms_provider == SmsProviderKind::Http {
            for (flag, v) in [
                ("--sms-base-url", &self.sms_base_url),
                ("--sms-account-sid", &self.sms_account_sid),
                ("--sms-auth-token", &self.sms_auth_token),
                ("--sms-from", &self.sms_from),
            ] {
                if v.is_none() {
                    return Err(format!("--sms-provider http needs {flag}"));
                }
            }
        }
        if self.retry_max_backoff < self.retry_backoff {
            return Err("--retry-max-backoff must not be below --retry-backoff".into());
        }
        Ok(())
    }
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

impl WorkerConfig {
    /// Cross-field checks clap cannot express.
    ///
    /// # Errors
    /// A message naming the flag at fault.
    pub fn validate(&self) -> Result<(), String> {
        let Some(queues) = &self.queues else {
            return Ok(());
        };
        if queues.is_empty() || queues.iter().any(|q| q.trim().is_empty()) {
            return Err("--queues: give at least one non-empty queue name".into());
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = queues.iter().find(|q| !seen.insert(q.as_str())) {
            return Err(format!("--queues: `{dup}` is listed twice"));
        }
        Ok(())
    }

    /// The worker's settings; queues default to the priority queues of `prefix`.
    pub fn settings(&self, prefix: &str) -> crate::worker::Settings {
        let WorkerConfig {
            queues,
            max_jobs,
            job_timeout,
            poll_delay,
            keep_result,
            max_tries,
            health_check_interval,
            drain_timeout,
            admin_listen: _,
        } = self.clone();
        crate::worker::Settings {
            queues: queues.unwrap_or_else(|| {
                vec![
                    keys::high_queue(prefix),
                    prefix.to_owned(),
                    keys::low_queue(prefix),
                ]
            }),
            max_jobs: max_jobs as usize,
            job_timeout,
            poll_delay,
            keep_result: Some(keep_result),
            max_tries,
            health_check_interval,
            drain_timeout: drain_timeout.unwrap_or(job_timeout),
            allow_abort: true,
        }
    }
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
        let s = worker.settings(&redis.queue_prefix);
        assert_eq!(
            s.queues,
            [
                "flowpilot:queue:high",
                "flowpilot:queue",
                "flowpilot:queue:low"
            ]
        );
        assert_eq!(s.max_jobs, 10);
        assert_eq!(s.job_timeout, Duration::from_secs(300));
        assert_eq!(s.drain_timeout, s.job_timeout);
        assert_eq!(redis.serializer, Serializer::Pickle);
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
}
