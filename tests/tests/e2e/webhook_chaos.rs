//! The webhook chaos soak: the provider's events for hundreds of real orders (paid and declined)
//! delivered with random duplication, reordering and delay, mixed with forgeries (another
//! secret, a tampered body, a stale timestamp, no signature, an invented event). Every genuine
//! event is processed exactly once, every forgery is refused and changes nothing, every paid
//! order is fulfilled once, and the audit is clean.
//!
//! `COINSLOT_CHAOS_ORDERS` sets the number of orders (1,000 by default; more for a longer soak).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{Backend, TestServer, seed, send};

const PLAYERS: usize = 20;
/// Players who settle a tab paid twice.
const SETTLEMENTS: usize = 4;
const CARD_OK: &str = "4242424242424242";
const CARD_DECLINED: &str = "4000000000000002";
/// Deliveries in flight at once.
const IN_FLIGHT: usize = 16;
/// Times the "provider" delivers an event that was answered with a retryable status.
const RETRIES_MAX: u32 = 20;

/// SplitMix64: a small, seeded, reproducible random source.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

#[derive(Debug, Clone)]
struct Delivery {
    /// The genuine event id, or `None` for a forgery.
    event: Option<String>,
    body: String,
    signature: Option<String>,
    delay_ms: u64,
}

