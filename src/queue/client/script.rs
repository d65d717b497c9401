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

/// Claim as arq 0.27+ does: skip when in progress, gone from the queue,
/// scored 0, or not yet due. A claim is counted in the queue's stats
/// bucket, and starts the job in the same step (arq's start: read the
/// payload, advance the try counter, consume a pending abort), so a
/// claimed job costs no round trip of its own before it runs.
/// Returns `{1, payload (false: expired), try, aborted}`, or `{0, false,
/// 0, 0}` when it skipped the job.
pub(super) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: in-progress, queue, stats bucket, job, retry counter, abort set
-- ARGV: id, now ms, in-progress ttl ms, stats ttl ms, retry counter ttl s
local skip = {0, false, 0, 0}
if redis.call('EXISTS', KEYS[1]) == 1 then return skip end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score then return skip end
score = tonumber(score)
if score == 0 or score > tonumber(ARGV[2]) then return skip end
redis.call('PSETEX', KEYS[1], ARGV[3], '1')
redis.call('HINCRBY', KEYS[3], 'dequeued', 1)
redis.call('PEXPIRE', KEYS[3], ARGV[4])
local payload = redis.call('GET', KEYS[4])
local try = redis.call('INCR', KEYS[5])
redis.call('EXPIRE', KEYS[5], ARGV[5])
local aborted = redis.call('ZREM', KEYS[6], ARGV[1])
return {1, payload, try, aborted}
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
