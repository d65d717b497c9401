#!/usr/bin/env bash
# What `make dev` prints before it starts the process: where things are and
# what to try. Expects DATABASE_URL, REDIS_URL and PYTHON in the environment.
set -euo pipefail
cat <<MSG

flowpilot dev: PostgreSQL and Redis are up, the database is migrated on start.
  DATABASE_URL=$DATABASE_URL
  REDIS_URL=$REDIS_URL

The worker serves arq:queue:high, arq:queue and arq:queue:low with the
diagnostic functions ping, echo and sleep. Try, in another terminal:

  # enqueue jobs from Python arq (the real library) and read their results
  $PYTHON - <<'PY'
import asyncio
from arq import create_pool
from arq.connections import RedisSettings
async def main():
    redis = await create_pool(RedisSettings.from_dsn("$REDIS_URL"))
    job = await redis.enqueue_job("echo", 1, "two", x=3)
    print(await job.result(timeout=10))   # ((1, 'two'), {'x': 3})
    job = await redis.enqueue_job("ping", _defer_by=2)
    print(await job.status())             # JobStatus.deferred
    print(await job.result(timeout=10))   # pong
asyncio.run(main())
PY

  # look at the queues and the schema
  redis-cli -u $REDIS_URL keys 'arq:*'
  psql $DATABASE_URL -c '\dt'

Stop with Ctrl-C (running jobs drain first); 'make stop' stops PostgreSQL and Redis.

MSG
