//! What `StorePlugin` costs a frame: `app.update()` of a headless app with the plugin, against a
//! real store server on loopback, compared with the same app without the plugin, measured in the
//! same run. Scenarios: connected and idle; 16 purchases in flight (their answers held back by a
//! proxy, so the plugin waits on them); and the frames that apply 16 answers at once.
//!
//! `cargo bench -p tests --bench sdk_frame_cost` prints a table of mean and worst frame times
//! and their ratio to the baseline. Timings on a shared machine wander; the ratios, measured
//! side by side, are the figures to read. The store app also runs the test harness's message
//! recorder (one small system), which the baseline does not.

use std::time::{Duration, Instant};

use bevy::prelude::*;
use game_sdk::store_api::catalog::OfferId;
use game_sdk::store_api::ledger::Quantity;
use tests::game::{HeadlessGame, log};
use tests::proxy::{Mode, Proxy};
use tests::seed;

/// Frames measured per scenario.
const FRAMES: u32 = 2_000;

#[derive(Debug, Clone, Copy)]
struct FrameTimes {
    mean: Duration,
    worst: Duration,
}

fn measure(mut frame: impl FnMut()) -> FrameTimes {
    // Warm up caches and allocations first.
    for _ in 0..50 {
        frame();
    }
    let mut total = Duration::ZERO;
    let mut worst = Duration::ZERO;
    for _ in 0..FRAMES {
        let started = Instant::now();
        frame();
        let took = started.elapsed();
        total += took;
        worst = worst.max(took);
    }
    FrameTimes { mean: total / FRAMES, worst }
}

fn ratio(value: Duration, baseline: Duration) -> String {
    let base = baseline.as_nanos().max(1);
    let scaled = value.as_nanos() * 100 / base;
    format!("{}.{:02}x", scaled / 100, scaled % 100)
}

fn main() {
    let (runtime, server) = tests::server_beside_a_window();
    let proxy = runtime.block_on(Proxy::start(server.base_url()));
    let (player_id, _) = runtime.block_on(server.login_player("bench-frames"));
    runtime.block_on(server.grant(&player_id, "gold", 1_000_000));
    let dir = tempfile::tempdir().expect("a temp dir");

    // The baseline: the same app without the store.
    let mut bare = App::new();
    bare.add_plugins(MinimalPlugins);
    bare.finish();
    bare.cleanup();
    let baseline = measure(|| bare.update());

    let mut game = HeadlessGame::start(&proxy.base_url(), "bench-frames", dir.path());
    runtime.block_on(game.until_ready());
    let idle = measure(|| game.update());

    // 16 purchases sent, their answers held: the plugin has 16 requests in flight every frame.
    proxy.set_mode(Mode::HoldResponses);
    let magnet = OfferId::parse(seed::MAGNET).expect("an offer id");
    let accepted = game
        .requests(|store| (0..16).filter(|_| store.purchase(magnet, Quantity::one(), None).is_ok()).count());
    assert_eq!(accepted, 16, "16 requests in flight");
    let in_flight = measure(|| game.update());
    assert_eq!(game.requests(|store| store.in_flight()), 16, "still in flight while measured");

    // Let the answers through: the frames that apply them.
    proxy.drop_connections();
    proxy.set_mode(Mode::Pass);
    let started = Instant::now();
    let mut applying = FrameTimes { mean: Duration::ZERO, worst: Duration::ZERO };
    let mut frames = 0_u32;
    let mut total = Duration::ZERO;
    while log(game.world()).completed.len() < 16 {
        assert!(started.elapsed() < Duration::from_secs(60), "the purchases never completed");
        let frame = Instant::now();
        game.update();
        let took = frame.elapsed();
        total += took;
        frames += 1;
        applying.worst = applying.worst.max(took);
        std::thread::sleep(Duration::from_millis(1));
    }
    applying.mean = total / frames.max(1);

    println!("StorePlugin frame cost, {FRAMES} frames per scenario (headless, MinimalPlugins)");
    println!("{:<44} {:>12} {:>10} {:>12} {:>10}", "scenario", "mean", "ratio", "worst", "ratio");
    for (name, times) in [
        ("baseline: MinimalPlugins, no store", baseline),
        ("StorePlugin, connected, idle", idle),
        ("StorePlugin, 16 requests in flight", in_flight),
        (&*format!("StorePlugin, applying 16 answers ({frames} frames)"), applying),
    ] {
        println!(
            "{:<44} {:>12?} {:>10} {:>12?} {:>10}",
            name,
            times.mean,
            ratio(times.mean, baseline.mean),
            times.worst,
            ratio(times.worst, baseline.worst)
        );
    }
    drop(game);
    drop(proxy);
    runtime.block_on(server.stop());
}
