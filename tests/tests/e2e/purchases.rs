//! Virtual purchases, inventory and consumption: the store's rules, each refusal leaving no
//! trace.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tests::{assert_error, seed, send};

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

on_both_backends! {
    async fn a_purchase_debits_the_price_grants_the_item_and_is_in_the_history(server: TestServer) {
        let (player, token) = server.login_player("buyer").await;
        assert_eq!(server.balance(&token, "gold").await, 100, "the initial grant");
        server.grant(&player, "gold", 1_000).await;
        let (status, result) = send(server.purchase(&token, &key(), &json!({ "offer_id": seed::MAGNET, "quantity": 3 }))).await;
        assert_eq!(status, StatusCode::CREATED, "{result}");
        assert_eq!(result["purchase"]["paid"], json!({ "currency": "gold", "amount": 300 }));
        assert_eq!(result["purchase"]["quantity"], 3);
        assert_eq!(result["purchase"]["catalog_version"], 1);
        assert_eq!(result["granted"]["items"], json!([{ "sku": "magnet", "quantity": 3 }]));
        assert_eq!(result["inventory"]["items"], json!([{ "sku": "magnet", "quantity": 3 }]));
        let gold = result["wallet"]["balances"].as_array().expect("balances").iter().find(|b| b["currency"] == "gold").expect("gold").clone();
        assert_eq!(gold["balance"], 800);
        assert_eq!(server.balance(&token, "gold").await, 800);

        let (_, again) = send(server.purchase(&token, &key(), &json!({ "offer_id": seed::MAGNET }))).await;
        assert_eq!(again["inventory"]["items"], json!([{ "sku": "magnet", "quantity": 4 }]), "consumables stack");

        let (status, history) = send(server.player(&token, Method::GET, "/v1/wallet/history?limit=2")).await;
        assert_eq!(status, StatusCode::OK);
        let entries = history["entries"].as_array().expect("entries");
        assert_eq!(entries[0]["kind"], "purchase");
        assert_eq!(entries[0]["changes"], json!([{ "currency": "gold", "amount": -100, "balance_after": 700 }]));
        assert_eq!(entries[0]["items"], json!([{ "sku": "magnet", "delta": 1, "quantity_after": 4 }]));
        let cursor = history["next_cursor"].as_str().expect("more history");
        let (_, older) = send(server.player(&token, Method::GET, &format!("/v1/wallet/history?limit=10&cursor={cursor}"))).await;
        let kinds: Vec<&str> = older["entries"].as_array().expect("entries").iter().map(|e| e["kind"].as_str().expect("kind")).collect();
        assert_eq!(kinds, ["operator_grant", "initial_grant"]);
        assert_eq!(older["entries"][0]["reason"], "test setup");
        server.assert_audit_clean().await;
    }

    async fn a_durable_item_is_owned_once_and_consumables_are_used_up(server: TestServer) {
        let (player, token) = server.login_player("collector").await;
        server.grant(&player, "gold", 2_000).await;
        let (status, _) = send(server.purchase(&token, &key(), &json!({ "offer_id": seed::SKIN_RED }))).await;
        assert_eq!(status, StatusCode::CREATED);
        let before = server.fingerprint().await;
        let again = send(server.purchase(&token, &key(), &json!({ "offer_id": seed::SKIN_RED, "price_index": 0 }))).await;
        // The skin's lifetime purchase limit of one is reached before ownership is checked.
        assert_error("buying an owned skin again", &again, StatusCode::CONFLICT, "purchase_limit_reached");
        assert_eq!(server.fingerprint().await, before);

        let (status, _) = send(server.purchase(&token, &key(), &json!({ "offer_id": seed::SHIELD, "quantity": 2 }))).await;
        assert_eq!(status, StatusCode::CREATED);
        let consume = |quantity: i64| {
            server.player(&token, Method::POST, "/v1/inventory/shield/consume").header("idempotency-key", key()).json(&json!({ "quantity": quantity }))
        };
        let (status, used) = send(consume(1)).await;
        assert_eq!(status, StatusCode::OK, "{used}");
        assert_eq!(used["remaining"], 1);
        let before = server.fingerprint().await;
        assert_error("consuming more than held", &send(consume(2)).await, StatusCode::CONFLICT, "insufficient_quantity");
        let durable = send(server.player(&token, Method::POST, "/v1/inventory/skin.red/consume").header("idempotency-key", key()).json(&json!({}))).await;
        assert_error("consuming a durable item", &durable, StatusCode::CONFLICT, "not_consumable");
        let unknown = send(server.player(&token, Method::POST, "/v1/inventory/nothing/consume").header("idempotency-key", key()).json(&json!({}))).await;
        assert_error("consuming an unknown item", &unknown, StatusCode::NOT_FOUND, "not_found");
        assert_eq!(server.fingerprint().await, before);
        let (_, inventory) = send(server.player(&token, Method::GET, "/v1/inventory")).await;
        assert_eq!(inventory["items"], json!([{ "sku": "shield", "quantity": 1 }, { "sku": "skin.red", "quantity": 1 }]));
        server.assert_audit_clean().await;
    }

    async fn a_bundle_grants_items_and_currency_and_its_limits_hold(server: TestServer) {
        // A stocked bundle bought with gems: two shields and 50 gold, at most 2 per player a day, 3 in stock.
        let offer = server.publish_offer(
            json!({ "sku": "crate", "kind": "bundle", "name": "Crate", "stock": 3,
                    "purchase_limit": { "count": 2, "period": "day" },
                    "grants": { "items": [{ "sku": "shield", "quantity": 2 }], "currencies": [{ "currency": "gold", "amount": 50 }] } }),
            json!({ "sku": "crate", "prices": [{ "currency": "gems", "amount": 10 }] }),
        )
        .await;
        let (first, first_token) = server.login_player("bundle-1").await;
        let (second, second_token) = server.login_player("bundle-2").await;
        server.grant(&first, "gems", 100).await;
        server.grant(&second, "gems", 100).await;

        let (status, result) = send(server.purchase(&first_token, &key(), &json!({ "offer_id": offer, "quantity": 2 }))).await;
        assert_eq!(status, StatusCode::CREATED, "{result}");
        assert_eq!(result["granted"], json!({ "items": [{ "sku": "shield", "quantity": 4 }], "currencies": [{ "currency": "gold", "amount": 100 }] }));
        assert_eq!(server.balance(&first_token, "gold").await, 200);
        assert_eq!(server.balance(&first_token, "gems").await, 80);

        let before = server.fingerprint().await;
        let limited = send(server.purchase(&first_token, &key(), &json!({ "offer_id": offer }))).await;
        assert_error("a third crate today", &limited, StatusCode::CONFLICT, "purchase_limit_reached");
        assert!(limited.1["error"]["details"]["resets_at"].as_str().is_some_and(|at| at.ends_with("T00:00:00Z")), "{}", limited.1);
        let out = send(server.purchase(&second_token, &key(), &json!({ "offer_id": offer, "quantity": 2 }))).await;
        assert_error("two crates with one in stock", &out, StatusCode::CONFLICT, "out_of_stock");
        assert_eq!(server.fingerprint().await, before);
        let (status, _) = send(server.purchase(&second_token, &key(), &json!({ "offer_id": offer }))).await;
        assert_eq!(status, StatusCode::CREATED, "the last one in stock");
        server.assert_audit_clean().await;
    }

    async fn bad_purchases_are_refused_and_change_nothing(server: TestServer) {
        let (player, token) = server.login_player("refused").await;
        let (other, other_token) = server.login_player("other").await;
        server.grant(&other, "gold", 10).await;
        let _ = player;
        let later = server.publish_offer(
            json!({ "sku": "future_hat", "kind": "durable", "name": "Future hat" }),
            json!({ "sku": "future_hat", "prices": [{ "currency": "gold", "amount": 1 }], "sale_window": { "starts_at": "2999-01-01T00:00:00Z" } }),
        )
        .await;
        let ended = server.publish_offer(
            json!({ "sku": "old_hat", "kind": "durable", "name": "Old hat" }),
            json!({ "sku": "old_hat", "prices": [{ "currency": "gold", "amount": 1 }], "sale_window": { "ends_at": "2001-01-01T00:00:00Z" } }),
        )
        .await;
        let tiny = json!({ "code": "tiny", "name": "Tiny", "kind": "soft", "initial_grant": 0, "balance_max": 5 });
        assert_eq!(send(server.admin(Method::POST, "/admin/v1/currencies").json(&tiny)).await.0, StatusCode::CREATED);
        let overflowing = server.publish_offer(
            json!({ "sku": "tiny_pack", "kind": "currency_pack", "name": "Tiny pack", "grants": { "currencies": [{ "currency": "tiny", "amount": 4 }] } }),
            json!({ "sku": "tiny_pack", "prices": [{ "currency": "gold", "amount": 1 }] }),
        )
        .await;

        let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
            ("unknown offer", server.purchase(&token, &key(), &json!({ "offer_id": "019a6b1e-0009-7000-8000-000000000099" })), StatusCode::CONFLICT, "offer_not_available"),
            ("offer id not a UUID v7", server.purchase(&token, &key(), &json!({ "offer_id": "magnet" })), StatusCode::BAD_REQUEST, "invalid_request"),
            ("quantity 0", server.purchase(&token, &key(), &json!({ "offer_id": seed::MAGNET, "quantity": 0 })), StatusCode::BAD_REQUEST, "invalid_request"),
            ("quantity over the limit", server.purchase(&token, &key(), &json!({ "offer_id": seed::MAGNET, "quantity": 101 })), StatusCode::BAD_REQUEST, "invalid_request"),
            ("quantity not a number", server.purchase(&token, &key(), &json!({ "offer_id": seed::MAGNET, "quantity": "2" })), StatusCode::BAD_REQUEST, "invalid_request"),
            ("price index out of range", server.purchase(&token, &key(), &json!({ "offer_id": seed::MAGNET, "price_index": 1 })), StatusCode::BAD_REQUEST, "invalid_request"),
            ("negative price index", server.purchase(&token, &key(), &json!({ "offer_id": seed::MAGNET, "price_index": -1 })), StatusCode::BAD_REQUEST, "invalid_request"),
            ("a real-money price", server.purchase(&token, &key(), &json!({ "offer_id": seed::GEMS_SMALL })), StatusCode::CONFLICT, "price_requires_order"),
            ("a client-sent price", server.purchase(&token, &key(), &json!({ "offer_id": seed::MAGNET, "price": 1 })), StatusCode::BAD_REQUEST, "invalid_request"),
            ("not enough gold", server.purchase(&token, &key(), &json!({ "offer_id": seed::MAGNET, "quantity": 2 })), StatusCode::PAYMENT_REQUIRED, "insufficient_funds"),
            ("not enough gems", server.purchase(&token, &key(), &json!({ "offer_id": seed::SKIN_BLUE })), StatusCode::PAYMENT_REQUIRED, "insufficient_funds"),
            ("a durable item twice at once", server.purchase(&token, &key(), &json!({ "offer_id": seed::SKIN_RED, "quantity": 2 })), StatusCode::BAD_REQUEST, "invalid_request"),
            ("sale not started", server.purchase(&token, &key(), &json!({ "offer_id": later })), StatusCode::CONFLICT, "offer_not_available"),
            ("sale ended", server.purchase(&token, &key(), &json!({ "offer_id": ended })), StatusCode::CONFLICT, "offer_not_available"),
            ("over balance_max", server.purchase(&token, &key(), &json!({ "offer_id": overflowing, "quantity": 2 })), StatusCode::CONFLICT, "balance_max_exceeded"),
            ("no idempotency key", server.player(&token, Method::POST, "/v1/purchases").json(&json!({ "offer_id": seed::MAGNET })), StatusCode::BAD_REQUEST, "idempotency_key_required"),
            ("idempotency key too long", server.purchase(&token, &"k".repeat(256), &json!({ "offer_id": seed::MAGNET })), StatusCode::BAD_REQUEST, "invalid_request"),
            ("empty idempotency key", server.purchase(&token, "", &json!({ "offer_id": seed::MAGNET })), StatusCode::BAD_REQUEST, "invalid_request"),
            ("operator key buying", server.admin(Method::POST, "/v1/purchases").header("idempotency-key", key()).json(&json!({ "offer_id": seed::MAGNET })), StatusCode::FORBIDDEN, "wrong_credential_kind"),
        ];
        let before = server.fingerprint().await;
        for (case, request, status, code) in cases {
            assert_error(case, &send(request).await, status, code);
        }
        let poor = send(server.purchase(&token, &key(), &json!({ "offer_id": seed::MAGNET, "quantity": 2 }))).await;
        assert_eq!(poor.1["error"]["details"], json!({ "currency": "gold", "required": 200, "available": 100 }));
        let ended_details = send(server.purchase(&token, &key(), &json!({ "offer_id": ended }))).await;
        assert_eq!(ended_details.1["error"]["details"]["reason"], "ended");
        assert_eq!(server.fingerprint().await, before, "refused purchases changed nothing");
        // The other player's data stays theirs.
        assert_eq!(server.balance(&token, "gold").await, 100);
        assert_eq!(server.balance(&other_token, "gold").await, 110);
        server.assert_audit_clean().await;
    }

    async fn a_blocked_player_cannot_buy(server: TestServer) {
        let (player, token) = server.login_player("blocked").await;
        let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(server.db().url()).await.expect("connect");
        sqlx::query("update player set blocked = 1 where id = $1").bind(&player).execute(&pool).await.expect("block");
        pool.close().await;
        let response = send(server.purchase(&token, &key(), &json!({ "offer_id": seed::MAGNET }))).await;
        assert_error("a blocked player's purchase", &response, StatusCode::FORBIDDEN, "player_blocked");
        assert_eq!(server.balance(&token, "gold").await, 100);
    }
}

