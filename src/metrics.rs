//! Prometheus metrics, all under `flowpilot_`. Each subsystem owns a struct
//! with `register(&Registry)`; labels are bounded (route templates, methods,
//! status classes), never ids.

use std::time::Duration;

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

/// Most workflows with a `workflow` label of their own in a process; the
/// rest are counted as `other`, so the label set stays bounded.
pub const WORKFLOW_LABELS: usize = 20;

/// Execution metrics by workflow: the first [`WORKFLOW_LABELS`] workflows
/// a process sees are labelled with their id, later ones `other`.
pub struct ExecutionMetrics {
    started: IntCounterVec,
    finished: IntCounterVec,
    seconds: HistogramVec,
    labelled: std::sync::Mutex<std::collections::HashSet<uuid::Uuid>>,
}

impl ExecutionMetrics {
    /// Creates and registers the execution metrics.
    ///
    /// # Errors
    /// When a metric of the same name is registered already.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let started = IntCounterVec::new(
            Opts::new(
                "flowpilot_executions_started_total",
                "Executions whose first run began, by workflow (first 20 seen, then other)",
            ),
            &["workflow"],
        )?;
        let finished = IntCounterVec::new(
            Opts::new(
                "flowpilot_executions_finished_total",
                "Executions that reached a final status (COMPLETED, FAILED, CANCELLED), by workflow",
            ),
            &["workflow", "status"],
        )?;
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "flowpilot_execution_seconds",
                "Executions from creation to their final status, by workflow (waits included)",
            )
            .buckets(vec![
                1.0,
                5.0,
                30.0,
                60.0,
                300.0,
                900.0,
                3600.0,
                21_600.0,
                86_400.0,
                259_200.0,
                604_800.0,
                1_209_600.0,
                2_592_000.0,
            ]),
            &["workflow"],
        )?;
        registry.register(Box::new(started.clone()))?;
        registry.register(Box::new(finished.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        Ok(ExecutionMetrics {
            started,
            finished,
            seconds,
            labelled: std::sync::Mutex::default(),
        })
    }

    /// The `workflow` label of `id`.
    fn label(&self, id: uuid::Uuid) -> String {
        let mut labelled = self
            .labelled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if labelled.contains(&id) || labelled.len() < WORKFLOW_LABELS && labelled.insert(id) {
            id.to_string()
        } else {
            "other".to_owned()
        }
    }

    /// Counts an execution of `workflow` whose first run began.
    pub fn started(&self, workflow: uuid::Uuid) {
        self.started
            .with_label_values(&[&self.label(workflow)])
            .inc();
    }

    /// Records an execution of `workflow` that reached `status` after `took`.
    pub fn finished(&self, workflow: uuid::Uuid, status: &str, took: Duration) {
        let label = self.label(workflow);
        self.finished.with_label_values(&[&label, status]).inc();
        self.seconds
            .with_label_values(&[&label])
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

/// What an API or worker process checks when its `/metrics` is read:
/// whether PostgreSQL and Redis answer, breakers not closed, log
/// partitions ahead. Set only where checked (the controller has none of
/// these series, so no false alarm from a process that never looked).
pub struct HealthMetrics {
    up: IntGaugeVec,
    executions: IntGaugeVec,
    work: IntGaugeVec,
    breakers: IntGaugeVec,
    partitions_ahead: IntGauge,
}

impl HealthMetrics {
    /// Creates and registers the gauges.
    ///
    /// # Errors
    /// When a metric of the same name is registered already.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let up = IntGaugeVec::new(
            Opts::new(
                "flowpilot_dependency_up",
                "1 when the dependency (postgres, redis) answered the last scrape's check, else 0",
            ),
            &["dependency"],
        )?;
        let executions = IntGaugeVec::new(
            Opts::new(
                "flowpilot_executions",
                "Executions not yet final by status (QUEUED, RUNNING, WAITING, RETRYING), across \
                 accounts: counted for up to 200 ms, else the planner's estimate",
            ),
            &["status"],
        )?;
        let work = IntGaugeVec::new(
            Opts::new(
                "flowpilot_open_work",
                "Bulk operations pending or running (kind=operations) and alerts firing, \
                 not acknowledged (kind=alerts), across accounts",
            ),
            &["kind"],
        )?;
        let breakers = IntGaugeVec::new(
            Opts::new(
                "flowpilot_breakers",
                "Provider circuit breakers not closed, by state (open, half_open)",
            ),
            &["state"],
        )?;
        let partitions_ahead = IntGauge::new(
            "flowpilot_log_partitions_ahead",
            "Months past the current one that have their log partitions",
        )?;
        registry.register(Box::new(up.clone()))?;
        registry.register(Box::new(executions.clone()))?;
        registry.register(Box::new(work.clone()))?;
        registry.register(Box::new(breakers.clone()))?;
        registry.register(Box::new(partitions_ahead.clone()))?;
        Ok(HealthMetrics {
            up,
            executions,
            work,
            breakers,
            partitions_ahead,
        })
    }

    /// Whether `dependency` answered.
    pub fn up(&self, dependency: &str, up: bool) {
        self.up.with_label_values(&[dependency]).set(i64::from(up));
    }

    /// Executions in `status`.
    pub fn executions(&self, status: &str, n: i64) {
        self.executions.with_label_values(&[status]).set(n);
    }

    /// Operations pending or running, and alerts firing.
    pub fn open_work(&self, operations: i64, alerts: i64) {
        self.work.with_label_values(&["operations"]).set(operations);
        self.work.with_label_values(&["alerts"]).set(alerts);
    }

    /// Breakers open and half open.
    pub fn breakers(&self, open: usize, half_open: usize) {
        self.breakers.with_label_values(&["open"]).set(open as i64);
        self.breakers
            .with_label_values(&["half_open"])
            .set(half_open as i64);
    }

    /// Months ahead with their partitions.
    pub fn partitions_ahead(&self, months: usize) {
        self.partitions_ahead.set(months as i64);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workflow_label_set_stays_bounded() {
        let m = ExecutionMetrics::register(&Registry::new()).unwrap();
        let ids: Vec<uuid::Uuid> = (0..WORKFLOW_LABELS + 5)
            .map(|_| uuid::Uuid::new_v4())
            .collect();
        for id in &ids {
            m.started(*id);
        }
        // The first ones keep their label, later ones are `other`, and a
        // labelled one seen again keeps it.
        assert_eq!(m.label(ids[0]), ids[0].to_string());
        assert_eq!(
            m.label(ids[WORKFLOW_LABELS - 1]),
            ids[WORKFLOW_LABELS - 1].to_string()
        );
        assert_eq!(m.label(ids[WORKFLOW_LABELS]), "other");
        let other = m.started.with_label_values(&["other"]).get();
        assert_eq!(other, 5);
        m.finished(ids[3], "COMPLETED", Duration::from_secs(90));
        assert_eq!(
            m.seconds
                .with_label_values(&[&ids[3].to_string()])
                .get_sample_count(),
            1
        );
    }
}
