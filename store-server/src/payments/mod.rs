//! Real money: everything a payment provider takes part in.
//!
//! Owns the [`provider::PaymentProvider`] trait and each provider ([`sandbox`], [`stripe`],
//! [`steam`]),
//! orders and their state machine, fulfilment checked against what was paid, refunds,
//! disputes and clawback ([`orders`]), reconciliation with each provider ([`reconcile`]), fee
//! schedules ([`fees`]), running tabs and their settlement ([`tabs`]) and creators' shares and
//! payouts ([`revenue_share`]).
//!
//! Uses [`crate::ledger`] to book every movement and [`crate::store`] for what an order grants.
//! Every money movement a provider confirms is booked here, once.

pub mod fees;
pub mod orders;
pub mod platform;
pub mod provider;
pub mod reconcile;
pub mod revenue_share;
pub mod sandbox;
pub mod steam;
pub mod stripe;
pub mod tabs;

use std::sync::Arc;

use crate::db::Db;
use crate::ledger::group_commit::Batcher;
use crate::settings::Settings;
use crate::store::catalog::CatalogCache;
use provider::PaymentProvider;

/// What the payment code needs from the running server, and nothing more: the writer (and its
/// database), the live catalog an order grants from, the configured providers and the settings
/// it reads (order lifetime, spending limits, velocity, fees). Cheap to clone: every part is
/// shared.
#[derive(Debug, Clone)]
pub struct Payments {
    writer: Batcher,
    catalog: Arc<CatalogCache>,
    providers: Arc<[Arc<dyn PaymentProvider>]>,
    settings: Arc<Settings>,
}

impl Payments {
    /// The payment handle over these parts; the first provider is where new orders are paid.
    #[must_use]
    pub fn new(
        writer: Batcher,
        catalog: Arc<CatalogCache>,
        providers: Vec<Arc<dyn PaymentProvider>>,
        settings: Arc<Settings>,
    ) -> Self {
        Self { writer, catalog, providers: providers.into(), settings }
    }

    /// The database.
    #[must_use]
    pub fn db(&self) -> &Db {
        self.writer.db()
    }

    /// The batch writer money-moving requests run through.
    #[must_use]
    pub fn writer(&self) -> &Batcher {
        &self.writer
    }

    /// The live catalog.
    #[must_use]
    pub fn catalog_cache(&self) -> &Arc<CatalogCache> {
        &self.catalog
    }

    /// The settings the server started with.
    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The payment provider named `name`.
    #[must_use]
    pub fn provider(&self, name: &str) -> Option<&dyn PaymentProvider> {
        self.providers.iter().find(|provider| provider.name() == name).map(|provider| &**provider)
    }

    /// Every configured provider.
    pub fn providers(&self) -> impl Iterator<Item = &dyn PaymentProvider> {
        self.providers.iter().map(|provider| &**provider)
    }

    /// The provider new orders are paid through.
    #[must_use]
    pub fn default_provider(&self) -> Option<&dyn PaymentProvider> {
        self.providers.iter().find(|provider| !provider.needs_platform_login()).map(|provider| &**provider)
    }
}