/// A purchase made `days_ago` days ago, entered as the ledger records one (an entry whose id is
/// a UUIDv7 of its time, with the purchase's facts in its row).
async fn purchased_long_ago(server: &tests::TestServer, player: &str, sku: &str, days_ago: i64) {
    let micros = i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000)
        .expect("a time")
        - days_ago * 86_400_000_000;
    let entry = server.backdated_entry(player, "purchase", micros).await;
    server
        .execute(
            "update entry set purchase_id = $1, purchase_offer = 'old-offer', purchase_sku = $2, purchase_quantity = 1, \
             purchase_price_index = 0, purchase_currency = 'gold', purchase_amount = 1, purchase_catalog_version = 1 \
             where id = $3",
            &[uuid::Uuid::now_v7().to_string().into(), sku.into(), entry.into()],
        )
        .await;
}

/// Purchase limits count a player's purchases by when they were made, read through the player's
/// time-ordered entries: a lifetime limit counts one bought ten days ago, a daily limit does not.
async fn limits_count_purchases_by_their_time(backend: tests::Backend, batching: bool) {
    let Some(server) =
        tests::TestServer::start_with(backend, |settings| settings.group_commit = batching).await
    else {
        return;
    };
    let daily = server
        .publish_offer(
            json!({ "sku": "daily_hat", "kind": "consumable", "name": "Daily hat",
                    "purchase_limit": { "count": 1, "period": "day" } }),
            json!({ "sku": "daily_hat", "prices": [{ "currency": "gold", "amount": 1 }] }),
        )
        .await;
    let (player, token) = server.login_player("long-ago").await;
    purchased_long_ago(&server, &player, "skin.red", 10).await;
    purchased_long_ago(&server, &player, "daily_hat", 10).await;
    let lifetime = send(server.purchase(&token, &key(), &json!({ "offer_id": seed::SKIN_RED }))).await;
    assert_error("a skin bought ten days ago", &lifetime, StatusCode::CONFLICT, "purchase_limit_reached");
    let (status, bought) = send(server.purchase(&token, &key(), &json!({ "offer_id": daily }))).await;
    assert_eq!(status, StatusCode::CREATED, "ten days ago is another day: {bought}");
    let again = send(server.purchase(&token, &key(), &json!({ "offer_id": daily }))).await;
    assert_error("a second hat today", &again, StatusCode::CONFLICT, "purchase_limit_reached");
}

in_every_mode!(limits_count_purchases_by_their_time);
