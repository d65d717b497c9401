//! The evaluator: one active instance across all processes (an advisory
//! lock), every `interval`:
//!
//! - takes the dead letters it has not looked at (marking them in the same
//!   transaction as the alerts they raise) for `execution_failed` rules:
//!   one alert per rule, workflow and fingerprint within the rule's window;
//! - checks each `failure_rate`, `dead_letters`, `breaker_open` and
//!   `queue_stalled` rule's condition; one that holds raises (or, within
//!   the window, folds into) the alert of its key, so a condition that
//!   keeps holding is told again once per window;
//! - moves unacknowledged alerts on to their next channel.

use chrono::Utc;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::rule::{Kind, Params};
use super::{Alerts, Error};
use crate::queue::now_ms;
use crate::store::alert::{self, Failure, Occurrence, Rule};
use crate::store::lock::{LeaderLock, Role};
use crate::store::{self};

/// Dead letters taken per transaction.
const FAILURES: i64 = 1_000;

/// The evaluator's state.
pub struct Evaluator {
    alerts: Alerts,
    leader: Option<LeaderLock>,
}

impl Evaluator {
    /// An evaluator of `alerts`.
    pub fn new(alerts: Alerts) -> Self {
        Evaluator {
            alerts,
            leader: None,
        }
    }

    /// Runs until `shutdown`.
    ///
    /// # Errors
    /// None: errors are logged and the next pass tries again.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), Error> {
        let interval = self.alerts.settings.interval;
        loop {
            if let Err(e) = self.pass().await {
                warn!(error = %e, "alert evaluation failed");
                self.leader = None;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(interval) => {}
            }
        }
        Ok(())
    }

    /// One pass, when leading; returns the alerts raised.
    ///
    /// # Errors
    /// Database and Redis errors.
    pub async fn pass(&mut self) -> Result<usize, Error> {
        if !self.lead().await? {
            return Ok(0);
        }
        let a = &self.alerts;
        let rules: Vec<(Rule, Params)> = alert::enabled_rules(&a.pool)
            .await?
            .into_iter()
            .filter_map(|rule| {
                let parsed = rule
                    .kind
                    .parse::<Kind>()
                    .ok()
                    .and_then(|kind| Params::parse(kind, &rule.params.0).ok());
                if parsed.is_none() {
                    warn!(rule_id = %rule.id, "alert rule no longer parses; skipped");
                }
                Some((rule, parsed?))
            })
            .collect();
        let mut raised = a.failures(&rules).await?;
        for (rule, params) in &rules {
            for o in a.conditions(rule, params).await? {
                raised += usize::from(a.raise(rule, &o).await?);
            }
        }
        let escalated = alert::escalate(&a.pool).await?;
        if raised > 0 || escalated > 0 {
            info!(raised, escalated, "alerts");
        }
        Ok(raised)
    }

    async fn lead(&mut self) -> Result<bool, Error> {
        if let Some(lock) = &mut self.leader {
            if lock.check().await.is_ok() {
                return Ok(true);
            }
            self.leader = None;
        }
        self.leader = LeaderLock::try_take(&self.alerts.pool, Role::Alerts).await?;
        Ok(self.leader.is_some())
    }
}

impl Alerts {
    /// Takes new dead letters and raises what `execution_failed` rules
    /// say, in one transaction per batch.
    async fn failures(&self, rules: &[(Rule, Params)]) -> Result<usize, Error> {
        let watching: Vec<(&Rule, &super::rule::ExecutionFailed)> = rules
            .iter()
            .filter_map(|(r, p)| match p {
                Params::ExecutionFailed(p) => Some((r, p)),
                _ => None,
            })
            .collect();
        let mut raised = 0;
        loop {
            let mut tx = self.pool.begin().await.map_err(store::Error::from)?;
            let batch = alert::signal::take_new_failures(&mut tx, FAILURES).await?;
            for f in &batch {
                for (rule, p) in &watching {
                    if matches_failure(rule, p, f) {
                        let o = failure_occurrence(f);
                        raised += usize::from(alert::raise(&mut tx, rule, &o).await?.1);
                    }
                }
            }
            tx.commit().await.map_err(store::Error::from)?;
            if batch.len() < usize::try_from(FAILURES).unwrap_or(usize::MAX) {
                return Ok(raised);
            }
        }
    }

    /// Raises `o` for `rule` in a transaction of its own; whether it is new.
    async fn raise(&self, rule: &Rule, o: &Occurrence) -> Result<bool, Error> {
        let mut tx = self.pool.begin().await.map_err(store::Error::from)?;
        let (_, new) = alert::raise(&mut tx, rule, o).await?;
        tx.commit().await.map_err(store::Error::from)?;
        Ok(new)
    }

