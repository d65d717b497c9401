//! Prometheus metrics, all under `flowpilot_`. Each subsystem owns a struct
//! with `register(&Registry)`; labels are bounded (route templates, methods,
//! status classes), never ids.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

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
                "ARQ jobs run by queue and outcome (complete, failed, retried)",
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
        registry.register(Box::new(recoveries.clone()))?;
        Ok(EngineMetrics {
            steps,
            seconds,
            recoveries,
        })
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
