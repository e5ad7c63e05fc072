//! Regional prices and A/B price variants: each player sees and pays their own prices.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{TestServer, assert_error, seed, send};

async fn login_in(server: &TestServer, device: &str, country: Option<&str>) -> String {
    let mut body = json!({ "device_id": device });
    if let Some(country) = country {
        body["country"] = json!(country);
    }
    let (status, session) = send(server.request(Method::POST, "/v1/auth/device").json(&body)).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    session["session_token"].as_str().expect("token").to_owned()
}

async fn offer_seen(server: &TestServer, token: &str, offer: &str) -> Value {
    let (_, catalog) = send(server.player(token, Method::GET, "/v1/catalog")).await;
    catalog["offers"]
        .as_array()
        .expect("offers")
        .iter()
        .find(|o| o["id"] == offer)
        .expect("the offer")
        .clone()
}

on_both_backends! {
    async fn players_in_different_countries_see_and_pay_their_regional_prices(server: TestServer) {
        let japan = login_in(&server, "tokyo", Some("JP")).await;
        let usa = login_in(&server, "ohio", Some("US")).await;
        let jp_offer = offer_seen(&server, &japan, seed::GEMS_SMALL).await;
        let us_offer = offer_seen(&server, &usa, seed::GEMS_SMALL).await;
        assert_eq!(jp_offer["prices"], json!([{ "money": { "currency": "JPY", "amount": "160" }, "settlement": "immediate" }]));
        assert_eq!(us_offer["prices"], json!([{ "money": { "currency": "USD", "amount": "0.99" }, "settlement": "immediate" }]));
        assert!(jp_offer.get("regional_prices").is_none(), "players see only their own prices: {jp_offer}");
        let jp_catalog = server.player(&japan, Method::GET, "/v1/catalog").send().await.expect("sent");
        let us_catalog = server.player(&usa, Method::GET, "/v1/catalog").send().await.expect("sent");
        assert_ne!(jp_catalog.headers()["etag"], us_catalog.headers()["etag"], "each price view has its own ETag");
        let etag = jp_catalog.headers()["etag"].to_str().expect("etag").to_owned();
        let again = server.player(&japan, Method::GET, "/v1/catalog").header("if-none-match", &etag).send().await.expect("sent");
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

        let jp_order = server.order(&japan, seed::GEMS_SMALL).await;
        assert_eq!(jp_order["amount"], json!({ "currency": "JPY", "amount": "160" }), "charged the regional price");
        let us_order = server.order(&usa, seed::GEMS_SMALL).await;
        assert_eq!(us_order["amount"], json!({ "currency": "USD", "amount": "0.99" }));
        let (status, _) = server.pay(jp_order["checkout_url"].as_str().expect("url"), "4242424242424242").await;
        assert_eq!(status, StatusCode::OK);
        let paid = server.wait_for_order(&japan, jp_order["id"].as_str().expect("id"), |order| order["status"] == "fulfilled").await;
        assert_eq!(paid["fee"], json!({ "currency": "JPY", "amount": "35" }), "30 + 2.9% of 160, in whole yen");

        // The first login fixes the region: naming another country later changes nothing.
        let moved = login_in(&server, "ohio", Some("JP")).await;
        assert_eq!(offer_seen(&server, &moved, seed::GEMS_SMALL).await["prices"][0]["money"]["currency"], "USD");
        // Only an operator moves a player to another region (audited).
        let (_, found) = send(server.admin(Method::GET, "/admin/v1/players?query=ohio")).await;
        let ohio = found["players"][0]["id"].as_str().expect("ohio's player").to_owned();
        let (status, body) = send(server.admin(Method::PATCH, &format!("/admin/v1/players/{ohio}")).json(&json!({ "country": "JP", "reason": "moved to Japan" }))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(offer_seen(&server, &moved, seed::GEMS_SMALL).await["prices"][0]["money"]["currency"], "JPY");
        assert_eq!(server.count("select count(*) from audit_log where action = 'player.region'").await, 1);
        server.assert_audit_clean().await;
    }

    async fn each_player_stays_in_one_price_variant_and_pays_its_price(server: TestServer) {
        let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
        for index in 0..40 {
            let (player, token) = server.login_player(&format!("experiment-{index}")).await;
            let offer = offer_seen(&server, &token, seed::TURBO).await;
            let variant = offer["variant"].as_str().expect("an assigned variant").to_owned();
            assert_eq!(offer_seen(&server, &token, seed::TURBO).await["variant"], variant.as_str(), "the same variant every time");
            seen.entry(variant).or_insert((player, token));
            if seen.len() == 2 {
                break;
            }
        }
        assert_eq!(seen.keys().map(String::as_str).collect::<Vec<_>>(), ["a", "b"], "40 players land in both halves of a 50/50 experiment");
        for (variant, price) in [("a", 200), ("b", 250)] {
            let (player, token) = &seen[variant];
            server.grant(player, "gold", 1_000).await;
            let offer = offer_seen(&server, token, seed::TURBO).await;
            assert_eq!(offer["prices"], json!([{ "currency": "gold", "amount": price }]));
            let other_price = send(server.purchase(token, &uuid::Uuid::now_v7().to_string(), &json!({ "offer_id": seed::TURBO, "price_index": 1 }))).await;
            assert_error("a price index from another variant", &other_price, StatusCode::BAD_REQUEST, "invalid_request");
            let (status, bought) = send(server.purchase(token, &uuid::Uuid::now_v7().to_string(), &json!({ "offer_id": seed::TURBO }))).await;
            assert_eq!(status, StatusCode::CREATED, "{bought}");
            assert_eq!(bought["purchase"]["paid"], json!({ "currency": "gold", "amount": price }), "variant {variant} pays its own price");
        }
        assert_eq!(server.count("select count(*) from purchase where price_variant is not null").await, 2, "the variant is recorded");
        server.assert_audit_clean().await;
    }
}
