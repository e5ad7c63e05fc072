//! `--autoplay`: the game plays the whole loop by itself (log in, earn gold, use a power-up,
//! buy a gem pack with the test card, buy and wear a skin with gems, put an extra life on the
//! tab), screenshots each step when asked, and exits 0 only if every step succeeded — or
//! non-zero naming the step that failed.

// Steering arithmetic (points); no money.
#![allow(clippy::float_arithmetic)]

use std::path::PathBuf;
use std::time::Duration;

use bevy::prelude::*;
use bevy::render::view::screenshot::{Screenshot, save_to_disk};
use game_sdk::store_api::catalog::OfferId;
use game_sdk::store_api::ledger::Quantity;
use game_sdk::store_api::orders::OrderStatus;
use game_sdk::store_api::sandbox::{PayStatus, cards};
use game_sdk::ui::Storefront;
use game_sdk::{
    Catalog, OrderUpdated, PaymentAttempted, PurchaseCompleted, RequestId, StoreError, StoreRequests,
    StoreStatus, Tab, Wallet,
};

use crate::play::{
    ARENA_WIDTH, Coin, Hazard, Lives, PLAYER_SIZE, Player, PlayerInput, PowerUp, PowerUps, Spawner,
};
use crate::shop::{CoinsCredited, UsePowerUp, Wardrobe};

/// How long one step may take before the autoplay gives up on it.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(90);
/// Coins to catch (and have credited) in the earning step.
pub const COINS_TO_EARN: u32 = 5;
/// How high above the runner a hazard makes the autoplayer step aside.
const DODGE_HEIGHT: f32 = 170.0;
/// How close sideways a hazard must be to be dodged.
const DODGE_WIDTH: f32 = 60.0;
/// Frames drawn after a step succeeds before its screenshot, so the screen shows the result.
const SETTLE_FRAMES: u32 = 15;

/// The steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Logged in, catalog loaded.
    LogIn,
    /// Coins caught and credited as gold.
    EarnGold,
    /// A magnet bought with gold and used: coins fly to the runner.
    UsePowerUp,
    /// 100 gems bought with the sandbox test card, fulfilled through the webhook.
    BuyGemPack,
    /// The crimson skin bought with gems and worn.
    BuySkinWithGems,
    /// An extra life for $0.05 on the tab: one more life, the tab shows it.
    ExtraLifeOnTab,
}

impl Step {
    const ALL: [Self; 6] = [
        Self::LogIn,
        Self::EarnGold,
        Self::UsePowerUp,
        Self::BuyGemPack,
        Self::BuySkinWithGems,
        Self::ExtraLifeOnTab,
    ];

    /// The step in words, for logs, errors and screenshot names.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::LogIn => "log in",
            Self::EarnGold => "earn gold",
            Self::UsePowerUp => "buy and use a power-up",
            Self::BuyGemPack => "buy a gem pack with the test card",
            Self::BuySkinWithGems => "buy and equip a skin with gems",
            Self::ExtraLifeOnTab => "add an extra life to the tab",
        }
    }

    fn slug(self) -> String {
        self.name().replace(' ', "-")
    }
}

/// Where the autoplay is.
#[derive(Resource, Debug)]
pub struct Autoplay {
    step: usize,
    started_at: Duration,
    acted: bool,
    request: Option<RequestId>,
    baseline: i64,
    settle: Option<u32>,
    shots: Option<PathBuf>,
    shot_pending: Option<PathBuf>,
    /// The steps done, in order.
    pub done: Vec<Step>,
    /// Why it stopped, if a step failed.
    pub failure: Option<String>,
}

impl Autoplay {
    /// An autoplay saving a screenshot per step into `shots` when given.
    #[must_use]
    pub fn new(shots: Option<PathBuf>) -> Self {
        Self {
            step: 0,
            started_at: Duration::ZERO,
            acted: false,
            request: None,
            baseline: 0,
            settle: None,
            shots,
            shot_pending: None,
            done: Vec::new(),
            failure: None,
        }
    }

    fn current(&self) -> Option<Step> {
        Step::ALL.get(self.step).copied()
    }
}

/// Plays the loop.
#[derive(Debug)]
pub struct AutoplayPlugin {
    /// Where screenshots go, if anywhere.
    pub shots: Option<PathBuf>,
}

