//! Conditions per the Kubernetes API conventions: `lastTransitionTime`
//! changes only when a condition's status does.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Context, Result};

/// Condition types.
pub mod kind {
    /// The resource is accepted and being acted on.
    pub const READY: &str = "Ready";
    /// The execution completed.
    pub const SUCCEEDED: &str = "Succeeded";
    /// The execution (or its spec) failed.
    pub const FAILED: &str = "Failed";
}

/// A condition with `status` true or false, keeping the previous
/// transition time when the status did not change.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
    previous: &[Condition],
) -> Condition {
    let status = if status { "True" } else { "False" }.to_owned();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(
            || Time(super::k8s_time(now)),
            |c| c.last_transition_time.clone(),
        );
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// Writes `status` with a merge patch of the status subresource.
///
/// # Errors
/// Kubernetes errors.
pub async fn patch<K>(api: &Api<K>, name: &str, status: &impl Serialize) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": status})),
    )
    .await?;
    Ok(())
}

/// Records an Event on `obj` (Warning when `warning`).
///
/// # Errors
/// Kubernetes errors.
pub async fn publish<K>(
    ctx: &Context,
    obj: &K,
    warning: bool,
    reason: &str,
    action: &str,
    note: Option<String>,
) -> Result<()>
where
    K: Resource<DynamicType = ()>,
{
    Recorder::new(ctx.client.clone(), ctx.reporter.clone())
        .publish(
            &Event {
                type_: if warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: reason.to_owned(),
                note,
                action: action.to_owned(),
                secondary: None,
            },
            &obj.object_ref(&()),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_time_moves_only_when_the_status_changes() {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let t1 = t0 + chrono::Duration::seconds(30);
        let first = condition(kind::READY, true, "Created", "", Some(1), t0, &[]);
        let same = condition(
            kind::READY,
            true,
            "StillFine",
            "other message",
            Some(2),
            t1,
            std::slice::from_ref(&first),
        );
        assert_eq!(same.last_transition_time, first.last_transition_time);
        assert_eq!(same.reason, "StillFine");
        let flipped = condition(kind::READY, false, "Broken", "", Some(2), t1, &[same]);
        assert_eq!(
            flipped.last_transition_time,
            Time(crate::controller::k8s_time(t1))
        );
    }
}
