//! Buys an item from a plain Bevy `App` with `MinimalPlugins`: no window, no renderer.
//!
//! Start a server first (`cargo run -p store-server`), then:
//! `cargo run -p game-sdk --example headless -- http://127.0.0.1:8080 magnet`

use std::time::Duration;

use bevy::app::{AppExit, ScheduleRunnerPlugin};
use bevy::prelude::*;
use game_sdk::store_api::ledger::Quantity;
use game_sdk::{
    Catalog, PurchaseCompleted, PurchaseFailed, StoreError, StorePlugin, StoreRequests, StoreStatus, Wallet,
};

/// What to buy, from the command line.
#[derive(Resource)]
struct Shopping {
    sku: String,
    sent: bool,
}

fn main() -> AppExit {
    let mut args = std::env::args().skip(1);
    let base_url = args.next().unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let sku = args.next().unwrap_or_else(|| "magnet".to_owned());
    App::new()
        .add_plugins(MinimalPlugins.set(ScheduleRunnerPlugin::run_loop(Duration::from_millis(16))))
        .add_plugins(StorePlugin {
            base_url,
            persistence_path: std::env::temp_dir().join("coinslot-headless-example"),
            ..default()
        })
        .insert_resource(Shopping { sku, sent: false })
        .add_systems(Update, buy_when_ready.run_if(in_state(StoreStatus::Ready)))
        .add_systems(Update, report_outcome)
        .run()
}

fn buy_when_ready(
    mut shopping: ResMut<Shopping>,
    catalog: Res<Catalog>,
    store: StoreRequests,
    mut exit: MessageWriter<AppExit>,
) {
    if shopping.sent || catalog.catalog.is_none() {
        return;
    }
    let Some(offer) = catalog.offer_for(&shopping.sku) else {
        eprintln!("no offer sells `{}`", shopping.sku);
        exit.write(AppExit::error());
        return;
    };
    match store.purchase(offer.id, Quantity::one(), None) {
        Ok(request) => {
            println!("buying {} ({request:?})", shopping.sku);
            shopping.sent = true;
        }
        Err(busy) => eprintln!("{busy}; trying again next frame"),
    }
}

fn report_outcome(
    mut completed: MessageReader<PurchaseCompleted>,
    mut failed: MessageReader<PurchaseFailed>,
    mut errors: MessageReader<StoreError>,
    wallet: Res<Wallet>,
    mut exit: MessageWriter<AppExit>,
) {
    for purchase in completed.read() {
        println!("bought {} (receipt {} verified)", purchase.purchase.sku, purchase.receipt.receipt_id);
        for (currency, balance) in wallet.balances() {
            println!("  {currency}: {balance}");
        }
        exit.write(AppExit::Success);
    }
    for failure in failed.read() {
        eprintln!("the purchase failed: {}", failure.error.player_message());
        exit.write(AppExit::error());
    }
    for error in errors.read().filter(|error| error.request.is_none()) {
        eprintln!("store: {}", error.error.player_message());
    }
}
