//! `WorkflowExecution` (`wfx`): one contact entering one workflow, started
//! by `kubectl apply`. The execution itself lives in PostgreSQL (keyed by
//! this resource's uid); the status mirrors it and stays small.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired execution.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "flowpilot.io",
    version = "v1alpha1",
    kind = "WorkflowExecution",
    namespaced,
    shortname = "wfx",
    status = "WorkflowExecutionStatus",
    doc = "One contact entering one workflow; the execution runs in flowpilot and its status is mirrored here.",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Workflow","type":"string","jsonPath":".spec.workflowId","priority":1}"#,
    printcolumn = r#"{"name":"Contact","type":"string","jsonPath":".spec.contactId","priority":1}"#,
    printcolumn = r#"{"name":"Step","type":"string","jsonPath":".status.currentStep"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message"}"#,
    validation = "self.metadata.name.size() <= 253"
)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowExecutionSpec {
    /// The flowpilot account (tenant) owning the workflow and the contact.
    #[schemars(regex(pattern = r"^[0-9a-fA-F-]{36}$"))]
    pub account_id: String,
    /// The workflow to run (its latest version at start).
    #[schemars(regex(pattern = r"^[0-9a-fA-F-]{36}$"))]
    pub workflow_id: String,
    /// The contact entering it.
    #[schemars(regex(pattern = r"^[0-9a-fA-F-]{36}$"))]
    pub contact_id: String,
    /// Queue priority: high, normal (default) or low.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Free-form metadata, readable by templates as `execution.metadata`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub metadata: Option<serde_json::Value>,
    /// Delete this resource this many seconds after the execution finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i64>,
}

/// Queue priority.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Real-time triggers.
    High,
    /// The default.
    Normal,
    /// Bulk work.
    Low,
}

fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Observed state, mirrored from PostgreSQL.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowExecutionStatus {
    /// Pending, Running, Waiting, Succeeded, Failed or Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The execution's id in flowpilot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    /// Id of the step it is at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<String>,
    /// Attempt at that step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// Why it is not moving (wait, arq_job, retry_backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_reason: Option<String>,
    /// First run (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// For people: the error, or what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Succeeded and Failed, per the Kubernetes API conventions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
