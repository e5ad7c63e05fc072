#!/usr/bin/env python3
"""Makes a layout fixture: a database filled by one version of the code, and what that version's
server answered about it, so a later version's migrations can be shown to keep every answer.

    scripts/make-layout-fixture.py STORE_SERVER_BINARY OUT_DIR

The binary must be built from the commit whose layout the fixture records (the fixture in
`tests/fixtures/layout-0013` was made by the last commit before migration 0014's layout work).
It fills a fresh SQLite database with `demo-data` and `generate` (the real write paths, on a
clock moved to past days), then writes to OUT_DIR:

- `tables.json`: every table's columns and rows, tables in creation order (so foreign keys are
  met when they are inserted in that order), rows in insertion order; and the migration
  version they were read at;
- `answers.json`: what the server answered, through HTTP, about that data: every player's detail
  and full history (operator routes), every order with its receipt, the analytics reports over
  the filled days, and for a sample of players their wallet, inventory, history, receipts and
  event stream (player routes, after a device login).

The e2e test `layout_migration` loads `tables.json` into a database at that version on each
backend, runs today's migrations and server, and asks the same questions.

Only ever talks to 127.0.0.1. Standard library only.
"""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import date, timedelta

DEMO_PLAYERS = 60
DEMO_DAYS = 7
DEMO_SEED = 7
GENERATED_PLAYERS = 12
GENERATED_ENTRIES = 6
# Demo players whose own view (player routes) is recorded, with two generated ones.
SAMPLED_DEMO_DEVICES = [f"demo-{DEMO_SEED}-{index}" for index in range(6)]
REPORTS = ["revenue", "geography", "peak-times", "price-sensitivity", "combinations", "tabs"]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(binary, database_url, *args):
    env = dict(os.environ, COINSLOT_DATABASE_URL=database_url, RUST_LOG="warn",
               COINSLOT_ASSETS=os.path.join(os.path.dirname(__file__), "..", "assets"))
    subprocess.run([binary, *args], env=env, check=True, stdout=subprocess.DEVNULL)


