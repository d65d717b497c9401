//! The worker side of the protocol: claim due jobs and start them
//! (payload and try counter) in one round trip, finish them (result,
//! retry, release), abort requests and the health-check key.
//! `crate::worker` decides when to call these.

use std::time::Duration;

use redis::{FromRedisValue, Value};

use super::script::CLAIM;
use super::{Client, Finish, RETRY_COUNTER_TTL_S, Result, Started};
use crate::queue::keys;

/// A job a claim took and started.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The job id.
    pub id: String,
    /// Its score in the queue (when it was due, in ms).
    pub score: i64,
    /// What its start read.
    pub started: Started,
}

/// What is left of a queue after a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rest {
    /// The claim took all it wanted: more may be due.
    Wanted,
    /// It looked at as many due jobs as it was allowed without that:
    /// others hold them, more may be due behind.
    Held,
    /// No due job is left that no one holds.
    Drained,
}

/// What one [`Client::claim`] round trip read.
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// Per queue asked, in the order asked.
    pub claims: Vec<Claims>,
    /// Ids whose abort was requested, when asked for.
    pub aborts: Vec<String>,
}

/// What [`Client::claim`] got from one queue.
#[derive(Debug, Clone)]
pub struct Claims {
    /// The jobs claimed, oldest first.
    pub jobs: Vec<Claimed>,
    /// What is left.
    pub rest: Rest,
    /// When the next job not yet due comes due (ms), when the claim took
    /// fewer jobs than it wanted.
    pub next_due: Option<i64>,
}

impl Client {
    /// For each `(queue, wanted)`, takes the in-progress keys of up to
    /// `wanted` due jobs of `queue`, oldest first, for `ttl`, looking at no
    /// more than `scan` due jobs, and starts them (payload, try counter,
    /// pending abort), and with `aborts` reads the ids whose abort was
    /// requested first: one round trip for all of it.
    ///
    /// # Errors
    /// Redis errors, or a reply not of the script's shape.
    pub async fn claim(
        &self,
        wanted: &[(&str, usize)],
        scan: usize,
        now_ms: i64,
        ttl: Duration,
        aborts: bool,
    ) -> Result<Round> {
        if !aborts && wanted.is_empty() {
            return Ok(Round::default());
        }
        let mut pipe = redis::pipe();
        if aborts {
            pipe.cmd("ZRANGE").arg(keys::ABORT_SET).arg(0).arg(-1);
        }
        if !wanted.is_empty() {
            // Loaded in the same round trip: a pipelined script is not
            // loaded on demand as a lone invocation is.
            pipe.load_script(&CLAIM).ignore();
        }
        for (queue, n) in wanted {
            pipe.invoke_script(
                CLAIM
                    .key(*queue)
                    .key(keys::stats(queue, now_ms))
                    .key(keys::ABORT_SET)
                    .arg(now_ms)
                    .arg(*n)
                    .arg(scan)
                    .arg(ttl.as_millis() as i64)
                    .arg(keys::STATS_TTL_MS)
                    .arg(RETRY_COUNTER_TTL_S)
                    .arg(keys::IN_PROGRESS_PREFIX)
                    .arg(keys::JOB_PREFIX)
                    .arg(keys::RETRY_PREFIX),
            );
        }
        let mut replies: Vec<Value> = pipe.query_async(&mut self.conn()).await?;
        let aborts = if aborts {
            Vec::<String>::from_redis_value(replies.remove(0)).map_err(redis::RedisError::from)?
        } else {
            Vec::new()
        };
        let claims = replies
            .into_iter()
            .map(|r| claims(Vec::<Value>::from_redis_value(r).map_err(redis::RedisError::from)?))
            .collect::<Result<_>>()?;
        Ok(Round { claims, aborts })
    }

