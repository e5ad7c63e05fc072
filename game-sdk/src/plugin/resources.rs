//! The ECS resources the plugin keeps current: the session, the catalog, the wallet, the
//! inventory, pending orders and the tab.

use super::*;

/// Identifies a request made through [`StoreRequests`]; the message that ends it carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Too many requests are in flight; nothing was sent, nothing was lost. Try again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the store is busy: {in_flight_max} requests are already in flight")]
pub struct StoreBusy {
    /// The limit that was reached.
    pub in_flight_max: usize,
}

/// The logged-in player.
#[derive(Resource, Debug, Clone, Default, PartialEq)]
pub struct StoreSession {
    /// The session, once logged in.
    pub session: Option<Session>,
}

impl StoreSession {
    /// The player's id, once logged in.
    #[must_use]
    pub fn player_id(&self) -> Option<Uuid> {
        self.session.as_ref().map(|session| session.player_id)
    }
}

/// The catalog as this player sees it (their region's prices, their price variant).
#[derive(Resource, Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    /// The catalog, once loaded.
    pub catalog: Option<store_api::catalog::Catalog>,
}

impl Catalog {
    /// An item by sku.
    #[must_use]
    pub fn item(&self, sku: &str) -> Option<&store_api::catalog::Item> {
        self.catalog.as_ref()?.items.iter().find(|item| item.sku.as_str() == sku)
    }

    /// The offers, in catalog order.
    #[must_use]
    pub fn offers(&self) -> &[store_api::catalog::Offer] {
        self.catalog.as_ref().map_or(&[], |catalog| &catalog.offers)
    }

    /// The first offer that sells `sku`.
    #[must_use]
    pub fn offer_for(&self, sku: &str) -> Option<&store_api::catalog::Offer> {
        self.offers().iter().find(|offer| offer.sku.as_str() == sku)
    }
}

/// The player's balances. Each balance is the newest the plugin has heard of: from a reply, a
/// refresh or the event stream.
#[derive(Resource, Debug, Clone, Default, PartialEq)]
pub struct Wallet {
    pub(super) balances: BTreeMap<CurrencyCode, i64>,
    /// The ledger entry each balance is as of, so an older answer never overwrites a newer one.
    pub(super) as_of: BTreeMap<CurrencyCode, Uuid>,
}

impl Wallet {
    /// A currency's balance; 0 when the player has none.
    #[must_use]
    pub fn balance(&self, currency: &str) -> i64 {
        self.balances.iter().find(|(code, _)| code.as_str() == currency).map_or(0, |(_, amount)| *amount)
    }

    /// Every balance, by currency code.
    pub fn balances(&self) -> impl Iterator<Item = (&CurrencyCode, i64)> {
        self.balances.iter().map(|(code, amount)| (code, *amount))
    }

    pub(super) fn apply(&mut self, currency: &CurrencyCode, balance: i64, entry: Option<Uuid>) -> bool {
        if let (Some(entry), Some(seen)) = (entry, self.as_of.get(currency))
            && entry < *seen
        {
            return false;
        }
        if let Some(entry) = entry {
            self.as_of.insert(currency.clone(), entry);
        }
        self.balances.insert(currency.clone(), balance) != Some(balance)
    }
}

/// The items the player holds.
#[derive(Resource, Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    pub(super) items: BTreeMap<Sku, i64>,
    pub(super) as_of: BTreeMap<Sku, Uuid>,
}

impl Inventory {
    /// How many of an item the player holds.
    #[must_use]
    pub fn quantity(&self, sku: &str) -> i64 {
        self.items.iter().find(|(held, _)| held.as_str() == sku).map_or(0, |(_, quantity)| *quantity)
    }

    /// Every item held, by sku.
    pub fn items(&self) -> impl Iterator<Item = (&Sku, i64)> {
        self.items.iter().filter(|(_, quantity)| **quantity > 0).map(|(sku, quantity)| (sku, *quantity))
    }

    pub(super) fn apply(&mut self, sku: &Sku, quantity: i64, entry: Option<Uuid>) -> bool {
        if let (Some(entry), Some(seen)) = (entry, self.as_of.get(sku))
            && entry < *seen
        {
            return false;
        }
        if let Some(entry) = entry {
            self.as_of.insert(sku.clone(), entry);
        }
        self.items.insert(sku.clone(), quantity) != Some(quantity)
    }
}

/// Real-money orders not yet finished: waiting for payment, processing, or paid and about to be
/// fulfilled. Finished orders leave this resource and are announced by [`OrderUpdated`].
#[derive(Resource, Debug, Clone, Default, PartialEq)]
pub struct PendingOrders {
    /// By order id.
    pub orders: BTreeMap<Uuid, Order>,
}

/// The player's running tabs (tab-priced items, settled later in one card payment).
#[derive(Resource, Debug, Clone, Default, PartialEq)]
pub struct Tab {
    /// One per money currency the player has bought in on a tab.
    pub tabs: Vec<store_api::orders::Tab>,
}

impl Tab {
    /// The tab in a money currency, if one is open.
    #[must_use]
    pub fn open(&self) -> Option<&store_api::orders::Tab> {
        self.tabs.first()
    }
}
