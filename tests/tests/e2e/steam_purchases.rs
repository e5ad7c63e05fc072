//! Steam in-game purchases (issue 19), end to end over real HTTP: the store's `ISteamMicroTxn`
//! adapter against the local Steam stand-in (`tests::steam`), which keeps transactions as Steam
//! does and lets the test play the player's overlay, Steam's support and the card networks.
//! Authorized and fulfilled, denied, a `FinalizeTxn` failing then retried (and one whose answer
//! was lost), an authorization the game never reported, refunds (the store's and Steam's) and a
//! chargeback read from `GetReport`, a transaction that does not match its order, and the
//! requests refused before Steam is asked anything.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use store_server::Settings;
use store_server::players::steam::TICKET_IDENTITY;
use tests::steam::{APP_ID, Fault, SteamStandIn};
use tests::{Backend, TestServer, assert_error, seed, send, status_is};

const GABE: u64 = 76_561_197_960_287_930;

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A store with Steam configured (reconciliation off unless `adjust` turns it on).
async fn steam_store(
    backend: Backend,
    adjust: impl FnOnce(&mut Settings),
) -> Option<(TestServer, SteamStandIn)> {
    let steam = SteamStandIn::start().await;
    let steam_settings = steam.settings();
    let server = TestServer::start_with(backend, |settings| {
        settings.steam = Some(steam_settings);
        settings.reconcile_interval = Duration::from_secs(3_600);
        adjust(settings);
    })
    .await?;
    Some((server, steam))
}

/// Logs `steam_id` in with a Steam ticket; the session token.
async fn steam_player(server: &TestServer, steam: &SteamStandIn, steam_id: u64) -> String {
    let ticket = steam.issue_ticket(steam_id, APP_ID, TICKET_IDENTITY);
    let (status, login) =
        send(server.request(Method::POST, "/v1/auth/steam").json(&json!({ "ticket": ticket }))).await;
    assert_eq!(status, StatusCode::OK, "{login}");
    login["session_token"].as_str().expect("a token").to_owned()
}

/// `POST /v1/orders` for a Steam order of `offer_id`, under `order_key`.
fn steam_order_request(
    server: &TestServer,
    token: &str,
    offer_id: &str,
    order_key: &str,
) -> reqwest::RequestBuilder {
    server
        .player(token, Method::POST, "/v1/orders")
        .header("idempotency-key", order_key)
        .json(&json!({ "offer_id": offer_id, "provider": "steam" }))
}

async fn steam_order(server: &TestServer, token: &str, offer_id: &str) -> Value {
    let (status, order) = send(steam_order_request(server, token, offer_id, &key())).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    order
}

/// What the game sends when the overlay's `MicroTxnAuthorizationResponse_t` arrives.
async fn report(server: &TestServer, token: &str, order: &Value, authorized: bool) -> (StatusCode, Value) {
    let path = format!("/v1/orders/{}/steam-authorization", order["id"].as_str().expect("an id"));
    send(server.player(token, Method::POST, &path).json(&json!({ "authorized": authorized }))).await
}

fn steam_order_id(order: &Value) -> String {
    order["provider_order_id"].as_str().expect("Steam's orderid").to_owned()
}

fn param<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
}

