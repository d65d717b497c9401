//! The Deployment a `WorkerPool` owns, rendered from its spec: the
//! workers, their env (each name once), probes for our own image, a
//! hardened security context, and the drain time on shutdown. Pure.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvFromSource, EnvVar, HTTPGetAction, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretEnvSource, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use super::FIELD_MANAGER;
use super::worker_pool::POOL_LABEL;
use crate::crd::WorkerPool;

/// Port of `flowpilot worker --admin-listen` in pool pods.
const ADMIN_PORT: i32 = 8081;
/// Extra seconds of termination grace beyond the job timeout.
const DRAIN_MARGIN_S: i64 = 30;

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
}
