//! `arq`: hand work to an external Python arq worker pool and resume with
//! its result. The job id is `flowpilot:<execution>:<step>:<attempt>`, so a
//! re-run after a crash finds the job it already enqueued. While the job
//! runs the execution is WAITING: it holds no worker slot, and is woken to
//! look at the job's state with a backoff from 1 s to 30 s.
//!
//! ```json
//! {"id": "score", "type": "arq", "function": "compute_lead_score", "queue": "arq:queue",
//!  "args": ["{{contact.id}}"], "kwargs": {"plan": "{{contact.attributes.plan}}"}, "timeout": "1h"}
//! ```
//! The step's response is `{"result": <the function's return value>}`; a job
//! that raises fails the execution with the exception's text.

use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};

use super::{ActionError, Effects, ErrorClass, FieldError, Input, Next, Outcome, template};

const FIRST_POLL: Duration = Duration::from_secs(1);
const MAX_POLL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Configuration of an `arq` step.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArqJob {
    /// Function name registered on the external worker.
    pub function: String,
    /// Queue the external worker serves; default `arq:queue`.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Positional arguments (JSON templates).
    #[serde(default)]
    pub args: Vec<Json>,
    /// Keyword arguments (JSON templates).
    #[serde(default)]
    pub kwargs: Map<String, Json>,
    /// How long to wait for the result, e.g. `1h` (default).
    #[serde(default)]
    pub timeout: Option<String>,
}

fn default_queue() -> String {
    crate::queue::keys::DEFAULT_QUEUE.to_owned()
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueue {
    /// Queue name.
    pub queue: String,
    /// Job id (idempotent).
    pub job_id: String,
    /// Function name.
    pub function: String,
    /// Rendered positional arguments.
    pub args: Vec<Json>,
    /// Rendered keyword arguments.
    pub kwargs: Map<String, Json>,
}

/// Where an enqueued job is.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    /// Queued, deferred or running.
    Pending,
    /// Finished with a result.
    Done {
        /// Whether the function returned.
        success: bool,
        /// Its return value or error, as JSON.
        result: Json,
    },
    /// Neither queued nor finished: expired, or its result was not kept.
    Missing,
}

impl ArqJob {
    fn timeout(&self) -> Result<Duration, String> {
        self.timeout.as_deref().map_or(Ok(DEFAULT_TIMEOUT), |t| {
            humantime::parse_duration(t).map_err(|e| e.to_string())
        })
    }

    pub(super) fn validate(&self) -> Result<(), FieldError> {
        if self.function.trim().is_empty() {
            return Err(FieldError::new("function", "must not be empty"));
        }
        if self.queue.trim().is_empty() {
            return Err(FieldError::new("queue", "must not be empty"));
        }
        self.timeout().map_err(|m| FieldError::new("timeout", m))?;
        Ok(())
    }

    pub(super) async fn run(
        &self,
        input: &Input<'_>,
        fx: &impl Effects,
    ) -> Result<Outcome, ActionError> {
        let Some(state) = input.state else {
            let job_id = format!("flowpilot:{}", input.idempotency_key());
            fx.enqueue(&Enqueue {
                queue: self.queue.clone(),
                job_id: job_id.clone(),
                function: self.function.clone(),
                args: template::render_list(&self.args, input.scope)
                    .map_err(|e| ActionError::too_large("args", e))?,
                kwargs: template::render_map(&self.kwargs, input.scope)
                    .map_err(|e| ActionError::too_large("kwargs", e))?,
            })
            .await?;
            let timeout = self.timeout().map_err(ActionError::invalid_config)?;
            let deadline =
                input.now + ChronoDuration::from_std(timeout).unwrap_or(ChronoDuration::hours(1));
            return Ok(park(input.now, &job_id, deadline, FIRST_POLL));
        };
        let field = |k: &str| state.get(k).and_then(Json::as_str).map(str::to_owned);
        let (Some(job_id), Some(deadline)) = (field("job_id"), field("deadline")) else {
            return Err(ActionError::new(
                ErrorClass::Internal,
                "stored arq step state is incomplete",
            ));
        };
        let deadline = DateTime::parse_from_rfc3339(&deadline)
            .map_err(|e| ActionError::new(ErrorClass::Internal, format!("stored deadline: {e}")))?
            .with_timezone(&Utc);
        match fx.job_state(&self.queue, &job_id).await? {
            JobState::Done {
                success: true,
                result,
            } => Ok(Outcome::Done {
                response: json!({"job_id": job_id, "result": result}),
                next: Next::Following,
                change: None,
            }),
            JobState::Done {
                success: false,
                result,
            } => Err(ActionError::permanent(format!(
                "arq job {job_id} failed: {}",
                error_text(&result)
            ))),
            JobState::Missing => Err(ActionError::permanent(format!(
                "arq job {job_id} is gone without a result (expired, or the worker keeps no results)"
            ))),
            // Not retried: a new attempt would enqueue a second job while
            // the first may still run.
            JobState::Pending if input.now >= deadline => Err(ActionError::permanent(format!(
                "arq job {job_id} did not finish before its timeout"
            ))),
            JobState::Pending => {
                let last = state
                    .get("poll_ms")
                    .and_then(Json::as_u64)
                    .map_or(FIRST_POLL, Duration::from_millis);
                Ok(park(input.now, &job_id, deadline, (last * 2).min(MAX_POLL)))
            }
        }
    }
}

fn park(now: DateTime<Utc>, job_id: &str, deadline: DateTime<Utc>, poll: Duration) -> Outcome {
    let next = now + ChronoDuration::from_std(poll).unwrap_or(ChronoDuration::seconds(1));
    Outcome::Park {
        until: next.min(deadline.max(now)),
        reason: "arq_job",
        state: json!({"job_id": job_id, "deadline": deadline.to_rfc3339(), "poll_ms": poll.as_millis() as u64}),
    }
}

/// `ValueError('boom')` for an exception rendered by `Value::to_json`.
fn error_text(result: &Json) -> String {
    match (
        result.get("$class").and_then(Json::as_str),
        result.get("args"),
    ) {
        (Some(class), Some(Json::Array(args))) => {
            let name = class.rsplit('.').next().unwrap_or(class);
            let args: Vec<String> = args
                .iter()
                .map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_owned))
                .collect();
            format!("{name}: {}", args.join(", "))
        }
        _ => result
            .as_str()
            .map_or_else(|| result.to_string(), str::to_owned),
    }
}
