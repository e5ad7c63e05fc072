//! Purchases per second through the real server over loopback HTTP, against what the database
//! itself does with no driver, measured in the same run.
//!
//! `cargo bench -p store-server --bench purchases` (release build), or `scripts/bench.sh`, which
//! also starts a throwaway PostgreSQL server. SQLite always; PostgreSQL too when
//! `COINSLOT_BENCH_POSTGRES_URL` names a server where the user may create databases, with
//! `pgbench` (found beside `initdb`, or named by `COINSLOT_BENCH_PGBENCH`).
//!
//! For each backend it prints:
//! - the baselines, none of which goes through this project's code or driver stack: on SQLite,
//!   `benches/baselines/sqlite_purchase_shape.c` (SQLite's C API, prepared statements, built
//!   here with the system C compiler and libsqlite3) writing a purchase's own rows set-oriented
//!   64 per commit, row at a time one per commit, one hot wallet, and the 4-statement transfer
//!   shape; on PostgreSQL, `pgbench`'s TPC-B at 1, 16 and 64 clients and a `pgbench` script of
//!   one writer's batch of 64 purchases (the set path's statements);
//! - the server (`store-server serve`, its own process) with group commit on and off, at 1, 16
//!   and 64 clients, purchases spread over 1,000 wallets and all on one hot wallet: the peak rate
//!   (closed loop), the server's CPU, the rows inserted and the bytes written per purchase (CPU
//!   and, on SQLite, bytes from `/proc`; on PostgreSQL the WAL's growth), p50/p99, errors, the rate as a
//!   ratio to the reference baseline, and p50/p99 of an open-loop load at half that peak
//!   (latency counted from each request's scheduled time, so queueing is not hidden); the
//!   server's peak memory (VmHWM);
//! - on PostgreSQL, three instances on one database sharing the load (rate, CPU, failures);
//! - the targets of the lean ledger layout issue, each with its figure and whether it was met.
//!
//! `COINSLOT_BENCH_QUICK=1` runs only what the targets read (64 clients, group commit on, the
//! set-oriented baselines): for comparing two builds one after the other.
//!
//! Every load is bounded in count and time, and only ever sent to 127.0.0.1.

// Rates, percentiles and ratios are measurements, not money.
#![allow(clippy::float_arithmetic, clippy::cast_precision_loss, clippy::cast_possible_truncation)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use common::{Cost, Meter, Outcome, Server, fresh_database, ms, players};

/// Purchases per closed-loop scenario at most: more than 15 s at 10,000/s.
const PURCHASES_MAX: usize = 200_000;
/// Purchases per open-loop scenario at most.
const OPEN_LOOP_MAX: usize = 40_000;
/// How long one closed-loop scenario runs at most.
const SCENARIO_LIMIT: Duration = Duration::from_secs(15);
/// How long an open-loop scenario lasts at most.
const OPEN_LOOP_SECONDS: f64 = 4.0;
/// Wallets the spread load uses.
const WALLETS: usize = 1_000;
/// Purchases per run of the SQLite baseline program (deep enough indexes to be realistic).
const BASELINE_PURCHASES: usize = 40_000;
/// Client counts.
const CLIENTS: [usize; 3] = [1, 16, 64];
/// The magnet: 100 gold.
const MAGNET: &str = "019a6b1e-0003-7000-8000-000000000003";

/// A money-moving POST; whether it succeeded.
async fn send_money(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    key: String,
    body: &serde_json::Value,
) -> bool {
    let response = http.post(url).bearer_auth(token).header("idempotency-key", key).json(body).send().await;
    matches!(response, Ok(response) if response.status().is_success())
}

/// The reward rule the claims scenario claims under: one gold, no caps.
const REWARD_RULE: &str = "bench";

/// What a scenario sends: a purchase of a magnet, or a reward claim.
#[derive(Clone, Copy)]
enum Load {
    Purchases,
    Claims,
}

