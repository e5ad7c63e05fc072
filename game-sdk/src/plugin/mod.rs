//! The ECS half of the plugin: configuration, resources, messages, the status state, the
//! [`StoreRequests`] system parameter, and the one system that applies the worker's replies.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bevy::ecs::system::SystemParam;
use bevy::prelude::*;
use bevy::state::app::StatesPlugin;
use store_api::MoneyCurrency;
use store_api::auth::Session;
use store_api::catalog::{OfferId, Sku};
use store_api::currency::CurrencyCode;
use store_api::ledger::{
    Balance, ConsumeRequest, CurrencyAmount, Granted, InventoryItem, Purchase, PurchaseRequest, Quantity,
    RewardClaimRequest,
};
use store_api::orders::{CreateOrderRequest, Order, OrderStatus, PlatformProof, SettleTabRequest};
use store_api::receipt::ReceiptPayload;
use store_api::sandbox::PayStatus;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::client::{self, RetryPolicy};
use crate::events::StoreEvent;
use crate::storage::PendingRequest;
use crate::worker::{self, Command, DeviceIdSource, Link, Reply, ReplyBody, WorkerConfig};

pub mod messages;
pub mod resources;

pub use messages::*;
pub use resources::*;

/// Requests that may be in flight at once before [`StoreRequests`] answers [`StoreBusy`].
pub const IN_FLIGHT_MAX_DEFAULT: usize = 16;
/// Replies applied in one frame at most, so a burst of events cannot stretch a frame; the rest
/// wait for the next frame.
pub const REPLIES_PER_FRAME_MAX: usize = 256;
/// The longest wait between two attempts to reconnect.
pub const RECONNECT_BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(5);

/// Adds the store to an app: add it after `DefaultPlugins` or `MinimalPlugins`.
///
/// ```no_run
/// use bevy::prelude::*;
/// use game_sdk::StorePlugin;
///
/// App::new()
///     .add_plugins(MinimalPlugins)
///     .add_plugins(StorePlugin { base_url: "http://127.0.0.1:8080".into(), ..default() })
///     .run();
/// ```
#[derive(Debug, Clone)]
pub struct StorePlugin {
    /// The store server.
    pub base_url: String,
    /// Where the device id comes from.
    pub device_id: DeviceIdSource,
    /// The player's country (ISO 3166-1 alpha-2), for regional prices; the server's default
    /// applies when absent.
    pub country: Option<String>,
    /// The directory for the device id and the records of requests in flight.
    pub persistence_path: PathBuf,
    /// Requests in flight at once before new ones get [`StoreBusy`].
    pub in_flight_max: usize,
    /// Log in at start (and after every outage) without being asked.
    pub auto_login: bool,
    /// Retries of one HTTP request on transport failures.
    pub retry: RetryPolicy,
    /// The longest wait between two reconnection attempts.
    pub reconnect_backoff_max: Duration,
}

impl Default for StorePlugin {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8080".to_owned(),
            device_id: DeviceIdSource::Persisted,
            country: None,
            persistence_path: PathBuf::from("coinslot-store"),
            in_flight_max: IN_FLIGHT_MAX_DEFAULT,
            auto_login: true,
            retry: RetryPolicy::default(),
            reconnect_backoff_max: RECONNECT_BACKOFF_MAX_DEFAULT,
        }
    }
}

/// The plugin's configuration as it was built, for the game to read (which server, which
/// limits). Changing it after startup changes nothing.
#[derive(Resource, Debug, Clone)]
pub struct StoreSettings(pub StorePlugin);

/// The plugin's systems, for ordering a game's own systems around them.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreSystems {
    /// In `PreUpdate`: applies what the server said since the last frame to the resources,
    /// writes the messages, and moves [`StoreStatus`]. Systems in `Update` see it all.
    ApplyReplies,
}

/// The connection to the store.
#[derive(States, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StoreStatus {
    /// Not connected: before the first login, or while the server cannot be reached (the
    /// plugin keeps trying on its own).
    #[default]
    Offline,
    /// Logging in and loading.
    Connecting,
    /// Logged in, state loaded, live updates flowing.
    Ready,
}

/// The bridge to the worker thread: the command sender, the in-flight count, and the worker
/// itself (dropping the resource stops the I/O).
#[derive(Resource, Debug)]
struct StoreBridge {
    commands: mpsc::Sender<Command>,
    in_flight: Arc<AtomicUsize>,
    in_flight_max: usize,
    next_request: AtomicU64,
    /// The player consented to immediate delivery of what real money buys.
    delivery_consent: AtomicBool,
    _worker: worker::Worker,
}

