//! Circuit breaker state in Redis: one hash per provider, read and changed
//! only by two Lua scripts, so every worker sees one breaker and no two
//! change it at once. The policy (thresholds, durations) comes from the
//! caller; `crate::provider::breaker` decides when to ask.
//!
//! ```text
//!            failure ratio >= threshold over the window,
//!            with at least `min_calls` calls
//!   CLOSED ─────────────────────────────────────────> OPEN (until open_until)
//!     ^                                                │ time passes
//!     │ a probe succeeds                               v
//!     └──────────────────────────────────────── HALF_OPEN (at most `probes`
//!                      a probe fails: OPEN again         calls at once)
//! ```
//!
//! A call refused while OPEN or HALF_OPEN gets a slot on a release
//! schedule (`next_slot`, spaced by `spacing_ms`, never before
//! `open_until`), so parked work comes back at a ramped rate, not all at
//! once when the provider recovers. Slots alone do not make the rate: a
//! worker that fell behind brings parked work back late, all at once. So
//! a breaker that closes keeps pacing every call at the ramp until the
//! schedule it handed out has run (`ramp_until`); a call over the pace
//! goes to the back of the schedule.

use std::sync::LazyLock;

use redis::Script;

use super::{Client, Result};
use crate::queue::keys;

/// Thresholds of a breaker, as the scripts take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Failures per 1,000 calls at or above which it opens.
    pub failure_permille: u32,
    /// Calls in the window before the ratio counts.
    pub min_calls: u32,
    /// Length of the window, ms (counted in ten buckets).
    pub window_ms: u64,
    /// How long it stays open, ms.
    pub open_ms: u64,
    /// Calls let through at once while half-open.
    pub probes: u32,
    /// Gap between two refused calls' slots, ms (1000 / ramp per second).
    pub spacing_ms: u64,
}

/// What the breaker says to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Call the provider.
    Pass,
    /// Call it as a probe of a half-open breaker: report the outcome.
    Probe,
    /// Do not call it; try again in this many ms (the call's slot).
    Refused {
        /// Milliseconds until the slot.
        retry_in_ms: u64,
    },
}

/// The breaker's state as the scripts see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// Calls are refused.
    Open,
    /// A few probes pass.
    HalfOpen,
}

/// Lua both scripts start with: a breaker's key is kept until its release
/// schedule has run, and `ttl` ms after.
const KEEP: &str = r"
local function keep(now, ttl)
  local slot = tonumber(redis.call('HGET', KEYS[1], 'next_slot') or '0')
  redis.call('PEXPIRE', KEYS[1], math.max(slot - now, 0) + tonumber(ttl))
end
";

static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{KEEP}{}",
        r"
-- KEYS: breaker   ARGV: now ms, probes, spacing ms, open ms, ttl ms
local now = tonumber(ARGV[1])
local spacing = tonumber(ARGV[3])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if state == 'open' and now >= open_until then
  state = 'half_open'
  redis.call('HSET', KEYS[1], 'state', state, 'probes', 0, 'half_open_at', now)
end
if state == 'closed' then
  local ramp_until = tonumber(redis.call('HGET', KEYS[1], 'ramp_until') or '0')
  if now >= ramp_until then return {1, 0} end
  -- Ramping: pass at the schedule's pace, with ten slots of slack.
  local tat = math.max(tonumber(redis.call('HGET', KEYS[1], 'ramp_tat') or '0'), now)
  if tat - now <= spacing * 10 then
    redis.call('HSET', KEYS[1], 'ramp_tat', tat + spacing)
    return {1, 0}
  end
elseif state == 'half_open' then
  -- A probe whose worker died never reports: after an open period the
  -- half-open state forgets probes in flight.
  local since = tonumber(redis.call('HGET', KEYS[1], 'half_open_at') or '0')
  if now - since > tonumber(ARGV[4]) then
    redis.call('HSET', KEYS[1], 'probes', 0, 'half_open_at', now)
  end
  local probes = tonumber(redis.call('HGET', KEYS[1], 'probes') or '0')
  if probes < tonumber(ARGV[2]) then
    redis.call('HINCRBY', KEYS[1], 'probes', 1)
    keep(now, ARGV[5])
    return {1, 1}
  end
end
local slot = math.max(tonumber(redis.call('HGET', KEYS[1], 'next_slot') or '0'), open_until, now)
redis.call('HSET', KEYS[1], 'next_slot', slot + spacing)
keep(now, ARGV[5])
return {0, slot - now}
"
    ))
});

static REPORT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{KEEP}{}",
        r"
-- KEYS: breaker, index of breakers that opened
-- ARGV: now ms, ok (1/0), probe (1/0), permille, min calls, window ms, open ms, ttl ms
local now = tonumber(ARGV[1])
local ok = ARGV[2] == '1'
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local function open()
  local until_ms = now + tonumber(ARGV[7])
  local slot = tonumber(redis.call('HGET', KEYS[1], 'next_slot') or '0')
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', until_ms,
    'next_slot', math.max(slot, until_ms), 'opened', now)
  redis.call('ZADD', KEYS[2], now, KEYS[1])
