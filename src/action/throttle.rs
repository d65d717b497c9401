//! Rate limits as a step meets them: take the account's slot for the call
//! (through [`Effects::reserve`]) and, when it is not now, park the step
//! until it. The slot belongs to the attempt that reserved it: that
//! attempt, resumed, calls without asking again; a retry (a new attempt)
//! asks again.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use super::{Channel, Effects, Input, Outcome};

/// `waiting_reason` of a step parked until its rate-limit slot.
pub const RATE_LIMITED: &str = "rate_limited";
/// Key of the parked step's state: the attempt that holds a slot.
const RESERVED: &str = "rate_slot_reserved_by_attempt";
/// A slot this close is waited for in place rather than by parking.
const WAIT_IN_PLACE: Duration = Duration::from_millis(100);

/// `None` to call now (after a short wait in place if the slot is near),
/// or the park until a later slot.
pub(super) async fn throttle(
    fx: &impl Effects,
    channel: Channel<'_>,
    input: &Input<'_>,
) -> Option<Outcome> {
    let holder = input.state.and_then(|s| s.get(RESERVED)?.as_i64());
    if holder == Some(i64::from(input.attempt)) {
        return None;
    }
    let wait = fx.reserve(channel, input).await;
    if wait <= WAIT_IN_PLACE {
        tokio::time::sleep(wait).await;
        return None;
    }
    Some(Outcome::Park {
        until: Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
        reason: RATE_LIMITED,
        state: json!({RESERVED: input.attempt}),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::Value as Json;

    use super::*;
    use crate::action::{ActionError, arq, email, sms, webhook};

    /// Effects whose every reservation is a minute away.
    #[derive(Default)]
    struct Busy {
        asked: AtomicUsize,
    }

    impl Effects for Busy {
        async fn send_email(&self, _: &email::Message, _: &Input<'_>) -> Result<Json, ActionError> {
            Ok(json!({}))
        }
        async fn send_sms(&self, _: &sms::Message, _: &Input<'_>) -> Result<Json, ActionError> {
            Ok(json!({}))
        }
        async fn call(&self, _: &webhook::Request) -> Result<webhook::Response, ActionError> {
            Err(ActionError::transient("unused"))
        }
        async fn enqueue(&self, _: &arq::Enqueue) -> Result<(), ActionError> {
            Ok(())
        }
        async fn job_state(&self, _: &str, _: &str) -> Result<arq::JobState, ActionError> {
            Ok(arq::JobState::Pending)
        }
        async fn reserve(&self, _: Channel<'_>, _: &Input<'_>) -> Duration {
            self.asked.fetch_add(1, Ordering::Relaxed);
            Duration::from_secs(60)
        }
    }

    fn input<'a>(attempt: i32, state: Option<&'a Json>, scope: &'a Json) -> Input<'a> {
        Input {
            account_id: uuid::Uuid::nil(),
            execution_id: uuid::Uuid::nil(),
            step_id: "mail",
            step_index: 0,
            attempt,
            state,
            scope,
            timezone: "UTC",
            tags: &[],
            opted_out: false,
            now: Utc::now(),
        }
    }

    #[tokio::test]
    async fn a_slot_is_the_attempt_s_that_reserved_it_and_a_retry_asks_again() {
        let (fx, scope) = (Busy::default(), json!({}));
        let Some(Outcome::Park {
            reason,
            state,
            until,
        }) = throttle(&fx, Channel::Email, &input(1, None, &scope)).await
        else {
            panic!("a slot a minute away parks the step");
        };
        assert_eq!(reason, RATE_LIMITED);
        assert!(until > Utc::now() + chrono::Duration::seconds(55));
        // Resumed in its slot, the same attempt calls without asking.
        assert!(
            throttle(&fx, Channel::Email, &input(1, Some(&state), &scope))
                .await
                .is_none()
        );
        assert_eq!(fx.asked.load(Ordering::Relaxed), 1);
        // A retry of the step is a new attempt: it asks for a slot again.
        assert!(
            throttle(&fx, Channel::Email, &input(2, Some(&state), &scope))
                .await
                .is_some()
        );
        assert_eq!(fx.asked.load(Ordering::Relaxed), 2);
    }
}
