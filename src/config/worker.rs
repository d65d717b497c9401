//! The worker's settings as configured; `worker::Settings::from_config`
//! turns them into what the worker runs with.

use std::time::Duration;

use clap::Args;

use super::positive_duration;

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
}
