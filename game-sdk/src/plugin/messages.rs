//! The messages the plugin sends when the server answers or announces something.

use super::*;

/// The catalog was (re)loaded.
#[derive(Message, Debug, Clone, PartialEq)]
pub struct CatalogLoaded {
    /// Its published version.
    pub version: i64,
}

/// Balances changed; [`Wallet`] already holds them.
#[derive(Message, Debug, Clone, PartialEq)]
pub struct WalletUpdated {
    /// The balances that changed, with their new amounts.
    pub balances: Vec<Balance>,
}

/// Items held changed; [`Inventory`] already holds them.
#[derive(Message, Debug, Clone, PartialEq)]
pub struct InventoryUpdated {
    /// The items that changed, with their new quantities.
    pub items: Vec<InventoryItem>,
}

/// A purchase completed and its receipt verified.
#[derive(Message, Debug, Clone, PartialEq)]
pub struct PurchaseCompleted {
    /// The request, or `None` for a purchase resumed from an earlier run.
    pub request: Option<RequestId>,
    /// What was bought and what it cost.
    pub purchase: Purchase,
    /// What the player received.
    pub granted: Granted,
    /// The verified receipt.
    pub receipt: ReceiptPayload,
    /// Whether this purchase was left in flight by an earlier run (or a lost connection) and
    /// finished now.
    pub resumed: bool,
}

/// A purchase did not happen.
#[derive(Message, Debug, Clone, PartialEq)]
pub struct PurchaseFailed {
    /// The request, or `None` for a resumed purchase.
    pub request: Option<RequestId>,
    /// The offer.
    pub offer_id: OfferId,
    /// Why. When [`client::StoreError::leaves_request_open`] is true the server may not have
    /// seen it: the plugin sends it again (same key) once the store is back.
    pub error: client::StoreError,
}

/// An order was created, or moved to a new state.
#[derive(Message, Debug, Clone, PartialEq)]
pub struct OrderUpdated {
    /// The request that created it (`start_order`, `settle_tab`), or `None` for news from the
    /// server.
    pub request: Option<RequestId>,
    /// The order as it is now; once fulfilled, with its verified receipt.
    pub order: Order,
}

/// A reward was credited and its receipt verified.
#[derive(Message, Debug, Clone, PartialEq)]
pub struct RewardClaimed {
    /// The request, or `None` for a resumed claim.
    pub request: Option<RequestId>,
    /// The rule's code.
    pub rule: String,
    /// What was credited.
    pub earned: CurrencyAmount,
    /// The verified receipt.
    pub receipt: ReceiptPayload,
}

/// Some of a consumable item was used up.
#[derive(Message, Debug, Clone, PartialEq)]
pub struct ItemConsumed {
    /// The request, or `None` for a resumed one.
    pub request: Option<RequestId>,
    /// The item.
    pub sku: Sku,
    /// How many were used.
    pub consumed: i64,
    /// How many are left.
    pub remaining: i64,
}

/// A sandbox card payment was tried (the in-game checkout). Success means the card was
/// charged; the order is fulfilled when the server hears from the provider ([`OrderUpdated`]).
#[derive(Message, Debug, Clone, PartialEq)]
pub struct PaymentAttempted {
    /// The request.
    pub request: RequestId,
    /// The order paid.
    pub order_id: Uuid,
    /// What the card did.
    pub status: PayStatus,
}

/// Something failed: a request's failure (also reported by its own failure message where it
/// has one), or the store going away (`request: None`).
#[derive(Message, Debug, Clone, PartialEq)]
pub struct StoreError {
    /// The request it ends, if any.
    pub request: Option<RequestId>,
    /// What went wrong; [`client::StoreError::player_message`] says it in plain words.
    pub error: client::StoreError,
}
