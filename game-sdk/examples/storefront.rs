//! The storefront window in a plain Bevy app: balances, items, buy buttons, the tab, and the
//! in-game sandbox checkout.
//!
//! Start a server first (`cargo run -p store-server`), then:
//! `cargo run -p game-sdk --features egui --example storefront -- http://127.0.0.1:8080`

use bevy::prelude::*;
use game_sdk::StorePlugin;
use game_sdk::ui::StoreUiPlugin;

fn main() -> AppExit {
    let base_url = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    App::new()
        .add_plugins(DefaultPlugins.set(WindowPlugin {
            primary_window: Some(Window { title: "Coinslot storefront".into(), ..default() }),
            ..default()
        }))
        .add_plugins(StorePlugin {
            base_url,
            persistence_path: std::env::temp_dir().join("coinslot-storefront-example"),
            ..default()
        })
        .add_plugins(StoreUiPlugin::default())
        .add_systems(Startup, |mut commands: Commands| {
            commands.spawn(Camera2d);
        })
        .run()
}
