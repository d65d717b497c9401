//! The Lua scripts that make arq's WATCH/MULTI/EXEC checks atomically.

use std::sync::LazyLock;

use redis::Script;

/// Enqueue with arq's dedupe: nothing is written while the job or its
/// result exists. A job due now is announced on `<queue>:wake` (pub/sub:
/// no key is written, so arq's keyspace is unchanged), which wakes idle
/// flowpilot workers at once; arq producers do not announce, and workers
/// find their jobs by polling. The job is counted in its queue's current
/// stats bucket (a key of flowpilot's own, expiring, which arq never reads).
pub(super) static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: job, result, queue, wake channel, stats bucket
-- ARGV: ttl ms, payload, score, id, announce (0/1), stats ttl ms
if redis.call('EXISTS', KEYS[1], KEYS[2]) ~= 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
if ARGV[5] == '1' then redis.call('PUBLISH', KEYS[4], '1') end
redis.call('HINCRBY', KEYS[5], 'enqueued', 1)
redis.call('PEXPIRE', KEYS[5], ARGV[6])
return 1
",
    )
});

/// Claim as arq 0.27+ does, reading the queue in the same step: walk the
/// due jobs oldest first (score 0 never runs), skip those in progress, and
/// take up to `wanted` of them. Each claim starts its job too (arq's start:
/// read the payload, advance the try counter, consume a pending abort), so
/// a poll of one queue is one script call, however many jobs it claims.
/// The claims are counted in the queue's stats bucket.
///
/// A job's own keys are named here from their prefixes, as BullMQ's
/// scripts do: which jobs are due is known only inside. (arq's key layout
/// is one Redis, not a cluster, so the server needs no declared list.)
///
/// Returns `{rest, next due score or false, id, score, payload or false,
/// try, aborted, ...}`: `rest` 2 when it claimed all it wanted (more may be
/// due), 1 when it looked at `scan` due jobs without that (others hold
/// them; more may be behind), 0 when no due job is left; the next due
/// score only when it claimed fewer than wanted.
pub(super) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: queue, stats bucket, abort set
-- ARGV: now ms, jobs wanted, due jobs to look at, in-progress ttl ms, stats ttl ms,
--       retry counter ttl s, in-progress key prefix, job key prefix, retry key prefix
local now, wanted, scan = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {0, false}
local claimed, seen, rest = 0, 0, 0
while claimed < wanted and seen < scan do
  local count = math.min(scan - seen, wanted - claimed + 16)
  local page = redis.call('ZRANGEBYSCORE', KEYS[1], '(0', now, 'WITHSCORES', 'LIMIT', seen, count)
  for i = 1, #page, 2 do
    local id = page[i]
    local held = ARGV[7] .. id
    if claimed < wanted and redis.call('EXISTS', held) == 0 then
      redis.call('PSETEX', held, ARGV[4], '1')
      local retry = ARGV[9] .. id
      local try = redis.call('INCR', retry)
      redis.call('EXPIRE', retry, ARGV[6])
      local payload = redis.call('GET', ARGV[8] .. id)
      local aborted = redis.call('ZREM', KEYS[3], id)
      out[#out + 1] = id
      out[#out + 1] = page[i + 1]
      out[#out + 1] = payload
      out[#out + 1] = try
      out[#out + 1] = aborted
      claimed = claimed + 1
    end
  end
  seen = seen + #page / 2
  if #page / 2 < count then break end
  if seen >= scan then rest = 1 end
end
if claimed == wanted then
  rest = 2
else
  local next = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #next > 0 then out[2] = next[2] end
end
out[1] = rest
if claimed > 0 then
  redis.call('HINCRBY', KEYS[2], 'dequeued', claimed)
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
return out
",
    )
});

/// A queue's health in one atomic read: due and deferred counts, which of
/// the oldest due jobs a worker holds (their in-progress keys, named from
/// the ids: these are read, never written), the oldest due job no worker
/// holds, and the enqueue/claim counts of the stats buckets given.
pub(super) static HEALTH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: queue, stats buckets...   ARGV: now ms, in-progress key prefix, how many due jobs to look at
local due = redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1])
local total = redis.call('ZCARD', KEYS[1])
local head = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
local held, oldest = 0, -1
for i = 1, #head, 2 do
  if redis.call('EXISTS', ARGV[2] .. head[i]) == 1 then
    held = held + 1
  elseif oldest < 0 then
    oldest = tonumber(head[i + 1])
  end
end
local enqueued, dequeued = 0, 0
for i = 2, #KEYS do
  enqueued = enqueued + tonumber(redis.call('HGET', KEYS[i], 'enqueued') or 0)
  dequeued = dequeued + tonumber(redis.call('HGET', KEYS[i], 'dequeued') or 0)
end
return {due, total - due, held, oldest, enqueued, dequeued}
",
    )
});

/// Abort as `Job.abort()` does: a deferred job is rescored to 1 so a worker
/// picks it up at once and fails it, then the id joins the abort set.
pub(super) static ABORT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: queue, abort set   ARGV: id, now ms
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) > tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], 1, ARGV[1])
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
",
    )
});
