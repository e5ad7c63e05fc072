//! Real money reconciles with the provider (the money review, issue 15), over real HTTP with
//! the sandbox's real books: a payment is applied only when its amount, currency, reference and
//! order match; any other payment grants nothing and is booked and returned; a real-money
//! request claims its key (with its body's hash) before the provider is called, so one key never
//! pays for two bodies; catalog and currency limits keep every amount countable.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{Backend, TestServer, assert_error, seed, send, status_is};

use store_api::sandbox::cards::{DECLINED as CARD_DECLINED, DISPUTED as CARD_DISPUTED, SUCCEEDS as CARD_OK};

/// Returned payments whose refund the provider confirmed.
const RETURNED: &str = "select count(*) from refund where payment_id is not null and status = 'succeeded'";
/// Sandbox payments refunded in full.
const FULLY_REFUNDED: &str = "select count(*) from sandbox_payment where refunded_micros = amount_micros";

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn usd(amount: &str) -> Value {
    json!({ "currency": "USD", "amount": amount })
}

on_both_backends! {
    async fn payments_that_do_not_match_their_order_grant_nothing_and_are_returned(server: TestServer) {
        let (_, token) = server.login_player("mismatched-payer").await;
        let order = server.order(&token, seed::GEMS_SMALL).await;
        assert_eq!(order["amount"], usd("0.99"));
        let url = order["checkout_url"].as_str().expect("url");
        let cases = [
            ("less than the order costs", json!({ "amount": usd("0.50") })),
            ("more than the order costs", json!({ "amount": usd("5.00") })),
            ("another currency", json!({ "amount": { "currency": "EUR", "amount": "0.99" } })),
            ("another order's reference", json!({ "reference": "019a6b1e-0000-7000-8000-00000000beef" })),
        ];
        for (index, (case, overrides)) in cases.into_iter().enumerate() {
            server.sandbox_stray_payment(url, overrides).await;
            server.wait_for_count(RETURNED, i64::try_from(index).expect("small") + 1).await;
            assert_eq!(server.balance(&token, "gems").await, 0, "{case}: nothing granted");
        }
        assert_eq!(server.count(FULLY_REFUNDED).await, 4, "the provider got every payment back");
        let id = order["id"].as_str().expect("id");
        let (_, still) = send(server.player(&token, Method::GET, &format!("/v1/orders/{id}"))).await;
        assert_eq!(still["status"], "requires_payment", "a wrong payment does not pay the order: {still}");
        assert_eq!(still["receipt"], Value::Null);
        for (reason, sql) in [
            ("too little", "select count(*) from provider_payment where reason = 'paid 0.50 USD, but the order costs 0.99 USD'"),
            ("too much", "select count(*) from provider_payment where reason like 'paid 5.00 USD%'"),
            ("currency", "select count(*) from provider_payment where reason like 'paid in EUR%'"),
            ("reference", "select count(*) from provider_payment where reason like '%reference%'"),
        ] {
            assert_eq!(server.count(sql).await, 1, "the returned payment's reason names the mismatch: {reason}");
        }

        // The order still takes its own, exact payment.
        let (status, _) = server.pay(url, CARD_OK).await;
        assert_eq!(status, StatusCode::OK);
        server.wait_for_order(&token, id, status_is("fulfilled")).await;
        assert_eq!(server.balance(&token, "gems").await, 100);
        server.assert_audit_clean().await;
    }

    async fn a_second_payment_of_a_paid_order_is_returned_and_grants_nothing(server: TestServer) {
        let (_, token) = server.login_player("paid-twice").await;
        let order = server.order(&token, seed::GEMS_SMALL).await;
        let url = order["checkout_url"].as_str().expect("url");
        assert_eq!(server.pay(url, CARD_OK).await.0, StatusCode::OK);
        let id = order["id"].as_str().expect("id");
        server.wait_for_order(&token, id, status_is("fulfilled")).await;
        let second = server.sandbox_stray_payment(url, json!({})).await;
        server.wait_for_count(RETURNED, 1).await;
        assert_eq!(server.balance(&token, "gems").await, 100, "granted once");
        assert_eq!(server.count("select count(*) from receipt").await, 1);
        let (_, paid) = send(server.player(&token, Method::GET, &format!("/v1/orders/{id}"))).await;
        assert_eq!((paid["status"].as_str(), &paid["refunded"]), (Some("fulfilled"), &usd("0.00")), "{paid}");
        assert_eq!(server.count(FULLY_REFUNDED).await, 1, "the second payment went back");
        let returned = server.text("select payment_id from provider_payment where outcome = 'returned'").await;
        assert_eq!(returned, second);
        server.assert_audit_clean().await;
    }

    async fn a_payment_of_a_declined_order_is_returned(server: TestServer) {
        let (_, token) = server.login_player("declined-then-paid").await;
        let order = server.order(&token, seed::GEMS_SMALL).await;
        let url = order["checkout_url"].as_str().expect("url");
        assert_eq!(server.pay(url, CARD_DECLINED).await.0, StatusCode::OK);
        let id = order["id"].as_str().expect("id");
        server.wait_for_order(&token, id, status_is("failed")).await;
        server.sandbox_stray_payment(url, json!({})).await;
        server.wait_for_count(RETURNED, 1).await;
        assert_eq!(server.balance(&token, "gems").await, 0);
        let (_, failed) = send(server.player(&token, Method::GET, &format!("/v1/orders/{id}"))).await;
        assert_eq!(failed["status"], "failed");
        server.assert_audit_clean().await;
    }

    async fn one_key_never_pays_for_another_body(server: TestServer) {
        let (_, token) = server.login_player("key-reuser").await;
        let order = |key: &str, body: Value| {
            server.player(&token, Method::POST, "/v1/orders").header("idempotency-key", key).json(&body)
        };
        // The review's first step: a request refused after its key was claimed. Its refusal is
        // the key's answer from then on; another body under the key is refused.
        let expensive = json!({ "offer_id": seed::GEMS_LARGE, "quantity": 100 });
        let refused = send(order("k-1", expensive.clone())).await;
        assert_error("over the spending limit", &refused, StatusCode::CONFLICT, "spending_limit_exceeded");
        let replayed = order("k-1", expensive).send().await.expect("sent");
        assert_eq!(replayed.headers()["idempotent-replayed"], "true");
        assert_eq!(replayed.json::<Value>().await.expect("json"), refused.1);
        let cheap = send(order("k-1", json!({ "offer_id": seed::GEMS_SMALL }))).await;
        assert_error("another body under a used key", &cheap, StatusCode::CONFLICT, "idempotency_key_reused");
        assert_eq!(server.count("select count(*) from sandbox_session").await, 0, "no session opened");

        // Two bodies under one key at once: one order, one session, at the order's price.
        let (first, second) = tokio::join!(
            send(order("k-2", json!({ "offer_id": seed::GEMS_SMALL }))),
            send(order("k-2", json!({ "offer_id": seed::GEMS_SMALL, "quantity": 3 }))),
        );
        let mut statuses = [first.0, second.0];
        statuses.sort();
        assert_eq!(statuses, [StatusCode::CREATED, StatusCode::CONFLICT], "{first:?} {second:?}");
        let reused = if first.0 == StatusCode::CONFLICT { &first } else { &second };
        assert_eq!(reused.1["error"]["code"], "idempotency_key_reused");
        assert_eq!(server.count("select count(*) from sandbox_session").await, 1);
        assert_eq!(server.count("select count(*) from payment_order").await, 1);
        assert_eq!(
            server.count("select count(*) from payment_order o join sandbox_session s on s.id = o.provider_session \
                          where s.amount_micros = o.gross_micros and s.reference = o.id and s.currency = o.currency").await,
            1,
            "the order records the price, currency and reference its session charges",
        );
    }

    async fn the_sandbox_refuses_a_reused_key_with_other_parameters(server: TestServer) {
        let api_key = server.sandbox_api_key().await;
        let open = |reference: &str, amount: &str| {
            server
                .request(Method::POST, "/sandbox/v1/checkout-sessions")
                .bearer_auth(&api_key)
                .json(&json!({
                    "idempotency_key": "session-key", "merchant": "Test", "reference": reference,
                    "description": "gems", "amount": usd(amount), "expires_at": 4_102_444_800_i64,
                }))
        };
        let (status, first) = send(open("order-1", "0.99")).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        let (status, again) = send(open("order-1", "0.99")).await;
        assert_eq!((status, &again["id"]), (StatusCode::OK, &first["id"]), "the same parameters: the same session");
        for (case, reference, amount) in [("another amount", "order-1", "99.00"), ("another reference", "order-2", "0.99")] {
            assert_error(case, &send(open(reference, amount)).await, StatusCode::CONFLICT, "idempotency_key_reused");
        }
        assert_eq!(server.count("select count(*) from sandbox_session").await, 1);
    }

    async fn a_grant_no_wallet_could_hold_is_refused_by_validation(server: TestServer) {
        let bundle = |amount: i64| json!({
            "sku": "gems.absurd", "name": "Absurd gems", "description": "Too many.", "kind": "currency_pack",
            "grants": { "currencies": [{ "currency": "gems", "amount": amount }] },
        });
        let before = server.fingerprint().await;
        for amount in [1_i64 << 62, i64::MAX] {
            let refused = send(server.admin(Method::POST, "/admin/v1/catalog/draft/items").json(&bundle(amount))).await;
            assert_error("a grant over balance_max", &refused, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
            assert_eq!(refused.1["error"]["details"]["field"], "grants.currencies[0].amount", "{}", refused.1);
        }
        assert_eq!(server.fingerprint().await, before);
        let (_, ready) = send(server.request(Method::GET, "/readyz")).await;
        assert_eq!(ready["status"], "ok");
    }

    async fn orders_obey_purchase_limits_and_stock_like_purchases(server: TestServer) {
        let usd_price = json!([{ "money": usd("1.00"), "settlement": "immediate" }]);
        let once = server.publish_offer(
            json!({ "sku": "founder_pack", "kind": "currency_pack", "name": "Founder pack",
                    "purchase_limit": { "count": 1, "period": "lifetime" },
                    "grants": { "currencies": [{ "currency": "gems", "amount": 10 }] } }),
            json!({ "sku": "founder_pack", "prices": usd_price }),
        ).await;
        let scarce = server.publish_offer(
            json!({ "sku": "rare_pack", "kind": "currency_pack", "name": "Rare pack", "stock": 2,
                    "grants": { "currencies": [{ "currency": "gems", "amount": 10 }] } }),
            json!({ "sku": "rare_pack", "prices": usd_price }),
        ).await;
        let order = |token: &str, offer: &str| {
            server.player(token, Method::POST, "/v1/orders").header("idempotency-key", key()).json(&json!({ "offer_id": offer }))
        };
        let (_, first) = server.login_player("founder").await;
        let (status, founder) = send(order(&first, &once)).await;
        assert_eq!(status, StatusCode::CREATED, "{founder}");
        let again = send(order(&first, &once)).await;
        assert_error("a second unpaid order of a once-only pack", &again, StatusCode::CONFLICT, "purchase_limit_reached");
        assert_eq!(server.pay(founder["checkout_url"].as_str().expect("url"), CARD_OK).await.0, StatusCode::OK);
        server.wait_for_order(&first, founder["id"].as_str().expect("id"), status_is("fulfilled")).await;
        let after = send(order(&first, &once)).await;
        assert_error("a second order once paid", &after, StatusCode::CONFLICT, "purchase_limit_reached");

        let mut tokens = Vec::new();
        for index in 0..3 {
            tokens.push(server.login_player(&format!("collector-{index}")).await.1);
        }
        let (status, one) = send(order(&tokens[0], &scarce)).await;
        assert_eq!(status, StatusCode::CREATED, "{one}");
        let (status, two) = send(order(&tokens[1], &scarce)).await;
        assert_eq!(status, StatusCode::CREATED, "{two}");
        let sold_out = send(order(&tokens[2], &scarce)).await;
        assert_error("a third order of two in stock", &sold_out, StatusCode::CONFLICT, "out_of_stock");
        assert_eq!(server.pay(two["checkout_url"].as_str().expect("url"), CARD_DECLINED).await.0, StatusCode::OK);
        server.wait_for_order(&tokens[1], two["id"].as_str().expect("id"), status_is("failed")).await;
        let (status, three) = send(order(&tokens[2], &scarce)).await;
        assert_eq!(status, StatusCode::CREATED, "a declined order gives its unit back: {three}");
        server.assert_audit_clean().await;
    }

    async fn creators_are_paid_only_on_tab_money_collected_and_give_it_back_on_reversal(server: TestServer) {
        let offer = server.publish_offer(
            json!({ "sku": "fan_art", "kind": "consumable", "name": "Fan art",
                    "creators": [{ "creator": "ana", "share_bps": 5_000 }] }),
            json!({ "sku": "fan_art", "prices": [{ "money": usd("0.10"), "settlement": "tab" }] }),
        ).await;
        let ana = || async {
            let (_, creator) = send(server.admin(Method::GET, "/admin/v1/creators/ana")).await;
            creator["balances"][0]["amount"].as_str().map(str::to_owned)
        };
        let settle = |token: String, card: &'static str| {
            let server = &server;
            let offer = offer.clone();
            async move {
                let (status, bought) = send(server.purchase(&token, &key(), &json!({ "offer_id": offer, "quantity": 10, "price_index": 0 }))).await;
                assert_eq!(status, StatusCode::CREATED, "{bought}");
                let (status, order) = send(server.player(&token, Method::POST, "/v1/tab/settle").header("idempotency-key", key())).await;
                assert_eq!(status, StatusCode::CREATED, "{order}");
                assert_eq!(server.pay(order["checkout_url"].as_str().expect("url"), card).await.0, StatusCode::OK);
                server.wait_for_order(&token, order["id"].as_str().expect("id"), status_is("fulfilled")).await
            }
        };
        let (_, payer) = server.login_player("art-lover").await;
        let (status, _) = send(server.purchase(&payer, &key(), &json!({ "offer_id": offer, "quantity": 10, "price_index": 0 }))).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(ana().await, None, "an unpaid tab credits no creator");
        let (status, order) = send(server.player(&payer, Method::POST, "/v1/tab/settle").header("idempotency-key", key())).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        assert_eq!(server.pay(order["checkout_url"].as_str().expect("url"), CARD_OK).await.0, StatusCode::OK);
        let id = order["id"].as_str().expect("id").to_owned();
        let settled = server.wait_for_order(&payer, &id, status_is("fulfilled")).await;
        assert_eq!(settled["net"], usd("0.67"), "1.00 less 0.30 + 2.9%");
        assert_eq!(ana().await.as_deref(), Some("0.335"), "half of the net collected");

        let (status, _) = send(server.admin(Method::POST, &format!("/admin/v1/orders/{id}/refunds")).header("idempotency-key", key()).json(&json!({ "reason": "art returned" }))).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        server.wait_for_order(&payer, &id, status_is("refunded")).await;
        assert_eq!(ana().await.as_deref(), Some("0.00"), "a refunded settlement takes the share back");

        let (_, disputer) = server.login_player("art-disputer").await;
        settle(disputer.clone(), CARD_DISPUTED).await;
        assert_eq!(ana().await.as_deref(), Some("0.335"));
        server.wait_for_count("select count(*) from payment_order where status = 'charged_back'", 1).await;
        assert_eq!(ana().await.as_deref(), Some("0.00"), "a charged-back settlement takes the share back");
        server.assert_audit_clean().await;
    }

    async fn a_refund_the_provider_refuses_fails_visibly_and_holds_up_no_other(server: TestServer) {
        let (_, token) = server.login_player("refund-refused").await;
        let mut orders = Vec::new();
        for _ in 0..2 {
            let order = server.order(&token, seed::GEMS_SMALL).await;
            assert_eq!(server.pay(order["checkout_url"].as_str().expect("url"), CARD_OK).await.0, StatusCode::OK);
            let id = order["id"].as_str().expect("id").to_owned();
            server.wait_for_order(&token, &id, status_is("fulfilled")).await;
            orders.push(id);
        }
        // The provider's own books say the first payment was refunded already (outside the store).
        let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(server.db().url()).await.expect("db");
        sqlx::query("update sandbox_payment set refunded_micros = amount_micros where session_id = (select provider_session from payment_order where id = $1)")
            .bind(&orders[0])
            .execute(&pool)
            .await
            .expect("the provider's books");
        pool.close().await;
        let refund = |id: &str| {
            server.admin(Method::POST, &format!("/admin/v1/orders/{id}/refunds")).header("idempotency-key", key()).json(&json!({ "reason": "asked" }))
        };
        assert_eq!(send(refund(&orders[0])).await.0, StatusCode::ACCEPTED);
        server.wait_for_count("select count(*) from refund where status = 'failed'", 1).await;
        assert_eq!(send(refund(&orders[1])).await.0, StatusCode::ACCEPTED);
        server.wait_for_order(&token, &orders[1], status_is("refunded")).await;

        let (_, refused) = send(server.admin(Method::GET, &format!("/admin/v1/orders/{}", orders[0]))).await;
        assert_eq!(refused["status"], "fulfilled", "nothing was returned: {refused}");
        assert_eq!(refused["refunds"][0]["status"], "failed", "{refused}");
        assert!(refused["refunds"][0]["last_error"].as_str().expect("why").contains("refused"), "{refused}");
        let (status, again) = send(refund(&orders[0])).await;
        assert_eq!(status, StatusCode::ACCEPTED, "a failed refund reserves nothing; an operator may try again: {again}");
        server.assert_audit_clean().await;
    }

    async fn balance_max_cannot_go_below_a_balance_that_exists(server: TestServer) {
        let (player, _) = server.login_player("rich").await;
        server.grant(&player, "gold", 5_000).await;
        let current = server.admin(Method::GET, "/admin/v1/currencies/gold").send().await.expect("sent");
        let etag = current.headers()["etag"].to_str().expect("ascii").to_owned();
        let mut gold: Value = current.json().await.expect("json");
        let put = |body: &Value| {
            server.admin(Method::PUT, "/admin/v1/currencies/gold").header("if-match", &etag).json(body)
        };
        let before = server.fingerprint().await;
        let held = server.count("select max(balance) from account where kind = 'wallet' and currency = 'gold'").await;
        assert!(held >= 5_000, "the grant and the initial grant: {held}");
        gold["balance_max"] = json!(held - 1);
        let refused = send(put(&gold)).await;
        assert_error("below a held balance", &refused, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(refused.1["error"]["details"]["field"], "balance_max");
        assert_eq!(server.fingerprint().await, before, "nothing changed");
        gold["balance_max"] = json!(held);
        let (status, body) = send(put(&gold)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        server.assert_audit_clean().await;
    }
}

/// The review's H1: a settlement order expires, the tab is settled by a second order, then the
/// first order's payment arrives late. It must not settle the tab again: it is returned.
async fn a_late_payment_of_an_expired_settlement_is_returned(backend: Backend) {
    let Some(server) =
        TestServer::start_with(backend, |settings| settings.order_ttl = Duration::from_secs(2)).await
    else {
        return;
    };
    let (_, token) = server.login_player("late-settler").await;
    let (status, bought) = send(server.purchase(
        &token,
        &key(),
        &json!({ "offer_id": seed::EXTRA_LIFE, "quantity": 10, "price_index": 0 }),
    ))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{bought}");
    let settle = || server.player(&token, Method::POST, "/v1/tab/settle").header("idempotency-key", key());
    let (status, first) = send(settle()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    server.wait_for_order(&token, first["id"].as_str().expect("id"), status_is("expired")).await;
    let (status, second) = send(settle()).await;
    assert_eq!(status, StatusCode::CREATED, "the tab is open again: {second}");
    assert_eq!(server.pay(second["checkout_url"].as_str().expect("url"), CARD_OK).await.0, StatusCode::OK);
    server.wait_for_order(&token, second["id"].as_str().expect("id"), status_is("fulfilled")).await;

    server.sandbox_stray_payment(first["checkout_url"].as_str().expect("url"), json!({})).await;
    server.wait_for_count(RETURNED, 1).await;
    assert_eq!(
        server.count("select count(*) from entry where kind = 'tab_settlement'").await,
        1,
        "settled once"
    );
    assert_eq!(server.count(FULLY_REFUNDED).await, 1, "the late payment went back");
    let (_, expired) = send(server.player(
        &token,
        Method::GET,
        &format!("/v1/orders/{}", first["id"].as_str().expect("id")),
    ))
    .await;
    assert_eq!(expired["status"], "expired");
    server.assert_audit_clean().await;
}

/// The review's H3 and the third defect: a refund done, a refund in flight, then a
/// dispute of the whole payment. Each movement the provider confirms is its own entry; what went
/// back beyond the price is counted and the order is marked for review; the player is flagged.
async fn overlapping_refunds_and_a_chargeback_are_each_booked(backend: Backend) {
    let Some(server) =
        TestServer::start_with(backend, |settings| settings.sandbox_dispute_delay = Duration::from_secs(4))
            .await
    else {
        return;
    };
    let (_, token) = server.login_player("friendly-fraud").await;
    let order = server.order(&token, seed::GEMS_SMALL).await;
    let id = order["id"].as_str().expect("id").to_owned();
    assert_eq!(
        server.pay(order["checkout_url"].as_str().expect("url"), CARD_DISPUTED).await.0,
        StatusCode::OK
    );
    server.wait_for_order(&token, &id, status_is("fulfilled")).await;
    let refund = |amount: &str| {
        server
            .admin(Method::POST, &format!("/admin/v1/orders/{id}/refunds"))
            .header("idempotency-key", key())
            .json(&json!({ "amount": amount, "reason": "goodwill" }))
    };
    assert_eq!(send(refund("0.20")).await.0, StatusCode::ACCEPTED);
    server.wait_for_order(&token, &id, status_is("partially_refunded")).await;
    // The second refund's confirmation arrives after the dispute.
    server.sandbox_controls(json!({ "delay_ms": 8_000 })).await;
    assert_eq!(send(refund("0.30")).await.0, StatusCode::ACCEPTED);
    server.wait_for_count("select count(*) from refund where status = 'submitted'", 1).await;
    server.wait_for_order(&token, &id, status_is("charged_back")).await;
    server.wait_for_count("select count(*) from refund where status = 'succeeded'", 3).await;

    let (_, booked) = send(server.admin(Method::GET, &format!("/admin/v1/orders/{id}"))).await;
    assert_eq!(
        (booked["status"].as_str(), &booked["refunded"]),
        (Some("charged_back"), &usd("0.99")),
        "{booked}"
    );
    assert!(booked["review"].as_str().expect("marked for review").contains("0.50 USD"), "{booked}");
    assert_eq!(
        server
            .count("select cast(sum(amount_micros) as bigint) from refund where status = 'succeeded'")
            .await,
        1_490_000,
        "0.20 + 0.30 refunded and 0.99 charged back: all that left the provider is booked",
    );
    assert_eq!(server.balance(&token, "gems").await, 0, "every gem granted is clawed back, once");
    assert_eq!(server.count("select count(*) from player where flag_reason like 'chargeback%'").await, 1);
    server.assert_audit_clean().await;
}

/// The second defect: a tab settled with the dispute card and charged back leaves the
/// player flagged, so the settle-then-dispute loop stops.
async fn a_charged_back_settlement_flags_the_player_and_ends_the_tab_credit(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |settings| {
        settings.sandbox_dispute_delay = Duration::from_millis(200)
    })
    .await
    else {
        return;
    };
    let (_, token) = server.login_player("tab-fraud").await;
    let buy = || {
        server.purchase(
            &token,
            &key(),
            &json!({ "offer_id": seed::EXTRA_LIFE, "quantity": 10, "price_index": 0 }),
        )
    };
    assert_eq!(send(buy()).await.0, StatusCode::CREATED);
    let (status, used) = send(
        server
            .player(&token, Method::POST, "/v1/inventory/extra_life/consume")
            .header("idempotency-key", key())
            .json(&json!({ "quantity": 3 })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{used}");
    let (status, order) =
        send(server.player(&token, Method::POST, "/v1/tab/settle").header("idempotency-key", key())).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(
        server.pay(order["checkout_url"].as_str().expect("url"), CARD_DISPUTED).await.0,
        StatusCode::OK
    );
    server.wait_for_order(&token, order["id"].as_str().expect("id"), status_is("charged_back")).await;
    let (_, inventory) = send(server.player(&token, Method::GET, "/v1/inventory")).await;
    assert_eq!(
        inventory["items"],
        json!([{ "sku": "extra_life", "quantity": -3 }]),
        "the 7 lives still held are clawed back and the 3 used up are a debt: {inventory}"
    );
    let refused = send(buy()).await;
    assert_error("a tab for a player who charged back", &refused, StatusCode::FORBIDDEN, "player_flagged");
    let settle =
        send(server.player(&token, Method::POST, "/v1/tab/settle").header("idempotency-key", key())).await;
    assert_eq!(settle.0, StatusCode::FORBIDDEN, "{}", settle.1);
    server.assert_audit_clean().await;
}

/// The review's H7: webhooks are not the only path. The provider gives up on a payment's
/// webhook and on a refund's (a store outage longer than its retry window): reconciliation reads
/// the provider's events API and applies both, once.
async fn lost_webhooks_are_repaired_by_reconciliation(backend: Backend) {
    let Some(server) =
        TestServer::start_with(backend, |settings| settings.reconcile_interval = Duration::from_millis(300))
            .await
    else {
        return;
    };
    let (_, token) = server.login_player("outage-buyer").await;
    let order = server.order(&token, seed::GEMS_SMALL).await;
    let id = order["id"].as_str().expect("id").to_owned();
    server.sandbox_controls(json!({ "lose_next": 1 })).await;
    assert_eq!(server.pay(order["checkout_url"].as_str().expect("url"), CARD_OK).await.0, StatusCode::OK);
    let fulfilled = server.wait_for_order(&token, &id, status_is("fulfilled")).await;
    assert_eq!(
        server.count("select count(*) from sandbox_delivery").await,
        0,
        "no webhook was ever delivered"
    );
    assert_eq!(
        fulfilled["transitions"][0]["cause"]
            .as_str()
            .map(|cause| cause.starts_with("webhook payment.succeeded")),
        Some(true)
    );
    assert_eq!(server.balance(&token, "gems").await, 100);

    server.sandbox_controls(json!({ "lose_next": 1 })).await;
    let (status, _) = send(
        server
            .admin(Method::POST, &format!("/admin/v1/orders/{id}/refunds"))
            .header("idempotency-key", key())
            .json(&json!({ "reason": "lost confirmation" })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    server.wait_for_order(&token, &id, status_is("refunded")).await;
    assert_eq!(server.balance(&token, "gems").await, 0);
    assert_eq!(
        server.count("select count(*) from entry where kind = 'order_fulfillment'").await,
        1,
        "applied once"
    );
    assert_eq!(server.count("select count(*) from entry where kind = 'reversal'").await, 1, "booked once");
    server.assert_audit_clean().await;
}

/// Before an order expires the store asks the provider whether its session was paid: a payment
/// whose webhook was lost (and that reconciliation has not reached) pays the order instead.
async fn an_order_is_not_expired_before_the_provider_is_asked(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |settings| {
        settings.order_ttl = Duration::from_secs(2);
        settings.reconcile_interval = Duration::from_secs(3_600);
    })
    .await
    else {
        return;
    };
    let (_, token) = server.login_player("paid-at-the-last-moment").await;
    let order = server.order(&token, seed::GEMS_SMALL).await;
    let id = order["id"].as_str().expect("id").to_owned();
    server.sandbox_controls(json!({ "lose_next": 1 })).await;
    assert_eq!(server.pay(order["checkout_url"].as_str().expect("url"), CARD_OK).await.0, StatusCode::OK);
    let fulfilled = server.wait_for_order(&token, &id, |order| order["status"] != "requires_payment").await;
    assert_eq!(fulfilled["status"], "fulfilled", "{fulfilled}");
    assert!(
        fulfilled["transitions"][0]["cause"].as_str().expect("cause").contains("session-lookup"),
        "{fulfilled}"
    );
    assert_eq!(server.balance(&token, "gems").await, 100);

    // An order nobody paid still expires.
    let unpaid = server.order(&token, seed::GEMS_SMALL).await;
    server.wait_for_order(&token, unpaid["id"].as_str().expect("id"), status_is("expired")).await;
    server.assert_audit_clean().await;
}

/// A store outage longer than the provider's retry window: the store (its own process's server,
/// with a standalone sandbox as its provider) is down while the player pays; the sandbox gives
/// up on the webhook; the store comes back and reconciliation fulfils the order, once.
async fn an_outage_longer_than_the_retry_window_loses_no_payment(backend: Backend) {
    let (sandbox_port, store_port) = (tests::free_port(), tests::free_port());
    let sandbox_url = format!("http://127.0.0.1:{sandbox_port}/sandbox");
    let (api_key, secret) = ("sk_outage_test", "whsec_outage_test");
    let configure = |settings: &mut store_server::Settings| {
        settings.listen = ([127, 0, 0, 1], store_port).into();
        settings.reconcile_interval = Duration::from_millis(300);
        settings.sandbox = store_server::settings::SandboxMode::External {
            url: sandbox_url.clone(),
            api_key: api_key.to_owned(),
            webhook_secret: secret.as_bytes().to_vec(),
        };
    };
    let Some(server) = TestServer::start_with(backend, configure).await else {
        return;
    };
    let webhooks = format!("{}/v1/webhooks/sandbox", server.base_url());
    let sandbox = tests::StandaloneSandbox::start(sandbox_port, &webhooks, api_key, secret, Some(2));

    let (_, token) = server.login_player("through-the-outage").await;
    let order = server.order(&token, seed::GEMS_SMALL).await;
    let id = order["id"].as_str().expect("id").to_owned();
    let (db, operator_key) = server.stop().await;

    // The player pays while the store is down; the sandbox tries twice and gives up.
    let http = reqwest::Client::new();
    let (status, paid) = send(
        http.post(format!("{}/pay", order["checkout_url"].as_str().expect("url")))
            .json(&json!({ "card_number": CARD_OK })),
    )
    .await;
    assert_eq!((status, paid["status"].as_str()), (StatusCode::OK, Some("succeeded")), "{paid}");
    let sandbox_books = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&sandbox.database_url)
        .await
        .expect("the sandbox's db");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let gave_up: i64 = sqlx::query_scalar(
            "select count(*) from sandbox_delivery where attempts >= 2 and delivered_at is null",
        )
        .fetch_one(&sandbox_books)
        .await
        .expect("deliveries");
        if gave_up == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the sandbox never gave up on the webhook");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sandbox_books.close().await;

    let server = TestServer::start_on(db, Some(operator_key), configure).await;
    let fulfilled = server.wait_for_order(&token, &id, status_is("fulfilled")).await;
    assert_eq!(fulfilled["amount"], usd("0.99"));
    assert_eq!(server.balance(&token, "gems").await, 100);
    assert_eq!(server.count("select count(*) from entry where kind = 'order_fulfillment'").await, 1);
    server.assert_audit_clean().await;
    assert!(sandbox.process.terminate().success());
}

/// DESIGN 5.5 and the review's M8 repro: items bought with real money and used up before a
/// chargeback become a debt (the count goes below zero through the clawback alone), the player
/// is flagged, nothing more can be used, and the next grants of the item repay the debt first.
async fn used_up_items_of_a_charged_back_order_become_a_debt(backend: Backend) {
    let Some(server) =
        TestServer::start_with(backend, |settings| settings.sandbox_dispute_delay = Duration::from_secs(5))
            .await
    else {
        return;
    };
    let (player, token) = server.login_player("friendly-fraud").await;
    let gold_before = server.balance(&token, "gold").await;
    let order = server.order(&token, seed::STARTER_BUNDLE).await;
    let id = order["id"].as_str().expect("id");
    assert_eq!(
        server.pay(order["checkout_url"].as_str().expect("url"), CARD_DISPUTED).await.0,
        StatusCode::OK
    );
    server.wait_for_order(&token, id, status_is("fulfilled")).await;
    let consume = |quantity: i64| {
        server
            .player(&token, Method::POST, "/v1/inventory/magnet/consume")
            .header("idempotency-key", key())
            .json(&json!({ "quantity": quantity }))
    };
    let (status, used) = send(consume(2)).await;
    assert_eq!(status, StatusCode::OK, "two of the three magnets used before the dispute: {used}");

    server.wait_for_order(&token, id, status_is("charged_back")).await;
    let (_, inventory) = send(server.player(&token, Method::GET, "/v1/inventory")).await;
    assert_eq!(
        inventory["items"],
        json!([{ "sku": "magnet", "quantity": -2 }]),
        "the skin and the magnet still held are taken back; the two used up are owed: {inventory}"
    );
    assert_eq!(server.balance(&token, "gold").await, gold_before, "the bundle's gold is taken back");
    assert_eq!(server.count("select count(*) from inventory where in_debt = 1").await, 1);
    assert_eq!(server.count("select count(*) from player where flagged_at is not null").await, 1);
    let refused = send(consume(1)).await;
    assert_error("using an item owed", &refused, StatusCode::CONFLICT, "insufficient_quantity");
    server.assert_audit_clean().await;

    // Three magnets granted later repay the two owed first.
    let (status, granted) = send(
        server
            .admin(Method::POST, &format!("/admin/v1/players/{player}/grants"))
            .header("idempotency-key", key())
            .json(&json!({ "items": [{ "sku": "magnet", "quantity": 3 }], "reason": "goodwill" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{granted}");
    let (_, inventory) = send(server.player(&token, Method::GET, "/v1/inventory")).await;
    assert_eq!(inventory["items"], json!([{ "sku": "magnet", "quantity": 1 }]), "{inventory}");
    assert_eq!(server.count("select count(*) from inventory where in_debt = 1").await, 0);
    server.assert_audit_clean().await;
}

on_each_backend!(
    a_late_payment_of_an_expired_settlement_is_returned,
    overlapping_refunds_and_a_chargeback_are_each_booked,
    a_charged_back_settlement_flags_the_player_and_ends_the_tab_credit,
    lost_webhooks_are_repaired_by_reconciliation,
    an_order_is_not_expired_before_the_provider_is_asked,
    an_outage_longer_than_the_retry_window_loses_no_payment,
    used_up_items_of_a_charged_back_order_become_a_debt,
);