async fn case(backend: Backend) {
    let orders_total: usize =
        std::env::var("COINSLOT_CHAOS_ORDERS").ok().and_then(|value| value.parse().ok()).unwrap_or(1_000);
    let Some(server) = TestServer::start_with(backend, |settings| {
        settings.velocity_orders_max = u32::MAX;
        settings.velocity_declines_max = u32::MAX;
    })
    .await
    else {
        return;
    };
    // The sandbox holds its own deliveries back: this test is the (chaotic) delivery network.
    server.sandbox_controls(json!({ "delay_ms": 3_600_000 })).await;
    let mut players = Vec::new();
    for index in 0..PLAYERS {
        players.push(server.login(&format!("chaos-{index}")).await);
    }
    let mut random = Random(0xC0FF_EE00 + orders_total as u64);
    let mut paid_per_player = [0_i64; PLAYERS];
    let mut declined = 0;
    // Tab settlements paid twice: by card, and once more late (the settlement already settled
    // by whichever payment arrives first): one settles the tab, the other is returned.
    let settlements = SETTLEMENTS.min(PLAYERS);
    for token in players.iter().take(settlements) {
        let (status, bought) = send(server.purchase(
            token,
            &uuid::Uuid::now_v7().to_string(),
            &json!({ "offer_id": seed::EXTRA_LIFE, "quantity": 10, "price_index": 0 }),
        ))
        .await;
        assert_eq!(status, StatusCode::CREATED, "{bought}");
        let (status, order) = send(
            server
                .player(token, Method::POST, "/v1/tab/settle")
                .header("idempotency-key", uuid::Uuid::now_v7().to_string()),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        let checkout = order["checkout_url"].as_str().expect("a checkout");
        assert_eq!(server.pay(checkout, CARD_OK).await.0, StatusCode::OK);
        server.sandbox_stray_payment(checkout, json!({})).await;
    }
    // Payments that must not pay: a second payment of a paid order, a payment of the wrong
    // amount, a payment of a declined order. Each is booked and returned, never granted.
    let mut stray = 0;
    for index in 0..orders_total {
        let player = index % PLAYERS;
        let order = server.order(&players[player], seed::GEMS_SMALL).await;
        let card = if random.below(10) == 0 { CARD_DECLINED } else { CARD_OK };
        let checkout = order["checkout_url"].as_str().expect("a checkout");
        let (status, _) = server.pay(checkout, card).await;
        assert_eq!(status, StatusCode::OK);
        if card == CARD_OK {
            paid_per_player[player] += 1;
        } else {
            declined += 1;
        }
        if random.below(20) == 0 {
            // A second payment of a paid order (whichever of the two arrives first pays), or one of
            // the wrong amount (on a paid or a declined order).
            let overrides = if card == CARD_OK && random.below(2) == 0 {
                json!({})
            } else {
                json!({ "amount": { "currency": "USD", "amount": "0.50" } })
            };
            server.sandbox_stray_payment(checkout, overrides).await;
            stray += 1;
        }
    }

    // The provider's events, each delivered 1 to 4 times, some joined by a forgery.
    let events: Vec<(String, String)> = {
        let pool =
            sqlx::any::AnyPoolOptions::new().max_connections(1).connect(server.db().url()).await.expect("db");
        let rows = sqlx::query_as("select id, payload from sandbox_event order by id")
            .fetch_all(&pool)
            .await
            .expect("events");
        pool.close().await;
        rows
    };
    assert_eq!(
        events.len(),
        orders_total + stray + 2 * settlements,
        "one event per paid or declined order, the strays, and two payments per settlement"
    );
    let secret = server.sandbox_webhook_secret().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut deliveries = Vec::new();
    let mut forgeries = 0;
    for (_, payload) in &events {
        let event_id =
            serde_json::from_str::<Value>(payload).expect("JSON")["id"].as_str().expect("an id").to_owned();
        for _ in 0..=random.below(4) {
            let signature =
                Some(store_server::payments::provider::sign_webhook(&secret, now, payload.as_bytes()));
            deliveries.push(Delivery {
                event: Some(event_id.clone()),
                body: payload.clone(),
                signature,
                delay_ms: random.below(30),
            });
        }
        if random.below(3) == 0 {
            forgeries += 1;
            let (body, signature) = match random.below(5) {
                0 => (
                    payload.clone(),
                    Some(store_server::payments::provider::sign_webhook(
                        b"not the secret",
                        now,
                        payload.as_bytes(),
                    )),
                ),
                1 => {
                    let signature =
                        store_server::payments::provider::sign_webhook(&secret, now, payload.as_bytes());
                    (payload.replacen("payment.", "payment.x", 1), Some(signature))
                }
                2 => (
                    payload.clone(),
                    Some(store_server::payments::provider::sign_webhook(
                        &secret,
                        now - 3_600,
                        payload.as_bytes(),
                    )),
                ),
                3 => (payload.clone(), None),
                _ => {
                    let invented =
                        json!({ "id": format!("evt_forged_{}", random.next()), "type": "payment.succeeded",
                        "data": { "session_id": "cs_invented", "payment_id": "pay_invented" } })
                        .to_string();
                    let signature =
                        store_server::payments::provider::sign_webhook(b"guessed", now, invented.as_bytes());
                    (invented, Some(signature))
                }
            };
            deliveries.push(Delivery { event: None, body, signature, delay_ms: random.below(30) });
        }
    }
    // Reordered: shuffled (Fisher-Yates with the seeded source).
    for index in (1..deliveries.len()).rev() {
        let other = usize::try_from(random.below(index as u64 + 1)).expect("small");
        deliveries.swap(index, other);
    }
    let total = deliveries.len();
    assert!(total >= 2 * orders_total, "{total} deliveries");

    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    for delivery in deliveries {
        let permit = Arc::clone(&in_flight).acquire_owned().await.expect("open");
        let request = {
            let mut request = server
                .request(Method::POST, "/v1/webhooks/sandbox")
                .header("content-type", "application/json")
                .body(delivery.body.clone());
            if let Some(signature) = &delivery.signature {
                request = request.header("coinslot-signature", signature);
            }
            request
        };
        tasks.spawn(async move {
            let _permit = permit;
            tokio::time::sleep(Duration::from_millis(delivery.delay_ms)).await;
            let mut attempts = 0;
            let mut request = request;
            loop {
                attempts += 1;
                let retry = request.try_clone().expect("a plain body");
                let (status, ack) = send(request).await;
                // A provider retries what was not accepted for good: conflicts and server errors.
                let retryable = status == StatusCode::CONFLICT || status.is_server_error();
                if !retryable || attempts >= RETRIES_MAX {
                    return (delivery.event, status, ack);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                request = retry;
            }
        });
    }
    let mut processed: HashMap<String, usize> = HashMap::new();
    let mut refused_forgeries = 0;
    while let Some(joined) = tasks.join_next().await {
        let (event, status, ack) = joined.expect("a delivery");
        match event {
            Some(id) => {
                assert_eq!(status, StatusCode::OK, "genuine event {id}: {ack}");
                assert!(ack["status"] == "processed" || ack["status"] == "duplicate", "{id}: {ack}");
                if ack["status"] == "processed" {
                    *processed.entry(id).or_default() += 1;
                }
            }
            None => {
                assert!(
                    status.is_client_error() && status != StatusCode::CONFLICT,
                    "a forgery must be refused: {status} {ack}"
                );
                refused_forgeries += 1;
            }
        }
    }
    assert_eq!(refused_forgeries, forgeries);
    assert_eq!(processed.len(), events.len(), "every genuine event processed");
    assert!(processed.values().all(|count| *count == 1), "each exactly once");

    // Every paid order fulfilled once: 100 gems each; the declined ones failed.
    for (player, token) in players.iter().enumerate() {
        assert_eq!(server.balance(token, "gems").await, 100 * paid_per_player[player], "player {player}");
    }
    let paid: i64 = paid_per_player.iter().sum();
    assert_eq!(server.count("select count(*) from entry where kind = 'order_fulfillment'").await, paid);
    let settlements = i64::try_from(settlements).expect("small");
    assert_eq!(
        server.count("select count(*) from payment_order where status = 'fulfilled'").await,
        paid + settlements
    );
    assert_eq!(
        server.count("select count(*) from entry where kind = 'tab_settlement'").await,
        settlements,
        "each tab settled once"
    );
    assert_eq!(server.count("select count(*) from payment_order where status = 'failed'").await, declined);
    assert_eq!(
        server.count("select count(*) from webhook_event").await,
        i64::try_from(events.len()).expect("small"),
        "only genuine events are recorded"
    );
    let returned = i64::try_from(stray).expect("small") + settlements;
    assert_eq!(
        server.count("select count(*) from provider_payment where outcome = 'returned'").await,
        returned
    );
    assert_eq!(server.count("select count(*) from entry where kind = 'unapplied_payment'").await, returned);
    assert_eq!(
        server.count("select count(*) from refund where payment_id is not null").await,
        returned,
        "each returned once"
    );
    server.assert_audit_clean().await;
    println!(
        "webhook chaos soak: {orders_total} orders, {} events, {total} deliveries, {forgeries} forgeries refused, {paid} fulfilled once, {declined} declined, {returned} stray or late payments returned ({settlements} of them late settlement payments)",
        events.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaotic_deliveries_fulfil_exactly_once_and_refuse_forgeries_on_sqlite() {
    case(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaotic_deliveries_fulfil_exactly_once_and_refuse_forgeries_on_postgres() {
    case(Backend::Postgres).await;
}
