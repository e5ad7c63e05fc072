//! A database filled by an earlier layout's code moves to today's layout and answers as before.
//!
//! `tests/fixtures/layout-0013` was made by `scripts/make-layout-fixture.py` with the server of
//! the last commit before the lean ledger layout: `demo-data` and `generate` filled a database
//! through that code's write paths, and its server's answers about that data were recorded
//! (players, histories, orders with receipts, analytics, and a sample of players' own wallet,
//! inventory, history, receipts and event stream). Here the rows are loaded into a database
//! migrated only up to that layout, today's migrations and server run on it, and every answer
//! must be the same; the audit must hold.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use sqlx::any::AnyArguments;
use sqlx::{AnyPool, Arguments as _};
use tests::{Backend, TestDb, TestServer, send};

const TABLES: &str = include_str!("../../fixtures/layout-0013/tables.json");
const ANSWERS: &str = include_str!("../../fixtures/layout-0013/answers.json");

/// Rows per insert statement.
const ROWS_PER_INSERT: usize = 100;

/// Each column's kind on this backend: whether it holds integers, and whether it is an identity
/// (PostgreSQL generates it unless told otherwise).
async fn columns(pool: &AnyPool, backend: Backend, table: &str) -> Vec<(String, bool, bool)> {
    let rows: Vec<(String, String, String)> = match backend {
        Backend::Sqlite => {
            sqlx::query_as("select name, lower(type), 'NO' from pragma_table_info($1) order by cid")
        }
        Backend::Postgres => sqlx::query_as(
            "select column_name::text, data_type::text, is_identity::text from information_schema.columns \
             where table_schema = current_schema() and table_name = $1 order by ordinal_position",
        ),
    }
    .bind(table)
    .fetch_all(pool)
    .await
    .expect("the table's columns");
    rows.into_iter().map(|(name, kind, identity)| (name, kind.contains("int"), identity == "YES")).collect()
}

/// Inserts the fixture's rows, table by table in creation order.
async fn load(pool: &AnyPool, backend: Backend, tables: &[Value]) {
    for table in tables {
        let name = table["table"].as_str().expect("a table name");
        let names: Vec<&str> =
            table["columns"].as_array().expect("columns").iter().filter_map(Value::as_str).collect();
        let kinds = columns(pool, backend, name).await;
        let integer = |column: &str| {
            kinds
                .iter()
                .find(|(kind, ..)| kind == column)
                .unwrap_or_else(|| panic!("{name}.{column} is not in the migrated schema"))
                .1
        };
        let identity = kinds.iter().any(|(_, _, identity)| *identity);
        let rows = table["rows"].as_array().expect("rows");
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut arguments = AnyArguments::default();
            let mut tuples = Vec::new();
            for row in chunk {
                let mut places = Vec::new();
                for (column, value) in names.iter().zip(row.as_array().expect("a row")) {
                    if integer(column) {
                        arguments.add(value.as_i64()).expect("an integer argument");
                    } else {
                        arguments.add(value.as_str().map(str::to_owned)).expect("a text argument");
                    }
                    places.push(format!("${}", arguments.len()));
                }
                tuples.push(format!("({})", places.join(", ")));
            }
            let overriding = if identity { " overriding system value" } else { "" };
            let sql =
                format!("insert into {name} ({}){overriding} values {}", names.join(", "), tuples.join(", "));
            sqlx::query_with(sqlx::AssertSqlSafe(sql), arguments)
                .execute(pool)
                .await
                .unwrap_or_else(|error| panic!("loading {name}: {error}"));
        }
        if identity && !rows.is_empty() {
            let sql = format!(
                "select setval(pg_get_serial_sequence('{name}', 'id'), (select max(id) from {name}))"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await.expect("the identity moves on");
        }
    }
}

/// `value` with the base URL it names replaced, so answers of two servers compare.
fn normalized(value: &Value, base_url: &str) -> Value {
    let text = serde_json::to_string(value).expect("JSON").replace(base_url, "<base>");
    without_added_fields(serde_json::from_str(&text).expect("JSON"))
}

/// An answer less the fields the API gained since the fixture was made (an addition is not a
/// change): an order's `provider`, which was the sandbox for every order then; a receipt's
/// `jws` and a receipt key's JWK members. Events carry
/// their data as JSON text, which is read as JSON here, on both sides.
fn without_added_fields(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut map: serde_json::Map<String, Value> =
                map.into_iter().map(|(key, value)| (key, without_added_fields(value))).collect();
            if map.contains_key("checkout_url")
                && let Some(provider) = map.remove("provider")
            {
                assert_eq!(provider, "sandbox", "every order of the fixture was paid through the sandbox");
            }
            // A receipt's JWS, and a receipt key's JWK members (issue 21), came later.
            if map.contains_key("signature") && map.contains_key("payload") {
                map.remove("jws");
            }
            if map.contains_key("public_key") {
                for member in ["kty", "crv", "x", "kid", "use", "alg"] {
                    map.remove(member);
                }
            }
            // Real revenue in the reporting currency came later (issue 21).
            if map.contains_key("rows") {
                map.remove("reporting");
            }
            // A player's age band came later; every player of the fixture is an adult.
            if map.contains_key("blocked")
                && map.contains_key("created_at")
                && let Some(band) = map.remove("age_band")
            {
                assert_eq!(band, "adult", "every player of the fixture is an adult");
            }
            // Money amounts are written with their currency's minor units since (issue 21):
            // compared as numbers ("5" and "5.00" alike), in money and in report rows alike.
            let in_money = map
                .get("currency")
                .and_then(Value::as_str)
                .is_some_and(|code| code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase()));
            if in_money {
                for value in map.values_mut() {
                    if let Value::String(text) = value
                        && text.contains('.')
                        && text.chars().all(|c| c.is_ascii_digit() || c == '.' || c == '-')
                    {
                        *text = text.trim_end_matches('0').trim_end_matches('.').to_owned();
                    }
                }
            }
            Value::Object(map)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(without_added_fields).collect()),
        Value::String(text) if text.starts_with('{') => match serde_json::from_str::<Value>(&text) {
            Ok(inner @ Value::Object(_)) => without_added_fields(inner),
            _ => Value::String(text),
        },
        other => other,
    }
}

