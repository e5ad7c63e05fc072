//! Revenue share: creators earn exact shares of an item's net revenue and are paid out in
//! batches above a threshold.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{assert_error, send};

fn poster(creators: Value) -> Value {
    json!({ "sku": "poster", "kind": "consumable", "name": "Poster", "creators": creators })
}

on_both_backends! {
    async fn creators_earn_exact_shares_of_net_and_are_paid_out_above_the_threshold(server: TestServer) {
        let before = server.fingerprint().await;
        let cases = [
            ("shares over 100%", poster(json!([{ "creator": "ana", "share_bps": 6_000 }, { "creator": "bo", "share_bps": 5_000 }]))),
            ("a creator named twice", poster(json!([{ "creator": "ana", "share_bps": 10 }, { "creator": "ana", "share_bps": 10 }]))),
            ("a zero share", poster(json!([{ "creator": "ana", "share_bps": 0 }]))),
            ("a bad creator id", poster(json!([{ "creator": "Ana!", "share_bps": 10 }]))),
        ];
        for (case, body) in cases {
            assert_error(case, &send(server.admin(Method::POST, "/admin/v1/catalog/draft/items").json(&body)).await, StatusCode::BAD_REQUEST, "invalid_request");
        }
        assert_eq!(server.fingerprint().await, before);

        let item = poster(json!([{ "creator": "ana", "share_bps": 3_333 }, { "creator": "bo", "share_bps": 3_333 }, { "creator": "cy", "share_bps": 100 }]));
        assert_eq!(send(server.admin(Method::POST, "/admin/v1/catalog/draft/items").json(&item)).await.0, StatusCode::CREATED);
        let offer = json!({ "sku": "poster", "prices": [{ "money": { "currency": "USD", "amount": "10.00" }, "settlement": "immediate" }] });
        let (status, offer) = send(server.admin(Method::POST, "/admin/v1/catalog/draft/offers").json(&offer)).await;
        assert_eq!(status, StatusCode::CREATED, "{offer}");
        assert_eq!(send(server.admin(Method::POST, "/admin/v1/catalog/publish")).await.0, StatusCode::CREATED);

        let (_, token) = server.login_player("poster-fan").await;
        let (status, order) = send(server.player(&token, Method::POST, "/v1/orders").header("idempotency-key", "posters").json(&json!({ "offer_id": offer["id"], "quantity": 4 }))).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        server.pay(order["checkout_url"].as_str().expect("url"), "4242424242424242").await;
        let fulfilled = server.wait_for_order(&token, order["id"].as_str().expect("id"), |order| order["status"] == "fulfilled").await;
        // Gross 40.00, fee 0.30 + 1.16 = 1.46, net 38.54 = 38,540,000 micros.
        assert_eq!(fulfilled["net"], json!({ "currency": "USD", "amount": "38.54" }));
        let (_, creators) = send(server.admin(Method::GET, "/admin/v1/creators")).await;
        let balance = |id: &str| -> Value {
            creators["creators"].as_array().expect("creators").iter().find(|c| c["id"] == id).expect("creator")["balances"][0]["amount"].clone()
        };
        // floor(38,540,000 × 3,333 / 10,000) = 12,845,382 each; 1% = 385,400; together
        // floor(38,540,000 × 6,766 / 10,000) = 26,076,164 = 2 × 12,845,382 + 385,400: no leftover micro.
        assert_eq!(balance("ana"), "12.845382");
        assert_eq!(balance("bo"), "12.845382");
        assert_eq!(balance("cy"), "0.3854");
        assert_eq!(server.count("select cast(sum(balance) as bigint) from account where kind = 'revenue' and currency = 'USD'").await, 38_540_000 - 26_076_164, "the studio keeps the rest");

        let pay = |id: &str| server.admin(Method::POST, &format!("/admin/v1/creators/{id}/payouts")).header("idempotency-key", format!("payout-{id}"));
        let small = send(pay("cy")).await;
        assert_error("a balance below the threshold", &small, StatusCode::CONFLICT, "below_payout_threshold");
        let (status, payouts) = send(pay("ana")).await;
        assert_eq!(status, StatusCode::CREATED, "{payouts}");
        assert_eq!(payouts["payouts"][0]["amount"], json!({ "currency": "USD", "amount": "12.845382" }));
        let (_, again) = send(pay("ana")).await;
        assert_eq!(again, payouts, "a retried payout replays, paying once");
        let (_, ana) = send(server.admin(Method::GET, "/admin/v1/creators/ana")).await;
        assert_eq!(ana["balances"][0]["amount"], "0.00");
        assert_eq!(ana["earned"][0]["amount"], "12.845382");
        assert_eq!(ana["sales"], 1);
        let (_, listed) = send(server.admin(Method::GET, "/admin/v1/creators/ana/payouts")).await;
        assert_eq!(listed["payouts"].as_array().expect("payouts").len(), 1);
        // A full refund takes the creators' shares back too; ana, already paid, now owes hers.
        let order_id = order["id"].as_str().expect("id");
        let (status, _) = send(server.admin(Method::POST, &format!("/admin/v1/orders/{order_id}/refunds")).header("idempotency-key", "refund-posters").json(&json!({ "reason": "refund" }))).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        server.wait_for_order(&token, order_id, |order| order["status"] == "refunded").await;
        let (_, creators) = send(server.admin(Method::GET, "/admin/v1/creators")).await;
        let balance = |id: &str| -> Value {
            creators["creators"].as_array().expect("creators").iter().find(|c| c["id"] == id).expect("creator")["balances"][0]["amount"].clone()
        };
        assert_eq!((balance("ana"), balance("bo"), balance("cy")), (json!("-12.845382"), json!("0.00"), json!("0.00")));
        let unknown = send(server.admin(Method::GET, "/admin/v1/creators/nobody")).await;
        assert_error("an unknown creator", &unknown, StatusCode::NOT_FOUND, "not_found");
        server.assert_audit_clean().await;
    }
}
