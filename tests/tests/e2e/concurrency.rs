//! Concurrency: a thousand purchases racing for a balance that covers a hundred.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tests::{Backend, TestServer, seed, send};

async fn a_balance_covering_100_purchases_allows_exactly_100(backend: Backend, batching: bool) {
    race(backend, batching, 1).await;
}

/// Two group-commit writers take batches from one queue: the player's row orders them.
async fn two_writers_allow_exactly_100(backend: Backend) {
    race(backend, true, 2).await;
}

async fn race(backend: Backend, batching: bool, writers: usize) {
    let Some(server) = TestServer::start_with(backend, |settings| {
        settings.db_timeout = Duration::from_secs(120);
        settings.group_commit = batching;
        settings.writers = writers;
    })
    .await
    else {
        return;
    };
    let (player, token) = server.login_player("racer").await;
    // 100 gold to start; 9,900 more covers exactly 100 magnets at 100 gold.
    server.grant(&player, "gold", 9_900).await;
    let server = Arc::new(server);
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..1_000 {
        let (server, token) = (Arc::clone(&server), token.clone());
        tasks.spawn(async move {
            send(server.purchase(&token, &format!("race-{index}"), &json!({ "offer_id": seed::MAGNET })))
                .await
        });
    }
    let (mut bought, mut refused) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (status, body) = joined.expect("task");
        match status {
            StatusCode::CREATED => bought += 1,
            StatusCode::PAYMENT_REQUIRED => {
                assert_eq!(body["error"]["code"], "insufficient_funds", "{body}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((bought, refused), (100, 900));
    assert_eq!(server.balance(&token, "gold").await, 0);
    assert_eq!(server.count("select count(*) from purchase").await, 100);
    assert_eq!(server.count("select quantity from inventory where sku = 'magnet'").await, 100);
    server.assert_audit_clean().await;
}

in_every_mode!(a_balance_covering_100_purchases_allows_exactly_100);
on_each_backend!(two_writers_allow_exactly_100);

/// The first logins of a fresh store, all at once and each in its own transaction: every
/// initial grant finds or creates the currency's issuance account (once answered 500 when
/// another login created it between this one's update and its read).
async fn first_logins_at_once_all_get_their_grant(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |settings| settings.group_commit = false).await else {
        return;
    };
    // A catalog published just before: every login renders it first, then all grant at once.
    server
        .publish_offer(
            json!({ "sku": "first_tee", "kind": "consumable", "name": "First tee" }),
            json!({ "sku": "first_tee", "prices": [{ "currency": "gold", "amount": 10 }] }),
        )
        .await;
    let logins = (0..24).map(|index| {
        let server = &server;
        async move { server.login(&format!("first-{index}")).await }
    });
    let tokens = futures_util::future::join_all(logins).await;
    for token in &tokens {
        assert_eq!(server.balance(token, "gold").await, 100, "the initial grant");
    }
    server.assert_audit_clean().await;
}

on_each_backend!(first_logins_at_once_all_get_their_grant);
