#!/usr/bin/env bash
# Project-local PostgreSQL and Redis for `make dev` and `make test`.
#
#   services.sh start   use DATABASE_URL / REDIS_URL when given (and reachable),
#                       else start local instances from Debian's packages
#                       (installing them with apt-get when missing), then
#                       write the URLs to $STATE/env
#   services.sh stop    stop the local instances this script started
#   services.sh tools   install what `make test` checks with beside the
#                       services: promtool (Debian's prometheus package);
#                       Go with sprig and a YAML library, which render the
#                       Helm chart as Helm does (tests/chart/render.go);
#                       Chromium and its WebDriver (the console's test)
#   services.sh restart-postgres
#                       restart the local PostgreSQL (fast: sessions are cut),
#                       for tests that check what survives it
#
# Data lives under $STATE (default: .local/ in the checkout, git-ignored);
# ports are the first free ones from 25432 (PostgreSQL) and 26379 (Redis),
# below Linux's ephemeral range so that no client connection holds them,
# and are kept across runs. Nothing outside $STATE is touched except the
# packages it installs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
STATE=${FLOWPILOT_STATE_DIR:-$ROOT/.local}
mkdir -p "$STATE"

say() { printf 'services: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $* (install it yourself, or set DATABASE_URL / REDIS_URL)"
  fi
}

apt_install() {
  say "installing $* with apt-get"
  if [ -z "${APT_UPDATED:-}" ]; then
    as_root apt-get update -qq >&2 || die "apt-get update failed"
    APT_UPDATED=1
  fi
  # RUNLEVEL=1 stops the packages' own service from starting on install:
  # we run our own instances on our own ports.
  as_root env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq "$@" >&2 \
    || die "apt-get install $* failed"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The port kept from an earlier run, unless it lies in the ephemeral range
# (older checkouts used 55432 / 56379 there).
kept_port() {
  local p
  p=$(cat "$1" 2>/dev/null || true)
  if [ -n "$p" ] && [ "$p" -lt 32768 ]; then echo "$p"; else echo "$2"; fi
}

free_port() {
  local p=$1
  while port_busy "$p"; do p=$((p + 1)); done
  echo "$p"
}

# --- PostgreSQL -------------------------------------------------------------

pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
    apt_install postgresql postgresql-client
    dir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  echo "$dir"
}

# initdb and postgres refuse to run as root: run them as the `postgres` user
# the Debian package creates, with the data directory owned by it.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Where PostgreSQL's data goes when user postgres cannot reach $STATE; one
# per state directory, so that a test's private instance never meets
# the checkout's.
fallback_pg_dir() {
  echo "/var/tmp/flowpilot-$(echo "$STATE" | md5sum | cut -c1-8)/pg"
}

# The data directory of the local PostgreSQL this script started, if any.
pg_data() {
  local dir
  for dir in "$STATE/pg" "$(fallback_pg_dir)"; do
    if [ -f "$dir/data/PG_VERSION" ]; then echo "$dir/data"; return; fi
  done
}

pg_start() {
  local bin dir data port
  bin=$(pg_bin)
  dir=$STATE/pg
  # The postgres user must be able to reach the data directory; a checkout
  # under a private home may not allow that, so fall back to /var/tmp.
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$dir"; then
    dir=$(fallback_pg_dir)
    mkdir -p "$dir"
    say "checkout not readable by user postgres; PostgreSQL data in $dir"
  fi
  data=$dir/data
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  if [ -f "$dir/port" ] && as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    port=$(cat "$dir/port")
  else
    if [ ! -f "$data/PG_VERSION" ]; then
      as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || die "initdb failed; see $dir/initdb.log"
    fi
    # A port may be taken between the check and the bind: try the next ones.
    port=$(kept_port "$dir/port" 25432)
    local started=""
    for _ in $(seq 20); do
      port=$(free_port "$port")
      # max_connections: parallel tests each open small pools.
      if as_pg "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 \
           -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null; then
        started=1
        break
      fi
      port=$((port + 1))
    done
    [ -n "$started" ] || die "PostgreSQL did not start; see $dir/server.log"
    echo "$port" >"$dir/port"
    say "PostgreSQL started on 127.0.0.1:$port (data $data)"
  fi
  if ! "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='flowpilot'" postgres | grep -q 1; then
    "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres flowpilot
  fi
  DATABASE_URL="postgres://postgres@127.0.0.1:$port/flowpilot"
}

