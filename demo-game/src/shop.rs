//! Where the game meets the store: caught coins are claimed through the `coin` reward rule,
//! power-ups are used up through the store before they work, extra lives bought are used at
//! once, and skins bought are worn. What the store says goes to the player as a notice.

use std::time::Duration;

use bevy::prelude::*;
use game_sdk::store_api::ErrorCode;
use game_sdk::store_api::catalog::Sku;
use game_sdk::store_api::ledger::Quantity;
use game_sdk::store_api::orders::OrderStatus;
use game_sdk::{
    Inventory, ItemConsumed, OrderUpdated, PurchaseCompleted, RequestId, RewardClaimed, StoreError,
    StoreRequests, StoreStatus,
};

use crate::play::{CoinCaught, LifeGained, PowerUp, PowerUpStarted};

/// The reward rule a caught coin claims.
pub const COIN_RULE: &str = "coin";
/// How long a notice stays on screen.
pub const NOTICE_DURATION: Duration = Duration::from_secs(5);

/// The skins, in the order the wardrobe shows them.
pub const SKINS: [&str; 2] = ["skin.red", "skin.blue"];

/// Coins caught and not yet claimed (the store was busy or away).
#[derive(Resource, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnclaimedCoins(pub u32);

/// Coins credited by the store this session.
#[derive(Resource, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CoinsCredited(pub u32);

/// The skin the runner wears (`None`: the plain look).
#[derive(Resource, Debug, Default, Clone, PartialEq, Eq)]
pub struct Wardrobe {
    /// The sku of the skin worn.
    pub equipped: Option<String>,
}

/// Use a power-up the player holds.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsePowerUp(pub PowerUp);

/// Wear a skin the player owns.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
pub struct Equip(pub String);

/// What to tell the player now, in plain words.
#[derive(Resource, Debug, Default, Clone)]
pub struct Notice {
    /// The text, whether it is bad news, and when it was shown.
    pub current: Option<(String, bool, Duration)>,
}

impl Notice {
    fn tell(&mut self, text: impl Into<String>, bad: bool, now: Duration) {
        self.current = Some((text.into(), bad, now));
    }
}

/// Store requests the game made for itself, and what each was for.
#[derive(Resource, Debug, Default)]
struct OwnRequests {
    consuming: Vec<(RequestId, String)>,
}

/// The shop's systems, in `Update`, after the game's rules.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShopSystems;

/// Wires the game to the store.
#[derive(Debug, Default)]
pub struct ShopPlugin;

impl Plugin for ShopPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<UnclaimedCoins>()
            .init_resource::<CoinsCredited>()
            .init_resource::<Wardrobe>()
            .init_resource::<Notice>()
            .init_resource::<OwnRequests>()
            .add_message::<UsePowerUp>()
            .add_message::<Equip>()
            .add_systems(
                Update,
                (
                    count_caught_coins,
                    claim_coins.run_if(in_state(StoreStatus::Ready)),
                    use_power_ups,
                    use_extra_lives.run_if(in_state(StoreStatus::Ready)),
                    hear_from_store,
                    wear_skins,
                )
                    .chain()
                    .in_set(ShopSystems)
                    .after(crate::play::PlaySystems),
            );
    }
}

fn count_caught_coins(mut caught: MessageReader<CoinCaught>, mut unclaimed: ResMut<UnclaimedCoins>) {
    unclaimed.0 += u32::try_from(caught.read().count()).unwrap_or(u32::MAX);
}

fn claim_coins(mut unclaimed: ResMut<UnclaimedCoins>, store: StoreRequests) {
    while unclaimed.0 > 0 {
        if store.claim_reward(COIN_RULE, None).is_err() {
            // Busy: the rest wait for the next frame.
            return;
        }
        unclaimed.0 -= 1;
    }
}

fn use_power_ups(
    mut wanted: MessageReader<UsePowerUp>,
    inventory: Res<Inventory>,
    store: StoreRequests,
    mut own: ResMut<OwnRequests>,
    mut notice: ResMut<Notice>,
    time: Res<Time>,
) {
    for UsePowerUp(kind) in wanted.read() {
        let sku = kind.sku();
        let in_use = own.consuming.iter().filter(|(_, using)| using == sku).count();
        let held = usize::try_from(inventory.quantity(sku)).unwrap_or(0);
        if held <= in_use {
            notice.tell(format!("You have no {sku}s left: buy one in the shop (B)."), true, time.elapsed());
            continue;
        }
        let Ok(sku_value) = Sku::parse(sku) else { continue };
        match store.consume(sku_value, Quantity::one()) {
            Ok(request) => own.consuming.push((request, sku.to_owned())),
            Err(_) => notice.tell("The store is busy. Try again in a moment.", true, time.elapsed()),
        }
    }
}

