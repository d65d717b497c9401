//! Command line and environment: the only module that reads either.
//!
//! Every setting has a long flag, an environment name (`FLOWPILOT_*`, plus
//! the conventional `DATABASE_URL` and `REDIS_URL`), a default, and a doc
//! comment that clap prints as help. Each subsystem gets its own flattened
//! group; `main` destructures them so none is silently ignored.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

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

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply database migrations and create log partitions ahead, then exit.
    Migrate {
        /// PostgreSQL.
        #[command(flatten)]
        db: DbConfig,
    },
    /// Run an ARQ-compatible worker on the configured queues.
    Worker {
        /// Redis.
        #[command(flatten)]
        redis: RedisConfig,
        /// Worker.
        #[command(flatten)]
        worker: WorkerConfig,
    },
    /// Local development: migrate, then run the worker (and, as they land,
    /// the API and the maintenance loop) in one process.
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
    },
    /// Serve the HTTP API (not available yet: issue "HTTP API v1").
    Api,
    /// Run the Kubernetes controller (not available yet: issue "Kubernetes").
    Controller,
    /// Print the CRD YAML (not available yet: issue "Kubernetes").
    Crds,
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
}

/// The worker.
#[derive(Debug, Clone, Args)]
pub struct WorkerConfig {
    /// Queues to serve, highest priority first, comma-separated. Default the
    /// three priority queues: `arq:queue:high,arq:queue,arq:queue:low`.
    #[arg(long, env = "FLOWPILOT_QUEUES", value_delimiter = ',', default_values_t = default_queues())]
    pub queues: Vec<String>,
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
}

fn default_queues() -> Vec<String> {
    [keys::HIGH_QUEUE, keys::DEFAULT_QUEUE, keys::LOW_QUEUE]
        .map(String::from)
        .to_vec()
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
        if self.queues.is_empty() || self.queues.iter().any(|q| q.trim().is_empty()) {
            return Err("--queues: give at least one non-empty queue name".into());
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = self.queues.iter().find(|q| !seen.insert(q.as_str())) {
            return Err(format!("--queues: `{dup}` is listed twice"));
        }
        Ok(())
    }

    /// The worker's settings.
    pub fn settings(&self) -> crate::worker::Settings {
        let WorkerConfig {
            queues,
            max_jobs,
            job_timeout,
            poll_delay,
            keep_result,
            max_tries,
            health_check_interval,
            drain_timeout,
        } = self.clone();
        crate::worker::Settings {
            queues,
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
        let cli = parse(&["worker"]).unwrap();
        let Command::Worker { worker, redis } = cli.command else {
            panic!("not worker")
        };
        let s = worker.settings();
        assert_eq!(s.queues, ["arq:queue:high", "arq:queue", "arq:queue:low"]);
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
        let cli = parse(&["worker", "--queues", "a,a"]).unwrap();
        let Command::Worker { worker, .. } = cli.command else {
            panic!("not worker")
        };
        assert!(worker.validate().unwrap_err().contains("listed twice"));
    }
}