impl Load {
    fn url(self, base: &str) -> String {
        match self {
            Self::Purchases => format!("{base}/v1/purchases"),
            Self::Claims => format!("{base}/v1/rewards/{REWARD_RULE}"),
        }
    }

    fn body(self) -> serde_json::Value {
        match self {
            Self::Purchases => json!({ "offer_id": MAGNET }),
            Self::Claims => json!({}),
        }
    }
}

/// `clients` closed-loop clients send `load` with unique keys, round-robin over `tokens`: the
/// peak rate.
async fn closed_loop(
    http: &reqwest::Client,
    base: &str,
    load: Load,
    tokens: &[String],
    clients: usize,
    run: &str,
) -> Outcome {
    let (http, url, body, tokens, run) =
        (http.clone(), load.url(base), load.body(), Arc::new(tokens.to_vec()), run.to_owned());
    common::closed_loop(clients, PURCHASES_MAX, SCENARIO_LIMIT, move |index| {
        let (http, url, body, token) =
            (http.clone(), url.clone(), body.clone(), tokens[index % tokens.len()].clone());
        let key = format!("{run}-{index}");
        Box::pin(async move { send_money(&http, &url, &token, key, &body).await })
    })
    .await
}

/// `clients` closed-loop clients send purchases with unique keys, request `i` to instance
/// `i % bases.len()`: several instances on one database.
async fn closed_loop_spread(
    http: &reqwest::Client,
    bases: &[String],
    tokens: &[String],
    clients: usize,
    run: &str,
) -> Outcome {
    let urls: Arc<Vec<String>> = Arc::new(bases.iter().map(|base| Load::Purchases.url(base)).collect());
    let (http, body, tokens, run) =
        (http.clone(), Load::Purchases.body(), Arc::new(tokens.to_vec()), run.to_owned());
    common::closed_loop(clients, PURCHASES_MAX, SCENARIO_LIMIT, move |index| {
        let (http, url, body, token) = (
            http.clone(),
            urls[index % urls.len()].clone(),
            body.clone(),
            tokens[(index / urls.len()) % tokens.len()].clone(),
        );
        let key = format!("{run}-{index}");
        Box::pin(async move { send_money(&http, &url, &token, key, &body).await })
    })
    .await
}

/// Instances in the several-instances scenario.
const INSTANCES: usize = 3;

/// Three instances on one PostgreSQL database, 64 clients spread over them and over 1,000
/// wallets: the rate, the instances' CPU per purchase, and every failed request (a deadlock the
/// writers could not absorb answers 503).
async fn several_instances(http: &reqwest::Client, url: &str, figures: &mut Figures) {
    let (url, _dir) = fresh_database(Some(url), "instances").await;
    let mut servers = vec![Server::start(&url, &[], true).await];
    for _ in 1..INSTANCES {
        servers.push(Server::start(&url, &[], false).await);
    }
    let tokens: Vec<String> =
        players(http, &servers[0], "instances", WALLETS).await.into_iter().map(|(_, token)| token).collect();
    let bases: Vec<String> = servers.iter().map(|server| server.base.clone()).collect();
    let pids: Vec<u32> = servers.iter().map(Server::pid).collect();
    let before = Meter::read(&url, &pids).await;
    let peak = closed_loop_spread(http, &bases, &tokens, 64, "instances").await;
    let cost = before.per(&Meter::read(&url, &pids).await, peak.done);
    figures.instances = Some((peak.rate(), peak.errors));
    print_row(
        &mut Row {
            scenario: format!("{INSTANCES} instances on one database, group commit on, {WALLETS} wallets"),
            clients: 64,
            peak,
            cost: Some(cost),
            half: None,
        },
        figures.reference,
    );
    for server in servers {
        server.stop().await;
    }
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
    let (http, url, body, tokens, run) = (
        http.clone(),
        Load::Purchases.url(base),
        Load::Purchases.body(),
        Arc::new(tokens.to_vec()),
        run.to_owned(),
    );
    common::open_loop(clients, rate, count, SCENARIO_LIMIT, move |index| {
        let (http, url, body, token) =
            (http.clone(), url.clone(), body.clone(), tokens[index % tokens.len()].clone());
        let key = format!("{run}-{index}");
        Box::pin(async move { send_money(&http, &url, &token, key, &body).await })
    })
    .await
}

