//! Coinslot for Bevy games.
//!
//! Two layers:
//! - [`client::StoreClient`], a Bevy-free async client for every player route (reqwest on
//!   tokio, `store-api` types, typed errors, retries for transport failures, verified receipts);
//!   plain Rust programs use it directly.
//! - [`StorePlugin`], which runs that client on its own thread and bridges it into the ECS:
//!   resources for the current truth ([`Wallet`], [`Inventory`], [`Catalog`]…), messages for
//!   facts ([`PurchaseCompleted`], [`OrderUpdated`]…), the [`StoreStatus`] state, and the
//!   [`StoreRequests`] system parameter to act. Nothing in a frame waits for the network.
//!
//! With the `egui` feature, [`ui::StoreUiPlugin`] adds a ready storefront window. With the
//! `steam` feature, `steam::SteamPurchasesPlugin` and `steam::ticket_source` wire the Steam
//! client (the `steamworks` crate) to Steam logins and purchases.

pub mod client;
pub mod events;
mod plugin;
#[cfg(feature = "steam")]
pub mod steam;
pub mod storage;
#[cfg(feature = "egui")]
pub mod ui;
mod worker;

pub use plugin::{
    Catalog, CatalogLoaded, IN_FLIGHT_MAX_DEFAULT, Inventory, InventoryUpdated, ItemConsumed, OrderUpdated,
    PaymentAttempted, PendingOrders, PurchaseCompleted, PurchaseFailed, RequestId, RewardClaimed, StoreBusy,
    StoreError, StorePlugin, StoreRequests, StoreSession, StoreSettings, StoreStatus, StoreSystems, Tab,
    Wallet, WalletUpdated,
};
pub use worker::{DeviceIdSource, SteamTickets, TicketFuture};

/// The crate README's quick start, compiled as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeQuickStart;

/// Re-exported so games name prices, offers and orders without a direct dependency.
pub use store_api;
