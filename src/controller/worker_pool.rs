//! Reconciles `WorkerPool`: measure the queues, decide the replicas
//! ([`autoscale`] in `Auto` mode, `spec.replicas` in `Manual`), apply the
//! owned Deployment with server-side apply, write the status back, and
//! record an Event when the count changes. An invalid pool gets
//! `Ready=False` with a reason and no Deployment change.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use tracing::{info, instrument, warn};

use super::autoscale::{self, Load, Observation, Policy};
pub use super::pool_deployment::deployment;
use super::status::{self, condition, kind};
use super::{Context, Error, FIELD_MANAGER, Result};
use crate::crd::worker_pool::{Mode, Recommendation};
use crate::crd::{WorkerPool, WorkerPoolSpec, WorkerPoolStatus};

/// Pod label naming the pool.
pub const POOL_LABEL: &str = "flowpilot.io/pool";

/// Checks what the CRD's validation rules check, for API servers that
/// did not (or objects written before the rules).
///
/// # Errors
/// The reason and a message.
pub fn validate(spec: &WorkerPoolSpec) -> Result<(), (&'static str, String)> {
    if spec.min_replicas < 0 || spec.max_replicas < 1 || spec.min_replicas > spec.max_replicas {
        return Err((
            "InvalidReplicas",
            format!(
                "minReplicas ({}) must be between 0 and maxReplicas ({})",
                spec.min_replicas, spec.max_replicas
            ),
        ));
    }
    if spec.queues.is_empty() || spec.queues.iter().any(|q| q.trim().is_empty()) {
        return Err((
            "InvalidQueues",
            "queues must name at least one queue, none empty".into(),
        ));
    }
    if spec.target_per_replica < 1 {
        return Err((
            "InvalidTarget",
            "targetPerReplica must be at least 1".into(),
        ));
    }
    if let (Mode::Manual, Some(r)) = (spec.mode, spec.replicas)
        && !(spec.min_replicas..=spec.max_replicas).contains(&r)
    {
        return Err((
            "InvalidReplicas",
            format!("replicas ({r}) must be within minReplicas..maxReplicas"),
        ));
    }
    Ok(())
}

/// The label selector of a pool's pods.
pub fn selector(name: &str) -> String {
    format!("app.kubernetes.io/name=flowpilot-worker,{POOL_LABEL}={name}")
}