/// The whole flow: `GetUserInfo`, `InitTxn` with what Steam documents, the overlay, the game's
/// report, `FinalizeTxn` and the order fulfilled once with Steam's share as the fee.
async fn a_steam_purchase_is_authorized_finalized_and_fulfilled(backend: Backend) {
    let Some((server, steam)) = steam_store(backend, |_| {}).await else { return };
    let token = steam_player(&server, &steam, GABE).await;
    let order_key = key();
    let create = || steam_order_request(&server, &token, seed::GEMS_SMALL, &order_key);
    let (status, order) = send(create()).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!((order["provider"].as_str(), order["checkout_url"].as_str()), (Some("steam"), Some("")));
    let (status, again) = send(create()).await;
    assert_eq!((status, &again["id"]), (StatusCode::CREATED, &order["id"]), "a retry answers the same order");
    let order_id = steam_order_id(&order);

    let inits = steam.microtxn_calls("InitTxn/v3");
    assert_eq!(inits.len(), 1, "a retry opens no second transaction");
    let init = &inits[0];
    assert_eq!(param(init, "orderid"), Some(order_id.as_str()));
    assert_eq!(param(init, "steamid"), Some(GABE.to_string().as_str()));
    assert_eq!(param(init, "appid"), Some(APP_ID.to_string().as_str()));
    for (name, value) in [
        ("itemcount", "1"),
        ("currency", "USD"),
        ("language", "en"),
        ("usersession", "client"),
        ("qty[0]", "1"),
        ("amount[0]", "99"),
    ] {
        assert_eq!(param(init, name), Some(value), "{name}: {init:?}");
    }
    assert!(param(init, "description[0]").is_some_and(|text| text.contains('1')), "{init:?}");
    assert_eq!(steam.microtxn_calls("GetUserInfo/v2").len(), 1, "the wallet's currency; a retry is a replay");
    assert_eq!(steam.interface_of(&order_id).as_deref(), Some("ISteamMicroTxn"));

    // The game reports an authorization Steam has not recorded: nothing is finalized.
    let early = report(&server, &token, &order, true).await;
    assert_error("authorized before the overlay", &early, StatusCode::CONFLICT, "order_state_conflict");
    assert!(steam.microtxn_calls("FinalizeTxn/v2").is_empty());

    steam.authorize(&order_id);
    let (status, fulfilled) = report(&server, &token, &order, true).await;
    assert_eq!((status, fulfilled["status"].as_str()), (StatusCode::OK, Some("fulfilled")), "{fulfilled}");
    // Steam's 30%: 0.297, booked as 0.30.
    assert_eq!(
        (
            fulfilled["amount"]["amount"].as_str(),
            fulfilled["fee"]["amount"].as_str(),
            fulfilled["net"]["amount"].as_str()
        ),
        (Some("0.99"), Some("0.30"), Some("0.69")),
        "{fulfilled}"
    );
    assert!(fulfilled["receipt"].is_object());
    assert_eq!(steam.txn(&order_id).expect("the transaction")["status"], "Succeeded");
    assert_eq!(server.balance(&token, "gems").await, 100);

    // The callback can come twice (or the game retries): nothing more happens.
    let (status, again) = report(&server, &token, &order, true).await;
    assert_eq!((status, again["status"].as_str()), (StatusCode::OK, Some("fulfilled")));
    assert_eq!(steam.microtxn_calls("FinalizeTxn/v2").len(), 1);
    assert_eq!(server.count("select count(*) from entry where kind = 'order_fulfillment'").await, 1);
    let (_, listed) = send(server.player(&token, Method::GET, "/v1/orders")).await;
    assert_eq!(listed["orders"][0]["provider_order_id"].as_str(), Some(order_id.as_str()));
    server.assert_audit_clean().await;
}

/// A denial fails the order and moves nothing; a "denial" Steam contradicts (the player did
/// authorize) is finalized: the store asks Steam, it does not take the game's word.
async fn denied_authorizations_fail_the_order_and_move_no_money(backend: Backend) {
    let Some((server, steam)) = steam_store(backend, |_| {}).await else { return };
    let token = steam_player(&server, &steam, GABE).await;
    let denied = steam_order(&server, &token, seed::GEMS_SMALL).await;
    let (status, failed) = report(&server, &token, &denied, false).await;
    assert_eq!((status, failed["status"].as_str()), (StatusCode::OK, Some("failed")), "{failed}");
    assert_eq!(failed["failure_reason"], "authorization_denied");
    // Authorizing afterwards changes nothing: the store never finalizes a failed order.
    steam.authorize(&steam_order_id(&denied));
    let (status, still) = report(&server, &token, &denied, true).await;
    assert_eq!((status, still["status"].as_str()), (StatusCode::OK, Some("failed")));
    assert!(steam.microtxn_calls("FinalizeTxn/v2").is_empty(), "no money moved");

    let contradicted = steam_order(&server, &token, seed::GEMS_SMALL).await;
    steam.authorize(&steam_order_id(&contradicted));
    let (status, fulfilled) = report(&server, &token, &contradicted, false).await;
    assert_eq!((status, fulfilled["status"].as_str()), (StatusCode::OK, Some("fulfilled")), "{fulfilled}");
    assert_eq!(server.balance(&token, "gems").await, 100);
    server.assert_audit_clean().await;
}

