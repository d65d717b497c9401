//! Redis key names of the ARQ protocol (`PROTOCOL.md` §1); the only place
//! they are spelled.
//!
//! Job, result, in-progress and retry keys are global: a job id must be
//! unique across every queue sharing the Redis database. Only the queue key
//! and its health-check key depend on the queue name.

/// arq's default queue (`arq.constants.default_queue_name`): where Python
/// arq workers started with defaults look, so where `arq` steps send their
/// jobs by default. Never one of flowpilot's own queues.
pub const DEFAULT_QUEUE: &str = "arq:queue";
/// flowpilot's normal-priority queue and the prefix of its others
/// (`flowpilot:queue:high`, `flowpilot:queue:low`, `flowpilot:queue:dead`).
/// Apart from [`DEFAULT_QUEUE`] so that a Python arq worker started with
/// defaults never takes (and fails) `run_execution` jobs.
pub const FLOWPILOT_QUEUE: &str = "flowpilot:queue";
/// Sorted set of job ids whose abort was requested, scored by request time.
pub const ABORT_SET: &str = "arq:abort";

pub(crate) const JOB_PREFIX: &str = "arq:job:";
pub(crate) const IN_PROGRESS_PREFIX: &str = "arq:in-progress:";
const RESULT_PREFIX: &str = "arq:result:";
pub(crate) const RETRY_PREFIX: &str = "arq:retry:";
const HEALTH_CHECK_SUFFIX: &str = ":health-check";

/// `<prefix>:high`: real-time triggers (`flowpilot:queue:high` by default).
pub fn high_queue(prefix: &str) -> String {
    format!("{prefix}:high")
}

/// `<prefix>:low`: bulk work (`flowpilot:queue:low` by default).
pub fn low_queue(prefix: &str) -> String {
    format!("{prefix}:low")
}

/// flowpilot's own queues under `prefix`, highest priority first: what a
/// worker serves by default and what queue health and alerts watch.
pub fn priority_queues(prefix: &str) -> Vec<String> {
    vec![high_queue(prefix), prefix.to_owned(), low_queue(prefix)]
}

/// Width of one bucket of [`stats`], in ms.
pub const STATS_BUCKET_MS: i64 = 10_000;
/// Lifetime of a [`stats`] bucket: the minute rates are read over, plus
/// the bucket being filled, plus slack.
pub const STATS_TTL_MS: i64 = 80_000;

/// `<queue>:stats:<n>`: a hash counting the jobs flowpilot enqueued
/// (`enqueued`) and its workers claimed (`dequeued`) on `queue` during
/// the ten-second bucket `n` (`at_ms / 10 000`). Written inside the enqueue
/// and claim scripts, read by queue health; expires after 80 s.
pub fn stats(queue: &str, at_ms: i64) -> String {
    format!("{queue}:stats:{}", at_ms.div_euclid(STATS_BUCKET_MS))
}

/// `<prefix>:dead`: executions that failed for good, scored by when
/// (`flowpilot:queue:dead` by default).
pub fn dead_queue(prefix: &str) -> String {
    format!("{prefix}:dead")
}

/// `<queue>:wake`: the pub/sub channel flowpilot's enqueue announces a job
/// due now on, so idle flowpilot workers claim it at once instead of at
/// their next poll.
pub fn wake(queue: &str) -> String {
    format!("{queue}:wake")
}

/// `<prefix>:breaker:<provider>`: the circuit breaker of one provider
/// (`flowpilot:queue:breaker:webhook:crm.example.com:443`), shared by every
/// worker of the installation.
pub fn breaker(prefix: &str, provider: &str) -> String {
    format!("{prefix}:breaker:{provider}")
}

/// `<prefix>:breakers:opened`: a sorted set of the breaker keys that
/// opened (scored by when), so that listing the breakers not closed needs
/// no scan of the keyspace; closed ones leave it as they are listed.
pub fn breakers_opened(prefix: &str) -> String {
    format!("{prefix}:breakers:opened")
}

/// `<prefix>:invalidate`: the pub/sub channel a change to something
/// processes cache (`workflow:<id>`, `limits:<account>`) is announced on.
pub fn invalidate(prefix: &str) -> String {
    format!("{prefix}:invalidate")
}

/// `<prefix>:limit:<account>:<budget>`: the GCRA bucket of one account's
/// budget (`account`, `email`, `sms`, `webhook:<host>`), shared by every
/// worker of the installation.
pub fn limit(prefix: &str, account: &str, budget: &str) -> String {
    format!("{prefix}:limit:{account}:{budget}")
}

/// `<prefix>:running:<account>`: the permits of an account's cap of
/// running executions (and `...:waiting`, the jobs in line for one).
pub fn running(prefix: &str, account: &str) -> String {
    format!("{prefix}:running:{account}")
}

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