/// The worker's replies, drained by [`apply_store_replies`].
#[derive(Resource, Debug)]
struct ReplyInbox(Mutex<mpsc::Receiver<Reply>>);

impl Plugin for StorePlugin {
    fn build(&self, app: &mut App) {
        let in_flight_max = self.in_flight_max.max(1);
        // Requests are admitted by the in-flight count, so they never fill this channel;
        // the headroom is for `Forget` notes.
        let (command_tx, command_rx) = mpsc::channel(in_flight_max.saturating_mul(2).saturating_add(16));
        let (reply_tx, reply_rx) = mpsc::channel(REPLIES_PER_FRAME_MAX);
        let config = WorkerConfig {
            base_url: self.base_url.clone(),
            device_id: self.device_id.clone(),
            country: self.country.clone(),
            persistence_path: self.persistence_path.clone(),
            auto_login: self.auto_login,
            retry: self.retry,
            reconnect_backoff_max: self.reconnect_backoff_max,
        };
        let worker = match worker::spawn(config, command_rx, reply_tx) {
            Ok(worker) => worker,
            Err(error) => {
                // Without its thread the store cannot work; the game still runs, offline.
                error!(%error, "the store's worker thread could not start");
                return;
            }
        };
        if !app.is_plugin_added::<StatesPlugin>() {
            app.add_plugins(StatesPlugin);
        }
        app.insert_resource(StoreSettings(self.clone()))
            .insert_resource(StoreBridge {
                commands: command_tx,
                in_flight: Arc::new(AtomicUsize::new(0)),
                in_flight_max,
                next_request: AtomicU64::new(1),
                delivery_consent: AtomicBool::new(false),
                _worker: worker,
            })
            .insert_resource(ReplyInbox(Mutex::new(reply_rx)))
            .init_resource::<StoreSession>()
            .init_resource::<Catalog>()
            .init_resource::<Wallet>()
            .init_resource::<Inventory>()
            .init_resource::<PendingOrders>()
            .init_resource::<Tab>()
            .init_state::<StoreStatus>()
            .add_message::<CatalogLoaded>()
            .add_message::<WalletUpdated>()
            .add_message::<InventoryUpdated>()
            .add_message::<PurchaseCompleted>()
            .add_message::<PurchaseFailed>()
            .add_message::<OrderUpdated>()
            .add_message::<RewardClaimed>()
            .add_message::<ItemConsumed>()
            .add_message::<PaymentAttempted>()
            .add_message::<StoreError>()
            .configure_sets(PreUpdate, StoreSystems::ApplyReplies)
            .add_systems(PreUpdate, apply_store_replies.in_set(StoreSystems::ApplyReplies));
    }
}

/// Acts on the store. Every call returns at once: a [`RequestId`] that the message ending the
/// request carries, or [`StoreBusy`] when `in_flight_max` requests are already in flight
/// (nothing is sent then, so nothing is lost).
///
/// Money-moving calls (`purchase`, `start_order`, `claim_reward`, `consume`, `settle_tab`)
/// are written to local storage with their idempotency key before they are sent, and resumed
/// after a crash or a lost connection.
#[derive(SystemParam)]
pub struct StoreRequests<'w> {
    bridge: Option<Res<'w, StoreBridge>>,
}

impl std::fmt::Debug for StoreRequests<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreRequests").field("in_flight", &self.in_flight()).finish()
    }
}

