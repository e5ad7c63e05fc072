//! The crash loop: `store-server serve` as a child process under purchase, order and webhook
//! load, killed with SIGKILL at random moments 20 times and restarted. After every restart:
//! every acknowledged purchase is there, the audit is clean. At the end: every request retried
//! with its key gets one answer and one purchase at most (nothing granted twice), every order
//! whose payment the provider acknowledged is fulfilled exactly once (pending orders resume, the
//! provider's stored webhooks are delivered after the restarts and processed once).
//!
//! On the shared SQLite and PostgreSQL servers the provider is a standalone sandbox process that
//! outlives every kill and gives up on a webhook after two attempts, and one outage lasts longer
//! than that: a payment made while the store is down is repaired by reconciliation alone.
//!
//! `COINSLOT_CRASH_KILLS` sets the number of kills (20 by default).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::{Backend, ServerProcess, StandaloneSandbox, TestDb, seed, store_server_command};

const PLAYERS: usize = 6;
const BUYERS: usize = 4;

/// SplitMix64, seeded: the kill moments are reproducible.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound.max(1)
    }
}

/// What the clients saw.
#[derive(Debug, Default)]
struct Seen {
    /// Every purchase key sent, with its player.
    sent: BTreeMap<String, usize>,
    /// Purchase keys acknowledged (201), with the purchase id.
    acknowledged: BTreeMap<String, String>,
    /// Orders whose payment the sandbox acknowledged, with their player.
    paid: BTreeMap<String, usize>,
}

const SANDBOX_API_KEY: &str = "sk_crash_loop";
const SANDBOX_WEBHOOK_SECRET: &str = "whsec_crash_loop";

/// A standalone sandbox delivering webhooks to the store on `store_port`, giving up on each
/// after two attempts (about 0.2 s apart), as a real provider gives up after its retry window.
fn provider(store_port: u16) -> StandaloneSandbox {
    let webhooks = format!("http://127.0.0.1:{store_port}/v1/webhooks/sandbox");
    StandaloneSandbox::start(tests::free_port(), &webhooks, SANDBOX_API_KEY, SANDBOX_WEBHOOK_SECRET, Some(2))
}

fn start(dir: &std::path::Path, url: &str, port: u16, provider: Option<&StandaloneSandbox>) -> ServerProcess {
    let mut command = store_server_command(dir, Some(url));
    // One client ordering as fast as it can is what the velocity check flags: not this test.
    command
        .env("COINSLOT_LISTEN", format!("127.0.0.1:{port}"))
        .env("COINSLOT_VELOCITY_ORDERS_MAX", "1000000");
    if let Some(provider) = provider {
        command
            .env("COINSLOT_SANDBOX_URL", &provider.url)
            .env("COINSLOT_SANDBOX_API_KEY", SANDBOX_API_KEY)
            .env("COINSLOT_SANDBOX_WEBHOOK_SECRET", SANDBOX_WEBHOOK_SECRET);
    }
    ServerProcess::spawn(command)
}

async fn json_of(response: reqwest::Response) -> Option<Value> {
    response.json().await.ok()
}

/// Buys magnets with fresh keys until the server goes away.
async fn buy_until_down(
    http: reqwest::Client,
    base: String,
    token: String,
    player: usize,
    life: usize,
    seen: Arc<Mutex<Seen>>,
) {
    for index in 0.. {
        let key = format!("crash-{life}-{player}-{index}");
        seen.lock().expect("seen").sent.insert(key.clone(), player);
        let sent = http
            .post(format!("{base}/v1/purchases"))
            .bearer_auth(&token)
            .header("idempotency-key", &key)
            .json(&json!({ "offer_id": seed::MAGNET }))
            .send()
            .await;
        let Ok(response) = sent else { return };
        if response.status() == StatusCode::CREATED {
            let Some(body) = json_of(response).await else { return };
            let id = body["purchase"]["id"].as_str().expect("a purchase id").to_owned();
            seen.lock().expect("seen").acknowledged.insert(key, id);
        }
    }
}

/// Orders gems and pays for them until the server goes away.
async fn order_until_down(
    http: reqwest::Client,
    base: String,
    token: String,
    player: usize,
    life: usize,
    seen: Arc<Mutex<Seen>>,
) {
    for index in 0.. {
        let Ok(response) = http
            .post(format!("{base}/v1/orders"))
            .bearer_auth(&token)
            .header("idempotency-key", format!("crash-order-{life}-{index}"))
            .json(&json!({ "offer_id": seed::GEMS_SMALL }))
            .send()
            .await
        else {
            return;
        };
        let Some(order) = json_of(response).await else { return };
        let (Some(id), Some(checkout)) = (order["id"].as_str(), order["checkout_url"].as_str()) else {
            return;
        };
        let paid = http
            .post(format!("{checkout}/pay"))
            .json(&json!({ "card_number": "4242424242424242" }))
            .send()
            .await;
        match paid {
            Ok(response) if response.status() == StatusCode::OK => {
                seen.lock().expect("seen").paid.insert(id.to_owned(), player);
            }
            _ => return,
        }
    }
}

