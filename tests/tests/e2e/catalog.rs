//! The catalog: draft items and offers with `ETag` / `If-Match`, validation that names the
//! field, publishing immutable versions, the diff, and the live catalog players read.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{TestServer, assert_error, send};

fn hat() -> Value {
    json!({ "sku": "hat", "kind": "durable", "name": "Top hat", "description": "Very tall." })
}

fn hat_offer(prices: Value) -> Value {
    json!({ "sku": "hat", "prices": prices })
}

async fn create(server: &TestServer, path: &str, body: &Value) -> (Value, String) {
    let response = server.admin(Method::POST, path).json(body).send().await.expect("sent");
    let status = response.status();
    let etag =
        response.headers().get("etag").map(|tag| tag.to_str().expect("etag").to_owned()).unwrap_or_default();
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, StatusCode::CREATED, "{path}: {body}");
    (body, etag)
}

on_both_backends! {
    async fn an_item_and_offer_published_are_what_the_player_sees(server: TestServer) {
        let token = server.login("device-e").await;
        let (_, before) = send(server.player(&token, Method::GET, "/v1/catalog")).await;
        assert_eq!(before["version"], 1, "the seed catalog is version 1");

        create(&server, "/admin/v1/catalog/draft/items", &hat()).await;
        let (offer, _) = create(&server, "/admin/v1/catalog/draft/offers", &hat_offer(json!([
            { "currency": "gold", "amount": 250 },
            { "money": { "currency": "USD", "amount": "0.05" }, "settlement": "tab" },
        ]))).await;
        let offer_id = offer["id"].as_str().expect("the server assigns an id");
        assert_eq!(offer_id.chars().nth(14), Some('7'), "a UUID v7: {offer_id}");

        let (_, diff) = send(server.admin(Method::GET, "/admin/v1/catalog/diff")).await;
        assert_eq!(diff["base_version"], 1);
        assert_eq!(diff["items"]["added"], json!(["hat"]));
        assert_eq!(diff["offers"]["added"], json!([offer_id]));
        let (_, live) = send(server.player(&token, Method::GET, "/v1/catalog")).await;
        assert_eq!(live, before, "the draft is not live before publishing");

        let (status, version) = send(server.admin(Method::POST, "/admin/v1/catalog/publish")).await;
        assert_eq!(status, StatusCode::CREATED, "{version}");
        assert_eq!(version["version"], 2);

        let response = server.player(&token, Method::GET, "/v1/catalog").send().await.expect("sent");
        let etag = response.headers()["etag"].to_str().expect("etag").to_owned();
        let catalog: Value = response.json().await.expect("json");
        assert_eq!(catalog["version"], 2);
        let listed = catalog["offers"].as_array().expect("offers").iter().find(|o| o["id"] == offer_id).expect("the offer is live");
        assert_eq!(listed["prices"][1], json!({ "money": { "currency": "USD", "amount": "0.05" }, "settlement": "tab" }));
        assert!(catalog["items"].as_array().expect("items").iter().any(|item| item == &hat()));

        let response = server.player(&token, Method::GET, "/v1/catalog").header("if-none-match", &etag).send().await.expect("sent");
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(response.headers()["etag"].to_str().expect("etag"), etag);

        let nothing = send(server.admin(Method::POST, "/admin/v1/catalog/publish")).await;
        assert_error("publishing an unchanged draft", &nothing, StatusCode::CONFLICT, "nothing_to_publish");
        let (_, versions) = send(server.admin(Method::GET, "/admin/v1/catalog/versions?limit=1")).await;
        assert_eq!(versions["versions"][0]["version"], 2, "newest first");
        let cursor = versions["next_cursor"].as_str().expect("a second page");
        let (_, older) = send(server.admin(Method::GET, &format!("/admin/v1/catalog/versions?limit=1&cursor={cursor}"))).await;
        assert_eq!(older["versions"][0]["version"], 1);
        assert!(older["next_cursor"].is_null(), "the last page");
    }

    async fn draft_edits_use_etags_and_refuse_stale_writes(server: TestServer) {
        let (_, etag) = create(&server, "/admin/v1/catalog/draft/items", &hat()).await;
        let response = server.admin(Method::GET, "/admin/v1/catalog/draft/items/hat").send().await.expect("sent");
        assert_eq!(response.headers()["etag"].to_str().expect("etag"), etag);

        let mut taller = hat();
        taller["description"] = json!("Even taller.");
        let response = server.admin(Method::PUT, "/admin/v1/catalog/draft/items/hat").header("if-match", &etag).json(&taller).send().await.expect("sent");
        assert_eq!(response.status(), StatusCode::OK);
        let new_etag = response.headers()["etag"].to_str().expect("etag").to_owned();

        let before = server.fingerprint().await;
        let stale = send(server.admin(Method::PUT, "/admin/v1/catalog/draft/items/hat").header("if-match", &etag).json(&hat())).await;
        assert_error("stale replace", &stale, StatusCode::PRECONDITION_FAILED, "precondition_failed");
        let stale = send(server.admin(Method::DELETE, "/admin/v1/catalog/draft/items/hat").header("if-match", &etag)).await;
        assert_error("stale delete", &stale, StatusCode::PRECONDITION_FAILED, "precondition_failed");
        let create_over = send(server.admin(Method::PUT, "/admin/v1/catalog/draft/items/cap").header("if-match", &etag).json(&json!({"sku": "cap", "kind": "durable", "name": "Cap"}))).await;
        assert_error("If-Match on a missing item", &create_over, StatusCode::PRECONDITION_FAILED, "precondition_failed");
        assert_eq!(server.fingerprint().await, before);

        let (offer, offer_etag) = create(&server, "/admin/v1/catalog/draft/offers", &hat_offer(json!([{ "currency": "gold", "amount": 10 }]))).await;
        let offer_path = format!("/admin/v1/catalog/draft/offers/{}", offer["id"].as_str().expect("id"));
        let in_use = send(server.admin(Method::DELETE, "/admin/v1/catalog/draft/items/hat")).await;
        assert_error("deleting a sold item", &in_use, StatusCode::CONFLICT, "in_use");

        let mut cheaper = offer.clone();
        cheaper["prices"] = json!([{ "currency": "gold", "amount": 5 }]);
        let (status, _) = send(server.admin(Method::PUT, &offer_path).header("if-match", &offer_etag).json(&cheaper)).await;
        assert_eq!(status, StatusCode::OK);
        let stale = send(server.admin(Method::DELETE, &offer_path).header("if-match", &offer_etag)).await;
        assert_error("stale offer delete", &stale, StatusCode::PRECONDITION_FAILED, "precondition_failed");
        let (status, _) = send(server.admin(Method::DELETE, &offer_path)).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = send(server.admin(Method::DELETE, "/admin/v1/catalog/draft/items/hat").header("if-match", &new_etag)).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let gone = send(server.admin(Method::GET, "/admin/v1/catalog/draft/items/hat")).await;
        assert_error("deleted item", &gone, StatusCode::NOT_FOUND, "not_found");
    }

    async fn catalog_validation_names_the_field_and_changes_nothing(server: TestServer) {
        create(&server, "/admin/v1/catalog/draft/items", &hat()).await;
        create(&server, "/admin/v1/catalog/draft/items", &json!({
            "sku": "box", "kind": "bundle", "name": "Box", "grants": { "items": [{ "sku": "hat", "quantity": 1 }] }
        })).await;
        let item_cases = [
            ("duplicate sku", hat(), StatusCode::CONFLICT, "already_exists", "sku"),
            ("bad sku", json!({ "sku": "Top Hat", "kind": "durable", "name": "x" }), StatusCode::BAD_REQUEST, "invalid_request", "sku"),
            ("unknown kind", json!({ "sku": "x", "kind": "gadget", "name": "x" }), StatusCode::BAD_REQUEST, "invalid_request", "kind"),
            (
                "grant of an unknown currency",
                json!({ "sku": "pack", "kind": "currency_pack", "name": "x", "grants": { "currencies": [{ "currency": "ruby", "amount": 5 }] } }),
                StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", "grants.currencies[0].currency",
            ),
            (
                "grant of an unknown sku",
                json!({ "sku": "crate", "kind": "bundle", "name": "x", "grants": { "items": [{ "sku": "nothing", "quantity": 1 }] } }),
                StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", "grants.items[0].sku",
            ),
            (
                "a bundle that contains itself",
                json!({ "sku": "crate", "kind": "bundle", "name": "x", "grants": { "items": [{ "sku": "crate", "quantity": 1 }] } }),
                StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", "grants.items[0].sku",
            ),
            (
                "a zero grant",
                json!({ "sku": "crate", "kind": "bundle", "name": "x", "grants": { "items": [{ "sku": "hat", "quantity": 0 }] } }),
                StatusCode::BAD_REQUEST, "invalid_request", "",
            ),
        ];
        let offer_cases = [
            ("unknown sku", json!({ "sku": "nothing", "prices": [{ "currency": "gold", "amount": 1 }] }), "sku"),
            ("unknown currency", hat_offer(json!([{ "currency": "ruby", "amount": 1 }])), "prices[0].currency"),
            ("price over balance_max", hat_offer(json!([{ "currency": "gems", "amount": 10_000_001 }])), "prices[0].amount"),
            (
                "more precision than the currency allows",
                hat_offer(json!([{ "money": { "currency": "USD", "amount": "0.995" }, "settlement": "immediate" }])),
                "prices[0].money.amount",
            ),
            (
                "yen with decimals",
                hat_offer(json!([{ "money": { "currency": "JPY", "amount": "100.5" }, "settlement": "immediate" }])),
                "prices[0].money.amount",
            ),
            (
                "a real price over the order limit",
                hat_offer(json!([{ "money": { "currency": "USD", "amount": "1000.01" }, "settlement": "immediate" }])),
                "prices[0].money.amount",
            ),
            (
                "a price that nets less than the floor after fees",
                hat_offer(json!([{ "money": { "currency": "USD", "amount": "0.50" }, "settlement": "immediate" }])),
                "prices[0].money.amount",
            ),
            (
                "an immediate price under the minimum card charge",
                hat_offer(json!([{ "money": { "currency": "USD", "amount": "0.05" }, "settlement": "immediate" }])),
                "prices[0].money.amount",
            ),
        ];
        let shape_cases = [
            ("zero price", hat_offer(json!([{ "currency": "gold", "amount": 0 }])), "prices[0]"),
            ("negative price", hat_offer(json!([{ "currency": "gold", "amount": -5 }])), "prices[0]"),
            ("zero money", hat_offer(json!([{ "money": { "currency": "USD", "amount": "0" }, "settlement": "tab" }])), "prices[0]"),
            ("money as a number", hat_offer(json!([{ "money": { "currency": "USD", "amount": 0.99 }, "settlement": "immediate" }])), "prices[0].money.amount"),
            ("finer than a micro", hat_offer(json!([{ "money": { "currency": "USD", "amount": "0.0000001" }, "settlement": "tab" }])), "prices[0].money.amount"),
            ("unknown money currency", hat_offer(json!([{ "money": { "currency": "ABC", "amount": "1" }, "settlement": "tab" }])), "prices[0].money.currency"),
            ("a price of both kinds", hat_offer(json!([{ "currency": "gold", "amount": 1, "money": { "currency": "USD", "amount": "1" }, "settlement": "tab" }])), "prices[0]"),
            ("no prices", hat_offer(json!([])), ""),
            ("nine prices", hat_offer(json!(vec![json!({ "currency": "gold", "amount": 1 }); 9])), ""),
            ("id not a UUID v7", json!({ "id": "not-a-uuid", "sku": "hat", "prices": [{ "currency": "gold", "amount": 1 }] }), "id"),
        ];
        let before = server.fingerprint().await;
        for (case, body, status, code, field) in item_cases {
            let response = send(server.admin(Method::POST, "/admin/v1/catalog/draft/items").json(&body)).await;
            assert_error(case, &response, status, code);
            if !field.is_empty() {
                assert_eq!(response.1["error"]["details"]["field"], field, "{case}: {}", response.1);
            }
        }
        for (case, body, field) in offer_cases {
            let response = send(server.admin(Method::POST, "/admin/v1/catalog/draft/offers").json(&body)).await;
            assert_error(case, &response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
            assert_eq!(response.1["error"]["details"]["field"], field, "{case}: {}", response.1);
        }
        for (case, body, field) in shape_cases {
            let response = send(server.admin(Method::POST, "/admin/v1/catalog/draft/offers").json(&body)).await;
            assert_error(case, &response, StatusCode::BAD_REQUEST, "invalid_request");
            if !field.is_empty() {
                assert_eq!(response.1["error"]["details"]["field"], field, "{case}: {}", response.1);
            }
        }
        let thin = send(server.admin(Method::POST, "/admin/v1/catalog/draft/offers").json(&hat_offer(json!([{ "money": { "currency": "USD", "amount": "0.50" }, "settlement": "immediate" }])))).await;
        assert_eq!(thin.1["error"]["details"]["smallest_price"], "0.57", "0.57 − (0.30 + 2.9%) = 0.25: {}", thin.1);
        assert_eq!(thin.1["error"]["details"]["net_floor"], "0.25");
        assert!(thin.1["error"]["message"].as_str().is_some_and(|message| message.contains("tab")), "{}", thin.1);
        // A cycle through another item: hat would grant box, which grants hat.
        let mut cyclic_hat = hat();
        cyclic_hat["kind"] = json!("bundle");
        cyclic_hat["grants"] = json!({ "items": [{ "sku": "box", "quantity": 1 }] });
        let response = send(server.admin(Method::PUT, "/admin/v1/catalog/draft/items/hat").json(&cyclic_hat)).await;
        assert_error("a bundle that contains itself through another", &response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(response.1["error"]["details"]["field"], "grants.items");
        let granted = send(server.admin(Method::DELETE, "/admin/v1/catalog/draft/items/hat")).await;
        assert_error("deleting a granted item", &granted, StatusCode::CONFLICT, "in_use");
        assert_eq!(server.fingerprint().await, before, "refused edits changed nothing");
    }

    async fn draft_lists_are_paginated(server: TestServer) {
        let (_, first) = send(server.admin(Method::GET, "/admin/v1/catalog/draft/items?limit=3")).await;
        let skus: Vec<&str> = first["items"].as_array().expect("items").iter().map(|i| i["sku"].as_str().expect("sku")).collect();
        assert_eq!(skus, ["extra_life", "gems.large", "gems.small"], "sorted by sku");
        let cursor = first["next_cursor"].as_str().expect("more pages");
        let (_, rest) = send(server.admin(Method::GET, &format!("/admin/v1/catalog/draft/items?limit=200&cursor={cursor}"))).await;
        assert_eq!(rest["items"].as_array().expect("items").len(), 6, "nine seeded items in all");
        assert!(rest["next_cursor"].is_null());
        let (_, offers) = send(server.admin(Method::GET, "/admin/v1/catalog/draft/offers?limit=5")).await;
        assert_eq!(offers["offers"].as_array().expect("offers").len(), 5);
        let (_, summary) = send(server.admin(Method::GET, "/admin/v1/catalog/draft")).await;
        let counts = json!({ "base_version": summary["base_version"], "item_count": summary["item_count"], "offer_count": summary["offer_count"], "has_changes": summary["has_changes"] });
        assert_eq!(counts, json!({ "base_version": 1, "item_count": 9, "offer_count": 9, "has_changes": false }));
    }
}
