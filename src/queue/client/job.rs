//! What Python's `arq.jobs.Job` asks of a job by id: its status, its
//! result (once, or waiting for it), its info.

use std::time::Duration;

use super::{Client, JobInfo, JobStatus, Result, now_ms};
use crate::queue::codec::{Job, JobResult};
use crate::queue::keys;

impl Client {
    /// `Job.status()`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn status(&self, queue: &str, id: &str) -> Result<JobStatus> {
        let (has_result, in_progress, score): (bool, bool, Option<f64>) = redis::pipe()
            .atomic()
            .cmd("EXISTS")
            .arg(keys::result(id))
            .cmd("EXISTS")
            .arg(keys::in_progress(id))
            .cmd("ZSCORE")
            .arg(queue)
            .arg(id)
            .query_async(&mut self.conn())
            .await?;
        Ok(match (has_result, in_progress, score) {
            (true, _, _) => JobStatus::Complete,
            (_, true, _) => JobStatus::InProgress,
            (_, _, Some(s)) if s != 0.0 && s as i64 > now_ms() => JobStatus::Deferred,
            (_, _, Some(s)) if s != 0.0 => JobStatus::Queued,
            _ => JobStatus::NotFound,
        })
    }

    /// The stored result of `id`, if any (`Job.result()` without the polling).
    ///
    /// # Errors
    /// Redis errors; [`Error::Codec`] when the stored bytes are not a result.
    pub async fn result(&self, id: &str) -> Result<Option<JobResult>> {
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(keys::result(id))
            .query_async(&mut self.conn())
            .await?;
        Ok(bytes.map(|b| JobResult::decode(&b)).transpose()?)
    }

    /// Waits for the result of `id`, polling every `poll`, as `Job.result()`
    /// does; `None` when the job is neither finished nor queued any more,
    /// or `timeout` passes.
    ///
    /// # Errors
    /// Redis and codec errors.
    pub async fn wait_result(
        &self,
        queue: &str,
        id: &str,
        poll: Duration,
        timeout: Duration,
    ) -> Result<Option<JobResult>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (bytes, score): (Option<Vec<u8>>, Option<f64>) = redis::pipe()
                .atomic()
                .cmd("GET")
                .arg(keys::result(id))
                .cmd("ZSCORE")
                .arg(queue)
                .arg(id)
                .query_async(&mut self.conn())
                .await?;
            if let Some(b) = bytes {
                return Ok(Some(JobResult::decode(&b)?));
            }
            if score.is_none() || tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// `Job.info()`.
    ///
    /// # Errors
    /// Redis and codec errors.
    pub async fn info(&self, queue: &str, id: &str) -> Result<Option<JobInfo>> {
        let (result, job, score): (Option<Vec<u8>>, Option<Vec<u8>>, Option<f64>) = redis::pipe()
            .atomic()
            .cmd("GET")
            .arg(keys::result(id))
            .cmd("GET")
            .arg(keys::job(id))
            .cmd("ZSCORE")
            .arg(queue)
            .arg(id)
            .query_async(&mut self.conn())
            .await?;
        let score = score.map(|s| s as i64);
        if let Some(r) = result {
            let r = JobResult::decode(&r)?;
            return Ok(Some(JobInfo {
                job: r.job.clone(),
                result: Some(r),
                score,
            }));
        }
        Ok(match job {
            Some(j) => Some(JobInfo {
                job: Job::decode(&j)?,
                result: None,
                score,
            }),
            None => None,
        })
    }
}