async fn audit_is_clean(url: &str) {
    let db = store_server::db::Db::connect(url, 2, Duration::from_secs(30)).await.expect("the database");
    let report = store_server::ledger::audit::audit(&db).await.expect("the audit runs");
    db.close().await;
    assert!(report.is_clean(), "{report}");
}

async fn case(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    crash_loop(&format!("{backend:?}"), db.url(), None, true).await;
}

/// Kills the server 20 times; with `postgres`, also kills that PostgreSQL server every fifth
/// life (and restarts it), the store server living on through the outage. With
/// `external_provider`, the store pays through a standalone sandbox that lives through the kills,
/// and one outage outlasts its retry window.
async fn crash_loop(
    label: &str,
    url: &str,
    postgres: Option<&tests::PrivatePostgres>,
    external_provider: bool,
) {
    let server_kills: usize =
        std::env::var("COINSLOT_CRASH_KILLS").ok().and_then(|value| value.parse().ok()).unwrap_or(20);
    let database_kills = if postgres.is_some() { server_kills / 5 } else { 0 };
    let kills = server_kills + database_kills;
    let dir = tempfile::tempdir().expect("a temp dir");
    let port = tests::free_port();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("a client");
    let provider = external_provider.then(|| provider(port));
    let mut server = start(dir.path(), url, port, provider.as_ref());
    let base = server.base_url.clone();
    let key = server.printed_key().expect("the first start prints a key");
    let mut tokens = Vec::new();
    for player in 0..PLAYERS {
        let (id, token) = tests::login_at(&http, &base, &format!("crash-{player}")).await;
        let granted = http
            .post(format!("{base}/admin/v1/players/{id}/grants"))
            .bearer_auth(&key)
            .header("idempotency-key", format!("crash-grant-{player}"))
            .json(&json!({ "currency": "gold", "amount": 10_000_000, "reason": "crash loop" }))
            .send()
            .await
            .expect("grant");
        assert_eq!(granted.status(), StatusCode::CREATED);
        tokens.push(token);
    }

    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut random = Random(0xDEAD_BEEF);
    for life in 0..kills {
        let mut load = tokio::task::JoinSet::new();
        for (player, token) in tokens.iter().enumerate().take(BUYERS) {
            load.spawn(buy_until_down(
                http.clone(),
                base.clone(),
                token.clone(),
                player,
                life,
                Arc::clone(&seen),
            ));
        }
        let orderer = BUYERS + life % (PLAYERS - BUYERS);
        load.spawn(order_until_down(
            http.clone(),
            base.clone(),
            tokens[orderer].clone(),
            orderer,
            life,
            Arc::clone(&seen),
        ));
        tokio::time::sleep(Duration::from_millis(200 + random.below(1_300))).await;
        match postgres {
            Some(postgres) if life % 5 == 2 => {
                // The database dies mid-request; the store answers errors meanwhile and serves
                // again once the database is back (its pool reconnects).
                postgres.kill();
                load.shutdown().await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                postgres.up();
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let ready = http.get(format!("{base}/readyz")).send().await;
                    if ready.is_ok_and(|ready| ready.status() == StatusCode::OK) {
                        break;
                    }
                    assert!(Instant::now() < deadline, "the store did not come back after the database did");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            _ if provider.is_some() && life == kills / 2 => {
                // The long outage: an order opened before the kill is paid while the store is
                // down, and the provider gives up on telling it before it is back.
                let orderer = tokens.len() - 1;
                let order: Value = http
                    .post(format!("{base}/v1/orders"))
                    .bearer_auth(&tokens[orderer])
                    .header("idempotency-key", format!("crash-outage-{life}"))
                    .json(&json!({ "offer_id": seed::GEMS_SMALL }))
                    .send()
                    .await
                    .expect("the order")
                    .json()
                    .await
                    .expect("JSON");
                let id = order["id"].as_str().expect("an order id").to_owned();
                drop(server);
                while load.join_next().await.is_some() {}
                let paid = http
                    .post(format!("{}/pay", order["checkout_url"].as_str().expect("a checkout URL")))
                    .json(&json!({ "card_number": "4242424242424242" }))
                    .send()
                    .await
                    .expect("the sandbox takes the payment");
                assert_eq!(paid.status(), StatusCode::OK);
                seen.lock().expect("seen").paid.insert(id, orderer);
                tokio::time::sleep(Duration::from_secs(3)).await;
                server = start(dir.path(), url, port, provider.as_ref());
            }
            _ => {
                drop(server); // SIGKILL, mid-request.
                while load.join_next().await.is_some() {}
                server = start(dir.path(), url, port, provider.as_ref());
            }
        }
        // Every acknowledged purchase survived the kill, and the ledger holds.
        let acknowledged: BTreeSet<String> =
            seen.lock().expect("seen").acknowledged.values().cloned().collect();
        let reader = store_server::db::Db::connect(url, 1, Duration::from_secs(30)).await.expect("db");
        let ids: BTreeSet<String> = sqlx::query_scalar("select id from purchase")
            .fetch_all(reader.pool())
            .await
            .expect("purchases")
            .into_iter()
            .collect();
        reader.close().await;
        let missing: Vec<&String> = acknowledged.difference(&ids).collect();
        assert!(missing.is_empty(), "after kill {life}: acknowledged purchases lost: {missing:?}");
        audit_is_clean(url).await;
    }

    // Every key again, as a client retrying after a crash would: one answer each, and at most
    // one purchase per key, the acknowledged ones unchanged.
    let (sent, acknowledged, paid) = {
        let seen = seen.lock().expect("seen");
        (seen.sent.clone(), seen.acknowledged.clone(), seen.paid.clone())
    };
    let mut bought = 0;
    for (key, player) in &sent {
        let response = loop {
            let response = http
                .post(format!("{base}/v1/purchases"))
                .bearer_auth(&tokens[*player])
                .header("idempotency-key", key)
                .json(&json!({ "offer_id": seed::MAGNET }))
                .send()
                .await
                .expect("an answer");
            if response.status() != StatusCode::TOO_MANY_REQUESTS {
                break response;
            }
            // A well-behaved client waits as long as it is told.
            let wait = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok()?.parse().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait)).await;
        };
        assert_eq!(response.status(), StatusCode::CREATED, "{key}");
        let body: Value = response.json().await.expect("JSON");
        if let Some(first) = acknowledged.get(key) {
            assert_eq!(body["purchase"]["id"].as_str(), Some(first.as_str()), "{key} answered the same");
        }
        bought += 1;
    }
    let reader = store_server::db::Db::connect(url, 1, Duration::from_secs(30)).await.expect("db");
    let purchases: i64 =
        sqlx::query_scalar("select count(*) from purchase").fetch_one(reader.pool()).await.expect("count");
    assert_eq!(purchases, bought, "one purchase per key, none twice");

    // Paid orders complete: the provider's stored webhooks are delivered after the restarts, and
    // reconciliation books what the provider gave up on.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let fulfilled: Vec<(String, i64)> = sqlx::query_as(
            "select o.id, (select count(*) from entry e join order_transition t on t.order_id = o.id \
             where e.kind = 'order_fulfillment' and t.to_status = 'fulfilled') from payment_order o where o.status = 'fulfilled'",
        )
        .fetch_all(reader.pool())
        .await
        .expect("orders");
        let done: BTreeSet<&String> = fulfilled.iter().map(|(id, _)| id).collect();
        if paid.keys().all(|id| done.contains(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "paid orders not fulfilled: {:?}",
            paid.keys().filter(|id| !done.contains(id)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fulfilments: i64 = sqlx::query_scalar("select count(*) from entry where kind = 'order_fulfillment'")
        .fetch_one(reader.pool())
        .await
        .expect("count");
    let fulfilled_orders: i64 =
        sqlx::query_scalar("select count(*) from payment_order where status = 'fulfilled'")
            .fetch_one(reader.pool())
            .await
            .expect("count");
    assert_eq!(fulfilments, fulfilled_orders, "each order granted once");
    reader.close().await;
    if let Some(provider) = &provider {
        let sandbox = store_server::db::Db::connect(&provider.database_url, 1, Duration::from_secs(30))
            .await
            .expect("db");
        let given_up: i64 = sqlx::query_scalar(
            "select count(*) from sandbox_delivery where delivered_at is null and attempts >= 2",
        )
        .fetch_one(sandbox.pool())
        .await
        .expect("deliveries");
        sandbox.close().await;
        assert!(given_up >= 1, "the long outage outlasted the provider's retries");
    }
    audit_is_clean(url).await;
    drop(server);
    println!(
        "crash loop ({label}): {server_kills} server kills and {database_kills} database kills survived, {} purchase keys ({} acknowledged before a kill), {} paid orders fulfilled once",
        sent.len(),
        acknowledged.len(),
        paid.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_twenty_times_nothing_acknowledged_is_lost_on_sqlite() {
    case(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_twenty_times_nothing_acknowledged_is_lost_on_postgres() {
    case(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_its_postgres_server_too_nothing_acknowledged_is_lost() {
    let Some(postgres) = tests::PrivatePostgres::start() else { return };
    crash_loop("private PostgreSQL", &postgres.url(), Some(&postgres), false).await;
}

/// Durable before acknowledged needs a database that keeps its commits: a PostgreSQL server
/// running with `fsync = off` (and `synchronous_commit = off`) is refused at start, with the
/// reason, rather than trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_server_that_does_not_flush_its_commits_is_refused() {
    let Some(postgres) = tests::PrivatePostgres::start_without_fsync() else { return };
    let dir = tempfile::tempdir().expect("a temp dir");
    let output = store_server_command(dir.path(), Some(&postgres.url()))
        .arg("audit")
        .output()
        .expect("store-server runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a server without fsync is refused: {stderr}");
    assert!(stderr.contains("PostgreSQL is not durable") && stderr.contains("fsync = off"), "{stderr}");
}
