//! One claimed job, run to its end: read its payload, call its function
//! under its timeout and abort token, write the result arq expects.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::function::{self, Args, JobContext, JobError};
use super::{Outcome, Shared};
use crate::queue::{self, Claimed, Finish, Job, JobResult, Serializer, Started, Value, now_ms};

/// What a run is recorded as when the result is written.
struct Record {
    job: Job,
    job_try: i64,
    start_ms: i64,
    /// The serializer of the job payload, so that the producer, which reads
    /// the result with its own deserializer, can read it; the configured one
    /// when the payload is missing or unreadable.
    serializer: Serializer,
}

/// One of the worker's `max_jobs` slots, held while a job's function
/// runs. The job's result is written after it is given back, so the next
/// claim need not wait for that round trip. Giving it back wakes the poll
/// loop when the last poll left ready jobs for want of a slot.
pub(super) struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    shared: Arc<Shared>,
}

impl Slot {
    pub(super) fn new(permit: OwnedSemaphorePermit, shared: Arc<Shared>) -> Slot {
        if let Some(m) = &shared.metrics {
            m.busy.inc();
        }
        Slot {
            permit: Some(permit),
            shared,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Freed before the wake-up, so that the poll it wakes finds it.
        drop(self.permit.take());
        if let Some(m) = &self.shared.metrics {
            m.busy.dec();
        }
        if self.shared.starved.swap(false, Ordering::Relaxed) {
            self.shared.wake.notify_one();
        }
    }
}

/// Runs one claimed job to its end; never fails: Redis errors are logged and
/// leave the job to be re-claimed when its in-progress key expires.
pub(super) async fn run_job(
    shared: &Shared,
    queue: &str,
    job: Claimed,
    abort: &CancellationToken,
    slot: Slot,
) -> Outcome {
    let Claimed { id, score, started } = job;
    match try_run_job(shared, queue, &id, score, started, abort, slot).await {
        Ok(outcome) => outcome,
        Err(e) => {
            warn!(error = %e, "job bookkeeping failed; it will be re-claimed");
            Outcome::Retried
        }
    }
}

async fn try_run_job(
    shared: &Shared,
    queue: &str,
    id: &str,
    score: i64,
    started: Started,
    abort: &CancellationToken,
    slot: Slot,
) -> queue::Result<Outcome> {
    let client = &shared.client;
    let settings = &shared.settings;
    let start_ms = now_ms();
    let mut rec = Record {
        job: Job {
            function: "<unknown>".into(),
            args: Vec::new(),
            kwargs: Vec::new(),
            job_try: None,
            enqueue_time_ms: 0,
        },
        job_try: started.job_try,
        start_ms,
        serializer: client.serializer(),
    };
    let fail_before_run = |rec: Record, exc: Value| async move {
        debug!(function = %rec.job.function, "job failed before running");
        finish(shared, queue, id, rec, false, exc, settings.keep_result).await?;
        Ok(Outcome::Failed)
    };

    let Some(payload) = started.payload else {
        warn!("job expired");
        return fail_before_run(
            rec,
            Value::exception(function::JOB_EXECUTION_FAILED, "job expired"),
        )
        .await;
    };
    rec.job = match Job::decode(&payload) {
        Ok(job) => {
            rec.serializer = Serializer::detect(&payload);
            job
        }
        Err(e) => {
            warn!(error = %e, "undecodable job payload");
            let exc =
                Value::exception("arq.jobs.DeserializationError", "unable to deserialize job");
            return fail_before_run(rec, exc).await;
        }
    };
    if started.aborted {
        info!("job aborted before start");
        return fail_before_run(rec, cancelled_error()).await;
    }
    let Some(function) = shared.registry.get(&rec.job.function) else {
        warn!(function = %rec.job.function, "function not found");
        let msg = format!("function {} not found", python_repr(&rec.job.function));
        return fail_before_run(rec, Value::exception(function::JOB_EXECUTION_FAILED, msg)).await;
    };
    if let Some(t) = rec.job.job_try.filter(|t| *t > rec.job_try) {
        rec.job_try = t;
        client.set_try(id, t).await?;
    }
    let max_tries = function.max_tries.unwrap_or(settings.max_tries);
    if rec.job_try > max_tries {
        warn!(max_tries, "max retries exceeded");
        let msg = format!("max {max_tries} retries exceeded");
        return fail_before_run(rec, Value::exception(function::JOB_EXECUTION_FAILED, msg)).await;
    }

    let ctx = JobContext {
        job_id: id.to_owned(),
        job_try: rec.job_try,
        enqueue_time_ms: rec.job.enqueue_time_ms,
        score,
        queue: queue.to_owned(),
    };
    let args = Args {
        args: rec.job.args.clone(),
        kwargs: rec.job.kwargs.clone(),
    };
    let timeout = function.timeout.unwrap_or(settings.job_timeout);
    let keep = function.keep_result.unwrap_or(settings.keep_result);
    rec.start_ms = now_ms();
    debug!(function = %rec.job.function, job_try = rec.job_try, "job started");
    // The function runs in its own task so that a panic fails the job
    // instead of the worker, and so that dropping it cancels it.
    let mut call = tokio::spawn(function.call(ctx, args));
    let ran = tokio::select! {
        r = tokio::time::timeout(timeout, &mut call) => r,
        () = abort.cancelled() => {
            call.abort();
            info!("job aborted while running");
            finish(shared, queue, id, rec, false, cancelled_error(), keep).await?;
            return Ok(Outcome::Failed);
        }
        () = shared.cut_off.cancelled() => {
            call.abort();
            info!("job cut off by shutdown; released for re-run");
            client.finish(queue, id, Finish::Release).await?;
            return Ok(Outcome::Retried);
        }
    };
    drop(slot);
    match ran {
        Ok(Ok(Ok(value))) => {
            debug!("job complete");
            finish(shared, queue, id, rec, true, value, keep).await?;
            Ok(Outcome::Complete)
        }
        Ok(Ok(Err(JobError::Retry { defer }))) => {
            let incr_ms = defer.map(|d| d.as_millis() as i64 + (now_ms() - score));
            debug!(
                defer_ms = defer.map(|d| d.as_millis() as u64),
                "job retry requested"
            );
            let a_try = true;
            client
                .finish(queue, id, Finish::Retry { incr_ms, a_try })
                .await?;
            Ok(Outcome::Retried)
        }
        Ok(Ok(Err(JobError::Defer { defer }))) => {
            let incr_ms = Some(defer.as_millis() as i64 + (now_ms() - score));
            debug!(defer_ms = defer.as_millis() as u64, "job deferred");
            let a_try = false;
            client
                .finish(queue, id, Finish::Retry { incr_ms, a_try })
                .await?;
            Ok(Outcome::Deferred)
        }
        Ok(Ok(Err(JobError::Failed { class, message }))) => {
            debug!(%class, %message, "job failed");
            finish(
                shared,
                queue,
                id,
                rec,
                false,
                Value::exception(class, message),
                keep,
            )
            .await?;
            Ok(Outcome::Failed)
        }
        Ok(Err(join)) => {
            warn!(error = %join, "job panicked");
            let exc = Value::exception(function::RUNTIME_ERROR, "job panicked");
            finish(shared, queue, id, rec, false, exc, keep).await?;
            Ok(Outcome::Failed)
        }
        Err(_elapsed) => {
            call.abort();
            warn!(timeout_s = timeout.as_secs_f64(), "job timed out");
            let exc = Value::Object {
                class: "builtins.TimeoutError".into(),
                args: Vec::new(),
                state: None,
            };
            finish(shared, queue, id, rec, false, exc, keep).await?;
            Ok(Outcome::Failed)
        }
    }
}

/// Stores the result (unless results are not kept) and removes the job.
async fn finish(
    shared: &Shared,
    queue: &str,
    id: &str,
    rec: Record,
    success: bool,
    result: Value,
    keep: Option<Duration>,
) -> queue::Result<()> {
    let stored = keep.is_none_or(|k| !k.is_zero());
    let bytes = if stored {
        let mut job = rec.job;
        job.job_try = Some(rec.job_try);
        let mut r = JobResult {
            job,
            success,
            result,
            start_ms: rec.start_ms,
            finish_ms: now_ms(),
            queue: Some(queue.to_owned()),
            job_id: Some(id.to_owned()),
        };
        // Arguments that only pickle carries cannot be echoed in another
        // format; the result still records the outcome without them.
        Some(r.encode(rec.serializer).or_else(|_| {
            r.job.args.clear();
            r.job.kwargs.clear();
            r.encode(rec.serializer)
        })?)
    } else {
        None
    };
    shared
        .client
        .finish(
            queue,
            id,
            Finish::Done {
                result: bytes,
                keep,
            },
        )
        .await
}

fn cancelled_error() -> Value {
    Value::Object {
        class: "asyncio.exceptions.CancelledError".into(),
        args: Vec::new(),
        state: None,
    }
}

/// Python's `repr()` of a str, as arq's `{function_name!r}` prints it.
fn python_repr(s: &str) -> String {
    if s.contains('\'') && !s.contains('"') {
        format!("\"{s}\"")
    } else {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_are_quoted_as_python_repr_quotes_them() {
        assert_eq!(python_repr("not_registered"), "'not_registered'");
        assert_eq!(python_repr("it's"), "\"it's\"");
    }
}
