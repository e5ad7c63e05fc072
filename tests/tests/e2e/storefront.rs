//! The egui storefront in a real window (under Xvfb in CI), against a real server: it renders
//! balances, items and the tab, and a screenshot of it is saved and checked not to be blank.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy::render::view::screenshot::{Screenshot, save_to_disk};
use bevy::winit::WinitPlugin;
use game_sdk::store_api::catalog::OfferId;
use game_sdk::store_api::ledger::Quantity;
use game_sdk::ui::{StoreUiPlugin, Storefront};
use game_sdk::{Catalog, DeviceIdSource, StorePlugin, StoreRequests, StoreStatus, Tab};
use reqwest::Method;
use serde_json::json;
use tests::{seed, send};

/// The longest the window test runs before it gives up.
const WINDOW_WAIT: Duration = Duration::from_secs(90);
/// Frames drawn after the store is ready before the screenshot, so egui has laid out.
const SETTLE_FRAMES: u32 = 20;

/// Where the window test is: the storefront, then its checkout form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Storefront,
    OpeningCheckout,
    Checkout,
}

#[derive(Resource)]
struct ScreenshotPlan {
    dir: PathBuf,
    started: Instant,
    step: Step,
    ready_frames: u32,
    requested: bool,
}

impl ScreenshotPlan {
    fn path(&self, step: Step) -> PathBuf {
        self.dir.join(if step == Step::Checkout { "storefront-checkout.png" } else { "storefront.png" })
    }
}

#[expect(clippy::too_many_arguments, reason = "a Bevy system names each resource it reads")]
fn screenshot_each_step(
    mut commands: Commands,
    mut plan: ResMut<ScreenshotPlan>,
    status: Res<State<StoreStatus>>,
    catalog: Res<Catalog>,
    tab: Res<Tab>,
    storefront: Res<Storefront>,
    store: StoreRequests,
    mut exit: MessageWriter<AppExit>,
) {
    if plan.started.elapsed() > WINDOW_WAIT {
        eprintln!("the storefront test timed out at {:?}", plan.step);
        exit.write(AppExit::error());
        return;
    }
    // Frames pass while icons load; the count restarts whenever the window is not yet whole.
    let shown = match plan.step {
        Step::Storefront => {
            *status.get() == StoreStatus::Ready && catalog.catalog.is_some() && tab.open().is_some()
        }
        Step::OpeningCheckout => {
            // The player presses a card-priced item: the checkout form opens for its order.
            if storefront.checkout.is_some() {
                plan.step = Step::Checkout;
                plan.ready_frames = 0;
                plan.requested = false;
            }
            return;
        }
        Step::Checkout => storefront.checkout.is_some(),
    };
    if !shown {
        return;
    }
    plan.ready_frames += 1;
    if plan.ready_frames == SETTLE_FRAMES && !plan.requested {
        plan.requested = true;
        commands.spawn(Screenshot::primary_window()).observe(save_to_disk(plan.path(plan.step)));
    }
    if plan.requested && std::fs::metadata(plan.path(plan.step)).is_ok_and(|meta| meta.len() > 0) {
        if plan.step == Step::Checkout {
            exit.write(AppExit::Success);
        } else {
            let gems = OfferId::parse(seed::GEMS_SMALL).expect("an offer id");
            if store.start_order(gems, Quantity::one(), None).is_ok() {
                plan.step = Step::OpeningCheckout;
            }
        }
    }
}

#[test]
fn the_storefront_renders_balances_items_and_the_tab_in_a_real_window() {
    if !tests::display_available() {
        return;
    }
    let (runtime, server) = tests::server_beside_a_window();
    // A player with gems and an extra life on the tab, so every part of the window has something.
    let (player_id, token) = runtime.block_on(server.login_player("storefront-window"));
    runtime.block_on(server.grant(&player_id, "gems", 120));
    let (status, body) = runtime.block_on(send(server.purchase(
        &token,
        "tab-life",
        &json!({ "offer_id": seed::EXTRA_LIFE, "price_index": 0 }),
    )));
    assert!(status.is_success(), "{body}");
    let (status, _) = runtime.block_on(send(server.player(&token, Method::GET, "/v1/tab")));
    assert!(status.is_success());

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let plan = ScreenshotPlan {
        dir: shots,
        started: Instant::now(),
        step: Step::Storefront,
        ready_frames: 0,
        requested: false,
    };
    let (storefront_png, checkout_png) = (plan.path(Step::Storefront), plan.path(Step::Checkout));
    let _ = std::fs::remove_file(&storefront_png);
    let _ = std::fs::remove_file(&checkout_png);
    let dir = tempfile::tempdir().expect("a temp dir");
    let exit = App::new()
        .add_plugins(
            DefaultPlugins
                .set(WinitPlugin { run_on_any_thread: true })
                // The repository's assets, where the catalog's item icons are.
                .set(AssetPlugin { file_path: tests::repository_assets().display().to_string(), ..default() })
                .set(WindowPlugin {
                    primary_window: Some(Window {
                        title: "Coinslot storefront test".into(),
                        resolution: (1024, 720).into(),
                        ..default()
                    }),
                    ..default()
                }),
        )
        .add_plugins(StorePlugin {
            base_url: server.base_url().to_owned(),
            device_id: DeviceIdSource::Fixed("storefront-window".to_owned()),
            persistence_path: dir.path().to_owned(),
            ..default()
        })
        .add_plugins(StoreUiPlugin::default())
        .insert_resource(plan)
        .add_systems(Startup, |mut commands: Commands| {
            commands.spawn(Camera2d);
        })
        .add_systems(Update, screenshot_each_step)
        .run();
    assert_eq!(exit, AppExit::Success, "the window test ended early");
    for png in [&storefront_png, &checkout_png] {
        let variance = tests::luminance_variance(png);
        assert!(variance > 100, "the screenshot {} is blank (variance {variance})", png.display());
        eprintln!("screenshot: {} (luminance variance {variance})", png.display());
    }
    let before = std::fs::read(&storefront_png).expect("the first screenshot");
    let after = std::fs::read(&checkout_png).expect("the second screenshot");
    assert_ne!(before, after, "the checkout form changed what the window shows");
    // Opening the window told the store which offers the player saw (price-sensitivity views).
    let views = runtime.block_on(server.count("select count(*) from store_view"));
    assert!(views >= 9, "every offer shown was reported: {views}");
    runtime.block_on(server.stop());
}
