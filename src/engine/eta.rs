//! When an execution not yet ended should complete, and why: its known
//! timers (a wait's deadline and send window, a retry's or hold's time),
//! the historical mean time of each step still ahead (from the analytics
//! rollups), and the queue wait in front of it now. The path ahead is
//! foreseen as the contact stands: conditions are evaluated, waits
//! computed in the contact's timezone, nothing run or sent.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::definition::Definition;
use super::{Engine, Result};
use crate::action::{Foresight, Input, Next};
use crate::domain::Status;
use crate::store::{self, execution::Execution};

/// Days of history the step means come from.
const HISTORY_DAYS: i64 = 30;
/// Waiting reasons whose `next_action_at` is when the step runs (again);
/// other parks (`arq_job`) end when their job does, history tells when.
const TIMED: [&str; 4] = [
    "enrollment",
    "retry_backoff",
    "provider_unavailable",
    crate::action::RATE_LIMITED,
];

/// Where an execution stands, as the estimate needs it.
#[derive(Debug, Clone, Copy)]
pub struct Position<'a> {
    /// Its status.
    pub status: Status,
    /// The step it is at.
    pub step_index: usize,
    /// When it moves next on its own.
    pub next_action_at: Option<DateTime<Utc>>,
    /// Why it waits.
    pub waiting_reason: Option<&'a str>,
}

/// An estimate and what it is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Eta {
    /// When it should complete.
    pub at: DateTime<Utc>,
    /// Milliseconds of known timers ahead.
    pub timers_ms: i64,
    /// Milliseconds of historical step times ahead.
    pub history_ms: i64,
    /// Milliseconds of queue wait now.
    pub queue_ms: i64,
    /// The steps ahead, the current one first, as foreseen.
    pub path: Vec<String>,
    /// Steps ahead without history (counted as no time).
    pub without_history: Vec<String>,
}

/// Estimates when an execution at `pos` in `def` completes, from `now`:
/// `base` is the input its steps would get (contact, scope), `means` the
/// mean milliseconds per step id, `queue_wait` the wait of a queued job.
pub fn estimate(
    def: &Definition,
    pos: Position<'_>,
    base: &Input<'_>,
    means: &BTreeMap<String, f64>,
    queue_wait: Duration,
    now: DateTime<Utc>,
) -> Option<Eta> {
    if pos.status.is_final() {
        return None;
    }
    let mut eta = Eta {
        at: now,
        timers_ms: 0,
        history_ms: 0,
        queue_ms: 0,
        path: Vec::new(),
        without_history: Vec::new(),
    };
    let mut t = now;
    let mut index = Some(pos.step_index);
    if pos.status == Status::Queued {
        let wait = chrono::Duration::from_std(queue_wait).unwrap_or_default();
        eta.queue_ms = wait.num_milliseconds();
        t += wait;
    }
    let timed =
        pos.status == Status::Retrying || pos.waiting_reason.is_some_and(|r| TIMED.contains(&r));
    if let (true, Some(at)) = (timed, pos.next_action_at) {
        eta.timers_ms += (at - t).num_milliseconds().max(0);
        t = t.max(at);
    }
    if pos.status == Status::Waiting && pos.waiting_reason == Some("wait") {
        // The wait ends at its deadline and the step with it.
        if let Some(at) = pos.next_action_at {
            eta.timers_ms += (at - t).num_milliseconds().max(0);
            t = t.max(at);
        }
        if let Some(step) = def.steps.get(pos.step_index) {
            eta.path.push(step.id.clone());
        }
        index = def.next_index(pos.step_index, &Next::Following);
    }
    // A goto may loop: never walk further than every step four times.
    let mut budget = def.steps.len() * 4;
    while let (Some(i), true) = (index, budget > 0) {
        budget -= 1;
        let Some(step) = def.steps.get(i) else { break };
        eta.path.push(step.id.clone());
        let input = Input {
            step_id: &step.id,
            step_index: i,
            state: None,
            now: t,
            ..*base
        };
        let next = match step.action.foresee(&input) {
            Foresight::Until(at) => {
                eta.timers_ms += (at - t).num_milliseconds().max(0);
                t = t.max(at);
                Next::Following
            }
            Foresight::Next(next) => next,
            Foresight::Unknown => {
                match means.get(&step.id) {
                    Some(&ms) => {
                        let ms = ms.round() as i64;
                        eta.history_ms += ms;
                        t += chrono::Duration::milliseconds(ms);
                    }
                    None => eta.without_history.push(step.id.clone()),
                }
                Next::Following
            }
        };
        index = def.next_index(i, &next);
    }
    eta.at = t;
    Some(eta)
}

