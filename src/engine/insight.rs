//! What the analytics rollups say of a workflow version, read against its
//! definition: the funnel, time in step, the bottleneck, daily trends, and
//! suggestions that each name their evidence. Pure functions over
//! [`store::analytics::Analytics`]; the API serves them as they are.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::Serialize;
use serde_json::{Value as Json, json};
use utoipa::ToSchema;

use super::definition::Definition;
use crate::action::Action;
use crate::store::analytics::{Analytics, SENDING_HOURS, StepCounts, StepTimes, Trend};

/// Fewer step ends than this say nothing about a rate.
pub const MIN_SAMPLES: i64 = 20;
/// A step whose failed and retried attempts are at least this share of
/// its attempts is suggested for a look.
pub const FAILURE_RATE: f64 = 0.10;
/// A wait whose ends fall outside sending hours at least this often is
/// suggested a send window.
pub const OFF_HOURS_SHARE: f64 = 0.5;
/// A condition taking one side at least this often is suggested as
/// always one-sided.
pub const ONE_SIDED_SHARE: f64 = 0.99;

/// One step of the funnel, in definition order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FunnelStep {
    /// Step id.
    pub step_id: String,
    /// Its action type.
    #[serde(rename = "type")]
    pub action_type: String,
    /// Executions that reached it: ended it, were cancelled at it, or are
    /// at it now.
    pub entered: i64,
    /// Attempts that succeeded.
    pub completed: i64,
    /// Attempts that failed for good.
    pub failed: i64,
    /// Executions cancelled at it.
    pub cancelled: i64,
    /// Attempts retried.
    pub retried: i64,
    /// Executions at it now (not limited to the range).
    pub in_step: i64,
}

/// Milliseconds at two quantiles and on average.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Quantiles {
    /// Median (interpolated within histogram buckets).
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// Mean.
    pub mean: Option<f64>,
}

/// Time in one step per attempt: run, and parked (waits, holds, arq jobs).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StepTiming {
    /// Step id.
    pub step_id: String,
    /// Attempts measured.
    pub samples: i64,
    /// Time it ran.
    pub exec_ms: Quantiles,
    /// Time it was parked.
    pub parked_ms: Quantiles,
}

/// The step executions spend most of their time in, waits aside (their
/// time is what they were written for).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Bottleneck {
    /// Step id.
    pub step_id: String,
    /// Its share of the time spent in steps other than waits (0..1).
    pub share: f64,
    /// Milliseconds run, summed over its attempts.
    pub exec_ms_total: i64,
    /// Milliseconds parked, summed.
    pub parked_ms_total: i64,
    /// Its time per attempt at the 95th percentile (run plus parked, each
    /// at its own p95).
    pub p95_ms: Option<f64>,
}

/// A change worth considering, with the figures that suggest it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Suggestion {
    /// `never_reached`, `high_failure_rate`, `off_hours_wait` or
    /// `one_sided_branch`.
    pub kind: String,
    /// The step it is about.
    pub step_id: String,
    /// What to consider, in a sentence.
    pub message: String,
    /// The figures behind it.
    #[schema(value_type = Object)]
    pub evidence: Json,
}

/// The funnel in definition order.
pub fn funnel(def: &Definition, a: &Analytics) -> Vec<FunnelStep> {
    let counts = by_step(a);
    let open: BTreeMap<&str, i64> = a
        .open
        .iter()
        .filter_map(|o| Some((o.step_id.as_deref()?, o.count)))
        .collect();
    def.steps
        .iter()
        .map(|s| {
            let c = counts.of(&s.id);
            let in_step = open.get(s.id.as_str()).copied().unwrap_or(0);
            FunnelStep {
                step_id: s.id.clone(),
                action_type: s.action.kind().to_owned(),
                entered: c.ended() + c.cancelled + in_step,
                completed: c.succeeded,
                failed: c.failed,
                cancelled: c.cancelled,
                retried: c.retried,
                in_step,
            }
        })
        .collect()
}

/// Time in each step with history, in definition order.
pub fn timings(def: &Definition, a: &Analytics) -> Vec<StepTiming> {
    let counts = by_step(a);
    def.steps
        .iter()
        .filter_map(|s| {
            let t = a.times.get(&s.id)?;
            let c = counts.of(&s.id);
            let samples = t.exec.count();
            let mean = |sum: i64| (samples > 0).then(|| sum as f64 / samples as f64);
            Some(StepTiming {
                step_id: s.id.clone(),
                samples,
                exec_ms: quantiles(t, false, mean(c.exec_ms)),
                parked_ms: quantiles(t, true, mean(c.parked_ms)),
            })
        })
        .collect()
}

fn quantiles(t: &StepTimes, parked: bool, mean: Option<f64>) -> Quantiles {
    let h = if parked { &t.parked } else { &t.exec };
    Quantiles {
        p50: h.quantile(0.5),
        p95: h.quantile(0.95),
        mean,
    }
}

