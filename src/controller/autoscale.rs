//! The WorkerPool autoscaler, a pure function of what was observed.
//!
//! It follows the HorizontalPodAutoscaler's rules (DESIGN.md):
//! `ceil(ready depth / target per replica)`, a tolerance band around the
//! current load, a clamp to `[min, max]`, a scale-up rate limit, a
//! scale-down stabilization window (the highest recommendation of the
//! window wins), and two rules of its own: scale to zero only after
//! `cooldown` with nothing queued or running, and never scale down on a
//! metric error.

use chrono::{DateTime, Duration, Utc};

/// The pool's scaling policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Fewest replicas.
    pub min: i32,
    /// Most replicas.
    pub max: i32,
    /// Ready jobs one replica should carry.
    pub target_per_replica: i32,
    /// Fraction of the target within which load changes are ignored.
    pub tolerance: f64,
    /// Scale-down stabilization window.
    pub window: Duration,
    /// Idle time before scaling to zero.
    pub cooldown: Duration,
}

/// Queue load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Jobs due now (`ZCOUNT queue -inf now`, running ones included).
    pub ready: i64,
    /// Jobs held by a worker.
    pub in_progress: i64,
}

/// What the controller saw.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    /// Now.
    pub now: DateTime<Utc>,
    /// The Deployment's replicas now.
    pub current: i32,
    /// The load, or `None` when it could not be read.
    pub load: Option<Load>,
    /// Earlier recommendations `(time, replicas)`.
    pub history: &'a [(DateTime<Utc>, i32)],
    /// Last time anything was queued or running.
    pub last_active: Option<DateTime<Utc>>,
}

/// Why the count is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Load within the tolerance: no change.
    WithinTolerance,
    /// Following the load.
    Load,
    /// Held up by the stabilization window.
    Stabilizing,
    /// Scale-up limited to this step.
    RateLimited,
    /// Kept at one until the cooldown passes.
    CoolingDown,
    /// Idle for the cooldown: zero.
    Idle,
    /// Load unreadable: never scale down.
    MetricError,
}

impl Reason {
    /// PascalCase, for conditions and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::WithinTolerance => "WithinTolerance",
            Reason::Load => "FollowingLoad",
            Reason::Stabilizing => "Stabilizing",
            Reason::RateLimited => "RateLimited",
            Reason::CoolingDown => "CoolingDown",
            Reason::Idle => "Idle",
            Reason::MetricError => "MetricError",
        }
    }
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Replicas to run.
    pub replicas: i32,
    /// Why.
    pub reason: Reason,
    /// The history to keep: recommendations inside the window, this one included.
    pub history: Vec<(DateTime<Utc>, i32)>,
    /// Whether anything is queued or running now.
    pub active: bool,
}

/// Largest step up in one decision: double, or four more, whichever is larger
/// (the HPA's default scale-up policy).
fn up_limit(current: i32) -> i32 {
    current.saturating_mul(2).max(current.saturating_add(4))
}

