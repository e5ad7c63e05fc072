//! The writer's set path (a batch read, decided and written with a fixed number of statements)
//! answers exactly as running the same requests one at a time does.
//!
//! One batch holds duplicates of a key (replayed, and reused with another body), a player's
//! accepted and refused purchases, consumptions, reward claims (one past its cap) and operator
//! grants, tab purchases (a new tab, past the credit limit, at the threshold, a flagged player),
//! a refusal replayed, purchase limits, stock (two players after the last units, in different
//! rounds), refusals decided before any work, writes of a revoked session, and requests of many
//! players. The same requests, in the same order, go one at a time to a server without
//! group commit. Every answer (status, replay header, body without ids, times and signatures),
//! every wallet, inventory and tab, and the audit must agree.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use store_api::receipt::{ReceiptKeys, SignedReceipt, verify_receipt};
use tests::{Backend, TestServer, seed};

/// A request of the scenario: (player, path, key, body).
type Request = (usize, &'static str, &'static str, Value);

const PURCHASES: &str = "/v1/purchases";
const CONSUME_MAGNET: &str = "/v1/inventory/magnet/consume";
const COIN: &str = "/v1/rewards/coin";
/// An operator's grant to the request's player (`/admin/v1/players/{id}/grants`).
const GRANT: &str = "grant";

/// Rounds of requests; each player sends at most one per round, so the answers (which carry
/// the player's wallet) do not depend on the order within a round.
fn rounds() -> Vec<Vec<Request>> {
    let magnet = json!({ "offer_id": seed::MAGNET });
    let one = json!({ "quantity": 1 });
    let mut first: Vec<Request> = vec![
        (0, PURCHASES, "a-1", magnet.clone()),
        (1, PURCHASES, "b-1", magnet.clone()),
        (2, PURCHASES, "c-1", json!({ "offer_id": seed::SKIN_RED })),
        (3, PURCHASES, "d-1", json!({ "offer_id": "019a6b1e-00ff-7000-8000-0000000000ff" })),
    ];
    for player in 4..12 {
        first.push((player, PURCHASES, "many", magnet.clone()));
    }
    first.push((12, COIN, "m-1", json!({})));
    first.push((13, COIN, "n-1", json!({ "amount": 11 })));
    first.push((14, "/v1/rewards/nope", "o-1", json!({})));
    let gift = json!({ "currency": "gold", "amount": 50, "items": [{ "sku": "magnet", "quantity": 1 }], "reason": "test" });
    first.push((15, GRANT, "g-15", gift.clone()));
    first.push((REVOKED, PURCHASES, "revoked-1", magnet.clone()));
    first.push((REVOKED, COIN, "revoked-2", json!({})));
    vec![
        first,
        vec![
            (0, PURCHASES, "a-1", magnet.clone()),
            (1, PURCHASES, "b-2", magnet.clone()),
            (2, PURCHASES, "c-2", json!({ "offer_id": seed::SKIN_RED })),
            (3, PURCHASES, "d-2", json!({ "offer_id": seed::GEMS_SMALL })),
            (4, CONSUME_MAGNET, "e-2", one.clone()),
            (5, CONSUME_MAGNET, "f-2", json!({ "quantity": 2 })),
            (6, "/v1/inventory/skin.red/consume", "g-2", one.clone()),
            (7, "/v1/inventory/nothing/consume", "h-2", one.clone()),
            (12, COIN, "m-2", json!({ "amount": 10 })),
            (15, GRANT, "g-15", gift.clone()),
            (REVOKED, CONSUME_MAGNET, "revoked-3", one.clone()),
            // Stock (3): two taken.
            (13, PURCHASES, "s-1", json!({ "offer_id": TEE, "quantity": 2 })),
            // Tabs: $4.95 on a new tab; a flagged player gets no tab.
            (8, PURCHASES, "i-2", json!({ "offer_id": seed::EXTRA_LIFE, "quantity": 99 })),
            (FLAGGED, PURCHASES, "j-2", json!({ "offer_id": seed::EXTRA_LIFE })),
            (REVOKED, PURCHASES, "revoked-1", magnet.clone()),
            (10, GRANT, "g-10", json!({ "items": [{ "sku": "skin.red", "quantity": 2 }], "reason": "test" })),
            (11, GRANT, "g-11", json!({ "currency": "nope", "amount": 5, "reason": "test" })),
        ],
        vec![
            (0, PURCHASES, "a-1", json!({ "offer_id": seed::MAGNET, "quantity": 2 })),
            (1, PURCHASES, "b-2", magnet.clone()),
            (2, PURCHASES, "c-3", json!({ "offer_id": seed::SHIELD })),
            (3, PURCHASES, "d-3", json!({ "offer_id": seed::MAGNET, "price_index": 4 })),
            (4, CONSUME_MAGNET, "e-3", one.clone()),
            (5, CONSUME_MAGNET, "f-3", one.clone()),
            (12, COIN, "m-3", json!({})),
            (15, GRANT, "g-15b", gift),
            // Past the $5.00 credit limit of a player who never settled; a flagged player
            // still buys with gold.
            (8, PURCHASES, "i-3", json!({ "offer_id": seed::EXTRA_LIFE, "quantity": 2 })),
            (FLAGGED, PURCHASES, "j-3", magnet.clone()),
            // One left: two are out of stock.
            (14, PURCHASES, "t-1", json!({ "offer_id": TEE, "quantity": 2 })),
        ],
        vec![
            (0, PURCHASES, "a-2", json!({ "offer_id": seed::EXTRA_LIFE, "price_index": 1 })),
            (1, PURCHASES, "b-3", json!({ "offer_id": seed::SHIELD })),
            (5, CONSUME_MAGNET, "f-3", one),
            // Exactly at the credit limit ($5.00), which is the threshold.
            (8, PURCHASES, "i-4", json!({ "offer_id": seed::EXTRA_LIFE })),
            (14, PURCHASES, "t-2", json!({ "offer_id": TEE })),
        ],
        vec![
            (0, PURCHASES, "a-3", json!({ "offer_id": seed::EXTRA_LIFE })),
            (1, PURCHASES, "b-1", magnet),
            // The tab reached its threshold: settle it first.
            (8, PURCHASES, "i-5", json!({ "offer_id": seed::EXTRA_LIFE })),
            (13, PURCHASES, "s-2", json!({ "offer_id": TEE })),
        ],
    ]
}

