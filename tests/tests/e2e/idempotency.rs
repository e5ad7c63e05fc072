//! Idempotency: replays byte for byte, refuses a reused key, scopes keys per caller, and gives
//! exactly one effect to concurrent duplicates.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tests::{Backend, TestServer, assert_error, seed, send};

async fn raw(request: reqwest::RequestBuilder) -> (StatusCode, Option<String>, bytes::Bytes) {
    let response = request.send().await.expect("sent");
    let replayed =
        response.headers().get("idempotent-replayed").map(|value| value.to_str().expect("ascii").to_owned());
    (response.status(), replayed, response.bytes().await.expect("body"))
}

on_both_backends! {
    async fn a_retry_replays_the_first_response_byte_for_byte(server: TestServer) {
        let (player, token) = server.login_player("retrier").await;
        server.grant(&player, "gold", 1_000).await;
        let body = json!({ "offer_id": seed::MAGNET, "quantity": 2 });
        let (status, replayed, first) = raw(server.purchase(&token, "order-42", &body)).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(replayed, None);
        let (status, replayed, again) = raw(server.purchase(&token, "order-42", &body)).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(replayed.as_deref(), Some("true"));
        assert_eq!(again, first, "byte for byte");
        assert_eq!(server.count("select count(*) from purchase").await, 1);
        assert_eq!(server.balance(&token, "gold").await, 900);

        let before = server.fingerprint().await;
        let reused = send(server.purchase(&token, "order-42", &json!({ "offer_id": seed::MAGNET, "quantity": 3 }))).await;
        assert_error("the same key with another body", &reused, StatusCode::CONFLICT, "idempotency_key_reused");
        let other_route = send(server.player(&token, Method::POST, "/v1/inventory/magnet/consume").header("idempotency-key", "order-42").json(&json!({}))).await;
        assert_error("the same key on another route", &other_route, StatusCode::CONFLICT, "idempotency_key_reused");
        assert_eq!(server.fingerprint().await, before);

        // Keys are scoped per caller: another player's "order-42" is their own.
        let (other, other_token) = server.login_player("retrier-2").await;
        server.grant(&other, "gold", 1_000).await;
        let (status, _, _) = raw(server.purchase(&other_token, "order-42", &body)).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(server.count("select count(*) from purchase").await, 2);
    }

    async fn a_refusal_is_the_keys_final_answer_and_changes_nothing_else(server: TestServer) {
        let (player, token) = server.login_player("patient").await;
        let body = json!({ "offer_id": seed::SHIELD });
        let before = server.fingerprint().await;
        let refused = send(server.purchase(&token, "shield-1", &body)).await;
        assert_error("too poor for now", &refused, StatusCode::PAYMENT_REQUIRED, "insufficient_funds");
        assert_eq!(server.fingerprint().await, before, "the refusal moved nothing");
        assert_eq!(server.count("select count(*) from idempotency where key = 'shield-1' and status_code = 402").await, 1, "but its key keeps it");
        server.grant(&player, "gold", 100).await;
        let (status, replayed, bytes) = raw(server.purchase(&token, "shield-1", &body)).await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "the same key answers the same, even now affordable");
        assert_eq!(replayed.as_deref(), Some("true"));
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&bytes).expect("json"), refused.1);
        let (status, _) = send(server.purchase(&token, "shield-2", &body)).await;
        assert_eq!(status, StatusCode::CREATED, "a new request takes a new key");
        assert_eq!(server.count("select count(*) from purchase").await, 1);
    }

    async fn expired_keys_are_cleaned_up(server: TestServer) {
        let (player, token) = server.login_player("forgetful").await;
        server.grant(&player, "gold", 1_000).await;
        let body = json!({ "offer_id": seed::MAGNET });
        send(server.purchase(&token, "old-key", &body)).await;
        let db = store_server::db::Db::connect(server.db().url(), 2, Duration::from_secs(30)).await.expect("connect");
        let kept = store_server::ledger::idempotency::delete_expired_keys(&db, Duration::from_secs(24 * 60 * 60)).await.expect("cleanup");
        assert_eq!(kept, 0, "keys younger than the retention are kept");
        let deleted = store_server::ledger::idempotency::delete_expired_keys(&db, Duration::ZERO).await.expect("cleanup");
        db.close().await;
        assert!(deleted >= 2, "the grant's and the purchase's keys: {deleted}");
        assert_eq!(server.count("select count(*) from idempotency").await, 0);
    }
}

/// 8 concurrent duplicates for each of 500 keys: one effect per key, identical bodies.
async fn concurrent_duplicates_have_exactly_one_effect(backend: Backend, batching: bool) {
    let Some(server) = TestServer::start_with(backend, |settings| {
        settings.db_timeout = Duration::from_secs(120);
        settings.group_commit = batching;
    })
    .await
    else {
        return;
    };
    const KEYS: usize = 500;
    const DUPLICATES: usize = 8;
    let (player, token) = server.login_player("hammer").await;
    server.grant(&player, "gold", 100 * i64::try_from(KEYS).expect("small") - 100).await;
    let server = Arc::new(server);
    let permits = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = tokio::task::JoinSet::new();
    for key in 0..KEYS {
        for _ in 0..DUPLICATES {
            let (server, token, permits) = (Arc::clone(&server), token.clone(), Arc::clone(&permits));
            tasks.spawn(async move {
                let _permit = permits.acquire().await.expect("open");
                let (status, _, body) =
                    raw(server.purchase(&token, &format!("dup-{key}"), &json!({ "offer_id": seed::MAGNET })))
                        .await;
                (key, status, body)
            });
        }
    }
    let mut bodies: Vec<Vec<bytes::Bytes>> = vec![Vec::new(); KEYS];
    while let Some(joined) = tasks.join_next().await {
        let (key, status, body) = joined.expect("task");
        assert_eq!(status, StatusCode::CREATED, "key {key}: {}", String::from_utf8_lossy(&body));
        bodies[key].push(body);
    }
    for (key, group) in bodies.iter().enumerate() {
        assert_eq!(group.len(), DUPLICATES);
        assert!(group.iter().all(|body| body == &group[0]), "key {key}: every duplicate gets the same bytes");
    }
    assert_eq!(server.count("select count(*) from purchase").await, i64::try_from(KEYS).expect("small"));
    assert_eq!(server.balance(&token, "gold").await, 0);
    server.assert_audit_clean().await;
}

in_every_mode!(concurrent_duplicates_have_exactly_one_effect);
