//! Circuit breakers, one per provider (a webhook host, an SMTP server, an
//! SMS API account), shared by every worker through Redis
//! ([`crate::queue::Client::breaker_admit`] holds the state machine).
//!
//! A call first asks its breaker. Closed: it goes out. Open: it does not;
//! the step gets an error of class `provider_unavailable` with a slot on
//! the breaker's release schedule, and the engine parks it until then
//! without spending an attempt. Half-open: a few probes go out; the first
//! success closes the breaker, a failure opens it again. Only failures
//! that say the provider is in trouble count (`transient`, `timeout`); a
//! refusal (`permanent`, `contact_data`, ...) is an answer, so a success
//! for the breaker.
//!
//! Redis trouble never stops a call: the breaker then lets it through.

use std::future::Future;
use std::time::Duration;

use tracing::{info, warn};

use crate::action::{ActionError, ErrorClass};
use crate::queue::{self, Admission, BreakerPolicy, BreakerState, now_ms};

/// The breakers of one installation (its queue prefix).
#[derive(Clone)]
pub struct Breakers {
    queue: queue::Client,
    prefix: String,
    /// `None`: breakers are off.
    policy: Option<BreakerPolicy>,
}

impl Breakers {
    /// Breakers under the queue `prefix` with `policy`.
    pub fn new(queue: queue::Client, prefix: &str, policy: BreakerPolicy) -> Self {
        Breakers {
            queue,
            prefix: prefix.to_owned(),
            policy: Some(policy),
        }
    }

    /// No breakers: every call goes out.
    pub fn off(queue: queue::Client) -> Self {
        Breakers {
            queue,
            prefix: String::new(),
            policy: None,
        }
    }

    /// Runs `call` to provider `key` through its breaker; `None` runs it
    /// unguarded (the outbox is our own database).
    ///
    /// # Errors
    /// `call`'s error, or `provider_unavailable` (with the slot in
    /// `retry_after`) when the breaker keeps the call back.
    pub async fn guard<T>(
        &self,
        key: Option<&str>,
        call: impl Future<Output = Result<T, ActionError>>,
    ) -> Result<T, ActionError> {
        self.guard_judged(key, call, |_| false).await
    }

    /// As [`Breakers::guard`], for a call whose success may still be the
    /// provider's trouble: `troubled` says so of an answer (a webhook's
    /// 5xx).
    ///
    /// # Errors
    /// As [`Breakers::guard`].
    pub async fn guard_judged<T>(
        &self,
        key: Option<&str>,
        call: impl Future<Output = Result<T, ActionError>>,
        troubled: impl Fn(&T) -> bool,
    ) -> Result<T, ActionError> {
        let (Some(p), Some(key)) = (&self.policy, key) else {
            return call.await;
        };
        let admission = match self
            .queue
            .breaker_admit(&self.prefix, key, p, now_ms())
            .await
        {
            Ok(a) => a,
            Err(e) => {
                warn!(provider = key, error = %e, "breaker unreadable; calling anyway");
                Admission::Pass
            }
        };
        let probe = match admission {
            Admission::Pass => false,
            Admission::Probe => true,
            Admission::Refused { retry_in_ms } => {
                return Err(ActionError::new(
                    ErrorClass::ProviderUnavailable,
                    format!("{key}: circuit breaker open"),
                )
                .retry_after(Some(Duration::from_millis(retry_in_ms))));
            }
        };
        let out = call.await;
        let ok = match &out {
            Ok(answer) => !troubled(answer),
            Err(e) => !counts_against(e.class),
        };
        match self
            .queue
            .breaker_report(&self.prefix, key, p, now_ms(), ok, probe)
            .await
        {
            Ok(BreakerState::Open) if ok || probe => {}
            Ok(BreakerState::Open) => info!(provider = key, "circuit breaker open"),
            Ok(BreakerState::Closed) if probe && ok => {
                info!(provider = key, "circuit breaker closed")
            }
            Ok(_) => {}
            Err(e) => warn!(provider = key, error = %e, "breaker not updated"),
        }
        out
    }
}

/// Whether a failure of this class says the provider is in trouble.
pub fn counts_against(class: ErrorClass) -> bool {
    matches!(class, ErrorClass::Transient | ErrorClass::Timeout)
}
