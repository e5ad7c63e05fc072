//! A player's data: exported whole, and erased: personal fields gone, sessions revoked, the
//! ledger's entries and sums kept under the player's random id, the audit clean.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tests::{assert_error, seed, send};

on_both_backends! {
    async fn an_export_holds_everything_and_an_erasure_keeps_the_ledger(server: TestServer) {
        let login = json!({ "device_id": "privacy-1", "country": "DE" });
        let (status, session) = send(server.request(Method::POST, "/v1/auth/device").json(&login)).await;
        assert_eq!(status, StatusCode::OK, "{session}");
        let player_id = session["player_id"].as_str().expect("an id").to_owned();
        let token = session["session_token"].as_str().expect("a token").to_owned();
        server.grant(&player_id, "gold", 500).await;
        let (status, bought) = send(server.purchase(&token, "privacy-buy", &json!({ "offer_id": seed::MAGNET }))).await;
        assert_eq!(status, StatusCode::CREATED, "{bought}");
        let (status, on_tab) = send(server.purchase(&token, "privacy-tab", &json!({ "offer_id": seed::EXTRA_LIFE, "price_index": 0 }))).await;
        assert_eq!(status, StatusCode::CREATED, "{on_tab}");
        let order = server.order(&token, seed::GEMS_SMALL).await;
        let (status, _) = server.pay(order["checkout_url"].as_str().expect("a checkout"), "4242424242424242").await;
        assert_eq!(status, StatusCode::OK);
        let order_id = order["id"].as_str().expect("an id");
        server.wait_for_order(&token, order_id, |order| order["status"] == "fulfilled").await;
        let block = json!({ "blocked": true, "reason": "checking a report" });
        let (status, _) = send(server.admin(Method::PATCH, &format!("/admin/v1/players/{player_id}")).json(&block)).await;
        assert_eq!(status, StatusCode::OK);
        let unblock = json!({ "blocked": false, "reason": "report cleared" });
        send(server.admin(Method::PATCH, &format!("/admin/v1/players/{player_id}")).json(&unblock)).await;

        // Export: every table that holds something about the player.
        let (status, export) = send(server.admin(Method::GET, &format!("/admin/v1/players/{player_id}/export"))).await;
        assert_eq!(status, StatusCode::OK, "{export}");
        let tables = export["tables"].as_object().expect("tables");
        let rows = |table: &str| tables[table].as_array().unwrap_or_else(|| panic!("{table} missing")).clone();
        assert!(rows("player")[0].get("device_id").is_none(), "a device id is a credential, not exported");
        assert!(export.get("more").is_none(), "every table fits one page: {export}");
        let (status, one) = send(server.admin(Method::GET, &format!("/admin/v1/players/{player_id}/export?table=purchase&offset=1"))).await;
        assert_eq!(status, StatusCode::OK, "{one}");
        assert_eq!(one["tables"].as_object().expect("tables").len(), 1, "one table asked for");
        assert_eq!(one["tables"]["purchase"].as_array().expect("rows").len(), 1, "the second of two purchases");
        let unknown = send(server.admin(Method::GET, &format!("/admin/v1/players/{player_id}/export?table=secrets"))).await;
        assert_error("an unknown table", &unknown, StatusCode::BAD_REQUEST, "invalid_request");
        // A long-played player's export is paged: a thousand rows of a table per answer.
        let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(server.db().url()).await.expect("db");
        sqlx::query("with recursive n(i) as (select 1 union all select i + 1 from n where i < 1001) \
                     insert into store_view (player_id, offer_id, sku, price_point, created_at) select $1, 'o', 'magnet', 'p', i from n")
            .bind(&player_id)
            .execute(&pool)
            .await
            .expect("a long history of views");
        pool.close().await;
        let (_, paged) = send(server.admin(Method::GET, &format!("/admin/v1/players/{player_id}/export"))).await;
        assert_eq!(paged["tables"]["store_view"].as_array().expect("rows").len(), 1_000);
        assert_eq!(paged["more"], json!({ "store_view": 1_000 }), "{}", paged["more"]);
        let (_, rest) = send(server.admin(Method::GET, &format!("/admin/v1/players/{player_id}/export?table=store_view&offset=1000"))).await;
        assert_eq!(rest["tables"]["store_view"].as_array().expect("rows").len(), 1);
        assert!(rest.get("more").is_none());
        assert_eq!(rows("player")[0]["country"], "DE");
        assert_eq!(rows("session").len(), 1);
        assert!(rows("account").iter().any(|account| account["id"] == format!("w:{player_id}:gold").as_str()));
        assert_eq!(rows("purchase").len(), 2, "the magnet and the extra life");
        assert!(rows("entry").len() >= 5, "initial grant, operator grant, two purchases, the order");
        assert!(rows("posting").len() >= 6);
        assert_eq!(rows("inventory").len(), 2, "the magnet and the extra life: {:?}", rows("inventory"));
        assert_eq!(rows("receipt").len(), rows("entry").len() - 1, "a receipt per entry but the initial grant");
        assert_eq!(rows("payment_order")[0]["id"], order["id"]);
        assert!(!rows("order_transition").is_empty());
        assert_eq!(rows("tab").len(), 1);
        assert_eq!(rows("tab_item").len(), 1);
        assert!(rows("idempotency").len() >= 3);
        assert!(!rows("player_event").is_empty());
        assert_eq!(rows("audit_log").len(), 3, "the grant, block and unblock");
        let balance_before = server.balance(&token, "gold").await;

        // Erase: with a reason, by a players:write key only.
        let reader = server.key_with_scopes(&["players:read"]).await;
        let erase = json!({ "reason": "the player asked (ticket 42)" });
        let path = format!("/admin/v1/players/{player_id}/erase");
        let refused = send(server.request(Method::POST, &path).bearer_auth(&reader).json(&erase)).await;
        assert_error("erasing without players:write", &refused, StatusCode::FORBIDDEN, "insufficient_scope");
        let fingerprint = server.fingerprint().await;
        let bad = send(server.admin(Method::POST, &path).json(&json!({}))).await;
        assert_error("an erasure without a reason", &bad, StatusCode::BAD_REQUEST, "invalid_request");
        let unknown = send(server.admin(Method::POST, &format!("/admin/v1/players/{}/erase", uuid::Uuid::now_v7())).json(&erase)).await;
        assert_error("an unknown player", &unknown, StatusCode::NOT_FOUND, "not_found");
        assert_eq!(server.fingerprint().await, fingerprint, "refusals change nothing");

        let (status, erased) = send(server.admin(Method::POST, &path).json(&erase)).await;
        assert_eq!(status, StatusCode::OK, "{erased}");
        assert_eq!(erased["player_id"], player_id.as_str());
        assert_eq!(erased["sessions_revoked"], 1);
        assert_eq!(erased["audit_entries_redacted"], 0, "the block and unblock recorded no device id: summaries carry none");
        let (status, again) = send(server.admin(Method::POST, &path).json(&erase)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again["erased_at"], erased["erased_at"]);
        assert_eq!(again["sessions_revoked"], 0);

        // The person is gone from the store: no device id, no country, no session, not findable.
        let old_session = send(server.player(&token, Method::GET, "/v1/wallet")).await;
        assert_error("a revoked session", &old_session, StatusCode::UNAUTHORIZED, "session_revoked");
        let (_, found) = send(server.admin(Method::GET, "/admin/v1/players?query=privacy-1")).await;
        assert!(found["players"].as_array().expect("players").is_empty(), "{found}");
        let (_, export) = send(server.admin(Method::GET, &format!("/admin/v1/players/{player_id}/export"))).await;
        let text = export.to_string();
        assert!(!text.contains("privacy-1"), "the device id is nowhere in what is held: {text}");
        assert_eq!(export["tables"]["player"][0]["country"], serde_json::Value::Null);
        assert!(export["tables"]["player"][0].get("device_id").is_none());
        assert_eq!(server.text("select device_id from player where erased_at is not null").await, format!("erased:{player_id}"));
        let (_, detail) = send(server.admin(Method::GET, &format!("/admin/v1/players/{player_id}"))).await;
        assert_eq!(detail["player"]["erased_at"], erased["erased_at"]);
        // The ledger keeps its entries and sums under the random id.
        assert!(detail["wallet"]["balances"].as_array().expect("balances").iter().any(|b| b["currency"] == "gold" && b["balance"] == balance_before));
        let (_, history) = send(server.admin(Method::GET, &format!("/admin/v1/players/{player_id}/history"))).await;
        assert!(history["entries"].as_array().expect("entries").len() >= 3);
        let (_, audit) = send(server.admin(Method::GET, "/admin/v1/audit-log")).await;
        let entry = &audit["entries"][0];
        assert_eq!(entry["action"], "player.erase");
        assert_eq!(entry["after"]["reason"], "the player asked (ticket 42)");
        server.assert_audit_clean().await;

        // The same device logging in again is a new player with nothing.
        let (status, fresh) = send(server.request(Method::POST, "/v1/auth/device").json(&login)).await;
        assert_eq!(status, StatusCode::OK);
        assert_ne!(fresh["player_id"], player_id.as_str());
    }
}
