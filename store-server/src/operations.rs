//! The money-moving operations: purchases, consumption, reward claims, operator grants and the
//! initial grant. Each is a plain function over one transaction (a [`MoneyOp`]) that checks the
//! store's rules in Rust, then appends one ledger entry, whose guarded updates check the money
//! rules a second time in the database.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use sqlx::AnyConnection;
use store_api::ErrorCode;
use store_api::Money;
use store_api::catalog::{Item, ItemGrant, ItemKind, LimitPeriod, Price, Settlement, Sku};
use store_api::currency::CurrencyCode;
use store_api::ledger::{
    ConsumeRequest, ConsumeResult, CurrencyAmount, EntryKind, GrantRequest, GrantResult, Granted, Inventory,
    Purchase, PurchaseRequest, PurchaseResult, RewardClaimRequest, RewardClaimResult, RuleCode,
};
use time::{Duration, OffsetDateTime, Time};
use uuid::Uuid;

use crate::app::AppState;
use crate::catalog::RenderedCatalog;
use crate::db::{from_micros, now_micros, to_micros};
use crate::error::{ApiError, ApiResult};
use crate::idempotency::MoneyOp;
use crate::ledger::{
    AccountId, ItemDelta, NewEntry, Posting, SystemAccount, already_owned, append_entry,
    balance_max_exceeded, insufficient_funds, insufficient_quantity, item_quantity, lock_player,
    read_inventory, read_wallet, wallet_balance,
};
use crate::receipts::{ReceiptFacts, issue_receipt};

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
        let mut net: BTreeMap<CurrencyCode, (i64, i64)> = BTreeMap::new();
        for posting in &self.postings {
            if let AccountId::Wallet(_, currency) = &posting.account {
                let (debit, credit) = net.entry(currency.clone()).or_default();
                if posting.amount < 0 { *debit -= posting.amount } else { *credit += posting.amount }
            }
        }
        for (currency, (debit, credit)) in net {
            let balance = wallet_balance(conn, player_id, &currency).await?;
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
            if delta.quantity_max == 1 && item_quantity(conn, player_id, &delta.sku).await? + delta.delta > 1
            {
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

/// `POST /v1/purchases`: buy an offer with virtual currency.
#[derive(Debug, Clone)]
pub struct PurchaseOp {
    /// The buyer.
    pub player_id: Uuid,
    /// What they asked for.
    pub request: PurchaseRequest,
}

impl MoneyOp for PurchaseOp {
    type Output = PurchaseResult;
    const SUCCESS: StatusCode = StatusCode::CREATED;

    async fn apply(self, state: &AppState, conn: &mut AnyConnection) -> ApiResult<PurchaseResult> {
        let Self { player_id, request } = self;
        let lock = lock_player(conn, player_id).await?;
        lock.refuse_if_blocked()?;
        let catalog = state.catalog_cache().get(conn).await?;
        let now = crate::db::now();
        let offer = catalog.offer(request.offer_id).ok_or_else(|| {
            offer_not_available("unknown", format!("offer `{}` is not in the live catalog", request.offer_id))
        })?;
        check_sale_window(offer, now)?;
        let item = catalog
            .item(&offer.sku)
            .ok_or_else(|| anyhow::anyhow!("live offer {} sells unknown sku {}", offer.id, offer.sku))?;
        let buyer = crate::pricing::buyer(conn, player_id).await?;
        let (prices, variant) = crate::pricing::effective_prices(offer, &buyer);
        let price_index = match request.price_index {
            Some(index) => index,
            None => prices
                .iter()
                .position(|price| {
                    matches!(price, Price::Virtual { .. } | Price::Real { settlement: Settlement::Tab, .. })
                })
                .and_then(|index| u32::try_from(index).ok())
                .ok_or_else(price_requires_order)?,
        };
        let price =
            usize::try_from(price_index).ok().and_then(|index| prices.get(index)).ok_or_else(|| {
                ApiError::invalid(
                    "price_index",
                    format!("the offer has {} prices; price_index {price_index} is not one", prices.len()),
                )
            })?;
        let quantity = request.quantity.get();
        // What the purchase is paid with: a wallet, or the player's tab.
        let (unit, total, tab) = match price {
            Price::Virtual { currency, amount } => {
                if wallet_balance(conn, player_id, currency).await? < 0 {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        ErrorCode::OutstandingDebt,
                        format!("the wallet owes {currency} from a refunded order; earn or receive enough to repay it first"),
                    )
                    .with_detail("currency", currency.as_str()));
                }
                let total = amount
                    .checked_mul(quantity)
                    .ok_or_else(|| ApiError::invalid("quantity", "the total price is too large"))?;
                (currency.as_str().to_owned(), total, None)
            }
            Price::Real { money, settlement: Settlement::Tab } => {
                let charge = Money {
                    currency: money.currency,
                    amount: money.amount * rust_decimal::Decimal::from(quantity),
                };
                let tab =
                    crate::tabs::tab_for_charge(conn, state, player_id, lock.is_minor(), charge).await?;
                let total = charge.to_micros().map_err(|error| ApiError::invalid("quantity", error))?;
                (money.currency.code().to_owned(), total, Some((tab, charge)))
            }
            Price::Real { settlement: Settlement::Immediate, .. } => return Err(price_requires_order()),
        };
        if item.kind == ItemKind::Durable && quantity > 1 {
            return Err(ApiError::invalid("quantity", "a durable item is bought one at a time"));
        }
        check_purchase_limit(conn, player_id, item, quantity, now, None).await?;
        let mut movement = Movement::default();
        let source = match (&tab, price) {
            (None, Price::Virtual { currency, .. }) => AccountId::Wallet(player_id, currency.clone()),
            _ => AccountId::System(SystemAccount::TabReceivable, unit.clone()),
        };
        movement.postings.push(Posting { account: source, amount: -total });
        movement.postings.push(Posting {
            account: AccountId::System(SystemAccount::Revenue, unit.clone()),
            amount: total,
        });
        // Creators of tab sales are credited when the tab is settled, on what was collected.
        movement.grant_bought(player_id, item, quantity, |sku| catalog.item(sku))?;
        movement.check(conn, player_id, &catalog).await?;
        if let Some(stock) = item.stock {
            take_stock(conn, &item.sku, quantity, stock).await?;
        }

        let entry = append_entry(
            conn,
            &NewEntry {
                kind: EntryKind::Purchase,
                player_id: Some(player_id),
                actor: player_actor(player_id),
                reason: None,
                postings: movement.postings,
                items: movement.items,
                clawback: false,
            },
            &catalog.balance_maxima(),
        )
        .await?;
        let purchase_id = Uuid::now_v7();
        let created_at = now_micros();
        sqlx::query(
            "insert into purchase (id, player_id, offer_id, sku, quantity, price_index, currency, amount, catalog_version, entry_id, created_at, price_variant) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(purchase_id.to_string())
        .bind(player_id.to_string())
        .bind(offer.id.to_string())
        .bind(item.sku.as_str())
        .bind(quantity)
        .bind(i64::from(price_index))
        .bind(&unit)
        .bind(total)
        .bind(catalog.version)
        .bind(entry.id.to_string())
        .bind(created_at)
        .bind(variant.map(str::to_owned))
        .execute(&mut *conn)
        .await?;
        let (paid, charged_to_tab) = match (&tab, price) {
            (Some((tab, charge)), _) => {
                crate::tabs::add_to_tab(conn, tab, purchase_id, &item.sku, quantity, total).await?;
                (None, Some(*charge))
            }
            (None, Price::Virtual { currency, .. }) => {
                (Some(CurrencyAmount { currency: currency.clone(), amount: total }), None)
            }
            (None, Price::Real { .. }) => {
                return Err(ApiError::Internal(anyhow::anyhow!("a real price without a tab")));
            }
        };
        let receipt = issue_receipt(
            conn,
            player_id,
            entry.id,
            ReceiptFacts {
                kind: EntryKind::Purchase,
                purchase_id: Some(purchase_id),
                offer_id: Some(offer.id),
                paid: paid.clone(),
                paid_money: charged_to_tab,
                order_id: None,
                granted: movement.granted.clone(),
            },
        )
        .await?;
        Ok(PurchaseResult {
            purchase: Purchase {
                id: purchase_id,
                offer_id: offer.id,
                sku: item.sku.clone(),
                quantity,
                price_index,
                paid,
                charged_to_tab,
                catalog_version: catalog.version,
                created_at: from_micros(created_at),
            },
            granted: movement.granted,
            wallet: read_wallet(conn, player_id).await?,
            inventory: Inventory { items: read_inventory(conn, player_id).await? },
            receipt,
        })
    }
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
    let (start, resets_at) = period_window(limit.period, now);
    let bought: Option<i64> = sqlx::query_scalar(
        "select cast(coalesce((select sum(quantity) from purchase where player_id = $1 and sku = $2 and created_at >= $3), 0) \
         + coalesce((select sum(quantity) from payment_order where player_id = $1 and sku = $2 and created_at >= $3 \
         and status not in ('failed', 'expired', 'canceled') and id <> $4), 0) as bigint)",
    )
    .bind(player_id.to_string())
    .bind(item.sku.as_str())
    .bind(to_micros(start))
    .bind(excluding_order.map(|id| id.to_string()).unwrap_or_default())
    .fetch_one(&mut *conn)
    .await?;
    let bought = bought.unwrap_or(0);
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
    if taken == 1 {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::CONFLICT, ErrorCode::OutOfStock, format!("`{sku}` is out of stock"))
            .with_detail("sku", sku.as_str()))
    }
}

