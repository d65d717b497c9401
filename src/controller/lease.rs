//! Leader election on a `coordination.k8s.io/v1` Lease: one controller
//! replica acts at a time. The decision is pure ([`decide`]); [`Elector`]
//! reads and writes the Lease with optimistic concurrency (the
//! `resourceVersion` of what it read), so two candidates cannot both win.
//! [`Elector::lead`] owns leadership end to end: wait for the Lease, run
//! the work while renewing it, stop the work when the Lease is lost.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Why leading ended other than by the work finishing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another replica holds the Lease now.
    #[error("lost the leader Lease")]
    Lost,
    /// The Lease went unrenewed for a whole lease duration: another
    /// replica may lead, so this one steps down.
    #[error("could not renew the leader Lease: {0}")]
    Unrenewed(#[source] kube::Error),
}

/// What a candidate should do with the Lease it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No Lease yet: create it holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Another holder's lease lapsed: take it over.
    TakeOver,
    /// Another holder is live.
    Follow(String),
}

/// Decides from the Lease's spec. Pure.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: DateTime<Utc>) -> Step {
    let Some(spec) = spec else {
        return Step::Create;
    };
    match spec.holder_identity.as_deref() {
        Some(h) if h == me => Step::Renew,
        None | Some("") => Step::TakeOver,
        Some(holder) => {
            let duration =
                chrono::Duration::seconds(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
            let renewed = spec
                .renew_time
                .as_ref()
                .and_then(|t| DateTime::from_timestamp_micros(t.0.as_microsecond()))
                .unwrap_or(DateTime::UNIX_EPOCH);
            if renewed + duration < now {
                Step::TakeOver
            } else {
                Step::Follow(holder.to_owned())
            }
        }
    }
}

/// Holds or waits for the Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl Elector {
    /// A candidate `identity` for the Lease `name` in `namespace`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
        }
    }

    fn spec(
        &self,
        now: DateTime<Utc>,
        previous: Option<&LeaseSpec>,
        transition: bool,
    ) -> LeaseSpec {
        let t = MicroTime(super::k8s_time(now));
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: if transition {
                Some(t.clone())
            } else {
                previous.and_then(|p| p.acquire_time.clone())
            },
            renew_time: Some(t),
            lease_transitions: Some(if transition {
                transitions + 1
            } else {
                transitions
            }),
            ..LeaseSpec::default()
        }
    }

    /// Waits for the Lease, then runs `work` while holding it, renewing it
    /// every third of its duration. `work` must stop when `shutdown` is
    /// cancelled: losing the Lease cancels `shutdown` and waits for it.
    /// `None` when `shutdown` came before the Lease did.
    ///
    /// # Errors
    /// [`Error::Lost`] and [`Error::Unrenewed`], after `work` stopped.
    pub async fn lead<F: Future>(
        &self,
        shutdown: &CancellationToken,
        work: F,
    ) -> Result<Option<F::Output>, Error> {
        let renew = self.duration / 3;
        while !self.try_lead().await.unwrap_or(false) {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                () = tokio::time::sleep(renew) => {}
            }
        }
        tokio::pin!(work);
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                out = &mut work => return Ok(Some(out)),
                () = tokio::time::sleep(renew) => {}
            }
            let lost = match self.try_lead().await {
                Ok(true) => {
                    renewed = tokio::time::Instant::now();
                    continue;
                }
                Ok(false) => Error::Lost,
                // Unrenewed for a whole lease, another replica may lead.
                Err(e) if renewed.elapsed() >= self.duration => Error::Unrenewed(e),
                Err(e) => {
                    warn!(error = %e, "lease renewal failed");
                    continue;
                }
            };
            shutdown.cancel();
            work.await;
            return Err(lost);
        }
    }

    /// One round: returns whether this candidate holds the Lease now.
    ///
    /// # Errors
    /// Kubernetes errors other than losing a race (a conflict is "not leader").
    pub async fn try_lead(&self) -> Result<bool, kube::Error> {
        let now = Utc::now();
        let current = self.api.get_opt(&self.name).await?;
        let step = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
        );
        let result = match (&step, current) {
            (Step::Follow(_), _) => return Ok(false),
            (Step::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(now, None, true)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (Step::Renew | Step::TakeOver, Some(mut lease)) => {
                lease.spec = Some(self.spec(now, lease.spec.as_ref(), step == Step::TakeOver));
                // resourceVersion from the read: a concurrent writer makes this a 409.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            (_, None) => return Ok(false),
        };
        match result {
            Ok(_) => {
                if step != Step::Renew {
                    info!(identity = %self.identity, lease = %self.name, "acquired leadership");
                }
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(
                k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + renewed).unwrap(),
            )),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_candidate_creates_renews_takes_over_a_lapsed_lease_or_follows() {
        let now = DateTime::from_timestamp(1_800_000_100, 0).unwrap();
        assert_eq!(decide(None, "a", now), Step::Create);
        assert_eq!(decide(Some(&spec("a", 0, 15)), "a", now), Step::Renew);
        assert_eq!(
            decide(Some(&spec("b", 90, 15)), "a", now),
            Step::Follow("b".into())
        );
        assert_eq!(decide(Some(&spec("b", 80, 15)), "a", now), Step::TakeOver);
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "a", now),
            Step::TakeOver
        );
    }
}
