//! The worker side of the protocol: claim due jobs and start them
//! (payload and try counter) in one round trip, finish them (result,
//! retry, release), abort requests and the health-check key.
//! `crate::worker` decides when to call these.

use std::time::Duration;

use super::script::CLAIM;
use super::{Client, Finish, RETRY_COUNTER_TTL_S, Result, Started};
use crate::queue::keys;

impl Client {
    /// Takes the in-progress key of each of `ids` of `queue` for `ttl` and
    /// starts the job (payload, try counter, pending abort), in one round
    /// trip; `None` for those not claimed (another worker holds them, or
    /// they are no longer due).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn claim_many(
        &self,
        queue: &str,
        ids: &[String],
        now_ms: i64,
        ttl: Duration,
    ) -> Result<Vec<Option<Started>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        // Loaded in the same round trip: a pipelined script is not loaded
        // on demand as a lone invocation is.
        pipe.load_script(&CLAIM).ignore();
        let ttl_ms = ttl.as_millis() as i64;
        let stats = keys::stats(queue, now_ms);
        for id in ids {
            pipe.invoke_script(
                CLAIM
                    .key(keys::in_progress(id))
                    .key(queue)
                    .key(&stats)
                    .key(keys::job(id))
                    .key(keys::retry(id))
                    .key(keys::ABORT_SET)
                    .arg(id)
                    .arg(now_ms)
                    .arg(ttl_ms)
                    .arg(keys::STATS_TTL_MS)
                    .arg(RETRY_COUNTER_TTL_S),
            );
        }
        let claimed: Vec<(i64, Option<Vec<u8>>, i64, i64)> =
            pipe.query_async(&mut self.conn()).await?;
        Ok(claimed
            .into_iter()
            .map(|(won, payload, job_try, aborted)| {
                (won == 1).then_some(Started {
                    payload,
                    job_try,
                    aborted: aborted > 0,
                })
            })
            .collect())
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

    /// Ids whose abort was requested (the worker cancels those it runs).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn abort_requests(&self) -> Result<Vec<String>> {
        Ok(redis::cmd("ZRANGE")
            .arg(keys::ABORT_SET)
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await?)
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