/// Decides the replica count.
pub fn decide(p: &Policy, o: &Observation<'_>) -> Decision {
    let clamp = |n: i32| n.clamp(p.min, p.max.max(p.min));
    let window_start = o.now - p.window;
    let mut history: Vec<(DateTime<Utc>, i32)> = o
        .history
        .iter()
        .copied()
        .filter(|(t, _)| *t > window_start)
        .collect();

    let Some(load) = o.load else {
        // Never down on a metric error; still honour the bounds.
        return Decision {
            replicas: clamp(o.current.max(p.min)),
            reason: Reason::MetricError,
            history,
            active: false,
        };
    };
    let active = load.ready > 0 || load.in_progress > 0;
    let target = i64::from(p.target_per_replica.max(1));
    let mut raw = i32::try_from((load.ready + target - 1) / target).unwrap_or(i32::MAX);
    let mut reason = Reason::Load;

    if o.current > 0 {
        let ratio = load.ready as f64 / (f64::from(o.current) * target as f64);
        if (ratio - 1.0).abs() <= p.tolerance {
            raw = o.current;
            reason = Reason::WithinTolerance;
        }
    }
    if raw == 0 {
        let idle_since = if active { Some(o.now) } else { o.last_active };
        let cooled = idle_since.is_none_or(|t| o.now - t >= p.cooldown);
        if active || !cooled {
            raw = 1;
            reason = Reason::CoolingDown;
        } else {
            reason = Reason::Idle;
        }
    }
    let recommendation = clamp(raw);
    history.push((o.now, recommendation));

    let mut replicas = recommendation;
    if recommendation < o.current {
        // Scale down only to the highest recommendation in the window.
        let highest = history
            .iter()
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(recommendation);
        if highest > recommendation {
            replicas = highest.min(o.current);
            reason = Reason::Stabilizing;
        }
    } else if recommendation > up_limit(o.current) {
        replicas = up_limit(o.current);
        reason = Reason::RateLimited;
    }
    Decision {
        replicas: clamp(replicas),
        reason,
        history,
        active,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> Policy {
        Policy {
            min: 0,
            max: 20,
            target_per_replica: 10,
            tolerance: 0.1,
            window: Duration::seconds(300),
            cooldown: Duration::seconds(300),
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn decide_at(
        current: i32,
        ready: i64,
        in_progress: i64,
        history: &[(DateTime<Utc>, i32)],
        last_active: Option<i64>,
    ) -> Decision {
        decide(
            &policy(),
            &Observation {
                now: t(1000),
                current,
                load: Some(Load { ready, in_progress }),
                history,
                last_active: last_active.map(t),
            },
        )
    }

    #[test]
    fn table_of_decisions() {
        struct Case {
            name: &'static str,
            current: i32,
            ready: i64,
            in_progress: i64,
            history: Vec<(i64, i32)>,
            last_active: Option<i64>,
            want: (i32, Reason),
        }
        let cases = vec![
            Case {
                name: "up with load",
                current: 2,
                ready: 55,
                in_progress: 0,
                history: vec![],
                last_active: None,
                want: (6, Reason::Load),
            },
            Case {
                name: "within tolerance",
                current: 5,
                ready: 52,
                in_progress: 5,
                history: vec![],
                last_active: None,
                want: (5, Reason::WithinTolerance),
            },
            Case {
                name: "rate limited up",
                current: 1,
                ready: 200,
                in_progress: 0,
                history: vec![],
                last_active: None,
                want: (5, Reason::RateLimited),
            },
            Case {
                name: "clamped to max",
                current: 20,
                ready: 10_000,
                in_progress: 0,
                history: vec![],
                last_active: None,
                want: (20, Reason::Load),
            },
            Case {
                name: "stabilized down",
                current: 8,
                ready: 10,
                in_progress: 0,
                history: vec![(900, 8)],
                last_active: None,
                want: (8, Reason::Stabilizing),
            },
            Case {
                name: "down once the window passed",
                current: 8,
                ready: 10,
                in_progress: 0,
                history: vec![(600, 8)],
                last_active: None,
                want: (1, Reason::Load),
            },
            Case {
                name: "one while jobs run",
                current: 1,
                ready: 0,
                in_progress: 1,
                history: vec![],
                last_active: Some(990),
                want: (1, Reason::CoolingDown),
            },
            Case {
                name: "one during the cooldown",
                current: 1,
                ready: 0,
                in_progress: 0,
                history: vec![],
                last_active: Some(800),
                want: (1, Reason::CoolingDown),
            },
            Case {
                name: "zero after the cooldown",
                current: 1,
                ready: 0,
                in_progress: 0,
                history: vec![],
                last_active: Some(600),
                want: (0, Reason::Idle),
            },
            Case {
                name: "wake from zero",
                current: 0,
                ready: 3,
                in_progress: 0,
                history: vec![],
                last_active: Some(100),
                want: (1, Reason::Load),
            },
        ];
        for c in cases {
            let history: Vec<_> = c.history.iter().map(|(s, r)| (t(*s), *r)).collect();
            let d = decide_at(c.current, c.ready, c.in_progress, &history, c.last_active);
            assert_eq!((d.replicas, d.reason), c.want, "{}", c.name);
        }
    }

    #[test]
    fn a_metric_error_never_scales_down() {
        let d = decide(
            &policy(),
            &Observation {
                now: t(0),
                current: 7,
                load: None,
                history: &[],
                last_active: None,
            },
        );
        assert_eq!((d.replicas, d.reason), (7, Reason::MetricError));
    }

    proptest! {
        #[test]
        fn replicas_stay_within_min_and_max(
            min in 0i32..5, extra in 0i32..20, current in 0i32..40, ready in 0i64..5000,
            in_progress in 0i64..50, error in any::<bool>(), target in 1i32..50,
        ) {
            let p = Policy { min, max: min + extra.max(1), target_per_replica: target, ..policy() };
            let load = (!error).then_some(Load { ready, in_progress });
            let d = decide(&p, &Observation { now: t(0), current, load, history: &[], last_active: None });
            prop_assert!(d.replicas >= p.min && d.replicas <= p.max, "{d:?}");
        }

        #[test]
        fn a_metric_error_keeps_at_least_the_current_count(min in 0i32..5, current in 0i32..30) {
            let p = Policy { min, max: 30, ..policy() };
            let d = decide(&p, &Observation { now: t(0), current, load: None, history: &[], last_active: None });
            prop_assert!(d.replicas >= current.min(p.max));
        }

        #[test]
        fn depth_oscillating_inside_the_tolerance_never_changes_the_count(current in 1i32..20, wobble in proptest::collection::vec(-9i64..=9, 1..30)) {
            // 10% of current * target is the band; wobble stays inside it.
            let p = policy();
            let base = i64::from(current) * 10;
            let mut history = Vec::new();
            for (i, w) in wobble.iter().enumerate() {
                let ready = base + w * i64::from(current) / 10;
                let d = decide(&p, &Observation { now: t(i as i64 * 15), current, load: Some(Load { ready, in_progress: 0 }), history: &history, last_active: None });
                prop_assert_eq!(d.replicas, current);
                history = d.history;
            }
        }

        #[test]
        fn zero_only_after_the_cooldown_with_nothing_queued_or_running(
            current in 0i32..10, ready in 0i64..3, in_progress in 0i64..3, idle_for in 0i64..1000,
        ) {
            let p = policy();
            let d = decide(&p, &Observation { now: t(1000), current, load: Some(Load { ready, in_progress }), history: &[], last_active: Some(t(1000 - idle_for)) });
            if d.replicas == 0 {
                prop_assert!(ready == 0 && in_progress == 0 && idle_for >= 300, "{d:?}");
            }
        }
    }
}
