#!/usr/bin/env bash
# What `make dev` prints before it starts the process: where things are and
# what to try. Expects DATABASE_URL, REDIS_URL, PYTHON, FLOWPILOT_LISTEN and
# FLOWPILOT_DEMO_API_KEY in the environment.
set -euo pipefail
API="http://$FLOWPILOT_LISTEN"
KEY="$FLOWPILOT_DEMO_API_KEY"
cat <<MSG

Open the console: $API/ui/  (sign in with the demo API key $KEY)

flowpilot dev: PostgreSQL and Redis are up, the database is migrated on start.
  DATABASE_URL=$DATABASE_URL
  REDIS_URL=$REDIS_URL

The API listens on $API (OpenAPI: $API/openapi.json, metrics: $API/metrics).
The worker serves flowpilot:queue:high, flowpilot:queue and flowpilot:queue:low: the engine's
execute_workflow and run_execution, and the diagnostics ping, echo and sleep.
A demo account, contact and 7-step workflow are seeded on start (ids below),
with the API key $KEY.
Try, in another terminal:

  # the HTTP API: create a workflow and a contact, execute, poll, read the logs
  export API=$API KEY=$KEY
  WF=\$(curl -sf -X POST \$API/api/v1/workflows -H "Authorization: Bearer \$KEY" -H 'Content-Type: application/json' \\
    -d '{"name": "welcome", "definition": {"steps": [
          {"id": "hello", "type": "send_email", "subject": "Hi {{contact.attributes.first_name}}", "body": "Welcome!"},
          {"id": "pause", "type": "wait", "duration": "3s"},
          {"id": "vip", "type": "add_tag", "tag": "welcomed"}]}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  CONTACT=\$(curl -sf -X POST \$API/api/v1/contacts -H "Authorization: Bearer \$KEY" -H 'Content-Type: application/json' \\
    -d '{"email": "grace@example.com", "attributes": {"first_name": "Grace"}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  EX=\$(curl -sf -X POST \$API/api/v1/workflows/\$WF/execute -H "Authorization: Bearer \$KEY" -H 'Content-Type: application/json' \\
    -d "{\\"contact_id\\": \\"\$CONTACT\\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  curl -s \$API/api/v1/executions/\$EX -H "Authorization: Bearer \$KEY"; echo     # QUEUED, RUNNING or WAITING ("pause")
  sleep 4; curl -s \$API/api/v1/executions/\$EX -H "Authorization: Bearer \$KEY"; echo   # COMPLETED
  curl -s "\$API/api/v1/executions/\$EX/logs?limit=10" -H "Authorization: Bearer \$KEY"; echo

  # start the demo workflow for the demo contact from Python arq, as an app would
  $PYTHON - <<'PY'
import asyncio, subprocess
from arq import create_pool
from arq.connections import RedisSettings
q = "SELECT w.id, c.id FROM workflows w JOIN contacts c USING (account_id) WHERE w.name = 'demo onboarding' AND c.external_id = 'demo-contact'"
wf, contact = subprocess.check_output(["psql", "$DATABASE_URL", "-tAF", " ", "-c", q], text=True).split()
async def main():
    redis = await create_pool(RedisSettings.from_dsn("$REDIS_URL"))
    # flowpilot's queues are its own: name the normal one (arq's default is arq:queue)
    job = await redis.enqueue_job("execute_workflow", wf, contact, _queue_name="flowpilot:queue")
    print(await job.result(timeout=10))   # {'execution_id': '...', 'status': 'QUEUED', 'created': True}
asyncio.run(main())
PY

  # watch it run: a log row per step; the wait step parks it for 5 s
  psql $DATABASE_URL -c 'SELECT status, current_step_id, waiting_reason, next_attempt_at, resume_at FROM workflow_executions ORDER BY created_at DESC LIMIT 5'
  psql $DATABASE_URL -c 'SELECT step_index, step_id, action_type, status, duration_ms FROM execution_logs ORDER BY id DESC LIMIT 10'
  psql $DATABASE_URL -c 'SELECT channel, recipient, subject, body FROM outbox ORDER BY created_at DESC LIMIT 5'

  # look at the queues
  redis-cli -u $REDIS_URL keys 'flowpilot:*'; redis-cli -u $REDIS_URL keys 'arq:*'

Stop with Ctrl-C (running jobs drain first); 'make stop' stops PostgreSQL and Redis.

MSG
