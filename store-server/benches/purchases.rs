//! Purchases per second through the real server over loopback HTTP, against the physical limit
//! of the same database measured in the same run.
//!
//! `cargo bench -p store-server --bench purchases` (release build). SQLite always; PostgreSQL
//! too when `COINSLOT_BENCH_POSTGRES_URL` names a server where the user may create databases.
//!
//! For each backend it prints:
//! - the baseline: the core of a purchase's transaction (a guarded wallet debit, the revenue
//!   credit, an entry, its two postings and the idempotency row; the server also writes the
//!   purchase, the inventory and a signed receipt) written straight to the database with the
//!   same durability, one purchase per commit (at the same client count) and
//!   64 per commit;
//! - the server with group commit on and off, at 1, 16 and 64 clients, purchases spread over many
//!   wallets and all on one hot wallet: purchases/s, p50/p99 latency, errors, and each rate as a
//!   ratio to the batched baseline.
//!
//! Every load is bounded in count and time, and only ever sent to 127.0.0.1.

// Rates, percentiles and ratios are measurements, not money.
#![allow(clippy::float_arithmetic, clippy::cast_precision_loss)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use store_server::{Application, Settings};
use tokio::task::JoinSet;

/// Purchases per scenario at most.
const PURCHASES_MAX: usize = 3_000;
/// How long one scenario may run.
const SCENARIO_LIMIT: Duration = Duration::from_secs(20);
/// Wallets the spread load uses.
const WALLETS: usize = 64;
/// The magnet: 100 gold.
const MAGNET: &str = "019a6b1e-0003-7000-8000-000000000003";

#[derive(Debug, Default, Clone)]
struct Outcome {
    done: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn percentile(&mut self, share: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.sort_unstable();
        let index = ((self.latencies.len() - 1) as f64 * share).round() as usize;
        self.latencies[index]
    }
}

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1).and_then(|kib| kib.parse::<u64>().ok()))
        })
        .map_or(0, |kib| kib / 1024)
}

/// A fresh database for one backend: a SQLite file in a temporary directory, or a new database on
/// the PostgreSQL server.
async fn fresh_database(postgres: Option<&str>, label: &str) -> (String, Option<tempfile::TempDir>) {
    match postgres {
        None => {
            let dir = tempfile::tempdir().expect("a temp dir");
            (format!("sqlite://{}", dir.path().join(format!("{label}.db")).display()), Some(dir))
        }
        Some(url) => {
            let admin =
                store_server::db::Db::connect(url, 1, Duration::from_secs(30)).await.expect("PostgreSQL");
            let name = format!("coinslot_bench_{label}_{}", std::process::id());
            let statement = format!("create database {name}");
            sqlx::query(sqlx::AssertSqlSafe(statement)).execute(admin.pool()).await.expect("create database");
            admin.close().await;
            let base = url.rsplit_once('/').map_or(url, |(base, _)| base);
            (format!("{base}/{name}"), None)
        }
    }
}

