//! The game SDK against a real server: a headless Bevy app (`MinimalPlugins` + `StorePlugin`)
//! logs in, earns, buys, pays an order with the sandbox card, follows the event stream, and
//! survives crashes, outages, bursts and forged answers.

use std::collections::BTreeMap;

use game_sdk::client::{StoreClient, StoreError as ClientError};
use game_sdk::store_api::ErrorCode;
use game_sdk::store_api::catalog::{OfferId, Sku};
use game_sdk::store_api::ledger::Quantity;
use game_sdk::store_api::orders::OrderStatus;
use game_sdk::store_api::sandbox::{PayStatus, cards};
use game_sdk::{Inventory, PendingOrders, StoreSession, StoreStatus, Tab, Wallet};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tests::game::{HeadlessGame, log};
use tests::proxy::{Mode, Proxy};
use tests::{TestServer, seed, send};

fn offer(id: &str) -> OfferId {
    OfferId::parse(id).expect("a seed offer id")
}

async fn create_coin_rule(server: &TestServer) {
    let rule = json!({ "code": "coin", "currency": "gold", "amount": 10, "cap_per_minute": 100 });
    let (status, body) = send(server.admin(Method::POST, "/admin/v1/reward-rules").json(&rule)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// The server's view of a player's wallet and inventory, read over HTTP.
async fn server_holdings(server: &TestServer, token: &str) -> (BTreeMap<String, i64>, BTreeMap<String, i64>) {
    let (_, wallet) = send(server.player(token, Method::GET, "/v1/wallet")).await;
    let (_, inventory) = send(server.player(token, Method::GET, "/v1/inventory")).await;
    let balances = wallet["balances"]
        .as_array()
        .expect("balances")
        .iter()
        .map(|balance| {
            (
                balance["currency"].as_str().expect("a code").to_owned(),
                balance["balance"].as_i64().expect("an amount"),
            )
        })
        .collect();
    let items = inventory["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            (item["sku"].as_str().expect("a sku").to_owned(), item["quantity"].as_i64().expect("a quantity"))
        })
        .filter(|(_, quantity)| *quantity > 0)
        .collect();
    (balances, items)
}

fn game_holdings(game: &HeadlessGame) -> (BTreeMap<String, i64>, BTreeMap<String, i64>) {
    let balances =
        game.resource::<Wallet>().balances().map(|(code, amount)| (code.to_string(), amount)).collect();
    let items =
        game.resource::<Inventory>().items().map(|(sku, quantity)| (sku.to_string(), quantity)).collect();
    (balances, items)
}

/// Runs frames until the game holds what the server holds.
async fn until_game_matches_server(game: &mut HeadlessGame, server: &TestServer, token: &str) {
    let expected = server_holdings(server, token).await;
    game.update_until(&format!("the server's holdings {expected:?}"), |world| {
        let balances: BTreeMap<String, i64> =
            world.resource::<Wallet>().balances().map(|(code, amount)| (code.to_string(), amount)).collect();
        let items: BTreeMap<String, i64> = world
            .resource::<Inventory>()
            .items()
            .map(|(sku, quantity)| (sku.to_string(), quantity))
            .collect();
        (balances, items) == expected
    })
    .await;
    assert_eq!(game_holdings(game), expected);
}

on_both_backends! {
    async fn a_headless_game_earns_buys_and_pays_by_card_and_its_state_matches_the_server(server: TestServer) {
        create_coin_rule(&server).await;
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut game = HeadlessGame::start(server.base_url(), "sdk-flow", dir.path());
        game.until_ready().await;
        let (player_id, token) = server.login_player("sdk-flow").await;
        assert_eq!(game.resource::<StoreSession>().player_id().map(|id| id.to_string()), Some(player_id));
        assert_eq!(game.resource::<Wallet>().balance("gold"), 100, "the initial grant");

        // A reward, then a purchase with the gold.
        let reward = game.requests(|store| store.claim_reward("coin", None)).expect("accepted");
        game.update_until("the reward", |world| !log(world).rewards.is_empty()).await;
        assert_eq!(game.log().rewards[0].request, Some(reward));
        assert_eq!(game.log().rewards[0].earned.amount, 10);
        let purchase =
            game.requests(|store| store.purchase(offer(seed::MAGNET), Quantity::one(), None)).expect("accepted");
        game.update_until("the purchase", |world| !log(world).completed.is_empty()).await;
        let completed = &game.log().completed[0];
        assert_eq!(completed.request, Some(purchase));
        assert!(!completed.resumed);
        assert_eq!(completed.purchase.sku.as_str(), "magnet");
        assert_eq!(completed.receipt.purchase_id, Some(completed.purchase.id), "the receipt verified and names it");
        assert_eq!(game.resource::<Wallet>().balance("gold"), 10);
        assert_eq!(game.resource::<Inventory>().quantity("magnet"), 1);
        until_game_matches_server(&mut game, &server, &token).await;

        // Using the magnet up.
        let sku = Sku::parse("magnet").expect("a sku");
        game.requests(|store| store.consume(sku, Quantity::one())).expect("accepted");
        game.update_until("the consume", |world| !log(world).consumed.is_empty()).await;
        assert_eq!(game.log().consumed[0].remaining, 0);
        assert_eq!(game.resource::<Inventory>().quantity("magnet"), 0);

        // A real-money order paid with the sandbox's test card: fulfilment arrives through the
        // event stream, with its receipt verified, and the gems land in the wallet.
        let start = game.requests(|store| store.start_order(offer(seed::GEMS_SMALL), Quantity::one(), None)).expect("accepted");
        game.update_until("the order", |world| !log(world).orders.is_empty()).await;
        let created = game.log().orders[0].clone();
        assert_eq!(created.request, Some(start));
        assert_eq!(created.order.status, OrderStatus::RequiresPayment);
        assert!(game.resource::<PendingOrders>().orders.contains_key(&created.order.id));
        let pay = game.requests(|store| store.pay_sandbox(created.order.id, cards::SUCCEEDS)).expect("accepted");
        game.update_until("the order fulfilled", |world| {
            log(world).orders.iter().any(|update| update.order.status == OrderStatus::Fulfilled)
        })
        .await;
        assert_eq!(game.log().payments[0].request, pay);
        assert_eq!(game.log().payments[0].status, PayStatus::Succeeded);
        let fulfilled = game.log().orders.iter().find(|update| update.order.status == OrderStatus::Fulfilled).expect("fulfilled");
        assert_eq!(fulfilled.request, None, "news from the event stream, not an answer to a request");
        assert!(fulfilled.order.receipt.is_some(), "announced with its verified receipt");
        assert!(!game.resource::<PendingOrders>().orders.contains_key(&created.order.id), "no longer pending");
        until_game_matches_server(&mut game, &server, &token).await;
        assert!(game.resource::<Wallet>().balance("gems") > 0);

        // A micro-price onto the tab; the tab is visible; settling $0.05 early is refused with
        // words a player understands.
        game.requests(|store| store.purchase(offer(seed::EXTRA_LIFE), Quantity::one(), Some(0))).expect("accepted");
        game.update_until("the tab purchase", |world| {
            log(world).completed.len() == 2 && world.resource::<Tab>().open().is_some()
        })
        .await;
        assert_eq!(game.log().completed[1].purchase.charged_to_tab.as_ref().map(ToString::to_string), Some("0.05 USD".to_owned()));
        assert_eq!(game.resource::<Tab>().open().map(|tab| tab.amount.to_string()), Some("0.05 USD".to_owned()));
        let settle = game.requests(|store| store.settle_tab(None)).expect("accepted");
        game.update_until("the settle refusal", |world| {
            log(world).errors.iter().any(|error| error.request == Some(settle))
        })
        .await;
        let refusal = game.log().errors.iter().find(|error| error.request == Some(settle)).expect("refused");
        assert_eq!(refusal.error.code(), Some(ErrorCode::AmountBelowMinimum));
        assert_eq!(refusal.error.player_message(), "That amount is too small to pay by card.");

        until_game_matches_server(&mut game, &server, &token).await;
        assert!(game.log().errors.iter().all(|error| error.request == Some(settle)), "no other error: {:?}", game.log().errors);
        drop(game);
        assert!(tests::pending_records(dir.path()).is_empty(), "every finished request was forgotten");
        server.assert_audit_clean().await;
    }
}

/// A game buys a magnet; the server takes the purchase, but its answer never reaches the game,
/// which then dies with the request on disk. Returns the player's token.
async fn purchase_cut_off_by_a_crash(
    server: &TestServer,
    proxy: &Proxy,
    device: &str,
    dir: &std::path::Path,
) -> String {
    let mut game = HeadlessGame::start(&proxy.base_url(), device, dir);
    game.until_ready().await;
    let (_, token) = server.login_player(device).await;
    proxy.set_mode(Mode::HoldResponses);
    game.requests(|store| store.purchase(offer(seed::MAGNET), Quantity::one(), None)).expect("accepted");
    let deadline = std::time::Instant::now() + tests::game::GAME_WAIT;
    while server.balance(&token, "gold").await != 0 {
        game.update();
        assert!(std::time::Instant::now() < deadline, "the server never took the purchase");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(tests::pending_records(dir).len(), 1, "written down before it was sent");
    assert!(game.log().completed.is_empty() && game.log().failed.is_empty(), "the game never heard back");
    drop(game);
    proxy.drop_connections();
    proxy.set_mode(Mode::Pass);
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_cut_off_by_a_crash_completes_once_after_the_game_restarts() {
    let server = TestServer::start(tests::Backend::Sqlite).await.expect("SQLite always runs");
    let proxy = Proxy::start(server.base_url()).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let token = purchase_cut_off_by_a_crash(&server, &proxy, "sdk-crash", dir.path()).await;

    // A new run with the same records resumes it: completed once, one debit.
    let mut game = HeadlessGame::start(&proxy.base_url(), "sdk-crash", dir.path());
    game.until_ready().await;
    game.update_until("the resumed purchase", |world| !log(world).completed.is_empty()).await;
    for _ in 0..50 {
        game.update();
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let completed = &game.log().completed;
    assert_eq!(completed.len(), 1, "reported once: {completed:?}");
    assert!(completed[0].resumed);
    assert_eq!(completed[0].request, None);
    assert_eq!(server.balance(&token, "gold").await, 0, "100 gold, debited once");
    assert_eq!(server.count("select count(*) from purchase").await, 1, "one purchase on the server");
    assert_eq!(game.resource::<Inventory>().quantity("magnet"), 1);
    drop(game);
    assert!(tests::pending_records(dir.path()).is_empty(), "the record is gone once reported");
    server.assert_audit_clean().await;
}

/// The review's M3: a purchase left in flight longer than the server keeps its key is dropped
/// and reported, never sent again (the server, having forgotten the key, would run it twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_left_in_flight_past_the_key_retention_is_dropped_not_repeated() {
    let server = TestServer::start(tests::Backend::Sqlite).await.expect("SQLite always runs");
    let proxy = Proxy::start(server.base_url()).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let token = purchase_cut_off_by_a_crash(&server, &proxy, "sdk-stale", dir.path()).await;

    // A week later (the record says so), and the server has forgotten the key.
    let records = tests::pending_records(dir.path());
    assert_eq!(records.len(), 1);
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&records[0]).expect("the record")).expect("JSON");
    let week_s = 7 * 24 * 60 * 60;
    record["created_at_s"] = (record["created_at_s"].as_u64().expect("a timestamp") - week_s).into();
    std::fs::write(&records[0], serde_json::to_vec(&record).expect("JSON")).expect("written");
    let db = store_server::db::Db::connect(server.db().url(), 2, std::time::Duration::from_secs(30))
        .await
        .expect("connect");
    store_server::ledger::idempotency::delete_expired_keys(&db, std::time::Duration::ZERO)
        .await
        .expect("cleanup");
    db.close().await;

    let mut game = HeadlessGame::start(&proxy.base_url(), "sdk-stale", dir.path());
    game.until_ready().await;
    game.update_until("the dropped request's report", |world| {
        log(world).errors.iter().any(|error| matches!(error.error, ClientError::Abandoned { .. }))
    })
    .await;
    for _ in 0..50 {
        game.update();
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(game.log().completed.is_empty(), "never reported as a purchase: {:?}", game.log().completed);
    assert_eq!(server.count("select count(*) from purchase").await, 1, "and never sent again");
    assert_eq!(server.balance(&token, "gold").await, 0, "debited once");
    assert!(tests::pending_records(dir.path()).is_empty(), "the record is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_game_goes_offline_when_the_server_stops_and_is_ready_again_when_it_returns() {
    let server = TestServer::start(tests::Backend::Sqlite).await.expect("SQLite always runs");
    let proxy = Proxy::start(server.base_url()).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut game = HeadlessGame::start(&proxy.base_url(), "sdk-outage", dir.path());
    game.until_ready().await;

    proxy.set_upstream(None);
    let (db, key) = server.stop().await;
    game.update_until("Offline", |world| tests::game::status(world) == StoreStatus::Offline).await;
    game.update_until("a StoreError for the outage", |world| {
        log(world).errors.iter().any(|error| error.request.is_none() && error.error.is_transport())
    })
    .await;
    let outage = game.log().errors.iter().find(|error| error.request.is_none()).expect("an outage error");
    assert!(
        outage.error.player_message().starts_with("Cannot reach the store"),
        "{}",
        outage.error.player_message()
    );

    let server = TestServer::start_on(db, Some(key), |_| {}).await;
    proxy.set_upstream(Some(server.base_url()));
    game.update_until("Ready again", |world| tests::game::status(world) == StoreStatus::Ready).await;
    let statuses = &game.log().statuses;
    let first_ready = statuses.iter().position(|status| *status == StoreStatus::Ready).expect("was ready");
    let offline = statuses[first_ready..]
        .iter()
        .position(|status| *status == StoreStatus::Offline)
        .expect("went offline");
    assert!(statuses[first_ready + offline..].contains(&StoreStatus::Ready), "back to Ready: {statuses:?}");
    assert_eq!(statuses.last(), Some(&StoreStatus::Ready));

    // And it works again.
    game.requests(|store| store.purchase(offer(seed::MAGNET), Quantity::one(), None)).expect("accepted");
    game.update_until("a purchase after the outage", |world| !log(world).completed.is_empty()).await;
    server.assert_audit_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seventeen_requests_at_once_sixteen_are_accepted_one_is_busy_and_none_is_lost() {
    let server = TestServer::start(tests::Backend::Sqlite).await.expect("SQLite always runs");
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut game = HeadlessGame::start(server.base_url(), "sdk-burst", dir.path());
    game.until_ready().await;
    let (player_id, token) = server.login_player("sdk-burst").await;
    server.grant(&player_id, "gold", 10_000).await;

    let outcomes: Vec<_> = game.requests(|store| {
        (0..17).map(|_| store.purchase(offer(seed::MAGNET), Quantity::one(), None)).collect()
    });
    let accepted: Vec<_> = outcomes.iter().filter_map(|outcome| outcome.as_ref().ok().copied()).collect();
    let busy: Vec<_> = outcomes.iter().filter_map(|outcome| outcome.as_ref().err().copied()).collect();
    assert_eq!(accepted.len(), 16);
    assert_eq!(busy.len(), 1);
    assert_eq!(busy[0].in_flight_max, 16);
    assert!(outcomes[16].is_err(), "the seventeenth is the one refused");
    assert_eq!(game.requests(|store| store.in_flight()), 16);

    game.update_until("sixteen purchases", |world| log(world).completed.len() >= 16).await;
    let mut answered: Vec<_> =
        game.log().completed.iter().filter_map(|completed| completed.request).collect();
    answered.sort();
    assert_eq!(answered, accepted, "each accepted request answered once");
    assert_eq!(server.count("select count(*) from purchase").await, 16);
    assert_eq!(server.balance(&token, "gold").await, 10_100 - 1_600);
    assert_eq!(game.requests(|store| store.in_flight()), 0, "every slot given back");
    assert!(game.requests(|store| store.refresh()).is_ok(), "and new requests are accepted");
    until_game_matches_server(&mut game, &server, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_receipt_is_refused_and_never_reported_as_a_purchase() {
    let server = TestServer::start(tests::Backend::Sqlite).await.expect("SQLite always runs");
    let proxy = Proxy::start(server.base_url()).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut game = HeadlessGame::start(&proxy.base_url(), "sdk-forged", dir.path());
    game.until_ready().await;

    proxy.set_mode(Mode::TamperSignatures);
    let request =
        game.requests(|store| store.purchase(offer(seed::MAGNET), Quantity::one(), None)).expect("accepted");
    game.update_until("the refusal", |world| !log(world).failed.is_empty()).await;
    let failed = &game.log().failed[0];
    assert_eq!(failed.request, Some(request));
    assert!(matches!(failed.error, ClientError::ReceiptInvalid(_)), "{:?}", failed.error);
    assert!(game.log().completed.is_empty(), "never reported as complete");
    assert!(game.log().errors.iter().any(|error| error.request == Some(request)), "and a StoreError");

    // The plain client refuses it too.
    let client = StoreClient::new(&proxy.base_url()).expect("a client");
    client
        .login(&game_sdk::store_api::auth::DeviceLoginRequest {
            device_id: game_sdk::store_api::auth::DeviceId::parse("sdk-forged-2").expect("an id"),
            country: None,
        })
        .await
        .expect("logged in");
    let request = game_sdk::store_api::ledger::PurchaseRequest {
        offer_id: offer(seed::MAGNET),
        quantity: Quantity::one(),
        price_index: None,
        immediate_delivery_consent: false,
    };
    let outcome = client.purchase(&request, &game_sdk::client::IdempotencyKey::new()).await;
    assert!(matches!(outcome, Err(ClientError::ReceiptInvalid(_))), "{outcome:?}");
    proxy.set_mode(Mode::Pass);
    let honest = client.purchase(&request, &game_sdk::client::IdempotencyKey::new()).await;
    assert!(matches!(honest, Err(ClientError::Api { code: ErrorCode::InsufficientFunds, .. })), "{honest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_client_serves_non_bevy_programs_with_typed_errors() {
    let server = TestServer::start(tests::Backend::Sqlite).await.expect("SQLite always runs");
    let client = StoreClient::new(server.base_url()).expect("a client");
    let not_logged_in = client.wallet().await;
    assert_eq!(not_logged_in, Err(ClientError::NotLoggedIn));
    let session = client
        .login(&game_sdk::store_api::auth::DeviceLoginRequest {
            device_id: game_sdk::store_api::auth::DeviceId::parse("plain-rust").expect("an id"),
            country: None,
        })
        .await
        .expect("logged in");
    let wallet = client.wallet().await.expect("a wallet");
    assert!(
        wallet.balances.iter().any(|balance| balance.currency.as_str() == "gold" && balance.balance == 100)
    );
    let game_sdk::client::CatalogFetch::Changed { etag, .. } = client.catalog(None).await.expect("a catalog")
    else {
        panic!("the first fetch carries the catalog");
    };
    assert_eq!(
        client.catalog(etag.as_deref()).await.expect("checked"),
        game_sdk::client::CatalogFetch::Unchanged
    );

    let key = game_sdk::client::IdempotencyKey::new();
    let request = game_sdk::store_api::ledger::PurchaseRequest {
        offer_id: offer(seed::SKIN_RED),
        quantity: Quantity::one(),
        price_index: None,
        immediate_delivery_consent: false,
    };
    let refused = client.purchase(&request, &key).await.expect_err("500 gold is more than 100");
    assert_eq!(refused.code(), Some(ErrorCode::InsufficientFunds));
    assert_eq!(refused.player_message(), "Not enough gold: this costs 500 and you have 100.");
    assert!(!refused.leaves_request_open());

    // Transport failures are retried, then reported as such.
    let nobody = StoreClient::with_retry(
        "http://127.0.0.1:9",
        game_sdk::client::RetryPolicy { attempts_max: 2, ..game_sdk::client::RetryPolicy::default() },
    )
    .expect("a client");
    let unreachable = nobody.catalog(None).await.expect_err("nobody listens on port 9");
    assert!(unreachable.is_transport() && unreachable.leaves_request_open(), "{unreachable:?}");

    let viewed = client
        .store_viewed(&game_sdk::store_api::analytics::StoreViewedRequest {
            offer_ids: vec![offer(seed::MAGNET)],
        })
        .await
        .expect("recorded");
    assert_eq!(viewed.recorded, 1);
    let unknown = client
        .store_viewed(&game_sdk::store_api::analytics::StoreViewedRequest {
            offer_ids: vec![offer("019a6b1e-00ff-7000-8000-0000000000ff")],
        })
        .await
        .expect_err("not in the catalog");
    assert_eq!(unknown.code(), Some(ErrorCode::InvalidRequest));

    let history = client.history(None, Some(5)).await.expect("a history");
    assert_eq!(history.entries.len(), 1, "the initial grant");
    assert_eq!(session.player_id, client.session().expect("a session").player_id);
}