impl StoreRequests<'_> {
    /// Logs in (again). The plugin logs in by itself when `auto_login` is on.
    ///
    /// # Errors
    /// [`StoreBusy`].
    pub fn login(&self) -> Result<RequestId, StoreBusy> {
        self.submit(Command::Login)
    }

    /// Reloads the catalog, wallet, inventory, orders and tabs.
    ///
    /// # Errors
    /// [`StoreBusy`].
    pub fn refresh(&self) -> Result<RequestId, StoreBusy> {
        self.submit(Command::Refresh)
    }

    /// Records whether the player consented to immediate delivery of what real money buys,
    /// giving up the EU right of withdrawal for digital content: show the waiver in the game's
    /// store before the first real-money purchase, and call this with the player's answer. Every
    /// later order and tab purchase carries it (a store that requires it refuses them without it,
    /// `delivery_consent_required`), and their receipts record it.
    pub fn set_immediate_delivery_consent(&self, agreed: bool) {
        if let Some(bridge) = &self.bridge {
            bridge.delivery_consent.store(agreed, Ordering::Release);
        }
    }

    /// Whether the player consented to immediate delivery (see
    /// [`StoreRequests::set_immediate_delivery_consent`]).
    #[must_use]
    pub fn immediate_delivery_consent(&self) -> bool {
        self.bridge.as_ref().is_some_and(|bridge| bridge.delivery_consent.load(Ordering::Acquire))
    }

    /// Buys an offer with virtual currency or onto the tab, at the price `price_index` (the
    /// first price when `None`). Ends with [`PurchaseCompleted`] or [`PurchaseFailed`].
    ///
    /// # Errors
    /// [`StoreBusy`].
    pub fn purchase(
        &self,
        offer_id: OfferId,
        quantity: Quantity,
        price_index: Option<u32>,
    ) -> Result<RequestId, StoreBusy> {
        let immediate_delivery_consent = self.immediate_delivery_consent();
        self.send(PendingRequest::Purchase(PurchaseRequest {
            offer_id,
            quantity,
            price_index,
            immediate_delivery_consent,
        }))
    }

    /// Opens a real-money order for an offer. Ends with [`OrderUpdated`] (status
    /// `requires_payment`, with its `checkout_url`) or [`StoreError`].
    ///
    /// # Errors
    /// [`StoreBusy`].
    pub fn start_order(
        &self,
        offer_id: OfferId,
        quantity: Quantity,
        price_index: Option<u32>,
    ) -> Result<RequestId, StoreBusy> {
        self.open_order(offer_id, quantity, price_index, None)
    }

    /// Opens a real-money order paid in the Steam overlay, from the Steam wallet of the player
    /// logged in with [`DeviceIdSource::Steam`], in that wallet's currency. Steam shows the
    /// purchase in the overlay at once. Ends with [`OrderUpdated`] (status `requires_payment`,
    /// with Steam's `provider_order_id`) or [`StoreError`]; the overlay's answer goes to
    /// [`StoreRequests::report_steam_authorization`].
    ///
    /// # Errors
    /// [`StoreBusy`].
    pub fn start_steam_order(
        &self,
        offer_id: OfferId,
        quantity: Quantity,
        price_index: Option<u32>,
    ) -> Result<RequestId, StoreBusy> {
        self.open_order(offer_id, quantity, price_index, Some("steam".to_owned()))
    }

    fn open_order(
        &self,
        offer_id: OfferId,
        quantity: Quantity,
        price_index: Option<u32>,
        provider: Option<String>,
    ) -> Result<RequestId, StoreBusy> {
        let immediate_delivery_consent = self.immediate_delivery_consent();
        self.send(PendingRequest::Order(CreateOrderRequest {
            offer_id,
            quantity,
            price_index,
            provider,
            immediate_delivery_consent,
        }))
    }

    /// Redeems a purchase the player made in the platform's own store:
    /// [`PlatformProof::AppStore`] with the StoreKit 2 transaction's `jwsRepresentation` (start
    /// the purchase with `appAccountToken` set to the player's id), or
    /// [`PlatformProof::GooglePlay`] with the product id and `Purchase.getPurchaseToken()` (start
    /// it with `setObfuscatedAccountId(player id)`). The proof is kept on disk until the server
    /// answers, and sent again after a crash or an outage, however long it takes (a purchase is
    /// redeemed once). Ends with [`OrderUpdated`] (the order `fulfilled`, its receipt verified:
    /// now `finish()` the StoreKit transaction; the server consumes the Google Play purchase
    /// itself) or [`StoreError`] (`platform_proof_invalid`, `already_exists` when another player
    /// redeemed it, `order_state_conflict` for a Google Play purchase still pending).
    ///
    /// # Errors
    /// [`StoreBusy`].
    pub fn redeem_platform_purchase(&self, proof: PlatformProof) -> Result<RequestId, StoreBusy> {
        self.send(PendingRequest::RedeemPlatform(proof))
    }

    /// Reports the Steam overlay's `MicroTxnAuthorizationResponse_t` (its `m_ulOrderID` and
    /// `m_bAuthorized`) for a Steam order. The server asks Steam, finalizes an authorized
    /// transaction and fulfils the order. Ends with [`OrderUpdated`] (`fulfilled`, with its
    /// receipt verified, or `failed`) or [`StoreError`]. Nothing is lost if the game stops
    /// before the answer: the server asks Steam itself before the order expires. With the
    /// `steam` feature, [`crate::steam::SteamPurchasesPlugin`] calls this from the callback.
    ///
    /// # Errors
    /// [`StoreBusy`].
    pub fn report_steam_authorization(
        &self,
        steam_order_id: u64,
        authorized: bool,
    ) -> Result<RequestId, StoreBusy> {
        self.submit(|request| Command::SteamAuthorization { request, steam_order_id, authorized })
    }

    /// Pays an order with a sandbox test card (the in-game checkout form). Ends with
    /// [`PaymentAttempted`] or [`StoreError`]; the order's fulfilment follows as
    /// [`OrderUpdated`].
    ///
    /// # Errors
    /// [`StoreBusy`].
    pub fn pay_sandbox(&self, order_id: Uuid, card_number: &str) -> Result<RequestId, StoreBusy> {
        let card_number = card_number.to_owned();
        self.submit(|request| Command::PaySandbox { request, order_id, card_number })
    }

    /// Claims a reward rule (`coin`) for its amount, or for `amount` when the rule allows less.
    /// Ends with [`RewardClaimed`] or [`StoreError`].
    ///
    /// # Errors
    /// [`StoreBusy`].
    pub fn claim_reward(&self, rule: &str, amount: Option<i64>) -> Result<RequestId, StoreBusy> {
        self.send(PendingRequest::Reward { rule: rule.to_owned(), request: RewardClaimRequest { amount } })
    }

    /// Uses up some of a consumable item. Ends with [`ItemConsumed`] or [`StoreError`].
    ///
    /// # Errors
    /// [`StoreBusy`].
    pub fn consume(&self, sku: Sku, quantity: Quantity) -> Result<RequestId, StoreBusy> {
        self.send(PendingRequest::Consume { sku, request: ConsumeRequest { quantity } })
    }

    /// Settles the open tab (in `currency` when the player has several). Ends with
    /// [`OrderUpdated`] for the order that pays it, or [`StoreError`].
    ///
    /// # Errors
    /// [`StoreBusy`].
    pub fn settle_tab(&self, currency: Option<MoneyCurrency>) -> Result<RequestId, StoreBusy> {
        self.send(PendingRequest::SettleTab(SettleTabRequest { currency }))
    }

    /// Tells the store which offers the player was shown (the storefront does this when it
    /// opens), for the operators' price-sensitivity report. Ends quietly, or with
    /// [`StoreError`].
    ///
    /// # Errors
    /// [`StoreBusy`].
    pub fn store_viewed(&self, offer_ids: Vec<OfferId>) -> Result<RequestId, StoreBusy> {
        self.submit(|request| Command::StoreViewed { request, offer_ids })
    }

    /// Requests in flight now.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.bridge.as_ref().map_or(0, |bridge| bridge.in_flight.load(Ordering::Acquire))
    }

    fn send(&self, pending: PendingRequest) -> Result<RequestId, StoreBusy> {
        self.submit(|request| Command::Send { request, pending })
    }

    fn submit(&self, command: impl FnOnce(RequestId) -> Command) -> Result<RequestId, StoreBusy> {
        let Some(bridge) = &self.bridge else { return Err(StoreBusy { in_flight_max: 0 }) };
        let busy = StoreBusy { in_flight_max: bridge.in_flight_max };
        bridge
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < bridge.in_flight_max).then_some(count + 1)
            })
            .map_err(|_| busy)?;
        let request = RequestId(bridge.next_request.fetch_add(1, Ordering::Relaxed));
        if bridge.commands.try_send(command(request)).is_err() {
            // Only when the worker is gone; the slot is given back.
            bridge.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(busy);
        }
        Ok(request)
    }
}