/// `POST /v1/inventory/{sku}/consume`: use up consumables.
#[derive(Debug, Clone)]
pub struct ConsumeOp {
    /// The player.
    pub player_id: Uuid,
    /// The item.
    pub sku: Sku,
    /// How many.
    pub request: ConsumeRequest,
}

impl MoneyOp for ConsumeOp {
    type Output = ConsumeResult;
    const SUCCESS: StatusCode = StatusCode::OK;

    async fn apply(self, state: &AppState, conn: &mut AnyConnection) -> ApiResult<ConsumeResult> {
        let Self { player_id, sku, request } = self;
        lock_player(conn, player_id).await?.refuse_if_blocked()?;
        let catalog = state.catalog_cache().get(conn).await?;
        let held = item_quantity(conn, player_id, &sku).await?;
        let kind = catalog.item(&sku).map(|item| item.kind);
        if held == 0 && kind.is_none() {
            return Err(ApiError::not_found("sku", sku.as_str()));
        }
        if kind.is_some_and(|kind| kind != ItemKind::Consumable) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::NotConsumable,
                format!("`{sku}` is not a consumable"),
            )
            .with_detail("sku", sku.as_str()));
        }
        let quantity = request.quantity.get();
        if held < quantity {
            return Err(insufficient_quantity(&sku, quantity, held));
        }
        let entry = append_entry(
            conn,
            &NewEntry {
                kind: EntryKind::Consume,
                player_id: Some(player_id),
                actor: player_actor(player_id),
                reason: None,
                postings: Vec::new(),
                items: vec![ItemDelta { sku: sku.clone(), delta: -quantity, quantity_max: i64::MAX }],
                clawback: false,
            },
            &BTreeMap::new(),
        )
        .await?;
        Ok(ConsumeResult { entry_id: entry.id, sku, consumed: quantity, remaining: held - quantity })
    }
}

