//! Real-money orders and refunds, and the events a player's stream carries.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::catalog::{OfferId, Sku};
use crate::ledger::{BalanceChange, ItemChange, Quantity, Reason};
use crate::money::Money;
use crate::receipt::SignedReceipt;

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Waiting for the player to pay at `checkout_url`.
    RequiresPayment,
    /// The provider is processing the payment.
    Processing,
    /// Paid; fulfilment follows in the same transaction.
    Paid,
    /// Paid and granted.
    Fulfilled,
    /// The payment failed (declined, insufficient funds).
    Failed,
    /// Not paid in time.
    Expired,
    /// Canceled before payment.
    Canceled,
    /// Fully refunded; the grant was clawed back.
    Refunded,
    /// Partly refunded.
    PartiallyRefunded,
    /// The payment is disputed.
    Disputed,
    /// The dispute was lost; the money and the grant were taken back.
    ChargedBack,
}

impl OrderStatus {
    /// Every status.
    pub const ALL: [Self; 11] = [
        Self::RequiresPayment,
        Self::Processing,
        Self::Paid,
        Self::Fulfilled,
        Self::Failed,
        Self::Expired,
        Self::Canceled,
        Self::Refunded,
        Self::PartiallyRefunded,
        Self::Disputed,
        Self::ChargedBack,
    ];

    /// The status as stored and on the wire.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequiresPayment => "requires_payment",
            Self::Processing => "processing",
            Self::Paid => "paid",
            Self::Fulfilled => "fulfilled",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Canceled => "canceled",
            Self::Refunded => "refunded",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Disputed => "disputed",
            Self::ChargedBack => "charged_back",
        }
    }

    /// Whether the order is still on its way to being fulfilled (waiting for payment,
    /// processing, or paid and about to be fulfilled).
    #[must_use]
    pub fn is_open(self) -> bool {
        matches!(self, Self::RequiresPayment | Self::Processing | Self::Paid)
    }

    /// Parses a stored status.
    ///
    /// # Errors
    /// Returns a message for an unknown status.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| format!("unknown order status `{text}`"))
    }

    /// Whether an order may move from this status to `next`. A payment that arrives after its
    /// order failed, expired or was canceled does not pay it: the store books that money and
    /// returns it, and the order stays where it is. A dispute can land on any order the provider
    /// was paid for, refunded or not: each money movement the provider confirms is booked.
    #[must_use]
    pub fn can_become(self, next: Self) -> bool {
        use OrderStatus::{
            Canceled, ChargedBack, Disputed, Expired, Failed, Fulfilled, Paid, PartiallyRefunded, Processing,
            Refunded, RequiresPayment,
        };
        matches!(
            (self, next),
            (RequiresPayment, Processing | Paid | Failed | Expired | Canceled)
                | (Processing, Paid | Failed | Expired)
                | (Paid, Fulfilled | Refunded | Disputed)
                | (Fulfilled | PartiallyRefunded, Refunded | PartiallyRefunded | Disputed)
                | (Refunded, Disputed)
                | (Disputed, ChargedBack | Paid | Fulfilled | PartiallyRefunded | Refunded)
        )
    }
}

/// `POST /v1/orders`: buy an offer with real money. The server prices it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreateOrderRequest {
    /// The offer.
    pub offer_id: OfferId,
    /// How many, 1 to 100; 1 when absent.
    #[serde(default = "Quantity::one")]
    pub quantity: Quantity,
    /// Which of the offer's prices; the first immediate real-money price when absent (for a
    /// Steam order, the first in the player's Steam wallet currency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_index: Option<u32>,
    /// Who takes the payment: `steam` pays in the Steam overlay, from the Steam wallet of a
    /// player logged in with `POST /v1/auth/steam`; the store's default provider (a hosted
    /// checkout page) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The player agreed that the content is delivered at once and so gave up the EU right of
    /// withdrawal for digital content (required for real-money prices when the store says so,
    /// `delivery_consent_required`); recorded with the order and on its receipt.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub immediate_delivery_consent: bool,
}

/// `POST /v1/platform-purchases/apple`: a purchase made with StoreKit 2, to redeem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplePurchaseRequest {
    /// The transaction's `jwsRepresentation` (StoreKit 2's `VerificationResult`), as the App
    /// Store signed it.
    pub signed_transaction: String,
}

/// `POST /v1/platform-purchases/google`: a purchase made with the Play Billing Library, to
/// redeem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GooglePlayPurchaseRequest {
    /// The product bought (`Purchase.getProducts()`), as the offer's `platform_products.google_play`
    /// names it.
    pub product_id: String,
    /// `Purchase.getPurchaseToken()`.
    pub purchase_token: String,
}