impl Plugin for AutoplayPlugin {
    fn build(&self, app: &mut App) {
        if let Some(dir) = &self.shots
            && let Err(error) = std::fs::create_dir_all(dir)
        {
            error!(%error, dir = %dir.display(), "cannot make the screenshot folder");
        }
        // Coins fall faster and hazards rarely, so the run is short and rarely ends early.
        app.insert_resource(Autoplay::new(self.shots.clone()))
            .insert_resource(Spawner::new(Duration::from_millis(300), Duration::from_secs(6)))
            .add_systems(
                Update,
                (steer_to_coins.before(crate::play::PlaySystems), play_steps.after(crate::shop::ShopSystems)),
            );
    }
}

/// Moves the runner under the lowest coin, and away from a hazard about to land on it.
fn steer_to_coins(
    mut input: ResMut<PlayerInput>,
    players: Query<&Transform, With<Player>>,
    coins: Query<&Transform, With<Coin>>,
    hazards: Query<&Transform, With<Hazard>>,
) {
    let Ok(player) = players.single() else { return };
    let here = player.translation;
    let danger = hazards.iter().find(|hazard| {
        let above = hazard.translation.y - here.y;
        (0.0..DODGE_HEIGHT).contains(&above) && (hazard.translation.x - here.x).abs() < DODGE_WIDTH
    });
    if let Some(hazard) = danger {
        let away = if hazard.translation.x > here.x { -1.0 } else { 1.0 };
        // At a wall, the only way out is past it.
        let room = (ARENA_WIDTH - PLAYER_SIZE.x) / 2.0 - 4.0;
        input.axis = if (here.x * away) >= room { -away } else { away };
        return;
    }
    let target = coins.iter().min_by(|a, b| a.translation.y.total_cmp(&b.translation.y));
    input.axis = target.map_or(0.0, |coin| ((coin.translation.x - here.x) / 40.0).clamp(-1.0, 1.0));
}

/// What the step machine reads.
#[derive(bevy::ecs::system::SystemParam)]
struct Seen<'w, 's> {
    status: Res<'w, State<StoreStatus>>,
    catalog: Res<'w, Catalog>,
    wallet: Res<'w, Wallet>,
    tab: Res<'w, Tab>,
    lives: Res<'w, Lives>,
    power: Res<'w, PowerUps>,
    wardrobe: Res<'w, Wardrobe>,
    credited: Res<'w, CoinsCredited>,
    completed: MessageReader<'w, 's, PurchaseCompleted>,
    orders: MessageReader<'w, 's, OrderUpdated>,
    payments: MessageReader<'w, 's, PaymentAttempted>,
    errors: MessageReader<'w, 's, StoreError>,
}