/// `FinalizeTxn` failing on Steam's side leaves the order waiting and the game's next report
/// finalizes it; a `FinalizeTxn` whose answer was lost is read back and booked once.
async fn a_finalize_that_fails_is_retried_until_steam_confirms(backend: Backend) {
    let Some((server, steam)) = steam_store(backend, |_| {}).await else { return };
    let token = steam_player(&server, &steam, GABE).await;
    let order = steam_order(&server, &token, seed::GEMS_SMALL).await;
    steam.authorize(&steam_order_id(&order));
    steam.fail_next("FinalizeTxn/v2", &[Fault::Unavailable]);
    let failed = report(&server, &token, &order, true).await;
    assert_error("Steam failed", &failed, StatusCode::BAD_GATEWAY, "provider_unavailable");
    let (_, waiting) = send(server.player(
        &token,
        Method::GET,
        &format!("/v1/orders/{}", order["id"].as_str().expect("id")),
    ))
    .await;
    assert_eq!(waiting["status"], "requires_payment");
    let (status, fulfilled) = report(&server, &token, &order, true).await;
    assert_eq!((status, fulfilled["status"].as_str()), (StatusCode::OK, Some("fulfilled")), "{fulfilled}");
    assert_eq!(steam.microtxn_calls("FinalizeTxn/v2").len(), 2);

    let lost = steam_order(&server, &token, seed::GEMS_SMALL).await;
    steam.authorize(&steam_order_id(&lost));
    steam.fail_next("FinalizeTxn/v2", &[Fault::AnswerLost]);
    let (status, fulfilled) = report(&server, &token, &lost, true).await;
    assert_eq!((status, fulfilled["status"].as_str()), (StatusCode::OK, Some("fulfilled")), "{fulfilled}");
    assert_eq!(steam.microtxn_calls("FinalizeTxn/v2").len(), 3, "finalized once, read back");

    // InitTxn goes through at Steam and its answer is lost: the game's retry with the same key
    // answers one order, on the one transaction Steam holds.
    steam.fail_next("InitTxn/v3", &[Fault::AnswerLost]);
    let order_key = key();
    let create = || steam_order_request(&server, &token, seed::GEMS_SMALL, &order_key);
    let lost = send(create()).await;
    assert_error("InitTxn's answer lost", &lost, StatusCode::BAD_GATEWAY, "provider_unavailable");
    let (status, retried) = send(create()).await;
    assert_eq!(status, StatusCode::CREATED, "{retried}");
    let init_orders: std::collections::BTreeSet<_> = steam
        .microtxn_calls("InitTxn/v3")
        .iter()
        .filter_map(|params| param(params, "orderid").map(str::to_owned))
        .collect();
    assert_eq!(init_orders.len(), 3, "the retry named the same orderid: {init_orders:?}");
    assert!(init_orders.contains(&steam_order_id(&retried)));
    steam.authorize(&steam_order_id(&retried));
    let (status, fulfilled) = report(&server, &token, &retried, true).await;
    assert_eq!((status, fulfilled["status"].as_str()), (StatusCode::OK, Some("fulfilled")), "{fulfilled}");
    assert_eq!(server.balance(&token, "gems").await, 300);
    assert_eq!(server.count("select count(*) from entry where kind = 'order_fulfillment'").await, 3);
    server.assert_audit_clean().await;
}

/// The player authorized and the game never said so (it crashed): before the order expires the
/// sweeper asks Steam, finalizes and fulfils it. An order never authorized expires, unfinalized.
async fn an_authorization_the_game_never_reports_is_finalized_before_expiry(backend: Backend) {
    let Some((server, steam)) =
        steam_store(backend, |settings| settings.order_ttl = Duration::from_secs(2)).await
    else {
        return;
    };
    let token = steam_player(&server, &steam, GABE).await;
    let authorized = steam_order(&server, &token, seed::GEMS_SMALL).await;
    let abandoned = steam_order(&server, &token, seed::GEMS_LARGE).await;
    steam.authorize(&steam_order_id(&authorized));
    let id = |order: &Value| order["id"].as_str().expect("id").to_owned();
    let fulfilled = server.wait_for_order(&token, &id(&authorized), status_is("fulfilled")).await;
    assert!(fulfilled["receipt"].is_object(), "{fulfilled}");
    server.wait_for_order(&token, &id(&abandoned), status_is("expired")).await;
    let finalized: Vec<_> = steam
        .microtxn_calls("FinalizeTxn/v2")
        .iter()
        .filter_map(|params| param(params, "orderid").map(str::to_owned))
        .collect();
    assert_eq!(finalized, vec![steam_order_id(&authorized)]);
    assert_eq!(steam.txn(&steam_order_id(&abandoned)).expect("txn")["status"], "Init");
    assert_eq!(server.balance(&token, "gems").await, 100);
    server.assert_audit_clean().await;
}