class Server:
    def __init__(self, binary, database_url):
        self.port = free_port()
        env = dict(os.environ, COINSLOT_DATABASE_URL=database_url, RUST_LOG="warn",
                   COINSLOT_LISTEN=f"127.0.0.1:{self.port}", COINSLOT_PLAYER_RATE_LIMIT="off",
                   COINSLOT_KEY_RATE_LIMIT="off",
                   COINSLOT_ASSETS=os.path.join(os.path.dirname(__file__), "..", "assets"))
        self.process = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.key = None
        self.base = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, want_key):
        deadline = time.time() + 60
        if want_key:
            for line in self.process.stdout:
                for word in line.split():
                    if word.startswith("csk_"):
                        self.key = word
                if self.key or time.time() > deadline:
                    break
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{self.base}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("the server was not ready in 60 s")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)

    def call(self, method, path, token=None, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        if token:
            request.add_header("authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def pages(self, path, field, token):
        """Every item of a paginated list."""
        items, cursor = [], None
        while True:
            joiner = "&" if "?" in path else "?"
            query = f"{joiner}limit=100" + (f"&cursor={urllib.parse.quote(cursor)}" if cursor else "")
            status, page = self.call("GET", path + query, token)
            assert status == 200, (path, status, page)
            items += page[field]
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    def events(self, token, last_event_id):
        """The player's event stream after `last_event_id`, until it is quiet for a second."""
        request = urllib.request.Request(f"{self.base}/v1/events")
        request.add_header("authorization", f"Bearer {token}")
        request.add_header("last-event-id", str(last_event_id))
        events, current = [], {}
        with urllib.request.urlopen(request, timeout=2) as response:
            try:
                for raw in response:
                    line = raw.decode().rstrip("\n")
                    if not line:
                        if "data" in current:
                            events.append(current)
                        current = {}
                    elif not line.startswith(":"):
                        name, _, value = line.partition(":")
                        current[name] = value.strip()
            except (socket.timeout, TimeoutError):
                pass
        return events


def dump_tables(path):
    connection = sqlite3.connect(path)
    version = connection.execute("select max(version) from _sqlx_migrations").fetchone()[0]
    tables = []
    names = [row[0] for row in connection.execute(
        "select name from sqlite_master where type = 'table' and name not like 'sqlite%' "
        "and name <> '_sqlx_migrations' order by rowid")]
    for name in names:
        cursor = connection.execute(f'select * from "{name}" order by rowid')
        columns = [column[0] for column in cursor.description]
        tables.append({"table": name, "columns": columns, "rows": [list(row) for row in cursor]})
    connection.close()
    return {"migration": version, "tables": tables}


def main():
    binary, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp()
    path = os.path.join(work, "coinslot.db")
    url = f"sqlite://{path}"
    first = Server(binary, url)
    first.wait_ready(want_key=True)
    key = first.key
    first.stop()
    run(binary, url, "demo-data", "--players", str(DEMO_PLAYERS), "--days", str(DEMO_DAYS),
        "--seed", str(DEMO_SEED))
    # `generate` numbers its devices from the players already there.
    with sqlite3.connect(path) as connection:
        first = connection.execute("select count(*) from player").fetchone()[0]
    sampled_devices = SAMPLED_DEMO_DEVICES + [f"scale-{first}", f"scale-{first + 1}"]
    run(binary, url, "generate", "--players", str(GENERATED_PLAYERS), "--entries-per-player",
        str(GENERATED_ENTRIES))
    run(binary, url, "audit")
    dumped = dump_tables(path)
    with open(os.path.join(out_dir, "tables.json"), "w") as out:
        json.dump(dumped, out, separators=(",", ":"))

    server = Server(binary, url)
    server.wait_ready(want_key=False)
    to = date.today() - timedelta(days=1)
    since = to - timedelta(days=DEMO_DAYS - 1)
    # The operator key of this throwaway database, and the base URL its answers name.
    answers = {"from": since.isoformat(), "to": to.isoformat(), "devices": sampled_devices,
               "operator_key": key, "base_url": server.base}
    players = server.pages("/admin/v1/players", "players", key)
    answers["players"] = players
    answers["player_details"] = {}
    answers["player_histories"] = {}
    for player in players:
        status, detail = server.call("GET", f"/admin/v1/players/{player['id']}", key)
        assert status == 200, detail
        answers["player_details"][player["id"]] = detail
        answers["player_histories"][player["id"]] = server.pages(
            f"/admin/v1/players/{player['id']}/history", "entries", key)
    orders = server.pages("/admin/v1/orders", "orders", key)
    answers["orders"] = {}
    for order in orders:
        status, detail = server.call("GET", f"/admin/v1/orders/{order['id']}", key)
        assert status == 200, detail
        answers["orders"][order["id"]] = detail
    answers["reports"] = {}
    for report in REPORTS:
        status, body = server.call("GET", f"/admin/v1/analytics/{report}?from={since}&to={to}", key)
        assert status == 200, (report, body)
        answers["reports"][report] = body
    tables = {table["table"]: table for table in dumped["tables"]}
    receipts = tables["receipt"]
    events = tables["player_event"]
    answers["sampled"] = {}
    for device in sampled_devices:
        status, session = server.call("POST", "/v1/auth/device", body={"device_id": device})
        assert status == 200, session
        token, player_id = session["session_token"], session["player_id"]
        player_column = receipts["columns"].index("player_id")
        receipt_ids = [row[0] for row in receipts["rows"] if row[player_column] == player_id]
        seen = {"player_id": player_id, "receipts": {}}
        for receipt_id in receipt_ids:
            status, receipt = server.call("GET", f"/v1/receipts/{receipt_id}", token)
            assert status == 200, receipt
            seen["receipts"][receipt_id] = receipt
        for name, route in [("wallet", "/v1/wallet"), ("inventory", "/v1/inventory")]:
            status, body = server.call("GET", route, token)
            assert status == 200, body
            seen[name] = body
        seen["history"] = server.pages("/v1/wallet/history", "entries", token)
        event_player = events["columns"].index("player_id")
        ids = [row[0] for row in events["rows"] if row[event_player] == player_id]
        seen["first_event"] = min(ids) if ids else None
        seen["events"] = server.events(token, min(ids)) if ids else []
        answers["sampled"][device] = seen
    server.stop()
    with open(os.path.join(out_dir, "answers.json"), "w") as out:
        json.dump(answers, out, indent=1, sort_keys=True)
    print(f"{out_dir}: migration {dumped['migration']}, "
          f"{sum(len(t['rows']) for t in dumped['tables'])} rows, {len(players)} players")


if __name__ == "__main__":
    main()
