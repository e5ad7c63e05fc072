//! Google Play purchases redeemed (issue 20), end to end over real HTTP against a loopback
//! stand-in for Google's documented APIs (`tests::google`): the OAuth 2.0 token endpoint, the
//! Android Publisher API's purchases, orders and voided purchases, and Pub/Sub push tokens.
//! Granted once per Google order across players, with what Google says was paid and kept;
//! consumed (or acknowledged) until Google confirms; voids taken back once, whether notified or
//! found by the poll.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::google::{Fault, GooglePlayStandIn, PushSigner, Sale, push_body, push_token, voided_notification};
use tests::{Backend, TestServer, assert_error, seed, send, status_is};

const GEMS_PRODUCT: &str = "gems_small";
const SKIN_PRODUCT: &str = "skin_red";

/// A store checking purchases with `play`, selling the small gem pack and the red skin (a
/// durable item) on Google Play, reconciling every few hundred milliseconds.
async fn play_store(backend: Backend, play: &GooglePlayStandIn) -> Option<TestServer> {
    let settings = play.settings();
    let server = TestServer::start_with(backend, |server| {
        server.google_play = Some(settings);
        server.reconcile_interval = Duration::from_millis(300);
    })
    .await?;
    server
        .sell_on_platforms(&[
            (seed::GEMS_SMALL, json!({ "google_play": GEMS_PRODUCT })),
            (seed::SKIN_RED, json!({ "google_play": SKIN_PRODUCT })),
        ])
        .await;
    Some(server)
}

async fn redeem(
    server: &TestServer,
    token: &str,
    product_id: &str,
    purchase_token: &str,
) -> (StatusCode, Value) {
    send(
        server
            .player(token, Method::POST, "/v1/platform-purchases/google")
            .json(&json!({ "product_id": product_id, "purchase_token": purchase_token })),
    )
    .await
}

async fn push(server: &TestServer, body: &Value, authorization: &str) -> (StatusCode, Value) {
    send(
        server.request(Method::POST, "/v1/webhooks/google").header("authorization", authorization).json(body),
    )
    .await
}

fn amounts(order: &Value) -> (Option<&str>, Option<&str>, Option<&str>, Option<&str>) {
    (
        order["amount"]["amount"].as_str(),
        order["amount"]["currency"].as_str(),
        order["fee"]["amount"].as_str(),
        order["net"]["amount"].as_str(),
    )
}

