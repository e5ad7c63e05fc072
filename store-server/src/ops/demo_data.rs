//! `store-server demo-data`: fills a database with weeks of plausible store activity so the
//! dashboard's charts mean something.
//!
//! Everything goes through the real write paths: the command (in `cli.rs`) starts the store in
//! this process and this module plays players against its HTTP API (logins with countries, store views, coins, purchases,
//! tabs and their settlement, card orders paid on the sandbox and fulfilled by its webhooks,
//! refunds by an operator). To spread that over past days, the process's clock is moved to each
//! moment before it is played ([`crate::db::set_clock_to`]); handlers, workers and the sandbox all
//! read that clock, so signatures, expiries and tolerances agree. The store serves no one else
//! while this runs.

// Probabilities and hours of the day are floats; no money is computed here.
#![allow(clippy::float_arithmetic)]

use std::time::Duration;

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::db::{Db, reset_clock, set_clock_to};
use crate::settings::Settings;

/// Most players one run may make.
pub const PLAYERS_MAX: u32 = 100_000;
/// Most days one run may cover.
pub const DAYS_MAX: u32 = 366;
/// One fulfilled order in this many is refunded by an operator.
const REFUND_EVERY: u64 = 20;

/// How long one order or refund may take to settle before the run gives up on it.
const SETTLE_WAIT: Duration = Duration::from_secs(10);
const MICROS_PER_HOUR: i64 = 3_600 * 1_000_000;
const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// What to make.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Players.
    pub players: u32,
    /// Days of activity, ending yesterday.
    pub days: u32,
    /// The random seed: the same seed on an empty database makes the same story.
    pub seed: u64,
}

/// What was made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Sessions played.
    pub sessions: u64,
    /// Purchases that went through.
    pub purchases: u64,
    /// Orders paid.
    pub orders: u64,
    /// Orders refunded.
    pub refunds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spender {
    Whale,
    Regular,
    Casual,
}

#[derive(Debug)]
struct Player {
    device: String,
    country: &'static str,
    utc_offset_h: i64,
    spender: Spender,
}

/// Countries, their share of players and a typical UTC offset.
const COUNTRIES: [(&str, f64, i64); 7] = [
    ("US", 0.34, -5),
    ("DE", 0.16, 1),
    ("JP", 0.14, 9),
    ("GB", 0.10, 0),
    ("BR", 0.10, -3),
    ("FR", 0.08, 1),
    ("KR", 0.08, 9),
];
/// How likely a session starts in each local hour: quiet nights, a lunch bump, busy evenings.
const HOUR_WEIGHTS: [f64; 24] = [
    1.0, 0.6, 0.3, 0.2, 0.2, 0.3, 0.6, 1.0, 1.4, 1.4, 1.5, 1.8, 2.6, 2.4, 1.8, 1.8, 2.0, 2.6, 3.4, 4.2, 4.6,
    4.2, 3.0, 1.8,
];

fn pick_weighted(rng: &mut StdRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut point = rng.random::<f64>() * total;
    for (index, weight) in weights.iter().enumerate() {
        if point < *weight {
            return index;
        }
        point -= weight;
    }
    weights.len() - 1
}

/// The settings a store runs with while demo data is played against it: on a loopback port of
/// its own, with fast workers and no rate limits (weeks of play compressed into minutes: far
/// faster than any person, on purpose).
///
/// # Errors
/// When the plan is out of bounds.
pub fn store_settings(settings: Settings, plan: &Plan) -> anyhow::Result<Settings> {
    anyhow::ensure!((1..=PLAYERS_MAX).contains(&plan.players), "--players must be 1 to {PLAYERS_MAX}");
    anyhow::ensure!((1..=DAYS_MAX).contains(&plan.days), "--days must be 1 to {DAYS_MAX}");
    let mut settings = settings;
    settings.listen = ([127, 0, 0, 1], 0).into();
    settings.public_url = None;
    settings.worker_tick = Duration::from_millis(20);
    settings.player_rate_limit = crate::players::rate_limit::Limit::OFF;
    settings.key_rate_limit = crate::players::rate_limit::Limit::OFF;
    Ok(settings)
}

/// An operator key for playing: the store's first (when this start created it), or a new one
/// with the scopes the play needs.
///
/// # Errors
/// When the database fails.
pub async fn operator_key(database_url: &str, first: Option<&str>) -> anyhow::Result<String> {
    if let Some(key) = first {
        return Ok(key.to_owned());
    }
    let db = Db::connect(database_url, 2, Duration::from_secs(30)).await?;
    let mut tx = db.begin_write().await?;
    let scopes = [
        store_api::auth::Scope::RewardsWrite,
        store_api::auth::Scope::RefundsWrite,
        store_api::auth::Scope::PlayersWrite,
    ];
    let (key, _) = crate::players::auth::create_api_key(&mut tx, "demo-data", &scopes).await?;
    tx.commit().await?;
    db.close().await;
    Ok(key)
}

