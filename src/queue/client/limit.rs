//! Rate limits in Redis: GCRA buckets shared by every worker, with
//! reservations, so a caller over its budget is given the time of a slot
//! of its own instead of a "try again" that a crowd of waiters would race
//! for.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{Client, Result};

/// One budget a call draws on.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Its key (`<prefix>:limit:<account>:email`).
    pub key: String,
    /// Time one call takes from it.
    pub interval: Duration,
    /// Calls that may go at once.
    pub burst: u32,
}

/// Reserve the earliest time every bucket admits a call, and take that
/// slot in each. GCRA: a bucket's value is its theoretical arrival time
/// (TAT, ms); a call at `t` fits when `max(tat, t) + T - t <= T * burst`
/// and moves the TAT to `max(tat, t) + T`. The clock is Redis's own, so
/// workers' clocks do not matter. Returns the wait in µs (0: go now).
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: buckets   ARGV: per bucket, interval µs then burst
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local at = now
local tats = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or 0)
  tats[i] = tat
  local earliest = tat + interval - interval * burst
  if earliest > at then at = earliest end
end
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local tat = tats[i]
  if tat < at then tat = at end
  tat = tat + interval
  redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
return math.floor(at - now)
",
    )
});

/// Take a call's place in one bucket if it fits now; leave the bucket
/// alone if not (the call is not refused, it is treated differently).
static CONFORM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: bucket   ARGV: interval µs, burst
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0)
if tat < now then tat = now end
if tat + interval - now > interval * tonumber(ARGV[2]) then return 0 end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
return 1
",
    )
});

impl Client {
    /// Whether one more call fits `bucket` now; one that fits takes its
    /// place, one that does not leaves the bucket as it was.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn conform(&self, bucket: &Bucket) -> Result<bool> {
        let fits: i64 = CONFORM
            .key(&bucket.key)
            .arg(bucket.interval.as_micros() as u64)
            .arg(bucket.burst.max(1))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(fits == 1)
    }

    /// Takes a slot in every one of `buckets` at the earliest time all
    /// admit a call; returns how long until then (zero: now). The slot is
    /// the caller's: it calls at that time without asking again.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn reserve(&self, buckets: &[Bucket]) -> Result<Duration> {
        if buckets.is_empty() {
            return Ok(Duration::ZERO);
        }
        let mut script = RESERVE.prepare_invoke();
        for b in buckets {
            script
                .key(&b.key)
                .arg(b.interval.as_micros() as u64)
                .arg(b.burst.max(1));
        }
        let wait_us: i64 = script.invoke_async(&mut self.conn()).await?;
        Ok(Duration::from_micros(wait_us.max(0) as u64))
    }
}
