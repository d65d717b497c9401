//! Step: run the current step's action against the contact, and decide
//! what its outcome means for the execution (advance, park, back off,
//! fail) as a command for [`super::settle`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value as Json, json};

use super::Engine;
use super::definition::{Definition, OnError, Step};
use super::plan::{Command, Failure};
use super::retry;
use super::settle::{Settle, Writes};
use crate::action::{self, ActionError, Input, Next, Outcome};
use crate::domain::{ErrorClass, LogStatus, contact as rules, error_class};
use crate::store::{contact::Contact, execution::Execution, text};

/// Keys of `step_state`: when the parked step first started, and the
/// action's own state.
const STARTED_AT: &str = "started_at";
/// Milliseconds the parked step has run so far (its runs, not its waits).
const RAN_MS: &str = "ran_ms";
const STATE: &str = "state";
/// How long a step waits for a provider whose breaker gave no time.
const HOLD_WITHOUT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// When a step began: first (a parked step's row spans its wait), and this
/// run of it, with the time its earlier runs took.
#[derive(Debug, Clone, Copy)]
pub(super) struct Began {
    /// When the step first started.
    pub(super) started_at: DateTime<Utc>,
    /// When this run began, before its action ran.
    pub(super) ran_at: DateTime<Utc>,
    /// Milliseconds of its earlier runs (before it parked).
    pub(super) ran_ms: i64,
}

impl Began {
    /// Milliseconds the step has run, its earlier runs included, up to `at`.
    pub(super) fn exec_ms(&self, at: DateTime<Utc>) -> i64 {
        self.ran_ms + (at - self.ran_at).num_milliseconds().max(0)
    }
}

/// One attempt of one step: its log row and its metric.
pub(super) struct Ran<'a> {
    pub(super) step: &'a Step,
    /// When it began; its metric and its row's `exec_ms` leave the parked
    /// time out.
    pub(super) began: Began,
    /// The log row's status; `None` for a step that parked or waits for
    /// its provider (its row is written when it ends, spanning the wait).
    pub(super) log: Option<LogStatus>,
    pub(super) response: Option<Json>,
    pub(super) error: Option<String>,
    pub(super) class: Option<ErrorClass>,
    pub(super) fingerprint: Option<String>,
}

impl<'a> Ran<'a> {
    /// An attempt of `step` that began at `began`, with no log row yet.
    fn of(step: &'a Step, began: Began) -> Self {
        Ran {
            step,
            began,
            log: None,
            response: None,
            error: None,
            class: None,
            fingerprint: None,
        }
    }

    /// With a log row of `status`.
    fn logged(self, status: LogStatus, response: Option<Json>, error: Option<&str>) -> Self {
        Ran {
            log: Some(status),
            response,
            error: error.map(str::to_owned),
            ..self
        }
    }

    /// With the failure's class and fingerprint on its log row.
    fn classed(self, class: ErrorClass, fingerprint: &str) -> Self {
        Ran {
            class: Some(class),
            fingerprint: Some(fingerprint.to_owned()),
            ..self
        }
    }
}

impl Engine {
    /// Runs `step`'s action for `e`; returns what it came to, with when the
    /// step began (a parked step keeps its first start, so its log row
    /// spans the whole wait).
    #[tracing::instrument(skip_all, fields(step_id = %step.id, action = step.action.kind()))]
    pub(super) async fn step(
        &self,
        e: &Execution,
        step: &Step,
        contact: &Contact,
    ) -> (std::result::Result<Outcome, ActionError>, Began) {
        let stored = e.step_state.as_ref().map(|s| s.0.clone());
        let ran_at = Utc::now();
        let began = Began {
            started_at: stored
                .as_ref()
                .and_then(|s| s.get(STARTED_AT)?.as_str()?.parse::<DateTime<Utc>>().ok())
                .unwrap_or(ran_at),
            ran_at,
            ran_ms: stored
                .as_ref()
                .and_then(|s| s.get(RAN_MS)?.as_i64())
                .unwrap_or(0),
        };
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
        (admit(outcome, contact), began)
    }

