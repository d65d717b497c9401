//! The Lua scripts that make arq's WATCH/MULTI/EXEC checks atomically.

use std::sync::LazyLock;

use redis::Script;

/// Enqueue with arq's dedupe: nothing is written while the job or its
/// result exists. A job due now is announced on `<queue>:wake` (pub/sub:
/// no key is written, so arq's keyspace is unchanged), which wakes idle
/// flowpilot workers at once; arq producers do not announce, and workers
/// find their jobs by polling.
pub(super) static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: job, result, queue, wake channel   ARGV: ttl ms, payload, score, id, announce (0/1)
if redis.call('EXISTS', KEYS[1], KEYS[2]) ~= 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
if ARGV[5] == '1' then redis.call('PUBLISH', KEYS[4], '1') end
return 1
",
    )
});

/// Claim as arq 0.27+ does: skip when in progress, gone from the queue,
/// scored 0, or not yet due.
pub(super) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: in-progress, queue   ARGV: id, now ms, in-progress ttl ms
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score then return 0 end
score = tonumber(score)
if score == 0 or score > tonumber(ARGV[2]) then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[3], '1')
return 1
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
