//! Wallets, history, inventory, purchases, consumption, rewards and grants: what players and
//! operators send and get back when balances move.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::catalog::{ItemGrant, OfferId, Sku};
use crate::currency::CurrencyCode;
use crate::limits::PURCHASE_QUANTITY_MAX;
use crate::receipt::SignedReceipt;

/// Longest reason an operator gives for a grant, in characters.
pub const REASON_CHARS_MAX: usize = 500;

/// One currency's balance in a wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Balance {
    /// The currency.
    pub currency: CurrencyCode,
    /// The balance; negative only while the player owes a clawed-back debt.
    pub balance: i64,
}

/// A player's wallet: a balance for every currency, sorted by code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Wallet {
    /// One balance per currency.
    pub balances: Vec<Balance>,
}

/// Why an entry was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EntryKind {
    /// The currencies' initial grants on the first login.
    InitialGrant,
    /// A claimed reward.
    Reward,
    /// A grant by an operator or game server.
    OperatorGrant,
    /// A purchase with virtual currency.
    Purchase,
    /// Items used up.
    Consume,
    /// A paid real-money order granted.
    OrderFulfillment,
    /// Money returned and the grant clawed back (refund or chargeback).
    Reversal,
    /// A tab paid off by its settlement order.
    TabSettlement,
    /// A creator's balance paid out.
    Payout,
    /// Money a provider confirmed that pays for nothing (a wrong amount, a second payment, a
    /// payment of a closed order): booked as received, and returned by a refund.
    UnappliedPayment,
    /// A kind this version of the contract does not know.
    #[serde(other)]
    Other,
}

impl EntryKind {
    /// The kind as stored and on the wire.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InitialGrant => "initial_grant",
            Self::Reward => "reward",
            Self::OperatorGrant => "operator_grant",
            Self::Purchase => "purchase",
            Self::Consume => "consume",
            Self::OrderFulfillment => "order_fulfillment",
            Self::Reversal => "reversal",
            Self::TabSettlement => "tab_settlement",
            Self::Payout => "payout",
            Self::UnappliedPayment => "unapplied_payment",
            Self::Other => "other",
        }
    }

    /// Parses a stored kind; unknown kinds are [`EntryKind::Other`].
    #[must_use]
    pub fn parse(text: &str) -> Self {
        [
            Self::InitialGrant,
            Self::Reward,
            Self::OperatorGrant,
            Self::Purchase,
            Self::Consume,
            Self::OrderFulfillment,
            Self::Reversal,
            Self::TabSettlement,
            Self::Payout,
            Self::UnappliedPayment,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
        .unwrap_or(Self::Other)
    }
}

/// How one entry changed one of the player's balances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BalanceChange {
    /// The currency.
    pub currency: CurrencyCode,
    /// Positive for a credit, negative for a debit.
    pub amount: i64,
    /// The balance right after.
    pub balance_after: i64,
}

/// How one entry changed one of the player's items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ItemChange {
    /// The item.
    pub sku: Sku,
    /// Positive when gained, negative when used up or taken back.
    pub delta: i64,
    /// How many the player holds right after.
    pub quantity_after: i64,
}

/// One entry of a player's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HistoryEntry {
    /// The entry (UUID v7, so time-ordered).
    pub id: Uuid,
    /// Why it was written.
    pub kind: EntryKind,
    /// The operator's reason, for grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The player's balances it changed.
    pub changes: Vec<BalanceChange>,
    /// The player's items it changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemChange>,
}

/// A page of history, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HistoryPage {
    /// Entries, newest first.
    pub entries: Vec<HistoryEntry>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// How many of one item a player holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InventoryItem {
    /// The item.
    pub sku: Sku,
    /// Never 0 (items held zero times are not listed). Below zero is an item debt: a refund or
    /// chargeback took back items the player had already used up, and the next grants of the
    /// item repay it first.
    pub quantity: i64,
}

/// A player's items, sorted by sku.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Inventory {
    /// Items held.
    pub items: Vec<InventoryItem>,
}

/// A purchase or consumption quantity: 1 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "i64", into = "i64")]
#[schema(value_type = i64, example = 1)]
pub struct Quantity(i64);

impl Quantity {
    /// One.
    pub const ONE: Self = Self(1);

    /// One, for serde defaults.
    #[must_use]
    pub fn one() -> Self {
        Self::ONE
    }

    /// Checks a quantity.
    ///
    /// # Errors
    /// Returns a message unless `1 <= value <= 100`.
    pub fn new(value: i64) -> Result<Self, String> {
        if (1..=i64::from(PURCHASE_QUANTITY_MAX)).contains(&value) {
            Ok(Self(value))
        } else {
            Err(format!("quantity must be from 1 to {PURCHASE_QUANTITY_MAX}, not {value}"))
        }
    }