    /// What a step's outcome means for the execution.
    pub(super) fn decide<'a>(
        &self,
        e: &Execution,
        def: &Definition,
        step: &'a Step,
        outcome: std::result::Result<Outcome, ActionError>,
        began: Began,
    ) -> Settle<'a> {
        let ran = Ran::of(step, began);
        match outcome {
            Ok(Outcome::Done {
                response,
                next,
                change,
            }) => {
                let next = def.next_index(e.current_step_index as usize, &next);
                Settle {
                    cmd: advance(def, step, response.clone(), next),
                    writes: Writes {
                        ran: Some(ran.logged(LogStatus::Succeeded, Some(response), None)),
                        change,
                        ..Writes::default()
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
                    step_state: json!({
                        STARTED_AT: began.started_at,
                        RAN_MS: began.exec_ms(Utc::now()),
                        STATE: state,
                    }),
                },
                writes: Writes {
                    ran: Some(ran),
                    ..Writes::default()
                },
            },
            Err(err) => self.decide_failure(e, def, step, ran, err),
        }
    }

    /// What a failed attempt means: wait for the provider (breaker open),
    /// retry after a backoff, or fail the step, which fails the execution
    /// unless the step's `on_error` goes on.
    fn decide_failure<'a>(
        &self,
        e: &Execution,
        def: &Definition,
        step: &'a Step,
        ran: Ran<'a>,
        err: ActionError,
    ) -> Settle<'a> {
        let now = Utc::now();
        let class = err.class;
        let fingerprint = fingerprint(e, &step.id, class, &err.message);
        let failure = |message: String| Failure {
            class,
            message,
            fingerprint: fingerprint.clone(),
        };
        if class == ErrorClass::ProviderUnavailable {
            let wait = err.retry_after.unwrap_or(HOLD_WITHOUT_RETRY_AFTER);
            return Settle {
                cmd: Command::Hold {
                    until: now + chrono::Duration::from_std(wait).unwrap_or_default(),
                    failure: failure(err.message),
                },
                writes: Writes {
                    ran: Some(ran),
                    ..Writes::default()
                },
            };
        }
        let message = if err.retryable() {
            let policy = self
                .settings
                .retry
                .for_step(step.action.kind(), step.retry.as_ref());
            // Attempts since the step (re)started: a manual retry gives a
            // step its whole policy again.
            let tries = e.attempt - e.first_attempt + 1;
            let round_started = e.step_started_at.unwrap_or(ran.began.started_at);
            match policy.next(tries, fastrand::f64(), err.retry_after, round_started, now) {
                retry::Next::RetryAt(at) => {
                    let logged = ran.logged(LogStatus::Retrying, err.response, Some(&err.message));
                    return Settle {
                        cmd: Command::Backoff {
                            at,
                            failure: failure(err.message),
                            step_started_at: round_started,
                        },
                        writes: Writes {
                            ran: Some(logged.classed(class, &fingerprint)),
                            ..Writes::default()
                        },
                    };
                }
                retry::Next::GiveUp(why) => format!("{} ({why})", err.message),
            }
        } else {
            err.message
        };
        let logged = ran
            .logged(LogStatus::Failed, err.response, Some(&message))
            .classed(class, &fingerprint);
        let index = e.current_step_index as usize;
        let goes_on = match &step.on_error {
            OnError::Fail => {
                return Settle {
                    cmd: Command::Fail(failure(message)),
                    writes: Writes {
                        ran: Some(logged),
                        dead: Some(step.action.kind()),
                        ..Writes::default()
                    },
                };
            }
            OnError::Continue => def.next_index(index, &Next::Following),
            OnError::Goto(id) => def.index_of(id),
        };
        let output =
            json!({"error": message, "error_class": class.as_str(), "fingerprint": fingerprint});
        Settle {
            cmd: advance(def, step, output, goes_on),
            writes: Writes {
                ran: Some(logged),
                ..Writes::default()
            },
        }
    }
}

/// The command that records `step`'s `output` and moves on to step `next`
/// (or completes).
fn advance(def: &Definition, step: &Step, output: Json, next: Option<usize>) -> Command {
    Command::Advance {
        output: (step.id.clone(), output),
        next: next.map(|n| (n as i32, def.steps[n].id.clone())),
    }
}

/// The fingerprint of a failure of step `step_id` of `e`.
pub(super) fn fingerprint(
    e: &Execution,
    step_id: &str,
    class: ErrorClass,
    message: &str,
) -> String {
    error_class::fingerprint(
        &e.workflow_id.to_string(),
        e.workflow_version,
        step_id,
        class,
        message,
    )
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
                return Err(ActionError::contact_data(msg));
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
pub(super) fn scope(e: &Execution, c: &Contact) -> Json {
    json!({
        "contact": {
            "id": c.id, "external_id": c.external_id, "email": c.email, "phone": c.phone,
            "timezone": c.timezone, "attributes": c.attributes.0, "tags": c.tags,
        },
        "execution": {"id": e.id, "workflow_id": e.workflow_id, "metadata": e.metadata.0, "attempt": e.attempt},
        "steps": e.context.0,
    })
}