/// The messages [`apply_store_replies`] writes.
#[derive(SystemParam)]
struct StoreWriters<'w> {
    catalog_loaded: MessageWriter<'w, CatalogLoaded>,
    wallet_updated: MessageWriter<'w, WalletUpdated>,
    inventory_updated: MessageWriter<'w, InventoryUpdated>,
    purchase_completed: MessageWriter<'w, PurchaseCompleted>,
    purchase_failed: MessageWriter<'w, PurchaseFailed>,
    order_updated: MessageWriter<'w, OrderUpdated>,
    reward_claimed: MessageWriter<'w, RewardClaimed>,
    item_consumed: MessageWriter<'w, ItemConsumed>,
    payment_attempted: MessageWriter<'w, PaymentAttempted>,
    store_error: MessageWriter<'w, StoreError>,
}

/// The resources [`apply_store_replies`] keeps current.
#[derive(SystemParam)]
struct StoreState<'w> {
    session: ResMut<'w, StoreSession>,
    catalog: ResMut<'w, Catalog>,
    wallet: ResMut<'w, Wallet>,
    inventory: ResMut<'w, Inventory>,
    orders: ResMut<'w, PendingOrders>,
    tab: ResMut<'w, Tab>,
    status: ResMut<'w, NextState<StoreStatus>>,
}

