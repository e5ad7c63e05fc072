//! The money-moving operations: purchases, consumption, reward claims, operator grants and the
//! initial grant. Each is a plain function over one transaction (a [`MoneyOp`]) that checks the
//! store's rules in Rust, then appends one ledger entry, whose guarded updates check the money
//! rules a second time in the database.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use sqlx::AnyConnection;
use store_api::ErrorCode;
use store_api::Money;
use store_api::catalog::{Item, ItemGrant, ItemKind, LimitPeriod, Offer, Price, Settlement, Sku};
use store_api::currency::CurrencyCode;
use store_api::ledger::{
    ConsumeRequest, ConsumeResult, CurrencyAmount, EntryKind, GrantRequest, GrantResult, Granted, Inventory,
    Purchase, PurchaseRequest, PurchaseResult, RewardClaimRequest, RewardClaimResult, RewardRule, RuleCode,
};
use store_api::receipt::SignedReceipt;
use time::{Duration, OffsetDateTime, Time};
use uuid::Uuid;

use crate::db::{from_micros, now_micros, to_micros};
use crate::error::{ApiError, ApiResult};
use crate::ledger::batch::{BatchLedger, ItemReads};
use crate::ledger::idempotency::MoneyOp;
use crate::ledger::receipts::{ReceiptFacts, issue_receipt};
use crate::ledger::{
    AccountId, ItemDelta, NewEntry, Posting, PurchaseRecord, SystemAccount, already_owned, append_entry,
    balance_max_exceeded, insufficient_funds, insufficient_quantity, item_quantity, lock_player,
    read_inventory, read_wallet, record_purchase, wallet_balance,
};
use crate::payments::Payments;
use crate::store::catalog::CatalogCache;
use crate::store::catalog::RenderedCatalog;
use crate::store::pricing::Buyer;

pub mod grants;
pub mod inventory;
pub mod purchase;

pub use grants::*;
pub use inventory::*;
pub use purchase::*;

/// The start of the period containing `now`, and when the next one starts (none for lifetime).
#[must_use]
pub fn period_window(period: LimitPeriod, now: OffsetDateTime) -> (OffsetDateTime, Option<OffsetDateTime>) {
    let midnight = now.replace_time(Time::MIDNIGHT);
    match period {
        LimitPeriod::Day => (midnight, Some(midnight + Duration::DAY)),
        LimitPeriod::Week => {
            let monday = midnight - Duration::days(i64::from(now.weekday().number_days_from_monday()));
            (monday, Some(monday + Duration::WEEK))
        }
        LimitPeriod::Month => {
            let first = midnight.replace_day(1).unwrap_or(midnight);
            let next = if first.month() == time::Month::December {
                first.replace_year(first.year() + 1).and_then(|at| at.replace_month(time::Month::January))
            } else {
                first.replace_month(first.month().next())
            };
            (first, next.ok())
        }
        LimitPeriod::Lifetime => (OffsetDateTime::UNIX_EPOCH, None),
    }
}

/// 409 `balance_max_exceeded`: a grant so large that counting it overflows.
fn too_much(item: &Item) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::BalanceMaxExceeded,
        format!("buying this many of `{}` grants more than any wallet can hold", item.sku),
    )
}

/// What a player pays and receives, before it is written.
#[derive(Debug, Default)]
pub(crate) struct Movement {
    pub(crate) postings: Vec<Posting>,
    pub(crate) items: Vec<ItemDelta>,
    pub(crate) granted: Granted,
}

impl Movement {
    /// Gives `amount` of `currency` from issuance.
    pub(crate) fn grant_currency(&mut self, player_id: Uuid, currency: &CurrencyCode, amount: i64) {
        self.postings.push(Posting {
            account: AccountId::System(SystemAccount::Issuance, currency.as_str().to_owned()),
            amount: -amount,
        });
        self.postings.push(Posting { account: AccountId::Wallet(player_id, currency.clone()), amount });
        self.granted.currencies.push(CurrencyAmount { currency: currency.clone(), amount });
    }

    /// Gives `quantity` of an item (at most one of a durable one).
    pub(crate) fn grant_item(&mut self, item: &Item, quantity: i64) {
        let quantity_max = if item.kind == ItemKind::Durable { 1 } else { i64::MAX };
        self.items.push(ItemDelta { sku: item.sku.clone(), delta: quantity, quantity_max });
        self.granted.items.push(ItemGrant { sku: item.sku.clone(), quantity });
    }

