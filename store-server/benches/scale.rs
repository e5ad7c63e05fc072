//! The store at scale: 1,000,000 players and 10,000,000 ledger entries, a 10,000-item catalog.
//!
//! `cargo bench -p store-server --bench scale` (release build; SQLite). It
//! 1. starts the server once on a fresh database (migrations, the demo catalog), then runs
//!    `store-server generate` (the ledger's bulk path) for the players and entries, and
//!    `store-server catalog import --publish` with the catalog grown to 10,000 items;
//! 2. starts `store-server serve` on that database, logs in 256 random players, and reads with
//!    16 closed-loop clients over loopback: the catalog with its `ETag` (a 304), the full
//!    catalog, wallets and history pages; each p50/p99 also as a ratio to `GET /healthz`
//!    measured in the same run (the HTTP floor);
//! 3. opens the dashboard's analytics page as a browser would (its six reports at once, the
//!    default range) and prints each report's answer and time;
//! 4. prints the server's memory now and at its peak, and the targets of DESIGN.md section 12.
//!
//! Sizes: `COINSLOT_SCALE_PLAYERS` (1,000,000), `COINSLOT_SCALE_ENTRIES_PER_PLAYER` (10),
//! `COINSLOT_SCALE_ITEMS` (10,000). `COINSLOT_SCALE_DIR` keeps the database between runs (a
//! database already generated there is reused); otherwise it lives in a temporary directory.
//! Every request goes to 127.0.0.1 and every load is bounded in count and time.

#![allow(clippy::float_arithmetic, clippy::cast_precision_loss, clippy::cast_possible_truncation)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use common::{Outcome, SERVER_BIN, Server, memory_mib, ms};

/// Requests per read scenario.
const READS: usize = 4_000;
/// Concurrent readers.
const READERS: usize = 16;
/// Players logged in for the reads.
const SAMPLED_PLAYERS: usize = 256;
/// How long one read scenario may run.
const SCENARIO_LIMIT: Duration = Duration::from_secs(30);
/// The open-loop rate latencies are measured at, at most (requests per second).
const LATENCY_RATE: f64 = 1_000.0;
/// How long an open-loop read load lasts at most.
const OPEN_LOOP_SECONDS: f64 = 3.0;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.replace('_', "").parse().ok()).unwrap_or(default)
}

fn run(database_url: &str, args: &[&str]) -> String {
    let output = Command::new(SERVER_BIN)
        .args(args)
        .env("COINSLOT_DATABASE_URL", database_url)
        .env("COINSLOT_ASSETS", concat!(env!("CARGO_MANIFEST_DIR"), "/../assets"))
        .env("RUST_LOG", "error")
        .output()
        .expect("store-server runs");
    assert!(
        output.status.success(),
        "store-server {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The demo catalog grown to `items` items, each with an offer for gold.
fn big_catalog(items: u64) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/catalog/catalog.json");
    let mut catalog: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the demo catalog")).expect("JSON");
    let have = catalog["items"].as_array().map_or(0, Vec::len) as u64;
    for index in have..items {
        let sku = format!("bench.item.{index}");
        catalog["items"].as_array_mut().expect("items").push(json!({
            "sku": sku, "kind": "consumable", "name": format!("Bench item {index}"),
            "description": "One of many, for the scale benchmark.", "tags": ["bench"],
        }));
        catalog["offers"].as_array_mut().expect("offers").push(json!({
            "id": uuid::Uuid::now_v7().to_string(), "sku": sku,
            "prices": [{ "currency": "gold", "amount": 1 + index % 500 }],
        }));
    }
    catalog
}

/// One read scenario: its peak rate with `READERS` closed-loop clients, then an open-loop load at
/// half that rate or `LATENCY_RATE`, whichever is lower, whose latencies are the ones reported
/// (the load generator shares the two cores and cannot pace much faster evenly). A response counts when its status is
/// `expected`.
async fn reads(
    http: &reqwest::Client,
    expected: u16,
    request: impl Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
) -> (f64, Outcome) {
    let (http, request) = (http.clone(), Arc::new(request));
    let send = move |index: usize| -> BoxFuture<'static, bool> {
        let sent = request(&http, index).send();
        Box::pin(async move {
            match sent.await {
                Ok(response) if response.status().as_u16() == expected => response.bytes().await.is_ok(),
                _ => false,
            }
        })
    };
    let send = Arc::new(send);
    let closed = Arc::clone(&send);
    let peak = common::closed_loop(READERS, READS, SCENARIO_LIMIT, move |index| closed(index)).await.rate();
    let rate = (peak / 2.0).min(LATENCY_RATE);
    let count = ((rate * OPEN_LOOP_SECONDS) as usize).clamp(100, READS);
    let steady = common::open_loop(READERS, rate, count, SCENARIO_LIMIT, move |index| send(index)).await;
    (peak, steady)
}

