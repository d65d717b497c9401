//! The workflow engine: starts executions, runs their steps with a
//! checkpoint after each, parks them on waits, retries transient errors,
//! recovers them after crashes. Every write to workflows, contacts and
//! executions goes through it.
//!
//! - [`plan`]: the state machine, pure: a command becomes one transition;
//! - [`definition`]: workflow definitions, parsed and validated;
//! - [`reference`]: what each step's templates may read, checked on write;
//! - [`executor`]: `run_execution`: claim, then step (`step.rs`: run the
//!   action, decide) and settle (`settle.rs`: plan, commit, enqueue) until
//!   the run ends;
//! - [`execution`], [`workflow`], [`contact`]: what users ask of the
//!   engine (start, cancel, retry; create and version workflows; keep the
//!   contact mirror), each checked before anything is written;
//! - [`operation`]: bulk retries, cancels and enrollments, in batches;
//! - [`job`]: the arq functions and how engine errors reach Python;
//! - [`maintenance`]: the singleton recovery loop;
//! - [`error`]: the engine's errors, one variant per cause.
//!
//! Work arrives as ARQ jobs ([`Engine::register`]): `execute_workflow`
//! (what a Python application enqueues) and `run_execution` (what the
//! engine enqueues for itself: job id `run_execution:<id>:<wake_seq>`).
//! PostgreSQL is the record; a lost job only delays an execution until the
//! maintenance loop re-enqueues it. Recovery never depends on a job id
//! being free: a job that will not run (finished early, expired, flushed)
//! is replaced under the next `wake_seq`, and a job that will still run is
//! left alone, so a backlog never grows a second job per execution.

pub mod contact;
pub mod definition;
pub mod error;
pub mod eta;
pub mod execution;
pub mod executor;
pub mod insight;
mod invalidate;
pub mod job;
mod limit;
pub mod maintenance;
pub mod operation;
pub mod plan;
pub mod reference;
pub mod retry;
mod settle;
mod step;
pub mod workflow;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::cache::Cache;
use crate::config::EngineConfig;
pub use crate::domain::Priority;
use crate::provider::Providers;
use crate::queue::{self, Defer, EnqueueOptions, Value, keys};
use crate::store::{self, execution::Execution};
use definition::Definition;
pub use error::{Error, Result};
pub use execution::StartRequest;
use executor::Run;
use retry::{RetryPolicies, RetryPolicy};

/// ARQ function a Python application enqueues to start an execution.
pub const EXECUTE_WORKFLOW: &str = "execute_workflow";
/// ARQ function the engine enqueues to continue an execution.
pub const RUN_EXECUTION: &str = "run_execution";
/// Run outcomes kept for slow listeners of [`Engine::watch_runs`].
const RUN_SIGNALS: usize = 1024;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a claim lasts: the worker's job timeout plus a margin, so a
    /// live run never loses it.
    pub lease: Duration,
    /// After this long one run hands the rest of its steps to a fresh job,
    /// well inside the job timeout.
    pub run_budget: Duration,
    /// Retry policies of retryable failures, by action type.
    pub retry: RetryPolicies,
    /// How often the maintenance loop looks for due and lost executions.
    pub maintenance_interval: Duration,
    /// The recovery loop leaves due rows this long to their own deferred job.
    pub due_grace: Duration,
    /// QUEUED rows untouched this long are re-enqueued (their job may be lost).
    pub stale_queued_after: Duration,
    /// Only wake-ups due within this long are held in Redis; later ones
    /// stay in PostgreSQL until the timer pump moves them (see
    /// [`maintenance`]).
    pub timer_horizon: Duration,
    /// Log partitions older than this many months are dropped (0: never).
    pub log_retention_months: u32,
    /// Executions an enrollment starts per second and account.
    pub enroll_rate: u32,
    /// How long a worker holds a bulk operation between two batches.
    pub operation_lease: Duration,
    /// This process's name in leases.
    pub owner: String,
    /// Each account's fair share of starts; past it new executions run at
    /// low priority. `None`: off.
    pub fair_share: Option<crate::domain::Rate>,
    /// How long a permit of an account's cap of running executions is
    /// held unless renewed: a run renews it every third of this, so the
    /// permit of a worker that died lapses within it.
    pub running_hold: Duration,
    /// Most steps one checkpoint commits: local steps (no effect outside
    /// PostgreSQL) in a row commit together, atomically, up to this many.
    /// 1: every step commits on its own.
    pub steps_per_checkpoint: usize,
    /// Transactions of checkpoints group-committed at once
    /// ([`store::group`]): checkpoints of concurrent executions share
    /// them. 0 (the default): each checkpoint commits alone.
    pub commit_lanes: usize,
    /// Prefix of the priority queues: `<prefix>:high`, `<prefix>`,
    /// `<prefix>:low`, and of the dead set `<prefix>:dead`.
    pub queue_prefix: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lease: Duration::from_secs(310),
            run_budget: Duration::from_secs(150),
            retry: RetryPolicies::default(),
            maintenance_interval: Duration::from_secs(1),
            due_grace: Duration::from_secs(5),
            stale_queued_after: Duration::from_secs(30),
            timer_horizon: Duration::from_secs(60),
            log_retention_months: 0,
            enroll_rate: 100,
            operation_lease: Duration::from_secs(30),
            owner: format!("flowpilot-{}", uuid::Uuid::new_v4().simple()),
            fair_share: "50/s:500".parse().ok(),
            steps_per_checkpoint: 100,
            commit_lanes: 0,
            running_hold: Duration::from_secs(30),
            queue_prefix: keys::FLOWPILOT_QUEUE.to_owned(),
        }
    }
}