async fn send_request(
    server: &TestServer,
    (id, token): &(String, String),
    (_, path, key, body): &Request,
) -> Answer {
    let request = if *path == GRANT {
        server.admin(Method::POST, &format!("/admin/v1/players/{id}/grants"))
    } else {
        server.player(token, Method::POST, path)
    };
    let response = request.header("idempotency-key", *key).json(body).send().await.expect("an answer");
    let status = response.status();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if let Some(receipt) = body.get("receipt") {
        check_receipt(server, token, receipt).await;
    }
    (status, replayed, normalized(&body))
}

/// A receipt in an answer verifies with the store's published keys, and is the one stored.
async fn check_receipt(server: &TestServer, token: &str, receipt: &Value) {
    let receipt: SignedReceipt = serde_json::from_value(receipt.clone()).expect("a receipt");
    let keys = server.request(Method::GET, "/v1/receipt-keys").send().await.expect("the keys");
    let keys: ReceiptKeys = keys.json().await.expect("JSON keys");
    verify_receipt(&receipt, &keys.keys).expect("an answer's receipt verifies");
    let path = format!("/v1/receipts/{}", receipt.id);
    let stored = server.player(token, Method::GET, &path).send().await.expect("the stored receipt");
    assert_eq!(stored.status(), StatusCode::OK);
    assert_eq!(stored.json::<SignedReceipt>().await.expect("a receipt"), receipt, "stored as answered");
}

/// Players and the gold granted to each beyond the initial grant.
const PLAYERS: usize = 17;
/// The player whose session is revoked (by an erasure) before the scenario: each of its writes
/// is refused `session_revoked` and claims no key.
const REVOKED: usize = 16;
/// A stocked item (3 in stock, 10 gold each) published before the scenario.
const TEE: &str = "019a6b1e-00ee-7000-8000-0000000000ee";

/// The player flagged for review before the scenario: no tab, purchases with gold as before.
const FLAGGED: usize = 9;
fn extra_gold(player: usize) -> i64 {
    match player {
        0 => 10_000,
        2 | FLAGGED => 1_000,
        _ => 0,
    }
}

