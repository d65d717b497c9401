//! Prometheus metrics, all under `flowpilot_`. Each subsystem owns a struct
//! with `register(&Registry)`; labels are bounded (route templates, methods,
//! status classes), never ids but the capped `workflow` label
//! ([`ExecutionMetrics`]).

mod execution;
mod health;

use std::time::Duration;

pub use execution::{ExecutionMetrics, WORKFLOW_LABELS};
pub use health::HealthMetrics;

use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// HTTP API request metrics.
pub struct ApiMetrics {
    requests: IntCounterVec,
    seconds: HistogramVec,
}

impl ApiMetrics {
    /// Creates and registers the API metrics.
    ///
    /// # Errors
    /// When a metric of the same name is registered already.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "flowpilot_api_requests_total",
                "HTTP API requests by route template, method and status class",
            ),
            &["route", "method", "status"],
        )?;
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "flowpilot_api_request_seconds",
                "HTTP API request latency by route template",
            ),
            &["route", "method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        Ok(ApiMetrics { requests, seconds })
    }

    /// Records one request.
    pub fn observe(&self, method: &str, route: &str, status: u16, took: Duration) {
        let class = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests
            .with_label_values(&[route, method, class])
            .inc();
        self.seconds
            .with_label_values(&[route, method])
            .observe(took.as_secs_f64());
    }
}

/// Worker job metrics.
pub struct WorkerMetrics {
    jobs: IntCounterVec,
    seconds: HistogramVec,
    /// The worker's slots (`max_jobs`): set while it runs, so that the
    /// series is there exactly while a worker is (the `worker absent` alert).
    pub slots: IntGauge,
    /// Slots whose job's function runs.
    pub busy: IntGauge,
}

impl WorkerMetrics {
    /// Creates and registers the worker metrics.
    ///
    /// # Errors
    /// When a metric of the same name is registered already.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let jobs = IntCounterVec::new(
            Opts::new(
                "flowpilot_worker_jobs_total",
                "ARQ jobs run by queue and outcome (complete, failed, retried, deferred)",
            ),
            &["queue", "outcome"],
        )?;
        let seconds = HistogramVec::new(
            HistogramOpts::new("flowpilot_worker_job_seconds", "ARQ job run time by queue"),
            &["queue"],
        )?;
        let slots = IntGauge::new(
            "flowpilot_worker_slots",
            "Jobs this worker runs at once at most (max_jobs)",
        )?;
        let busy = IntGauge::new(
            "flowpilot_worker_slots_busy",
            "Slots of this worker whose job is running",
        )?;
        registry.register(Box::new(jobs.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        registry.register(Box::new(slots.clone()))?;
        registry.register(Box::new(busy.clone()))?;
        Ok(WorkerMetrics {
            jobs,
            seconds,
            slots,
            busy,
        })
    }

    /// Records one finished job.
    pub fn observe(&self, queue: &str, outcome: &str, took: Duration) {
        self.jobs.with_label_values(&[queue, outcome]).inc();
        self.seconds
            .with_label_values(&[queue])
            .observe(took.as_secs_f64());
    }
}

/// Engine step and recovery metrics.
pub struct EngineMetrics {
    steps: IntCounterVec,
    errors: IntCounterVec,
    seconds: HistogramVec,
    recoveries: IntCounterVec,
    demoted: IntCounter,
    parks: IntCounterVec,
    /// Executions started and finished, by workflow.
    pub executions: ExecutionMetrics,
}