impl Settings {
    /// The settings `config` names, for queues under `queue_prefix`, with
    /// leases of `lease` and runs of at most `run_budget` (both follow the
    /// worker's job timeout).
    pub fn from_config(
        config: &EngineConfig,
        queue_prefix: &str,
        lease: Duration,
        run_budget: Duration,
    ) -> Settings {
        Settings {
            lease,
            run_budget,
            retry: RetryPolicies::built_in(
                RetryPolicy {
                    max_attempts: config.retry_max_attempts,
                    initial: config.retry_backoff,
                    max: config.retry_max_backoff,
                    max_elapsed: None,
                },
                &[
                    ("send_email", config.retry_email),
                    ("send_sms", config.retry_sms),
                    ("webhook", config.retry_webhook),
                    ("arq", config.retry_arq),
                ]
                .into_iter()
                .filter_map(|(kind, o)| Some((kind, o?)))
                .collect::<Vec<_>>(),
            ),
            maintenance_interval: config.maintenance_interval,
            stale_queued_after: config.stale_queued_after,
            timer_horizon: config.timer_horizon,
            log_retention_months: config.log_retention_months,
            enroll_rate: config.enroll_rate,
            operation_lease: config.operation_lease,
            fair_share: config.fair_share.0,
            commit_lanes: usize::from(config.commit_lanes),
            queue_prefix: queue_prefix.to_owned(),
            ..Settings::default()
        }
    }
}

/// What [`Engine::enqueue_run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    /// The job is in its queue.
    Added,
    /// Refused: a job or result with this id is still there (arq's dedupe).
    Refused,
}

/// Parsed definitions cached at most.
const DEFINITIONS_CACHED: usize = 10_000;
/// Workflows cached at most, and for how long.
const WORKFLOWS_CACHED: usize = 10_000;
const WORKFLOW_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// The workflow engine.
pub struct Engine {
    pool: PgPool,
    /// Commits checkpoints of concurrent executions together.
    group: store::group::Group,
    queue: queue::Client,
    providers: Providers,
    settings: Settings,
    /// Versions are immutable: parsed definitions are cached until evicted.
    definitions: Cache<(Uuid, i32), Arc<Definition>>,
    /// Workflows as a start reads them (activation, latest version), for a
    /// second at most; a change drops them in every process at once.
    workflows: Cache<Uuid, store::workflow::Workflow>,
    /// Executions a run of this process holds now. A lease of ours on any
    /// other execution belongs to a run that ended with an error, so this
    /// process may take it back at once instead of waiting for it to lapse.
    running: Mutex<HashSet<Uuid>>,
    /// How each run ended, for those who wait on one (tests, and whoever
    /// wants to follow executions live) instead of polling the row.
    runs: broadcast::Sender<(Uuid, Run)>,
    /// Prometheus metrics, when the process exports them.
    metrics: Option<crate::metrics::EngineMetrics>,
}

impl Engine {
    /// An engine over `pool` and `queue` with `providers`.
    pub fn new(
        pool: PgPool,
        queue: queue::Client,
        providers: Providers,
        settings: Settings,
    ) -> Self {
        Engine {
            group: store::group::Group::new(pool.clone(), settings.commit_lanes),
            pool,
            queue,
            providers,
            settings,
            definitions: Cache::new("definitions", None, DEFINITIONS_CACHED),
            workflows: Cache::new("workflows", Some(WORKFLOW_TTL), WORKFLOWS_CACHED),
            running: Mutex::new(HashSet::new()),
            runs: broadcast::channel(RUN_SIGNALS).0,
            metrics: None,
        }
    }