end
if ARGV[3] == '1' then
  if state ~= 'half_open' then return state end
  if ok then
    local slot = tonumber(redis.call('HGET', KEYS[1], 'next_slot') or '0')
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[1], 'state', 'closed', 'next_slot', slot, 'ramp_until', slot)
  else
    open()
  end
  keep(now, ARGV[8])
  return redis.call('HGET', KEYS[1], 'state')
end
if state ~= 'closed' then return state end
local bucket_ms = math.max(1, math.floor(tonumber(ARGV[6]) / 10))
local bucket = math.floor(now / bucket_ms)
redis.call('HINCRBY', KEYS[1], 'c:' .. bucket, 1)
if not ok then redis.call('HINCRBY', KEYS[1], 'f:' .. bucket, 1) end
local calls, fails = 0, 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local kind, b = string.match(fields[i], '^([cf]):(%d+)$')
  if kind then
    b = tonumber(b)
    if b <= bucket - 10 then
      redis.call('HDEL', KEYS[1], fields[i])
    elseif kind == 'c' then
      calls = calls + tonumber(fields[i + 1])
    else
      fails = fails + tonumber(fields[i + 1])
    end
  end
end
if calls >= tonumber(ARGV[5]) and fails * 1000 >= calls * tonumber(ARGV[4]) then
  open()
end
keep(now, ARGV[8])
return redis.call('HGET', KEYS[1], 'state') or 'closed'
"
    ))
});

/// Takes a breaker out of the index of those that opened, if it is still
/// closed or gone (a report may have opened it since it was read).
static CLOSED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: index, breaker
local state = redis.call('HGET', KEYS[2], 'state') or 'closed'
if state == 'closed' then redis.call('ZREM', KEYS[1], KEYS[2]) end
return 0
",
    )
});

/// How long an idle breaker's state is kept: long past any open period.
fn ttl_ms(p: &BreakerPolicy) -> u64 {
    (p.window_ms + p.open_ms).max(1) * 10
}

fn state_of(word: &str) -> BreakerState {
    match word {
        "open" => BreakerState::Open,
        "half_open" => BreakerState::HalfOpen,
        _ => BreakerState::Closed,
    }
}

impl Client {
    /// Asks the breaker of `provider` (under the queue `prefix`) whether a
    /// call may go out now.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn breaker_admit(
        &self,
        prefix: &str,
        provider: &str,
        p: &BreakerPolicy,
        now_ms: i64,
    ) -> Result<Admission> {
        let (pass, detail): (i64, i64) = ADMIT
            .key(keys::breaker(prefix, provider))
            .arg(now_ms)
            .arg(p.probes)
            .arg(p.spacing_ms)
            .arg(p.open_ms)
            .arg(ttl_ms(p))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(match (pass, detail) {
            (1, 1) => Admission::Probe,
            (1, _) => Admission::Pass,
            (_, ms) => Admission::Refused {
                retry_in_ms: ms.max(0) as u64,
            },
        })
    }

    /// Reports a call's outcome to the breaker of `provider`; returns the
    /// state it is in afterwards.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn breaker_report(
        &self,
        prefix: &str,
        provider: &str,
        p: &BreakerPolicy,
        now_ms: i64,
        ok: bool,
        probe: bool,
    ) -> Result<BreakerState> {
        let state: String = REPORT
            .key(keys::breaker(prefix, provider))
            .key(keys::breakers_opened(prefix))
            .arg(now_ms)
            .arg(u8::from(ok))
            .arg(u8::from(probe))
            .arg(p.failure_permille)
            .arg(p.min_calls)
            .arg(p.window_ms)
            .arg(p.open_ms)
            .arg(ttl_ms(p))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(state_of(&state))
    }
}

impl Client {
    /// The breakers under `prefix` that are not closed, with their state:
    /// `(provider, state)`. Walks the keys with SCAN, so it never blocks
    /// Redis however many breakers there are.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn breakers_not_closed(&self, prefix: &str) -> Result<Vec<(String, BreakerState)>> {
        // Every breaker that ever opened is in the index (the report script
        // adds it); those closed or expired since leave it here. No SCAN of
        // the keyspace, which holds every job and result.
        let index = keys::breakers_opened(prefix);
        let head = keys::breaker(prefix, "");
        let mut conn = self.conn();
        let listed: Vec<String> = redis::cmd("ZRANGE")
            .arg(&index)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        let mut found = Vec::new();
        for key in listed {
            let state: Option<String> = redis::cmd("HGET")
                .arg(&key)
                .arg("state")
                .query_async(&mut conn)
                .await?;
            match state.as_deref().map(state_of) {
                Some(state) if state != BreakerState::Closed => {
                    let provider = key.strip_prefix(&head).unwrap_or(&key).to_owned();
                    found.push((provider, state));
                }
                // Closed, or gone: out of the index, unless it opened again
                // meanwhile (then its state is no longer what was read).
                _ => {
                    CLOSED
                        .key(&index)
                        .key(&key)
                        .invoke_async::<()>(&mut conn)
                        .await?;
                }
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }
}