    /// Gives what buying `quantity` of `item` gives: the item itself (consumables and durables)
    /// and its grants. `lookup` finds the granted items in the catalog version sold from.
    pub(crate) fn grant_bought<'c>(
        &mut self,
        player_id: Uuid,
        item: &Item,
        quantity: i64,
        lookup: impl Fn(&Sku) -> Option<&'c Item>,
    ) -> ApiResult<()> {
        if matches!(item.kind, ItemKind::Consumable | ItemKind::Durable) {
            self.grant_item(item, quantity);
        }
        for grant in &item.grants.items {
            let granted = lookup(&grant.sku)
                .ok_or_else(|| anyhow::anyhow!("item {} grants unknown sku {}", item.sku, grant.sku))?;
            self.grant_item(granted, grant.quantity.checked_mul(quantity).ok_or_else(|| too_much(item))?);
        }
        for grant in &item.grants.currencies {
            let amount = grant.amount.checked_mul(quantity).ok_or_else(|| too_much(item))?;
            self.grant_currency(player_id, &grant.currency, amount);
        }
        Ok(())
    }

    /// Checks in Rust what the entry's guarded updates will check again: every wallet ends
    /// between zero and its maximum, no durable item is held twice.
    pub(crate) async fn check(
        &self,
        conn: &mut AnyConnection,
        player_id: Uuid,
        catalog: &RenderedCatalog,
    ) -> ApiResult<()> {
        let mut balances = BTreeMap::new();
        for posting in &self.postings {
            if let AccountId::Wallet(_, currency) = &posting.account
                && !balances.contains_key(currency)
            {
                balances.insert(currency.clone(), wallet_balance(conn, player_id, currency).await?);
            }
        }
        let mut held = BTreeMap::new();
        for delta in self.items.iter().filter(|delta| delta.quantity_max == 1) {
            held.insert(delta.sku.clone(), item_quantity(conn, player_id, &delta.sku).await?);
        }
        self.check_against(
            catalog,
            |currency| balances.get(currency).copied().unwrap_or(0),
            |sku| held.get(sku).copied().unwrap_or(0),
        )
    }

    /// [`Movement::check`] against balances and item counts already known (the batch path's).
    pub(crate) fn check_against(
        &self,
        catalog: &RenderedCatalog,
        balance_of: impl Fn(&CurrencyCode) -> i64,
        held_of: impl Fn(&Sku) -> i64,
    ) -> ApiResult<()> {
        let mut net: BTreeMap<CurrencyCode, (i64, i64)> = BTreeMap::new();
        for posting in &self.postings {
            if let AccountId::Wallet(_, currency) = &posting.account {
                let (debit, credit) = net.entry(currency.clone()).or_default();
                if posting.amount < 0 { *debit -= posting.amount } else { *credit += posting.amount }
            }
        }
        for (currency, (debit, credit)) in net {
            let balance = balance_of(&currency);
            if debit > 0 && balance < debit {
                return Err(insufficient_funds(&currency, debit, balance));
            }
            let balance_max = catalog.currency(&currency).map_or(i64::MAX, |known| known.balance_max);
            let after = balance - debit + credit;
            if credit > 0 && after > balance_max.max(balance - debit) {
                return Err(balance_max_exceeded(&currency, balance - debit, credit, balance_max));
            }
        }
        for delta in &self.items {
            if delta.quantity_max == 1 && held_of(&delta.sku) + delta.delta > 1 {
                return Err(already_owned(&delta.sku));
            }
        }
        Ok(())
    }
}

fn offer_not_available(reason: &str, message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, ErrorCode::OfferNotAvailable, message).with_detail("reason", reason)
}

/// Refuses an offer outside its sale window.
///
/// # Errors
/// `offer_not_available` with `details.reason` `not_started` or `ended`.
pub fn check_sale_window(offer: &store_api::catalog::Offer, now: OffsetDateTime) -> ApiResult<()> {
    if let Some(window) = offer.sale_window {
        if window.starts_at.is_some_and(|starts| now < starts) {
            return Err(offer_not_available("not_started", "the offer's sale has not started".to_owned()));
        }
        if window.ends_at.is_some_and(|ends| now >= ends) {
            return Err(offer_not_available("ended", "the offer's sale has ended".to_owned()));
        }
    }
    Ok(())
}