#[expect(clippy::too_many_arguments, reason = "a Bevy system names each resource it reads")]
fn play_steps(
    mut commands: Commands,
    mut auto: ResMut<Autoplay>,
    mut seen: Seen,
    mut storefront: ResMut<Storefront>,
    mut power_ups: MessageWriter<UsePowerUp>,
    store: StoreRequests,
    time: Res<Time>,
    mut exit: MessageWriter<AppExit>,
) {
    if auto.failure.is_some() {
        return;
    }
    // A screenshot in progress: wait for its file, then go on.
    if let Some(path) = auto.shot_pending.clone() {
        if std::fs::metadata(&path).is_ok_and(|meta| meta.len() > 0) {
            auto.shot_pending = None;
            advance(&mut auto, &time, &mut exit);
        }
        return;
    }
    let Some(step) = auto.current() else { return };
    if auto.settle.is_some() {
        settle_and_shoot(&mut commands, &mut auto, step, &time, &mut exit);
        return;
    }
    if auto.started_at == Duration::ZERO {
        auto.started_at = time.elapsed();
    }
    if time.elapsed().saturating_sub(auto.started_at) > STEP_TIMEOUT {
        fail(&mut auto, step, format!("it did not finish within {} s", STEP_TIMEOUT.as_secs()), &mut exit);
        return;
    }
    // Any request of this step refused (not merely delayed by the network) fails the step: the
    // autoplay's own, and the game's (a coin claim, a power-up used). Coins caught past the coin
    // rule's per-minute cap are the game's rules at work, not a failure: a slow machine plays
    // longer steps and catches more coins.
    let refused = seen
        .errors
        .read()
        .find(|error| {
            error.request.is_some()
                && !error.error.leaves_request_open()
                && error.error.code() != Some(game_sdk::store_api::ErrorCode::RewardCapReached)
        })
        .map(|error| describe(&error.error));
    if let Some(words) = refused {
        fail(&mut auto, step, words, &mut exit);
        return;
    }
    let succeeded = match step {
        Step::LogIn => *seen.status.get() == StoreStatus::Ready && seen.catalog.catalog.is_some(),
        Step::EarnGold => {
            if !auto.acted {
                auto.acted = true;
                auto.baseline = seen.wallet.balance("gold");
            }
            seen.credited.0 >= COINS_TO_EARN && seen.wallet.balance("gold") > auto.baseline
        }
        Step::UsePowerUp => {
            if !auto.acted {
                storefront.open = true;
                auto.request = buy(&store, &seen.catalog, "magnet", 0, false);
                auto.acted = auto.request.is_some();
            }
            if seen.completed.read().any(|done| done.request.is_some() && done.request == auto.request) {
                power_ups.write(UsePowerUp(PowerUp::Magnet));
            }
            seen.power.magnet_s > 0.0
        }
        Step::BuyGemPack => {
            if !auto.acted {
                auto.baseline = seen.wallet.balance("gems");
                auto.request = buy(&store, &seen.catalog, "gems.small", 0, true);
                auto.acted = auto.request.is_some();
            }
            for update in seen.orders.read() {
                if update.request.is_some()
                    && update.request == auto.request
                    && update.order.status == OrderStatus::RequiresPayment
                {
                    // The storefront's checkout form is open for it; pay as a player would.
                    auto.request = store.pay_sandbox(update.order.id, cards::SUCCEEDS).ok();
                }
            }
            if let Some(declined) = seen
                .payments
                .read()
                .find(|paid| Some(paid.request) == auto.request && paid.status != PayStatus::Succeeded)
            {
                fail(
                    &mut auto,
                    step,
                    format!("the test card was not accepted ({:?})", declined.status),
                    &mut exit,
                );
                return;
            }
            seen.wallet.balance("gems") > auto.baseline
        }
        Step::BuySkinWithGems => {
            if !auto.acted {
                auto.request = buy(&store, &seen.catalog, "skin.red", 1, false);
                auto.acted = auto.request.is_some();
            }
            seen.wardrobe.equipped.as_deref() == Some("skin.red")
        }
        Step::ExtraLifeOnTab => {
            if !auto.acted {
                auto.baseline = i64::from(seen.lives.0);
                auto.request = buy(&store, &seen.catalog, "extra_life", 0, false);
                auto.acted = auto.request.is_some();
            }
            i64::from(seen.lives.0) > auto.baseline && seen.tab.open().is_some()
        }
    };
    if succeeded {
        info!(step = step.name(), "autoplay step done");
        auto.settle = Some(0);
    }
}

fn describe(error: &game_sdk::client::StoreError) -> String {
    match error.code() {
        Some(game_sdk::store_api::ErrorCode::NotFound) => {
            format!("{} (does the server have the `coin` reward rule?)", error.player_message())
        }
        _ => error.player_message(),
    }
}

/// Buys `sku` at price `index`: an order (card) or a purchase (currency or tab).
fn buy(store: &StoreRequests, catalog: &Catalog, sku: &str, index: u32, card: bool) -> Option<RequestId> {
    let offer: OfferId = catalog.offer_for(sku)?.id;
    let sent = if card {
        store.start_order(offer, Quantity::one(), Some(index))
    } else {
        store.purchase(offer, Quantity::one(), Some(index))
    };
    sent.ok()
}

fn settle_and_shoot(
    commands: &mut Commands,
    auto: &mut Autoplay,
    step: Step,
    time: &Time,
    exit: &mut MessageWriter<AppExit>,
) {
    let frames = auto.settle.unwrap_or(0) + 1;
    auto.settle = Some(frames);
    if frames < SETTLE_FRAMES {
        return;
    }
    auto.settle = None;
    match &auto.shots {
        Some(dir) => {
            let path = dir.join(format!("{:02}-{}.png", auto.step + 1, step.slug()));
            let _ = std::fs::remove_file(&path);
            commands.spawn(Screenshot::primary_window()).observe(save_to_disk(path.clone()));
            auto.shot_pending = Some(path);
        }
        None => advance(auto, time, exit),
    }
}

fn advance(auto: &mut Autoplay, time: &Time, exit: &mut MessageWriter<AppExit>) {
    if let Some(step) = auto.current() {
        auto.done.push(step);
    }
    auto.step += 1;
    auto.started_at = time.elapsed();
    auto.acted = false;
    auto.request = None;
    if auto.current().is_none() {
        println!("autoplay: every step succeeded ({} steps)", auto.done.len());
        exit.write(AppExit::Success);
    }
}

fn fail(auto: &mut Autoplay, step: Step, why: String, exit: &mut MessageWriter<AppExit>) {
    let message = format!("autoplay failed at step `{}`: {why}", step.name());
    eprintln!("{message}");
    auto.failure = Some(message);
    exit.write(AppExit::error());
}
