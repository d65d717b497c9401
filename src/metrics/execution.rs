//! Execution metrics by workflow, with a bounded `workflow` label.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

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