    /// Counts the lookups of its caches in `counter`.
    pub fn with_cache_metrics(mut self, counter: prometheus::IntCounterVec) -> Self {
        self.definitions =
            Cache::new("definitions", None, DEFINITIONS_CACHED).with_metrics(counter.clone());
        self.workflows = Cache::new("workflows", Some(WORKFLOW_TTL), WORKFLOWS_CACHED)
            .with_metrics(counter.clone());
        self.providers.limits = self.providers.limits.clone().with_metrics(counter);
        self
    }

    /// Exports step metrics to `metrics`.
    pub fn with_metrics(mut self, metrics: crate::metrics::EngineMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// A read handle on the same database: reads go through it, writes
    /// through the engine.
    pub fn reader(&self) -> store::Reader {
        store::Reader::new(self.pool.clone())
    }

    /// The per-account rate limits its steps draw on.
    pub fn limiter(&self) -> &crate::provider::Limiter {
        &self.providers.limits
    }

    /// Prefix of flowpilot's queues (`flowpilot:queue`).
    pub fn queue_prefix(&self) -> &str {
        &self.settings.queue_prefix
    }

    /// Every run's end from now on: `(execution id, how it ended)`.
    pub fn watch_runs(&self) -> broadcast::Receiver<(Uuid, Run)> {
        self.runs.subscribe()
    }

    /// Records a step's outcome, error class and time, when metrics are on.
    fn observe_step(&self, ran: &step::Ran<'_>, outcome: &str) {
        if let Some(m) = &self.metrics {
            let took = (Utc::now() - ran.began.ran_at).to_std().unwrap_or_default();
            let class = ran.class.map(crate::domain::ErrorClass::as_str);
            m.observe(ran.step.action.kind(), outcome, class, took);
        }
    }

    /// Counts `e`'s first run beginning.
    fn observe_started(&self, e: &store::execution::Execution) {
        if let Some(m) = &self.metrics {
            m.executions.started(e.workflow_id);
        }
    }

    /// Records an execution of `workflow` created at `created_at` reaching
    /// its final `status`.
    fn observe_finished(
        &self,
        workflow: Uuid,
        status: crate::domain::Status,
        created_at: chrono::DateTime<Utc>,
    ) {
        if let Some(m) = &self.metrics {
            let took = (Utc::now() - created_at).to_std().unwrap_or_default();
            m.executions.finished(workflow, status.as_str(), took);
        }
    }

    /// Records where a checkpoint left `e`: at its end, or parked (for its
    /// waiting reason).
    fn observe_settled(&self, e: &store::execution::Execution) {
        use crate::domain::Status;
        if e.status.is_final() {
            self.observe_finished(e.workflow_id, e.status, e.created_at);
        } else if let (Some(m), Some(reason), Status::Waiting | Status::Retrying) =
            (&self.metrics, &e.waiting_reason, e.status)
        {
            m.parked(reason);
        }
    }

    /// Records executions a statement over many cancelled.
    fn observe_cancelled(&self, ended: &[store::execution::Ended]) {
        for e in ended {
            self.observe_finished(
                e.workflow_id,
                crate::domain::Status::Cancelled,
                e.created_at,
            );
        }
    }

    /// Records what the maintenance loop did with one execution.
    fn observe_recovery(&self, status: &str, outcome: &str) {
        if let Some(m) = &self.metrics {
            m.recovered(status, outcome);
        }
    }

    /// Enqueues the job that runs `e` now, or at `at`, under `e`'s current
    /// job id; says whether arq's dedupe refused it.
    async fn enqueue_run(
        &self,
        e: &Execution,
        at: Option<chrono::DateTime<Utc>>,
    ) -> Result<Enqueued> {
        let added = self
            .queue
            .enqueue(
                RUN_EXECUTION,
                vec![Value::str(e.id.to_string())],
                vec![],
                EnqueueOptions {
                    job_id: Some(job_id(e)),
                    queue: Some(self.queue_of(e)),
                    defer: at.map_or(Defer::No, |t| Defer::UntilMs(t.timestamp_millis())),
                    ..EnqueueOptions::default()
                },
            )
            .await?;
        Ok(if added.is_some() {
            Enqueued::Added
        } else {
            Enqueued::Refused
        })
    }

    /// The queue `e`'s jobs go to.
    fn queue_of(&self, e: &Execution) -> String {
        priority_queue(e.priority, &self.settings.queue_prefix)
    }
}

/// The id of `e`'s current `run_execution` job.
fn job_id(e: &Execution) -> String {
    format!("{RUN_EXECUTION}:{}:{}", e.id, e.wake_seq)
}

/// The queue of `priority`, given the queue prefix (`flowpilot:queue`).
pub fn priority_queue(priority: Priority, prefix: &str) -> String {
    match priority {
        Priority::High => keys::high_queue(prefix),
        Priority::Normal => prefix.to_owned(),
        Priority::Low => keys::low_queue(prefix),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
