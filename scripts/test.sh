#!/usr/bin/env bash
# Runs every test, on SQLite and on a throwaway PostgreSQL server, with a virtual X display
# for the tests that open a real window.
#
# Unless COINSLOT_TEST_POSTGRES_URL already names a server, this starts one: a fresh cluster in a
# temporary directory, listening only on 127.0.0.1, owned by an unprivileged user when run as
# root (PostgreSQL refuses to run as root), stopped and removed when the tests end.
# Extra arguments go to `cargo test` (for example a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

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
      echo "test.sh: PostgreSQL is not installed, and CI must run the PostgreSQL tests" >&2
      exit 1
    fi
    echo "test.sh: PostgreSQL is not installed (apt-get install postgresql); its cases will say they did not run" >&2
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
  PG_STOP=("${run[@]}" "$bin/pg_ctl" --pgdata="$PG_DIR/data" --mode=fast --wait stop)
  export COINSLOT_TEST_POSTGRES_URL="postgres://coinslot@127.0.0.1:$port/postgres"
  echo "test.sh: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
}

# The window tests (the storefront, the demo game) need an X display. Without DISPLAY this
# starts Xvfb on a free display number; its GPU is Mesa's software Vulkan driver (lavapipe).
start_xvfb() {
  if ! command -v Xvfb >/dev/null 2>&1; then
    if [ "${CI:-}" = "true" ]; then
      echo "test.sh: Xvfb is not installed, and CI must run the window tests" >&2
      exit 1
    fi
    echo "test.sh: Xvfb is not installed (apt-get install xvfb mesa-vulkan-drivers); the window tests will say they did not run" >&2
    return
  fi
  local display
  for display in $(seq 90 120); do
    [ -e "/tmp/.X11-unix/X$display" ] || [ -e "/tmp/.X$display-lock" ] || break
  done
  Xvfb ":$display" -screen 0 1280x800x24 -nolisten tcp >/tmp/coinslot-xvfb.log 2>&1 &
  XVFB_PID=$!
  local waited=0
  until [ -e "/tmp/.X11-unix/X$display" ]; do
    sleep 0.1
    waited=$((waited + 1))
    if [ "$waited" -gt 100 ]; then echo "test.sh: Xvfb did not start in 10 s" >&2; exit 1; fi
  done
  export DISPLAY=":$display"
  echo "test.sh: Xvfb on $DISPLAY" >&2
}

cleanup() {
  if [ -n "${XVFB_PID:-}" ]; then kill "$XVFB_PID" >/dev/null 2>&1 || true; fi
  if [ -n "${XDG_MADE:-}" ]; then rm -rf "$XDG_MADE"; fi
  if [ -n "${PG_STOP+x}" ]; then "${PG_STOP[@]}" >/dev/null 2>&1 || true; fi
  if [ -n "${PG_DIR:-}" ]; then rm -rf "$PG_DIR"; fi
}
trap cleanup EXIT

if [ -z "${COINSLOT_TEST_POSTGRES_URL:-}" ]; then
  start_postgres
fi
if [ -z "${DISPLAY:-}" ]; then
  start_xvfb
fi
# Bevy's window wants a runtime directory; a root shell in CI has none.
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  XDG_MADE=$(mktemp -d /tmp/coinslot-xdg.XXXXXX)
  chmod 700 "$XDG_MADE"
  export XDG_RUNTIME_DIR="$XDG_MADE"
fi

cargo test --workspace --locked "$@"