/// A platform's proof of purchase, to redeem: what the SDK keeps on disk until the server
/// answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "platform", rename_all = "snake_case")]
pub enum PlatformProof {
    /// An App Store signed transaction (StoreKit 2).
    AppStore(ApplePurchaseRequest),
    /// A Google Play purchase.
    GooglePlay(GooglePlayPurchaseRequest),
}

/// `POST /v1/orders/{id}/steam-authorization`: how the Steam overlay's purchase dialog ended,
/// as the game's `MicroTxnAuthorizationResponse_t` callback reports it. The server does not take
/// the game's word for it: it asks Steam (`QueryTxn`), finalizes an authorized transaction
/// (`FinalizeTxn`) and fulfils the order with what Steam says was paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SteamAuthorization {
    /// `m_bAuthorized`: whether the player approved the purchase.
    pub authorized: bool,
}

/// One recorded change of an order's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderTransition {
    /// The status before.
    pub from: OrderStatus,
    /// The status after.
    pub to: OrderStatus,
    /// Why (`webhook payment.succeeded evt_…`, `expired by sweeper`, …).
    pub cause: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// A real-money order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Order {
    /// UUID v7.
    pub id: Uuid,
    /// Where it is.
    pub status: OrderStatus,
    /// The offer bought (absent for a tab settlement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<OfferId>,
    /// The item bought (absent for a tab settlement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<Sku>,
    /// The tab this order settles, for tab settlements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tab_id: Option<Uuid>,
    /// How many.
    pub quantity: i64,
    /// The price index used.
    pub price_index: u32,
    /// What the player is charged (price x quantity).
    pub amount: Money,
    /// The provider's fee, once paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee: Option<Money>,
    /// What the store keeps after the fee, once paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<Money>,
    /// How much was refunded or charged back.
    pub refunded: Money,
    /// The provider's hosted checkout page; empty for a Steam order (the Steam overlay shows
    /// the purchase in the game).
    pub checkout_url: String,
    /// Who takes the payment (`stripe`, `sandbox`, `steam`).
    #[serde(default)]
    pub provider: String,
    /// Steam's 64-bit `orderid` for a Steam order, in decimal: the `m_ulOrderID` of the
    /// overlay's `MicroTxnAuthorizationResponse_t` callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_order_id: Option<String>,
    /// Whether the player consented to immediate delivery (the EU withdrawal waiver).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub immediate_delivery_consent: bool,
    /// When an unpaid order expires.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Why the payment failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Set when the provider returned more than the order's price (a refund and a chargeback
    /// that overlap): every movement is booked, and an operator should look at the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<String>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The receipt of the fulfilment, once fulfilled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<SignedReceipt>,
    /// Every status change, oldest first (on single-order reads).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<OrderTransition>,
    /// Its refunds and chargebacks, oldest first, and the refunds of payments that did not pay
    /// for it (on single-order reads).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refunds: Vec<Refund>,
}

/// A page of orders, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderPage {
    /// Orders, newest first.
    pub orders: Vec<Order>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST /admin/v1/orders/{id}/refunds`: refund all or part of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RefundRequest {
    /// How much, in the order's currency, as a decimal string; everything refundable when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "0.99")]
    pub amount: Option<String>,
    /// Why; recorded with the refund.
    pub reason: Reason,
}

/// Whether money went back by the operator's choice or the provider's chargeback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundKind {
    /// An operator refund.
    Refund,
    /// A lost dispute.
    Chargeback,
}

/// Where a refund is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Recorded; being sent to the provider.
    Pending,
    /// Sent; waiting for the provider's confirmation.
    Submitted,
    /// Done: money returned, grant clawed back.
    Succeeded,
    /// The provider refused it.
    Failed,
}

/// A refund or chargeback of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Refund {
    /// UUID v7.
    pub id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// Refund or chargeback.
    pub kind: RefundKind,
    /// How much.
    pub amount: Money,
    /// Why.
    pub reason: String,
    /// Where it is.
    pub status: RefundStatus,
    /// When it was asked for.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Why the provider has not taken it (yet): the last submission's failure; a `failed` refund
    /// waits for an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// `wallet.updated` on `/v1/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WalletUpdated {
    /// The entry that changed the wallet.
    pub entry_id: Uuid,
    /// Each balance it changed, with the balance after.
    pub changes: Vec<BalanceChange>,
}

