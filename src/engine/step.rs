//! Step: run the current step's action against the contact, and decide
//! what its outcome means for the execution (advance, park, back off,
//! fail) as a command for [`super::settle`].

use chrono::{DateTime, Utc};
use serde_json::{Value as Json, json};

use super::Engine;
use super::definition::{Definition, Step};
use super::plan::Command;
use super::settle::{Settle, Writes};
use crate::action::{self, ActionError, Input, Outcome};
use crate::domain::{LogStatus, contact as rules};
use crate::store::{contact::Contact, execution::Execution, text};

/// Keys of `step_state`: when the parked step first started, and the
/// action's own state.
const STARTED_AT: &str = "started_at";
const STATE: &str = "state";

/// One attempt of one step: its log row and its metric.
pub(super) struct Ran<'a> {
    pub(super) step: &'a Step,
    pub(super) started_at: DateTime<Utc>,
    /// The log row's status; `None` for a step that parked (its row is
    /// written when it ends, spanning the wait).
    pub(super) log: Option<LogStatus>,
    pub(super) response: Option<Json>,
    pub(super) error: Option<String>,
}

impl Engine {
    /// Runs `step`'s action for `e`; returns what it came to, with the time
    /// the step first started (a parked step keeps it, so its log row
    /// spans the whole wait).
    pub(super) async fn step(
        &self,
        e: &Execution,
        step: &Step,
        contact: &Contact,
    ) -> (std::result::Result<Outcome, ActionError>, DateTime<Utc>) {
        let stored = e.step_state.as_ref().map(|s| s.0.clone());
        let started_at = stored
            .as_ref()
            .and_then(|s| s.get(STARTED_AT)?.as_str()?.parse::<DateTime<Utc>>().ok())
            .unwrap_or_else(Utc::now);
        let state = stored.and_then(|mut s| s.as_object_mut()?.remove(STATE));
        let scope = scope(e, contact);
        let input = Input {
            account_id: e.account_id,
            execution_id: e.id,
            step_id: &step.id,
            step_index: e.current_step_index as usize,
            attempt: e.attempt,
            state: state.as_ref(),
            scope: &scope,
            timezone: &contact.timezone,
            tags: &contact.tags,
            opted_out: contact.opted_out,
            now: Utc::now(),
        };
        let outcome = action::run(&step.action, &input, &self.providers).await;
        (admit(outcome, contact), started_at)
    }

    /// What a step's outcome means for the execution.
    pub(super) fn decide<'a>(
        &self,
        e: &Execution,
        def: &Definition,
        step: &'a Step,
        outcome: std::result::Result<Outcome, ActionError>,
        started_at: DateTime<Utc>,
    ) -> Settle<'a> {
        let ran = |log, response, error| Ran {
            step,
            started_at,
            log: Some(log),
            response,
            error,
        };
        let kind = step.action.kind();
        let fail = |error: String, response| Settle {
            cmd: Command::Fail {
                error: error.clone(),
            },
            writes: Writes {
                ran: Some(ran(LogStatus::Failed, response, Some(error))),
                change: None,
                dead: Some(kind),
            },
        };
        match outcome {
            Ok(Outcome::Done {
                response,
                next,
                change,
            }) => {
                let index = e.current_step_index as usize;
                let next = def
                    .next_index(index, &next)
                    .map(|n| (n as i32, def.steps[n].id.clone()));
                Settle {
                    cmd: Command::Advance {
                        output: (step.id.clone(), response.clone()),
                        next,
                    },
                    writes: Writes {
                        ran: Some(ran(LogStatus::Succeeded, Some(response), None)),
                        change,
                        dead: None,
                    },
                }
            }
            Ok(Outcome::Park {
                until,
                reason,
                state,
            }) => Settle {
                cmd: Command::Park {
                    until,
                    reason: reason.to_owned(),
                    step_state: json!({STARTED_AT: started_at, STATE: state}),
                },
                writes: Writes {
                    ran: Some(Ran {
                        log: None,
                        ..ran(LogStatus::Succeeded, None, None)
                    }),
                    ..Writes::default()
                },
            },
            Err(ActionError {
                retryable: true,
                message,
                response,
            }) => {
                let policy = step.retry.unwrap_or(self.settings.retry);
                // Attempts since the step (re)started: a manual retry gives
                // a step its whole policy again.
                let tries = e.attempt - e.first_attempt + 1;
                if tries >= policy.max_attempts {
                    return fail(format!("{message} (after {tries} attempts)"), response);
                }
                let at = Utc::now() + policy.backoff(tries, fastrand::f64());
                Settle {
                    cmd: Command::Backoff {
                        at,
                        error: message.clone(),
                    },
                    writes: Writes {
                        ran: Some(ran(LogStatus::Retrying, response, Some(message))),
                        ..Writes::default()
                    },
                }
            }
            Err(ActionError {
                retryable: false,
                message,
                response,
            }) => fail(message, response),
        }
    }
}

/// What the engine lets through of a step's outcome. Third parties' data
/// (a webhook's answer, an arq result, a provider's error text) is kept
/// with any NUL replaced, which PostgreSQL would refuse at every retry of
/// the checkpoint; a contact change that would pass the contact's limits
/// fails the step for good, with a message saying which.
fn admit(
    outcome: std::result::Result<Outcome, ActionError>,
    contact: &Contact,
) -> std::result::Result<Outcome, ActionError> {
    match outcome {
        Ok(Outcome::Done {
            response,
            next,
            change,
        }) => {
            if let Some(change) = &change
                && let Err(msg) = rules::check_change(change, &contact.attributes.0, &contact.tags)
            {
                return Err(ActionError::permanent(msg));
            }
            Ok(Outcome::Done {
                response: text::scrub(response),
                next,
                change,
            })
        }
        Err(mut err) => {
            err.message = text::scrub_str(err.message);
            err.response = err.response.map(text::scrub);
            Err(err)
        }
        park => park,
    }
}

/// The template scope of a step.
fn scope(e: &Execution, c: &Contact) -> Json {
    json!({
        "contact": {
            "id": c.id, "external_id": c.external_id, "email": c.email, "phone": c.phone,
            "timezone": c.timezone, "attributes": c.attributes.0, "tags": c.tags,
        },
        "execution": {"id": e.id, "workflow_id": e.workflow_id, "metadata": e.metadata.0, "attempt": e.attempt},
        "steps": e.context.0,
    })
}
