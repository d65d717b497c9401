//! `WorkerPool` (`wp`): a Deployment of ARQ-compatible workers on some
//! queues, scaled by the controller from queue depth (`Auto`) or by
//! `kubectl scale` / an external HPA or KEDA through `/scale` (`Manual`).

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired pool.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "flowpilot.io",
    version = "v1alpha1",
    kind = "WorkerPool",
    namespaced,
    shortname = "wp",
    status = "WorkerPoolStatus",
    doc = "A Deployment of ARQ-compatible workers, scaled from queue depth.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.currentReplicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Min","type":"integer","jsonPath":".spec.minReplicas"}"#,
    printcolumn = r#"{"name":"Max","type":"integer","jsonPath":".spec.maxReplicas"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desiredReplicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Queue","type":"integer","jsonPath":".status.queueDepth"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = r#"self.spec.minReplicas <= self.spec.maxReplicas"#,
    validation = r#"self.spec.mode != 'Manual' || !has(self.spec.replicas) || (self.spec.replicas >= self.spec.minReplicas && self.spec.replicas <= self.spec.maxReplicas)"#
)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPoolSpec {
    /// `Auto` (the built-in autoscaler) or `Manual` (`spec.replicas`, set by
    /// `kubectl scale` or an external autoscaler through `/scale`).
    #[serde(default)]
    pub mode: Mode,
    /// Queues the workers serve, highest priority first.
    #[schemars(length(min = 1))]
    pub queues: Vec<String>,
    /// Worker image; default the controller's `--worker-image` (flowpilot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Command for any arq-compatible image, e.g. `["arq", "app.WorkerSettings"]`;
    /// default `flowpilot worker --queues <queues>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Fewest replicas (0 allows scale to zero).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub min_replicas: i32,
    /// Most replicas.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Replicas in `Manual` mode (the `/scale` subresource writes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Ready jobs one replica should carry (`Auto`); default 10.
    #[serde(default = "default_target")]
    #[schemars(range(min = 1))]
    pub target_per_replica: i32,
    /// Ignore load changes within this fraction of the target; default 0.1.
    #[serde(default = "default_tolerance")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub tolerance: f64,
    /// Scale down only to the highest recommendation of this many seconds; default 300.
    #[serde(default = "default_window")]
    #[schemars(range(min = 0))]
    pub scale_down_stabilization_seconds: i64,
    /// Scale to zero only after this many seconds with nothing queued or running; default 300.
    #[serde(default = "default_window")]
    #[schemars(range(min = 0))]
    pub cooldown_seconds: i64,
    /// The workers' job timeout; pods get this plus 30 s to drain. Default 300.
    #[serde(default = "default_window")]
    #[schemars(range(min = 1))]
    pub job_timeout_seconds: i64,
    /// Secret with `DATABASE_URL` and `REDIS_URL` (as environment variables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Extra environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    /// Container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn default_target() -> i32 {
    10
}

fn default_tolerance() -> f64 {
    0.1
}

fn default_window() -> i64 {
    300
}

/// How replicas are decided.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Mode {
    /// The controller's autoscaler.
    #[default]
    Auto,
    /// `spec.replicas`.
    Manual,
}

/// A past recommendation, for the scale-down stabilization window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Recommendation {
    /// When (RFC 3339).
    pub at: String,
    /// Replicas recommended then.
    pub replicas: i32,
}

/// Observed state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPoolStatus {
    /// Replicas decided.
    #[serde(default)]
    pub desired_replicas: i32,
    /// Replicas of the Deployment.
    #[serde(default)]
    pub current_replicas: i32,
    /// Ready replicas of the Deployment.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Jobs due now on the pool's queues (ZCOUNT -inf now), running ones included.
    #[serde(default)]
    pub queue_depth: i64,
    /// Jobs held by a worker.
    #[serde(default)]
    pub in_progress: i64,
    /// Last change of the replica count (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    /// Last time anything was queued or running (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_time: Option<String>,
    /// Label selector of the pods, for `/scale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Recent recommendations (the stabilization window).
    #[serde(default)]
    pub recommendations: Vec<Recommendation>,
    /// Ready, per the Kubernetes API conventions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
