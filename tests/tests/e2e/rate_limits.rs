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

/// The review's L3: a device logging in again and again (each login a session row) is
/// throttled like a player's requests, other devices are not; a player holds at most four event
/// streams open at once (each polls the database) and gets a slot back when one closes; sessions
/// are purged a day after they expire.
async fn logins_streams_and_sessions_are_bounded(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |settings| {
        settings.player_rate_limit = Limit { per_second: 1, burst: 3 };
    })
    .await
    else {
        return;
    };
    let login =
        |device: &str| server.request(Method::POST, "/v1/auth/device").json(&json!({ "device_id": device }));
    for _ in 0..3 {
        assert_eq!(send(login("eager-device")).await.0, StatusCode::OK);
    }
    let sessions = server.count("select count(*) from session").await;
    let refused = send(login("eager-device")).await;
    assert_error("a fourth login at once", &refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(
        server.count("select count(*) from session").await,
        sessions,
        "a refused login writes nothing"
    );
    assert_eq!(send(login("calm-device")).await.0, StatusCode::OK, "another device is not affected");

    // Four streams at once, not five; closing one frees its place.
    let (_, token) = server.login_player("listener").await;
    let stream = || server.player(&token, Method::GET, "/v1/events").send();
    let mut open = Vec::new();
    for _ in 0..store_server::http::events::STREAMS_PER_PLAYER_MAX {
        let response = stream().await.expect("a stream");
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
        // Within the player's request rate.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
    let fifth = stream().await.expect("an answer");
    assert_eq!(fifth.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: serde_json::Value = fifth.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let again = stream().await.expect("an answer");
        if again.status() == StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a closed stream's place came back: {}",
            again.status()
        );
    }

    // An expired session's row goes a day after its expiry; a live one stays.
    let db = store_server::db::Db::connect(server.db().url(), 2, Duration::from_secs(30))
        .await
        .expect("the database");
    let player: String = sqlx::query_scalar("select player_id from session limit 1")
        .fetch_one(db.pool())
        .await
        .expect("a player");
    let two_days_ago = store_server::db::now_micros() - 2 * 86_400_000_000;
    sqlx::query("insert into session (id, player_id, created_at, expires_at) values ($1, $2, $3, $3)")
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(&player)
        .bind(two_days_ago)
        .execute(db.pool())
        .await
        .expect("an old session");
    let live = server.count("select count(*) from session").await - 1;
    let deleted = store_server::players::auth::delete_expired_sessions(&db).await.expect("the purge");
    assert_eq!(deleted, 1);
    assert_eq!(server.count("select count(*) from session").await, live);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_streams_and_sessions_are_bounded_on_sqlite() {
    logins_streams_and_sessions_are_bounded(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_streams_and_sessions_are_bounded_on_postgres() {
    logins_streams_and_sessions_are_bounded(Backend::Postgres).await;
}
