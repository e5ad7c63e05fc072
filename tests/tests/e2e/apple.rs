//! App Store purchases redeemed (issue 20), end to end over real HTTP: StoreKit 2 signed
//! transactions made by a test certificate authority shaped like Apple's (`tests::apple`), which
//! the store trusts the way production trusts Apple Root CA - G3. Granted once per transaction
//! across players, with the price Apple charged; forged, foreign, expired, mismatched and
//! revoked proofs refused with typed errors that change nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::apple::{AppleSigner, Leaf, notification, transaction};
use tests::{Backend, TestServer, assert_error, seed, send, status_is};

const GEMS_PRODUCT: &str = "com.coinslot.gems.small";

/// A store trusting `signer` for the production environment, selling the small gem pack as
/// [`GEMS_PRODUCT`] on the App Store.
async fn apple_store(backend: Backend, signer: &AppleSigner) -> Option<TestServer> {
    apple_store_with(backend, signer.settings("Production")).await
}

async fn apple_store_with(
    backend: Backend,
    settings: store_server::payments::platform::apple::AppleSettings,
) -> Option<TestServer> {
    let server = TestServer::start_with(backend, |server| server.apple = Some(settings)).await?;
    sell_on_the_app_store(&server, seed::GEMS_SMALL, GEMS_PRODUCT).await;
    Some(server)
}

async fn sell_on_the_app_store(server: &TestServer, offer_id: &str, product: &str) {
    server.sell_on_platforms(&[(offer_id, json!({ "app_store": product }))]).await;
}

async fn redeem(server: &TestServer, token: &str, signed: &str) -> (StatusCode, Value) {
    send(
        server
            .player(token, Method::POST, "/v1/platform-purchases/apple")
            .json(&json!({ "signed_transaction": signed })),
    )
    .await
}

