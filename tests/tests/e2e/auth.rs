//! Credentials: player device login, session tokens, operator API keys and scopes. Each way a
//! credential can be wrong gets its own status and code.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tests::{Backend, TestServer, assert_error, send};

on_both_backends! {
    async fn a_device_logs_in_as_the_same_player_every_time(server: TestServer) {
        let login = |device: &str| server.request(Method::POST, "/v1/auth/device").json(&json!({ "device_id": device, "country": "DE" }));
        let (status, first) = send(login("device-a")).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        let (_, again) = send(login("device-a")).await;
        let (_, other) = send(login("device-b")).await;
        assert_eq!(first["player_id"], again["player_id"]);
        assert_ne!(first["player_id"], other["player_id"]);
        assert_ne!(first["session_token"], again["session_token"], "each login is its own session");
        assert!(first["expires_at"].as_str().is_some_and(|at| at.ends_with('Z')), "RFC 3339 UTC: {first}");
        assert_eq!(server.count("select count(*) from player").await, 2);
        let token = first["session_token"].as_str().expect("token");
        let (status, _) = send(server.player(token, Method::GET, "/v1/catalog")).await;
        assert_eq!(status, StatusCode::OK);
    }

    async fn bad_login_requests_are_refused_and_create_no_player(server: TestServer) {
        let long_id = "d".repeat(129);
        let cases = [
            ("empty device id", json!({ "device_id": "" }), "device_id"),
            ("device id too long", json!({ "device_id": long_id }), "device_id"),
            ("device id with a space", json!({ "device_id": "a b" }), "device_id"),
            ("device id not a string", json!({ "device_id": 42 }), "device_id"),
            ("missing device id", json!({}), ""),
            ("lower-case country", json!({ "device_id": "x", "country": "de" }), "country"),
            ("three-letter country", json!({ "device_id": "x", "country": "DEU" }), "country"),
            ("unknown field", json!({ "device_id": "x", "admin": true }), "admin"),
        ];
        for (case, body, field) in cases {
            let response = send(server.request(Method::POST, "/v1/auth/device").json(&body)).await;
            assert_error(case, &response, StatusCode::BAD_REQUEST, "invalid_request");
            if !field.is_empty() {
                assert_eq!(response.1["error"]["details"]["field"], field, "{case}: {}", response.1);
            }
        }
        assert_eq!(server.count("select count(*) from player").await, 0);
        assert_eq!(server.count("select count(*) from session").await, 0);
    }

    async fn each_kind_of_bad_credential_has_its_own_error(server: TestServer) {
        let token = server.login("device-c").await;
        let revoked_key = server.key_with_scopes(&["catalog:read"]).await;
        let (_, keys) = send(server.admin(Method::GET, "/admin/v1/api-keys?limit=200")).await;
        let revoked_id = keys["api_keys"]
            .as_array()
            .expect("keys")
            .iter()
            .find(|key| revoked_key.starts_with(key["prefix"].as_str().expect("prefix")) && key["scopes"] == json!(["catalog:read"]))
            .expect("the new key is listed")["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let (status, _) = send(server.admin(Method::DELETE, &format!("/admin/v1/api-keys/{revoked_id}"))).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let read_only_key = server.key_with_scopes(&["catalog:read"]).await;
        let forged = format!("{}AAAA", &token[..token.len() - 4]);

        let player_route = "/v1/catalog";
        let admin_route = "/admin/v1/currencies";
        let with_header = |path: &str, value: &str| server.request(Method::GET, path).header("authorization", value.to_owned());
        let cases = [
            ("no credentials on a player route", server.request(Method::GET, player_route), StatusCode::UNAUTHORIZED, "unauthenticated"),
            ("no credentials on an operator route", server.request(Method::GET, admin_route), StatusCode::UNAUTHORIZED, "unauthenticated"),
            ("basic auth", with_header(player_route, "Basic dXNlcjpwYXNz"), StatusCode::UNAUTHORIZED, "malformed_credentials"),
            ("bearer with no token", with_header(player_route, "Bearer"), StatusCode::UNAUTHORIZED, "malformed_credentials"),
            ("unknown token shape", with_header(player_route, "Bearer abc.def"), StatusCode::UNAUTHORIZED, "malformed_credentials"),
            ("truncated session token", with_header(player_route, "Bearer cst_1.abc"), StatusCode::UNAUTHORIZED, "malformed_credentials"),
            ("forged session token", server.player(&forged, Method::GET, player_route), StatusCode::UNAUTHORIZED, "invalid_credentials"),
            ("unknown API key", with_header(admin_route, "Bearer csk_not-a-real-key"), StatusCode::UNAUTHORIZED, "invalid_credentials"),
            ("revoked API key", server.player(&revoked_key, Method::GET, admin_route), StatusCode::UNAUTHORIZED, "api_key_revoked"),
            ("API key on a player route", server.admin(Method::GET, player_route), StatusCode::FORBIDDEN, "wrong_credential_kind"),
            ("session token on an operator route", server.player(&token, Method::GET, admin_route), StatusCode::FORBIDDEN, "wrong_credential_kind"),
            (
                "key without the scope",
                server.player(&read_only_key, Method::POST, admin_route).json(&json!({"code": "ruby", "name": "Ruby", "kind": "hard", "initial_grant": 0, "balance_max": 10})),
                StatusCode::FORBIDDEN,
                "insufficient_scope",
            ),
        ];
        let before = server.fingerprint().await;
        for (case, request, status, code) in cases {
            let response = send(request).await;
            assert_error(case, &response, status, code);
        }
        assert_eq!(server.fingerprint().await, before, "refused requests changed nothing");
        let (status, _) = send(server.player(&read_only_key, Method::GET, admin_route)).await;
        assert_eq!(status, StatusCode::OK, "the read-only key can read");
    }

    async fn api_keys_are_shown_once_listed_without_secrets_and_revocable(server: TestServer) {
        let body = json!({ "name": "dashboard", "scopes": ["analytics:read", "catalog:read"] });
        let (status, created) = send(server.admin(Method::POST, "/admin/v1/api-keys").json(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let key = created["key"].as_str().expect("key");
        assert!(key.starts_with("csk_"));
        assert_eq!(created["api_key"]["scopes"], json!(["catalog:read", "analytics:read"]));
        let (_, list) = send(server.admin(Method::GET, "/admin/v1/api-keys")).await;
        let listed = list.to_string();
        assert!(!listed.contains(key), "a list never shows a secret");
        assert!(!listed.contains("secret_hash"));
        assert_eq!(list["api_keys"].as_array().expect("keys").len(), 2, "the first key and the new one");
        let id = created["api_key"]["id"].as_str().expect("id");
        let (status, _) = send(server.admin(Method::DELETE, &format!("/admin/v1/api-keys/{id}"))).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let response = send(server.player(key, Method::GET, "/admin/v1/currencies")).await;
        assert_error("revoked key", &response, StatusCode::UNAUTHORIZED, "api_key_revoked");
        let (_, list) = send(server.admin(Method::GET, "/admin/v1/api-keys")).await;
        let revoked = list["api_keys"].as_array().expect("keys").iter().find(|entry| entry["id"] == id).expect("still listed");
        assert!(revoked["revoked_at"].is_string(), "{revoked}");
        let unknown = send(server.admin(Method::DELETE, "/admin/v1/api-keys/019a6b1e-0001-7000-8000-00000000dead")).await;
        assert_error("revoke an unknown key", &unknown, StatusCode::NOT_FOUND, "not_found");
        let bad_scope = send(server.admin(Method::POST, "/admin/v1/api-keys").json(&json!({ "name": "x", "scopes": ["root"] }))).await;
        assert_error("unknown scope", &bad_scope, StatusCode::BAD_REQUEST, "invalid_request");
        let no_scope = send(server.admin(Method::POST, "/admin/v1/api-keys").json(&json!({ "name": "x", "scopes": [] }))).await;
        assert_error("no scope", &no_scope, StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(server.count("select count(*) from api_key").await, 2);
    }
}

async fn expired_session_tokens_are_refused(backend: Backend) {
    let Some(server) =
        TestServer::start_with(backend, |settings| settings.session_ttl = Duration::from_secs(1)).await
    else {
        return;
    };
    let token = server.login("device-expiring").await;
    let (status, _) = send(server.player(&token, Method::GET, "/v1/catalog")).await;
    assert_eq!(status, StatusCode::OK, "fresh token works");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let response = send(server.player(&token, Method::GET, "/v1/catalog")).await;
    assert_error("expired token", &response, StatusCode::UNAUTHORIZED, "token_expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_session_tokens_are_refused_on_sqlite() {
    expired_session_tokens_are_refused(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_session_tokens_are_refused_on_postgres() {
    expired_session_tokens_are_refused(Backend::Postgres).await;
}
