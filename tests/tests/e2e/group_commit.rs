//! Group commit: requests that share a transaction each keep their own answer. A batch that
//! mixes purchases that succeed with ones that are refused commits the good ones and leaves no
//! trace of the others, on SQLite and PostgreSQL, with batching on and off.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tests::{Backend, TestServer, seed, send};

/// The batch sizes this server's writer recorded: (batches, requests).
async fn batches(server: &TestServer) -> (u64, u64) {
    (
        server.metric("coinslot_group_commit_batch_size_count").await,
        server.metric("coinslot_group_commit_batch_size_sum").await,
    )
}

async fn a_batch_of_good_and_bad_requests_answers_each_alone(backend: Backend, batching: bool) {
    let Some(server) = TestServer::start_with(backend, |settings| {
        settings.group_commit = batching;
        // Long enough that a burst lands in few batches.
        settings.batch_wait = Duration::from_millis(100);
    })
    .await
    else {
        return;
    };
    let (rich, rich_token) = server.login_player("batch-rich").await;
    let (_, poor_token) = server.login_player("batch-poor").await;
    server.grant(&rich, "gold", 10_000).await;
    let (status, _) = send(server.purchase(&rich_token, "dup", &json!({ "offer_id": seed::MAGNET }))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (batches_before, requests_before) = batches(&server).await;

    let server = Arc::new(server);
    let mut tasks = tokio::task::JoinSet::new();
    let mut launch = |kind: &'static str, token: &str, key: String, body: serde_json::Value| {
        let (server, token) = (Arc::clone(&server), token.to_owned());
        tasks.spawn(async move { (kind, send(server.purchase(&token, &key, &body)).await) });
    };
    for index in 0..12 {
        launch("good", &rich_token, format!("good-{index}"), json!({ "offer_id": seed::MAGNET }));
    }
    for index in 0..6 {
        launch("poor", &poor_token, format!("poor-{index}"), json!({ "offer_id": seed::SKIN_RED }));
    }
    for index in 0..2 {
        launch(
            "unknown",
            &rich_token,
            format!("unknown-{index}"),
            json!({ "offer_id": "019a6b1e-00ff-7000-8000-0000000000ff" }),
        );
    }
    launch("reused", &rich_token, "dup".to_owned(), json!({ "offer_id": seed::MAGNET, "quantity": 2 }));
    while let Some(joined) = tasks.join_next().await {
        let (kind, (status, body)) = joined.expect("a task");
        let expected = match kind {
            "good" => (StatusCode::CREATED, None),
            "poor" => (StatusCode::PAYMENT_REQUIRED, Some("insufficient_funds")),
            "unknown" => (StatusCode::CONFLICT, Some("offer_not_available")),
            _ => (StatusCode::CONFLICT, Some("idempotency_key_reused")),
        };
        assert_eq!(status, expected.0, "{kind}: {body}");
        if let Some(code) = expected.1 {
            assert_eq!(body["error"]["code"], code, "{kind}: {body}");
        }
    }
    assert_eq!(
        server.balance(&rich_token, "gold").await,
        10_100 - 13 * 100,
        "the good ones, and the first dup, only"
    );
    assert_eq!(server.balance(&poor_token, "gold").await, 100, "the refused changed nothing");
    assert_eq!(server.count("select count(*) from purchase").await, 13);
    assert_eq!(
        server
            .count("select count(*) from idempotency where (key like 'poor-%' or key like 'unknown-%') and status_code between 200 and 299")
            .await,
        0,
        "refusals move nothing"
    );
    assert_eq!(
        server
            .count("select count(*) from idempotency where (key like 'poor-%' or key like 'unknown-%') and status_code in (402, 409)")
            .await,
        server.count("select count(*) from idempotency where key like 'poor-%' or key like 'unknown-%'").await,
        "each refusal is its key's stored answer"
    );
    let (batches_after, requests_after) = batches(&server).await;
    let (batches, requests) = (batches_after - batches_before, requests_after - requests_before);
    if batching {
        assert_eq!(requests, 21, "every request of the burst went through the writer");
        assert!(batches < requests, "requests shared transactions: {requests} in {batches} batches");
    } else {
        assert_eq!((batches, requests), (0, 0), "no writer without group commit");
    }
    server.assert_audit_clean().await;
}

in_every_mode!(a_batch_of_good_and_bad_requests_answers_each_alone);
