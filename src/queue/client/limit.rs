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

/// A start within its account's fair share takes its place in the rate
/// bucket (GCRA, as [`RESERVE`]) and one of the account's places for
/// starts waiting for a worker; a start past either leaves both alone
/// (it is not refused, it runs at low priority).
static FAIR_START: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: bucket, waiting   ARGV: interval µs, burst, most waiting, waiting's expiry ms
if tonumber(redis.call('GET', KEYS[2]) or 0) >= tonumber(ARGV[3]) then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0)
if tat < now then tat = now end
if tat + interval - now > interval * tonumber(ARGV[2]) then return 0 end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
",
    )
});

/// A start that [`FAIR_START`] let through has begun: its place is free.
static STARTED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: waiting
if tonumber(redis.call('GET', KEYS[1]) or 0) > 0 then redis.call('DECR', KEYS[1]) end
",
    )
});

/// How long an account's count of waiting starts outlives its last
/// counted start: what a count left too high (an execution cancelled
/// before it began) costs at most.
const WAITING_EXPIRY: Duration = Duration::from_secs(600);

impl Client {
    /// Whether one more start fits its account's fair share: `bucket`, its
    /// rate, and at most `most` of its fair starts waiting for a worker
    /// (counted in `waiting`, given back by [`Client::fair_started`]). One
    /// that fits takes its place in both; one that does not leaves them.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn fair_start(&self, bucket: &Bucket, waiting: &str, most: u32) -> Result<bool> {
        let fits: i64 = FAIR_START
            .key(&bucket.key)
            .key(waiting)
            .arg(bucket.interval.as_micros() as u64)
            .arg(bucket.burst.max(1))
            .arg(most.max(1))
            .arg(WAITING_EXPIRY.as_millis() as u64)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(fits == 1)
    }

    /// A start [`Client::fair_start`] let through has begun: frees its
    /// place in `waiting`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn fair_started(&self, waiting: &str) -> Result<()> {
        let () = STARTED.key(waiting).invoke_async(&mut self.conn()).await?;
        Ok(())
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
