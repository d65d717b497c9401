#!/usr/bin/env bash
# End to end on a kind cluster: build the image, install PostgreSQL, Redis
# and the chart, apply examples/, and wait for the WorkflowExecution to
# succeed and the WorkerPool to be ready. Skips (exit 0) with a clear
# message when a tool or a cluster is missing.
#
#   kind create cluster --config kind-config.yaml   # once
#   tests/e2e/run.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NS=${FLOWPILOT_E2E_NAMESPACE:-flowpilot-e2e}
CLUSTER=${KIND_CLUSTER:-flowpilot}

skip() { echo "e2e: SKIPPED: $*"; exit 0; }
for tool in kind kubectl helm docker curl; do
  command -v "$tool" >/dev/null || skip "'$tool' is not installed"
done
kubectl cluster-info --request-timeout=5s >/dev/null 2>&1 \
  || skip "no Kubernetes cluster reachable (create one: kind create cluster --config $ROOT/kind-config.yaml)"
docker info >/dev/null 2>&1 || skip "no Docker engine to build the image"

step() { echo "e2e: $*"; }
step "building the flowpilot image"
docker build -q -t flowpilot:e2e -f "$ROOT/Dockerfile" "$ROOT" >/dev/null
kind load docker-image flowpilot:e2e --name "$CLUSTER" >/dev/null

step "installing PostgreSQL and Redis in namespace $NS"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$NS" apply -f "$ROOT/tests/e2e/deps.yaml" >/dev/null
kubectl -n "$NS" rollout status deploy/postgres deploy/redis --timeout=180s >/dev/null

step "installing the chart"
helm lint "$ROOT/charts/flowpilot" --set database.url=x --set redis.url=x >/dev/null
helm upgrade --install flowpilot "$ROOT/charts/flowpilot" -n "$NS" --wait --timeout 5m \
  --set image.repository=flowpilot --set image.tag=e2e --set image.pullPolicy=Never \
  --set database.url="postgres://postgres:postgres@postgres:5432/flowpilot" \
  --set redis.url="redis://redis:6379/0" --set controller.replicas=1 >/dev/null

step "creating an account, a key, a workflow and a contact"
exec_api() { kubectl -n "$NS" exec deploy/flowpilot-api -- flowpilot "$@"; }
ACCOUNT=$(exec_api account create --name e2e | sed 's/.*"id":"\([^"]*\)".*/\1/')
KEY=$(exec_api apikey create --account "$ACCOUNT" 2>/dev/null | sed 's/.*"key":"\([^"]*\)".*/\1/')
kubectl -n "$NS" port-forward svc/flowpilot-api 18080:80 >/dev/null 2>&1 &
PF=$!
trap 'kill $PF 2>/dev/null || true' EXIT
sleep 2
api() { curl -sf -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' "http://127.0.0.1:18080$@"; }
WF=$(api /api/v1/workflows -d '{"name": "e2e", "definition": {"steps": [
  {"id": "hello", "type": "send_email", "subject": "Hi", "body": "Welcome"},
  {"id": "pause", "type": "wait", "duration": "2s"},
  {"id": "done", "type": "goal", "name": "e2e"}]}}' | sed 's/^{"id":"\([^"]*\)".*/\1/')
CONTACT=$(api /api/v1/contacts -d '{"email": "e2e@example.com"}' | sed 's/^{"id":"\([^"]*\)".*/\1/')

step "applying examples/"
kubectl -n "$NS" apply -f "$ROOT/examples/workerpool.yaml" >/dev/null
sed -e "s/00000000-0000-0000-0000-000000000001/$ACCOUNT/" \
    -e "s/00000000-0000-0000-0000-000000000002/$WF/" \
    -e "s/00000000-0000-0000-0000-000000000003/$CONTACT/" \
    "$ROOT/examples/workflowexecution.yaml" | kubectl -n "$NS" apply -f - >/dev/null

step "waiting for the execution to succeed"
for _ in $(seq 120); do
  PHASE=$(kubectl -n "$NS" get wfx welcome-ada -o jsonpath='{.status.phase}' 2>/dev/null || true)
  [ "$PHASE" = "Succeeded" ] && break
  sleep 1
done
kubectl -n "$NS" get wfx,wp
[ "$PHASE" = "Succeeded" ] || { echo "e2e: FAILED: phase is '$PHASE'"; exit 1; }
kubectl -n "$NS" wait wp/flowpilot-workers --for=condition=Ready --timeout=60s >/dev/null
step "passed"