/// Plays `plan` against the store at `base` (started with [`store_settings`], serving no one
/// else), calling `progress(done, total)` as days complete; the process clock is back to real
/// time afterwards.
///
/// # Errors
/// When a request fails in a way a real player's would not.
pub async fn play_against(
    base: &str,
    operator_key: &str,
    plan: Plan,
    progress: impl Fn(u32, u32),
) -> anyhow::Result<Summary> {
    let outcome = play(base, operator_key, plan, &progress).await;
    reset_clock();
    outcome
}

struct Store<'a> {
    http: reqwest::Client,
    base: &'a str,
    operator_key: &'a str,
}

impl Store<'_> {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
        keyed: bool,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if keyed {
            request = request.header("idempotency-key", uuid::Uuid::now_v7().to_string());
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| path.to_owned())?;
        let status = response.status();
        let bytes = response.bytes().await?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        anyhow::ensure!(!status.is_server_error(), "{path} answered {status}: {value}");
        Ok((status, value))
    }

    async fn login(&self, player: &Player) -> anyhow::Result<String> {
        let body = json!({ "device_id": player.device, "country": player.country });
        let (status, session) = self.call(Method::POST, "/v1/auth/device", "", Some(body), false).await?;
        anyhow::ensure!(status.is_success(), "login refused: {session}");
        session["session_token"].as_str().map(str::to_owned).context("a session token")
    }

    /// Waits for an order to leave the states on its way (the sandbox's webhook arrives).
    async fn settled_order(&self, token: &str, id: &str) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
        loop {
            let (_, order) = self.call(Method::GET, &format!("/v1/orders/{id}"), token, None, false).await?;
            let status = order["status"].as_str().unwrap_or_default();
            if !matches!(status, "requires_payment" | "processing" | "paid") {
                return Ok(order);
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "order {id} stayed {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Opens an order (or a tab settlement) and pays it with `card`; returns it once settled.
    async fn pay(&self, token: &str, order: &Value, card: &str) -> anyhow::Result<Value> {
        let id = order["id"].as_str().context("an order id")?.to_owned();
        let url = order["checkout_url"].as_str().context("a checkout url")?;
        let response =
            self.http.post(format!("{url}/pay")).json(&json!({ "card_number": card })).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "paying failed: {}",
            response.text().await.unwrap_or_default()
        );
        self.settled_order(token, &id).await
    }
}

async fn play(
    base: &str,
    operator_key: &str,
    plan: Plan,
    progress: &impl Fn(u32, u32),
) -> anyhow::Result<Summary> {
    let store = Store { http: reqwest::Client::new(), base, operator_key };
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let mut summary = Summary::default();
    // The coin rule the demo game earns through (already there is fine).
    let rule = json!({ "code": "coin", "currency": "gold", "amount": 10, "cap_per_minute": 600 });
    store.call(Method::POST, "/admin/v1/reward-rules", operator_key, Some(rule), false).await?;

    let weights: Vec<f64> = COUNTRIES.iter().map(|(_, share, _)| *share).collect();
    let players: Vec<Player> = (0..plan.players)
        .map(|index| {
            let (country, _, utc_offset_h) = COUNTRIES[pick_weighted(&mut rng, &weights)];
            let spender = match rng.random::<f64>() {
                roll if roll < 0.04 => Spender::Whale,
                roll if roll < 0.35 => Spender::Regular,
                _ => Spender::Casual,
            };
            Player { device: format!("demo-{}-{index}", plan.seed), country, utc_offset_h, spender }
        })
        .collect();

    let today = crate::db::now_micros().div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY;
    for day in 0..plan.days {
        let midnight = today - i64::from(plan.days - day) * MICROS_PER_DAY;
        let weekday = (midnight / MICROS_PER_DAY + 3).rem_euclid(7); // 0 = Monday
        let weekend = weekday >= 5;
        let mut sessions: Vec<(i64, usize)> = Vec::new();
        for (index, player) in players.iter().enumerate() {
            let (chance, most) = match player.spender {
                Spender::Whale => (0.9, 3),
                Spender::Regular => (0.55, 2),
                Spender::Casual => (0.2, 1),
            };
            if !rng.random_bool(if weekend { (chance * 1.3_f64).min(0.98) } else { chance }) {
                continue;
            }
            for _ in 0..rng.random_range(1..=most) {
                let local_hour = i64::try_from(pick_weighted(&mut rng, &HOUR_WEIGHTS)).unwrap_or(20);
                let utc_hour = (local_hour - player.utc_offset_h).rem_euclid(24);
                let at = midnight + utc_hour * MICROS_PER_HOUR + rng.random_range(0..MICROS_PER_HOUR);
                sessions.push((at, index));
            }
        }
        sessions.sort_unstable();
        for (at, index) in sessions {
            set_clock_to(at);
            session(&store, &players[index], &mut rng, &mut summary).await?;
            summary.sessions += 1;
        }
        progress(day + 1, plan.days);
    }
    Ok(summary)
}

