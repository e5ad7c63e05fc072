# Starts a throwaway PostgreSQL server for the tests and benchmarks (sourced by scripts/test.sh
# and scripts/bench.sh): a fresh cluster in a temporary directory, listening only on 127.0.0.1,
# owned by an unprivileged user when run as root (PostgreSQL refuses to run as root), with full
# durability (fsync, synchronous_commit). `start_postgres` exports COINSLOT_TEST_POSTGRES_URL and
# PG_BIN; `stop_postgres` stops the server and removes its directory.

find_pg_bin() {
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    if [ -x "$dir/initdb" ]; then echo "$dir"; return; fi
  done
}

start_postgres() {
  local bin
  bin=$(find_pg_bin)
  if [ -z "$bin" ]; then
    if [ "${CI:-}" = "true" ]; then
      echo "${0##*/}: PostgreSQL is not installed, and CI must run the PostgreSQL tests" >&2
      exit 1
    fi
    echo "${0##*/}: PostgreSQL is not installed (apt-get install postgresql); its cases will say they did not run" >&2
    return
  fi
  PG_DIR=$(mktemp -d /tmp/coinslot-pg.XXXXXX)
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 55432)
  local run=()
  if [ "$(id -u)" = "0" ]; then
    local user=postgres
    id -u "$user" >/dev/null 2>&1 || user=nobody
    chown "$user" "$PG_DIR"
    run=(runuser -u "$user" --)
  fi
  "${run[@]}" "$bin/initdb" --pgdata="$PG_DIR/data" --username=coinslot --auth=trust --encoding=UTF8 --no-instructions >"$PG_DIR/initdb.log"
  "${run[@]}" "$bin/pg_ctl" --pgdata="$PG_DIR/data" --log="$PG_DIR/server.log" --wait --timeout=60 \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$PG_DIR -c max_connections=300 -c synchronous_commit=on -c fsync=on" \
    start >/dev/null
  export PG_BIN="$bin"
  PG_STOP=("${run[@]}" "$bin/pg_ctl" --pgdata="$PG_DIR/data" --mode=fast --wait stop)
  export COINSLOT_TEST_POSTGRES_URL="postgres://coinslot@127.0.0.1:$port/postgres"
  echo "${0##*/}: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
}

stop_postgres() {
  if [ -n "${PG_STOP+x}" ]; then "${PG_STOP[@]}" >/dev/null 2>&1 || true; fi
  if [ -n "${PG_DIR:-}" ]; then rm -rf "$PG_DIR"; fi
}
