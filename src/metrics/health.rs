//! Gauges read when `/metrics` is read: dependencies, open executions,
//! open work, breakers, log partitions ahead.

use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};

/// What an API or worker process checks when its `/metrics` is read:
/// whether PostgreSQL and Redis answer, breakers not closed, log
/// partitions ahead. Set only where checked (the controller has none of
/// these series, so no false alarm from a process that never looked).
pub struct HealthMetrics {
    /// When the counts of the record were last taken.
    counted: std::sync::Mutex<Option<std::time::Instant>>,
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
            counted: std::sync::Mutex::default(),
            up,
            executions,
            work,
            breakers,
            partitions_ahead,
        })
    }

    /// Whether `every` has passed since the counts were last taken (then
    /// they are taken now, as far as the next caller knows).
    pub fn count_due(&self, every: std::time::Duration) -> bool {
        let mut counted = self
            .counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = counted.is_none_or(|at| at.elapsed() >= every);
        if due {
            *counted = Some(std::time::Instant::now());
        }
        due
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