/// One visit: log in, look at the store, catch coins, maybe buy.
async fn session(
    store: &Store<'_>,
    player: &Player,
    rng: &mut StdRng,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let token = store.login(player).await?;
    let (_, catalog) = store.call(Method::GET, "/v1/catalog", &token, None, false).await?;
    let offer_of = |sku: &str| {
        catalog["offers"]
            .as_array()
            .and_then(|offers| offers.iter().find(|offer| offer["sku"] == sku))
            .and_then(|offer| offer["id"].as_str())
            .map(str::to_owned)
    };
    let offer_ids: Vec<Value> = catalog["offers"]
        .as_array()
        .map(|offers| offers.iter().map(|offer| offer["id"].clone()).collect())
        .unwrap_or_default();
    if !offer_ids.is_empty() {
        store
            .call(
                Method::POST,
                "/v1/events/store-viewed",
                &token,
                Some(json!({ "offer_ids": offer_ids })),
                false,
            )
            .await?;
    }
    for _ in 0..rng.random_range(1..=6) {
        store.call(Method::POST, "/v1/rewards/coin", &token, None, true).await?;
    }
    let appetite: f64 = match player.spender {
        Spender::Whale => 2.0,
        Spender::Regular => 1.0,
        Spender::Casual => 0.4,
    };
    let buy = async |sku: &str, price_index: u32, summary: &mut Summary| -> anyhow::Result<Value> {
        let Some(offer) = offer_of(sku) else { return Ok(Value::Null) };
        let body = json!({ "offer_id": offer, "price_index": price_index });
        let (status, answer) = store.call(Method::POST, "/v1/purchases", &token, Some(body), true).await?;
        if status.is_success() {
            summary.purchases += 1;
        }
        Ok(answer)
    };
    // A magnet often comes with a shield: the pair the combinations chart should find.
    if rng.random_bool((0.3 * appetite).min(0.95)) {
        buy("magnet", 0, summary).await?;
        if rng.random_bool(0.55) {
            buy("shield", 0, summary).await?;
        }
    }
    if rng.random_bool((0.08 * appetite).min(0.95)) {
        buy("shield", 0, summary).await?;
    }
    if rng.random_bool((0.15 * appetite).min(0.95)) {
        buy("turbo", 0, summary).await?;
    }
    if rng.random_bool((0.12 * appetite).min(0.95)) {
        let answer = buy("extra_life", 0, summary).await?;
        if answer["error"]["code"] == "tab_settlement_required" {
            let (status, order) = store.call(Method::POST, "/v1/tab/settle", &token, None, true).await?;
            if status.is_success() && order["checkout_url"].is_string() {
                store.pay(&token, &order, "4242424242424242").await?;
                summary.orders += 1;
            }
        }
    }
    let pack_chance = match player.spender {
        Spender::Whale => 0.3,
        Spender::Regular => 0.05,
        Spender::Casual => 0.01,
    };
    if rng.random_bool(pack_chance) {
        let sku = match rng.random::<f64>() {
            roll if roll < 0.7 => "gems.small",
            roll if roll < 0.9 => "gems.large",
            _ => "starter_bundle",
        };
        if let Some(offer) = offer_of(sku) {
            let (status, order) = store
                .call(Method::POST, "/v1/orders", &token, Some(json!({ "offer_id": offer })), true)
                .await?;
            if status.is_success() {
                let card = if rng.random_bool(0.07) { "4000000000000002" } else { "4242424242424242" };
                let settled = store.pay(&token, &order, card).await?;
                if settled["status"] == "fulfilled" {
                    summary.orders += 1;
                    // One fulfilled order in 20 is refunded (the 1st, the 21st…), so a small
                    // run shows a refund too, whatever the calendar and the random ids.
                    if summary.orders % REFUND_EVERY == 1 {
                        refund(store, &token, &settled).await?;
                        summary.refunds += 1;
                    }
                }
            }
        }
    }
    if rng.random_bool((0.03 * appetite).min(0.9)) {
        buy(if rng.random_bool(0.5) { "skin.red" } else { "skin.blue" }, 1, summary).await?;
    }
    Ok(())
}

/// An operator refunds an order in full, and the run waits for the provider to confirm.
async fn refund(store: &Store<'_>, token: &str, order: &Value) -> anyhow::Result<()> {
    let id = order["id"].as_str().context("an order id")?;
    let body = json!({ "reason": "demo data: goodwill refund" });
    let (status, answer) = store
        .call(Method::POST, &format!("/admin/v1/orders/{id}/refunds"), store.operator_key, Some(body), true)
        .await?;
    anyhow::ensure!(status.is_success(), "refund refused: {answer}");
    let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
    loop {
        let (_, now) = store.call(Method::GET, &format!("/v1/orders/{id}"), token, None, false).await?;
        if now["status"] == "refunded" {
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the refund of {id} never completed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