    /// The value.
    #[must_use]
    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = String;
    fn try_from(value: i64) -> Result<Self, String> {
        Self::new(value)
    }
}

impl From<Quantity> for i64 {
    fn from(quantity: Quantity) -> Self {
        quantity.0
    }
}

/// `POST /v1/purchases`: buy an offer with virtual currency. The server prices it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PurchaseRequest {
    /// The offer.
    pub offer_id: OfferId,
    /// How many, 1 to 100; 1 when absent.
    #[serde(default = "Quantity::one")]
    pub quantity: Quantity,
    /// Which of the offer's prices; the first virtual price when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_index: Option<u32>,
    /// For a price on the tab (real money): the player agreed that the content is delivered at
    /// once and so gave up the EU right of withdrawal for digital content (required when the
    /// store says so, `delivery_consent_required`); recorded on the receipt.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub immediate_delivery_consent: bool,
}

/// A virtual amount of one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CurrencyAmount {
    /// The currency.
    pub currency: CurrencyCode,
    /// The amount.
    pub amount: i64,
}

/// A completed purchase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Purchase {
    /// UUID v7.
    pub id: Uuid,
    /// The offer bought.
    pub offer_id: OfferId,
    /// The item bought.
    pub sku: Sku,
    /// How many.
    pub quantity: i64,
    /// The price index used.
    pub price_index: u32,
    /// What was paid in all (price x quantity), for virtual prices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid: Option<CurrencyAmount>,
    /// What was added to the player's tab (price x quantity), for tab prices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charged_to_tab: Option<crate::money::Money>,
    /// The catalog version it was priced from.
    pub catalog_version: i64,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// What a purchase, reward or grant gave the player.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Granted {
    /// Items given.
    pub items: Vec<ItemGrant>,
    /// Currency amounts given.
    pub currencies: Vec<CurrencyAmount>,
}

/// The answer to a purchase: the purchase, what it gave, the new state and a signed receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PurchaseResult {
    /// The purchase.
    pub purchase: Purchase,
    /// What it gave.
    pub granted: Granted,
    /// The whole wallet after it.
    pub wallet: Wallet,
    /// The inventory after it.
    pub inventory: Inventory,
    /// Signed proof of what the player received.
    pub receipt: SignedReceipt,
}

/// `POST /v1/inventory/{sku}/consume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsumeRequest {
    /// How many to use up, 1 to 100; 1 when absent.
    #[serde(default = "Quantity::one")]
    pub quantity: Quantity,
}

/// The answer to a consumption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsumeResult {
    /// The entry recording it.
    pub entry_id: Uuid,
    /// The item.
    pub sku: Sku,
    /// How many were used up.
    pub consumed: i64,
    /// How many are left.
    pub remaining: i64,
}

/// A reward rule's code: like a currency code, `[a-z][a-z0-9_]{1,31}`.
pub type RuleCode = CurrencyCode;

/// An operator-defined way to earn currency, with caps on how much a player can earn per
/// minute, hour and UTC day (in currency, across all claims of the rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "RewardRuleFields")]
pub struct RewardRule {
    /// Unique code, the `{rule}` in `POST /v1/rewards/{rule}`.
    pub code: RuleCode,
    /// The currency earned.
    pub currency: CurrencyCode,
    /// Most a single claim earns (and what it earns when the claim names no amount).
    pub amount: i64,
    /// Most earned per clock minute, if capped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_per_minute: Option<i64>,
    /// Most earned per clock hour, if capped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_per_hour: Option<i64>,
    /// Most earned per UTC day, if capped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_per_day: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct RewardRuleFields {
    code: RuleCode,
    currency: CurrencyCode,
    amount: i64,
    #[serde(default)]
    cap_per_minute: Option<i64>,
    #[serde(default)]
    cap_per_hour: Option<i64>,
    #[serde(default)]
    cap_per_day: Option<i64>,
}

impl TryFrom<RewardRuleFields> for RewardRule {
    type Error = String;
    fn try_from(fields: RewardRuleFields) -> Result<Self, String> {
        if fields.amount < 1 {
            return Err("amount must be at least 1".to_owned());
        }
        for (name, cap) in [
            ("cap_per_minute", fields.cap_per_minute),
            ("cap_per_hour", fields.cap_per_hour),
            ("cap_per_day", fields.cap_per_day),
        ] {
            if cap.is_some_and(|cap| cap < fields.amount) {
                return Err(format!("{name} must be at least amount ({})", fields.amount));
            }
        }
        Ok(Self {
            code: fields.code,
            currency: fields.currency,
            amount: fields.amount,
            cap_per_minute: fields.cap_per_minute,
            cap_per_hour: fields.cap_per_hour,
            cap_per_day: fields.cap_per_day,
        })
    }
}