struct Server {
    base: String,
    key: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start_server(database_url: &str, group_commit: bool) -> Server {
    let settings = Settings {
        database_url: database_url.to_owned(),
        listen: ([127, 0, 0, 1], 0).into(),
        group_commit,
        db_connections_max: 32,
        ..Settings::default()
    };
    let application = Application::build(settings).await.expect("the server starts");
    let base = format!("http://127.0.0.1:{}", application.port());
    let key = application.first_operator_key().unwrap_or_default().to_owned();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(application.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Server { base, key, stop: Some(stop), task }
}

impl Server {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }
}

/// Logs in `count` players and gives each enough gold; returns their tokens.
async fn players(http: &reqwest::Client, server: &Server, prefix: &str, count: usize) -> Vec<String> {
    let mut tokens = Vec::with_capacity(count);
    for index in 0..count {
        let session: Value = http
            .post(format!("{}/v1/auth/device", server.base))
            .json(&json!({ "device_id": format!("{prefix}-{index}") }))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("a session");
        let player = session["player_id"].as_str().expect("an id").to_owned();
        let granted = http
            .post(format!("{}/admin/v1/players/{player}/grants", server.base))
            .bearer_auth(&server.key)
            .header("idempotency-key", format!("seed-{prefix}-{index}"))
            .json(&json!({ "currency": "gold", "amount": 100_000_000, "reason": "benchmark" }))
            .send()
            .await
            .expect("grant");
        assert!(granted.status().is_success(), "grant: {}", granted.status());
        tokens.push(session["session_token"].as_str().expect("a token").to_owned());
    }
    tokens
}

/// `clients` closed-loop clients buy magnets with unique keys, round-robin over `tokens`.
async fn load(http: &reqwest::Client, base: &str, tokens: &[String], clients: usize, run: &str) -> Outcome {
    let tokens = Arc::new(tokens.to_vec());
    let per_client = PURCHASES_MAX / clients;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for client in 0..clients {
        let (http, base, tokens, run) = (http.clone(), base.to_owned(), Arc::clone(&tokens), run.to_owned());
        tasks.spawn(async move {
            let mut outcome = Outcome::default();
            for index in 0..per_client {
                if started.elapsed() > SCENARIO_LIMIT {
                    break;
                }
                let token = &tokens[(client + index * clients) % tokens.len()];
                let sent = Instant::now();
                let response = http
                    .post(format!("{base}/v1/purchases"))
                    .bearer_auth(token)
                    .header("idempotency-key", format!("{run}-{client}-{index}"))
                    .json(&json!({ "offer_id": MAGNET }))
                    .send()
                    .await;
                match response {
                    Ok(response) if response.status().is_success() => {
                        outcome.done += 1;
                        outcome.latencies.push(sent.elapsed());
                    }
                    _ => outcome.errors += 1,
                }
            }
            outcome
        });
    }
    let mut total = Outcome::default();
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined.expect("a client");
        total.done += outcome.done;
        total.errors += outcome.errors;
        total.latencies.extend(outcome.latencies);
    }
    total.elapsed = started.elapsed();
    total
}

