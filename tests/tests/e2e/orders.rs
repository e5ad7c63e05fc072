//! Real-money orders through the sandbox provider, over real HTTP end to end: checkout, test
//! cards, signed webhooks, fulfilment, the event stream, limits, expiry, refunds, clawback and
//! chargebacks.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use store_api::receipt::{ReceiptKeys, SignedReceipt, verify_receipt};
use tests::{Backend, TestServer, assert_error, seed, send, status_is};

const CARD_OK: &str = "4242 4242 4242 4242";
const CARD_DECLINED: &str = "4000000000000002";
const CARD_NO_FUNDS: &str = "4000000000009995";
const CARD_DISPUTED: &str = "4000000000000259";

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Reads the event stream until every needle has been seen (at most 20 seconds).
async fn read_events_until(response: &mut reqwest::Response, needles: &[&str]) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !needles.iter().all(|needle| seen.contains(needle)) {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("events arrive in time")
            .expect("the stream reads");
        seen.push_str(&String::from_utf8_lossy(&chunk.expect("the stream stays open")));
    }
    seen
}

/// The `id:` of the event whose data contains `needle`, in a stream's text.
fn event_id(stream: &str, needle: &str) -> String {
    let event = stream.split("\n\n").find(|event| event.contains(needle)).expect("the event");
    let line = event.lines().find_map(|line| line.strip_prefix("id:")).expect("an id");
    line.trim().to_owned()
}

/// A stream resumed after the event matching `after` in `seen` sends the one matching `next`
/// (with the id it had) and not the first.
async fn assert_resumes(server: &TestServer, token: &str, seen: &str, after: &str, next: &str) {
    let mut resumed = server
        .player(token, Method::GET, "/v1/events")
        .header("last-event-id", event_id(seen, after).as_str())
        .send()
        .await
        .expect("the stream resumes");
    let again = read_events_until(&mut resumed, &[next]).await;
    assert!(!again.contains(after), "{again}");
    assert_eq!(event_id(&again, next), event_id(seen, next));
}

on_both_backends! {
    async fn the_event_stream_never_skips_an_event_that_commits_out_of_order(server: TestServer) {
        let (player, token) = server.login_player("listener").await;
        let mut events = server.player(&token, Method::GET, "/v1/events").send().await.expect("the event stream opens");
        assert_eq!(events.status(), StatusCode::OK);
        let db = store_server::db::Db::connect(server.db().url(), 2, Duration::from_secs(30)).await.expect("the database");
        let insert = "insert into player_event (player_id, event_type, data, created_at) values ($1, 'test.note', $2, 0)";
        if server.db().backend() == Backend::Postgres {
            // Two writers: the first takes the smaller id and commits last. A stream that
            // read by id alone would pass the second's id and never show the first.
            let mut slow = db.pool().begin().await.expect("a transaction");
            sqlx::query(insert).bind(&player).bind("{\"n\":\"first\"}").execute(&mut *slow).await.expect("insert");
            sqlx::query(insert).bind(&player).bind("{\"n\":\"second\"}").execute(db.pool()).await.expect("insert");
            tokio::time::sleep(Duration::from_millis(600)).await;
            slow.commit().await.expect("commit");
        } else {
            // One writer at a time: commit order is id order.
            for n in ["first", "second"] {
                sqlx::query(insert).bind(&player).bind(format!("{{\"n\":\"{n}\"}}")).execute(db.pool()).await.expect("insert");
            }
        }
        let seen = read_events_until(&mut events, &["\"n\":\"first\"", "\"n\":\"second\""]).await;
        let (first, second) = (seen.find("\"first\"").expect("first"), seen.find("\"second\"").expect("second"));
        assert!(first < second, "in commit order: {seen}");

        // Resuming after the first event shows the second and only it.
        assert_resumes(&server, &token, &seen, "\"first\"", "\"second\"").await;
        db.close().await;
    }
}

