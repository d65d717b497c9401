//! Redis key names of the ARQ protocol (`PROTOCOL.md` §1); the only place
//! they are spelled.
//!
//! Job, result, in-progress and retry keys are global: a job id must be
//! unique across every queue sharing the Redis database. Only the queue key
//! and its health-check key depend on the queue name.

/// arq's default queue (`arq.constants.default_queue_name`); our normal priority.
pub const DEFAULT_QUEUE: &str = "arq:queue";
/// High priority queue: real-time triggers.
pub const HIGH_QUEUE: &str = "arq:queue:high";
/// Low priority queue: bulk work.
pub const LOW_QUEUE: &str = "arq:queue:low";
/// Sorted set of executions that exhausted their retries (DESIGN.md).
pub const DEAD_QUEUE: &str = "arq:queue:dead";
/// Sorted set of job ids whose abort was requested, scored by request time.
pub const ABORT_SET: &str = "arq:abort";

const JOB_PREFIX: &str = "arq:job:";
const IN_PROGRESS_PREFIX: &str = "arq:in-progress:";
const RESULT_PREFIX: &str = "arq:result:";
const RETRY_PREFIX: &str = "arq:retry:";
const HEALTH_CHECK_SUFFIX: &str = ":health-check";

/// `arq:job:<id>`: the serialized job payload.
pub fn job(id: &str) -> String {
    format!("{JOB_PREFIX}{id}")
}

/// `arq:in-progress:<id>`: set while a worker holds the job.
pub fn in_progress(id: &str) -> String {
    format!("{IN_PROGRESS_PREFIX}{id}")
}

/// `arq:result:<id>`: the serialized result payload.
pub fn result(id: &str) -> String {
    format!("{RESULT_PREFIX}{id}")
}

/// `arq:retry:<id>`: the try counter.
pub fn retry(id: &str) -> String {
    format!("{RETRY_PREFIX}{id}")
}

/// `<queue>:health-check`: the worker's liveness line.
pub fn health_check(queue: &str) -> String {
    format!("{queue}{HEALTH_CHECK_SUFFIX}")
}
