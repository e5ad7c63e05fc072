#!/usr/bin/env bash
# Runs the purchases benchmark on SQLite and on a throwaway PostgreSQL server, in release builds,
# beside baselines that do not go through this project's code: SQLite's C API (built with `cc`
# and libsqlite3-dev) and pgbench (TPC-B and a script of the writer's batch). Unless
# COINSLOT_BENCH_POSTGRES_URL already names a server, this starts one (see scripts/postgres.sh)
# and stops it at the end.
# Extra arguments go to `cargo bench` (for example `--bench purchases`).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/postgres.sh
source scripts/postgres.sh
trap stop_postgres EXIT

if [ -z "${COINSLOT_BENCH_POSTGRES_URL:-}" ]; then
  start_postgres
  export COINSLOT_BENCH_POSTGRES_URL="${COINSLOT_TEST_POSTGRES_URL:-}"
fi
cargo bench -p store-server --locked "${@:---bench=purchases}"
