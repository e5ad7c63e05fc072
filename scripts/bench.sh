#!/usr/bin/env bash
# Runs the purchases benchmark on SQLite and on a throwaway PostgreSQL server (with pgbench's
# TPC-B beside it), in release builds. Unless COINSLOT_BENCH_POSTGRES_URL already names a
# server, this starts one (see scripts/postgres.sh) and stops it at the end.
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
