//! Operators find players, see everything about them, block and unblock them with a reason;
//! every such action is in the audit log.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tests::{assert_error, seed, send};

on_both_backends! {
    async fn an_operator_finds_a_player_sees_their_holdings_and_blocks_them_with_a_reason(server: TestServer) {
        let (player_id, token) = server.login_player("admin-view-1").await;
        server.login("admin-view-2").await;
        let (status, found) = send(server.admin(Method::GET, "/admin/v1/players?query=admin-view-1")).await;
        assert_eq!(status, StatusCode::OK, "{found}");
        assert_eq!(found["players"].as_array().expect("players").len(), 1);
        assert_eq!(found["players"][0]["id"], player_id.as_str());
        // Device ids are stored hashed: found whole, never by a prefix, and never shown.
        let (_, by_prefix) = send(server.admin(Method::GET, "/admin/v1/players?query=admin-view")).await;
        assert!(by_prefix["players"].as_array().expect("players").is_empty(), "{by_prefix}");
        assert!(found["players"][0].get("device_id").is_none(), "{found}");
        assert_eq!(server.count("select count(*) from player where device_id like 'admin-view%'").await, 0, "nothing in the clear");
        let (_, paged) = send(server.admin(Method::GET, "/admin/v1/players?limit=1")).await;
        assert!(paged["next_cursor"].is_string());

        let (status, detail) = send(server.admin(Method::GET, &format!("/admin/v1/players/{player_id}"))).await;
        assert_eq!(status, StatusCode::OK, "{detail}");
        assert!(detail["player"].get("device_id").is_none(), "{detail}");
        assert_eq!(detail["player"]["blocked"], false);
        assert!(detail["wallet"]["balances"].as_array().expect("balances").iter().any(|b| b["currency"] == "gold" && b["balance"] == 100));
        let (_, history) = send(server.admin(Method::GET, &format!("/admin/v1/players/{player_id}/history"))).await;
        assert_eq!(history["entries"][0]["kind"], "initial_grant");

        let block = json!({ "blocked": true, "reason": "chargeback fraud ring" });
        let (status, blocked) = send(server.admin(Method::PATCH, &format!("/admin/v1/players/{player_id}")).json(&block)).await;
        assert_eq!(status, StatusCode::OK, "{blocked}");
        assert_eq!(blocked["blocked"], true);
        let refused = send(server.purchase(&token, "blocked-buy", &json!({ "offer_id": seed::MAGNET }))).await;
        assert_error("a blocked player's purchase", &refused, StatusCode::FORBIDDEN, "player_blocked");

        let (status, audit) = send(server.admin(Method::GET, "/admin/v1/audit-log")).await;
        assert_eq!(status, StatusCode::OK, "{audit}");
        let entry = &audit["entries"][0];
        assert_eq!(entry["action"], "player.block");
        assert_eq!(entry["target"], player_id.as_str());
        assert_eq!(entry["before"]["blocked"], false);
        assert_eq!(entry["after"]["player"]["blocked"], true);
        assert_eq!(entry["after"]["reason"], "chargeback fraud ring");
        assert!(entry["actor"].as_str().expect("an actor").starts_with("api_key:"));

        let unblock = json!({ "blocked": false, "reason": "cleared by support" });
        let (status, _) = send(server.admin(Method::PATCH, &format!("/admin/v1/players/{player_id}")).json(&unblock)).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = send(server.purchase(&token, "unblocked-buy", &json!({ "offer_id": seed::MAGNET }))).await;
        assert_eq!(status, StatusCode::CREATED);
        let (_, audit) = send(server.admin(Method::GET, "/admin/v1/audit-log?limit=1")).await;
        assert_eq!(audit["entries"][0]["action"], "player.unblock");
        assert!(audit["next_cursor"].is_string());
        server.assert_audit_clean().await;
    }

    async fn player_admin_routes_check_scopes_and_input_and_change_nothing_on_refusal(server: TestServer) {
        let (player_id, _) = server.login_player("admin-guard").await;
        let catalog_key = server.key_with_scopes(&["catalog:read"]).await;
        let reader = server.key_with_scopes(&["players:read"]).await;
        let path = format!("/admin/v1/players/{player_id}");
        let wrong = send(server.request(Method::GET, &path).bearer_auth(&catalog_key)).await;
        assert_error("catalog:read reading a player", &wrong, StatusCode::FORBIDDEN, "insufficient_scope");
        let block = json!({ "blocked": true, "reason": "test" });
        let read_only = send(server.request(Method::PATCH, &path).bearer_auth(&reader).json(&block)).await;
        assert_error("players:read blocking", &read_only, StatusCode::FORBIDDEN, "insufficient_scope");
        let audit = send(server.request(Method::GET, "/admin/v1/audit-log").bearer_auth(&reader)).await;
        assert_error("players:read reading the audit log", &audit, StatusCode::FORBIDDEN, "insufficient_scope");

        let before = server.fingerprint().await;
        for (case, body) in [
            ("no reason", json!({ "blocked": true })),
            ("an empty reason", json!({ "blocked": true, "reason": "" })),
            ("not a boolean", json!({ "blocked": "yes", "reason": "x" })),
            ("an unknown field", json!({ "blocked": true, "reason": "x", "vip": true })),
        ] {
            let (status, answer) = send(server.admin(Method::PATCH, &path).json(&body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{case}: {answer}");
        }
        let missing = send(server.admin(Method::PATCH, "/admin/v1/players/019a6b1e-00ff-7000-8000-0000000000ff").json(&block)).await;
        assert_error("an unknown player", &missing, StatusCode::NOT_FOUND, "not_found");
        let not_an_id = send(server.admin(Method::GET, "/admin/v1/players/nobody")).await;
        assert_error("not an id", &not_an_id, StatusCode::NOT_FOUND, "not_found");
        let long = "x".repeat(129);
        let too_long = send(server.admin(Method::GET, &format!("/admin/v1/players?query={long}"))).await;
        assert_error("a search too long", &too_long, StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(server.fingerprint().await, before, "refusals changed nothing");
        let (_, detail) = send(server.admin(Method::GET, &path)).await;
        assert_eq!(detail["player"]["blocked"], false);
    }
}

/// Device ids stored in the clear by an earlier version are hashed when the server starts, and
/// their players log in as before (the same player, not a new one).
async fn device_ids_stored_in_the_clear_are_hashed_at_start(backend: tests::Backend) {
    let Some(server) = tests::TestServer::start(backend).await else {
        return;
    };
    let (player_id, _) = server.login_player("from-an-old-version").await;
    let (db, operator_key) = server.stop().await;
    let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(db.url()).await.expect("db");
    sqlx::query("update player set device_id = 'from-an-old-version' where id = $1")
        .bind(&player_id)
        .execute(&pool)
        .await
        .expect("an old version's row");
    pool.close().await;

    let server = tests::TestServer::start_on(db, Some(operator_key), |_| {}).await;
    assert_eq!(server.count("select count(*) from player where device_id = 'from-an-old-version'").await, 0);
    let (again, _) = server.login_player("from-an-old-version").await;
    assert_eq!(again, player_id, "the same player");
    assert_eq!(server.count("select count(*) from player").await, 1);
}

on_each_backend!(device_ids_stored_in_the_clear_are_hashed_at_start);