/// An answer without what differs between two runs: ids, times, signatures.
fn normalized(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| {
                    !matches!(key.as_str(), "created_at" | "issued_at" | "signature" | "jws" | "key_id")
                })
                .map(|(key, value)| {
                    let value = match (key.as_str(), value) {
                        ("payload", Value::String(text)) => {
                            normalized(&serde_json::from_str(text).expect("a receipt payload is JSON"))
                        }
                        _ => normalized(value),
                    };
                    (key.clone(), value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        Value::String(text) if uuid::Uuid::parse_str(text).is_ok() => Value::String("<id>".to_owned()),
        other => other.clone(),
    }
}

/// One answer: status, whether replayed, normalized body.
type Answer = (StatusCode, bool, Value);

async fn players(server: &TestServer) -> Vec<(String, String)> {
    // Capped per day, so neither run crosses a window while the other does not.
    let rule = json!({ "code": "coin", "currency": "gold", "amount": 10, "cap_per_day": 25 });
    let created =
        server.admin(Method::POST, "/admin/v1/reward-rules").json(&rule).send().await.expect("a rule");
    assert_eq!(created.status(), StatusCode::CREATED);
    server
        .publish_offer(
            json!({ "sku": "tee", "kind": "consumable", "name": "Launch tee", "stock": 3 }),
            json!({ "id": TEE, "sku": "tee", "prices": [{ "currency": "gold", "amount": 10 }] }),
        )
        .await;
    // All at once: logins and grants go through the writer, which waits 4 s for each batch.
    let logins =
        (0..PLAYERS).map(|index| async move { server.login_player(&format!("set-path-{index}")).await });
    let players = futures_util::future::join_all(logins).await;
    let grants = players
        .iter()
        .enumerate()
        .filter(|(index, _)| extra_gold(*index) > 0)
        .map(|(index, (id, _))| server.grant(id, "gold", extra_gold(index)));
    futures_util::future::join_all(grants).await;
    let flag = json!({ "flagged": true, "reason": "a review before the scenario" });
    let path = format!("/admin/v1/players/{}", players[FLAGGED].0);
    let flagged = server.admin(Method::PATCH, &path).json(&flag).send().await.expect("a flag");
    assert_eq!(flagged.status(), StatusCode::OK);
    let erase = json!({ "reason": "revoked before the scenario" });
    let path = format!("/admin/v1/players/{}/erase", players[REVOKED].0);
    let erased = server.admin(Method::POST, &path).json(&erase).send().await.expect("an erasure");
    assert_eq!(erased.status(), StatusCode::OK);
    players
}

async fn holdings(server: &TestServer, players: &[(String, String)]) -> Vec<Value> {
    let mut holdings = Vec::new();
    for (_, token) in &players[..REVOKED] {
        for path in ["/v1/wallet", "/v1/inventory"] {
            let response = server.player(token, Method::GET, path).send().await.expect("a read");
            assert_eq!(response.status(), StatusCode::OK);
            holdings.push(response.json::<Value>().await.expect("JSON"));
        }
        // Tabs: what each owes, and for how many units (ids and times differ between runs).
        let response = server.player(token, Method::GET, "/v1/tab").send().await.expect("a read");
        assert_eq!(response.status(), StatusCode::OK);
        let tabs = response.json::<Value>().await.expect("JSON");
        let owed: Vec<Value> = tabs["tabs"]
            .as_array()
            .expect("tabs")
            .iter()
            .map(|tab| json!([tab["status"], tab["amount"], tab["item_count"], tab["settlement_required"]]))
            .collect();
        holdings.push(Value::Array(owed));
    }
    holdings
}

/// (requests the writer's set path decided, batches) so far on this server.
async fn writer_counts(server: &TestServer) -> (u64, u64) {
    (
        server.metric("coinslot_set_path_requests_total").await,
        server.metric("coinslot_group_commit_batch_size_count").await,
    )
}

async fn one_batch_answers_as_one_at_a_time(backend: Backend) {
    let Some(batched) = TestServer::start_with(backend, |settings| {
        settings.group_commit = true;
        settings.batch_wait = Duration::from_secs(4);
        settings.batch_size_max = 256;
    })
    .await
    else {
        return;
    };
    let Some(alone) = TestServer::start_with(backend, |settings| settings.group_commit = false).await else {
        return;
    };
    let batched_players = players(&batched).await;
    let alone_players = players(&alone).await;
    let (decided_before, batches_before) = writer_counts(&batched).await;

    // The batched server: every round sent together, a round 300 ms after the one before, all
    // inside one batch (the writer waits 4 s for more).
    let batched = Arc::new(batched);
    let mut tasks = tokio::task::JoinSet::new();
    let mut position = 0;
    for (round, requests) in rounds().into_iter().enumerate() {
        for request in requests {
            let (server, player) = (Arc::clone(&batched), batched_players[request.0].clone());
            let at = Duration::from_millis(300 * u64::try_from(round).expect("few rounds"));
            let index = position;
            position += 1;
            tasks.spawn(async move {
                tokio::time::sleep(at).await;
                (index, send_request(&server, &player, &request).await)
            });
        }
    }
    let mut batched_answers = vec![None; position];
    while let Some(joined) = tasks.join_next().await {
        let (index, answer) = joined.expect("a task");
        batched_answers[index] = Some(answer);
    }

    // The same requests one at a time, in the same order.
    let mut alone_answers = Vec::new();
    for requests in rounds() {
        for request in requests {
            alone_answers.push(Some(send_request(&alone, &alone_players[request.0], &request).await));
        }
    }

    let requests: Vec<Request> = rounds().into_iter().flatten().collect();
    for ((request, batched), alone) in requests.iter().zip(&batched_answers).zip(&alone_answers) {
        assert_eq!(batched, alone, "request {request:?}: batched vs one at a time");
    }
    for (request, answer) in
        requests.iter().zip(&batched_answers).filter(|((player, ..), _)| *player == REVOKED)
    {
        let (status, _, body) = answer.as_ref().expect("answered");
        assert_eq!(
            (*status, &body["error"]["code"]),
            (StatusCode::UNAUTHORIZED, &json!("session_revoked")),
            "{request:?}"
        );
    }
    // The tab cases are what they say they are.
    let expected_tabs = [
        ("i-2", 201, None),
        ("i-3", 409, Some("tab_settlement_required")),
        ("i-4", 201, None),
        ("i-5", 409, Some("tab_settlement_required")),
        ("j-2", 403, Some("player_flagged")),
        ("j-3", 201, None),
        ("s-1", 201, None),
        ("t-1", 409, Some("out_of_stock")),
        ("t-2", 201, None),
        ("s-2", 409, Some("out_of_stock")),
    ];
    for (key, status, code) in expected_tabs {
        let index =
            requests.iter().position(|(_, _, request_key, _)| *request_key == key).expect("in the scenario");
        let (got, _, body) = alone_answers[index].as_ref().expect("answered");
        assert_eq!(got.as_u16(), status, "{key}: {body}");
        if let Some(code) = code {
            assert_eq!(body["error"]["code"], code, "{key}: {body}");
        }
    }
    let statuses: Vec<u16> =
        alone_answers.iter().map(|answer| answer.as_ref().expect("answered").0.as_u16()).collect();
    for expected in [200, 201, 401, 402, 403, 404, 409, 400, 422, 429] {
        assert!(statuses.contains(&expected), "the scenario covers {expected}: {statuses:?}");
    }
    assert!(
        alone_answers.iter().any(|answer| answer.as_ref().is_some_and(|(_, replayed, _)| *replayed)),
        "the scenario replays answers"
    );
    assert_eq!(
        holdings(&batched, &batched_players).await,
        holdings(&alone, &alone_players).await,
        "every wallet and inventory ends the same"
    );

    let (decided_after, batches_after) = writer_counts(&batched).await;
    assert_eq!(batches_after - batches_before, 1, "the whole scenario was one batch");
    assert_eq!(
        decided_after - decided_before,
        u64::try_from(requests.len()).expect("a count"),
        "the set path decided every request, purchase limits and stock included"
    );
    for server in [&batched, &alone] {
        assert_eq!(
            server.count("select count(*) from idempotency where key like 'revoked-%'").await,
            0,
            "a revoked session's writes claim no key"
        );
    }
    batched.assert_audit_clean().await;
    alone.assert_audit_clean().await;
}

on_each_backend!(one_batch_answers_as_one_at_a_time);

/// A batch whose catalog the server has not rendered yet (an operator published a new version
/// since) runs on the per-request path, which renders it: every request is answered as one at a
/// time would be, each player's in the order sent.
async fn a_stale_catalog_sends_the_batch_down_the_per_request_path(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |settings| {
        settings.group_commit = true;
        settings.batch_wait = Duration::from_secs(2);
    })
    .await
    else {
        return;
    };
    let logins = (0..2).map(|index| {
        let server = &server;
        async move { server.login_player(&format!("stale-{index}")).await }
    });
    let players = futures_util::future::join_all(logins).await;
    let grants = players.iter().map(|(id, _)| server.grant(id, "gold", 1_000));
    futures_util::future::join_all(grants).await;
    server
        .publish_offer(
            json!({ "sku": "stale_tee", "kind": "consumable", "name": "Stale tee" }),
            json!({ "sku": "stale_tee", "prices": [{ "currency": "gold", "amount": 10 }] }),
        )
        .await;
    let (decided_before, batches_before) = writer_counts(&server).await;

    // Each player: three magnets, 300 ms apart, all in one batch.
    let server = Arc::new(server);
    let mut tasks = tokio::task::JoinSet::new();
    for (player, (_, token)) in players.iter().enumerate() {
        for round in 0..3_u64 {
            let (server, token) = (Arc::clone(&server), token.clone());
            tasks.spawn(async move {
                tokio::time::sleep(Duration::from_millis(300 * round)).await;
                let key = format!("stale-{player}-{round}");
                let response =
                    server.purchase(&token, &key, &json!({ "offer_id": seed::MAGNET })).send().await;
                let body: Value = response.expect("an answer").json().await.expect("JSON");
                (player, round, body)
            });
        }
    }
    let mut gold = vec![Vec::new(); players.len()];
    while let Some(joined) = tasks.join_next().await {
        let (player, round, body) = joined.expect("a task");
        let balance = body["wallet"]["balances"]
            .as_array()
            .and_then(|balances| balances.iter().find(|balance| balance["currency"] == "gold"))
            .and_then(|balance| balance["balance"].as_i64())
            .unwrap_or_else(|| panic!("a purchase's wallet: {body}"));
        gold[player].push((round, balance));
    }
    for (player, mut balances) in gold.into_iter().enumerate() {
        balances.sort_unstable();
        let after: Vec<i64> = balances.into_iter().map(|(_, balance)| balance).collect();
        assert_eq!(after, vec![1_000, 900, 800], "player {player}'s purchases in the order sent");
    }
    let (decided_after, batches_after) = writer_counts(&server).await;
    assert_eq!(batches_after - batches_before, 1, "one batch");
    assert_eq!(decided_after, decided_before, "the set path decided nothing: the catalog was stale");
    assert_eq!(server.metric("coinslot_set_path_fallbacks_total").await, 0, "deferred, not failed");
    server.assert_audit_clean().await;
}