/// The bottleneck: the step other than a wait with the most time.
pub fn bottleneck(def: &Definition, a: &Analytics) -> Option<Bottleneck> {
    let counts = by_step(a);
    let candidates: Vec<&StepCounts> = def
        .steps
        .iter()
        .filter(|s| !matches!(s.action, Action::Wait(_)))
        .filter_map(|s| counts.get(&s.id))
        .collect();
    let total: i64 = candidates.iter().map(|c| c.exec_ms + c.parked_ms).sum();
    let top = candidates.into_iter().max_by_key(|c| {
        (
            c.exec_ms + c.parked_ms,
            std::cmp::Reverse(c.step_id.clone()),
        )
    })?;
    if total == 0 {
        return None;
    }
    let p95 = a
        .times
        .get(&top.step_id)
        .and_then(|t| Some(t.exec.quantile(0.95)? + t.parked.quantile(0.95).unwrap_or(0.0)));
    Some(Bottleneck {
        step_id: top.step_id.clone(),
        share: (top.exec_ms + top.parked_ms) as f64 / total as f64,
        exec_ms_total: top.exec_ms,
        parked_ms_total: top.parked_ms,
        p95_ms: p95,
    })
}

/// Every day `from..=to` with its figures (zeros where nothing happened).
pub fn trends(a: &Analytics, from: NaiveDate, to: NaiveDate) -> Vec<Trend> {
    let known: BTreeMap<NaiveDate, &Trend> = a.trends.iter().map(|t| (t.day, t)).collect();
    from.iter_days()
        .take_while(|d| *d <= to)
        .map(|day| {
            known.get(&day).map_or(
                Trend {
                    day,
                    started: 0,
                    completed: 0,
                    failed: 0,
                    cancelled: 0,
                },
                |t| (*t).clone(),
            )
        })
        .collect()
}

/// Suggestions for `def` from the figures of a window.
pub fn suggestions(def: &Definition, a: &Analytics) -> Vec<Suggestion> {
    let counts = by_step(a);
    let started: i64 = a.trends.iter().map(|t| t.started).sum();
    let funnel = funnel(def, a);
    let mut out = Vec::new();
    for (step, f) in def.steps.iter().zip(&funnel) {
        let c = counts.of(&step.id);
        if started >= MIN_SAMPLES && f.entered == 0 {
            out.push(Suggestion {
                kind: "never_reached".into(),
                step_id: step.id.clone(),
                message: format!(
                    "no execution reached step `{}` in the window: check the branches leading to it, or remove it",
                    step.id
                ),
                evidence: json!({"executions_started": started, "entered": 0}),
            });
        }
        let attempts = c.ended() + c.retried;
        let bad = c.failed + c.retried;
        if attempts >= MIN_SAMPLES && bad as f64 >= FAILURE_RATE * attempts as f64 {
            let top = a
                .errors
                .iter()
                .filter(|e| e.step_id == step.id)
                .max_by_key(|e| e.count);
            out.push(Suggestion {
                kind: "high_failure_rate".into(),
                step_id: step.id.clone(),
                message: format!(
                    "{:.0}% of the attempts of step `{}` failed or were retried: look at its top error first",
                    100.0 * bad as f64 / attempts as f64,
                    step.id
                ),
                evidence: json!({
                    "attempts": attempts, "failed": c.failed, "retried": c.retried,
                    "rate": bad as f64 / attempts as f64,
                    "top_fingerprint": top.map(|e| &e.fingerprint),
                    "top_error_class": top.map(|e| &e.error_class),
                    "top_count": top.map(|e| e.count),
                    "top_sample": top.and_then(|e| e.sample.as_ref()),
                }),
            });
        }
        if let Action::Wait(w) = &step.action
            && w.window.is_none()
            && c.succeeded >= MIN_SAMPLES
            && c.off_hours as f64 >= OFF_HOURS_SHARE * c.succeeded as f64
        {
            out.push(Suggestion {
                kind: "off_hours_wait".into(),
                step_id: step.id.clone(),
                message: format!(
                    "most waits of step `{}` end outside {:02}:00-{:02}:00 in the contact's time: give it a `window`",
                    step.id, SENDING_HOURS.0, SENDING_HOURS.1
                ),
                evidence: json!({
                    "ended": c.succeeded, "off_hours": c.off_hours,
                    "share": c.off_hours as f64 / c.succeeded as f64,
                    "sending_hours": format!("{:02}:00-{:02}:00", SENDING_HOURS.0, SENDING_HOURS.1),
                }),
            });
        }
        if matches!(step.action, Action::Condition(_)) && c.succeeded >= MIN_SAMPLES {
            let share = c.branch_true as f64 / c.succeeded as f64;
            if share >= ONE_SIDED_SHARE || share <= 1.0 - ONE_SIDED_SHARE {
                let side = if share >= ONE_SIDED_SHARE {
                    "then"
                } else {
                    "else"
                };
                out.push(Suggestion {
                    kind: "one_sided_branch".into(),
                    step_id: step.id.clone(),
                    message: format!(
                        "condition `{}` took its `{side}` side {:.1}% of the time: the other side may be dead",
                        step.id,
                        100.0 * share.max(1.0 - share)
                    ),
                    evidence: json!({"evaluated": c.succeeded, "took_then": c.branch_true, "share_then": share}),
                });
            }
        }
    }
    out
}

/// Each step's counts by id; a step with none reads as zeros.
struct ByStep<'a> {
    map: BTreeMap<&'a str, &'a StepCounts>,
    none: StepCounts,
}

impl ByStep<'_> {
    fn get(&self, id: &str) -> Option<&StepCounts> {
        self.map.get(id).copied()
    }

    fn of(&self, id: &str) -> &StepCounts {
        self.get(id).unwrap_or(&self.none)
    }
}

fn by_step(a: &Analytics) -> ByStep<'_> {
    ByStep {
        map: a.steps.iter().map(|s| (s.step_id.as_str(), s)).collect(),
        none: StepCounts::default(),
    }
}