/// A purchase Google confirms grants its offer once, books what the player paid and what Google
/// kept, and is consumed; the same player redeeming again gets the same order; another player
/// cannot redeem it; the access token is asked for once and reused.
async fn a_google_play_purchase_is_verified_granted_once_and_consumed(backend: Backend) {
    let play = GooglePlayStandIn::start().await;
    let Some(server) = play_store(backend, &play).await else { return };
    let (buyer_id, buyer) = server.login_player("android-buyer").await;
    let (other_id, other) = server.login_player("android-other").await;

    let (purchase_token, _) = play.buy(&Sale::of(GEMS_PRODUCT, "USD", "0.99", "0.84").for_player(&buyer_id));
    let (status, order) = redeem(&server, &buyer, GEMS_PRODUCT, &purchase_token).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(
        (order["status"].as_str(), order["provider"].as_str()),
        (Some("fulfilled"), Some("google_play"))
    );
    assert_eq!(
        amounts(&order),
        (Some("0.99"), Some("USD"), Some("0.15"), Some("0.84")),
        "the total Google charged; the fee is what Google kept (total − developer revenue): {order}"
    );
    assert!(order["receipt"].is_object(), "{order}");
    assert_eq!(server.balance(&buyer, "gems").await, 100);
    let at_google = play.purchase(&purchase_token);
    assert_eq!(
        (at_google["consumptionState"].as_i64(), at_google["acknowledgementState"].as_i64()),
        (Some(1), Some(1)),
        "a currency pack is consumed, in the redemption's own request: {at_google}"
    );
    assert_eq!(play.calls("consume"), 1);

    let (status, again) = redeem(&server, &buyer, GEMS_PRODUCT, &purchase_token).await;
    assert_eq!((status, &again["id"]), (StatusCode::OK, &order["id"]), "a replay answers the same order");
    assert_eq!(play.calls("consume"), 1, "a replay is not consumed again");
    let stolen = redeem(&server, &other, GEMS_PRODUCT, &purchase_token).await;
    assert_error("another player's purchase", &stolen, StatusCode::BAD_REQUEST, "platform_proof_invalid");
    assert_eq!(stolen.1["error"]["details"]["reason"], "account", "made for the buyer's account");
    let (unbound_token, _) = play.buy(&Sale::of(GEMS_PRODUCT, "USD", "0.99", "0.84"));
    let (status, _) = redeem(&server, &buyer, GEMS_PRODUCT, &unbound_token).await;
    assert_eq!(status, StatusCode::CREATED, "a purchase without an account id is the first redeemer's");
    let stolen = redeem(&server, &other, GEMS_PRODUCT, &unbound_token).await;
    assert_error("redeemed by another player", &stolen, StatusCode::CONFLICT, "already_exists");
    assert_eq!(server.balance(&other, "gems").await, 0);
    let _ = other_id;

    // In yen, with tax and no revenue reported: the fee is the tax and 15% of the rest.
    let mut yen = Sale::of(GEMS_PRODUCT, "JPY", "160", "0");
    yen.tax = "15".to_owned();
    yen.revenue = None;
    let (yen_token, _) = play.buy(&yen.for_player(&buyer_id));
    let (status, order) = redeem(&server, &buyer, GEMS_PRODUCT, &yen_token).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(
        amounts(&order),
        (Some("160"), Some("JPY"), Some("37"), Some("123")),
        "15 + 15% of 145 = 37: {order}"
    );

    // A durable item stays owned at Google too: acknowledged, not consumed.
    let (skin_token, _) = play.buy(&Sale::of(SKIN_PRODUCT, "USD", "1.99", "1.69").for_player(&buyer_id));
    let (status, order) = redeem(&server, &buyer, SKIN_PRODUCT, &skin_token).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let skin = play.purchase(&skin_token);
    assert_eq!(
        (skin["consumptionState"].as_i64(), skin["acknowledgementState"].as_i64()),
        (Some(0), Some(1))
    );

    let assertions = play.assertions();
    assert_eq!(assertions.len(), 1, "one access token, reused: {assertions:?}");
    assert_eq!(assertions[0]["iss"], tests::google::CLIENT_EMAIL);
    assert_eq!(server.count("select count(*) from entry where kind = 'order_fulfillment'").await, 4);
    assert_eq!(server.count("select count(*) from platform_acknowledgement where done_at is null").await, 0);
    server.assert_audit_clean().await;
}