on_each_backend!(a_stale_catalog_sends_the_batch_down_the_per_request_path);

/// Device logins in one batch take the set path: a known player is found (its first country
/// kept), a new device is created once with its initial grant however often it logs in, and
/// every session works.
async fn logins_in_one_batch_find_or_create_each_player_once(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |settings| {
        settings.group_commit = true;
        settings.batch_wait = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let (known, _) = server.login_player("batch-login-known").await;
    let (decided_before, batches_before) = writer_counts(&server).await;

    // 100 ms apart, so their order in the batch is the order sent.
    let logins = [
        json!({ "device_id": "batch-login-known", "country": "DE" }),
        json!({ "device_id": "batch-login-new-1", "country": "FR" }),
        json!({ "device_id": "batch-login-new-1", "country": "JP" }),
        json!({ "device_id": "batch-login-new-2" }),
    ];
    let server = Arc::new(server);
    let mut tasks = tokio::task::JoinSet::new();
    for (index, login) in logins.into_iter().enumerate() {
        let server = Arc::clone(&server);
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(100 * u64::try_from(index).expect("few"))).await;
            let response = server.request(Method::POST, "/v1/auth/device").json(&login).send().await;
            let response = response.expect("an answer");
            assert_eq!(response.status(), StatusCode::OK);
            (index, response.json::<Value>().await.expect("JSON"))
        });
    }
    let mut sessions = vec![Value::Null; 4];
    while let Some(joined) = tasks.join_next().await {
        let (index, session) = joined.expect("a task");
        sessions[index] = session;
    }
    let (decided_after, batches_after) = writer_counts(&server).await;
    assert_eq!(batches_after - batches_before, 1, "one batch");
    assert_eq!(decided_after - decided_before, 4, "the set path took every login");

    assert_eq!(sessions[0]["player_id"], known.as_str(), "a known device is its player");
    assert_eq!(sessions[1]["player_id"], sessions[2]["player_id"], "a new device is created once");
    assert_ne!(sessions[1]["player_id"], sessions[3]["player_id"]);
    for session in &sessions {
        let token = session["session_token"].as_str().expect("a token");
        assert_eq!(server.balance(token, "gold").await, 100, "one initial grant each: {session}");
    }
    let country = |id: &Value| {
        let server = Arc::clone(&server);
        let path = format!("/admin/v1/players/{}", id.as_str().expect("an id"));
        async move {
            let detail = server.admin(Method::GET, &path).send().await.expect("a player");
            detail.json::<Value>().await.expect("JSON")["player"]["country"].clone()
        }
    };
    assert_eq!(country(&sessions[0]["player_id"]).await, "DE", "the first country a known player names");
    assert_eq!(country(&sessions[1]["player_id"]).await, "FR", "the first of the batch's logins");
    assert_eq!(country(&sessions[3]["player_id"]).await, Value::Null);
    server.assert_audit_clean().await;
}

on_each_backend!(logins_in_one_batch_find_or_create_each_player_once);