/// `inventory.updated` on `/v1/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InventoryUpdated {
    /// The entry that changed the inventory.
    pub entry_id: Uuid,
    /// Each item it changed, with the quantity after.
    pub items: Vec<ItemChange>,
}

#[cfg(test)]
mod tests {
    use super::OrderStatus;

    #[test]
    fn terminal_states_go_nowhere_and_fulfilment_needs_payment() {
        for terminal in
            [OrderStatus::Failed, OrderStatus::Expired, OrderStatus::ChargedBack, OrderStatus::Canceled]
        {
            assert!(OrderStatus::ALL.iter().all(|next| !terminal.can_become(*next)), "{terminal:?}");
        }
        assert!(!OrderStatus::RequiresPayment.can_become(OrderStatus::Fulfilled));
        assert!(
            !OrderStatus::Expired.can_become(OrderStatus::Paid),
            "a late payment is returned, not applied"
        );
        let disputable = [
            OrderStatus::Paid,
            OrderStatus::Fulfilled,
            OrderStatus::PartiallyRefunded,
            OrderStatus::Refunded,
        ];
        for paid in disputable {
            assert!(paid.can_become(OrderStatus::Disputed), "{paid:?}: a dispute lands on any paid order");
        }
        assert_eq!(
            OrderStatus::ALL
                .iter()
                .filter(|next| OrderStatus::Refunded.can_become(**next))
                .collect::<Vec<_>>(),
            [&OrderStatus::Disputed],
        );
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Ok(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }
}

/// A player's tab in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Tab {
    /// UUID v7.
    pub id: Uuid,
    /// `open`, `settling` (a settlement order is waiting for payment) or `settled`.
    pub status: String,
    /// What the player owes on it (micro-precise; the card charge rounds down to whole minor
    /// units and carries the rest to the next tab).
    pub amount: Money,
    /// The remainder carried in from the previous tab.
    pub carried_in: Money,
    /// Items charged to it.
    pub item_count: i64,
    /// When it opened.
    #[serde(with = "time::serde::rfc3339")]
    pub opened_at: OffsetDateTime,
    /// The amount at which it must be settled.
    pub threshold: Money,
    /// The most it may hold for this player.
    pub credit_limit: Money,
    /// When it must be settled at the latest.
    #[serde(with = "time::serde::rfc3339")]
    pub settle_by: OffsetDateTime,
    /// Whether new tab purchases are refused until it is settled.
    pub settlement_required: bool,
    /// What settling now would charge to a card (whole minor units).
    pub settle_amount: Money,
    /// The settlement order, while settling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_order_id: Option<Uuid>,
}

/// `GET /v1/tab`: the player's open tabs, one per currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TabList {
    /// Open and settling tabs.
    pub tabs: Vec<Tab>,
}

/// `POST /v1/tab/settle`: settle the tab in `currency` (the only open tab when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SettleTabRequest {
    /// The tab's ISO currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<crate::money::MoneyCurrency>,
}

/// One item on a tab, for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TabItem {
    /// The item.
    pub sku: Sku,
    /// How many.
    pub quantity: i64,
    /// What it added to the tab.
    pub amount: Money,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A tab as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AdminTab {
    /// The tab.
    #[serde(flatten)]
    pub tab: Tab,
    /// Its player.
    pub player_id: Uuid,
    /// How old it is, in seconds.
    pub age_s: i64,
    /// What it holds.
    pub items: Vec<TabItem>,
    /// What the card was charged, once settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charged: Option<Money>,
    /// The provider's fees for charging each item separately minus the fee for one charge.
    pub fee_saved: Money,
}

/// `GET /admin/v1/tabs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AdminTabPage {
    /// Tabs, newest first.
    pub tabs: Vec<AdminTab>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A creator as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Creator {
    /// The creator.
    pub id: crate::catalog::CreatorId,
    /// What the store owes them now, per currency.
    pub balances: Vec<Money>,
    /// Everything credited to them so far, per currency.
    pub earned: Vec<Money>,
    /// Sales that credited them.
    pub sales: i64,
}

/// `GET /admin/v1/creators`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatorList {
    /// Creators with any sale, sorted by id.
    pub creators: Vec<Creator>,
}

/// One payout to a creator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Payout {
    /// UUID v7.
    pub id: Uuid,
    /// The creator.
    pub creator: crate::catalog::CreatorId,
    /// How much.
    pub amount: Money,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Payouts to a creator, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PayoutList {
    /// Payouts.
    pub payouts: Vec<Payout>,
}
