//! The running system, built in one place: from the connected database
//! and Redis, the engine with its providers, the worker with the engine's
//! functions, the maintenance loop and the API state. `app` builds it from
//! configuration ([`Runtime::from_config`]); the tests build it from
//! settings of their own ([`Runtime::new`]), so both run the same wiring.
//!
//! [`Tasks`] runs the long-lived subsystems: the first to stop stops the
//! others, and the first error is the process's.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::alert::{self, Alerts};
use crate::api;
use crate::config::{EngineConfig, RedisConfig, WorkerConfig};
use crate::engine::maintenance::Maintenance;
use crate::engine::{self, Engine};
use crate::metrics::{ApiMetrics, EngineMetrics, HealthMetrics, QueueMetrics, WorkerMetrics};
use crate::provider::{self, Providers};
use crate::queue::{self, Client};
use crate::telemetry::LogFilter;
use crate::worker::{self, Registry, Worker};

/// Margin of a lease over the job timeout (as arq's in-progress key).
const LEASE_MARGIN: Duration = Duration::from_secs(10);

/// Why the runtime could not be built or a subsystem stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis.
    #[error("redis: {0}")]
    Queue(#[from] queue::Error),
    /// A provider could not be set up.
    #[error("provider: {0}")]
    Provider(#[from] provider::Error),
    /// A metric could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The engine (the maintenance loop).
    #[error("engine: {0}")]
    Engine(#[from] engine::Error),
    /// The alert evaluator or dispatcher.
    #[error("alerts: {0}")]
    Alert(#[from] alert::Error),
    /// A listener.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A subsystem stopped: `name` stopped with `source`.
    #[error("{name} stopped: {source}")]
    Stopped {
        /// The subsystem.
        name: &'static str,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// A subsystem panicked.
    #[error("{0} panicked")]
    Panicked(String),
}

/// Settings of a runtime, converted from configuration or written by a
/// test.
pub struct Spec {
    /// The engine's settings.
    pub engine: engine::Settings,
    /// The side effects' providers.
    pub providers: Providers,
    /// The worker's settings (its queues, concurrency, timeouts).
    pub worker: worker::Settings,
    /// The alert evaluator's and dispatcher's settings.
    pub alerts: alert::Settings,
}

/// The wired system.
pub struct Runtime {
    /// The database pool, closed when the runtime stops.
    pub pool: PgPool,
    /// The Redis client.
    pub queue: Client,
    /// The engine.
    pub engine: Arc<Engine>,
    /// Alert rules, their evaluation and delivery.
    pub alerts: Alerts,
    /// Every metric of the process.
    pub registry: prometheus::Registry,
    api_metrics: Arc<ApiMetrics>,
    queue_metrics: Arc<QueueMetrics>,
    health_metrics: Arc<HealthMetrics>,
    worker: worker::Settings,
}

impl Runtime {
    /// Wires `spec` over `pool` and `queue`.
    ///
    /// # Errors
    /// When a metric cannot be registered.
    pub fn new(pool: PgPool, queue: Client, spec: Spec) -> Result<Runtime, Error> {
        let registry = prometheus::Registry::new();
        registry.register(Box::new(spec.providers.batch_sizes.clone()))?;
        let alerts = Alerts::new(pool.clone(), &spec.providers, spec.alerts);
        let engine = Engine::new(pool.clone(), queue.clone(), spec.providers, spec.engine)
            .with_metrics(EngineMetrics::register(&registry)?)
            .with_cache_metrics(crate::metrics::cache_lookups(&registry)?);
        Ok(Runtime {
            api_metrics: Arc::new(ApiMetrics::register(&registry)?),
            queue_metrics: Arc::new(QueueMetrics::register(&registry)?),
            health_metrics: Arc::new(HealthMetrics::register(&registry)?),
            pool,
            queue,
            engine: Arc::new(engine),
            alerts,
            registry,
            worker: spec.worker,
        })
    }

    /// Connects Redis and wires what `engine` and `worker` configure.
    /// Leases follow the worker's job timeout; without a worker (the API,
    /// the controller), the default one.
    ///
    /// # Errors
    /// Redis unreachable, a provider that cannot be set up.
    pub async fn from_config(
        pool: PgPool,
        redis: &RedisConfig,
        engine: &EngineConfig,
        worker: Option<&WorkerConfig>,
    ) -> Result<Runtime, Error> {
        let queue = Client::connect(&redis.redis_url, redis.serializer.into()).await?;
        queue.ping().await?;
        let worker = match worker {
            Some(w) => worker::Settings::from_config(w, &redis.queue_prefix),
            None => worker::Settings::default(),
        };
        let settings = engine::Settings::from_config(
            engine,
            &redis.queue_prefix,
            worker.job_timeout + LEASE_MARGIN,
            worker.job_timeout / 2,
        );
        let providers =
            Providers::from_config(engine, pool.clone(), queue.clone(), &redis.queue_prefix)?;
        Runtime::new(
            pool,
            queue,
            Spec {
                engine: settings,
                providers,
                worker,
                alerts: alert::Settings::from_config(engine, &redis.queue_prefix),
            },
        )
    }

    /// The worker, serving the engine's functions (and the diagnostic
    /// ones) on the configured queues, with its metrics.
    ///
    /// # Errors
    /// When its metrics are registered already (a second worker).
    pub fn worker(&self) -> Result<Worker, Error> {
        let mut functions = Registry::new();
        worker::diagnostic::register(&mut functions);
        self.engine.register(&mut functions);
        let metrics = Arc::new(WorkerMetrics::register(&self.registry)?);
        Ok(Worker::new(self.queue.clone(), functions, self.worker.clone()).with_metrics(metrics))
    }

    /// The API's shared state.
    pub fn api_state(&self, log_filter: Option<LogFilter>) -> api::AppState {
        api::AppState {
            engine: Arc::clone(&self.engine),
            alerts: self.alerts.clone(),
            reader: self.engine.reader(),
            keys: crate::auth::Keys::new(self.pool.clone()),
            sessions: crate::api::console::Sessions::new(self.pool.clone()),
            audit: crate::store::audit::Audit::new(self.pool.clone()),
            queue: self.queue.clone(),
            metrics: Arc::clone(&self.api_metrics),
            queue_metrics: Arc::clone(&self.queue_metrics),
            health_metrics: Arc::clone(&self.health_metrics),
            registry: self.registry.clone(),
            log_filter,
        }
    }

    /// Starts the listener that drops this process's cached copies
    /// (workflows, rate limits) as other processes announce changes.
    pub fn spawn_change_listener(&self, tasks: &mut Tasks) {
        let listen = Arc::clone(&self.engine).listen_for_changes(tasks.token());
        tasks.spawn("changes", async move {
            listen.await;
            Ok(())
        });
    }

    /// Starts the worker, the maintenance loop, the alert evaluator and
    /// the alert dispatcher in `tasks`.
    ///
    /// # Errors
    /// As [`Runtime::worker`].
    pub fn spawn_worker(&self, tasks: &mut Tasks) -> Result<(), Error> {
        let worker = self.worker()?.run(tasks.token());
        tasks.spawn("worker", async move { Ok(worker.await?) });
        let maintenance = Maintenance::new(Arc::clone(&self.engine)).run(tasks.token());
        tasks.spawn("maintenance", async move { Ok(maintenance.await?) });
        let evaluator = alert::evaluate::Evaluator::new(self.alerts.clone()).run(tasks.token());
        tasks.spawn("alerts", async move { Ok(evaluator.await?) });
        let dispatcher = alert::deliver::Dispatcher::new(self.alerts.clone()).run(tasks.token());
        tasks.spawn("alert-delivery", async move { Ok(dispatcher.await?) });
        Ok(())
    }
}

/// Long-lived subsystems under one cancellation token.
pub struct Tasks {
    token: CancellationToken,
    set: JoinSet<(&'static str, Result<(), Error>)>,
}

impl Tasks {
    /// Tasks stopped by `token` (or by one of them stopping).
    pub fn new(token: CancellationToken) -> Self {
        Tasks {
            token,
            set: JoinSet::new(),
        }
    }

    /// The token every task must stop on.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Runs `task` as the subsystem `name`, in a span of that name.
    pub fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = Result<(), Error>> + Send + 'static,
    ) {
        let span = tracing::info_span!("subsystem", name);
        self.set
            .spawn(async move { (name, task.await) }.instrument(span));
    }

    /// Waits for every task; the first to stop cancels the others. The
    /// first error (or panic) is returned.
    ///
    /// # Errors
    /// [`Error::Stopped`], [`Error::Panicked`].
    pub async fn wait(mut self) -> Result<(), Error> {
        let mut failure = None;
        while let Some(joined) = self.set.join_next().await {
            self.token.cancel();
            let err = match joined {
                Ok((_, Ok(()))) => continue,
                Ok((name, Err(e))) => Error::Stopped {
                    name,
                    source: Box::new(e),
                },
                Err(e) => Error::Panicked(e.to_string()),
            };
            failure = failure.or(Some(err));
        }
        failure.map_or(Ok(()), Err)
    }
}
