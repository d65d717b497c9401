#!/usr/bin/env bash
# Regenerates tests/fixtures/arq/ from the real Python arq library (the
# version pinned in tests/support/requirements.txt), against a throwaway
# Redis server this script starts on a free port and stops again, so no
# other Redis is touched. Takes about 30 s. Review the diff before
# committing: timestamps, uuid job ids and TTLs change on every run, the
# structure must not.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$ROOT/tests/fixtures/arq
PYTHON=$("$ROOT/tests/support/python.sh")

command -v redis-server >/dev/null || {
  echo "regenerate: redis-server is missing (make services installs it)" >&2
  exit 1
}
tmp=$(mktemp -d)
port=36379
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" \
  --daemonize yes --pidfile "$tmp/redis.pid" --logfile "$tmp/redis.log" >/dev/null
trap 'kill "$(cat "$tmp/redis.pid")" 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done

"$PYTHON" "$OUT/generate.py" --host 127.0.0.1 --port "$port" --out "$OUT"
echo "regenerate: wrote $OUT (arq $("$PYTHON" -c 'import importlib.metadata as m; print(m.version("arq"))'))" >&2
