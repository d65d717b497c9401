//! `Client`: every Redis command of the ARQ protocol, producer and worker side.
//!
//! Each operation keeps the checks arq makes (`PROTOCOL.md` §2-§8). Where
//! arq uses WATCH/MULTI/EXEC on a dedicated connection we use a Lua script
//! doing the same checks atomically, which lets every call share one
//! multiplexed connection; Python's WATCH-based clients interoperate with
//! either. The worker loop in `crate::worker` decides *when* to call these.

mod breaker;
mod health;
mod job;
mod limit;
mod pubsub;
mod running;
mod script;
mod worker;

pub use breaker::{Admission, BreakerPolicy, BreakerState};
pub use health::Health;
pub use limit::Bucket;
pub use running::RunningSlot;
pub use worker::{Claimed, Claims, Rest, Round};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;

use script::{ABORT, ENQUEUE};

use super::codec::{self, Job, JobResult, Serializer};
use super::keys;
use super::value::Value;

/// Lifetime of a job key past its run time when no `expires` is given
/// (arq's `expires_extra_ms`, one day).
pub const JOB_TTL_EXTRA_MS: i64 = 86_400_000;
/// Expiry of the retry counter, in **seconds** (arq writes 88 400, sic).
pub const RETRY_COUNTER_TTL_S: i64 = 88_400;

/// Errors of the queue layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis refused or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A payload could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] codec::Error),
    /// An enqueue option is out of range.
    #[error("invalid enqueue option `{field}`: {problem}")]
    Option {
        /// The option (`defer_until`, `expires`, ...).
        field: &'static str,
        /// Why it is refused.
        problem: &'static str,
    },
}

/// Local result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// When an enqueued job becomes runnable.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Defer {
    /// Now.
    #[default]
    No,
    /// This long after enqueue (`_defer_by`).
    By(Duration),
    /// At this Unix time in ms (`_defer_until`).
    UntilMs(i64),
}

/// Options of [`Client::enqueue`], arq's underscore arguments.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    /// `_job_id`: a fixed id makes the enqueue idempotent; default a uuid4 hex.
    pub job_id: Option<String>,
    /// `_queue_name`: default [`keys::DEFAULT_QUEUE`].
    pub queue: Option<String>,
    /// `_defer_by` / `_defer_until`.
    pub defer: Defer,
    /// `_expires`: job key lifetime; default run time + one day.
    pub expires: Option<Duration>,
    /// `_job_try`: start the try counter here.
    pub job_try: Option<i64>,
}

/// What [`Client::start`] read when a claimed job begins.
#[derive(Debug, Clone)]
pub struct Started {
    /// The job payload; `None` when the job key expired.
    pub payload: Option<Vec<u8>>,
    /// This run's try number (the retry counter after INCR).
    pub job_try: i64,
    /// Whether an abort was requested before the start.
    pub aborted: bool,
}

/// `Job.status()` of arq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// A result exists.
    Complete,
    /// A worker holds it.
    InProgress,
    /// Queued with a run time in the future.
    Deferred,
    /// Queued and due.
    Queued,
    /// Unknown id, or its result expired.
    NotFound,
}

/// `Job.info()` of arq: the result if there is one, else the job payload,
/// plus the current queue score.
#[derive(Debug, Clone)]
pub struct JobInfo {
    /// The job as enqueued (or as it ran, when finished).
    pub job: Job,
    /// The result, once there is one.
    pub result: Option<JobResult>,
    /// Queue score (run time in ms) while queued.
    pub score: Option<i64>,
}

/// Whether a job will still run, as recovery must know before it adds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Its payload and its queue entry are there: a worker will run it.
    Queued,
    /// A worker holds it (its in-progress key is there).
    Running,
    /// It will not run: finished (maybe before running, leaving a result
    /// key), expired, flushed, or only half there.
    Gone,
}

/// How a finished run leaves the job (arq's `finish_job` branches).
#[derive(Debug, Clone)]
pub enum Finish {
    /// Done, successfully or not: store the result (if any) for `keep`
    /// (`None` = forever) and remove the job.
    Done {
        /// Serialized result; `None` when the function keeps no result.
        result: Option<Vec<u8>>,
        /// Result lifetime.
        keep: Option<Duration>,
    },
    /// `Retry`: keep the job; move its score by `incr_ms` (none: unchanged).
    Retry {
        /// Added to the score: `defer + (now - score)`.
        incr_ms: Option<i64>,
        /// Whether the run counts as a try (arq's `Retry` does; a job that
        /// did not run, waiting for its account's cap, does not).
        a_try: bool,
    },
    /// Cut off by shutdown: only release the in-progress key, so the job
    /// runs again at its old score.
    Release,
}