impl Engine {
    /// The estimate for `e` now (`None` once it ended).
    ///
    /// # Errors
    /// Database errors; the queue not answering counts as no queue wait.
    pub async fn eta(&self, e: &Execution) -> Result<Option<Eta>> {
        if e.status.is_final() {
            return Ok(None);
        }
        let def = self.definition(e.workflow_id, e.workflow_version).await?;
        let Some(contact) = store::contact::get(&self.pool, e.account_id, e.contact_id).await?
        else {
            return Ok(None);
        };
        let now = Utc::now();
        let means = self
            .step_means(e.account_id, e.workflow_id, e.workflow_version, now)
            .await?;
        let queue_wait = if e.status == Status::Queued {
            let queue = self.queue_of(e);
            match self.queue.health(&queue, now.timestamp_millis()).await {
                Ok(h) => h
                    .oldest_ready_age(now.timestamp_millis())
                    .unwrap_or_default(),
                Err(_) => Duration::ZERO,
            }
        } else {
            Duration::ZERO
        };
        let scope = super::step::scope(e, &contact);
        let base = Input {
            account_id: e.account_id,
            execution_id: e.id,
            step_id: "",
            step_index: 0,
            attempt: e.attempt,
            state: None,
            scope: &scope,
            timezone: &contact.timezone,
            tags: &contact.tags,
            opted_out: contact.opted_out,
            now,
        };
        let pos = Position {
            status: e.status,
            step_index: e.current_step_index.max(0) as usize,
            next_action_at: e.next_action_at(),
            waiting_reason: e.waiting_reason.as_deref(),
        };
        Ok(estimate(&def, pos, &base, &means, queue_wait, now))
    }

    /// Mean milliseconds per step of a workflow version over the last
    /// [`HISTORY_DAYS`].
    async fn step_means(
        &self,
        account_id: Uuid,
        workflow_id: Uuid,
        version: i32,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<String, f64>> {
        let today = now.date_naive();
        let from = today - chrono::Duration::days(HISTORY_DAYS);
        let steps = store::analytics::step_counts(
            &self.pool,
            account_id,
            workflow_id,
            version,
            (from, today),
        )
        .await?;
        Ok(steps
            .into_iter()
            .filter_map(|s| Some((s.step_id.clone(), s.mean_ms()?)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn def() -> Definition {
        Definition::parse(&json!({"steps": [
            {"id": "welcome", "type": "send_email", "subject": "Hi", "body": "Welcome"},
            {"id": "pause", "type": "wait", "duration": "2d",
             "window": {"start": "09:00", "end": "17:00", "days": ["mon", "tue", "wed", "thu", "fri"]}},
            {"id": "check", "type": "condition",
             "if": {"field": "contact.attributes.plan", "op": "eq", "value": "pro"}, "then": "crm"},
            {"id": "nudge", "type": "send_sms", "body": "Still there?"},
            {"id": "done", "type": "end"},
            {"id": "crm", "type": "webhook", "url": "https://crm.example.com/hook"}
        ]}))
        .unwrap()
    }

    /// What a step of a contact in UTC with `scope` gets at `now`.
    fn input(scope: &serde_json::Value, now: DateTime<Utc>) -> Input<'_> {
        Input {
            account_id: Uuid::nil(),
            execution_id: Uuid::nil(),
            step_id: "",
            step_index: 0,
            attempt: 1,
            state: None,
            scope,
            timezone: "UTC",
            tags: &[],
            opted_out: false,
            now,
        }
    }

    fn estimate_for(plan: &str, pos: Position<'_>, now: DateTime<Utc>) -> Eta {
        let scope = json!({"contact": {"attributes": {"plan": plan}}});
        let base = input(&scope, now);
        let means: BTreeMap<String, f64> = [("welcome", 500.0), ("nudge", 700.0), ("crm", 1_000.0)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        estimate(&def(), pos, &base, &means, Duration::from_secs(3), now).unwrap()
    }

    #[test]
    fn a_queued_execution_adds_its_queue_history_and_the_next_send_window() {
        // Friday 16:00 UTC: two days on is Sunday, the window opens Monday 09:00.
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 16, 0, 0).unwrap();
        let queued = Position {
            status: Status::Queued,
            step_index: 0,
            next_action_at: None,
            waiting_reason: None,
        };
        let monday = Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap();
        let pro = estimate_for("pro", queued, now);
        assert_eq!(pro.at, monday + chrono::Duration::seconds(1));
        assert_eq!(pro.path, ["welcome", "pause", "check", "crm"]);
        assert_eq!((pro.queue_ms, pro.history_ms), (3_000, 1_500));
        assert_eq!(pro.timers_ms, (monday - now).num_milliseconds() - 3_500);
        let free = estimate_for("free", queued, now);
        assert_eq!(free.at, monday + chrono::Duration::milliseconds(700));
        assert_eq!(free.path, ["welcome", "pause", "check", "nudge", "done"]);
    }

    #[test]
    fn a_waiting_execution_ends_its_wait_at_its_deadline_and_an_ended_one_has_none() {
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 16, 0, 0).unwrap();
        let resume = now + chrono::Duration::hours(5);
        let waiting = Position {
            status: Status::Waiting,
            step_index: 1,
            next_action_at: Some(resume),
            waiting_reason: Some("wait"),
        };
        let eta = estimate_for("pro", waiting, now);
        assert_eq!(eta.at, resume + chrono::Duration::seconds(1));
        assert_eq!(eta.path, ["pause", "check", "crm"]);
        assert_eq!(eta.queue_ms, 0);
        let ended = Position {
            status: Status::Completed,
            ..waiting
        };
        let scope = json!({});
        let base = input(&scope, now);
        assert_eq!(
            estimate(&def(), ended, &base, &BTreeMap::new(), Duration::ZERO, now),
            None
        );
    }
}
