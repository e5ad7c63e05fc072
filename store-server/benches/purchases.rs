//! Purchases per second through the real server over loopback HTTP, against the physical limit
//! of the same database measured in the same run.
//!
//! `cargo bench -p store-server --bench purchases` (release build), or `scripts/bench.sh`, which
//! also starts a throwaway PostgreSQL server. SQLite always; PostgreSQL too when
//! `COINSLOT_BENCH_POSTGRES_URL` names a server where the user may create databases, with
//! `pgbench` (found beside `initdb`, or named by `COINSLOT_BENCH_PGBENCH`) run at the same client
//! counts.
//!
//! For each backend it prints:
//! - the baseline: the rows a purchase writes (the idempotency claim and its stored answer, the
//!   player's lock, the entry, two guarded balance updates and their postings, the inventory and
//!   its change, two events, the purchase, the receipt) written straight to the same database
//!   with the same durability, one purchase per commit (at 1, 16 and 64 writers) and 64 per
//!   commit, the physical limit group commit aims at; on PostgreSQL, pgbench's TPC-B too;
//! - the server (`store-server serve`, its own process) with group commit on and off, at 1, 16
//!   and 64 clients, purchases spread over 64 wallets and all on one hot wallet: the peak rate
//!   (closed loop) with its p50/p99 and errors, the rate as a ratio to the batched baseline, and
//!   p50/p99 of an open-loop load at half that peak (latency counted from each request's
//!   scheduled time, so queueing is not hidden); the server's peak memory (VmHWM);
//! - the targets of DESIGN.md section 12, each with its figure and whether it was met.
//!
//! Every load is bounded in count and time, and only ever sent to 127.0.0.1.

// Rates, percentiles and ratios are measurements, not money.
#![allow(clippy::float_arithmetic, clippy::cast_precision_loss, clippy::cast_possible_truncation)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinSet;

use common::{Outcome, Server, fresh_database, ms, players};

/// Purchases per closed-loop scenario at most.
const PURCHASES_MAX: usize = 3_000;
/// Purchases per open-loop scenario at most.
const OPEN_LOOP_MAX: usize = 1_500;
/// How long one scenario may run.
const SCENARIO_LIMIT: Duration = Duration::from_secs(20);
/// How long an open-loop scenario lasts at most.
const OPEN_LOOP_SECONDS: f64 = 4.0;
/// Wallets the spread load uses.
const WALLETS: usize = 64;
/// Client counts.
const CLIENTS: [usize; 3] = [1, 16, 64];
/// The magnet: 100 gold.
const MAGNET: &str = "019a6b1e-0003-7000-8000-000000000003";

