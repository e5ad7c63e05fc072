//! Consent to immediate delivery (the EU withdrawal waiver for digital content): a store that
//! requires it refuses real-money orders and tab purchases without it, records it on the order,
//! and its receipts say so; virtual-currency purchases need none.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{TestServer, assert_error, seed, send, status_is};

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A receipt's signed payload, parsed.
fn payload(receipt: &Value) -> Value {
    serde_json::from_str(receipt["payload"].as_str().expect("a payload")).expect("JSON")
}

async fn a_required_consent_is_asked_recorded_and_signed(backend: tests::Backend, batching: bool) {
    let Some(server) = TestServer::start_with(backend, |settings| {
        settings.require_delivery_consent = true;
        settings.group_commit = batching;
    })
    .await
    else {
        return;
    };
    let (_, token) = server.login_player("consenting").await;
    let order = |consent: Option<bool>| {
        let mut body = json!({ "offer_id": seed::GEMS_SMALL });
        if let Some(consent) = consent {
            body["immediate_delivery_consent"] = json!(consent);
        }
        send(server.player(&token, Method::POST, "/v1/orders").header("idempotency-key", key()).json(&body))
    };
    let on_tab = |consent: bool| {
        let body =
            json!({ "offer_id": seed::EXTRA_LIFE, "price_index": 0, "immediate_delivery_consent": consent });
        send(server.purchase(&token, &key(), &body))
    };

    let before = server.fingerprint().await;
    for (case, refused) in [
        ("an order without consent", order(None).await),
        ("an order with consent refused", order(Some(false)).await),
        ("a tab purchase without consent", on_tab(false).await),
    ] {
        assert_error(case, &refused, StatusCode::BAD_REQUEST, "delivery_consent_required");
        assert_eq!(refused.1["error"]["details"]["field"], "immediate_delivery_consent", "{case}");
    }
    assert_eq!(server.fingerprint().await, before, "refused without consent: nothing changed");

    // With consent: the order records it, and the receipt of its fulfilment signs it.
    let (status, created) = order(Some(true)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["immediate_delivery_consent"], true, "{created}");
    let (status, _) = server.pay(created["checkout_url"].as_str().expect("url"), "4242424242424242").await;
    assert_eq!(status, StatusCode::OK);
    let id = created["id"].as_str().expect("id");
    let fulfilled = server.wait_for_order(&token, id, status_is("fulfilled")).await;
    assert_eq!(fulfilled["immediate_delivery_consent"], true, "{fulfilled}");
    assert_eq!(payload(&fulfilled["receipt"])["immediate_delivery_consent"], true, "{fulfilled}");

    let (status, bought) = on_tab(true).await;
    assert_eq!(status, StatusCode::CREATED, "{bought}");
    assert_eq!(payload(&bought["receipt"])["immediate_delivery_consent"], true, "{bought}");

    // Virtual currency is not real money: no consent asked, none written.
    let body = json!({ "offer_id": seed::MAGNET });
    let (status, virtual_purchase) = send(server.purchase(&token, &key(), &body)).await;
    assert_eq!(status, StatusCode::CREATED, "{virtual_purchase}");
    assert!(
        payload(&virtual_purchase["receipt"]).get("immediate_delivery_consent").is_none(),
        "{virtual_purchase}"
    );

    // Every receipt still verifies against the published keys.
    let (_, keys) = send(server.request(Method::GET, "/v1/receipt-keys")).await;
    let keys: store_api::receipt::ReceiptKeys = serde_json::from_value(keys).expect("keys");
    for receipt in [&fulfilled["receipt"], &bought["receipt"]] {
        let receipt: store_api::receipt::SignedReceipt =
            serde_json::from_value(receipt.clone()).expect("a receipt");
        let verified = store_api::receipt::verify_receipt(&receipt, &keys.keys).expect("verifies");
        assert_eq!(verified.immediate_delivery_consent, Some(true));
    }
}

in_every_mode!(a_required_consent_is_asked_recorded_and_signed);

on_both_backends! {
    async fn a_store_that_does_not_require_consent_takes_orders_without_it(server: TestServer) {
        let (_, token) = server.login_player("no-waiver").await;
        let order = server.order(&token, seed::GEMS_SMALL).await;
        assert!(order.get("immediate_delivery_consent").is_none(), "not given, not written: {order}");
        let body = json!({ "offer_id": seed::EXTRA_LIFE, "price_index": 0 });
        let (status, bought) = send(server.purchase(&token, &key(), &body)).await;
        assert_eq!(status, StatusCode::CREATED, "{bought}");
        assert!(payload(&bought["receipt"]).get("immediate_delivery_consent").is_none(), "{bought}");
    }
}

/// The Bevy plugin carries the player's consent, once given, on every order and tab purchase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_sends_the_players_consent_once_given() {
    use game_sdk::store_api::catalog::OfferId;
    use game_sdk::store_api::ledger::Quantity;
    use tests::game::{HeadlessGame, log};
    let server =
        TestServer::start_with(tests::Backend::Sqlite, |settings| settings.require_delivery_consent = true)
            .await
            .expect("SQLite always runs");
    let dir = tempfile::tempdir().expect("a directory");
    let mut game = HeadlessGame::start(server.base_url(), "consent-device", dir.path());
    game.until_ready().await;
    let offer = |id: &str| OfferId::parse(id).expect("an offer id");

    let refused = game
        .requests(|store| store.start_order(offer(seed::GEMS_SMALL), Quantity::one(), None))
        .expect("accepted");
    game.update_until("the refusal", |world| {
        log(world).errors.iter().any(|error| error.request == Some(refused))
    })
    .await;
    let error =
        game.log().errors.iter().find(|error| error.request == Some(refused)).expect("refused").error.clone();
    assert_eq!(error.code(), Some(game_sdk::store_api::ErrorCode::DeliveryConsentRequired));
    assert!(error.player_message().contains("right to cancel"), "{}", error.player_message());

    game.requests(|store| store.set_immediate_delivery_consent(true));
    assert!(game.requests(|store| store.immediate_delivery_consent()));
    let started = game
        .requests(|store| store.start_order(offer(seed::GEMS_SMALL), Quantity::one(), None))
        .expect("accepted");
    game.update_until("the order", |world| {
        log(world).orders.iter().any(|update| update.request == Some(started))
    })
    .await;
    let order = game
        .log()
        .orders
        .iter()
        .find(|update| update.request == Some(started))
        .expect("created")
        .order
        .clone();
    assert!(order.immediate_delivery_consent, "the order records the consent");
    game.requests(|store| store.purchase(offer(seed::EXTRA_LIFE), Quantity::one(), Some(0)))
        .expect("accepted");
    game.update_until("the tab purchase", |world| !log(world).completed.is_empty()).await;
    assert_eq!(
        game.log().completed[0].receipt.immediate_delivery_consent,
        Some(true),
        "the verified receipt says so"
    );
}