/// Every item of a paginated list.
async fn pages(server: &TestServer, token: &str, path: &str, field: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{path}?limit=100");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let (status, page) = send(server.player(token, Method::GET, &url)).await;
        assert_eq!(status, 200, "{url}: {page}");
        items.extend(page[field].as_array().expect("a list").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

/// The player's event stream after `last_event_id`, until it is quiet for a second.
async fn events(server: &TestServer, token: &str, last_event_id: i64) -> Vec<Value> {
    let mut response = server
        .player(token, Method::GET, "/v1/events")
        .header("last-event-id", last_event_id.to_string())
        .send()
        .await
        .expect("the stream opens");
    let mut text = String::new();
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_secs(1), response.chunk()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let mut event = serde_json::Map::new();
        for line in block.lines().filter(|line| !line.starts_with(':')) {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            event.insert(name.to_owned(), Value::from(value.trim()));
        }
        if event.contains_key("data") {
            events.push(Value::Object(event));
        }
    }
    events
}

async fn the_layout_of_migration_13_moves_and_answers_as_before(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let tables: Value = serde_json::from_str(TABLES).expect("the fixture's tables");
    let answers: Value = serde_json::from_str(ANSWERS).expect("the fixture's answers");
    let version = tables["migration"].as_i64().expect("the fixture's migration");
    let store_db =
        store_server::db::Db::connect(db.url(), 2, Duration::from_secs(30)).await.expect("connect");
    store_db.migrate_to(version).await.expect("the fixture's layout");
    load(store_db.pool(), backend, tables["tables"].as_array().expect("tables")).await;
    store_db.close().await;

    let key = answers["operator_key"].as_str().expect("the fixture's operator key").to_owned();
    let old_base = answers["base_url"].as_str().expect("the fixture's base URL");
    let server = TestServer::start_on(std::sync::Arc::new(db), Some(key.clone()), |_| {}).await;
    server.assert_audit_clean().await;
    let same = |what: &str, now: &Value, before: &Value| {
        assert_eq!(
            normalized(now, server.base_url()),
            normalized(before, old_base),
            "{what} is not answered as before the migration"
        );
    };

    let players = pages(&server, &key, "/admin/v1/players", "players").await;
    same("the player list", &Value::from(players.clone()), &answers["players"]);
    assert!(players.len() >= 30, "the fixture has its players: {}", players.len());
    for player in &players {
        let id = player["id"].as_str().expect("an id");
        let (status, detail) = send(server.admin(Method::GET, &format!("/admin/v1/players/{id}"))).await;
        assert_eq!(status, 200, "{detail}");
        same(&format!("player {id}"), &detail, &answers["player_details"][id]);
        let history = pages(&server, &key, &format!("/admin/v1/players/{id}/history"), "entries").await;
        same(&format!("player {id}'s history"), &Value::from(history), &answers["player_histories"][id]);
    }
    let orders = answers["orders"].as_object().expect("orders");
    assert!(!orders.is_empty(), "the fixture has orders");
    for (id, before) in orders {
        let (status, order) = send(server.admin(Method::GET, &format!("/admin/v1/orders/{id}"))).await;
        assert_eq!(status, 200, "{order}");
        same(&format!("order {id}"), &order, before);
    }
    let (from, to) = (answers["from"].as_str().expect("from"), answers["to"].as_str().expect("to"));
    for (report, before) in answers["reports"].as_object().expect("reports") {
        let path = format!("/admin/v1/analytics/{report}?from={from}&to={to}");
        let (status, body) = send(server.admin(Method::GET, &path)).await;
        assert_eq!(status, 200, "{body}");
        same(&format!("the {report} report"), &body, before);
    }

    let mut receipts = 0;
    let mut streamed = 0;
    for (device, before) in answers["sampled"].as_object().expect("sampled players") {
        let (player_id, token) = server.login_player(device).await;
        assert_eq!(
            player_id,
            before["player_id"].as_str().expect("a player id"),
            "{device} is the same player"
        );
        for (name, path) in [("wallet", "/v1/wallet"), ("inventory", "/v1/inventory")] {
            let (status, body) = send(server.player(&token, Method::GET, path)).await;
            assert_eq!(status, 200, "{body}");
            same(&format!("{device}'s {name}"), &body, &before[name]);
        }
        let history = pages(&server, &token, "/v1/wallet/history", "entries").await;
        same(&format!("{device}'s own history"), &Value::from(history), &before["history"]);
        for (id, receipt) in before["receipts"].as_object().expect("receipts") {
            let (status, body) =
                send(server.player(&token, Method::GET, &format!("/v1/receipts/{id}"))).await;
            assert_eq!(status, 200, "{body}");
            same(&format!("{device}'s receipt {id}"), &body, receipt);
            receipts += 1;
        }
        if let Some(first) = before["first_event"].as_i64() {
            let seen = events(&server, &token, first).await;
            same(&format!("{device}'s events"), &Value::from(seen.clone()), &before["events"]);
            streamed += seen.len();
        }
    }
    assert!(receipts > 0 && streamed > 0, "the sample reads receipts ({receipts}) and events ({streamed})");
    server.stop().await;
}

on_each_backend!(the_layout_of_migration_13_moves_and_answers_as_before);