fn parse_time(s: &Option<String>) -> Option<DateTime<Utc>> {
    s.as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Reconciles one pool.
///
/// # Errors
/// Kubernetes errors (requeued); Redis errors never fail it (no scale-down).
#[instrument(skip_all, fields(name = %pool.name_any(), namespace = pool.namespace().unwrap_or_default()))]
pub async fn reconcile(pool: Arc<WorkerPool>, ctx: Arc<Context>) -> Result<Action> {
    let ns = pool.namespace().ok_or(Error::Metadata("namespace"))?;
    let name = pool.name_any();
    let pools: Api<WorkerPool> = Api::namespaced(ctx.client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let now = Utc::now();
    let generation = pool.meta().generation;
    let previous = pool.status.clone().unwrap_or_default();
    let prev_conditions = &previous.conditions;

    if let Err((reason, message)) = validate(&pool.spec) {
        let status = WorkerPoolStatus {
            observed_generation: generation,
            conditions: vec![condition(
                kind::READY,
                false,
                reason,
                &message,
                generation,
                now,
                prev_conditions,
            )],
            ..previous.clone()
        };
        if status != previous {
            status::patch(&pools, &name, &status).await?;
            status::publish(&ctx, &*pool, true, reason, "Validate", Some(message)).await?;
        }
        return Ok(Action::await_change());
    }

    let load = match measure(&ctx, &pool.spec.queues).await {
        Ok(l) => Some(l),
        Err(e) => {
            warn!(error = %e, "queue depth unreadable; holding replicas");
            None
        }
    };
    let spec = &pool.spec;
    let history: Vec<(DateTime<Utc>, i32)> = previous
        .recommendations
        .iter()
        .filter_map(|r| parse_time(&Some(r.at.clone())).map(|t| (t, r.replicas)))
        .collect();
    let (replicas, reason, history, active) = match spec.mode {
        Mode::Manual => {
            let r = spec
                .replicas
                .unwrap_or(spec.min_replicas)
                .clamp(spec.min_replicas, spec.max_replicas);
            (
                r,
                "Manual",
                Vec::new(),
                load.is_some_and(|l| l.ready > 0 || l.in_progress > 0),
            )
        }
        Mode::Auto => {
            let policy = Policy {
                min: spec.min_replicas,
                max: spec.max_replicas,
                target_per_replica: spec.target_per_replica,
                tolerance: spec.tolerance,
                window: chrono::Duration::seconds(spec.scale_down_stabilization_seconds),
                cooldown: chrono::Duration::seconds(spec.cooldown_seconds),
            };
            let d = autoscale::decide(
                &policy,
                &Observation {
                    now,
                    current: previous.desired_replicas,
                    load,
                    history: &history,
                    last_active: parse_time(&previous.last_active_time),
                },
            );
            (d.replicas, d.reason.as_str(), d.history, d.active)
        }
    };

    let applied = deployments
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(deployment(&pool, replicas, &ctx.settings.worker_image)),
        )
        .await?;
    let dstatus = applied.status.unwrap_or_default();
    let scaled = replicas != previous.desired_replicas || previous.observed_generation.is_none();
    let status = WorkerPoolStatus {
        desired_replicas: replicas,
        current_replicas: dstatus.replicas.unwrap_or(0),
        ready_replicas: dstatus.ready_replicas.unwrap_or(0),
        queue_depth: load.map_or(previous.queue_depth, |l| l.ready),
        in_progress: load.map_or(previous.in_progress, |l| l.in_progress),
        last_scale_time: if scaled {
            Some(now.to_rfc3339())
        } else {
            previous.last_scale_time.clone()
        },
        last_active_time: if active {
            Some(now.to_rfc3339())
        } else {
            previous.last_active_time.clone()
        },
        selector: Some(selector(&name)),
        observed_generation: generation,
        recommendations: history
            .iter()
            .map(|(t, r)| Recommendation {
                at: t.to_rfc3339(),
                replicas: *r,
            })
            .collect(),
        conditions: vec![condition(
            kind::READY,
            load.is_some() || spec.mode == Mode::Manual,
            reason,
            &format!(
                "{replicas} replicas for {} ready jobs",
                load.map_or(-1, |l| l.ready)
            ),
            generation,
            now,
            prev_conditions,
        )],
    };
    if status != previous {
        status::patch(&pools, &name, &status).await?;
    }
    if scaled {
        let note = format!(
            "scaled from {} to {replicas} ({reason})",
            previous.desired_replicas
        );
        info!(
            from = previous.desired_replicas,
            to = replicas,
            reason,
            "pool scaled"
        );
        status::publish(&ctx, &*pool, false, "Scaled", "Scale", Some(note)).await?;
    }
    Ok(Action::requeue(ctx.settings.scale_interval))
}

/// Ready depth and in-progress jobs over the pool's queues.
async fn measure(ctx: &Context, queues: &[String]) -> crate::queue::Result<Load> {
    let now = crate::queue::now_ms();
    let mut load = Load {
        ready: 0,
        in_progress: 0,
    };
    for q in queues {
        let health = ctx.queue.health(q, now).await?;
        load.ready += (health.ready + health.in_progress) as i64;
        load.in_progress += health.in_progress as i64;
    }
    Ok(load)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_pools_are_refused_with_a_reason() {
        let spec = |v: serde_json::Value| -> WorkerPoolSpec { serde_json::from_value(v).unwrap() };
        assert_eq!(
            validate(&spec(
                serde_json::json!({"queues": ["q"], "minReplicas": 4, "maxReplicas": 2})
            ))
            .unwrap_err()
            .0,
            "InvalidReplicas"
        );
        assert_eq!(
            validate(&spec(
                serde_json::json!({"queues": [" "], "maxReplicas": 2})
            ))
            .unwrap_err()
            .0,
            "InvalidQueues"
        );
        assert_eq!(
            validate(&spec(serde_json::json!({"queues": ["q"], "maxReplicas": 2, "mode": "Manual", "replicas": 5}))).unwrap_err().0,
            "InvalidReplicas"
        );
        assert!(
            validate(&spec(
                serde_json::json!({"queues": ["q"], "maxReplicas": 2})
            ))
            .is_ok()
        );
    }
}