async fn buy(http: &reqwest::Client, base: &str, token: &str, key: String) -> bool {
    let response = http
        .post(format!("{base}/v1/purchases"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({ "offer_id": MAGNET }))
        .send()
        .await;
    matches!(response, Ok(response) if response.status().is_success())
}

/// `clients` closed-loop clients buy magnets with unique keys, round-robin over `tokens`: the
/// peak rate.
async fn closed_loop(
    http: &reqwest::Client,
    base: &str,
    tokens: &[String],
    clients: usize,
    run: &str,
) -> Outcome {
    let (http, base, tokens, run) =
        (http.clone(), base.to_owned(), Arc::new(tokens.to_vec()), run.to_owned());
    common::closed_loop(clients, PURCHASES_MAX, SCENARIO_LIMIT, move |index| {
        let (http, base, token) = (http.clone(), base.clone(), tokens[index % tokens.len()].clone());
        let key = format!("{run}-{index}");
        Box::pin(async move { buy(&http, &base, &token, key).await })
    })
    .await
}

/// An open-loop purchase load at `rate` per second, at most `clients` in flight.
async fn open_loop(
    http: &reqwest::Client,
    base: &str,
    tokens: &[String],
    clients: usize,
    rate: f64,
    run: &str,
) -> Outcome {
    let count = ((rate * OPEN_LOOP_SECONDS) as usize).clamp(50, OPEN_LOOP_MAX);
    let (http, base, tokens, run) =
        (http.clone(), base.to_owned(), Arc::new(tokens.to_vec()), run.to_owned());
    common::open_loop(clients, rate, count, SCENARIO_LIMIT, move |index| {
        let (http, base, token) = (http.clone(), base.clone(), tokens[index % tokens.len()].clone());
        let key = format!("{run}-{index}");
        Box::pin(async move { buy(&http, &base, &token, key).await })
    })
    .await
}

/// What the raw baseline writes with: real players, their wallets, the revenue account and the
/// receipt key, made by the server.
#[derive(Clone)]
struct RawTarget {
    players: Arc<Vec<String>>,
    key_id: String,
}

/// A purchase's writes, straight to the database: `per_commit` purchases per transaction, by
/// `writers` concurrent writers.
async fn raw(
    database_url: &str,
    target: &RawTarget,
    writers: usize,
    per_commit: usize,
    run: &str,
) -> Outcome {
    let db =
        Arc::new(store_server::db::Db::connect(database_url, 32, Duration::from_secs(60)).await.expect("db"));
    let transactions = PURCHASES_MAX / per_commit;
    // What the server stores: a signed receipt's payload and signature, and the answer.
    let payload = "x".repeat(420);
    let signature = "s".repeat(88);
    let answer = "a".repeat(1_400);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for writer in 0..writers {
        let (db, target, run) = (Arc::clone(&db), target.clone(), run.to_owned());
        let (payload, signature, answer) = (payload.clone(), signature.clone(), answer.clone());
        tasks.spawn(async move {
            let mut outcome = Outcome::default();
            for round in 0..transactions / writers {
                if started.elapsed() > SCENARIO_LIMIT {
                    break;
                }
                let sent = Instant::now();
                let mut tx = db.begin_write().await.expect("begin");
                for item in 0..per_commit {
                    let player = &target.players[(writer + item + round) % target.players.len()];
                    let wallet = format!("w:{player}:gold");
                    let (entry, purchase) = (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string());
                    let key = format!("{run}-{writer}-{round}-{item}");
                    let scope = format!("player:{player}");
                    let now = store_server::db::now_micros();
                    sqlx::query("insert into idempotency (scope, key, request_hash, status_code, response_body, created_at) values ($1, $2, 'h', 0, '', $3) on conflict (scope, key) do nothing")
                        .bind(&scope).bind(&key).bind(now).execute(&mut *tx).await.expect("claim");
                    sqlx::query("update player set lock_version = lock_version + 1 where id = $1")
                        .bind(player).execute(&mut *tx).await.expect("lock");
                    sqlx::query("insert into entry (id, kind, player_id, actor, reason, created_at) values ($1, 'purchase', $2, $3, null, $4)")
                        .bind(&entry).bind(player).bind(&scope).bind(now).execute(&mut *tx).await.expect("entry");
                    for (account, amount) in [(wallet.as_str(), -100_i64), ("s:revenue:gold", 100)] {
                        let balance: i64 = sqlx::query_scalar("update account set balance = balance + $2 where id = $1 and balance + $2 >= 0 returning balance")
                            .bind(account).bind(amount).fetch_one(&mut *tx).await.expect("a balance");
                        sqlx::query("insert into posting (entry_id, account_id, currency, amount, balance_after) values ($1, $2, 'gold', $3, $4)")
                            .bind(&entry).bind(account).bind(amount).bind(balance).execute(&mut *tx).await.expect("posting");
                    }
                    let quantity: i64 = sqlx::query_scalar("insert into inventory (player_id, sku, quantity) values ($1, 'magnet', 1) on conflict (player_id, sku) do update set quantity = inventory.quantity + 1 returning quantity")
                        .bind(player).fetch_one(&mut *tx).await.expect("inventory");
                    sqlx::query("insert into inventory_change (entry_id, player_id, sku, delta, quantity_after) values ($1, $2, 'magnet', 1, $3)")
                        .bind(&entry).bind(player).bind(quantity).execute(&mut *tx).await.expect("change");
                    for event in ["wallet.updated", "inventory.updated"] {
                        sqlx::query("insert into player_event (player_id, event_type, data, created_at) values ($1, $2, $3, $4)")
                            .bind(player).bind(event).bind(&payload[..160]).bind(now).execute(&mut *tx).await.expect("event");
                    }
                    sqlx::query("insert into purchase (id, player_id, offer_id, sku, quantity, price_index, currency, amount, catalog_version, entry_id, created_at, price_variant) values ($1, $2, $3, 'magnet', 1, 0, 'gold', 100, 1, $4, $5, null)")
                        .bind(&purchase).bind(player).bind(MAGNET).bind(&entry).bind(now).execute(&mut *tx).await.expect("purchase");
                    sqlx::query("insert into receipt (id, player_id, entry_id, key_id, payload, signature, created_at) values ($1, $2, $3, $4, $5, $6, $7)")
                        .bind(uuid::Uuid::now_v7().to_string()).bind(player).bind(&entry).bind(&target.key_id).bind(&payload).bind(&signature).bind(now)
                        .execute(&mut *tx).await.expect("receipt");
                    sqlx::query("update idempotency set status_code = 201, response_body = $3 where scope = $1 and key = $2")
                        .bind(&scope).bind(&key).bind(&answer).execute(&mut *tx).await.expect("answer");
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
        total.merge(joined.expect("a writer"));
    }
    total.elapsed = started.elapsed();
    db.close().await;
    total
}

/// Players, wallets and the receipt key for the raw baseline, made by a server on that database.
async fn raw_target(http: &reqwest::Client, database_url: &str) -> RawTarget {
    let server = Server::start(database_url, &[], true).await;
    let players = players(http, &server, "raw", WALLETS).await.into_iter().map(|(id, _)| id).collect();
    server.stop().await;
    let db = store_server::db::Db::connect(database_url, 1, Duration::from_secs(30)).await.expect("db");
    let key_id: String = sqlx::query_scalar("select id from receipt_key where retired_at is null")
        .fetch_one(db.pool())
        .await
        .expect("a receipt key");
    sqlx::query("insert into account (id, kind, player_id, currency, balance, created_at) values ('s:revenue:gold', 'revenue', null, 'gold', 0, 0) on conflict (id) do nothing")
        .execute(db.pool())
        .await
        .expect("the revenue account");
    db.close().await;
    RawTarget { players: Arc::new(players), key_id }
}

/// pgbench's TPC-B tps at each client count, on a fresh database (scale 16).
fn pgbench(database_url: &str) -> Option<Vec<(usize, f64)>> {
    let program = std::env::var("COINSLOT_BENCH_PGBENCH").ok().or_else(|| {
        let mut candidates: Vec<String> =
            std::env::var("PG_BIN").map(|bin| vec![format!("{bin}/pgbench")]).unwrap_or_default();
        if let Ok(dirs) = std::fs::read_dir("/usr/lib/postgresql") {
            candidates.extend(dirs.flatten().map(|dir| format!("{}/bin/pgbench", dir.path().display())));
        }
        candidates.into_iter().find(|path| std::path::Path::new(path).exists())
    });
    let Some(program) = program else {
        println!("pgbench was not found (set COINSLOT_BENCH_PGBENCH): no TPC-B baseline");
        return None;
    };
    let init =
        Command::new(&program).args(["-i", "-q", "-s", "16", database_url]).output().expect("pgbench -i");
    assert!(init.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    let mut rates = Vec::new();
    for clients in CLIENTS {
        let run = Command::new(&program)
            .args(["-n", "-c", &clients.to_string(), "-j", "2", "-T", "5", database_url])
            .output()
            .expect("pgbench");
        let text = String::from_utf8_lossy(&run.stdout);
        let tps = text
            .lines()
            .find(|line| line.starts_with("tps = "))
            .and_then(|line| line.split_whitespace().nth(2))
            .and_then(|tps| tps.parse::<f64>().ok())
            .unwrap_or_else(|| {
                panic!("pgbench printed no tps: {text} {}", String::from_utf8_lossy(&run.stderr))
            });
        rates.push((clients, tps));
    }
    Some(rates)
}

struct Row {
    scenario: String,
    clients: usize,
    peak: Outcome,
    half: Option<Outcome>,
}

/// What one backend measured, for the targets.
#[derive(Default)]
struct Figures {
    batched: f64,
    /// (group commit, hot wallet, clients) -> peak rate.
    server: Vec<((bool, bool, usize), f64)>,
    /// p99 at half the peak, 64 clients, spread, group commit on.
    half_peak_p99: Duration,
    tpcb: Vec<(usize, f64)>,
    peak_mib: u64,
}

impl Figures {
    fn rate(&self, group_commit: bool, hot: bool, clients: usize) -> f64 {
        self.server.iter().find(|(at, _)| *at == (group_commit, hot, clients)).map_or(0.0, |(_, rate)| *rate)
    }
}

fn print_row(row: &mut Row, baseline: f64) {
    let (p50, p99) = (row.peak.percentile(0.5), row.peak.percentile(0.99));
    let half = row.half.as_mut().map_or_else(
        || "".to_owned(),
        |half| format!("{} / {} ({:.0}/s)", ms(half.percentile(0.5)), ms(half.percentile(0.99)), half.rate()),
    );
    println!(
        "| {} | {} | {:.0} | {:.2}x | {} / {} | {} | {half} |",
        row.scenario,
        row.clients,
        row.peak.rate(),
        row.peak.rate() / baseline.max(1e-9),
        ms(p50),
        ms(p99),
        row.peak.errors + row.half.as_ref().map_or(0, |half| half.errors),
    );
}

async fn bench_backend(name: &str, postgres: Option<&str>) -> Figures {
    let mut figures = Figures::default();
    println!("\n## {name}\n");
    let http = reqwest::Client::builder().pool_max_idle_per_host(128).build().expect("a client");
    let (raw_url, _raw_dir) = fresh_database(postgres, "raw").await;
    let target = raw_target(&http, &raw_url).await;
    let mut batched = raw(&raw_url, &target, 1, 64, "batched").await;
    figures.batched = batched.rate();
    println!(
        "| scenario | clients | purchases/s (peak) | vs batched baseline | p50 / p99 at peak | errors | p50 / p99 at half the peak (open loop) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    print_row(
        &mut Row {
            scenario: "raw: 64 purchases per commit (the physical limit)".into(),
            clients: 1,
            peak: batched.clone(),
            half: None,
        },
        figures.batched,
    );
    batched.latencies.clear();
    for clients in CLIENTS {
        let one = raw(&raw_url, &target, clients, 1, &format!("one{clients}")).await;
        print_row(
            &mut Row { scenario: "raw: one purchase per commit".into(), clients, peak: one, half: None },
            figures.batched,
        );
    }
    if postgres.is_some() {
        let (bench_url, _) = fresh_database(postgres, "pgbench").await;
        if let Some(rates) = pgbench(&bench_url) {
            for (clients, tps) in &rates {
                println!(
                    "| pgbench TPC-B (scale 16), transactions/s | {clients} | {tps:.0} | {:.2}x | | | |",
                    tps / figures.batched
                );
            }
            figures.tpcb = rates;
        }
    }
    for group_commit in [true, false] {
        let (url, _dir) = fresh_database(postgres, if group_commit { "on" } else { "off" }).await;
        let server = Server::start(
            &url,
            &[("COINSLOT_GROUP_COMMIT", if group_commit { "true" } else { "false" })],
            true,
        )
        .await;
        let spread: Vec<String> =
            players(&http, &server, "spread", WALLETS).await.into_iter().map(|(_, token)| token).collect();
        let hot: Vec<String> =
            players(&http, &server, "hot", 1).await.into_iter().map(|(_, token)| token).collect();
        let mode = if group_commit { "server, group commit on" } else { "server, group commit off" };
        for clients in CLIENTS {
            for (hot_wallet, tokens) in [(false, &spread), (true, &hot)] {
                let label = format!("{}{}{clients}", u8::from(group_commit), u8::from(hot_wallet));
                let peak = closed_loop(&http, &server.base, tokens, clients, &format!("c{label}")).await;
                let mut half =
                    open_loop(&http, &server.base, tokens, clients, peak.rate() / 2.0, &format!("o{label}"))
                        .await;
                figures.server.push(((group_commit, hot_wallet, clients), peak.rate()));
                if group_commit && !hot_wallet && clients == 64 {
                    figures.half_peak_p99 = half.percentile(0.99);
                }
                let wallets =
                    if hot_wallet { "one hot wallet".to_owned() } else { format!("{WALLETS} wallets") };
                print_row(
                    &mut Row { scenario: format!("{mode}, {wallets}"), clients, peak, half: Some(half) },
                    figures.batched,
                );
            }
        }
        let peak_mib = server.stop().await;
        println!("| ({mode}: server peak memory {peak_mib} MiB) | | | | | | |");
        figures.peak_mib = figures.peak_mib.max(peak_mib);
    }
    figures
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

fn print_targets(name: &str, figures: &Figures) {
    let on = figures.rate(true, false, 64);
    let off = figures.rate(false, false, 64);
    let hot = figures.rate(true, true, 64);
    println!("\n### Targets ({name}, 64 clients)\n");
    if name == "SQLite" {
        let ratio = on / figures.batched.max(1e-9);
        println!(
            "- group commit vs the raw batched baseline: {ratio:.2}x (target at least 0.5x): {}",
            verdict(ratio >= 0.5)
        );
    }
    let ratio = on / off.max(1e-9);
    println!("- group commit on vs off: {ratio:.2}x (target at least 10x): {}", verdict(ratio >= 10.0));
    let ratio = hot / on.max(1e-9);
    println!("- one hot wallet vs spread: {ratio:.2}x (target at least 0.8x): {}", verdict(ratio >= 0.8));
    let p99 = figures.half_peak_p99.as_secs_f64() * 1e3;
    println!("- p99 at half the peak rate: {p99:.2} ms (target at most 10 ms): {}", verdict(p99 <= 10.0));
    if let Some((_, tps)) = figures.tpcb.iter().find(|(clients, _)| *clients == 64) {
        let ratio = on / tps.max(1e-9);
        println!(
            "- purchases/s vs pgbench TPC-B tps: {ratio:.2}x (target at least 2x): {}",
            verdict(ratio >= 2.0)
        );
    }
    println!("- server peak memory: {} MiB", figures.peak_mib);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        println!(
            "# Purchases benchmark (closed loop: {PURCHASES_MAX} purchases at most per scenario; open loop: {OPEN_LOOP_MAX} at most; {} s at most each)",
            SCENARIO_LIMIT.as_secs()
        );
        let sqlite = bench_backend("SQLite", None).await;
        print_targets("SQLite", &sqlite);
        if let Ok(url) = std::env::var("COINSLOT_BENCH_POSTGRES_URL") {
            let postgres = bench_backend("PostgreSQL", Some(&url)).await;
            print_targets("PostgreSQL", &postgres);
        }
    });
}
