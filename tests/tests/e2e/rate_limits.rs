//! Rate limits per player and per operator key: past the burst a request is answered `429
//! rate_limited` with `Retry-After` and does nothing; other callers are not affected; the
//! bucket refills with time.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use store_server::players::rate_limit::Limit;
use tests::{Backend, TestServer, assert_error, seed, send};

async fn case(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |settings| {
        settings.player_rate_limit = Limit { per_second: 1, burst: 3 };
        settings.key_rate_limit = Limit { per_second: 1, burst: 3 };
    })
    .await
    else {
        return;
    };
    // Logging in is not a player request yet (it makes the session); the grant uses the key.
    let (player_id, token) = server.login_player("limited-1").await;
    let other = server.login("limited-2").await;
    for _ in 0..3 {
        let (status, _) = send(server.player(&token, Method::GET, "/v1/wallet")).await;
        assert_eq!(status, StatusCode::OK);
    }
    let before = server.fingerprint().await;
    let response = server
        .purchase(&token, "limited-buy", &json!({ "offer_id": seed::MAGNET }))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers().get("retry-after").and_then(|value| value.to_str().ok()), Some("1"));
    let body: serde_json::Value = response.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(body["error"]["details"]["retry_after_s"], 1);
    assert_eq!(server.fingerprint().await, before, "a limited purchase changes nothing");
    // Another player is not affected.
    let (status, _) = send(server.player(&other, Method::GET, "/v1/wallet")).await;
    assert_eq!(status, StatusCode::OK);
    // A second later one request is allowed again, and the purchase goes through with its key.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (status, bought) =
        send(server.purchase(&token, "limited-buy", &json!({ "offer_id": seed::MAGNET }))).await;
    assert_eq!(status, StatusCode::CREATED, "{bought}");

    // Operator keys: the same, per key.
    for _ in 0..3 {
        let (status, _) = send(server.admin(Method::GET, &format!("/admin/v1/players/{player_id}"))).await;
        assert_eq!(status, StatusCode::OK);
    }
    let limited = send(server.admin(Method::GET, "/admin/v1/currencies")).await;
    assert_error("a fourth request at once", &limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    server.assert_audit_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_and_keys_are_limited_on_sqlite() {
    case(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_and_keys_are_limited_on_postgres() {
    case(Backend::Postgres).await;
}
