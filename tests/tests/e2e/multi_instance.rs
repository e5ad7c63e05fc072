//! Three `store-server` processes on one PostgreSQL database: purchases on shared wallets and
//! card orders through all three at once. Correctness lives in the database, so there is no
//! overdraft, no lost update, no double fulfilment, one answer per idempotency key, each
//! instance's writer moves system account rows of its own, and the audit is clean.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::{Backend, ServerProcess, TestDb, seed, store_server_command};

const PLAYERS: usize = 8;
/// Magnets each player can afford (100 gold each).
const AFFORDABLE: usize = 10;
/// Purchase attempts per player, spread over the three instances.
const ATTEMPTS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_one_postgres_never_overdraw_or_double_grant() {
    let Some(db) = TestDb::new(Backend::Postgres).await else { return };
    let dir = tempfile::tempdir().expect("a temp dir");
    let start = || {
        let mut command = store_server_command(dir.path(), Some(db.url()));
        command.env("COINSLOT_LISTEN", "127.0.0.1:0");
        ServerProcess::spawn(command)
    };
    let first = start();
    let key = first.printed_key().expect("the first start prints a key");
    let instances = [first, start(), start()];
    let bases: Vec<String> = instances.iter().map(|instance| instance.base_url.clone()).collect();
    // Every key goes to two instances at once, so batches of different instances often wait on
    // each other's locks; PostgreSQL breaks each cycle after its deadlock timeout (1 s) and the
    // victim runs again: slow under this much contention, but every answer comes.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("a client");

    // Players log in on one instance and are given exactly enough for ten magnets (they start
    // with 100 gold).
    let mut players = Vec::new();
    for index in 0..PLAYERS {
        let (player, token) = tests::login_at(&http, &bases[index % 3], &format!("multi-{index}")).await;
        let granted = http
            .post(format!("{}/admin/v1/players/{player}/grants", bases[(index + 1) % 3]))
            .bearer_auth(&key)
            .header("idempotency-key", format!("multi-grant-{index}"))
            .json(&json!({ "currency": "gold", "amount": 900, "reason": "test" }))
            .send()
            .await
            .expect("grant");
        assert_eq!(granted.status(), StatusCode::CREATED);
        players.push((player, token));
    }

    // One purchase on each instance alone (a player of its own, a key sent nowhere else), so
    // every instance's writer books at least one sale whichever instance wins the races below.
    for (index, base) in bases.iter().enumerate() {
        let (_, token) = tests::login_at(&http, base, &format!("multi-solo-{index}")).await;
        let bought = http
            .post(format!("{base}/v1/purchases"))
            .bearer_auth(&token)
            .header("idempotency-key", format!("multi-solo-{index}"))
            .json(&json!({ "offer_id": seed::MAGNET }))
            .send()
            .await
            .expect("a purchase");
        assert_eq!(bought.status(), StatusCode::CREATED);
    }

    // Every player's attempts race through all three instances at once; each key is also sent
    // twice, to two different instances.
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (_, token)) in players.iter().enumerate() {
        for attempt in 0..ATTEMPTS {
            for copy in 0..2 {
                let (http, token) = (http.clone(), token.clone());
                let base = bases[(index + attempt + copy) % 3].clone();
                let key = format!("multi-{index}-{attempt}");
                tasks.spawn(async move {
                    let response = http
                        .post(format!("{base}/v1/purchases"))
                        .bearer_auth(&token)
                        .header("idempotency-key", &key)
                        .json(&json!({ "offer_id": seed::MAGNET }))
                        .send()
                        .await
                        .expect("an answer");
                    let status = response.status();
                    (key, status, response.text().await.expect("a body"))
                });
            }
        }
    }
    let mut answers: std::collections::HashMap<String, Vec<(StatusCode, String)>> = Default::default();
    while let Some(joined) = tasks.join_next().await {
        let (key, status, body) = joined.expect("a request");
        answers.entry(key).or_default().push((status, body));
    }
    for (key, copies) in &answers {
        assert_eq!(copies.len(), 2);
        assert_eq!(copies[0], copies[1], "both copies of {key} got the same answer");
        assert!(
            copies[0].0 == StatusCode::CREATED || copies[0].0 == StatusCode::PAYMENT_REQUIRED,
            "{key}: {copies:?}"
        );
    }
    for index in 0..PLAYERS {
        let bought = answers
            .iter()
            .filter(|(key, copies)| {
                key.starts_with(&format!("multi-{index}-")) && copies[0].0 == StatusCode::CREATED
            })
            .count();
        assert_eq!(bought, AFFORDABLE, "player {index} bought exactly what they could afford");
    }
    for (player, token) in &players {
        let wallet: Value = http
            .get(format!("{}/v1/wallet", bases[2]))
            .bearer_auth(token)
            .send()
            .await
            .expect("wallet")
            .json()
            .await
            .expect("JSON");
        let gold = wallet["balances"].as_array().expect("balances").iter().find(|b| b["currency"] == "gold");
        assert_eq!(gold.map(|gold| gold["balance"].clone()), Some(json!(0)), "{player}: {wallet}");
    }

    // Card orders made on each instance, paid, fulfilled exactly once.
    let (_, token) = &players[0];
    let mut orders = Vec::new();
    for (index, base) in bases.iter().enumerate() {
        let order: Value = http
            .post(format!("{base}/v1/orders"))
            .bearer_auth(token)
            .header("idempotency-key", format!("multi-order-{index}"))
            .json(&json!({ "offer_id": seed::GEMS_SMALL }))
            .send()
            .await
            .expect("an order")
            .json()
            .await
            .expect("JSON");
        let paid = http
            .post(format!("{}/pay", order["checkout_url"].as_str().expect("a checkout")))
            .json(&json!({ "card_number": "4242424242424242" }))
            .send()
            .await
            .expect("paid");
        assert_eq!(paid.status(), StatusCode::OK);
        orders.push(order["id"].as_str().expect("an id").to_owned());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for (index, id) in orders.iter().enumerate() {
        loop {
            let order: Value = http
                .get(format!("{}/v1/orders/{id}", bases[(index + 1) % 3]))
                .bearer_auth(token)
                .send()
                .await
                .expect("order")
                .json()
                .await
                .expect("JSON");
            if order["status"] == "fulfilled" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "order {id} not fulfilled: {order}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(instances);
    let reader = store_server::db::Db::connect(db.url(), 2, Duration::from_secs(30)).await.expect("db");
    let fulfilments: i64 = sqlx::query_scalar("select count(*) from entry where kind = 'order_fulfillment'")
        .fetch_one(reader.pool())
        .await
        .expect("a count");
    assert_eq!(fulfilments, 3, "each order granted once");
    let purchases: i64 =
        sqlx::query_scalar("select count(*) from purchase").fetch_one(reader.pool()).await.expect("a count");
    let sales = i64::try_from(PLAYERS * AFFORDABLE + 3).expect("small");
    assert_eq!(purchases, sales, "the races' purchases and one alone per instance");
    // Each instance's writer moved its own revenue row (review M9: no instance waits on another's
    // system rows), and the rows add up to what was sold.
    let revenue: Vec<(String, i64)> = sqlx::query_as(
        "select id, balance from account where kind = 'revenue' and currency = 'gold' and balance <> 0 order by id",
    )
    .fetch_all(reader.pool())
    .await
    .expect("the revenue rows");
    assert_eq!(revenue.len(), 3, "one revenue row per instance's writer: {revenue:?}");
    assert!(revenue.iter().all(|(id, _)| id.starts_with("s:revenue:gold#")), "{revenue:?}");
    let sold = sales * 100;
    assert_eq!(revenue.iter().map(|(_, balance)| balance).sum::<i64>(), sold, "{revenue:?}");
    let report = store_server::ledger::audit::audit(&reader).await.expect("the audit runs");
    assert!(report.is_clean(), "{report}");
    reader.close().await;
}
