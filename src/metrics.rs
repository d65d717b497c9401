//! Prometheus metrics, all under `flowpilot_`. Each subsystem owns a struct
//! with `register(&Registry)`; labels are bounded (route templates, methods,
//! status classes), never ids.

use std::time::Duration;

use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
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
        registry.register(Box::new(jobs.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        Ok(WorkerMetrics { jobs, seconds })
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
    seconds: HistogramVec,
    recoveries: IntCounterVec,
    demoted: IntCounter,
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
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "flowpilot_engine_step_seconds",
                "Action plus checkpoint time by action type",
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
        registry.register(Box::new(seconds.clone()))?;
        let demoted = IntCounter::new(
            "flowpilot_engine_starts_demoted_total",
            "Executions started at low priority because their account was past its fair share of starts",
        )?;
        registry.register(Box::new(recoveries.clone()))?;
        registry.register(Box::new(demoted.clone()))?;
        Ok(EngineMetrics {
            steps,
            seconds,
            recoveries,
            demoted,
        })
    }

    /// Counts one start demoted to low priority.
    pub fn demoted(&self) {
        self.demoted.inc();
    }

    /// Records what the maintenance loop did with one execution.
    pub fn recovered(&self, status: &str, outcome: &str) {
        self.recoveries.with_label_values(&[status, outcome]).inc();
    }

    /// Records one step.
    pub fn observe(&self, action: &str, outcome: &str, took: Duration) {
        self.steps.with_label_values(&[action, outcome]).inc();
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