/// A verified purchase grants its offer once, with Apple's price and commission; the same
/// player redeeming again gets the same order; another player cannot redeem it.
async fn an_app_store_purchase_is_verified_and_granted_once(backend: Backend) {
    let signer = AppleSigner::new();
    let Some(server) = apple_store(backend, &signer).await else { return };
    let (buyer_id, buyer) = server.login_player("ios-buyer").await;
    let (other_id, other) = server.login_player("ios-other").await;
    let (_, catalog) = send(server.player(&buyer, Method::GET, "/v1/catalog")).await;
    let listed =
        catalog["offers"].as_array().expect("offers").iter().find(|offer| offer["id"] == seed::GEMS_SMALL);
    assert_eq!(listed.map(|offer| &offer["platform_products"]["app_store"]), Some(&json!(GEMS_PRODUCT)));

    let signed = signer.sign(&transaction("2000000101", GEMS_PRODUCT, 990, "USD", "Production"));
    let (status, order) = redeem(&server, &buyer, &signed).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(
        (order["status"].as_str(), order["provider"].as_str()),
        (Some("fulfilled"), Some("app_store"))
    );
    assert_eq!(
        (
            order["amount"]["amount"].as_str(),
            order["fee"]["amount"].as_str(),
            order["net"]["amount"].as_str()
        ),
        (Some("0.99"), Some("0.30"), Some("0.69")),
        "Apple's price and 30% commission: {order}"
    );
    assert!(order["receipt"].is_object(), "{order}");
    assert_eq!(server.balance(&buyer, "gems").await, 100);

    let (status, again) = redeem(&server, &buyer, &signed).await;
    assert_eq!((status, &again["id"]), (StatusCode::OK, &order["id"]), "a replay answers the same order");
    let stolen = redeem(&server, &other, &signed).await;
    assert_error("another player's purchase", &stolen, StatusCode::CONFLICT, "already_exists");
    assert_eq!(server.balance(&other, "gems").await, 0);

    // The price is what Apple charged in the storefront's currency, not the catalog's.
    let (status, yen) = redeem(
        &server,
        &buyer,
        &signer.sign(&transaction("2000000102", GEMS_PRODUCT, 160_000, "JPY", "Production")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{yen}");
    assert_eq!(
        (yen["amount"]["amount"].as_str(), yen["amount"]["currency"].as_str()),
        (Some("160"), Some("JPY"))
    );
    assert_eq!(yen["fee"]["amount"], "48");

    // A purchase the game made for another player (StoreKit's appAccountToken) is refused.
    let mut for_other = transaction("2000000103", GEMS_PRODUCT, 990, "USD", "Production");
    for_other["appAccountToken"] = json!(other_id);
    let refused = redeem(&server, &buyer, &signer.sign(&for_other)).await;
    assert_error("bought for another player", &refused, StatusCode::BAD_REQUEST, "platform_proof_invalid");
    assert_eq!(refused.1["error"]["details"]["reason"], "account");
    let mut for_buyer = transaction("2000000104", GEMS_PRODUCT, 990, "USD", "Production");
    for_buyer["appAccountToken"] = json!(buyer_id);
    let (status, _) = redeem(&server, &buyer, &signer.sign(&for_buyer)).await;
    assert_eq!(status, StatusCode::CREATED);

    assert_eq!(server.count("select count(*) from entry where kind = 'order_fulfillment'").await, 3);
    assert_eq!(server.balance(&buyer, "gems").await, 300);
    server.assert_audit_clean().await;
}

/// Every proof that does not verify, or is not this app's, is refused with the check that
/// failed, and changes nothing.
async fn forged_foreign_expired_and_mismatched_proofs_change_nothing(backend: Backend) {
    let signer = AppleSigner::new();
    let Some(server) = apple_store(backend, &signer).await else { return };
    let (_, token) = server.login_player("ios-attacker").await;
    let good = |id: &str| transaction(id, GEMS_PRODUCT, 990, "USD", "Production");
    let signed = signer.sign(&good("3000000001"));
    let tampered = {
        let parts: Vec<&str> = signed.split('.').collect();
        let mut cheaper = good("3000000001");
        cheaper["quantity"] = json!(100);
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(cheaper.to_string());
        format!("{}.{payload}.{}", parts[0], parts[2])
    };
    let with = |field: &str, value: Value| {
        let mut payload = good("3000000002");
        payload[field] = value;
        signer.sign(&payload)
    };
    let before = server.fingerprint().await;
    let cases = [
        ("tampered", tampered, "signature"),
        ("a foreign root", AppleSigner::new().sign(&good("3000000003")), "chain"),
        ("an expired leaf", signer.sign_with(Leaf::Expired, &good("3000000004")), "chain"),
        ("a leaf without Apple's marker", signer.sign_with(Leaf::Unmarked, &good("3000000005")), "chain"),
        ("another app", with("bundleId", json!("com.example.other")), "bundle_id"),
        ("the sandbox", with("environment", json!("Sandbox")), "environment"),
        ("a subscription", with("type", json!("Auto-Renewable Subscription")), "type"),
        ("revoked", with("revocationDate", json!(1_700_000_000_000_i64)), "revoked"),
        ("no price", with("price", Value::Null), "price"),
        ("not a JWS", "not.a-jws".to_owned(), "format"),
    ];
    for (case, signed, reason) in cases {
        let answer = redeem(&server, &token, &signed).await;
        assert_error(case, &answer, StatusCode::BAD_REQUEST, "platform_proof_invalid");
        assert_eq!(answer.1["error"]["details"]["reason"], reason, "{case}: {}", answer.1);
    }
    let unknown = redeem(
        &server,
        &token,
        &signer.sign(&transaction("3000000006", "com.other.product", 990, "USD", "Production")),
    )
    .await;
    assert_error("a product no offer sells", &unknown, StatusCode::CONFLICT, "offer_not_available");
    let extra = send(
        server
            .player(&token, Method::POST, "/v1/platform-purchases/apple")
            .json(&json!({ "signed_transaction": signed, "price": "0.01" })),
    )
    .await;
    assert_error("an unknown field", &extra, StatusCode::BAD_REQUEST, "invalid_request");
    let huge = redeem(&server, &token, &"a".repeat(20_000)).await;
    assert_error("too long", &huge, StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(server.fingerprint().await, before, "refused proofs change nothing");

    let Some(unconfigured) = TestServer::start(backend).await else { return };
    let (_, token) = unconfigured.login_player("ios-nowhere").await;
    let off = redeem(&unconfigured, &token, &signed).await;
    assert_error("not configured", &off, StatusCode::SERVICE_UNAVAILABLE, "provider_unavailable");
}

/// A platform product is sold by one offer at most, and its id is checked.
async fn a_platform_product_names_one_offer(backend: Backend) {
    let signer = AppleSigner::new();
    let Some(server) = apple_store(backend, &signer).await else { return };
    let path = format!("/admin/v1/catalog/draft/offers/{}", seed::GEMS_LARGE);
    let (_, mut offer) = send(server.admin(Method::GET, &path)).await;
    offer["platform_products"] = json!({ "app_store": GEMS_PRODUCT });
    let (status, body) = send(server.admin(Method::PUT, &path).json(&offer)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let twice = send(server.admin(Method::POST, "/admin/v1/catalog/publish")).await;
    assert_error("one product, two offers", &twice, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    offer["platform_products"] = json!({ "app_store": "has spaces" });
    let bad = send(server.admin(Method::PUT, &path).json(&offer)).await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST, "{}", bad.1);
    offer["platform_products"] = json!({ "steam_store": "x" });
    let unknown = send(server.admin(Method::PUT, &path).json(&offer)).await;
    assert_eq!(unknown.0, StatusCode::BAD_REQUEST, "{}", unknown.1);
}

async fn notify(server: &TestServer, signed_payload: &str) -> (StatusCode, Value) {
    send(server.request(Method::POST, "/v1/webhooks/apple").json(&json!({ "signedPayload": signed_payload })))
        .await
}

/// App Store Server Notifications V2: a refund and a revocation, verified like transactions,
/// take the money and the gems back once (the player is flagged, as after a chargeback); a
/// forged or foreign notification changes nothing; an operator cannot refund an App Store order.
async fn refunds_and_revocations_apple_notifies_claw_back_once(backend: Backend) {
    let signer = AppleSigner::new();
    let Some(server) = apple_store(backend, &signer).await else { return };
    let (_, token) = server.login_player("ios-refunded").await;
    let mut orders = Vec::new();
    for id in ["4000000001", "4000000002"] {
        let (status, order) =
            redeem(&server, &token, &signer.sign(&transaction(id, GEMS_PRODUCT, 990, "USD", "Production")))
                .await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        orders.push(order);
    }
    let (status, _) = send(server.purchase(
        &token,
        &uuid::Uuid::now_v7().to_string(),
        &json!({ "offer_id": seed::SKIN_BLUE }),
    ))
    .await;
    assert_eq!(status, StatusCode::CREATED, "80 of the 200 gems spent");
    let refused = send(
        server
            .admin(
                Method::POST,
                &format!("/admin/v1/orders/{}/refunds", orders[0]["id"].as_str().expect("id")),
            )
            .header("idempotency-key", uuid::Uuid::now_v7().to_string())
            .json(&json!({ "reason": "asked by the player" })),
    )
    .await;
    assert_error(
        "an operator refund of an App Store order",
        &refused,
        StatusCode::CONFLICT,
        "order_state_conflict",
    );

    let revoked = |id: &str| {
        let mut payload = transaction(id, GEMS_PRODUCT, 990, "USD", "Production");
        payload["revocationDate"] = json!(time::OffsetDateTime::now_utc().unix_timestamp() * 1_000);
        payload["revocationReason"] = json!(0);
        signer.sign(&payload)
    };
    let refund = signer.sign(&notification(
        "6fa459ea-ee8a-3ca4-894e-db77e160355e",
        "REFUND",
        &revoked("4000000001"),
        "Production",
    ));
    let before = server.fingerprint().await;
    let forged = [
        (
            "a foreign root",
            AppleSigner::new().sign(&notification(
                "7fa459ea-0000-0000-0000-000000000001",
                "REFUND",
                &revoked("4000000001"),
                "Production",
            )),
        ),
        (
            "a foreign transaction inside",
            signer.sign(&notification(
                "7fa459ea-0000-0000-0000-000000000002",
                "REFUND",
                &AppleSigner::new().sign(&transaction("4000000001", GEMS_PRODUCT, 990, "USD", "Production")),
                "Production",
            )),
        ),
        (
            "another environment",
            signer.sign(&notification(
                "7fa459ea-0000-0000-0000-000000000003",
                "REFUND",
                &revoked("4000000001"),
                "Sandbox",
            )),
        ),
        ("tampered", {
            let parts: Vec<&str> = refund.split('.').collect();
            format!("{}.{}.{}", parts[0], parts[1], parts[2].chars().rev().collect::<String>())
        }),
    ];
    for (case, payload) in forged {
        let answer = notify(&server, &payload).await;
        assert_error(case, &answer, StatusCode::BAD_REQUEST, "webhook_signature_invalid");
    }
    let unknown = notify(
        &server,
        &signer.sign(&notification(
            "7fa459ea-0000-0000-0000-000000000004",
            "REFUND",
            &revoked("4999999999"),
            "Production",
        )),
    )
    .await;
    assert_eq!(
        unknown.0,
        StatusCode::NOT_FOUND,
        "a refund of nothing redeemed here: Apple retries; {}",
        unknown.1
    );
    assert_eq!(server.fingerprint().await, before, "refused notifications change nothing");

    let (status, ack) = notify(&server, &refund).await;
    assert_eq!((status, ack["status"].as_str()), (StatusCode::OK, Some("processed")), "{ack}");
    let (status, ack) = notify(&server, &refund).await;
    assert_eq!((status, ack["status"].as_str()), (StatusCode::OK, Some("duplicate")));
    let revoke = signer.sign(&notification(
        "6fa459ea-ee8a-3ca4-894e-db77e160355f",
        "REVOKE",
        &revoked("4000000002"),
        "Production",
    ));
    let (status, ack) = notify(&server, &revoke).await;
    assert_eq!((status, ack["status"].as_str()), (StatusCode::OK, Some("processed")), "{ack}");
    let consumption = signer.sign(&notification(
        "6fa459ea-ee8a-3ca4-894e-db77e1603560",
        "CONSUMPTION_REQUEST",
        &signer.sign(&transaction("4000000001", GEMS_PRODUCT, 990, "USD", "Production")),
        "Production",
    ));
    let (status, ack) = notify(&server, &consumption).await;
    assert_eq!((status, ack["status"].as_str()), (StatusCode::OK, Some("ignored")), "{ack}");

    for order in &orders {
        let (_, now) = send(server.player(
            &token,
            Method::GET,
            &format!("/v1/orders/{}", order["id"].as_str().expect("id")),
        ))
        .await;
        assert_eq!(now["status"], "charged_back", "{now}");
    }
    assert_eq!(server.balance(&token, "gems").await, -80, "both grants taken back; the 80 spent are owed");
    assert_eq!(server.count("select count(*) from entry where kind = 'reversal'").await, 2);
    assert_eq!(server.count("select count(*) from player where flagged_at is not null").await, 1);
    server.assert_audit_clean().await;
}

/// The Bevy plugin redeems a StoreKit purchase and reports the fulfilled order with its receipt
/// verified; a proof left on disk by an earlier run, however long ago, is redeemed at the next
/// start (a transaction is redeemed once, so it is never dropped as too old to resend).
async fn the_bevy_plugin_redeems_and_never_drops_a_proof(backend: Backend) {
    use game_sdk::storage::{LocalStore, PendingRecord, PendingRequest};
    use game_sdk::store_api::orders::{ApplePurchaseRequest, OrderStatus, PlatformProof};
    use tests::game::HeadlessGame;
    let signer = AppleSigner::new();
    let Some(server) = apple_store(backend, &signer).await else { return };
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut game = HeadlessGame::start(server.base_url(), "ios-sdk-player", dir.path());
    game.until_ready().await;
    let player_id = game.resource::<game_sdk::StoreSession>().player_id().expect("logged in");
    let mut bought = transaction("5000000001", GEMS_PRODUCT, 990, "USD", "Production");
    bought["appAccountToken"] = json!(player_id);
    let request = game
        .requests(|store| {
            store.redeem_platform_purchase(PlatformProof::AppStore(ApplePurchaseRequest {
                signed_transaction: signer.sign(&bought),
            }))
        })
        .expect("accepted");
    game.update_until("the redeemed order", |world| {
        tests::game::log(world).orders.iter().any(|update| update.request == Some(request))
    })
    .await;
    let redeemed =
        game.log().orders.iter().find(|update| update.request == Some(request)).expect("the order").clone();
    assert_eq!(redeemed.order.status, OrderStatus::Fulfilled);
    assert!(redeemed.order.receipt.is_some(), "announced with its verified receipt");
    game.update_until("the gems", |world| world.resource::<game_sdk::Wallet>().balance("gems") == 100).await;
    drop(game);
    assert!(tests::pending_records(dir.path()).is_empty(), "the proof is forgotten once answered");

    // A proof an earlier run left on disk a week ago.
    let mut left = PendingRecord::new(
        PendingRequest::RedeemPlatform(PlatformProof::AppStore(ApplePurchaseRequest {
            signed_transaction: signer.sign(&transaction(
                "5000000002",
                GEMS_PRODUCT,
                990,
                "USD",
                "Production",
            )),
        })),
        player_id,
    );
    left.created_at_s = left.created_at_s.map(|now| now - 7 * 24 * 60 * 60);
    LocalStore::open(dir.path()).expect("the store's directory").save(&left).expect("saved");
    let mut game = HeadlessGame::start(server.base_url(), "ios-sdk-player", dir.path());
    game.until_ready().await;
    game.update_until("the resumed redemption", |world| {
        world.resource::<game_sdk::Wallet>().balance("gems") == 200
    })
    .await;
    for _ in 0..20 {
        game.update();
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(game.log().errors.is_empty(), "{:?}", game.log().errors);
    drop(game);
    assert!(tests::pending_records(dir.path()).is_empty());
    assert_eq!(server.count("select count(*) from entry where kind = 'order_fulfillment'").await, 2);
}

/// With the App Store Server API configured, a `CONSUMPTION_REQUEST` is answered (a signed JWT,
/// `deliveryStatus: DELIVERED` for a fulfilled order) before it is recorded: an answer Apple's
/// API refuses leaves the notification to be retried.
async fn consumption_requests_are_answered_through_the_app_store_server_api(backend: Backend) {
    let signer = AppleSigner::new();
    let api = tests::apple::AppStoreApiStandIn::start().await;
    let mut settings = signer.settings("Production");
    settings.server_api = Some(api.settings(true));
    let Some(server) = apple_store_with(backend, settings).await else { return };
    let (_, token) = server.login_player("ios-consumer").await;
    let bought = signer.sign(&transaction("6000000001", GEMS_PRODUCT, 990, "USD", "Production"));
    let (status, _) = redeem(&server, &token, &bought).await;
    assert_eq!(status, StatusCode::CREATED);
    let request = signer.sign(&notification(
        "8fa459ea-0000-0000-0000-000000000001",
        "CONSUMPTION_REQUEST",
        &bought,
        "Production",
    ));
    api.fail_next(1);
    let failed = notify(&server, &request).await;
    assert_error("Apple's API failed", &failed, StatusCode::BAD_GATEWAY, "provider_unavailable");
    assert!(api.received().is_empty());
    let (status, ack) = notify(&server, &request).await;
    assert_eq!((status, ack["status"].as_str()), (StatusCode::OK, Some("processed")), "{ack}");
    let received = api.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].0, "6000000001");
    assert_eq!(
        received[0].1,
        json!({ "customerConsented": true, "sampleContentProvided": false, "deliveryStatus": "DELIVERED" })
    );
    let (status, ack) = notify(&server, &request).await;
    assert_eq!((status, ack["status"].as_str()), (StatusCode::OK, Some("duplicate")));
    let unknown = notify(
        &server,
        &signer.sign(&notification(
            "8fa459ea-0000-0000-0000-000000000002",
            "CONSUMPTION_REQUEST",
            &signer.sign(&transaction("6999999999", GEMS_PRODUCT, 990, "USD", "Production")),
            "Production",
        )),
    )
    .await;
    assert_eq!(unknown.0, StatusCode::NOT_FOUND, "{}", unknown.1);
    assert_eq!(api.received().len(), 2, "answered again only for the duplicate delivery");
}

/// One transaction sent many times at once, by its buyer and by another player, on two writers:
/// granted once; every other answer is that order again, `already_exists` or a 409 to ask again.
async fn concurrent_redemptions_of_one_transaction_grant_once(backend: Backend) {
    let signer = AppleSigner::new();
    let mut settings = signer.settings("Production");
    settings.server_api = None;
    let server = TestServer::start_with(backend, |server| {
        server.apple = Some(settings);
        server.writers = 2;
    })
    .await;
    let Some(server) = server else { return };
    sell_on_the_app_store(&server, seed::GEMS_SMALL, GEMS_PRODUCT).await;
    let (_, buyer) = server.login_player("ios-racer").await;
    let (_, other) = server.login_player("ios-racer-2").await;
    let signed = signer.sign(&transaction("7000000001", GEMS_PRODUCT, 990, "USD", "Production"));
    let attempts = (0..12).map(|index| {
        let token = if index % 3 == 0 { other.clone() } else { buyer.clone() };
        let (server, signed) = (&server, signed.clone());
        async move { (index % 3 == 0, redeem(server, &token, &signed).await) }
    });
    let answers = futures_util::future::join_all(attempts).await;
    let mut created = Vec::new();
    let mut orders = std::collections::BTreeSet::new();
    for (_, (status, body)) in &answers {
        match status.as_u16() {
            201 => {
                created.push(body["id"].clone());
                orders.insert(body["id"].to_string());
            }
            200 => {
                orders.insert(body["id"].to_string());
            }
            409 => assert!(
                matches!(body["error"]["code"].as_str(), Some("already_exists" | "request_in_progress")),
                "{body}"
            ),
            _ => panic!("unexpected answer {status}: {body}"),
        }
    }
    assert_eq!(created.len(), 1, "one redemption wins: {answers:?}");
    assert_eq!(orders.len(), 1, "every success names the same order: {answers:?}");
    assert_eq!(server.count("select count(*) from entry where kind = 'order_fulfillment'").await, 1);
    assert_eq!(server.count("select count(*) from payment_order").await, 1, "no stray order is left");
    assert_eq!(server.balance(&buyer, "gems").await + server.balance(&other, "gems").await, 100);
    server.assert_audit_clean().await;
}

/// Notifications Apple sent that the store never received (an outage longer than Apple's
/// retries) are read back from the App Store Server API's Notification History, page by page,
/// and booked once; a late delivery of one of them is then a duplicate.
async fn notifications_never_received_are_read_back_from_the_history(backend: Backend) {
    let signer = AppleSigner::new();
    let api = tests::apple::AppStoreApiStandIn::start().await;
    let mut settings = signer.settings("Production");
    settings.server_api = Some(api.settings(false));
    let Some(server) = apple_store_with(backend, settings).await else { return };
    let (_, token) = server.login_player("ios-history").await;
    let mut orders = Vec::new();
    for id in ["7000000001", "7000000002"] {
        let (status, order) =
            redeem(&server, &token, &signer.sign(&transaction(id, GEMS_PRODUCT, 990, "USD", "Production")))
                .await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        orders.push(order["id"].as_str().expect("id").to_owned());
    }
    let revoked = |id: &str| {
        let mut payload = transaction(id, GEMS_PRODUCT, 990, "USD", "Production");
        payload["revocationDate"] = json!(time::OffsetDateTime::now_utc().unix_timestamp() * 1_000);
        signer.sign(&payload)
    };
    let refund = signer.sign(&notification(
        "9fa459ea-0000-0000-0000-000000000001",
        "REFUND",
        &revoked("7000000001"),
        "Production",
    ));
    api.set_history_page_size(1);
    api.sent_but_lost(&refund);
    // Another environment's notification in the history is skipped, not booked.
    api.sent_but_lost(&signer.sign(&notification(
        "9fa459ea-0000-0000-0000-000000000002",
        "REVOKE",
        &revoked("7000000002"),
        "Sandbox",
    )));
    api.sent_but_lost(&signer.sign(&notification(
        "9fa459ea-0000-0000-0000-000000000003",
        "REVOKE",
        &revoked("7000000002"),
        "Production",
    )));
    for order in &orders {
        server.wait_for_order(&token, order, status_is("charged_back")).await;
    }
    let (status, ack) = notify(&server, &refund).await;
    assert_eq!((status, ack["status"].as_str()), (StatusCode::OK, Some("duplicate")), "{ack}");
    let requests = api.history_requests();
    assert!(requests.len() >= 3, "three pages of one: {requests:?}");
    assert!(
        requests.iter().all(|request| request["startDate"].as_i64() < request["endDate"].as_i64()),
        "{requests:?}"
    );
    assert_eq!(server.count("select count(*) from entry where kind = 'reversal'").await, 2);
    assert_eq!(server.balance(&token, "gems").await, 0);
    server.assert_audit_clean().await;
}

on_each_backend!(
    notifications_never_received_are_read_back_from_the_history,
    concurrent_redemptions_of_one_transaction_grant_once,
    consumption_requests_are_answered_through_the_app_store_server_api,
    the_bevy_plugin_redeems_and_never_drops_a_proof,
    refunds_and_revocations_apple_notifies_claw_back_once,
    an_app_store_purchase_is_verified_and_granted_once,
    forged_foreign_expired_and_mismatched_proofs_change_nothing,
    a_platform_product_names_one_offer,
);