/// Purchases Google does not confirm as paid, or that are not this player's, are refused with
/// the check that failed and change nothing; a pending purchase is redeemed once Google completes
/// it.
async fn unconfirmed_google_play_purchases_are_refused_and_change_nothing(backend: Backend) {
    let play = GooglePlayStandIn::start().await;
    let Some(server) = play_store(backend, &play).await else { return };
    let (player_id, token) = server.login_player("android-refused").await;
    let sale = || Sale::of(GEMS_PRODUCT, "USD", "0.99", "0.84").for_player(&player_id);
    let (pending_token, _) = play.buy(&Sale { purchase_state: 2, ..sale() });
    let (canceled_token, _) = play.buy(&Sale { purchase_state: 1, ..sale() });
    let (test_token, _) = play.buy(&Sale { purchase_type: Some(0), ..sale() });
    let (promo_token, _) = play.buy(&Sale { purchase_type: Some(1), ..sale() });
    let (refunded_token, refunded_order) = play.buy(&sale());
    play.edit_order(&refunded_order, |order| order["state"] = json!("REFUNDED"));
    let (good_token, _) = play.buy(&sale());
    let (unsold_token, _) = play.buy(&Sale::of("gems_huge", "USD", "99.99", "84.99").for_player(&player_id));

    let before = server.fingerprint().await;
    let proof_cases = [
        ("an unknown token", GEMS_PRODUCT, "not-a-purchase".to_owned(), "token"),
        ("the token of another product", SKIN_PRODUCT, good_token.clone(), "token"),
        ("a canceled purchase", GEMS_PRODUCT, canceled_token, "canceled"),
        ("a license tester's purchase", GEMS_PRODUCT, test_token, "test_purchase"),
        ("a promo code", GEMS_PRODUCT, promo_token, "purchase_type"),
        ("a refunded order", GEMS_PRODUCT, refunded_token, "revoked"),
    ];
    for (case, product, purchase_token, reason) in proof_cases {
        let answer = redeem(&server, &token, product, &purchase_token).await;
        assert_error(case, &answer, StatusCode::BAD_REQUEST, "platform_proof_invalid");
        assert_eq!(answer.1["error"]["details"]["reason"], reason, "{case}: {}", answer.1);
    }
    let pending = redeem(&server, &token, GEMS_PRODUCT, &pending_token).await;
    assert_error("a pending purchase", &pending, StatusCode::CONFLICT, "order_state_conflict");
    assert_eq!(pending.1["error"]["details"]["status"], "pending");
    let unsold = redeem(&server, &token, "gems_huge", &unsold_token).await;
    assert_error("a product no offer is sold as", &unsold, StatusCode::CONFLICT, "offer_not_available");
    let request =
        |body: Value| server.player(&token, Method::POST, "/v1/platform-purchases/google").json(&body);
    let malformed = [
        (
            "an unknown field",
            json!({ "product_id": GEMS_PRODUCT, "purchase_token": good_token, "price": "0" }),
        ),
        ("no token", json!({ "product_id": GEMS_PRODUCT })),
        ("an empty token", json!({ "product_id": GEMS_PRODUCT, "purchase_token": "" })),
        ("a product id with a slash", json!({ "product_id": "../orders", "purchase_token": good_token })),
        ("a token too long", json!({ "product_id": GEMS_PRODUCT, "purchase_token": "t".repeat(5_000) })),
    ];
    for (case, body) in malformed {
        assert_error(case, &send(request(body)).await, StatusCode::BAD_REQUEST, "invalid_request");
    }
    play.fail_next("products.get", &[Fault::Unavailable]);
    let down = redeem(&server, &token, GEMS_PRODUCT, &good_token).await;
    assert_error("Google Play unavailable", &down, StatusCode::BAD_GATEWAY, "provider_unavailable");
    let anonymous = send(
        server
            .request(Method::POST, "/v1/platform-purchases/google")
            .json(&json!({ "product_id": GEMS_PRODUCT, "purchase_token": good_token })),
    )
    .await;
    assert_eq!(anonymous.0, StatusCode::UNAUTHORIZED, "{}", anonymous.1);
    assert_eq!(server.fingerprint().await, before, "refused redemptions change nothing");
    assert_eq!(server.balance(&token, "gems").await, 0);

    play.complete_pending(&pending_token);
    let (status, order) = redeem(&server, &token, GEMS_PRODUCT, &pending_token).await;
    assert_eq!((status, order["status"].as_str()), (StatusCode::CREATED, Some("fulfilled")), "{order}");
    let (status, _) = redeem(&server, &token, GEMS_PRODUCT, &good_token).await;
    assert_eq!(status, StatusCode::CREATED, "Google answers again");

    let Some(unconfigured) = TestServer::start(backend).await else { return };
    let (_, other) = unconfigured.login_player("android-elsewhere").await;
    let off = redeem(&unconfigured, &other, GEMS_PRODUCT, &good_token).await;
    assert_error("Google Play not configured", &off, StatusCode::SERVICE_UNAVAILABLE, "provider_unavailable");
    server.assert_audit_clean().await;
}

/// Consumption and acknowledgement that fail (Google down, or its answer lost) are retried by
/// the order workers until Google confirms; the grant never waits for them.
async fn acknowledgements_are_retried_until_google_confirms(backend: Backend) {
    let play = GooglePlayStandIn::start().await;
    let Some(server) = play_store(backend, &play).await else { return };
    let (player_id, token) = server.login_player("android-unacknowledged").await;
    play.fail_next("consume", &[Fault::Unavailable, Fault::AnswerLost]);
    let (gems_token, _) = play.buy(&Sale::of(GEMS_PRODUCT, "USD", "0.99", "0.84").for_player(&player_id));
    let (status, order) = redeem(&server, &token, GEMS_PRODUCT, &gems_token).await;
    assert_eq!((status, order["status"].as_str()), (StatusCode::CREATED, Some("fulfilled")), "{order}");
    assert_eq!(play.purchase(&gems_token)["consumptionState"], 0, "Google was down");
    assert_eq!(server.count("select count(*) from platform_acknowledgement where done_at is null").await, 1);

    play.fail_next("acknowledge", &[Fault::AnswerLost]);
    let (skin_token, _) = play.buy(&Sale::of(SKIN_PRODUCT, "USD", "1.99", "1.69").for_player(&player_id));
    let (status, _) = redeem(&server, &token, SKIN_PRODUCT, &skin_token).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(play.purchase(&skin_token)["acknowledgementState"], 1, "acknowledged; the answer was lost");

    server.wait_for_count("select count(*) from platform_acknowledgement where done_at is not null", 2).await;
    assert_eq!(play.purchase(&gems_token)["consumptionState"], 1);
    assert_eq!(play.calls("consume"), 3, "down, answer lost, then consumed again (Google confirms)");
    assert_eq!(play.calls("acknowledge"), 2, "the second is refused as done already, and read back");
    let attempts = server.count("select sum(attempts) from platform_acknowledgement").await;
    assert_eq!(attempts, 5, "3 for the gems, 2 for the skin (refused as done, then read back)");
    assert_eq!(server.balance(&token, "gems").await, 100);
    server.assert_audit_clean().await;
}