/// `POST /v1/rewards/{rule}`: earn currency under an operator's rule and its caps.
#[derive(Debug, Clone)]
pub struct RewardOp {
    /// The player.
    pub player_id: Uuid,
    /// The rule.
    pub rule: RuleCode,
    /// The claim.
    pub request: RewardClaimRequest,
}

impl MoneyOp for RewardOp {
    type Output = RewardClaimResult;
    const SUCCESS: StatusCode = StatusCode::CREATED;

    async fn apply(self, state: &AppState, conn: &mut AnyConnection) -> ApiResult<RewardClaimResult> {
        let Self { player_id, rule: code, request } = self;
        lock_player(conn, player_id).await?.refuse_if_blocked()?;
        let rule = crate::rewards::find_rule(conn, &code)
            .await?
            .ok_or_else(|| ApiError::not_found("reward_rule", code.as_str()))?;
        let amount = request.amount.unwrap_or(rule.amount);
        if !(1..=rule.amount).contains(&amount) {
            return Err(ApiError::invalid(
                "amount",
                format!("amount must be from 1 to the rule's {}", rule.amount),
            ));
        }
        let now = crate::db::now();
        let minute = now.replace_second(0).and_then(|at| at.replace_nanosecond(0)).unwrap_or(now);
        let hour = minute.replace_minute(0).unwrap_or(minute);
        let day = now.replace_time(Time::MIDNIGHT);
        for (window, cap, start, length) in [
            ("minute", rule.cap_per_minute, minute, Duration::MINUTE),
            ("hour", rule.cap_per_hour, hour, Duration::HOUR),
            ("day", rule.cap_per_day, day, Duration::DAY),
        ] {
            let Some(cap) = cap else { continue };
            let earned: Option<i64> =
                sqlx::query_scalar("select cast(sum(amount) as bigint) from reward_claim where player_id = $1 and rule = $2 and created_at >= $3")
                    .bind(player_id.to_string())
                    .bind(code.as_str())
                    .bind(to_micros(start))
                    .fetch_one(&mut *conn)
                    .await?;
            let earned = earned.unwrap_or(0);
            if earned + amount > cap {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::RewardCapReached,
                    format!("`{code}` pays at most {cap} {} per {window}; {earned} earned", rule.currency),
                )
                .with_detail("window", window)
                .with_detail("cap", cap)
                .with_detail("earned", earned)
                .with_detail("resets_at", rfc3339(start + length)));
            }
        }
        let catalog = state.catalog_cache().get(conn).await?;
        let mut movement = Movement::default();
        movement.grant_currency(player_id, &rule.currency, amount);
        movement.check(conn, player_id, &catalog).await?;
        let entry = append_entry(
            conn,
            &NewEntry {
                kind: EntryKind::Reward,
                player_id: Some(player_id),
                actor: player_actor(player_id),
                reason: Some(format!("reward rule `{code}`")),
                postings: movement.postings,
                items: Vec::new(),
                clawback: false,
            },
            &catalog.balance_maxima(),
        )
        .await?;
        sqlx::query("insert into reward_claim (id, player_id, rule, amount, entry_id, created_at) values ($1, $2, $3, $4, $5, $6)")
            .bind(Uuid::now_v7().to_string())
            .bind(player_id.to_string())
            .bind(code.as_str())
            .bind(amount)
            .bind(entry.id.to_string())
            .bind(now_micros())
            .execute(&mut *conn)
            .await?;
        let facts = ReceiptFacts::given(EntryKind::Reward, movement.granted);
        let receipt = issue_receipt(conn, player_id, entry.id, facts).await?;
        Ok(RewardClaimResult {
            rule: code,
            earned: CurrencyAmount { currency: rule.currency, amount },
            wallet: read_wallet(conn, player_id).await?,
            receipt,
        })
    }
}