on_both_backends! {
    async fn a_gem_pack_bought_with_the_test_card_is_fulfilled_and_announced(server: TestServer) {
        let (player, token) = server.login_player("payer").await;
        let mut events = server.player(&token, Method::GET, "/v1/events").send().await.expect("the event stream opens");
        assert_eq!(events.status(), StatusCode::OK);
        assert!(events.headers()["content-type"].to_str().expect("ascii").starts_with("text/event-stream"));

        let order = server.order(&token, seed::GEMS_SMALL).await;
        assert_eq!(order["status"], "requires_payment");
        assert_eq!(order["amount"], json!({ "currency": "USD", "amount": "0.99" }));
        let checkout_url = order["checkout_url"].as_str().expect("a checkout URL");
        assert!(checkout_url.starts_with(&format!("{}/sandbox/checkout/", server.base_url())), "{checkout_url}");
        let page = reqwest::get(checkout_url).await.expect("the page").text().await.expect("html");
        assert!(page.contains("Pouch of gems") && page.contains("0.99 USD") && page.contains("card_number"), "{page}");

        let (status, paid) = server.pay(checkout_url, CARD_OK).await;
        assert_eq!((status, paid["status"].as_str()), (StatusCode::OK, Some("succeeded")));
        let id = order["id"].as_str().expect("id");
        let fulfilled = server.wait_for_order(&token, id, status_is("fulfilled")).await;
        assert_eq!(fulfilled["fee"], json!({ "currency": "USD", "amount": "0.33" }), "USD 0.30 + 2.9%");
        assert_eq!(fulfilled["net"], json!({ "currency": "USD", "amount": "0.66" }));
        let transitions: Vec<(&str, &str)> = fulfilled["transitions"].as_array().expect("transitions").iter().map(|t| (t["from"].as_str().expect("from"), t["to"].as_str().expect("to"))).collect();
        assert_eq!(transitions, [("requires_payment", "paid"), ("paid", "fulfilled")]);
        assert!(fulfilled["transitions"][0]["cause"].as_str().expect("cause").starts_with("webhook payment.succeeded"));
        assert_eq!(server.balance(&token, "gems").await, 100);

        let receipt: SignedReceipt = serde_json::from_value(fulfilled["receipt"].clone()).expect("a receipt");
        let (_, keys) = send(server.request(Method::GET, "/v1/receipt-keys")).await;
        let keys: ReceiptKeys = serde_json::from_value(keys).expect("keys");
        let payload = verify_receipt(&receipt, &keys.keys).expect("the receipt verifies");
        assert_eq!(payload.order_id.map(|id| id.to_string()).as_deref(), Some(id));
        assert_eq!(payload.paid_money.expect("money").amount.to_string(), "0.99");
        assert_eq!(payload.granted.currencies[0].amount, 100);
        assert_eq!(payload.player_id.to_string(), player);

        let seen = read_events_until(&mut events, &["event: order.updated", "\"status\":\"fulfilled\"", "event: wallet.updated"]).await;
        assert!(seen.contains(r#""balance_after":100"#), "{seen}");
        let (_, orders) = send(server.player(&token, Method::GET, "/v1/orders")).await;
        assert_eq!(orders["orders"][0]["id"], id);
        let other = server.login("not-the-payer").await;
        let foreign = send(server.player(&other, Method::GET, &format!("/v1/orders/{id}"))).await;
        assert_error("another player's order", &foreign, StatusCode::NOT_FOUND, "not_found");
        server.assert_audit_clean().await;
    }

    async fn declined_cards_fail_the_order_and_grant_nothing(server: TestServer) {
        let (_, token) = server.login_player("declined").await;
        for (card, reason) in [(CARD_DECLINED, "card_declined"), (CARD_NO_FUNDS, "insufficient_funds")] {
            let order = server.order(&token, seed::GEMS_SMALL).await;
            let (status, paid) = server.pay(order["checkout_url"].as_str().expect("url"), card).await;
            assert_eq!((status, paid["status"].as_str()), (StatusCode::OK, Some(reason)));
            let failed = server.wait_for_order(&token, order["id"].as_str().expect("id"), status_is("failed")).await;
            assert_eq!(failed["failure_reason"], reason);
            let again = server.pay(order["checkout_url"].as_str().expect("url"), CARD_OK).await;
            assert_eq!(again.0, StatusCode::CONFLICT, "a failed checkout is closed: {}", again.1);
        }
        let bad_card = server.pay(server.order(&token, seed::GEMS_SMALL).await["checkout_url"].as_str().expect("url"), "4242").await;
        assert_error("not a card number", &bad_card, StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(server.balance(&token, "gems").await, 0);
        assert_eq!(server.count("select count(*) from entry where kind = 'order_fulfillment'").await, 0);
        server.assert_audit_clean().await;
    }

    async fn orders_the_store_would_not_take_are_refused_before_checkout(server: TestServer) {
        let (_, token) = server.login_player("refused-orders").await;
        let order = |body: Value| server.player(&token, Method::POST, "/v1/orders").header("idempotency-key", key()).json(&body);
        let tiny = json!({ "sku": "gems.small", "prices": [{ "money": { "currency": "USD", "amount": "0.10" }, "settlement": "immediate" }] });
        let below = send(server.admin(Method::POST, "/admin/v1/catalog/draft/offers").json(&tiny)).await;
        assert_error("an immediate price under the minimum charge", &below, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        let big = json!({ "sku": "gems.large", "prices": [{ "money": { "currency": "USD", "amount": "20.00" }, "settlement": "immediate" }] });
        let (status, big) = send(server.admin(Method::POST, "/admin/v1/catalog/draft/offers").json(&big)).await;
        assert_eq!(status, StatusCode::CREATED, "{big}");
        assert_eq!(send(server.admin(Method::POST, "/admin/v1/catalog/publish")).await.0, StatusCode::CREATED);
        let big_offer = big["id"].as_str().expect("id").to_owned();
        let cases = [
            ("a tab price", order(json!({ "offer_id": seed::EXTRA_LIFE, "price_index": 0 })), StatusCode::CONFLICT, "price_requires_purchase"),
            ("a virtual price", order(json!({ "offer_id": seed::MAGNET })), StatusCode::CONFLICT, "price_requires_purchase"),
            ("unknown offer", order(json!({ "offer_id": "019a6b1e-0009-7000-8000-000000000099" })), StatusCode::CONFLICT, "offer_not_available"),
            ("over the daily spending limit", order(json!({ "offer_id": seed::GEMS_LARGE, "quantity": 100 })), StatusCode::CONFLICT, "spending_limit_exceeded"),
            ("over the largest single order", order(json!({ "offer_id": big_offer, "quantity": 51 })), StatusCode::CONFLICT, "amount_above_maximum"),
            ("no idempotency key", server.player(&token, Method::POST, "/v1/orders").json(&json!({ "offer_id": seed::GEMS_SMALL })), StatusCode::BAD_REQUEST, "idempotency_key_required"),
        ];
        let before = server.fingerprint().await;
        for (case, request, status, code) in cases {
            assert_error(case, &send(request).await, status, code);
        }
        assert_eq!(server.fingerprint().await, before);
        assert_eq!(server.count("select count(*) from payment_order").await, 0);
        assert_eq!(server.count("select count(*) from sandbox_session").await, 0, "no checkout opened for a refused order");
    }

    async fn a_retried_order_request_opens_one_order_and_one_checkout(server: TestServer) {
        let (_, token) = server.login_player("retried-order").await;
        let request = || server.player(&token, Method::POST, "/v1/orders").header("idempotency-key", "order-once").json(&json!({ "offer_id": seed::GEMS_SMALL }));
        let (_, first) = send(request()).await;
        let (status, again) = send(request()).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(again, first);
        assert_eq!(server.count("select count(*) from payment_order").await, 1);
        assert_eq!(server.count("select count(*) from sandbox_session").await, 1);
    }

    async fn webhooks_are_verified_deduplicated_and_survive_chaos(server: TestServer) {
        let (_, token) = server.login_player("chaos").await;
        // Every event five times, late and out of order, with the first two attempts dropped.
        server.sandbox_controls(json!({ "duplicates": 4, "delay_ms": 100, "reorder_ms": 400, "drop_first": 2 })).await;
        let order = server.order(&token, seed::STARTER_BUNDLE).await;
        let id = order["id"].as_str().expect("id");
        server.pay(order["checkout_url"].as_str().expect("url"), CARD_OK).await;
        server.wait_for_order(&token, id, status_is("fulfilled")).await;
        // Let every duplicate arrive, then check there was exactly one fulfilment.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while server.count("select count(*) from sandbox_delivery where delivered_at is null").await > 0 {
            assert!(std::time::Instant::now() < deadline, "deliveries never finished");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(server.count("select count(*) from entry where kind = 'order_fulfillment'").await, 1);
        assert_eq!(server.count("select count(*) from sandbox_delivery").await, 5);
        assert_eq!(server.balance(&token, "gold").await, 600, "100 to start + the bundle's 500");
        let (_, inventory) = send(server.player(&token, Method::GET, "/v1/inventory")).await;
        assert_eq!(inventory["items"], json!([{ "sku": "magnet", "quantity": 3 }, { "sku": "skin.blue", "quantity": 1 }]));

        // Forged, stale, unsigned and malformed events change nothing.
        let secret = server.sandbox_webhook_secret().await;
        let session = order["checkout_url"].as_str().expect("url").rsplit('/').next().expect("session").to_owned();
        let event = json!({ "id": "evt_forged", "type": "payment.succeeded", "created": 0,
                            "data": { "session_id": session, "payment_id": "py_x", "fee": { "currency": "USD", "amount": "0.01" } } }).to_string();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let webhook = |signature: String, body: String| {
            server.request(Method::POST, "/v1/webhooks/sandbox").header("content-type", "application/json").header("coinslot-signature", signature).body(body)
        };
        let before = server.fingerprint().await;
        let cases = [
            ("signed with another secret", webhook(store_server::payments::provider::sign_webhook(b"whsec_wrong", now, event.as_bytes()), event.clone()), "webhook_signature_invalid"),
            ("stale", webhook(store_server::payments::provider::sign_webhook(&secret, now - 301, event.as_bytes()), event.clone()), "webhook_timestamp_out_of_tolerance"),
            ("unsigned", webhook(String::new(), event.clone()), "webhook_signature_invalid"),
            ("body changed after signing", webhook(store_server::payments::provider::sign_webhook(&secret, now, event.as_bytes()), event.replace("py_x", "py_y")), "webhook_signature_invalid"),
        ];
        for (case, request, code) in cases {
            assert_error(case, &send(request).await, StatusCode::BAD_REQUEST, code);
        }
        let unknown_provider = send(server.request(Method::POST, "/v1/webhooks/stripe").json(&json!({}))).await;
        assert_error("unknown provider", &unknown_provider, StatusCode::NOT_FOUND, "not_found");
        // A correctly signed event that does not say what was paid is refused: nothing is trusted.
        let refused = send(webhook(store_server::payments::provider::sign_webhook(&secret, now, event.as_bytes()), event.clone())).await;
        assert_error("no amount or reference", &refused, StatusCode::BAD_REQUEST, "invalid_request");
        // The real payment again under another event id: acknowledged, booked once already.
        let payment = server.text("select payment_id from sandbox_session where payment_id is not null").await;
        let replay = json!({ "id": "evt_replayed", "type": "payment.succeeded", "created": 0,
                             "data": { "session_id": session, "payment_id": payment, "reference": id,
                                       "amount": order["amount"], "fee": { "currency": "USD", "amount": "0.01" } } }).to_string();
        let (status, ack) = send(webhook(store_server::payments::provider::sign_webhook(&secret, now, replay.as_bytes()), replay.clone())).await;
        assert_eq!((status, ack["status"].as_str()), (StatusCode::OK, Some("processed")));
        let (status, ack) = send(webhook(store_server::payments::provider::sign_webhook(&secret, now, replay.as_bytes()), replay.clone())).await;
        assert_eq!((status, ack["status"].as_str()), (StatusCode::OK, Some("duplicate")));
        let mut after = server.fingerprint().await;
        let mut expected = before.clone();
        // Only the webhook_event table (not in the fingerprint) took the new event id.
        after.retain(|part| !part.starts_with("audit_log"));
        expected.retain(|part| !part.starts_with("audit_log"));
        assert_eq!(after, expected);
        server.assert_audit_clean().await;
    }

    async fn five_concurrent_deliveries_of_one_payment_fulfil_once(server: TestServer) {
        let (_, token) = server.login_player("concurrent-webhooks").await;
        // Hold the sandbox's own deliveries back; the test delivers the event itself.
        server.sandbox_controls(json!({ "delay_ms": 60_000 })).await;
        let order = server.order(&token, seed::GEMS_SMALL).await;
        server.pay(order["checkout_url"].as_str().expect("url"), CARD_OK).await;
        let payload: String = {
            let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(server.db().url()).await.expect("connect");
            let payload = sqlx::query_scalar("select payload from sandbox_event where event_type = 'payment.succeeded'").fetch_one(&pool).await.expect("the event");
            pool.close().await;
            payload
        };
        let secret = server.sandbox_webhook_secret().await;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let deliveries = (0..5).map(|_| {
            send(server.request(Method::POST, "/v1/webhooks/sandbox")
                .header("content-type", "application/json")
                .header("coinslot-signature", store_server::payments::provider::sign_webhook(&secret, now, payload.as_bytes()))
                .body(payload.clone()))
        });
        let answers = futures_util::future::join_all(deliveries).await;
        let processed = answers.iter().filter(|(status, ack)| *status == StatusCode::OK && ack["status"] == "processed").count();
        let duplicates = answers.iter().filter(|(status, ack)| *status == StatusCode::OK && ack["status"] == "duplicate").count();
        assert_eq!((processed, duplicates), (1, 4), "{answers:?}");
        server.wait_for_order(&token, order["id"].as_str().expect("id"), status_is("fulfilled")).await;
        assert_eq!(server.balance(&token, "gems").await, 100);
        server.assert_audit_clean().await;
    }

    async fn a_refund_after_the_gems_were_spent_leaves_a_debt_that_blocks_purchases(server: TestServer) {
        let (player, token) = server.login_player("refunded").await;
        let order = server.order(&token, seed::GEMS_SMALL).await;
        let id = order["id"].as_str().expect("id").to_owned();
        server.pay(order["checkout_url"].as_str().expect("url"), CARD_OK).await;
        server.wait_for_order(&token, &id, status_is("fulfilled")).await;
        let (status, _) = send(server.purchase(&token, &key(), &json!({ "offer_id": seed::SKIN_BLUE }))).await;
        assert_eq!(status, StatusCode::CREATED, "80 of the 100 gems spent");

        let refund = |body: Value| server.admin(Method::POST, &format!("/admin/v1/orders/{id}/refunds")).header("idempotency-key", key()).json(&body);
        let before = server.fingerprint().await;
        let cases = [
            ("more than was paid", refund(json!({ "amount": "1.00", "reason": "x" })), StatusCode::CONFLICT, "refund_exceeds_paid"),
            ("finer than a cent", refund(json!({ "amount": "0.005", "reason": "x" })), StatusCode::BAD_REQUEST, "invalid_request"),
            ("no reason", refund(json!({ "amount": "0.10" })), StatusCode::BAD_REQUEST, "invalid_request"),
            ("a player's token", server.player(&token, Method::POST, &format!("/admin/v1/orders/{id}/refunds")).header("idempotency-key", key()).json(&json!({ "reason": "x" })), StatusCode::FORBIDDEN, "wrong_credential_kind"),
        ];
        for (case, request, status, code) in cases {
            assert_error(case, &send(request).await, status, code);
        }
        assert_eq!(server.fingerprint().await, before);

        let (status, partial) = send(refund(json!({ "amount": "0.49", "reason": "goodwill" }))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{partial}");
        assert_eq!(partial["status"], "pending");
        server.wait_for_order(&token, &id, status_is("partially_refunded")).await;
        // 0.49 of 0.99 refunded: floor(100 × 0.49 / 0.99) = 49 gems clawed back: 20 − 49 = −29.
        assert_eq!(server.balance(&token, "gems").await, -29);
        let debt = send(server.purchase(&token, &key(), &json!({ "offer_id": seed::SKIN_RED, "price_index": 1 }))).await;
        assert_error("buying with gems while in debt", &debt, StatusCode::CONFLICT, "outstanding_debt");
        let flagged = send(server.player(&token, Method::POST, "/v1/orders").header("idempotency-key", key()).json(&json!({ "offer_id": seed::GEMS_SMALL }))).await;
        assert_error("a card order while a refund's debt is open", &flagged, StatusCode::FORBIDDEN, "player_flagged");
        let (status, _) = send(server.purchase(&token, &key(), &json!({ "offer_id": seed::MAGNET }))).await;
        assert_eq!(status, StatusCode::CREATED, "gold is not in debt");

        let (status, _) = send(refund(json!({ "reason": "the rest" }))).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let refunded = server.wait_for_order(&token, &id, status_is("refunded")).await;
        assert_eq!(refunded["refunded"], json!({ "currency": "USD", "amount": "0.99" }));
        assert_eq!(server.balance(&token, "gems").await, -80, "all 100 clawed back; the 80 spent are owed");
        let (_, history) = send(server.player(&token, Method::GET, "/v1/wallet/history?limit=1")).await;
        assert_eq!(history["entries"][0]["kind"], "reversal");
        let again = send(refund(json!({ "reason": "once more" }))).await;
        assert_error("refunding a refunded order", &again, StatusCode::CONFLICT, "order_state_conflict");

        server.grant(&player, "gems", 80).await;
        let (status, _) = send(server.purchase(&token, &key(), &json!({ "offer_id": seed::SKIN_RED, "price_index": 1 }))).await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "debt repaid: back to the ordinary rules (0 gems)");
        server.assert_audit_clean().await;
    }

    async fn a_disputed_payment_is_charged_back_and_clawed_back(server: TestServer) {
        let (_, token) = server.login_player("disputed").await;
        let order = server.order(&token, seed::GEMS_SMALL).await;
        server.pay(order["checkout_url"].as_str().expect("url"), CARD_DISPUTED).await;
        let charged_back = server.wait_for_order(&token, order["id"].as_str().expect("id"), status_is("charged_back")).await;
        let path: Vec<&str> = charged_back["transitions"].as_array().expect("transitions").iter().map(|t| t["to"].as_str().expect("to")).collect();
        assert_eq!(path, ["paid", "fulfilled", "disputed", "charged_back"]);
        assert_eq!(server.balance(&token, "gems").await, 0);
        let (_, admin_view) = send(server.admin(Method::GET, &format!("/admin/v1/orders/{}", order["id"].as_str().expect("id")))).await;
        assert_eq!(admin_view["refunded"], json!({ "currency": "USD", "amount": "0.99" }));
        server.assert_audit_clean().await;
    }
}

async fn unpaid_orders_expire(backend: Backend) {
    let Some(server) =
        TestServer::start_with(backend, |settings| settings.order_ttl = Duration::from_secs(1)).await
    else {
        return;
    };
    let (_, token) = server.login_player("slow").await;
    let order = server.order(&token, seed::GEMS_SMALL).await;
    let expired =
        server.wait_for_order(&token, order["id"].as_str().expect("id"), status_is("expired")).await;
    assert!(expired["transitions"][0]["cause"].as_str().expect("cause").contains("sweeper"));
    let late = server.pay(order["checkout_url"].as_str().expect("url"), CARD_OK).await;
    assert_eq!(late.0, StatusCode::CONFLICT, "an expired checkout takes no payment: {}", late.1);
    assert_eq!(server.balance(&token, "gems").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_orders_expire_on_sqlite() {
    unpaid_orders_expire(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_orders_expire_on_postgres() {
    unpaid_orders_expire(Backend::Postgres).await;
}

async fn spending_limits_hold_and_are_tighter_for_younger_age_bands(backend: Backend) {
    let limits = store_server::settings::SpendingLimits::parse("USD=2.00/2.50/3.00")
        .expect("limits")
        .with_bands(store_server::settings::AgeBandShares::parse("minor=20,child=10").expect("bands"));
    let Some(server) = TestServer::start_with(backend, |settings| settings.spending_limits = limits).await
    else {
        return;
    };
    let (_, token) = server.login_player("spender").await;
    let one_payment = send(
        server
            .player(&token, Method::POST, "/v1/orders")
            .header("idempotency-key", key())
            .json(&json!({ "offer_id": seed::GEMS_SMALL, "quantity": 3 })),
    )
    .await;
    assert_error(
        "over the cap on one payment",
        &one_payment,
        StatusCode::CONFLICT,
        "spending_limit_exceeded",
    );
    let details = &one_payment.1["error"]["details"];
    assert_eq!(
        (details["period"].as_str(), details["limit"].as_str(), details["age_band"].as_str()),
        (Some("transaction"), Some("2.00"), Some("adult")),
        "{details}"
    );
    for _ in 0..2 {
        server.order(&token, seed::GEMS_SMALL).await;
    }
    let over = send(
        server
            .player(&token, Method::POST, "/v1/orders")
            .header("idempotency-key", key())
            .json(&json!({ "offer_id": seed::STARTER_BUNDLE })),
    )
    .await;
    assert_error("over the daily limit", &over, StatusCode::CONFLICT, "spending_limit_exceeded");
    assert_eq!(over.1["error"]["details"]["remaining"], "0.52");
    assert_eq!(over.1["error"]["details"]["period"], "day");

    // An operator puts a player in an age band; the band is on the player's page and in the
    // audit log, and a band that does not exist changes nothing.
    let (young, young_token) = server.login_player("young").await;
    let player_url = format!("/admin/v1/players/{young}");
    let (status, summary) = send(server.admin(Method::GET, &player_url)).await;
    assert_eq!((status, &summary["player"]["age_band"]), (StatusCode::OK, &json!("adult")), "{summary}");
    let before = server.fingerprint().await;
    for (case, body) in [
        ("an unknown band", json!({ "age_band": "teen", "reason": "parent's request" })),
        ("a band that is not a string", json!({ "age_band": 13, "reason": "parent's request" })),
        ("no reason", json!({ "age_band": "minor" })),
    ] {
        assert_error(
            case,
            &send(server.admin(Method::PATCH, &player_url).json(&body)).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        );
    }
    assert_eq!(server.fingerprint().await, before, "refused band changes change nothing");
    let set_band = |band: &str| json!({ "age_band": band, "reason": "age check in the game" });
    let (status, changed) = send(server.admin(Method::PATCH, &player_url).json(&set_band("minor"))).await;
    assert_eq!((status, &changed["age_band"]), (StatusCode::OK, &json!("minor")), "{changed}");
    let (_, audit) = send(server.admin(Method::GET, "/admin/v1/audit-log")).await;
    assert!(
        audit["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .any(|entry| entry["action"] == "player.age_band" && entry["target"] == young.as_str()),
        "{audit}"
    );

    // A minor gets 20% of the adult caps: 0.40 on one payment, so one 0.99 pack is too much.
    let order = |token: &str| {
        send(
            server
                .player(token, Method::POST, "/v1/orders")
                .header("idempotency-key", key())
                .json(&json!({ "offer_id": seed::GEMS_SMALL })),
        )
    };
    let refused = order(&young_token).await;
    assert_error("a minor over their cap", &refused, StatusCode::CONFLICT, "spending_limit_exceeded");
    let details = &refused.1["error"]["details"];
    assert_eq!(
        (details["period"].as_str(), details["limit"].as_str(), details["age_band"].as_str()),
        (Some("transaction"), Some("0.40"), Some("minor")),
        "{details}"
    );
    send(server.admin(Method::PATCH, &player_url).json(&set_band("child"))).await;
    let refused = order(&young_token).await;
    assert_eq!(refused.1["error"]["details"]["limit"], "0.20", "a child gets 10%: {}", refused.1);
    send(server.admin(Method::PATCH, &player_url).json(&set_band("adult"))).await;
    let (status, allowed) = order(&young_token).await;
    assert_eq!(status, StatusCode::CREATED, "back in the adult band: {allowed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spending_limits_hold_and_are_tighter_for_younger_age_bands_on_sqlite() {
    spending_limits_hold_and_are_tighter_for_younger_age_bands(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spending_limits_hold_and_are_tighter_for_younger_age_bands_on_postgres() {
    spending_limits_hold_and_are_tighter_for_younger_age_bands(Backend::Postgres).await;
}

async fn a_standalone_sandbox_serves_a_store_over_http(backend: Backend) {
    let port = tests::free_port();
    let sandbox_url = format!("http://127.0.0.1:{port}/sandbox");
    let (api_key, secret) = ("sk_standalone_test", "whsec_standalone_test");
    let external = store_server::settings::SandboxMode::External {
        url: sandbox_url.clone(),
        api_key: api_key.to_owned(),
        webhook_secret: secret.as_bytes().to_vec(),
    };
    let Some(server) = TestServer::start_with(backend, |settings| settings.sandbox = external).await else {
        return;
    };
    let not_mounted = send(server.request(Method::GET, "/sandbox/checkout/cs_x")).await;
    assert_eq!(not_mounted.0, StatusCode::NOT_FOUND, "the store mounts no sandbox of its own");

    let webhooks = format!("{}/v1/webhooks/sandbox", server.base_url());
    let sandbox = tests::StandaloneSandbox::start(port, &webhooks, api_key, secret, None);
    assert_eq!(sandbox.url, sandbox_url);

    let (_, token) = server.login_player("standalone").await;
    let order = server.order(&token, seed::GEMS_SMALL).await;
    let checkout = order["checkout_url"].as_str().expect("url");
    assert!(checkout.starts_with(&sandbox_url), "{checkout}");
    let (status, _) = server.pay(checkout, CARD_OK).await;
    assert_eq!(status, StatusCode::OK);
    server.wait_for_order(&token, order["id"].as_str().expect("id"), status_is("fulfilled")).await;
    assert_eq!(server.balance(&token, "gems").await, 100);
    assert!(sandbox.process.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_sandbox_serves_a_store_over_http_on_sqlite() {
    a_standalone_sandbox_serves_a_store_over_http(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_sandbox_serves_a_store_over_http_on_postgres() {
    a_standalone_sandbox_serves_a_store_over_http(Backend::Postgres).await;
}

/// The `data:` of the event of type `event_type` in a stream's text, as JSON.
fn event_data(stream: &str, event_type: &str) -> Value {
    let event = stream
        .split("\n\n")
        .find(|event| event.lines().any(|line| line == format!("event: {event_type}")))
        .unwrap_or_else(|| panic!("a {event_type} event in {stream}"));
    let data = event.lines().find_map(|line| line.strip_prefix("data:")).expect("data");
    serde_json::from_str(data.trim()).expect("JSON data")
}

/// Wallet and inventory events are read from the player's entries, not stored: a purchase writes
/// no event row, and its two events name its entry. An entry committed after another has the
/// later id even when the other was made by a clock an hour ahead (another instance's), so the
/// stream, which reads a player's entries by id, shows it. Resuming between an entry's two
/// events sends the second only.
async fn entry_events_follow_commit_order_whatever_the_clock(backend: Backend, batching: bool) {
    let Some(server) = TestServer::start_with(backend, |settings| settings.group_commit = batching).await
    else {
        return;
    };
    let (player, token) = server.login_player("clockwise").await;
    let mut events =
        server.player(&token, Method::GET, "/v1/events").send().await.expect("the event stream opens");
    assert_eq!(events.status(), StatusCode::OK);
    let an_hour_ahead = i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000)
        .expect("a time")
        + 3_600_000_000;
    let ahead = server.backdated_entry(&player, "purchase", an_hour_ahead).await;

    let (status, bought) = send(server.purchase(&token, &key(), &json!({ "offer_id": seed::MAGNET }))).await;
    assert_eq!(status, StatusCode::CREATED, "{bought}");
    let seen = read_events_until(&mut events, &["event: wallet.updated", "event: inventory.updated"]).await;
    let (wallet, inventory) = (event_data(&seen, "wallet.updated"), event_data(&seen, "inventory.updated"));
    let entry = wallet["entry_id"].as_str().expect("the entry");
    assert_eq!(inventory["entry_id"], entry, "{seen}");
    assert!(
        entry > ahead.as_str(),
        "the purchase's entry {entry} is after the entry made an hour ahead {ahead}"
    );
    assert!(bought["receipt"].to_string().contains(entry), "the purchase's own entry: {bought}");
    assert_eq!(wallet["changes"][0]["currency"], "gold", "{wallet}");
    assert_eq!(inventory["items"][0]["sku"], "magnet", "{inventory}");
    assert_eq!(
        server.text("select cast(count(*) as text) from player_event where event_type like '%.updated' and event_type <> 'order.updated'").await,
        "0",
        "no event row for an entry"
    );

    // Resuming after the wallet event sends the inventory event, with the same id as before.
    assert_resumes(&server, &token, &seen, "event: wallet.updated", "event: inventory.updated").await;
}

in_every_mode!(entry_events_follow_commit_order_whatever_the_clock);