/// Voids are booked once, whether Google's notification (its push token checked) or the Voided
/// Purchases API poll brings them: a refund takes the grant back (a debt when it was spent), a
/// chargeback takes it back and flags the player, an operator's refund goes through Google and
/// is booked as that refund. Forged pushes change nothing.
async fn voided_purchases_are_taken_back_once(backend: Backend) {
    let play = GooglePlayStandIn::start().await;
    let Some(server) = play_store(backend, &play).await else { return };
    let (player_id, token) = server.login_player("android-voided").await;
    let mut orders = Vec::new();
    for _ in 0..3 {
        let (purchase_token, google_order) =
            play.buy(&Sale::of(GEMS_PRODUCT, "USD", "0.99", "0.84").for_player(&player_id));
        let (status, order) = redeem(&server, &token, GEMS_PRODUCT, &purchase_token).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        orders.push((purchase_token, google_order, order["id"].as_str().expect("id").to_owned()));
    }
    let (status, _) = send(server.purchase(
        &token,
        &uuid::Uuid::now_v7().to_string(),
        &json!({ "offer_id": seed::SKIN_BLUE }),
    ))
    .await;
    assert_eq!(status, StatusCode::CREATED, "80 of the 300 gems spent");

    // The player's refund, notified.
    let (refunded_token, refunded_google, refunded_id) = &orders[0];
    play.void(refunded_google, 0, 1);
    let notification = voided_notification(refunded_token, refunded_google);
    let before = server.fingerprint().await;
    let body = push_body("1000000001", &notification);
    let forged = [
        ("no token", String::new()),
        (
            "a foreign key",
            format!(
                "Bearer {}",
                push_token(
                    PushSigner::Foreign,
                    tests::google::PUSH_AUDIENCE,
                    tests::google::PUSH_SERVICE_ACCOUNT,
                    3_600
                )
            ),
        ),
        (
            "another audience",
            format!(
                "Bearer {}",
                push_token(
                    PushSigner::Google,
                    "https://elsewhere.example/push",
                    tests::google::PUSH_SERVICE_ACCOUNT,
                    3_600
                )
            ),
        ),
        (
            "another service account",
            format!(
                "Bearer {}",
                push_token(
                    PushSigner::Google,
                    tests::google::PUSH_AUDIENCE,
                    "intruder@evil.iam.gserviceaccount.com",
                    3_600
                )
            ),
        ),
        (
            "an expired token",
            format!(
                "Bearer {}",
                push_token(
                    PushSigner::Google,
                    tests::google::PUSH_AUDIENCE,
                    tests::google::PUSH_SERVICE_ACCOUNT,
                    -600
                )
            ),
        ),
    ];
    for (case, authorization) in forged {
        let answer = push(&server, &body, &authorization).await;
        assert_error(case, &answer, StatusCode::BAD_REQUEST, "webhook_signature_invalid");
    }
    let mut other_app = notification.clone();
    other_app["packageName"] = json!("com.example.other");
    let (other_body, authorization) = play.push("1000000002", &other_app);
    assert_error(
        "another app's notification",
        &push(&server, &other_body, &authorization).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    assert_eq!(server.fingerprint().await, before, "refused pushes change nothing");

    let (body, authorization) = play.push("1000000003", &notification);
    let (status, ack) = push(&server, &body, &authorization).await;
    assert_eq!((status, ack["status"].as_str()), (StatusCode::OK, Some("processed")), "{ack}");
    let (status, ack) = push(&server, &body, &authorization).await;
    assert_eq!((status, ack["status"].as_str()), (StatusCode::OK, Some("duplicate")));
    let refunded = server.wait_for_order(&token, refunded_id, status_is("refunded")).await;
    assert_eq!(refunded["refunded"], json!({ "currency": "USD", "amount": "0.99" }));
    assert_eq!(server.balance(&token, "gems").await, 120, "100 of the 220 taken back");

    // A chargeback whose notification never came: the poll finds it, through two pages.
    play.set_page_size(1);
    let (_, charged_back_google, charged_back_id) = &orders[1];
    play.void(charged_back_google, 2, 7);
    server.wait_for_order(&token, charged_back_id, status_is("charged_back")).await;

    // An operator's refund: sent to Google (orders.refund), booked once from the void.
    let (_, refunded_by_operator, operator_id) = &orders[2];
    let whole_only = send(
        server
            .admin(Method::POST, &format!("/admin/v1/orders/{operator_id}/refunds"))
            .header("idempotency-key", uuid::Uuid::now_v7().to_string())
            .json(&json!({ "reason": "goodwill", "amount": "0.50" })),
    )
    .await;
    assert_error("a part of a Google order", &whole_only, StatusCode::BAD_REQUEST, "invalid_request");
    let (status, refund) = send(
        server
            .admin(Method::POST, &format!("/admin/v1/orders/{operator_id}/refunds"))
            .header("idempotency-key", uuid::Uuid::now_v7().to_string())
            .json(&json!({ "reason": "goodwill" })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{refund}");
    server.wait_for_order(&token, operator_id, status_is("refunded")).await;
    assert_eq!(play.order(refunded_by_operator)["state"], "REFUNDED");
    assert_eq!(play.calls("orders.refund"), 1);

    // Once more through the poll: every void is a duplicate by now.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(server.count("select count(*) from refund where status = 'succeeded'").await, 3);
    assert_eq!(server.count("select count(*) from entry where kind = 'reversal'").await, 3);
    assert_eq!(server.balance(&token, "gems").await, -80, "all 300 taken back; the 80 spent are owed");
    assert_eq!(
        server.count("select count(*) from player where flagged_at is not null").await,
        1,
        "flagged by the chargeback"
    );
    server.assert_audit_clean().await;
}

/// The Bevy plugin redeems a Google Play purchase (the proof kept on disk until answered) and
/// reports the fulfilled order with its receipt verified; a pending purchase ends in a typed
/// error.
async fn the_bevy_plugin_redeems_a_google_play_purchase(backend: Backend) {
    use game_sdk::store_api::orders::{GooglePlayPurchaseRequest, OrderStatus, PlatformProof};
    use tests::game::HeadlessGame;
    let play = GooglePlayStandIn::start().await;
    let Some(server) = play_store(backend, &play).await else { return };
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut game = HeadlessGame::start(server.base_url(), "android-sdk-player", dir.path());
    game.until_ready().await;
    let player_id = game.resource::<game_sdk::StoreSession>().player_id().expect("logged in");
    let proof = |purchase_token: String| {
        PlatformProof::GooglePlay(GooglePlayPurchaseRequest {
            product_id: GEMS_PRODUCT.to_owned(),
            purchase_token,
        })
    };
    let (purchase_token, _) = play.buy(&Sale::of(GEMS_PRODUCT, "USD", "0.99", "0.84").for_player(player_id));
    let request = game
        .requests(|store| store.redeem_platform_purchase(proof(purchase_token.clone())))
        .expect("accepted");
    game.update_until("the redeemed order", |world| {
        tests::game::log(world).orders.iter().any(|update| update.request == Some(request))
    })
    .await;
    let redeemed =
        game.log().orders.iter().find(|update| update.request == Some(request)).expect("the order").clone();
    assert_eq!(redeemed.order.status, OrderStatus::Fulfilled);
    assert_eq!(redeemed.order.provider, "google_play");
    assert!(redeemed.order.receipt.is_some(), "announced with its verified receipt");
    game.update_until("the gems", |world| world.resource::<game_sdk::Wallet>().balance("gems") == 100).await;
    assert_eq!(play.purchase(&purchase_token)["consumptionState"], 1);

    let (pending_token, _) = play.buy(&Sale {
        purchase_state: 2,
        ..Sale::of(GEMS_PRODUCT, "USD", "0.99", "0.84").for_player(player_id)
    });
    let pending =
        game.requests(|store| store.redeem_platform_purchase(proof(pending_token))).expect("accepted");
    game.update_until("the pending purchase's error", |world| {
        tests::game::log(world).errors.iter().any(|error| error.request == Some(pending))
    })
    .await;
    let error =
        game.log().errors.iter().find(|error| error.request == Some(pending)).expect("an error").clone();
    assert_eq!(error.error.code(), Some(game_sdk::store_api::ErrorCode::OrderStateConflict), "{error:?}");
    for _ in 0..20 {
        game.update();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(game);
    assert!(tests::pending_records(dir.path()).is_empty(), "answered proofs are forgotten");
}

on_each_backend!(
    a_google_play_purchase_is_verified_granted_once_and_consumed,
    unconfirmed_google_play_purchases_are_refused_and_change_nothing,
    acknowledgements_are_retried_until_google_confirms,
    voided_purchases_are_taken_back_once,
    the_bevy_plugin_redeems_a_google_play_purchase,
);
