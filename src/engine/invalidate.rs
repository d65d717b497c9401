//! Keeping caches true across processes: a change to what processes cache
//! (a workflow's activation or versions, an account's rate limits) is
//! published on `<prefix>:invalidate` after it commits, and every process
//! listening drops its copy at once. A message sent while a listener was
//! not subscribed is lost, so each (re)subscription drops every copy; the
//! caches' TTLs bound what a process that does not listen (the
//! controller) may see.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

use super::Engine;
use crate::queue::keys;

/// Pause before subscribing again after the subscription failed.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// A workflow's activation, archival or versions.
    Workflow(Uuid),
    /// An account's rate limits.
    Limits(Uuid),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Workflow(id) => write!(f, "workflow:{id}"),
            Change::Limits(id) => write!(f, "limits:{id}"),
        }
    }
}

impl Change {
    fn parse(message: &str) -> Option<Change> {
        let (kind, id) = message.split_once(':')?;
        let id = id.parse().ok()?;
        match kind {
            "workflow" => Some(Change::Workflow(id)),
            "limits" => Some(Change::Limits(id)),
            _ => None,
        }
    }
}

impl Engine {
    /// Drops this process's copies of what `change` touched and tells the
    /// others. A failed announcement only delays them (until their copies
    /// expire); the change itself is committed.
    pub(crate) async fn changed(&self, change: Change) {
        self.forget(Some(change));
        let channel = keys::invalidate(&self.settings.queue_prefix);
        if let Err(e) = self.queue.publish(&channel, &change.to_string()).await {
            warn!(%change, error = %e, "change not announced; other processes see it when their copy expires");
        }
    }

    /// Drops the copies `change` touched (`None`: every copy).
    fn forget(&self, change: Option<Change>) {
        match change {
            Some(Change::Workflow(id)) => self.workflows.remove(&id),
            Some(Change::Limits(account)) => self.providers.limits.forget(Some(account)),
            None => {
                self.workflows.clear();
                self.providers.limits.forget(None);
            }
        }
    }

    /// Drops copies as changes are announced, until `token` is cancelled.
    pub async fn listen_for_changes(self: Arc<Self>, token: CancellationToken) {
        let channel = keys::invalidate(&self.settings.queue_prefix);
        loop {
            let listened = self.queue.listen(
                std::slice::from_ref(&channel),
                || self.forget(None),
                |message| match Change::parse(message) {
                    Some(change) => self.forget(Some(change)),
                    None => warn!(message, "unknown change announced; ignored"),
                },
            );
            tokio::select! {
                () = token.cancelled() => return,
                r = listened => if let Err(e) = r {
                    warn!(error = %e, "changes not heard; subscribing again");
                },
            }
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(RESUBSCRIBE) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_travel_as_text_and_back() {
        let id = Uuid::new_v4();
        for c in [Change::Workflow(id), Change::Limits(id)] {
            assert_eq!(Change::parse(&c.to_string()), Some(c));
        }
        assert_eq!(Change::parse("contact:x"), None);
        assert_eq!(Change::parse("workflow:not-a-uuid"), None);
    }
}
