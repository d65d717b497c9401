#!/usr/bin/env bash
# A git-ignored virtualenv with Python arq for the interop tests:
# $STATE/venv (default .local/venv), rebuilt when requirements.txt changes.
# Prints the interpreter's path.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
STATE=${FLOWPILOT_STATE_DIR:-$ROOT/.local}
VENV=$STATE/venv
REQ=$ROOT/tests/support/requirements.txt

say() { printf 'python: %s\n' "$*" >&2; }

if ! command -v python3 >/dev/null; then
  say "installing python3 with apt-get"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >&2
fi
if [ ! -x "$VENV/bin/python" ] || ! cmp -s "$REQ" "$VENV/requirements.txt"; then
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" >&2 2>/dev/null; then
    say "installing python3-venv with apt-get"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
    python3 -m venv "$VENV" >&2
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ" >&2
  cp "$REQ" "$VENV/requirements.txt"
  say "arq installed in $VENV"
fi
echo "$VENV/bin/python"