impl EngineMetrics {
    /// Creates and registers the engine metrics.
    ///
    /// # Errors
    /// When a metric of the same name is registered already.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let steps = IntCounterVec::new(
            Opts::new(
                "flowpilot_engine_steps_total",
                "Workflow steps by action type and outcome (SUCCEEDED, RETRYING, FAILED, WAITING)",
            ),
            &["action", "outcome"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "flowpilot_engine_step_errors_total",
                "Failed and retried step attempts by action type and error class \
                 (transient, timeout, rate_limited, permanent, invalid_config, ...)",
            ),
            &["action", "error_class"],
        )?;
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "flowpilot_engine_step_seconds",
                "Action plus checkpoint time by action type (a run of the step: time parked \
                 in a wait or for a provider is not in it)",
            ),
            &["action"],
        )?;
        let recoveries = IntCounterVec::new(
            Opts::new(
                "flowpilot_engine_recoveries_total",
                "Executions the maintenance loop looked at, by status and outcome \
                 (requeued: moved to the queue under a fresh job; job_present: its job \
                 will still run, left alone; changed: moved by someone else meanwhile)",
            ),
            &["status", "outcome"],
        )?;
        registry.register(Box::new(steps.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        let demoted = IntCounter::new(
            "flowpilot_engine_starts_demoted_total",
            "Executions started at low priority because their account was past its fair share of starts",
        )?;
        let parks = IntCounterVec::new(
            Opts::new(
                "flowpilot_engine_parks_total",
                "Executions parked by waiting reason (wait, rate_limited, provider_unavailable, \
                 retry_backoff, send_window, ...)",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(recoveries.clone()))?;
        registry.register(Box::new(demoted.clone()))?;
        registry.register(Box::new(parks.clone()))?;
        Ok(EngineMetrics {
            steps,
            errors,
            seconds,
            recoveries,
            demoted,
            parks,
            executions: ExecutionMetrics::register(registry)?,
        })
    }

    /// Counts an execution parked for `reason`.
    pub fn parked(&self, reason: &str) {
        self.parks.with_label_values(&[reason]).inc();
    }

    /// Counts one start demoted to low priority.
    pub fn demoted(&self) {
        self.demoted.inc();
    }

    /// Records what the maintenance loop did with one execution.
    pub fn recovered(&self, status: &str, outcome: &str) {
        self.recoveries.with_label_values(&[status, outcome]).inc();
    }

    /// Records one step, and its error class when it failed or will retry.
    pub fn observe(&self, action: &str, outcome: &str, class: Option<&str>, took: Duration) {
        self.steps.with_label_values(&[action, outcome]).inc();
        if let Some(class) = class {
            self.errors.with_label_values(&[action, class]).inc();
        }
        self.seconds
            .with_label_values(&[action])
            .observe(took.as_secs_f64());
    }
}

/// Queue health gauges, set from Redis when `/metrics` of an API process is
/// scraped (worker and controller processes leave them out, so one queue
/// is one series per API replica, the same figure in each).
pub struct QueueMetrics {
    jobs: IntGaugeVec,
    oldest_ready: GaugeVec,
    rate: GaugeVec,
}

impl QueueMetrics {
    /// Creates and registers the queue gauges.
    ///
    /// # Errors
    /// When a metric of the same name is registered already.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let jobs = IntGaugeVec::new(
            Opts::new(
                "flowpilot_queue_jobs",
                "Jobs on a queue by state: ready (due, waiting for a worker), \
                 in_progress (held by a worker), deferred (due later)",
            ),
            &["queue", "state"],
        )?;
        let oldest_ready = GaugeVec::new(
            Opts::new(
                "flowpilot_queue_oldest_ready_seconds",
                "How long the oldest ready job of a queue has waited (0 when none)",
            ),
            &["queue"],
        )?;
        let rate = GaugeVec::new(
            Opts::new(
                "flowpilot_queue_jobs_per_second",
                "Jobs per second over the last full minute by direction: enqueued by \
                 flowpilot's producers, dequeued (claimed) by flowpilot's workers",
            ),
            &["queue", "direction"],
        )?;
        registry.register(Box::new(jobs.clone()))?;
        registry.register(Box::new(oldest_ready.clone()))?;
        registry.register(Box::new(rate.clone()))?;
        Ok(QueueMetrics {
            jobs,
            oldest_ready,
            rate,
        })
    }

    /// Jobs of `queue` in `state` (`ready`, `in_progress`, `deferred`).
    pub fn jobs(&self, queue: &str, state: &str, n: u64) {
        self.jobs.with_label_values(&[queue, state]).set(n as i64);
    }

    /// How long the oldest ready job of `queue` has waited.
    pub fn oldest_ready(&self, queue: &str, age: Duration) {
        self.oldest_ready
            .with_label_values(&[queue])
            .set(age.as_secs_f64());
    }

    /// Jobs per second of `queue` in `direction` (`enqueued`, `dequeued`).
    pub fn rate(&self, queue: &str, direction: &str, per_s: f64) {
        self.rate.with_label_values(&[queue, direction]).set(per_s);
    }
}

/// Lookups of the in-process caches (`cache`: `definitions`, `workflows`,
/// `limits`; `result`: `hit`, `miss`), for their hit ratios.
pub fn cache_lookups(registry: &Registry) -> prometheus::Result<IntCounterVec> {
    let lookups = IntCounterVec::new(
        Opts::new(
            "flowpilot_cache_lookups_total",
            "In-process cache lookups by cache (definitions, workflows, limits) and result (hit, miss)",
        ),
        &["cache", "result"],
    )?;
    registry.register(Box::new(lookups.clone()))?;
    Ok(lookups)
}
