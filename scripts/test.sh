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

# shellcheck source=scripts/postgres.sh
source scripts/postgres.sh

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
  stop_postgres
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