/// A driver-free baseline: purchases per second, and the CPU, rows and bytes (WAL and
/// checkpoints, as the server's are counted) each took, and the WAL alone in kB.
#[derive(Debug, Clone, Copy)]
struct Baseline {
    rate: f64,
    cost: Cost,
    wal_kb: f64,
}

/// The SQLite baseline program, built once with the system C compiler and libsqlite3.
fn sqlite_baseline_program() -> Option<std::path::PathBuf> {
    let program = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sqlite_purchase_shape");
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/baselines/sqlite_purchase_shape.c");
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let built = Command::new(&compiler)
        .args(["-O2", "-o"])
        .arg(&program)
        .arg(source)
        .arg("-lsqlite3")
        .output()
        .map(|output| (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned()));
    match built {
        Ok((true, _)) => Some(program),
        Ok((false, error)) => {
            println!("the SQLite baseline did not build ({compiler}; needs libsqlite3-dev): {error}");
            None
        }
        Err(error) => {
            println!("no C compiler `{compiler}` for the SQLite baseline: {error}");
            None
        }
    }
}

/// Runs the SQLite baseline program in a fresh directory: `mode` (`B` set-oriented, `A` row at
/// a time, `C` the 4-statement transfer), `per_commit` purchases per transaction.
fn sqlite_baseline(program: &std::path::Path, mode: &str, per_commit: usize, hot: bool) -> Baseline {
    let dir = tempfile::tempdir().expect("a directory");
    let total = (BASELINE_PURCHASES / per_commit * per_commit).max(per_commit);
    let output = Command::new(program)
        .current_dir(dir.path())
        .args([mode, &per_commit.to_string(), &total.to_string(), "-", if hot { "hot" } else { "spread" }])
        .output()
        .expect("the SQLite baseline runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the SQLite baseline failed: {text} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // "mode B, 64 per commit, 40000 purchases: 6300/s wall, 120.0 us CPU per purchase, ...
    //   written: 4.0 rows per purchase, 7.4 kB WAL per purchase, 13.0 kB written per purchase ..."
    let number_before = |marker: &str| {
        text.split(marker)
            .next()
            .and_then(|head| head.rsplit([' ', ':']).find(|word| !word.is_empty()))
            .and_then(|word| word.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("the SQLite baseline printed no `{marker}`: {text}"))
    };
    let cost = Cost {
        cpu_us: number_before(" us CPU"),
        rows: number_before(" rows per purchase"),
        bytes: number_before(" kB written per purchase") * 1024.0,
    };
    Baseline { rate: number_before("/s wall"), cost, wal_kb: number_before(" kB WAL per purchase") }
}

/// The `pgbench` program, beside `initdb` or named by `COINSLOT_BENCH_PGBENCH`.
fn pgbench_program() -> Option<String> {
    let program = std::env::var("COINSLOT_BENCH_PGBENCH").ok().or_else(|| {
        let mut candidates: Vec<String> =
            std::env::var("PG_BIN").map(|bin| vec![format!("{bin}/pgbench")]).unwrap_or_default();
        if let Ok(dirs) = std::fs::read_dir("/usr/lib/postgresql") {
            candidates.extend(dirs.flatten().map(|dir| format!("{}/bin/pgbench", dir.path().display())));
        }
        candidates.into_iter().find(|path| std::path::Path::new(path).exists())
    });
    if program.is_none() {
        println!("pgbench was not found (set COINSLOT_BENCH_PGBENCH): no PostgreSQL baselines");
    }
    program
}

/// Runs `pgbench` with `args` on `database_url`; returns its tps.
fn pgbench_tps(program: &str, args: &[&str], database_url: &str) -> f64 {
    let run = Command::new(program).args(args).arg(database_url).output().expect("pgbench");
    let text = String::from_utf8_lossy(&run.stdout);
    text.lines()
        .find(|line| line.starts_with("tps = "))
        .and_then(|line| line.split_whitespace().nth(2))
        .and_then(|tps| tps.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("pgbench printed no tps: {text} {}", String::from_utf8_lossy(&run.stderr)))
}

/// One writer's batches of 64 purchases through `pgbench -f`, on the real schema (migrated on
/// a fresh database, 64 players): the set path's statements (claim the keys in order, lock the
/// players in order, read wallets, items, the catalog stamp and the key, one statement per table,
/// the hot revenue row locked last, the answers), with no server and no driver of ours.
/// Purchases per second.
async fn pgbench_purchase_batches(program: &str, database_url: &str) -> f64 {
    let db = store_server::db::Db::connect(database_url, 1, Duration::from_secs(30)).await.expect("db");
    db.migrate().await.expect("migrations");
    for sql in [
        "insert into meta values ('catalog_stamp', 's1') on conflict do nothing",
        "insert into receipt_key (id, public_key, secret_key, created_at) values ('rk_1', 'p', 's', 0)",
        "insert into player (id, device_id, country, created_at) \
         select '019a0000-0000-7000-8000-' || lpad(g::text, 12, '0'), 'dev' || g, 'FR', 0 from generate_series(0, 63) g",
        "insert into account (id, kind, player_id, currency, balance, created_at) \
         select 'w:' || id || ':gold', 'wallet', id, 'gold', 1000000000, 0 from player",
        "insert into account (id, kind, player_id, currency, balance, created_at) values ('s:revenue:gold', 'revenue', null, 'gold', 0, 0)",
        "insert into inventory (player_id, sku, quantity) select id, 'magnet', 1 from player",
        "create sequence bench_seq",
    ] {
        sqlx::query(sql).execute(db.pool()).await.unwrap_or_else(|error| panic!("{sql}: {error}"));
    }
    db.close().await;
    let (payload, signature, answer) = ("x".repeat(420), "s".repeat(88), "a".repeat(1_400));
    let player = "('019a0000-0000-7000-8000-' || lpad(((g + :s * 7) % 64)::text, 12, '0'))";
    let script = format!(
        "\\set n 64
select nextval('bench_seq') as s, (extract(epoch from clock_timestamp()) * 1e6)::bigint as t \\gset
begin;
insert into idempotency (scope, key, request_hash, status_code, response_body, created_at) select 'player:' || {player}, 'k' || :s || '-' || g, 'h', 0, '', :t from generate_series(1, :n) g order by 1, 2 on conflict do nothing returning scope;
select id, blocked, age_band, country, (select max(e.id) from entry e where e.player_id = player.id) from player where id in (select {player} from generate_series(1, :n) g) order by id collate \"C\" for no key update;
select id, balance from account where player_id in (select {player} from generate_series(1, :n) g);
select player_id, sku, quantity from inventory where player_id in (select {player} from generate_series(1, :n) g);
select (select value from meta where key = 'catalog_stamp'), (select id from receipt_key where retired_at is null limit 1);
update idempotency i set status_code = 201, response_body = '{answer}' from generate_series(1, :n) g where i.scope = 'player:' || {player} and i.key = 'k' || :s || '-' || g;
update inventory v set quantity = v.quantity + d.q from (select {player} p, count(*) q from generate_series(1, :n) g group by 1) d where v.player_id = d.p and v.sku = 'magnet' returning v.player_id, v.quantity;
insert into entry (id, kind, player_id, actor, reason, created_at, items, purchase_id, purchase_offer, purchase_sku, purchase_quantity, purchase_price_index, purchase_currency, purchase_amount, purchase_catalog_version, receipt_id, receipt_key, receipt_payload, receipt_signature) select ('e' || :s || '-' || g), 'purchase', {player}, 'player:' || {player}, null, :t, '[[\"magnet\",1,0]]', 'p' || :s || '-' || g, 'offer', 'magnet', 1, 0, 'gold', 100, 1, 'r' || :s || '-' || g, 'rk_1', '{payload}', '{signature}' from generate_series(1, :n) g;
select id from account where id = 's:revenue:gold' for no key update;
update account a set balance = a.balance + d.delta from (select 'w:' || {player} || ':gold' id, -100 * count(*) delta from generate_series(1, :n) g group by 1 union all select 's:revenue:gold', 100 * :n) d where a.id = d.id and (a.kind <> 'wallet' or a.balance + d.delta >= 0) returning a.id, a.balance;
insert into posting (entry_id, account_id, currency, amount, balance_after) select ('e' || :s || '-' || g), x.acct, 'gold', x.amt, 0 from generate_series(1, :n) g, lateral (values ('s:revenue:gold', 100), ('w:' || {player} || ':gold', -100)) x(acct, amt);
commit;
"
    );
    let dir = tempfile::tempdir().expect("a directory");
    let file = dir.path().join("purchase-batch.sql");
    std::fs::write(&file, script).expect("the script");
    let file = file.display().to_string();
    pgbench_tps(program, &["-n", "-f", &file, "-c", "1", "-j", "1", "-T", "10"], database_url) * 64.0
}

/// The writer's phase timings and batch sizes so far: (name, sum, count) per series of
/// `coinslot_writer_phase_seconds` and `coinslot_group_commit_batch_size`.
async fn writer_figures(http: &reqwest::Client, base: &str) -> Vec<(String, f64, f64)> {
    let text = http.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("text");
    let value = |name: &str| {
        text.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let mut figures = Vec::new();
    for phase in ["set_read", "set_decide", "set_finish", "set_write", "commit", "batch"] {
        let series = format!("coinslot_writer_phase_seconds_sum{{phase=\"{phase}\"}}");
        let count = format!("coinslot_writer_phase_seconds_count{{phase=\"{phase}\"}}");
        figures.push((phase.to_owned(), value(&series), value(&count)));
    }
    figures.push((
        "batch size".to_owned(),
        value("coinslot_group_commit_batch_size_sum"),
        value("coinslot_group_commit_batch_size_count"),
    ));
    figures
}

/// Prints where the writer's time went between two [`writer_figures`].
fn print_writer(before: &[(String, f64, f64)], after: &[(String, f64, f64)]) {
    let parts: Vec<String> = before
        .iter()
        .zip(after)
        .map(|((name, sum0, count0), (_, sum1, count1))| {
            let mean = (sum1 - sum0) / (count1 - count0).max(1.0);
            if name == "batch size" {
                format!("{:.0} batches of {mean:.1} on average", count1 - count0)
            } else {
                format!("{name} {:.2} ms", mean * 1e3)
            }
        })
        .collect();
    println!("| (the writer per batch: {}) | | | | | | | |", parts.join(", "));
}

/// pgbench's TPC-B tps at each client count, on a fresh database (scale 16).
fn pgbench_tpcb(program: &str, database_url: &str) -> Vec<(usize, f64)> {
    let init =
        Command::new(program).args(["-i", "-q", "-s", "16", database_url]).output().expect("pgbench -i");
    assert!(init.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    CLIENTS
        .iter()
        .map(|clients| {
            let clients_text = clients.to_string();
            (
                *clients,
                pgbench_tps(program, &["-n", "-c", &clients_text, "-j", "2", "-T", "10"], database_url),
            )
        })
        .collect()
}

struct Row {
    scenario: String,
    clients: usize,
    peak: Outcome,
    /// The server's CPU, the rows and the bytes written per purchase at the peak.
    cost: Option<Cost>,
    half: Option<Outcome>,
}

/// What one backend measured, for the targets.
#[derive(Default)]
struct Figures {
    /// The reference: SQLite's own cost for a purchase's rows at 64 per commit, or pgbench's
    /// TPC-B at 64 clients.
    reference: f64,
    /// (group commit, hot wallet, clients) -> peak rate.
    server: Vec<((bool, bool, usize), f64)>,
    /// p99 at half the peak, 64 clients, spread, group commit on.
    half_peak_p99: Duration,
    /// The cost per purchase at the peak, 64 clients, spread, group commit on.
    cost: Option<Cost>,
    tpcb: Vec<(usize, f64)>,
    peak_mib: u64,
    /// Reward claims per second, 64 clients, spread, group commit on.
    claims: f64,
    /// Several instances on one PostgreSQL: purchases per second and failed requests.
    instances: Option<(f64, usize)>,
}

impl Figures {
    fn rate(&self, group_commit: bool, hot: bool, clients: usize) -> f64 {
        self.server.iter().find(|(at, _)| *at == (group_commit, hot, clients)).map_or(0.0, |(_, rate)| *rate)
    }
}

fn print_header(reference: &str) {
    println!(
        "| scenario | clients | purchases/s (peak) | vs {reference} | per purchase: CPU, rows, bytes written | p50 / p99 at peak | errors | p50 / p99 at half the peak (open loop) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
}

/// A baseline's row: its rate and CPU, no latencies.
fn print_baseline(scenario: &str, clients: usize, rate: f64, cost: Option<Cost>, reference: f64) {
    let cpu = cost.map_or_else(String::new, |cost| cost.to_string());
    println!("| {scenario} | {clients} | {rate:.0} | {:.2}x | {cpu} | | | |", rate / reference.max(1e-9));
}

fn print_row(row: &mut Row, reference: f64) {
    let (p50, p99) = (row.peak.percentile(0.5), row.peak.percentile(0.99));
    let half = row.half.as_mut().map_or_else(
        || "".to_owned(),
        |half| format!("{} / {} ({:.0}/s)", ms(half.percentile(0.5)), ms(half.percentile(0.99)), half.rate()),
    );
    let cpu = row.cost.map_or_else(String::new, |cost| format!("{cost} (server)"));
    println!(
        "| {} | {} | {:.0} | {:.2}x | {cpu} | {} / {} | {} | {half} |",
        row.scenario,
        row.clients,
        row.peak.rate(),
        row.peak.rate() / reference.max(1e-9),
        ms(p50),
        ms(p99),
        row.peak.errors + row.half.as_ref().map_or(0, |half| half.errors),
    );
}

/// The baselines of a backend; returns the reference rate and TPC-B's rates.
async fn baselines(postgres: Option<&str>) -> (f64, Vec<(usize, f64)>) {
    let Some(url) = postgres else {
        let Some(program) = sqlite_baseline_program() else { return (0.0, Vec::new()) };
        let spread = sqlite_baseline(&program, "B", 64, false);
        print_header("SQLite's own cost, 64 per commit");
        let label = "SQLite C API, prepared: a purchase's rows, set-oriented";
        print_baseline(
            &format!("{label}, 64 per commit (reference)"),
            1,
            spread.rate,
            Some(spread.cost),
            spread.rate,
        );
        println!(
            "| (the reference, spread over {WALLETS} players like the server's load, wrote {:.1} kB of WAL per purchase; the bytes column counts WAL and checkpoints, as the server's) | | | | | | | |",
            spread.wal_kb
        );
        let hot = sqlite_baseline(&program, "B", 64, true);
        print_baseline(
            &format!("{label}, 64 per commit, one hot wallet"),
            1,
            hot.rate,
            Some(hot.cost),
            spread.rate,
        );
        if !quick() {
            let alone = sqlite_baseline(&program, "A", 1, false);
            let label = "SQLite C API, prepared: a purchase's rows, row at a time, one per commit";
            print_baseline(label, 1, alone.rate, Some(alone.cost), spread.rate);
        }
        let transfer = sqlite_baseline(&program, "C", 100, false);
        let label = "SQLite C API, prepared: the 4-statement transfer, 100 per commit";
        print_baseline(label, 1, transfer.rate, Some(transfer.cost), spread.rate);
        return (spread.rate, Vec::new());
    };
    let Some(program) = pgbench_program() else { return (0.0, Vec::new()) };
    let (tpcb_url, _) = fresh_database(Some(url), "pgbench").await;
    let tpcb = pgbench_tpcb(&program, &tpcb_url);
    let reference = tpcb.iter().find(|(clients, _)| *clients == 64).map_or(0.0, |(_, tps)| *tps);
    print_header("pgbench TPC-B, 64 clients");
    for (clients, tps) in &tpcb {
        print_baseline("pgbench TPC-B (scale 16), transactions/s", *clients, *tps, None, reference);
    }
    let (shape_url, _) = fresh_database(Some(url), "shape").await;
    let batches = pgbench_purchase_batches(&program, &shape_url).await;
    print_baseline(
        "pgbench: one writer's batches of 64 purchases (the set path's statements)",
        1,
        batches,
        None,
        reference,
    );
    (reference, tpcb)
}

async fn bench_backend(name: &str, postgres: Option<&str>) -> Figures {
    let mut figures = Figures::default();
    println!("\n## {name}\n");
    let http = reqwest::Client::builder().pool_max_idle_per_host(128).build().expect("a client");
    (figures.reference, figures.tpcb) = baselines(postgres).await;
    let modes: &[bool] = if quick() { &[true] } else { &[true, false] };
    for &group_commit in modes {
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
        let clients_counts: &[usize] = if quick() { &[64] } else { &CLIENTS };
        for &clients in clients_counts {
            for (hot_wallet, tokens) in [(false, &spread), (true, &hot)] {
                let label = format!("{}{}{clients}", u8::from(group_commit), u8::from(hot_wallet));
                let before = Meter::read(&url, &[server.pid()]).await;
                let writer_before = writer_figures(&http, &server.base).await;
                let peak =
                    closed_loop(&http, &server.base, Load::Purchases, tokens, clients, &format!("c{label}"))
                        .await;
                let cost = before.per(&Meter::read(&url, &[server.pid()]).await, peak.done);
                let writer_after = writer_figures(&http, &server.base).await;
                let mut half =
                    open_loop(&http, &server.base, tokens, clients, peak.rate() / 2.0, &format!("o{label}"))
                        .await;
                figures.server.push(((group_commit, hot_wallet, clients), peak.rate()));
                if group_commit && !hot_wallet && clients == 64 {
                    figures.half_peak_p99 = half.percentile(0.99);
                    figures.cost = Some(cost);
                }
                let wallets =
                    if hot_wallet { "one hot wallet".to_owned() } else { format!("{WALLETS} wallets") };
                print_row(
                    &mut Row {
                        scenario: format!("{mode}, {wallets}"),
                        clients,
                        peak,
                        cost: Some(cost),
                        half: Some(half),
                    },
                    figures.reference,
                );
                if group_commit && clients == 64 {
                    print_writer(&writer_before, &writer_after);
                }
            }
        }
        if group_commit {
            let rule = json!({ "code": REWARD_RULE, "currency": "gold", "amount": 1 });
            let created = http
                .post(format!("{}/admin/v1/reward-rules", server.base))
                .bearer_auth(&server.key)
                .json(&rule)
                .send()
                .await
                .expect("a reward rule");
            assert!(created.status().is_success(), "reward rule: {}", created.status());
            let before = Meter::read(&url, &[server.pid()]).await;
            let peak = closed_loop(&http, &server.base, Load::Claims, &spread, 64, "claims").await;
            let cost = before.per(&Meter::read(&url, &[server.pid()]).await, peak.done);
            figures.claims = peak.rate();
            print_row(
                &mut Row {
                    scenario: format!("{mode}, reward claims, {WALLETS} wallets"),
                    clients: 64,
                    peak,
                    cost: Some(cost),
                    half: None,
                },
                figures.reference,
            );
        }
        let peak_mib = server.stop().await;
        println!("| ({mode}: server peak memory {peak_mib} MiB) | | | | | | | |");
        figures.peak_mib = figures.peak_mib.max(peak_mib);
    }
    if let Some(url) = postgres {
        several_instances(&http, url, &mut figures).await;
    }
    figures
}

/// `COINSLOT_BENCH_QUICK=1`: only what the targets read (64 clients, group commit on, and the
/// set-oriented baselines), for comparing two builds one after the other.
fn quick() -> bool {
    std::env::var("COINSLOT_BENCH_QUICK").as_deref() == Ok("1")
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
        println!("- purchases/s: {on:.0} (target at least 20,000): {}", verdict(on >= 20_000.0));
        let ratio = on / figures.reference.max(1e-9);
        println!("- vs SQLite's own cost for the same rows, no driver, 64 per commit: {ratio:.2}x");
        if let Some(cost) = figures.cost {
            let kb = cost.bytes / 1024.0;
            println!(
                "- bytes written per purchase (WAL and checkpoints): {kb:.1} kB (target at most 12 kB of WAL): {}",
                verdict(kb <= 12.0)
            );
        }
    }
    if let Some(cost) = figures.cost {
        println!(
            "- server CPU per purchase: {:.0} us (target at most 100 us): {}; rows inserted per purchase: {:.1}",
            cost.cpu_us,
            verdict(cost.cpu_us <= 100.0),
            cost.rows
        );
    }
    if let Some((_, tps)) = figures.tpcb.iter().find(|(clients, _)| *clients == 64) {
        let ratio = on / tps.max(1e-9);
        println!(
            "- purchases/s vs pgbench TPC-B tps: {ratio:.2}x (target at least 2x): {}",
            verdict(ratio >= 2.0)
        );
    }
    let ratio = hot / on.max(1e-9);
    println!("- one hot wallet vs spread: {ratio:.2}x (target at least 0.8x): {}", verdict(ratio >= 0.8));
    let ratio = figures.claims / on.max(1e-9);
    println!("- reward claims vs purchases: {ratio:.2}x (target at least 1x): {}", verdict(ratio >= 1.0));
    if let Some((rate, errors)) = figures.instances {
        let ratio = rate / on.max(1e-9);
        println!(
            "- {INSTANCES} instances on one database vs one instance: {ratio:.2}x with {errors} failed requests (target at least 1x, none failed): {}",
            verdict(ratio >= 1.0 && errors == 0)
        );
    }
    let p99 = figures.half_peak_p99.as_secs_f64() * 1e3;
    println!("- p99 at half the peak rate: {p99:.2} ms (target at most 10 ms): {}", verdict(p99 <= 10.0));
    if off > 0.0 {
        println!("- group commit on vs off: {:.2}x", on / off);
    }
    println!("- server peak memory: {} MiB", figures.peak_mib);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        println!(
            "# Purchases benchmark (closed loop: {PURCHASES_MAX} purchases or {} s at most per scenario; open loop: {OPEN_LOOP_MAX} or {OPEN_LOOP_SECONDS} s at most)",
            SCENARIO_LIMIT.as_secs()
        );
        // `COINSLOT_BENCH_ONLY=postgres` skips SQLite (to measure PostgreSQL alone).
        if std::env::var("COINSLOT_BENCH_ONLY").as_deref() != Ok("postgres") {
            let sqlite = bench_backend("SQLite", None).await;
            print_targets("SQLite", &sqlite);
        }
        if let Ok(url) = std::env::var("COINSLOT_BENCH_POSTGRES_URL") {
            let postgres = bench_backend("PostgreSQL", Some(&url)).await;
            print_targets("PostgreSQL", &postgres);
        }
    });
}
