//! A headless Bevy game (`MinimalPlugins` + `StorePlugin`) driven frame by frame, recording
//! every message the store writes, for tests against a real server.

use std::path::Path;
use std::time::{Duration, Instant};

use bevy::ecs::system::SystemState;
use bevy::prelude::*;
use game_sdk::{
    DeviceIdSource, InventoryUpdated, ItemConsumed, OrderUpdated, PaymentAttempted, PurchaseCompleted,
    PurchaseFailed, RewardClaimed, StoreError, StorePlugin, StoreRequests, StoreStatus, WalletUpdated,
};

/// How long a test waits for the game to see something before failing.
pub const GAME_WAIT: Duration = Duration::from_secs(30);

/// Every store message a game received, in order.
#[derive(Resource, Debug, Default)]
pub struct StoreLog {
    /// `PurchaseCompleted`.
    pub completed: Vec<PurchaseCompleted>,
    /// `PurchaseFailed`.
    pub failed: Vec<PurchaseFailed>,
    /// `OrderUpdated`.
    pub orders: Vec<OrderUpdated>,
    /// `RewardClaimed`.
    pub rewards: Vec<RewardClaimed>,
    /// `ItemConsumed`.
    pub consumed: Vec<ItemConsumed>,
    /// `PaymentAttempted`.
    pub payments: Vec<PaymentAttempted>,
    /// `StoreError`.
    pub errors: Vec<StoreError>,
    /// `WalletUpdated`.
    pub wallet_updates: Vec<WalletUpdated>,
    /// `InventoryUpdated`.
    pub inventory_updates: Vec<InventoryUpdated>,
    /// Each status the store entered.
    pub statuses: Vec<StoreStatus>,
}

#[expect(clippy::too_many_arguments, reason = "a Bevy system names each message it reads")]
fn record_store_messages(
    mut log: ResMut<StoreLog>,
    status: Res<State<StoreStatus>>,
    mut completed: MessageReader<PurchaseCompleted>,
    mut failed: MessageReader<PurchaseFailed>,
    mut orders: MessageReader<OrderUpdated>,
    mut rewards: MessageReader<RewardClaimed>,
    mut consumed: MessageReader<ItemConsumed>,
    mut payments: MessageReader<PaymentAttempted>,
    mut errors: MessageReader<StoreError>,
    mut wallet_updates: MessageReader<WalletUpdated>,
    mut inventory_updates: MessageReader<InventoryUpdated>,
) {
    log.completed.extend(completed.read().cloned());
    log.failed.extend(failed.read().cloned());
    log.orders.extend(orders.read().cloned());
    log.rewards.extend(rewards.read().cloned());
    log.consumed.extend(consumed.read().cloned());
    log.payments.extend(payments.read().cloned());
    log.errors.extend(errors.read().cloned());
    log.wallet_updates.extend(wallet_updates.read().cloned());
    log.inventory_updates.extend(inventory_updates.read().cloned());
    if status.is_changed() && log.statuses.last() != Some(status.get()) {
        log.statuses.push(*status.get());
    }
}

/// The store's status in a game's world.
#[must_use]
pub fn status(world: &World) -> StoreStatus {
    *world.resource::<State<StoreStatus>>().get()
}

/// The store messages a game's world has recorded.
#[must_use]
pub fn log(world: &World) -> &StoreLog {
    world.resource::<StoreLog>()
}

/// A headless game with the store plugin.
pub struct HeadlessGame {
    app: App,
}

impl std::fmt::Debug for HeadlessGame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadlessGame").finish_non_exhaustive()
    }
}

impl HeadlessGame {
    /// A game talking to `base_url` as `device_id`, keeping its records in `persistence`.
    #[must_use]
    pub fn start(base_url: &str, device_id: &str, persistence: &Path) -> Self {
        Self::start_with(StorePlugin {
            base_url: base_url.to_owned(),
            device_id: DeviceIdSource::Fixed(device_id.to_owned()),
            persistence_path: persistence.to_owned(),
            reconnect_backoff_max: Duration::from_millis(500),
            ..StorePlugin::default()
        })
    }

    /// A game with the plugin configured by the caller.
    #[must_use]
    pub fn start_with(plugin: StorePlugin) -> Self {
        let mut app = App::new();
        app.add_plugins(MinimalPlugins)
            .add_plugins(plugin)
            .init_resource::<StoreLog>()
            .add_systems(Update, record_store_messages);
        app.finish();
        app.cleanup();
        Self { app }
    }

    /// Runs one frame.
    pub fn update(&mut self) {
        self.app.update();
    }

    /// Runs frames until `done` holds, yielding to the runtime between frames.
    ///
    /// # Panics
    /// When it does not happen within [`GAME_WAIT`], naming `what`.
    pub async fn update_until(&mut self, what: &str, done: impl Fn(&World) -> bool) {
        let deadline = Instant::now() + GAME_WAIT;
        loop {
            self.app.update();
            if done(self.app.world()) {
                return;
            }
            assert!(Instant::now() < deadline, "the game never saw {what}; log: {:#?}", self.log());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Runs frames until the store is `Ready` with the catalog loaded.
    pub async fn until_ready(&mut self) {
        self.update_until("the store ready with its catalog", |world| {
            status(world) == StoreStatus::Ready && world.resource::<game_sdk::Catalog>().catalog.is_some()
        })
        .await;
    }

    /// The game's world.
    #[must_use]
    pub fn world(&self) -> &World {
        self.app.world()
    }

    /// A resource of the game's world.
    #[must_use]
    pub fn resource<R: Resource>(&self) -> &R {
        self.app.world().resource::<R>()
    }

    /// The messages received so far.
    #[must_use]
    pub fn log(&self) -> &StoreLog {
        self.resource::<StoreLog>()
    }

    /// Acts on the store as a system would, within one frame.
    pub fn requests<T>(&mut self, act: impl FnOnce(&StoreRequests) -> T) -> T {
        let world = self.app.world_mut();
        let mut state = SystemState::<StoreRequests>::new(world);
        let store = state.get(world).expect("the store's resources exist");
        act(&store)
    }
}