pg_check_given() {
  local bin
  bin=$(pg_bin)
  "$bin/pg_isready" -q -d "$DATABASE_URL" -t 10 \
    || die "DATABASE_URL is set but nothing answers there: $DATABASE_URL"
  say "using DATABASE_URL from the environment"
}

# --- Redis ------------------------------------------------------------------

redis_start() {
  local dir port
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server redis-tools
  dir=$STATE/redis
  mkdir -p "$dir"
  if [ -f "$dir/port" ] && redis-cli -p "$(cat "$dir/port")" ping 2>/dev/null | grep -q PONG \
     && [ -f "$dir/redis.pid" ] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; then
    port=$(cat "$dir/port")
  else
    port=$(kept_port "$dir/port" 26379)
    local started=""
    for _ in $(seq 20); do
      port=$(free_port "$port")
      # No persistence: Redis only moves work; PostgreSQL is the record.
      redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --dir "$dir" \
        --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --save "" --appendonly no >/dev/null || true
      for _ in $(seq 30); do redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
      if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then
        started=1
        break
      fi
      port=$((port + 1))
    done
    [ -n "$started" ] || die "Redis did not start; see $dir/redis.log"
    echo "$port" >"$dir/port"
    say "Redis started on 127.0.0.1:$port"
  fi
  REDIS_URL="redis://127.0.0.1:$port/0"
}

redis_check_given() {
  command -v redis-cli >/dev/null || apt_install redis-tools
  redis-cli -u "$REDIS_URL" ping 2>/dev/null | grep -q PONG \
    || die "REDIS_URL is set but nothing answers there: $REDIS_URL"
  say "using REDIS_URL from the environment"
}

# --- commands ---------------------------------------------------------------

start() {
  if [ -n "${DATABASE_URL:-}" ]; then pg_check_given; else pg_start; fi
  if [ -n "${REDIS_URL:-}" ]; then redis_check_given; else redis_start; fi
  printf 'export DATABASE_URL=%q\nexport REDIS_URL=%q\n' "$DATABASE_URL" "$REDIS_URL" >"$STATE/env"
  say "DATABASE_URL=$DATABASE_URL"
  say "REDIS_URL=$REDIS_URL"
}

stop() {
  local data
  data=$(pg_data)
  if [ -n "$data" ] && [ -f "$data/postmaster.pid" ]; then
    as_pg "$(pg_bin)/pg_ctl" -D "$data" -m fast stop >/dev/null && say "PostgreSQL stopped"
  fi
  if [ -f "$STATE/redis/redis.pid" ] && kill "$(cat "$STATE/redis/redis.pid")" 2>/dev/null; then
    say "Redis stopped"
  fi
  rm -f "$STATE/env"
}

tools() {
  command -v promtool >/dev/null || apt_install prometheus
  local go_pkgs=()
  command -v go >/dev/null || go_pkgs+=(golang-go)
  [ -d /usr/share/gocode/src/github.com/Masterminds/sprig ] || go_pkgs+=(golang-github-masterminds-sprig-dev)
  [ -d /usr/share/gocode/src/github.com/ghodss/yaml ] || go_pkgs+=(golang-github-ghodss-yaml-dev)
  [ ${#go_pkgs[@]} -eq 0 ] || apt_install "${go_pkgs[@]}"
  # A real browser for the console's test (tests/console.rs). Where it
  # cannot be installed that test says so and skips; nothing else needs it.
  if ! { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }; then
    (apt_install chromium chromium-driver) || say "Chromium could not be installed: the console's browser test will skip"
  fi
}

restart_postgres() {
  local data
  data=$(pg_data)
  [ -n "$data" ] || die "no local PostgreSQL under $STATE to restart"
  as_pg "$(pg_bin)/pg_ctl" -D "$data" -l "$(dirname "$data")/server.log" -m fast -w -t 60 restart >/dev/null \
    || die "PostgreSQL did not restart; see $(dirname "$data")/server.log"
  say "PostgreSQL restarted"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  tools) tools ;;
  restart-postgres) restart_postgres ;;
  *) die "usage: $0 start|stop|tools|restart-postgres" ;;
esac