    /// How many jobs of each of `queues` are due at `now_ms` (held or not).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn due(&self, queues: &[String], now_ms: i64) -> Result<Vec<usize>> {
        let mut pipe = redis::pipe();
        for q in queues {
            pipe.cmd("ZCOUNT").arg(q).arg("(0").arg(now_ms);
        }
        Ok(pipe.query_async(&mut self.conn()).await?)
    }

    /// Waits on the wake channels of `queues` and calls `wake` for each
    /// announcement, until the connection fails (the caller reconnects).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn listen_wakeups(&self, queues: &[String], wake: impl Fn()) -> Result<()> {
        let channels: Vec<String> = queues.iter().map(|q| keys::wake(q)).collect();
        self.listen(&channels, || {}, |_| wake()).await
    }

    /// Overwrites the try counter with the payload's `_job_try`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn set_try(&self, id: &str, job_try: i64) -> Result<()> {
        redis::cmd("SETEX")
            .arg(keys::retry(id))
            .arg(RETRY_COUNTER_TTL_S)
            .arg(job_try.to_string())
            .query_async::<()>(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Ends a run (arq's `finish_job` / `finish_failed_job`) in one transaction.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn finish(&self, queue: &str, id: &str, how: Finish) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        match how {
            Finish::Done { result, keep } => {
                if let Some(bytes) = result {
                    pipe.cmd("SET").arg(keys::result(id)).arg(bytes);
                    if let Some(keep) = keep {
                        pipe.arg("PX").arg(keep.as_millis().max(1) as u64);
                    }
                    pipe.ignore();
                }
                pipe.cmd("ZREM").arg(keys::ABORT_SET).arg(id).ignore();
                pipe.cmd("ZREM").arg(queue).arg(id).ignore();
                pipe.cmd("DEL")
                    .arg(keys::in_progress(id))
                    .arg(keys::retry(id))
                    .arg(keys::job(id))
                    .ignore();
            }
            Finish::Retry { incr_ms, a_try } => {
                if let Some(incr) = incr_ms.filter(|i| *i != 0) {
                    pipe.cmd("ZINCRBY").arg(queue).arg(incr).arg(id).ignore();
                }
                if !a_try {
                    // The claim advanced the try counter; this was none.
                    pipe.cmd("DECR").arg(keys::retry(id)).ignore();
                }
                pipe.cmd("DEL").arg(keys::in_progress(id)).ignore();
            }
            Finish::Release => {
                pipe.cmd("DEL").arg(keys::in_progress(id)).ignore();
            }
        }
        pipe.query_async::<()>(&mut self.conn()).await?;
        Ok(())
    }

    /// Forgets abort requests for ids the worker has handled.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn clear_abort(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        redis::cmd("ZREM")
            .arg(keys::ABORT_SET)
            .arg(ids)
            .query_async::<()>(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Writes the health-check line of `queue` for `ttl`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn write_health(&self, queue: &str, line: &str, ttl: Duration) -> Result<()> {
        redis::cmd("PSETEX")
            .arg(keys::health_check(queue))
            .arg(ttl.as_millis() as u64)
            .arg(line)
            .query_async::<()>(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Removes the health-check key, as arq does on a clean close.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn clear_health(&self, queue: &str) -> Result<()> {
        redis::cmd("DEL")
            .arg(keys::health_check(queue))
            .query_async::<()>(&mut self.conn())
            .await?;
        Ok(())
    }
}

/// Reads one reply of the claim script.
fn claims(reply: Vec<Value>) -> Result<Claims> {
    fn read<T: FromRedisValue>(v: &Value) -> std::result::Result<T, redis::RedisError> {
        Ok(T::from_redis_value_ref(v)?)
    }
    fn score(v: &Value) -> std::result::Result<i64, redis::RedisError> {
        Ok(read::<f64>(v)? as i64)
    }
    let (head, jobs) = reply
        .split_at_checked(2)
        .filter(|(_, jobs)| jobs.len() % 5 == 0)
        .ok_or_else(|| {
            redis::RedisError::from(redis::ParsingError::from(
                "claim script reply of an unexpected shape".to_owned(),
            ))
        })?;
    let rest = match read::<i64>(&head[0])? {
        2 => Rest::Wanted,
        1 => Rest::Held,
        _ => Rest::Drained,
    };
    let next_due = match &head[1] {
        Value::Nil => None,
        v => Some(score(v)?),
    };
    let jobs = jobs
        .chunks_exact(5)
        .map(|j| {
            Ok(Claimed {
                id: read(&j[0])?,
                score: score(&j[1])?,
                started: Started {
                    payload: read(&j[2])?,
                    job_try: read(&j[3])?,
                    aborted: read::<i64>(&j[4])? > 0,
                },
            })
        })
        .collect::<std::result::Result<_, redis::RedisError>>()?;
    Ok(Claims {
        jobs,
        rest,
        next_due,
    })
}
