//! `cargo run -p demo-game`: plays against the server at `--server` (default
//! `http://127.0.0.1:8080`), or starts one inside the game when none answers.

use std::path::PathBuf;
use std::process::ExitCode;

use bevy::prelude::*;
use clap::Parser;
use demo_game::autoplay::AutoplayPlugin;
use demo_game::embedded::{self, EmbeddedServer};
use demo_game::look::LookPlugin;
use demo_game::play::PlayPlugin;
use demo_game::shop::ShopPlugin;
use game_sdk::StorePlugin;
use game_sdk::ui::StoreUiPlugin;

/// Coin Catcher: Coinslot's demo game.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Options {
    /// The store server; when none answers there, one starts inside the game.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Where the embedded server's database and the store's local records live.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The assets folder (art, icons, the default catalog); the repository's by default.
    #[arg(long, env = "COINSLOT_ASSETS")]
    assets: Option<PathBuf>,
    /// The player's country (ISO 3166-1 alpha-2), for regional prices.
    #[arg(long)]
    country: Option<String>,
    /// Play the whole loop unattended; exit 0 only if every step succeeded.
    #[arg(long)]
    autoplay: bool,
    /// With --autoplay, save a screenshot of each step into this folder.
    #[arg(long, value_name = "DIR")]
    screenshot: Option<PathBuf>,
    /// Log in with the running Steam client as this App ID's player and pay real money in the
    /// Steam overlay (the server at --server needs Steam configured; see
    /// docs/payment-providers.md).
    #[cfg(feature = "steam")]
    #[arg(long, value_name = "APP_ID")]
    steam: Option<u32>,
}

fn main() -> ExitCode {
    let options = Options::parse();
    let assets = options.assets.clone().unwrap_or_else(demo_game::default_assets);
    let data_dir = options.data_dir.clone().unwrap_or_else(demo_game::default_data_dir);
    // Kept alive until the game ends; dropping it stops the embedded server.
    let mut embedded_server: Option<EmbeddedServer> = None;
    let base_url = if embedded::answers(&options.server) {
        options.server.clone()
    } else {
        match EmbeddedServer::start(&data_dir.join("server"), &assets) {
            Ok(server) => {
                eprintln!(
                    "No store server answered at {}; started one inside the game at {} (data in {}).",
                    options.server,
                    server.base_url(),
                    data_dir.display()
                );
                let url = server.base_url().to_owned();
                embedded_server = Some(server);
                url
            }
            Err(error) => {
                eprintln!(
                    "No store server answered at {}, and one could not be started: {error}",
                    options.server
                );
                return ExitCode::FAILURE;
            }
        }
    };
    let store = StorePlugin {
        base_url,
        persistence_path: data_dir.join("sdk"),
        country: options.country.clone(),
        ..default()
    };
    let storefront = StoreUiPlugin { open_on_start: false, pay_with_steam: false };
    #[cfg(feature = "steam")]
    let (store, storefront, steam) = match with_steam(options.steam, store, storefront) {
        Ok(configured) => configured,
        Err(error) => {
            eprintln!("The Steam client could not be reached (is Steam running and logged in?): {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut app = App::new();
    app.add_plugins(
        DefaultPlugins
            .set(WindowPlugin {
                primary_window: Some(Window {
                    title: "Coin Catcher · a Coinslot demo".into(),
                    resolution: demo_game::look::WINDOW_SIZE.into(),
                    ..default()
                }),
                ..default()
            })
            .set(AssetPlugin { file_path: assets.display().to_string(), ..default() }),
    )
    .add_plugins(store)
    .add_plugins(storefront)
    .add_plugins((PlayPlugin, ShopPlugin, LookPlugin));
    #[cfg(feature = "steam")]
    if let Some(client) = steam {
        app.add_plugins(game_sdk::steam::SteamPurchasesPlugin { client });
    }
    if options.autoplay {
        app.add_plugins(AutoplayPlugin { shots: options.screenshot.clone() });
    }
    let exit = app.run();
    drop(app);
    drop(embedded_server);
    match exit {
        AppExit::Success => ExitCode::SUCCESS,
        AppExit::Error(_) => ExitCode::FAILURE,
    }
}

/// With `--steam APP_ID`: the player is the Steam client's account, and real money is paid in
/// the Steam overlay, whose answers [`game_sdk::steam::SteamPurchasesPlugin`] reports.
#[cfg(feature = "steam")]
fn with_steam(
    app_id: Option<u32>,
    mut store: StorePlugin,
    mut storefront: StoreUiPlugin,
) -> Result<(StorePlugin, StoreUiPlugin, Option<steamworks::Client>), steamworks::SteamAPIInitError> {
    let Some(app_id) = app_id else { return Ok((store, storefront, None)) };
    let client = steamworks::Client::init_app(app_id)?;
    store.device_id = game_sdk::DeviceIdSource::Steam(game_sdk::steam::ticket_source(client.clone()));
    storefront.pay_with_steam = true;
    Ok((store, storefront, Some(client)))
}