/// The reward rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RewardRuleList {
    /// Rules sorted by code.
    pub reward_rules: Vec<RewardRule>,
}

/// `POST /v1/rewards/{rule}`: claim a reward. The amount defaults to the rule's and is never
/// above it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RewardClaimRequest {
    /// How much, 1 to the rule's amount; the rule's amount when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
}

/// The answer to a reward claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RewardClaimResult {
    /// The rule claimed.
    pub rule: RuleCode,
    /// What was earned.
    pub earned: CurrencyAmount,
    /// The whole wallet after it.
    pub wallet: Wallet,
    /// Signed proof of what the player received.
    pub receipt: SignedReceipt,
}

/// An operator's reason for a grant: 1 to 500 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "apology for the outage")]
pub struct Reason(String);

impl Reason {
    /// Checks a reason.
    ///
    /// # Errors
    /// Returns a message when it is blank or longer than 500 characters.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() || text.chars().count() > REASON_CHARS_MAX {
            Err(format!("reason must be 1 to {REASON_CHARS_MAX} characters, not blank"))
        } else {
            Ok(Self(text.to_owned()))
        }
    }
}

string_newtype!(Reason);

/// `POST /admin/v1/players/{id}/grants`: give currency and/or items, with a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "GrantFields")]
pub struct GrantRequest {
    /// The currency given, with `amount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<CurrencyCode>,
    /// How much of `currency`, at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    /// Items given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemGrant>,
    /// Why; recorded in the entry and the audit log.
    pub reason: Reason,
}

#[derive(Debug, Deserialize)]
struct GrantFields {
    #[serde(default)]
    currency: Option<CurrencyCode>,
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    items: Vec<ItemGrant>,
    reason: Reason,
}

impl TryFrom<GrantFields> for GrantRequest {
    type Error = String;
    fn try_from(fields: GrantFields) -> Result<Self, String> {
        match (&fields.currency, fields.amount) {
            (Some(_), Some(amount)) if amount < 1 => return Err("amount must be at least 1".to_owned()),
            (Some(_), None) | (None, Some(_)) => return Err("currency and amount go together".to_owned()),
            (None, None) if fields.items.is_empty() => {
                return Err("a grant gives a currency amount, items, or both".to_owned());
            }
            _ => {}
        }
        if fields.items.len() > crate::limits::ITEM_GRANTS_MAX {
            return Err(format!("a grant gives at most {} items", crate::limits::ITEM_GRANTS_MAX));
        }
        if let Some(grant) = fields
            .items
            .iter()
            .find(|grant| !(1..=crate::catalog::GRANT_QUANTITY_MAX).contains(&grant.quantity))
        {
            return Err(format!(
                "grant of `{}` must have a quantity from 1 to {}",
                grant.sku,
                crate::catalog::GRANT_QUANTITY_MAX
            ));
        }
        Ok(Self {
            currency: fields.currency,
            amount: fields.amount,
            items: fields.items,
            reason: fields.reason,
        })
    }
}

/// The answer to a grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GrantResult {
    /// The entry recording it.
    pub entry_id: Uuid,
    /// What it gave.
    pub granted: Granted,
    /// The player's wallet after it.
    pub wallet: Wallet,
    /// The player's inventory after it.
    pub inventory: Inventory,
    /// Signed proof of what the player received.
    pub receipt: SignedReceipt,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_bounded() {
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(101).is_err());
        assert_eq!(Quantity::new(100).unwrap().get(), 100);
        let request: PurchaseRequest =
            serde_json::from_str(r#"{"offer_id":"019a6b1e-0001-7000-8000-000000000001"}"#).unwrap();
        assert_eq!(request.quantity, Quantity::ONE);
    }

    #[test]
    fn a_grant_needs_something_to_give_and_a_reason() {
        assert!(serde_json::from_str::<GrantRequest>(r#"{"reason":"x"}"#).is_err());
        assert!(serde_json::from_str::<GrantRequest>(r#"{"currency":"gold","amount":5}"#).is_err());
        assert!(
            serde_json::from_str::<GrantRequest>(r#"{"currency":"gold","amount":0,"reason":"x"}"#).is_err()
        );
        assert!(serde_json::from_str::<GrantRequest>(r#"{"currency":"gold","reason":"x"}"#).is_err());
        assert!(
            serde_json::from_str::<GrantRequest>(r#"{"currency":"gold","amount":5,"reason":"x"}"#).is_ok()
        );
    }

    #[test]
    fn entry_kinds_round_trip_through_text() {
        for kind in [
            EntryKind::InitialGrant,
            EntryKind::Reward,
            EntryKind::OperatorGrant,
            EntryKind::Purchase,
            EntryKind::Consume,
        ] {
            assert_eq!(EntryKind::parse(kind.as_str()), kind);
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }
}