fn player_actor(player_id: Uuid) -> String {
    format!("player:{player_id}")
}

fn price_requires_order() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::PriceRequiresOrder,
        "this price is paid with real money; start an order with POST /v1/orders",
    )
}

pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Refuses a purchase or order of `quantity` that would pass the item's purchase limit. Units
/// count whether bought with currency (purchases, refunded or not) or with real money (orders
/// not failed, expired or canceled: an order reserves its units when it is created).
/// `excluding_order` leaves that order out (it is checked again at its fulfilment).
///
/// # Errors
/// `purchase_limit_reached`.
pub(crate) async fn check_purchase_limit(
    conn: &mut AnyConnection,
    player_id: Uuid,
    item: &Item,
    quantity: i64,
    now: OffsetDateTime,
    excluding_order: Option<Uuid>,
) -> ApiResult<()> {
    let Some(limit) = item.purchase_limit else { return Ok(()) };
    let (start, _) = period_window(limit.period, now);
    let bought: Option<i64> = sqlx::query_scalar(
        "select cast(coalesce((select sum(e.purchase_quantity) from entry e \
         where e.player_id = $1 and e.id >= $5 and e.purchase_sku = $2 and e.created_at >= $3), 0) \
         + coalesce((select sum(quantity) from payment_order where player_id = $1 and sku = $2 and created_at >= $3 \
         and status not in ('failed', 'expired', 'canceled') and id <> $4), 0) as bigint)",
    )
    .bind(player_id.to_string())
    .bind(item.sku.as_str())
    .bind(to_micros(start))
    .bind(excluding_order.map(|id| id.to_string()).unwrap_or_default())
    .bind(crate::ledger::entry_id_floor(to_micros(start)))
    .fetch_one(&mut *conn)
    .await?;
    limit_check(item, quantity, bought.unwrap_or(0), now)
}

/// Whether `quantity` more of `item` fits its purchase limit at `now`, with `bought` already
/// counted in the limit's period: the check shared by the per-request and the set path.
///
/// # Errors
/// `purchase_limit_reached`, with the limit, what was bought and when the period resets.
pub(crate) fn limit_check(item: &Item, quantity: i64, bought: i64, now: OffsetDateTime) -> ApiResult<()> {
    let Some(limit) = item.purchase_limit else { return Ok(()) };
    let (_, resets_at) = period_window(limit.period, now);
    if bought + quantity > limit.count {
        let mut error = ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::PurchaseLimitReached,
            format!(
                "`{}` can be bought {} times per {:?}; {bought} bought",
                item.sku, limit.count, limit.period
            )
            .to_lowercase(),
        )
        .with_detail("limit", limit.count)
        .with_detail("bought", bought);
        if let Some(resets_at) = resets_at {
            error = error.with_detail("resets_at", rfc3339(resets_at));
        }
        return Err(error);
    }
    Ok(())
}

/// Gives back `quantity` units of stock an order reserved and never sold.
///
/// # Errors
/// Fails when the database does.
pub(crate) async fn release_stock(conn: &mut AnyConnection, sku: &str, quantity: i64) -> ApiResult<()> {
    sqlx::query("update item_sold set sold = sold - $2 where sku = $1 and sold >= $2")
        .bind(sku)
        .bind(quantity)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Takes `quantity` units of an item's stock, guarded so it never oversells.
pub(crate) async fn take_stock(
    conn: &mut AnyConnection,
    sku: &Sku,
    quantity: i64,
    stock: i64,
) -> ApiResult<()> {
    sqlx::query("insert into item_sold (sku, sold) values ($1, 0) on conflict (sku) do nothing")
        .bind(sku.as_str())
        .execute(&mut *conn)
        .await?;
    let taken = sqlx::query("update item_sold set sold = sold + $2 where sku = $1 and sold + $2 <= $3")
        .bind(sku.as_str())
        .bind(quantity)
        .bind(stock)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if taken == 1 { Ok(()) } else { Err(out_of_stock(sku)) }
}

/// 409 `out_of_stock`.
pub(crate) fn out_of_stock(sku: &Sku) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, ErrorCode::OutOfStock, format!("`{sku}` is out of stock"))
        .with_detail("sku", sku.as_str())
}
