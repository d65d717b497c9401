//! Caps of running executions per account: a counting semaphore in Redis
//! whose permits are held by jobs, with a line of jobs waiting for one.
//!
//! `<prefix>:running:<account>` holds the permits: a sorted set of
//! `<queue>\n<job id>` scored by when the permit lapses (a worker that died
//! holding one gives it back by the clock). `<prefix>:running:<account>:waiting`
//! holds the jobs turned away, scored by when they were. A job given back
//! hands its permit to the job waiting longest (the line's order) and makes
//! that job due now in its queue, announcing it on the queue's wake
//! channel: a waiting run starts as soon as a permit frees, not when its own
//! deferral ends. The clock is Redis's own.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{Client, Result};
use crate::queue::keys;

/// A job turned away only just now may still be on its worker, which is
/// about to push it back by its deferral: the line hands permits only to
/// jobs that have waited this long (the others wake at their deferral).
const SETTLED_MS: u64 = 200;

/// Takes a permit for a job: KEYS permits, line; ARGV member, cap, hold ms.
/// Returns 1 (held: taken now, or handed over while it waited) or 0 (in
/// line).
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local hold = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1])
   or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + hold, ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('PEXPIRE', KEYS[1], hold)
  return 1
end
redis.call('ZADD', KEYS[2], 'NX', now, ARGV[1])
redis.call('PEXPIRE', KEYS[2], hold)
return 0
",
    )
});

/// Holds a job's permit for another `hold` ms: KEYS permits; ARGV member,
/// hold ms. Returns 0 when the permit had lapsed (it is not taken again:
/// that is [`TAKE`]'s, with the cap and the line).
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local hold = tonumber(ARGV[2])
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then return 0 end
redis.call('ZADD', KEYS[1], now + hold, ARGV[1])
redis.call('PEXPIRE', KEYS[1], hold)
return 1
",
    )
});

/// Gives a job's permit back and hands free permits to the jobs waiting
/// longest: KEYS permits, line; ARGV member, cap, hold ms, settled ms.
/// Returns how many were handed over.
static GIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local hold = tonumber(ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local handed = 0
while redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) do
  local next = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[4]), 'LIMIT', 0, 1)[1]
  if not next then break end
  redis.call('ZREM', KEYS[2], next)
  local cut = string.find(next, '\n', 1, true)
  local queue, id = string.sub(next, 1, cut - 1), string.sub(next, cut + 1)
  -- A job no longer queued (cancelled, run elsewhere) takes nothing.
  if redis.call('ZSCORE', queue, id) then
    redis.call('ZADD', KEYS[1], now + hold, next)
    redis.call('ZADD', queue, now, id)
    redis.call('PUBLISH', queue .. ':wake', '1')
    handed = handed + 1
  end
end
return handed
",
    )
});

/// A job's place in its account's cap: the keys and the member.
#[derive(Debug, Clone)]
pub struct RunningSlot {
    permits: String,
    line: String,
    member: String,
}

impl RunningSlot {
    /// The place of job `job_id` of `queue` under account `account`'s cap
    /// (queue prefix `prefix`).
    pub fn new(prefix: &str, account: &str, queue: &str, job_id: &str) -> Self {
        let permits = keys::running(prefix, account);
        RunningSlot {
            line: format!("{permits}:waiting"),
            permits,
            member: format!("{queue}\n{job_id}"),
        }
    }
}

impl Client {
    /// Takes a permit of at most `cap` for `slot`'s job, held for `hold`
    /// unless given back: `false` puts the job in line for the next one.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn take_running(&self, slot: &RunningSlot, cap: u32, hold: Duration) -> Result<bool> {
        let held: i64 = TAKE
            .key(&slot.permits)
            .key(&slot.line)
            .arg(&slot.member)
            .arg(cap)
            .arg(hold.as_millis().max(1) as u64)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(held == 1)
    }

    /// Holds `slot`'s permit for another `hold`; `false` when it had
    /// lapsed.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn renew_running(&self, slot: &RunningSlot, hold: Duration) -> Result<bool> {
        let held: i64 = RENEW
            .key(&slot.permits)
            .arg(&slot.member)
            .arg(hold.as_millis().max(1) as u64)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(held == 1)
    }

    /// Gives `slot`'s permit back and hands the free ones to the jobs in
    /// line (due now in their queues); returns how many were handed over.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn give_running(&self, slot: &RunningSlot, cap: u32, hold: Duration) -> Result<u64> {
        Ok(GIVE
            .key(&slot.permits)
            .key(&slot.line)
            .arg(&slot.member)
            .arg(cap)
            .arg(hold.as_millis().max(1) as u64)
            .arg(SETTLED_MS)
            .invoke_async(&mut self.conn())
            .await?)
    }
}