/// The current Unix time in ms, as arq's `timestamp_ms()`.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A handle on one Redis database speaking ARQ. Cheap to clone: clones share
/// one multiplexed, self-reconnecting connection.
#[derive(Clone)]
pub struct Client {
    conn: ConnectionManager,
    /// For connections of their own (pub/sub).
    redis: redis::Client,
    /// What enqueue and results are written with; reads accept all three.
    serializer: Serializer,
}

impl Client {
    /// Connects to `url` (`redis://host:port/db`).
    ///
    /// # Errors
    /// When the URL is invalid or Redis is unreachable.
    pub async fn connect(url: &str, serializer: Serializer) -> Result<Self> {
        let redis = redis::Client::open(url)?;
        let conn = ConnectionManager::new(redis.clone()).await?;
        Ok(Client {
            conn,
            redis,
            serializer,
        })
    }

    /// The serializer payloads are written with.
    pub fn serializer(&self) -> Serializer {
        self.serializer
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// `PING`, for readiness checks.
    ///
    /// # Errors
    /// When Redis does not answer.
    pub async fn ping(&self) -> Result<()> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Enqueues `function(*args, **kwargs)` as `enqueue_job` does. Returns
    /// the job id, or `None` when a job or result with that id already
    /// exists (nothing is written then).
    ///
    /// # Errors
    /// [`Error::Option`] for a run time more than a day in the past or a
    /// zero expiry (arq would write a queue entry with no job), codec and
    /// Redis errors.
    pub async fn enqueue(
        &self,
        function: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
        opts: EnqueueOptions,
    ) -> Result<Option<String>> {
        let id = opts
            .job_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let queue = opts.queue.as_deref().unwrap_or(keys::DEFAULT_QUEUE);
        let now = now_ms();
        let score = match opts.defer {
            Defer::No => now,
            Defer::By(d) => now + d.as_millis() as i64,
            Defer::UntilMs(ms) => ms,
        };
        if score <= 0 {
            return Err(Error::Option {
                field: "defer_until",
                problem: "must be after the Unix epoch",
            });
        }
        let ttl = match opts.expires {
            Some(e) => e.as_millis() as i64,
            None => score - now + JOB_TTL_EXTRA_MS,
        };
        if ttl <= 0 {
            return Err(Error::Option {
                field: if opts.expires.is_some() {
                    "expires"
                } else {
                    "defer_until"
                },
                problem: "the job would expire before it could run",
            });
        }
        let payload = Job {
            function: function.to_owned(),
            args,
            kwargs,
            job_try: opts.job_try,
            enqueue_time_ms: now,
        }
        .encode(self.serializer)?;
        let added: i64 = ENQUEUE
            .key(keys::job(&id))
            .key(keys::result(&id))
            .key(queue)
            .key(keys::wake(queue))
            .key(keys::stats(queue, now))
            .arg(ttl)
            .arg(payload)
            .arg(score)
            .arg(&id)
            .arg(u8::from(score <= now))
            .arg(keys::STATS_TTL_MS)
            .invoke_async(&mut self.conn())
            .await?;
        Ok((added == 1).then_some(id))
    }

    /// Where each of `ids` (jobs of `queue`) stands, in one round trip.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn presence(&self, queue: &str, ids: &[String]) -> Result<Vec<Presence>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("EXISTS").arg(keys::in_progress(id));
            pipe.cmd("EXISTS").arg(keys::job(id));
            pipe.cmd("ZSCORE").arg(queue).arg(id);
        }
        let rows: Vec<(bool, bool, Option<f64>)> = pipe.query_async(&mut self.conn()).await?;
        Ok(rows
            .into_iter()
            .map(
                |(running, payload, score)| match (running, payload, score) {
                    (true, _, _) => Presence::Running,
                    (false, true, Some(_)) => Presence::Queued,
                    _ => Presence::Gone,
                },
            )
            .collect())
    }

    /// Requests an abort as `Job.abort()` does (without waiting for the result).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn abort(&self, queue: &str, id: &str) -> Result<()> {
        ABORT
            .key(queue)
            .key(keys::ABORT_SET)
            .arg(id)
            .arg(now_ms())
            .invoke_async::<i64>(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Adds `member` to the dead-letter sorted set `dead_set`
    /// (`flowpilot:queue:dead`), scored by the time it died.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn mark_dead(&self, dead_set: &str, member: &str, at_ms: i64) -> Result<()> {
        redis::cmd("ZADD")
            .arg(dead_set)
            .arg(at_ms)
            .arg(member)
            .query_async::<()>(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Total entries of `queue` (`ZCARD`), deferred ones included.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn queued(&self, queue: &str) -> Result<u64> {
        Ok(redis::cmd("ZCARD")
            .arg(queue)
            .query_async(&mut self.conn())
            .await?)
    }
}
