# The two commands a newcomer needs: `make dev` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
# Build output: cargo's own target/ of this checkout, or CARGO_TARGET_DIR.
# NB: never one target dir for two checkouts of flowpilot: cargo's artifact
# names do not depend on the checkout's path, so the two overwrite each
# other's library and binary and a test can run the other checkout's code.
STATE := $(or $(FLOWPILOT_STATE_DIR),$(CURDIR)/.local)
BIN := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/debug/flowpilot

.PHONY: dev test services stop

## dev: start PostgreSQL + Redis (local ones unless DATABASE_URL / REDIS_URL are set), migrate, run everything
dev: services
	cargo build --bin flowpilot
	@test -s "$(STATE)/demo-api-key" || echo "fp_demo_$$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$(STATE)/demo-api-key"
	@source "$(STATE)/env"; export PYTHON="$$(tests/support/python.sh)"; \
	  export FLOWPILOT_DEMO_API_KEY="$$(cat "$(STATE)/demo-api-key")"; \
	  export FLOWPILOT_LISTEN="$${FLOWPILOT_LISTEN:-127.0.0.1:8080}"; \
	  tests/support/next-steps.sh; exec "$(BIN)" dev --seed-demo

## test: format and lint checks, then every test against real PostgreSQL, Redis and Python arq
test: services
	@tests/support/services.sh tools
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	@source "$(STATE)/env"; \
	  export FLOWPILOT_TEST_PYTHON="$$(tests/support/python.sh)"; \
	  cargo test --lib --bins --tests -- --test-threads 8
	tests/e2e/run.sh

services:
	@tests/support/services.sh start

## stop: stop the local PostgreSQL and Redis
stop:
	@tests/support/services.sh stop