/// `POST /admin/v1/players/{id}/grants`: an operator gives currency and/or items, with a reason.
#[derive(Debug, Clone)]
pub struct GrantOp {
    /// The player.
    pub player_id: Uuid,
    /// The operator, as recorded in the entry and the audit log.
    pub actor: String,
    /// What to give.
    pub request: GrantRequest,
}

impl MoneyOp for GrantOp {
    type Output = GrantResult;
    const SUCCESS: StatusCode = StatusCode::CREATED;

    async fn apply(self, state: &AppState, conn: &mut AnyConnection) -> ApiResult<GrantResult> {
        let Self { player_id, actor, request } = self;
        // Operators may grant to a blocked player (to make good, for example).
        let _unchecked = lock_player(conn, player_id).await?;
        let catalog = state.catalog_cache().get(conn).await?;
        let mut movement = Movement::default();
        if let (Some(currency), Some(amount)) = (&request.currency, request.amount) {
            if catalog.currency(currency).is_none() {
                return Err(ApiError::validation(
                    "currency",
                    format!("currency `{currency}` does not exist"),
                ));
            }
            movement.grant_currency(player_id, currency, amount);
        }
        for (index, grant) in request.items.iter().enumerate() {
            let item = catalog.item(&grant.sku).ok_or_else(|| {
                ApiError::validation(
                    &format!("items[{index}].sku"),
                    format!("item `{}` is not in the live catalog", grant.sku),
                )
            })?;
            movement.grant_item(item, grant.quantity);
        }
        movement.check(conn, player_id, &catalog).await?;
        let entry = append_entry(
            conn,
            &NewEntry {
                kind: EntryKind::OperatorGrant,
                player_id: Some(player_id),
                actor: actor.clone(),
                reason: Some(request.reason.as_str().to_owned()),
                postings: movement.postings,
                items: movement.items,
                clawback: false,
            },
            &catalog.balance_maxima(),
        )
        .await?;
        let granted_json = serde_json::to_string(&movement.granted).map_err(anyhow::Error::from)?;
        crate::catalog::append_audit(
            conn,
            &actor,
            "player.grant",
            &player_id.to_string(),
            None,
            Some(&granted_json),
        )
        .await?;
        let facts = ReceiptFacts::given(EntryKind::OperatorGrant, movement.granted.clone());
        let receipt = issue_receipt(conn, player_id, entry.id, facts).await?;
        Ok(GrantResult {
            entry_id: entry.id,
            granted: movement.granted,
            wallet: read_wallet(conn, player_id).await?,
            inventory: Inventory { items: read_inventory(conn, player_id).await? },
            receipt,
        })
    }
}

/// Grants a new player every currency's initial grant, in one entry.
///
/// # Errors
/// Fails when the database does.
pub async fn grant_initial_balances(
    conn: &mut AnyConnection,
    state: &AppState,
    player_id: Uuid,
) -> ApiResult<()> {
    let catalog = state.catalog_cache().get(conn).await?;
    let mut currencies: Vec<_> = catalog.currencies().filter(|currency| currency.initial_grant > 0).collect();
    if currencies.is_empty() {
        return Ok(());
    }
    currencies.sort_by(|a, b| a.code.cmp(&b.code));
    let mut movement = Movement::default();
    for currency in currencies {
        movement.grant_currency(player_id, &currency.code, currency.initial_grant);
    }
    append_entry(
        conn,
        &NewEntry {
            kind: EntryKind::InitialGrant,
            player_id: Some(player_id),
            actor: "system".to_owned(),
            reason: None,
            postings: movement.postings,
            items: Vec::new(),
            clawback: false,
        },
        &catalog.balance_maxima(),
    )
    .await?;
    Ok(())
}
