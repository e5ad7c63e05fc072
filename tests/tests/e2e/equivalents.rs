//! Prices players can understand: every virtual price in a player's catalog carries its
//! real-money equivalent in the player's money at its currency's reference pack; the draft
//! summary names the reference packs and warns of prices no pack combination buys exactly.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{TestServer, assert_error, seed, send};

async fn login_in(server: &TestServer, device: &str, country: &str) -> String {
    let body = json!({ "device_id": device, "country": country });
    let (status, session) = send(server.request(Method::POST, "/v1/auth/device").json(&body)).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    session["session_token"].as_str().expect("token").to_owned()
}

/// The prices of `offer` in the catalog `token` sees.
async fn prices_seen(server: &TestServer, token: &str, offer: &str) -> Value {
    let (_, catalog) = send(server.player(token, Method::GET, "/v1/catalog")).await;
    let offers = catalog["offers"].as_array().expect("offers");
    offers.iter().find(|o| o["id"] == offer).expect("the offer")["prices"].clone()
}

fn gems(amount: i64, currency: &str, equivalent: &str) -> Value {
    json!({ "currency": "gems", "amount": amount, "equivalent": { "currency": currency, "amount": equivalent } })
}

on_both_backends! {
    async fn virtual_prices_carry_their_real_money_equivalent_in_the_players_money(server: TestServer) {
        // gems.small (100 gems) is the reference pack: USD 0.99, JPY 160 in Japan, EUR 0.99 in Germany.
        for (device, country, currency, red, blue) in [
            ("in-us", "US", "USD", "0.50", "0.79"),
            ("in-jp", "JP", "JPY", "80", "128"),
            ("in-de", "DE", "EUR", "0.50", "0.79"),
        ] {
            let token = login_in(&server, device, country).await;
            let red_prices = prices_seen(&server, &token, seed::SKIN_RED).await;
            assert_eq!(red_prices, json!([{ "currency": "gold", "amount": 500 }, gems(50, currency, red)]), "{country}: gold has no packs, so no equivalent");
            assert_eq!(prices_seen(&server, &token, seed::SKIN_BLUE).await, json!([gems(80, currency, blue)]), "{country}");
        }

        // The dashboard's view: the reference pack, and the leftovers 50 and 80 gems force with
        // packs of 100 and 550.
        let (status, summary) = send(server.admin(Method::GET, "/admin/v1/catalog/draft")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(summary["reference_packs"], json!([{ "currency": "gems", "sku": "gems.small", "amount": 100, "price": { "currency": "USD", "amount": "0.99" } }]));
        let leftovers: Vec<&str> = summary["warnings"].as_array().expect("warnings").iter().filter(|w| w["code"] == "leftover").map(|w| w["field"].as_str().expect("field")).collect();
        assert_eq!(leftovers, [format!("offers[{}].prices[1]", seed::SKIN_RED), format!("offers[{}].prices[0]", seed::SKIN_BLUE)], "{summary}");
        let (_, offers) = send(server.admin(Method::GET, "/admin/v1/catalog/draft/offers?limit=200")).await;
        let blue = offers["offers"].as_array().expect("offers").iter().find(|o| o["id"] == seed::SKIN_BLUE).expect("blue").clone();
        assert_eq!(blue["prices"], json!([gems(80, "USD", "0.79")]), "the draft list shows equivalents too");

        // An operator's copy sent back keeps no equivalent (it is computed), and a price of 100
        // gems (one pack) leaves no leftover.
        let url = format!("/admin/v1/catalog/draft/offers/{}", seed::SKIN_BLUE);
        let mut edited = blue.clone();
        edited["prices"] = json!([gems(100, "USD", "123.45")]);
        let (status, stored) = send(server.admin(Method::PUT, &url).json(&edited)).await;
        assert_eq!(status, StatusCode::OK, "{stored}");
        assert_eq!(stored["prices"], json!([{ "currency": "gems", "amount": 100 }]), "stored without the equivalent");
        let (_, summary) = send(server.admin(Method::GET, "/admin/v1/catalog/draft")).await;
        let fields: Vec<&str> = summary["warnings"].as_array().expect("warnings").iter().map(|w| w["field"].as_str().expect("field")).collect();
        assert!(!fields.contains(&format!("offers[{}].prices[0]", seed::SKIN_BLUE).as_str()), "{summary}");
        let (status, published) = send(server.admin(Method::POST, "/admin/v1/catalog/publish")).await;
        assert_eq!(status, StatusCode::CREATED, "{published}");
        let token = login_in(&server, "after-publish", "US").await;
        assert_eq!(prices_seen(&server, &token, seed::SKIN_BLUE).await, json!([gems(100, "USD", "0.99")]));
    }

    async fn reference_packs_are_checked(server: TestServer) {
        // Only a currency pack granting one currency can be a reference.
        let magnet = json!({ "sku": "magnet", "kind": "consumable", "name": "Magnet", "reference_pack": true });
        let refused = send(server.admin(Method::PUT, "/admin/v1/catalog/draft/items/magnet").json(&magnet)).await;
        assert_error("a consumable as a reference pack", &refused, StatusCode::BAD_REQUEST, "invalid_request");

        // One per currency: a second refuses the publish, naming it, and changes nothing live.
        let (_, large) = send(server.admin(Method::GET, "/admin/v1/catalog/draft/items/gems.large")).await;
        let mut second = large.clone();
        second["reference_pack"] = json!(true);
        let (status, body) = send(server.admin(Method::PUT, "/admin/v1/catalog/draft/items/gems.large").json(&second)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, before) = send(server.admin(Method::GET, "/admin/v1/catalog/versions")).await;
        let refused = send(server.admin(Method::POST, "/admin/v1/catalog/publish")).await;
        assert_error("two reference packs for gems", &refused, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert!(refused.1["error"]["details"]["field"].as_str().is_some_and(|field| field.ends_with(".reference_pack")), "{}", refused.1);
        let (_, after) = send(server.admin(Method::GET, "/admin/v1/catalog/versions")).await;
        assert_eq!(before, after, "nothing published");

        // No reference pack at all: a warning, and players see no equivalent.
        for sku in ["gems.small", "gems.large"] {
            let (_, item) = send(server.admin(Method::GET, &format!("/admin/v1/catalog/draft/items/{sku}"))).await;
            let mut plain = item.clone();
            plain.as_object_mut().expect("an item").remove("reference_pack");
            let (status, body) = send(server.admin(Method::PUT, &format!("/admin/v1/catalog/draft/items/{sku}")).json(&plain)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let (_, summary) = send(server.admin(Method::GET, "/admin/v1/catalog/draft")).await;
        assert!(summary["warnings"].as_array().expect("warnings").iter().any(|w| w["code"] == "no_reference_pack" && w["field"] == "currencies[gems]"), "{summary}");
        let (status, published) = send(server.admin(Method::POST, "/admin/v1/catalog/publish")).await;
        assert_eq!(status, StatusCode::CREATED, "warnings do not stop a publish: {published}");
        let token = login_in(&server, "no-reference", "US").await;
        assert_eq!(prices_seen(&server, &token, seed::SKIN_BLUE).await, json!([{ "currency": "gems", "amount": 80 }]));
    }
}