/// The purchase's writes, straight to the database: `per_commit` purchases per transaction, by
/// `writers` concurrent writers, on wallets made for it.
async fn raw(database_url: &str, writers: usize, per_commit: usize) -> Outcome {
    let db =
        Arc::new(store_server::db::Db::connect(database_url, 32, Duration::from_secs(60)).await.expect("db"));
    let total_purchases = PURCHASES_MAX;
    let transactions = total_purchases / per_commit;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for writer in 0..writers {
        let db = Arc::clone(&db);
        tasks.spawn(async move {
            let mut outcome = Outcome::default();
            for round in 0..transactions / writers {
                if started.elapsed() > SCENARIO_LIMIT {
                    break;
                }
                let sent = Instant::now();
                let mut tx = db.begin_write().await.expect("begin");
                for item in 0..per_commit {
                    let wallet = format!("bench-wallet-{}", (writer + item + round) % WALLETS);
                    let id = uuid::Uuid::now_v7().to_string();
                    let now = store_server::db::now_micros();
                    sqlx::query("update account set balance = balance - 100 where id = $1 and balance >= 100")
                        .bind(&wallet)
                        .execute(&mut *tx)
                        .await
                        .expect("debit");
                    sqlx::query("update account set balance = balance + 100 where id = 'bench-revenue'")
                        .execute(&mut *tx)
                        .await
                        .expect("credit");
                    sqlx::query("insert into entry (id, kind, player_id, actor, created_at) values ($1, 'purchase', null, 'bench', $2)")
                        .bind(&id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .expect("entry");
                    for (account, amount) in [(wallet.as_str(), -100_i64), ("bench-revenue", 100)] {
                        sqlx::query("insert into posting (entry_id, account_id, currency, amount, balance_after) values ($1, $2, 'gold', $3, 0)")
                            .bind(&id)
                            .bind(account)
                            .bind(amount)
                            .execute(&mut *tx)
                            .await
                            .expect("posting");
                    }
                    sqlx::query("insert into idempotency (scope, key, request_hash, status_code, response_body, created_at) values ('bench', $1, 'h', 201, '{}', $2)")
                        .bind(&id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .expect("idempotency");
                }
                tx.commit().await.expect("commit");
                outcome.done += per_commit;
                outcome.latencies.push(sent.elapsed());
            }
            outcome
        });
    }
    let mut total = Outcome::default();
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined.expect("a writer");
        total.done += outcome.done;
        total.latencies.extend(outcome.latencies);
    }
    total.elapsed = started.elapsed();
    total
}

/// Accounts for the raw baseline, created once per database.
async fn raw_accounts(database_url: &str) {
    let db = store_server::db::Db::connect(database_url, 2, Duration::from_secs(30)).await.expect("db");
    let now = store_server::db::now_micros();
    let mut tx = db.begin_write().await.expect("begin");
    for index in 0..WALLETS {
        sqlx::query("insert into account (id, kind, player_id, currency, balance, created_at) values ($1, 'revenue', null, 'gold', 1000000000, $2)")
            .bind(format!("bench-wallet-{index}"))
            .bind(now)
            .execute(&mut *tx)
            .await
            .expect("a wallet");
    }
    sqlx::query("insert into account (id, kind, player_id, currency, balance, created_at) values ('bench-revenue', 'revenue', null, 'gold', 0, $1)")
        .bind(now)
        .execute(&mut *tx)
        .await
        .expect("revenue");
    tx.commit().await.expect("commit");
    db.close().await;
}

async fn bench_backend(name: &str, postgres: Option<&str>) {
    println!("\n## {name}\n");
    println!("| scenario | clients | purchases/s | p50 | p99 | errors | vs batched baseline |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let (raw_url, _raw_dir) = fresh_database(postgres, "raw").await;
    // Migrate and seed with a server start, then write the baseline straight to the tables.
    start_server(&raw_url, false).await.stop().await;
    raw_accounts(&raw_url).await;
    let mut batched = raw(&raw_url, 1, 64).await;
    let baseline = batched.rate();
    let row = |scenario: &str, clients: usize, outcome: &mut Outcome| {
        let (p50, p99) = (outcome.percentile(0.5), outcome.percentile(0.99));
        println!(
            "| {scenario} | {clients} | {:.0} | {:.2} ms | {:.2} ms | {} | {:.2}x |",
            outcome.rate(),
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            outcome.errors,
            outcome.rate() / baseline
        );
    };
    row("raw: 64 purchases per commit (the physical limit)", 1, &mut batched);
    for clients in [1, 16, 64] {
        let mut one = raw(&raw_url, clients, 1).await;
        row("raw: one purchase per commit", clients, &mut one);
    }
    let http = reqwest::Client::builder().pool_max_idle_per_host(128).build().expect("a client");
    for group_commit in [true, false] {
        let (url, _dir) = fresh_database(postgres, if group_commit { "on" } else { "off" }).await;
        let server = start_server(&url, group_commit).await;
        let spread = players(&http, &server, "spread", WALLETS).await;
        let hot = players(&http, &server, "hot", 1).await;
        let mode = if group_commit { "server, group commit on" } else { "server, group commit off" };
        for clients in [1, 16, 64] {
            let mut outcome =
                load(&http, &server.base, &spread, clients, &format!("s{group_commit}{clients}")).await;
            row(&format!("{mode}, {WALLETS} wallets"), clients, &mut outcome);
            let mut outcome =
                load(&http, &server.base, &hot, clients, &format!("h{group_commit}{clients}")).await;
            row(&format!("{mode}, one hot wallet"), clients, &mut outcome);
        }
        server.stop().await;
    }
    println!("\npeak memory of this process (server and load generator together): {} MiB", peak_rss_mib());
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        println!(
            "# Purchases benchmark ({} purchases at most per scenario, {} s at most)",
            PURCHASES_MAX,
            SCENARIO_LIMIT.as_secs()
        );
        bench_backend("SQLite", None).await;
        if let Ok(url) = std::env::var("COINSLOT_BENCH_POSTGRES_URL") {
            bench_backend("PostgreSQL", Some(&url)).await;
        }
    });
}