    /// What a condition rule finds now.
    async fn conditions(&self, rule: &Rule, params: &Params) -> Result<Vec<Occurrence>, Error> {
        let now = Utc::now();
        let occurrence = |key: String, summary: String, details| Occurrence {
            key,
            account_id: rule.account_id,
            summary,
            details,
            at: now,
        };
        Ok(match params {
            Params::ExecutionFailed(_) => vec![],
            Params::FailureRate(p) => {
                let (failed, total) = alert::signal::attempt_counts(
                    &self.pool,
                    rule.account_id,
                    p.workflow_id,
                    p.window_s,
                )
                .await?;
                let percent = if total > 0 {
                    failed as f64 * 100.0 / total as f64
                } else {
                    0.0
                };
                if total >= p.min_count && percent > p.threshold_percent {
                    let key = p
                        .workflow_id
                        .map_or_else(|| "failure_rate".into(), |w| format!("failure_rate:{w}"));
                    vec![occurrence(
                        key,
                        format!(
                            "{percent:.1}% of step attempts failed or were retried in the last {} s ({failed} of {total}; threshold {}%)",
                            p.window_s, p.threshold_percent
                        ),
                        json!({"failed": failed, "total": total, "percent": percent, "window_s": p.window_s,
                               "workflow_id": p.workflow_id}),
                    )]
                } else {
                    vec![]
                }
            }
            Params::DeadLetters(p) => {
                let n = alert::signal::dead_letter_count(&self.pool, rule.account_id, p.window_s)
                    .await?;
                if n > p.threshold {
                    vec![occurrence(
                        "dead_letters".into(),
                        format!(
                            "{n} executions failed for good in the last {} s (threshold {})",
                            p.window_s, p.threshold
                        ),
                        json!({"dead_letters": n, "window_s": p.window_s}),
                    )]
                } else {
                    vec![]
                }
            }
            Params::BreakerOpen(_) => {
                let open = self
                    .queue
                    .breakers_not_closed(&self.settings.queue_prefix)
                    .await?;
                open.into_iter()
                    .map(|(provider, state)| {
                        occurrence(
                            provider.clone(),
                            format!(
                                "circuit breaker of {provider} is {state:?}: its calls are held"
                            ),
                            json!({"provider": provider, "state": format!("{state:?}")}),
                        )
                    })
                    .collect()
            }
            Params::QueueStalled(p) => {
                let queues = p
                    .queues
                    .clone()
                    .unwrap_or_else(|| self.settings.queues.clone());
                let mut found = Vec::new();
                for q in queues {
                    if let Some(age_s) = self.oldest_waiting(&q).await?
                        && age_s > p.older_than_s
                    {
                        found.push(occurrence(
                            q.clone(),
                            format!(
                                "queue {q}: the oldest ready job has waited {age_s} s (limit {} s)",
                                p.older_than_s
                            ),
                            json!({"queue": q, "oldest_ready_age_s": age_s}),
                        ));
                    }
                }
                found
            }
        })
    }

    /// Seconds the oldest due job of `queue` that no worker holds has
    /// waited.
    async fn oldest_waiting(&self, queue: &str) -> Result<Option<i64>, Error> {
        let now = now_ms();
        let health = self.queue.health(queue, now).await?;
        Ok(health.oldest_ready_age(now).map(|age| age.as_secs() as i64))
    }
}

fn matches_failure(rule: &Rule, p: &super::rule::ExecutionFailed, f: &Failure) -> bool {
    rule.account_id.is_none_or(|a| a == f.account_id)
        && p.workflow_ids
            .as_ref()
            .is_none_or(|w| w.contains(&f.workflow_id))
        && p.error_classes
            .as_ref()
            .is_none_or(|c| f.error_class.as_ref().is_some_and(|fc| c.contains(fc)))
}

/// The occurrence of a failure. The error's text stays out: it may carry a
/// contact's data, which an erasure must be able to reach, and alerts
/// travel to mailboxes and chat rooms; the class, fingerprint and step
/// say what failed, and the execution (or `GET /api/v1/errors`) says more.
fn failure_occurrence(f: &Failure) -> Occurrence {
    let class = f.error_class.as_deref().unwrap_or("unknown");
    let fingerprint = f.fingerprint.as_deref().unwrap_or(class);
    Occurrence {
        key: format!("{}:{fingerprint}", f.workflow_id),
        account_id: Some(f.account_id),
        summary: format!(
            "execution {} of workflow {} failed at step {} ({class}, fingerprint {fingerprint})",
            f.execution_id,
            f.workflow_id,
            f.step_id.as_deref().unwrap_or("?"),
        ),
        details: json!({"execution_id": f.execution_id, "workflow_id": f.workflow_id, "step_id": f.step_id,
                        "error_class": f.error_class, "fingerprint": f.fingerprint,
                        "account_id": f.account_id}),
        at: f.created_at,
    }
}
