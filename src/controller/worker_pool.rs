//! Reconciles `WorkerPool`: measure the queues, decide the replicas
//! ([`autoscale`] in `Auto` mode, `spec.replicas` in `Manual`), apply the
//! owned Deployment with server-side apply, write the status back, and
//! record an Event when the count changes. An invalid pool gets
//! `Ready=False` with a reason and no Deployment change.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvFromSource, EnvVar, HTTPGetAction, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretEnvSource, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use tracing::{info, instrument, warn};

use super::autoscale::{self, Load, Observation, Policy};
use super::status::{self, condition, kind};
use super::{Context, Error, FIELD_MANAGER, Result};
use crate::crd::worker_pool::{Mode, Recommendation};
use crate::crd::{WorkerPool, WorkerPoolSpec, WorkerPoolStatus};

/// Pod label naming the pool.
pub const POOL_LABEL: &str = "flowpilot.io/pool";
/// Port of `flowpilot worker --admin-listen` in pool pods.
const ADMIN_PORT: i32 = 8081;
/// Extra seconds of termination grace beyond the job timeout.
const DRAIN_MARGIN_S: i64 = 30;

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

/// The Deployment a pool owns. Pure.
pub fn deployment(pool: &WorkerPool, replicas: i32, default_image: &str) -> Deployment {
    let name = pool.name_any();
    let spec = &pool.spec;
    let labels = std::collections::BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "flowpilot-worker".to_owned(),
        ),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            FIELD_MANAGER.to_owned(),
        ),
        (POOL_LABEL.to_owned(), name.clone()),
    ]);
    // Our own worker also serves /healthz, /readyz and /metrics; another
    // image is run as it is.
    let ours = spec.command.is_none();
    let command = spec.command.clone().unwrap_or_else(|| {
        vec![
            "flowpilot".into(),
            "worker".into(),
            "--queues".into(),
            spec.queues.join(","),
            "--job-timeout".into(),
            format!("{}s", spec.job_timeout_seconds),
        ]
    });
    let var = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        ..EnvVar::default()
    };
    let mut defaults = vec![var("FLOWPILOT_LOG_FORMAT", "json".into())];
    if ours {
        defaults.push(var(
            "FLOWPILOT_ADMIN_LISTEN",
            format!("0.0.0.0:{ADMIN_PORT}"),
        ));
    }
    let env = merge_env(defaults, spec.env.clone().unwrap_or_default());
    let admin = IntOrString::String("admin".into());
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: admin.clone(),
            ..HTTPGetAction::default()
        }),
        ..Probe::default()
    };
    Deployment {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: pool.namespace(),
            labels: Some(labels.clone()),
            owner_references: pool.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    // Workers drain on SIGTERM: running jobs may finish.
                    termination_grace_period_seconds: Some(
                        spec.job_timeout_seconds + DRAIN_MARGIN_S,
                    ),
                    containers: vec![Container {
                        name: "worker".into(),
                        image: Some(
                            spec.image
                                .clone()
                                .unwrap_or_else(|| default_image.to_owned()),
                        ),
                        command: Some(command),
                        env: Some(env),
                        env_from: spec.secret_name.as_ref().map(|s| {
                            vec![EnvFromSource {
                                secret_ref: Some(SecretEnvSource {
                                    name: s.clone(),
                                    optional: Some(false),
                                }),
                                ..EnvFromSource::default()
                            }]
                        }),
                        resources: spec.resources.clone(),
                        ports: ours.then(|| {
                            vec![ContainerPort {
                                name: Some("admin".into()),
                                container_port: ADMIN_PORT,
                                ..ContainerPort::default()
                            }]
                        }),
                        liveness_probe: ours.then(|| probe("/healthz")),
                        readiness_probe: ours.then(|| probe("/readyz")),
                        security_context: Some(hardened(ours)),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    }
}

/// No privilege escalation, no capabilities, the runtime's seccomp
/// profile; our own image also runs as non-root on a read-only root
/// filesystem (another image is trusted to know what it needs).
fn hardened(ours: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        run_as_non_root: ours.then_some(true),
        read_only_root_filesystem: ours.then_some(true),
        ..SecurityContext::default()
    }
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

/// `defaults` then `pool`, one entry per name: the pool's value wins over
/// a default, and a later entry of the pool over an earlier one, each kept
/// at the place its name first appeared. Server-side apply refuses a
/// container whose env lists a name twice.
fn merge_env(defaults: Vec<EnvVar>, pool: Vec<EnvVar>) -> Vec<EnvVar> {
    let mut merged: Vec<EnvVar> = Vec::with_capacity(defaults.len() + pool.len());
    for var in defaults.into_iter().chain(pool) {
        match merged.iter_mut().find(|v| v.name == var.name) {
            Some(slot) => *slot = var,
            None => merged.push(var),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(spec: serde_json::Value) -> WorkerPool {
        let mut p = WorkerPool::new("p", serde_json::from_value(spec).unwrap());
        p.metadata.namespace = Some("ns".into());
        p
    }

    #[test]
    fn an_arq_image_runs_as_it_is_without_our_admin_port() {
        let p = pool(
            serde_json::json!({"queues": ["scoring"], "maxReplicas": 3, "image": "py:1", "command": ["arq", "app.Settings"]}),
        );
        let d = deployment(&p, 2, "flowpilot:x");
        let pod = d.spec.template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("py:1"));
        assert_eq!(
            c.command.as_deref(),
            Some(&["arq".to_owned(), "app.Settings".to_owned()][..])
        );
        assert!(c.ports.is_none() && c.readiness_probe.is_none());
        assert_eq!(c.env.as_ref().unwrap().len(), 1, "only the log format");
        assert_eq!(
            pod.termination_grace_period_seconds,
            Some(330),
            "default job timeout 300 + 30"
        );
        assert_eq!(d.spec.replicas, Some(2));
        // Hardened, but not forced non-root: the image may need its user.
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.run_as_non_root, None);
        let ours = deployment(
            &pool(serde_json::json!({"queues": ["q"], "maxReplicas": 3})),
            1,
            "f:x",
        );
        let sc = ours.spec.template.spec.unwrap().containers[0]
            .security_context
            .clone()
            .unwrap();
        assert_eq!(
            (sc.run_as_non_root, sc.read_only_root_filesystem),
            (Some(true), Some(true))
        );
    }

    #[test]
    fn env_names_appear_once_with_the_pools_own_values_winning() {
        let p = pool(
            serde_json::json!({"queues": ["q"], "maxReplicas": 3, "env": [
                {"name": "FLOWPILOT_LOG_FORMAT", "value": "text"},
                {"name": "FLOWPILOT_LOG", "value": "debug"},
                {"name": "FLOWPILOT_LOG", "value": "info"},
            ]}),
        );
        let d = deployment(&p, 1, "flowpilot:x");
        let env = d.spec.template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        let pairs: Vec<(&str, Option<&str>)> = env
            .iter()
            .map(|v| (v.name.as_str(), v.value.as_deref()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("FLOWPILOT_LOG_FORMAT", Some("text")),
                ("FLOWPILOT_ADMIN_LISTEN", Some("0.0.0.0:8081")),
                ("FLOWPILOT_LOG", Some("info")),
            ]
        );
    }

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