/// An extra life in the inventory is used at once: one more life.
fn use_extra_lives(inventory: Res<Inventory>, store: StoreRequests, mut own: ResMut<OwnRequests>) {
    let using = own.consuming.iter().filter(|(_, sku)| sku == "extra_life").count();
    let held = usize::try_from(inventory.quantity("extra_life")).unwrap_or(0);
    if held > using
        && let Ok(sku) = Sku::parse("extra_life")
        && let Ok(request) = store.consume(sku, Quantity::one())
    {
        own.consuming.push((request, "extra_life".to_owned()));
    }
}

#[expect(clippy::too_many_arguments, reason = "a Bevy system names each message it reads and writes")]
fn hear_from_store(
    mut own: ResMut<OwnRequests>,
    mut consumed: MessageReader<ItemConsumed>,
    mut rewards: MessageReader<RewardClaimed>,
    mut errors: MessageReader<StoreError>,
    mut started: MessageWriter<PowerUpStarted>,
    mut lives: MessageWriter<LifeGained>,
    mut credited: ResMut<CoinsCredited>,
    mut notice: ResMut<Notice>,
    time: Res<Time>,
) {
    let now = time.elapsed();
    for item in consumed.read() {
        let Some(request) = item.request else { continue };
        own.consuming.retain(|(mine, _)| *mine != request);
        match item.sku.as_str() {
            "magnet" => {
                started.write(PowerUpStarted(PowerUp::Magnet));
                notice.tell("Magnet on: coins come to you for ten seconds.", false, now);
            }
            "shield" => {
                started.write(PowerUpStarted(PowerUp::Shield));
                notice.tell("Shield up: the next hit is absorbed.", false, now);
            }
            "turbo" => {
                started.write(PowerUpStarted(PowerUp::Turbo));
                notice.tell("Turbo: you run faster for twenty seconds.", false, now);
            }
            "extra_life" => {
                lives.write(LifeGained);
                notice.tell("Extra life!", false, now);
            }
            _ => {}
        }
    }
    credited.0 += u32::try_from(rewards.read().count()).unwrap_or(u32::MAX);
    for error in errors.read() {
        if let Some(request) = error.request {
            own.consuming.retain(|(mine, _)| *mine != request);
        }
        let words = match error.error.code() {
            Some(ErrorCode::NotFound) if error.request.is_some() => {
                "This server has no `coin` reward rule, so coins are not credited.".to_owned()
            }
            Some(ErrorCode::RewardCapReached) => "That is all the coins you can earn this minute.".to_owned(),
            _ => error.error.player_message(),
        };
        notice.tell(words, true, now);
    }
}

/// A skin bought (or granted by a bundle) is worn; `Equip` switches between owned skins; at
/// start the first owned skin is worn.
fn wear_skins(
    mut wardrobe: ResMut<Wardrobe>,
    mut equip: MessageReader<Equip>,
    mut completed: MessageReader<PurchaseCompleted>,
    mut orders: MessageReader<OrderUpdated>,
    inventory: Res<Inventory>,
) {
    for purchase in completed.read() {
        if SKINS.contains(&purchase.purchase.sku.as_str()) {
            wardrobe.equipped = Some(purchase.purchase.sku.to_string());
        }
    }
    for update in orders.read() {
        if update.order.status == OrderStatus::Fulfilled
            && update.order.sku.as_ref().is_some_and(|sku| sku.as_str() == "starter_bundle")
        {
            wardrobe.equipped = Some("skin.blue".to_owned());
        }
    }
    for Equip(sku) in equip.read() {
        if inventory.quantity(sku) > 0 {
            wardrobe.equipped = Some(sku.clone());
        }
    }
    if wardrobe.equipped.is_none()
        && let Some(owned) = SKINS.iter().find(|sku| inventory.quantity(sku) > 0)
    {
        wardrobe.equipped = Some((*owned).to_owned());
    }
}
