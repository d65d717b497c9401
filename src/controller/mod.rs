//! The Kubernetes controller (`flowpilot controller`): one reconciler per
//! CRD, run only by the replica holding the Lease.
//!
//! - [`workflow_execution`]: a `WorkflowExecution` starts an execution in
//!   PostgreSQL (keyed by its uid) and mirrors its status; deletion cancels
//!   it (finalizer); finished ones go after `ttlSecondsAfterFinished`;
//! - [`worker_pool`]: a `WorkerPool` owns a Deployment of ARQ workers,
//!   scaled by [`autoscale`] (pure) in `Auto` mode or by `/scale`;
//!   the Deployment itself is rendered by [`pool_deployment`] (pure);
//! - [`status`]: conditions per the API conventions;
//! - [`lease`]: leader election on a `coordination.k8s.io` Lease.
//!
//! Reconcile decisions are pure where they can be (autoscale, conditions,
//! lease), so they are tested without an API server; the reconcilers are
//! tested through kube's client over a mock service.

pub mod autoscale;
pub mod lease;
pub mod pool_deployment;
pub mod status;
pub mod worker_pool;
pub mod workflow_execution;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use kube::{Api, Client};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::ControllerConfig;
use crate::crd::{WorkerPool, WorkflowExecution};
use crate::engine::Engine;
use crate::{queue, store};

/// Field manager of every server-side apply (DESIGN.md).
pub const FIELD_MANAGER: &str = "flowpilot-controller";

/// Errors of a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API.
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    /// The engine (PostgreSQL).
    #[error("engine: {0}")]
    Engine(#[from] crate::engine::Error),
    /// Redis.
    #[error("queue: {0}")]
    Queue(#[from] queue::Error),
    /// The finalizer helper.
    #[error("finalizer: {0}")]
    // NB: boxed, the finalizer error wraps this type.
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// A resource without the metadata it must have (namespace, uid).
    #[error("resource is missing {0}")]
    Metadata(&'static str),
}

impl Error {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Engine(_) => "engine",
            Error::Queue(_) => "queue",
            Error::Finalizer(_) => "finalizer",
            Error::Metadata(_) => "metadata",
        }
    }
}

/// Local result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Controller settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Image of `flowpilot worker` for pools that name none.
    pub worker_image: String,
    /// How often running executions' status is refreshed.
    pub status_interval: Duration,
    /// How often pools are re-evaluated.
    pub scale_interval: Duration,
}

/// Reconcile metrics.
pub struct Metrics {
    reconciles: IntCounterVec,
    failures: IntCounterVec,
    seconds: HistogramVec,
}

impl Metrics {
    /// Creates and registers the controller metrics.
    ///
    /// # Errors
    /// When a metric of the same name is registered already.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let reconciles = IntCounterVec::new(
            Opts::new(
                "flowpilot_controller_reconciles_total",
                "Reconciles by CRD kind",
            ),
            &["kind"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "flowpilot_controller_reconcile_failures_total",
                "Failed reconciles by CRD kind and error kind",
            ),
            &["kind", "error"],
        )?;
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "flowpilot_controller_reconcile_seconds",
                "Reconcile duration by CRD kind",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        Ok(Metrics {
            reconciles,
            failures,
            seconds,
        })
    }

    fn observe(&self, kind: &str, started: Instant) {
        self.reconciles.with_label_values(&[kind]).inc();
        self.seconds
            .with_label_values(&[kind])
            .observe(started.elapsed().as_secs_f64());
    }

    fn failed(&self, kind: &str, e: &Error) {
        self.failures.with_label_values(&[kind, e.kind()]).inc();
    }
}

/// What reconcilers share: one value, built once, as controller-rs's
/// `Context`.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// The engine: executions start and cancel through it.
    pub engine: Arc<Engine>,
    /// Reads of executions.
    pub reader: store::Reader,
    /// Redis (queue depth).
    pub queue: queue::Client,
    /// Who publishes events.
    pub reporter: Reporter,
    /// Settings.
    pub settings: Settings,
    /// Metrics.
    pub metrics: Metrics,
}

impl Context {
    /// The context of a controller over `engine` and Redis (`queue`),
    /// publishing events as `identity`.
    pub fn new(
        client: Client,
        engine: Arc<Engine>,
        queue: queue::Client,
        settings: Settings,
        identity: &str,
        metrics: Metrics,
    ) -> Context {
        Context {
            client,
            reader: engine.reader(),
            engine,
            queue,
            reporter: Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(identity.to_owned()),
            },
            settings,
            metrics,
        }
    }
}

impl Settings {
    /// The settings `config` names.
    pub fn from_config(config: &ControllerConfig) -> Settings {
        Settings {
            worker_image: config.worker_image.clone(),
            status_interval: config.status_interval,
            scale_interval: config.scale_interval,
        }
    }
}

fn error_policy<K>(kind: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |_, e, ctx| {
        warn!(kind, error = %e, "reconcile failed; requeueing");
        ctx.metrics.failed(kind, e);
        Action::requeue(Duration::from_secs(10))
    }
}

/// Runs both controllers until `shutdown` (cluster-wide, or in `namespace`).
///
/// # Errors
/// None of its own: reconcile errors are requeued.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: CancellationToken,
) -> Result<()> {
    let (wfx, wp, deployments): (Api<WorkflowExecution>, Api<WorkerPool>, Api<Deployment>) =
        match &namespace {
            Some(ns) => (
                Api::namespaced(ctx.client.clone(), ns),
                Api::namespaced(ctx.client.clone(), ns),
                Api::namespaced(ctx.client.clone(), ns),
            ),
            None => (
                Api::all(ctx.client.clone()),
                Api::all(ctx.client.clone()),
                Api::all(ctx.client.clone()),
            ),
        };
    info!(
        namespace = namespace.as_deref().unwrap_or("*"),
        "controller running"
    );
    let stop = shutdown.clone();
    let executions = Controller::new(wfx, watcher::Config::default())
        .graceful_shutdown_on(async move { stop.cancelled().await })
        .run(
            |obj, ctx: Arc<Context>| async move {
                let started = Instant::now();
                let r = workflow_execution::reconcile(obj, Arc::clone(&ctx)).await;
                ctx.metrics.observe("WorkflowExecution", started);
                r
            },
            error_policy("WorkflowExecution"),
            Arc::clone(&ctx),
        )
        .for_each(|_| async {});
    let stop = shutdown.clone();
    let pools = Controller::new(wp, watcher::Config::default())
        .owns(deployments, watcher::Config::default())
        .graceful_shutdown_on(async move { stop.cancelled().await })
        .run(
            |obj, ctx: Arc<Context>| async move {
                let started = Instant::now();
                let r = worker_pool::reconcile(obj, Arc::clone(&ctx)).await;
                ctx.metrics.observe("WorkerPool", started);
                r
            },
            error_policy("WorkerPool"),
            Arc::clone(&ctx),
        )
        .for_each(|_| async {});
    tokio::join!(executions, pools);
    info!("controller stopped");
    Ok(())
}

/// chrono to the Kubernetes timestamp type.
pub fn k8s_time(t: chrono::DateTime<chrono::Utc>) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::from_microsecond(t.timestamp_micros())
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}