/// A refund the operator asks for goes to `RefundTxn` (whole transactions only) and is booked
/// when `GetReport` shows it; a refund Steam's support made and a chargeback are read from
/// `GetReport` too. Each is booked once, with the clawback.
async fn refunds_and_chargebacks_from_get_report_are_booked_once(backend: Backend) {
    let Some((server, steam)) =
        steam_store(backend, |settings| settings.reconcile_interval = Duration::from_millis(300)).await
    else {
        return;
    };
    let token = steam_player(&server, &steam, GABE).await;
    let mut orders = Vec::new();
    for _ in 0..3 {
        let order = steam_order(&server, &token, seed::GEMS_SMALL).await;
        steam.authorize(&steam_order_id(&order));
        let (status, fulfilled) = report(&server, &token, &order, true).await;
        assert_eq!((status, fulfilled["status"].as_str()), (StatusCode::OK, Some("fulfilled")));
        orders.push(order);
    }
    let path = |order: &Value| format!("/admin/v1/orders/{}/refunds", order["id"].as_str().expect("id"));
    let partial = send(
        server
            .admin(Method::POST, &path(&orders[0]))
            .header("idempotency-key", key())
            .json(&json!({ "reason": "asked by the player", "amount": "0.50" })),
    )
    .await;
    assert_error("a partial Steam refund", &partial, StatusCode::BAD_REQUEST, "invalid_request");
    let (status, refund) = send(
        server
            .admin(Method::POST, &path(&orders[0]))
            .header("idempotency-key", key())
            .json(&json!({ "reason": "asked by the player" })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{refund}");
    steam.fail_next("RefundTxn/v2", &[Fault::Unavailable, Fault::AnswerLost]);
    steam.refund_by_support(&steam_order_id(&orders[1]));
    steam.charge_back(&steam_order_id(&orders[2]));

    let id = |order: &Value| order["id"].as_str().expect("id").to_owned();
    server.wait_for_order(&token, &id(&orders[0]), status_is("refunded")).await;
    let by_support = server.wait_for_order(&token, &id(&orders[1]), status_is("refunded")).await;
    assert_eq!(by_support["refunds"][0]["reason"], "refunded at the provider", "{by_support}");
    server.wait_for_order(&token, &id(&orders[2]), status_is("charged_back")).await;
    // Steam failed once, then refunded and the answer was lost; the next attempt finds the
    // transaction refunded and sends nothing more.
    let refunds = steam.microtxn_calls("RefundTxn/v2");
    assert_eq!(refunds.len(), 2, "{refunds:?}");
    assert!(
        refunds.iter().all(|params| param(params, "orderid") == Some(steam_order_id(&orders[0]).as_str()))
    );
    assert!(
        steam
            .microtxn_calls("GetReport/v5")
            .iter()
            .any(|params| param(params, "time").is_some_and(|time| time.starts_with("2026-12-01T00:00:"))),
        "reconciliation reads on from its cursor"
    );
    // Every reversal once, though reconciliation keeps reading the report.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(server.count("select count(*) from entry where kind = 'reversal'").await, 3);
    assert_eq!(server.count("select count(*) from refund where status = 'succeeded'").await, 3);
    assert_eq!(
        server.count("select count(*) from refund where status in ('pending', 'submitted')").await,
        0,
        "the refund whose answer was lost is the one Steam reported, not a second one"
    );
    assert_eq!(server.balance(&token, "gems").await, 0, "every grant clawed back");
    assert_eq!(
        server.count("select count(*) from player where flagged_at is not null").await,
        1,
        "the chargeback flags the player"
    );
    server.assert_audit_clean().await;
}

/// Steam reports a transaction that does not match its order: nothing is granted, and the
/// money is returned through `RefundTxn` and booked when Steam's report shows the refund.
async fn a_steam_transaction_that_does_not_match_its_order_is_refunded(backend: Backend) {
    let Some((server, steam)) =
        steam_store(backend, |settings| settings.reconcile_interval = Duration::from_millis(300)).await
    else {
        return;
    };
    let token = steam_player(&server, &steam, GABE).await;
    let order = steam_order(&server, &token, seed::GEMS_SMALL).await;
    steam.authorize(&steam_order_id(&order));
    steam.set_paid_amount(&steam_order_id(&order), 50);
    let (status, unpaid) = report(&server, &token, &order, true).await;
    assert_eq!((status, unpaid["status"].as_str()), (StatusCode::OK, Some("requires_payment")), "{unpaid}");
    server
        .wait_for_count(
            "select count(*) from refund where payment_id is not null and status = 'succeeded'",
            1,
        )
        .await;
    assert_eq!(
        server.text("select reason from provider_payment").await,
        "paid 0.50 USD, but the order costs 0.99 USD"
    );
    assert_eq!(steam.microtxn_calls("RefundTxn/v2").len(), 1);
    assert_eq!(server.balance(&token, "gems").await, 0);
    server.assert_audit_clean().await;
}

/// Requests the store refuses before Steam is asked to charge anything: a player not logged in
/// with Steam, a wallet in a currency the catalog has no price in, a locked wallet, an unknown
/// provider, and malformed or misdirected authorization reports. None changes anything.
async fn steam_orders_refused_with_typed_errors_change_nothing(backend: Backend) {
    let Some((server, steam)) = steam_store(backend, |_| {}).await else { return };
    let (_, device_token) = server.login_player("not-on-steam").await;
    let sandbox_order = server.order(&device_token, seed::GEMS_SMALL).await;
    let euro = 76_561_197_960_265_728;
    let locked = 76_561_197_960_265_729;
    steam.set_wallet(euro, "EUR", "Active");
    steam.set_wallet(locked, "USD", "Locked");
    let euro_token = steam_player(&server, &steam, euro).await;
    let locked_token = steam_player(&server, &steam, locked).await;
    let before = server.fingerprint().await;
    let create = |token: &str, body: Value| {
        server.player(token, Method::POST, "/v1/orders").header("idempotency-key", key()).json(&body)
    };
    let steam_body = json!({ "offer_id": seed::GEMS_SMALL, "provider": "steam" });
    let cases = [
        (
            "a device player",
            create(&device_token, steam_body.clone()),
            StatusCode::FORBIDDEN,
            "wrong_credential_kind",
        ),
        (
            "a euro wallet",
            create(&euro_token, steam_body.clone()),
            StatusCode::CONFLICT,
            "offer_not_available",
        ),
        (
            "a locked wallet",
            create(&locked_token, steam_body.clone()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "provider_unavailable",
        ),
        (
            "an unknown provider",
            create(&euro_token, json!({ "offer_id": seed::GEMS_SMALL, "provider": "paypal" })),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (case, request, status, code) in cases {
        let answer = send(request).await;
        assert_error(case, &answer, status, code);
        if case == "a euro wallet" {
            assert_eq!(answer.1["error"]["details"]["reason"], "currency", "{}", answer.1);
        }
    }
    let (status, other_player) = report(&server, &euro_token, &sandbox_order, true).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another player's order: {other_player}");
    let not_steam = report(&server, &device_token, &sandbox_order, true).await;
    assert_error("not a Steam order", &not_steam, StatusCode::BAD_REQUEST, "invalid_request");
    let path = format!("/v1/orders/{}/steam-authorization", sandbox_order["id"].as_str().expect("id"));
    let extra = send(
        server
            .player(&device_token, Method::POST, &path)
            .json(&json!({ "authorized": true, "orderid": "1" })),
    )
    .await;
    assert_error("an unknown field", &extra, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(steam.microtxn_calls("InitTxn/v3").is_empty(), "Steam was asked to charge nothing");
    assert_eq!(server.fingerprint().await, before, "refused requests change nothing");
}

/// `COINSLOT_STEAM_MICROTXN_SANDBOX` sends purchases to `ISteamMicroTxnSandbox`.
async fn the_steam_sandbox_interface_is_a_setting(backend: Backend) {
    let Some((server, steam)) = steam_store(backend, |settings| {
        if let Some(steam) = settings.steam.as_mut() {
            steam.microtxn_sandbox = true;
        }
    })
    .await
    else {
        return;
    };
    let token = steam_player(&server, &steam, GABE).await;
    let order = steam_order(&server, &token, seed::GEMS_SMALL).await;
    assert_eq!(steam.interface_of(&steam_order_id(&order)).as_deref(), Some("ISteamMicroTxnSandbox"));
    steam.authorize(&steam_order_id(&order));
    let (status, fulfilled) = report(&server, &token, &order, true).await;
    assert_eq!((status, fulfilled["status"].as_str()), (StatusCode::OK, Some("fulfilled")), "{fulfilled}");
}

/// The Bevy plugin's Steam flow, as `game_sdk::steam` wires it to the Steam client: the game
/// logs in with a Steam ticket, opens a Steam order, reports the overlay's answers, and sees
/// the order fulfilled (its receipt verified) or failed through `OrderUpdated`.
async fn the_bevy_plugin_logs_in_with_steam_and_reports_the_overlay(backend: Backend) {
    use game_sdk::store_api::catalog::OfferId;
    use game_sdk::store_api::ledger::Quantity;
    use game_sdk::store_api::orders::OrderStatus;
    use game_sdk::{DeviceIdSource, OrderUpdated, SteamTickets, StorePlugin, Wallet};
    let Some((server, steam)) = steam_store(backend, |_| {}).await else { return };
    let ticket = steam.issue_ticket(GABE, APP_ID, TICKET_IDENTITY);
    let tickets = SteamTickets::new(move || {
        let ticket = ticket.clone();
        Box::pin(async move { Ok(ticket) })
    });
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut game = tests::game::HeadlessGame::start_with(StorePlugin {
        base_url: server.base_url().to_owned(),
        device_id: DeviceIdSource::Steam(tickets),
        persistence_path: dir.path().to_owned(),
        ..StorePlugin::default()
    });
    game.until_ready().await;
    let ticket = steam.issue_ticket(GABE, APP_ID, TICKET_IDENTITY);
    let (_, login) =
        send(server.request(Method::POST, "/v1/auth/steam").json(&json!({ "ticket": ticket }))).await;
    assert_eq!(
        game.resource::<game_sdk::StoreSession>().player_id().map(|id| id.to_string()).as_deref(),
        login["player_id"].as_str(),
        "the game's player is the SteamID's: {login}"
    );
    let offer = OfferId::parse(seed::GEMS_SMALL).expect("an offer id");
    let orders = |world: &bevy::prelude::World| game_orders(world);
    let start =
        game.requests(|store| store.start_steam_order(offer, Quantity::one(), None)).expect("accepted");
    game.update_until("the Steam order", |world| !orders(world).is_empty()).await;
    let created = orders(game.world())[0].clone();
    assert_eq!((created.request, created.order.status), (Some(start), OrderStatus::RequiresPayment));
    let steam_id: u64 =
        created.order.provider_order_id.as_deref().expect("Steam's orderid").parse().expect("u64");
    steam.authorize(&steam_id.to_string());
    let report = game.requests(|store| store.report_steam_authorization(steam_id, true)).expect("accepted");
    game.update_until("the order fulfilled", |world| {
        orders(world).iter().any(|update| update.order.status == OrderStatus::Fulfilled)
    })
    .await;
    let fulfilled: OrderUpdated = orders(game.world())
        .into_iter()
        .find(|update| update.order.status == OrderStatus::Fulfilled)
        .expect("fulfilled");
    assert_eq!(fulfilled.request, Some(report));
    assert!(fulfilled.order.receipt.is_some(), "announced with its verified receipt");
    game.update_until("the gems", |world| world.resource::<Wallet>().balance("gems") == 100).await;

    let offer = OfferId::parse(seed::GEMS_SMALL).expect("an offer id");
    game.requests(|store| store.start_steam_order(offer, Quantity::one(), None)).expect("accepted");
    let first = created.order.id;
    game.update_until("the second order", |world| {
        orders(world).iter().any(|update| update.order.id != first)
    })
    .await;
    let second =
        orders(game.world()).into_iter().find(|update| update.order.id != first).expect("second").order;
    let second_id: u64 = second.provider_order_id.as_deref().expect("orderid").parse().expect("u64");
    game.requests(|store| store.report_steam_authorization(second_id, false)).expect("accepted");
    game.update_until("the denied order failed", |world| {
        orders(world)
            .iter()
            .any(|update| update.order.id == second.id && update.order.status == OrderStatus::Failed)
    })
    .await;
    assert!(game.log().errors.is_empty(), "{:?}", game.log().errors);
    server.assert_audit_clean().await;
}

fn game_orders(world: &bevy::prelude::World) -> Vec<game_sdk::OrderUpdated> {
    world.resource::<tests::game::StoreLog>().orders.clone()
}

on_each_backend!(
    the_bevy_plugin_logs_in_with_steam_and_reports_the_overlay,
    a_steam_purchase_is_authorized_finalized_and_fulfilled,
    denied_authorizations_fail_the_order_and_move_no_money,
    a_finalize_that_fails_is_retried_until_steam_confirms,
    an_authorization_the_game_never_reports_is_finalized_before_expiry,
    refunds_and_chargebacks_from_get_report_are_booked_once,
    a_steam_transaction_that_does_not_match_its_order_is_refunded,
    steam_orders_refused_with_typed_errors_change_nothing,
    the_steam_sandbox_interface_is_a_setting,
);