fn main() {
    let players = setting("COINSLOT_SCALE_PLAYERS", 1_000_000);
    let per_player = setting("COINSLOT_SCALE_ENTRIES_PER_PLAYER", 10);
    let items = setting("COINSLOT_SCALE_ITEMS", 10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async move {
        println!("# Scale benchmark: {players} players, {} entries, {items} catalog items (SQLite)\n", players * per_player);
        let temporary = tempfile::tempdir().expect("a temp dir");
        let dir = std::env::var("COINSLOT_SCALE_DIR").map_or_else(|_| temporary.path().to_owned(), Into::into);
        std::fs::create_dir_all(&dir).expect("the scale directory");
        let file = dir.join(format!("scale-{players}x{per_player}x{items}.db"));
        let url = format!("sqlite://{}", file.display());
        if file.exists() {
            println!("reusing {}", file.display());
        } else {
            Server::start(&url, &[], true).await.stop().await;
            let started = Instant::now();
            let generated = run(&url, &["generate", "--players", &players.to_string(), "--entries-per-player", &per_player.to_string()]);
            let seconds = started.elapsed().as_secs_f64();
            println!("- {} ({:.0} entries/s)", generated.trim(), (players * per_player) as f64 / seconds.max(1e-9));
            let catalog_file = dir.join("catalog.json");
            std::fs::write(&catalog_file, big_catalog(items).to_string()).expect("the catalog file");
            run(&url, &["catalog", "import", catalog_file.to_str().expect("a path"), "--publish"]);
        }
        let size = std::fs::metadata(&file).map_or(0, |meta| meta.len()) / (1024 * 1024);
        println!("- database file: {size} MiB\n");

        let server = Server::start(&url, &[], false).await;
        let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("a client");
        let mut tokens = Vec::new();
        for index in 0..SAMPLED_PLAYERS as u64 {
            // Spread over the whole range of generated players.
            let n = (index * 7_919 + 13) % players.max(1);
            let session = common::login(&http, &server.base, &format!("scale-{n}")).await;
            tokens.push(session["session_token"].as_str().expect("a token").to_owned());
        }
        // Each player's own ETag: regional prices and experiments make views differ.
        let mut etags = Vec::with_capacity(tokens.len());
        for token in &tokens {
            let catalog =
                http.get(format!("{}/v1/catalog", server.base)).bearer_auth(token).send().await.expect("the catalog");
            etags.push(catalog.headers().get("etag").and_then(|tag| tag.to_str().ok()).expect("an ETag").to_owned());
            let body: Value = catalog.json().await.expect("a catalog");
            let listed = body["items"].as_array().map_or(0, Vec::len);
            assert!(listed as u64 >= items, "the catalog lists {listed} items, not {items}");
        }
        let (tokens, etags) = (Arc::new(tokens), Arc::new(etags));
        let history: Value = http
            .get(format!("{}/v1/wallet/history?limit=20", server.base))
            .bearer_auth(&tokens[1])
            .send()
            .await
            .expect("history")
            .json()
            .await
            .expect("a page");
        let entries = history["entries"].as_array().map_or(0, Vec::len);
        assert_eq!(entries as u64, per_player.min(20), "a generated player's history: {history}");

        let base = server.base.clone();
        let mut rows: Vec<(&str, (f64, Outcome), Option<f64>)> = Vec::new();
        let b = base.clone();
        let mut floor = reads(&http, 200, move |http, _| http.get(format!("{b}/healthz"))).await;
        let floor_p99 = floor.1.percentile(0.99);
        rows.push(("GET /healthz (the HTTP floor)", floor, None));
        let (b, t, e) = (base.clone(), Arc::clone(&tokens), Arc::clone(&etags));
        let outcome = reads(&http, 304, move |http, i| {
            http.get(format!("{b}/v1/catalog"))
                .bearer_auth(&t[i % t.len()])
                .header("if-none-match", e[i % e.len()].as_str())
        })
        .await;
        rows.push(("GET /v1/catalog, ETag hit (304)", outcome, Some(2.0)));
        let (b, t) = (base.clone(), Arc::clone(&tokens));
        let outcome = reads(&http, 200, move |http, i| http.get(format!("{b}/v1/catalog")).bearer_auth(&t[i % t.len()])).await;
        rows.push(("GET /v1/catalog, full (200)", outcome, None));
        let (b, t) = (base.clone(), Arc::clone(&tokens));
        let outcome = reads(&http, 200, move |http, i| http.get(format!("{b}/v1/wallet")).bearer_auth(&t[i % t.len()])).await;
        rows.push(("GET /v1/wallet", outcome, None));
        let (b, t) = (base.clone(), Arc::clone(&tokens));
        let outcome = reads(&http, 200, move |http, i| {
            http.get(format!("{b}/v1/wallet/history?limit=20")).bearer_auth(&t[i % t.len()])
        })
        .await;
        rows.push(("GET /v1/wallet/history?limit=20", outcome, None));

        println!("| read | peak requests/s | open loop at min(half the peak, 1,000/s): p50 | p99 | p99 vs /healthz | errors | target |");
        println!("|---|---:|---:|---:|---:|---:|---|");
        let mut catalog_p99 = Duration::ZERO;
        for (name, (peak, mut outcome), target) in rows {
            let (p50, p99) = (outcome.percentile(0.5), outcome.percentile(0.99));
            if target.is_some() {
                catalog_p99 = p99;
            }
            println!(
                "| {name} | {peak:.0} | {} | {} | {:.2}x | {} | {} |",
                ms(p50),
                ms(p99),
                p99.as_secs_f64() / floor_p99.as_secs_f64().max(1e-9),
                outcome.errors,
                target.map_or_else(String::new, |limit| format!("p99 at most {limit} ms")),
            );
        }
        // The dashboard's analytics page on this database: six reports at once, as the page asks.
        let analytics_key = run(&url, &["admin", "create-key", "--scopes", "analytics:read"]).trim().to_owned();
        println!("\n### The dashboard's analytics page (six reports at once, the default range)\n");
        println!("| report | status | answer | time |");
        println!("|---|---:|---|---:|");
        let page_started = Instant::now();
        let answers = futures_util::future::join_all(
            ["revenue", "peak-times", "combinations", "price-sensitivity", "geography", "tabs"].map(|report| {
                let (http, base, key) = (http.clone(), base.clone(), analytics_key.clone());
                async move {
                    let started = Instant::now();
                    let response = http
                        .get(format!("{base}/admin/v1/analytics/{report}"))
                        .bearer_auth(&key)
                        .timeout(Duration::from_secs(120))
                        .send()
                        .await;
                    let (status, body) = match response {
                        Ok(response) => (response.status().as_u16(), response.text().await.unwrap_or_default()),
                        Err(error) => (0, error.to_string()),
                    };
                    (report, status, body, started.elapsed())
                }
            }),
        )
        .await;
        for (report, status, body, took) in answers {
            let answer = serde_json::from_str::<Value>(&body).map_or_else(
                |_| format!("{} bytes", body.len()),
                |json| match json["error"]["code"].as_str() {
                    Some(code) => format!("`{code}`: {}", json["error"]["message"].as_str().unwrap_or_default()),
                    None => format!("{} bytes of report", body.len()),
                },
            );
            println!("| {report} | {status} | {answer} | {} |", ms(took));
        }
        println!("\n- the whole page answered in {}", ms(page_started.elapsed()));
        let rss = memory_mib(server.pid(), "VmRSS:");
        let peak = server.stop().await;
        println!("\n### Targets\n");
        let catalog_ms = catalog_p99.as_secs_f64() * 1e3;
        println!(
            "- catalog read p99 with an ETag hit: {catalog_ms:.2} ms (target at most 2 ms): {}",
            if catalog_ms <= 2.0 { "met" } else { "NOT met" }
        );
        println!(
            "- server memory at {players} players / {} entries: {rss} MiB now, {peak} MiB peak (target at most 256 MiB): {}",
            players * per_player,
            if peak <= 256 { "met" } else { "NOT met" }
        );
    });
}