/// Applies what the worker heard since the last frame: never waits, at most
/// [`REPLIES_PER_FRAME_MAX`] replies per frame.
fn apply_store_replies(
    mut inbox: ResMut<ReplyInbox>,
    bridge: Option<Res<StoreBridge>>,
    mut state: StoreState,
    mut out: StoreWriters,
) {
    let Some(bridge) = bridge else { return };
    let receiver = inbox.0.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..REPLIES_PER_FRAME_MAX {
        let Ok(reply) = receiver.try_recv() else { break };
        if let Some((key, open)) = reply.body.recorded_key()
            && !open
        {
            // The outcome is known and about to be reported: the local record can go.
            if bridge.commands.try_send(Command::Forget(key.clone())).is_err() {
                warn!("could not forget a finished request; it will be answered again next start");
            }
        }
        if reply.request.is_some() {
            bridge.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        apply_reply(reply, &mut state, &mut out);
    }
}

fn apply_reply(reply: Reply, state: &mut StoreState, out: &mut StoreWriters) {
    let request = reply.request;
    match reply.body {
        ReplyBody::Link(link) => {
            let next: &mut NextState<StoreStatus> = &mut state.status;
            next.set_if_neq(match link {
                Link::Offline => StoreStatus::Offline,
                Link::Connecting => StoreStatus::Connecting,
                Link::Ready => StoreStatus::Ready,
            });
        }
        ReplyBody::LoggedIn(session) => {
            if state.session.player_id() != Some(session.player_id) {
                *state.wallet = Wallet::default();
                *state.inventory = Inventory::default();
                *state.orders = PendingOrders::default();
                *state.tab = Tab::default();
            }
            state.session.session = Some(session);
        }
        ReplyBody::Refreshed | ReplyBody::Viewed => {}
        ReplyBody::Catalog(catalog) => {
            out.catalog_loaded.write(CatalogLoaded { version: catalog.version });
            state.catalog.catalog = Some(*catalog);
        }
        ReplyBody::Wallet(wallet) => apply_balances(&wallet.balances, None, state, out),
        ReplyBody::Inventory(inventory) => {
            // A snapshot: items not in it are held zero times.
            let mut items = inventory.items;
            for sku in state.inventory.items.keys() {
                if !items.iter().any(|item| &item.sku == sku) {
                    items.push(InventoryItem { sku: sku.clone(), quantity: 0 });
                }
            }
            apply_items(&items, None, state, out);
        }
        ReplyBody::OpenOrders(orders) => {
            state.orders.orders = orders.into_iter().map(|order| (order.id, order)).collect();
        }
        ReplyBody::VerifiedOrder(order) => apply_order(None, *order, state, out),
        ReplyBody::Tabs(tabs) => state.tab.tabs = tabs.tabs,
        ReplyBody::Event(event) => apply_event(event, state, out),
        ReplyBody::Purchase { offer_id, resumed, outcome, .. } => match outcome {
            Ok(verified) => {
                let entry = Some(verified.receipt.entry_id);
                apply_balances(&verified.result.wallet.balances, entry, state, out);
                apply_items(&verified.result.inventory.items, entry, state, out);
                out.purchase_completed.write(PurchaseCompleted {
                    request,
                    purchase: verified.result.purchase,
                    granted: verified.result.granted,
                    receipt: verified.receipt,
                    resumed,
                });
            }
            Err(error) => {
                out.purchase_failed.write(PurchaseFailed { request, offer_id, error: error.clone() });
                out.store_error.write(StoreError { request, error });
            }
        },
        ReplyBody::Order { outcome, .. } => match outcome {
            Ok(order) => apply_order(request, *order, state, out),
            Err(error) => {
                out.store_error.write(StoreError { request, error });
            }
        },
        ReplyBody::Reward { outcome, .. } => match outcome {
            Ok(verified) => {
                apply_balances(&verified.result.wallet.balances, Some(verified.receipt.entry_id), state, out);
                out.reward_claimed.write(RewardClaimed {
                    request,
                    rule: verified.result.rule.to_string(),
                    earned: verified.result.earned,
                    receipt: verified.receipt,
                });
            }
            Err(error) => {
                out.store_error.write(StoreError { request, error });
            }
        },
        ReplyBody::Consume { outcome, .. } => match outcome {
            Ok(consumed) => {
                let item = InventoryItem { sku: consumed.sku.clone(), quantity: consumed.remaining };
                apply_items(&[item], Some(consumed.entry_id), state, out);
                out.item_consumed.write(ItemConsumed {
                    request,
                    sku: consumed.sku,
                    consumed: consumed.consumed,
                    remaining: consumed.remaining,
                });
            }
            Err(error) => {
                out.store_error.write(StoreError { request, error });
            }
        },
        ReplyBody::Paid { order_id, outcome } => match (outcome, request) {
            (Ok(paid), Some(request)) => {
                out.payment_attempted.write(PaymentAttempted { request, order_id, status: paid.status });
            }
            (Ok(_), None) => {}
            (Err(error), _) => {
                out.store_error.write(StoreError { request, error });
            }
        },
        ReplyBody::SteamAuthorized(outcome) => match outcome {
            Ok(order) => apply_order(request, *order, state, out),
            Err(error) => {
                out.store_error.write(StoreError { request, error });
            }
        },
        ReplyBody::NotSent(error) | ReplyBody::Error(error) => {
            out.store_error.write(StoreError { request, error });
        }
    }
}

fn apply_event(event: StoreEvent, state: &mut StoreState, out: &mut StoreWriters) {
    match event {
        StoreEvent::WalletUpdated(update) => {
            let balances: Vec<Balance> = update
                .changes
                .iter()
                .map(|change| Balance { currency: change.currency.clone(), balance: change.balance_after })
                .collect();
            apply_balances(&balances, Some(update.entry_id), state, out);
        }
        StoreEvent::InventoryUpdated(update) => {
            let items: Vec<InventoryItem> = update
                .items
                .iter()
                .map(|change| InventoryItem { sku: change.sku.clone(), quantity: change.quantity_after })
                .collect();
            apply_items(&items, Some(update.entry_id), state, out);
        }
        StoreEvent::OrderUpdated(order) => apply_order(None, *order, state, out),
        StoreEvent::Unknown(_) => {}
    }
}

fn apply_balances(balances: &[Balance], entry: Option<Uuid>, state: &mut StoreState, out: &mut StoreWriters) {
    let changed: Vec<Balance> = balances
        .iter()
        .filter(|balance| state.wallet.apply(&balance.currency, balance.balance, entry))
        .cloned()
        .collect();
    if !changed.is_empty() {
        out.wallet_updated.write(WalletUpdated { balances: changed });
    }
}

fn apply_items(items: &[InventoryItem], entry: Option<Uuid>, state: &mut StoreState, out: &mut StoreWriters) {
    let changed: Vec<InventoryItem> =
        items.iter().filter(|item| state.inventory.apply(&item.sku, item.quantity, entry)).cloned().collect();
    if !changed.is_empty() {
        out.inventory_updated.write(InventoryUpdated { items: changed });
    }
}

fn apply_order(request: Option<RequestId>, order: Order, state: &mut StoreState, out: &mut StoreWriters) {
    let known = state.orders.orders.get(&order.id);
    // An order's news can arrive twice (the event, then the verified copy with its receipt);
    // a copy that says nothing new is not announced again, and a finished order stays finished.
    if request.is_none()
        && let Some(known) = known
        && known.status == order.status
        && (known.receipt.is_some() || order.receipt.is_none())
    {
        return;
    }
    let open = order.status.is_open();
    let fulfilled_without_receipt = order.status == OrderStatus::Fulfilled && order.receipt.is_none();
    if open || fulfilled_without_receipt {
        // A fulfilled order is announced once its receipt has been fetched and verified.
        state.orders.orders.insert(order.id, order.clone());
        if fulfilled_without_receipt {
            return;
        }
    } else {
        state.orders.orders.remove(&order.id);
    }
    out.order_updated.write(OrderUpdated { request, order });
}
