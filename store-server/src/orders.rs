//! Real-money orders: pricing and limits, the state machine with every transition recorded,
//! fulfilment when the provider says the payment succeeded, refunds and chargebacks that return
//! the money and claw back the grant, and the sweepers that expire orders and submit refunds.
//!
//! Money postings use ISO currency accounts in micros: on fulfilment the clearing account gives
//! the gross, the fees account takes the fee and revenue takes the net; a reversal returns the
//! refunded amount from revenue to clearing (the provider keeps its fee).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use rust_decimal::Decimal;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row as _};
use store_api::catalog::{Item, Offer, Price, Settlement};
use store_api::ledger::EntryKind;
use store_api::orders::{
    CreateOrderRequest, Order, OrderStatus, OrderTransition, Refund, RefundKind, RefundStatus,
};
use store_api::{ErrorCode, Money, MoneyCurrency};
use uuid::Uuid;

use crate::app::AppState;
use crate::catalog::{CatalogSnapshot, RenderedCatalog};
use crate::db::{from_micros, now_micros, to_micros};
use crate::error::{ApiError, ApiResult};
use crate::events::push_event;
use crate::idempotency::MoneyOp;
use crate::ledger::{
    AccountId, ItemDelta, NewEntry, Posting, SystemAccount, append_entry, item_quantity, lock_player,
};
use crate::operations::{Movement, period_window};
use crate::payments::{Checkout, RefundCall};
use crate::receipts::{ReceiptFacts, find_receipt_of_entry, issue_receipt};

const ORDER_COLUMNS: &str = "id, player_id, offer_id, sku, quantity, price_index, currency, gross_micros, fee_micros, \
     net_micros, refunded_micros, status, provider, provider_session, provider_payment, checkout_url, catalog_version, \
     entry_id, failure_reason, expires_at, created_at, updated_at, tab_id";

/// An order as stored.
#[derive(Debug, Clone)]
pub struct OrderRecord {
    /// The order.
    pub id: Uuid,
    /// The buyer.
    pub player_id: Uuid,
    offer_id: String,
    sku: String,
    quantity: i64,
    price_index: i64,
    /// The ISO currency.
    pub currency: MoneyCurrency,
    /// What the player is charged, in micros.
    pub gross_micros: i64,
    fee_micros: Option<i64>,
    net_micros: Option<i64>,
    /// Refunded so far, in micros.
    pub refunded_micros: i64,
    /// Where it is.
    pub status: OrderStatus,
    /// The provider's name.
    pub provider: String,
    provider_payment: Option<String>,
    checkout_url: String,
    catalog_version: i64,
    entry_id: Option<String>,
    failure_reason: Option<String>,
    expires_at: i64,
    created_at: i64,
    updated_at: i64,
    /// The tab a settlement order settles.
    pub tab_id: Option<Uuid>,
}

fn corrupt(what: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(anyhow::anyhow!("stored order {what}: {error}"))
}

impl OrderRecord {
    fn from_row(row: &AnyRow) -> ApiResult<Self> {
        let text = |column: &str| row.try_get::<String, _>(column).map_err(|error| corrupt(column, error));
        let number = |column: &str| row.try_get::<i64, _>(column).map_err(|error| corrupt(column, error));
        let optional_number =
            |column: &str| row.try_get::<Option<i64>, _>(column).map_err(|error| corrupt(column, error));
        let optional_text =
            |column: &str| row.try_get::<Option<String>, _>(column).map_err(|error| corrupt(column, error));
        Ok(Self {
            id: Uuid::parse_str(&text("id")?).map_err(|error| corrupt("id", error))?,
            player_id: Uuid::parse_str(&text("player_id")?).map_err(|error| corrupt("player_id", error))?,
            offer_id: text("offer_id")?,
            sku: text("sku")?,
            quantity: number("quantity")?,
            price_index: number("price_index")?,
            currency: MoneyCurrency::parse(&text("currency")?).map_err(|error| corrupt("currency", error))?,
            gross_micros: number("gross_micros")?,
            fee_micros: optional_number("fee_micros")?,
            net_micros: optional_number("net_micros")?,
            refunded_micros: number("refunded_micros")?,
            status: OrderStatus::parse(&text("status")?).map_err(|error| corrupt("status", error))?,
            provider: text("provider")?,
            provider_payment: optional_text("provider_payment")?,
            checkout_url: text("checkout_url")?,
            catalog_version: number("catalog_version")?,
            entry_id: optional_text("entry_id")?,
            failure_reason: optional_text("failure_reason")?,
            expires_at: number("expires_at")?,
            created_at: number("created_at")?,
            updated_at: number("updated_at")?,
            tab_id: optional_text("tab_id")?
                .map(|id| Uuid::parse_str(&id).map_err(|error| corrupt("tab_id", error)))
                .transpose()?,
        })
    }

    fn money(&self, micros: i64) -> Money {
        Money::from_micros(self.currency, micros)
    }

    /// The order as the API shows it.
    ///
    /// # Errors
    /// Fails when a stored value is unreadable.
    pub fn to_wire(
        &self,
        receipt: Option<store_api::receipt::SignedReceipt>,
        transitions: Vec<OrderTransition>,
    ) -> ApiResult<Order> {
        Ok(Order {
            id: self.id,
            status: self.status,
            offer_id: (!self.offer_id.is_empty())
                .then(|| {
                    store_api::catalog::OfferId::parse(&self.offer_id)
                        .map_err(|error| corrupt("offer_id", error))
                })
                .transpose()?,
            sku: (!self.sku.is_empty())
                .then(|| store_api::catalog::Sku::parse(&self.sku).map_err(|error| corrupt("sku", error)))
                .transpose()?,
            tab_id: self.tab_id,
            quantity: self.quantity,
            price_index: u32::try_from(self.price_index).map_err(|error| corrupt("price_index", error))?,
            amount: self.money(self.gross_micros),
            fee: self.fee_micros.map(|fee| self.money(fee)),
            net: self.net_micros.map(|net| self.money(net)),
            refunded: self.money(self.refunded_micros),
            checkout_url: self.checkout_url.clone(),
            expires_at: from_micros(self.expires_at),
            failure_reason: self.failure_reason.clone(),
            created_at: from_micros(self.created_at),
            updated_at: from_micros(self.updated_at),
            receipt,
            transitions,
        })
    }
}

/// One order (any player's); callers check ownership.
///
/// # Errors
/// Fails when the database does.
pub async fn find_order(conn: &mut AnyConnection, id: Uuid) -> ApiResult<Option<OrderRecord>> {
    let row =
        sqlx::query(sqlx::AssertSqlSafe(format!("select {ORDER_COLUMNS} from payment_order where id = $1")))
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    row.as_ref().map(OrderRecord::from_row).transpose()
}

/// Locks an order's row for the rest of the transaction (a no-op update, as in `lock_player`)
/// and reads it. `filter` is a `where` clause over `binds`.
async fn lock_order(
    conn: &mut AnyConnection,
    filter: &'static str,
    binds: &[&str],
) -> ApiResult<Option<OrderRecord>> {
    let sql = format!("update payment_order set updated_at = updated_at where {filter} returning id");
    let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
    for bind in binds {
        query = query.bind(bind.to_string());
    }
    let id: Option<String> = query.fetch_optional(&mut *conn).await?;
    match id {
        Some(id) => find_order(conn, Uuid::parse_str(&id).map_err(|error| corrupt("id", error))?).await,
        None => Ok(None),
    }
}

/// A page of orders, newest first; one player's, or everyone's.
///
/// # Errors
/// Fails when the database does.
pub async fn list_orders(
    conn: &mut AnyConnection,
    player_id: Option<Uuid>,
    page: &crate::extract::Page,
) -> ApiResult<(Vec<Order>, Option<String>)> {
    let before = page.cursor.clone().unwrap_or_else(|| "~".to_owned());
    let rows = match player_id {
        Some(player) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "select {ORDER_COLUMNS} from payment_order where player_id = $1 and id < $2 order by id desc limit $3"
            )))
            .bind(player.to_string())
            .bind(before)
            .bind(page.fetch_count())
            .fetch_all(&mut *conn)
            .await?
        }
        None => {
            sqlx::query(sqlx::AssertSqlSafe(format!("select {ORDER_COLUMNS} from payment_order where id < $1 order by id desc limit $2")))
                .bind(before)
                .bind(page.fetch_count())
                .fetch_all(&mut *conn)
                .await?
        }
    };
    let records = rows.iter().map(OrderRecord::from_row).collect::<ApiResult<Vec<_>>>()?;
    let (records, next) = page.finish(records, |record| record.id.to_string());
    let orders = records.iter().map(|record| record.to_wire(None, Vec::new())).collect::<ApiResult<_>>()?;
    Ok((orders, next))
}

/// An order with its receipt and its transitions, as a single read shows it.
///
/// # Errors
/// Fails when the database does.
pub async fn order_detail(conn: &mut AnyConnection, record: &OrderRecord) -> ApiResult<Order> {
    let rows: Vec<(String, String, String, i64)> =
        sqlx::query_as("select from_status, to_status, cause, created_at from order_transition where order_id = $1 order by id")
            .bind(record.id.to_string())
            .fetch_all(&mut *conn)
            .await?;
    let transitions = rows
        .into_iter()
        .map(|(from, to, cause, at)| {
            Ok(OrderTransition {
                from: OrderStatus::parse(&from).map_err(|error| corrupt("transition", error))?,
                to: OrderStatus::parse(&to).map_err(|error| corrupt("transition", error))?,
                cause,
                at: from_micros(at),
            })
        })
        .collect::<ApiResult<_>>()?;
    let receipt = match &record.entry_id {
        Some(entry_id) => find_receipt_of_entry(conn, entry_id).await?,
        None => None,
    };
    record.to_wire(receipt, transitions)
}

fn state_conflict(record: &OrderRecord, action: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::OrderStateConflict,
        format!("an order that is {} cannot be {action}", record.status.as_str()),
    )
    .with_detail("status", record.status.as_str())
}

/// Moves an order to `to`, refusing an illegal move, and records why.
async fn transition(
    conn: &mut AnyConnection,
    record: &mut OrderRecord,
    to: OrderStatus,
    cause: &str,
) -> ApiResult<()> {
    if !record.status.can_become(to) {
        return Err(state_conflict(record, &format!("moved to {}", to.as_str())));
    }
    let now = now_micros();
    let moved =
        sqlx::query("update payment_order set status = $3, updated_at = $4 where id = $1 and status = $2")
            .bind(record.id.to_string())
            .bind(record.status.as_str())
            .bind(to.as_str())
            .bind(now)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    if moved != 1 {
        return Err(ApiError::Internal(anyhow::anyhow!("order {} changed under its lock", record.id)));
    }
    sqlx::query("insert into order_transition (order_id, from_status, to_status, cause, created_at) values ($1, $2, $3, $4, $5)")
        .bind(record.id.to_string())
        .bind(record.status.as_str())
        .bind(to.as_str())
        .bind(cause)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    record.status = to;
    record.updated_at = now;
    announce(conn, record).await
}

async fn announce(conn: &mut AnyConnection, record: &OrderRecord) -> ApiResult<()> {
    push_event(conn, record.player_id, "order.updated", &record.to_wire(None, Vec::new())?).await
}

/// The offer, item, price index and total of an order request, priced from the live catalog.
#[derive(Debug)]
pub struct Priced<'c> {
    /// The offer.
    pub offer: &'c Offer,
    /// The item.
    pub item: &'c Item,
    /// Which price.
    pub price_index: u32,
    /// Price x quantity.
    pub total: Money,
    /// The experiment variant the price comes from.
    pub variant: Option<String>,
}

/// Prices an order request and checks the amount against the minimum charge and the order limit.
///
/// # Errors
/// `offer_not_available`, `price_requires_purchase`, `invalid_request`, `amount_below_minimum`,
/// `amount_above_maximum`.
pub fn price_order<'c>(
    catalog: &'c RenderedCatalog,
    request: &CreateOrderRequest,
    buyer: &crate::pricing::Buyer,
) -> ApiResult<Priced<'c>> {
    let offer = catalog.offer(request.offer_id).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::OfferNotAvailable,
            format!("offer `{}` is not in the live catalog", request.offer_id),
        )
        .with_detail("reason", "unknown")
    })?;
    crate::operations::check_sale_window(offer, crate::db::now())?;
    let item = catalog
        .item(&offer.sku)
        .ok_or_else(|| anyhow::anyhow!("live offer {} sells unknown sku {}", offer.id, offer.sku))?;
    let requires_purchase = || {
        ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::PriceRequiresPurchase,
            "this price is virtual currency or settles on a tab; buy it with POST /v1/purchases",
        )
    };
    let (prices, variant) = crate::pricing::effective_prices(offer, buyer);
    let price_index = match request.price_index {
        Some(index) => index,
        None => prices
            .iter()
            .position(|price| matches!(price, Price::Real { settlement: Settlement::Immediate, .. }))
            .and_then(|index| u32::try_from(index).ok())
            .ok_or_else(requires_purchase)?,
    };
    let price = usize::try_from(price_index).ok().and_then(|index| prices.get(index)).ok_or_else(|| {
        ApiError::invalid(
            "price_index",
            format!("the offer has {} prices; price_index {price_index} is not one", prices.len()),
        )
    })?;
    let Price::Real { money, settlement: Settlement::Immediate } = price else {
        return Err(requires_purchase());
    };
    if request.quantity.get() > 1 && item.kind == store_api::catalog::ItemKind::Durable {
        return Err(ApiError::invalid("quantity", "a durable item is bought one at a time"));
    }
    let total =
        Money { currency: money.currency, amount: money.amount * Decimal::from(request.quantity.get()) };
    let minimum = money.currency.minimum_charge();
    if total.amount < minimum.amount {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AmountBelowMinimum,
            format!("{total} is below the minimum card charge of {minimum}"),
        )
        .with_detail("minimum", minimum.amount.normalize().to_string()));
    }
    let maximum = Decimal::from(store_api::limits::ORDER_AMOUNT_UNITS_MAX);
    if total.amount > maximum {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AmountAboveMaximum,
            format!("{total} is above the largest single order"),
        )
        .with_detail("maximum", maximum.to_string()));
    }
    Ok(Priced { offer, item, price_index, total, variant: variant.map(str::to_owned) })
}

/// Prices an order request and checks the player's limits without writing anything, so a
/// request the store would refuse never opens a checkout session. Returns the total and a
/// description for the checkout page. The order's own transaction checks all of it again.
///
/// # Errors
/// As [`price_order`], and `spending_limit_exceeded`.
pub async fn precheck_order(
    conn: &mut AnyConnection,
    state: &AppState,
    player_id: Uuid,
    request: &CreateOrderRequest,
) -> ApiResult<(Money, String)> {
    check_velocity(conn, state, player_id).await?;
    let catalog = state.catalog_cache().get(conn).await?;
    let priced = price_order(&catalog, request, &crate::pricing::buyer(conn, player_id).await?)?;
    let minor: Option<i64> = sqlx::query_scalar("select minor from player where id = $1")
        .bind(player_id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    check_spending(conn, state, player_id, minor.unwrap_or(0) != 0, priced.total).await?;
    Ok((priced.total, format!("{} × {}", priced.item.name.as_str(), request.quantity.get())))
}

/// 403 `player_flagged`.
fn player_flagged(reason: Option<String>) -> ApiError {
    let reason = reason.unwrap_or_else(|| "flagged for review".to_owned());
    ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::PlayerFlagged,
        format!("orders are paused while this player is reviewed ({reason}); an operator can clear the flag"),
    )
    .with_detail("reason", reason)
}

/// Refuses a new order from a flagged player.
async fn refuse_if_flagged(conn: &mut AnyConnection, player_id: Uuid) -> ApiResult<()> {
    let flag: Option<(Option<i64>, Option<String>)> =
        sqlx::query_as("select flagged_at, flag_reason from player where id = $1")
            .bind(player_id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    match flag {
        Some((Some(_), reason)) => Err(player_flagged(reason)),
        _ => Ok(()),
    }
}

/// The velocity check before a new order: a flagged player waits for review; a player with too
/// many orders (in 10 minutes) or declined payments (in an hour) is flagged now, in a
/// transaction of its own (so the flag stays although the order is refused), and refused.
async fn check_velocity(conn: &mut AnyConnection, state: &AppState, player_id: Uuid) -> ApiResult<()> {
    refuse_if_flagged(conn, player_id).await?;
    let now = now_micros();
    let window = |span: std::time::Duration| now - i64::try_from(span.as_micros()).unwrap_or(i64::MAX);
    let orders: i64 =
        sqlx::query_scalar("select count(*) from payment_order where player_id = $1 and created_at >= $2")
            .bind(player_id.to_string())
            .bind(window(crate::settings::VELOCITY_ORDERS_WINDOW))
            .fetch_one(&mut *conn)
            .await?;
    let declines: i64 = sqlx::query_scalar(
        "select count(*) from order_transition t join payment_order o on o.id = t.order_id \
         where o.player_id = $1 and t.to_status = 'failed' and t.created_at >= $2",
    )
    .bind(player_id.to_string())
    .bind(window(crate::settings::VELOCITY_DECLINES_WINDOW))
    .fetch_one(&mut *conn)
    .await?;
    let settings = state.settings();
    let reason = if orders >= i64::from(settings.velocity_orders_max) {
        format!("{orders} orders in 10 minutes")
    } else if declines >= i64::from(settings.velocity_declines_max) {
        format!("{declines} declined payments in an hour")
    } else {
        return Ok(());
    };
    let mut tx = state.db().begin_write().await?;
    let flagged = sqlx::query(
        "update player set flagged_at = $2, flag_reason = $3 where id = $1 and flagged_at is null",
    )
    .bind(player_id.to_string())
    .bind(now)
    .bind(&reason)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if flagged == 1 {
        let after = serde_json::json!({ "flagged": true, "reason": reason }).to_string();
        crate::catalog::append_audit(
            &mut tx,
            "system:velocity",
            "player.flag",
            &player_id.to_string(),
            None,
            Some(&after),
        )
        .await?;
    }
    tx.commit().await?;
    tracing::warn!(%player_id, %reason, "velocity check flagged a player");
    Err(player_flagged(Some(reason)))
}

/// Checks the player's spending limits for a new order of `total`.
async fn check_spending(
    conn: &mut AnyConnection,
    state: &AppState,
    player_id: Uuid,
    minor: bool,
    total: Money,
) -> ApiResult<()> {
    let (day_limit, month_limit) = state.settings().spending_limits.limits(total.currency, minor);
    let total_micros = total.to_micros().map_err(|error| anyhow::anyhow!(error))?;
    let now = crate::db::now();
    for (period, limit, name) in [
        (store_api::catalog::LimitPeriod::Day, day_limit, "day"),
        (store_api::catalog::LimitPeriod::Month, month_limit, "month"),
    ] {
        let (start, resets_at) = period_window(period, now);
        let spent: Option<i64> = sqlx::query_scalar(
            "select cast(sum(gross_micros) as bigint) from payment_order where player_id = $1 and currency = $2 \
             and created_at >= $3 and status not in ('failed', 'expired', 'canceled')",
        )
        .bind(player_id.to_string())
        .bind(total.currency.code())
        .bind(to_micros(start))
        .fetch_one(&mut *conn)
        .await?;
        let spent = spent.unwrap_or(0);
        let limit_micros = Money { currency: total.currency, amount: limit }
            .to_micros()
            .map_err(|error| anyhow::anyhow!(error))?;
        if spent + total_micros > limit_micros {
            let remaining = Money::from_micros(total.currency, (limit_micros - spent).max(0));
            let mut error = ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::SpendingLimitExceeded,
                format!(
                    "this order would pass the spending limit of {limit} {} per {name}; {remaining} remains",
                    total.currency
                ),
            )
            .with_detail("period", name)
            .with_detail("limit", limit.normalize().to_string())
            .with_detail("remaining", remaining.amount.normalize().to_string());
            if let Some(resets_at) = resets_at {
                error = error.with_detail("resets_at", crate::operations::rfc3339(resets_at));
            }
            return Err(error);
        }
    }
    Ok(())
}

/// `POST /v1/orders`, once the provider's checkout session is open: checks again inside the
/// transaction and records the order.
#[derive(Debug, Clone)]
pub struct CreateOrderOp {
    /// The new order's id.
    pub order_id: Uuid,
    /// The buyer.
    pub player_id: Uuid,
    /// What they asked for.
    pub request: CreateOrderRequest,
    /// The provider.
    pub provider: &'static str,
    /// The session opened for it.
    pub checkout: Checkout,
    /// When it expires, microseconds.
    pub expires_at: i64,
}

impl MoneyOp for CreateOrderOp {
    type Output = Order;
    const SUCCESS: StatusCode = StatusCode::CREATED;

    async fn apply(self, state: &AppState, conn: &mut AnyConnection) -> ApiResult<Order> {
        let lock = lock_player(conn, self.player_id).await?;
        lock.refuse_if_blocked()?;
        refuse_if_flagged(conn, self.player_id).await?;
        let catalog = state.catalog_cache().get(conn).await?;
        let priced =
            price_order(&catalog, &self.request, &crate::pricing::buyer(conn, self.player_id).await?)?;
        check_spending(conn, state, self.player_id, lock.is_minor(), priced.total).await?;
        let gross_micros = priced.total.to_micros().map_err(|error| anyhow::anyhow!(error))?;
        let now = now_micros();
        sqlx::query(
            "insert into payment_order (id, player_id, offer_id, sku, quantity, price_index, currency, gross_micros, status, \
             provider, provider_session, checkout_url, catalog_version, expires_at, created_at, updated_at, price_variant) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, 'requires_payment', $9, $10, $11, $12, $13, $14, $14, $15)",
        )
        .bind(self.order_id.to_string())
        .bind(self.player_id.to_string())
        .bind(priced.offer.id.to_string())
        .bind(priced.item.sku.as_str())
        .bind(self.request.quantity.get())
        .bind(i64::from(priced.price_index))
        .bind(priced.total.currency.code())
        .bind(gross_micros)
        .bind(self.provider)
        .bind(&self.checkout.id)
        .bind(&self.checkout.checkout_url)
        .bind(catalog.version)
        .bind(self.expires_at)
        .bind(now)
        .bind(priced.variant.clone())
        .execute(&mut *conn)
        .await?;
        let record =
            find_order(conn, self.order_id).await?.ok_or_else(|| anyhow::anyhow!("order vanished"))?;
        announce(conn, &record).await?;
        record.to_wire(None, Vec::new())
    }
}

/// The item an order bought, and the items it may grant, from the catalog version it was
/// priced from (so a later catalog change never changes what a paid order delivers).
async fn order_snapshot(
    conn: &mut AnyConnection,
    state: &AppState,
    record: &OrderRecord,
) -> ApiResult<CatalogSnapshot> {
    let live = state.catalog_cache().get(conn).await?;
    if live.version == record.catalog_version {
        return Ok(live.snapshot());
    }
    crate::catalog::version_snapshot(conn, record.catalog_version).await?.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "order {} names missing catalog version {}",
            record.id,
            record.catalog_version
        ))
    })
}

fn granted_by(snapshot: &CatalogSnapshot, record: &OrderRecord) -> ApiResult<Movement> {
    let items: BTreeMap<&str, &Item> = snapshot.items.iter().map(|item| (item.sku.as_str(), item)).collect();
    let item = items
        .get(record.sku.as_str())
        .ok_or_else(|| anyhow::anyhow!("order {} sells unknown sku {}", record.id, record.sku))?;
    let mut movement = Movement::default();
    movement.grant_bought(record.player_id, item, record.quantity, |sku| items.get(sku.as_str()).copied())?;
    Ok(movement)
}

/// A system account in real money (amounts in micros), named by the ISO code.
fn money_account(kind: SystemAccount, currency: MoneyCurrency) -> ApiResult<AccountId> {
    Ok(AccountId::System(kind, currency.code().to_owned()))
}

/// `payment.succeeded`: marks the order paid and fulfils it in the same transaction. A payment
/// for an order that cannot be fulfilled any more (the wallet would pass its maximum, a durable
/// item is already owned) stays `paid` and is refunded in full.
///
/// # Errors
/// `not_found` for an unknown session, `order_state_conflict` for an order that cannot be paid.
pub async fn payment_succeeded(
    conn: &mut AnyConnection,
    state: &AppState,
    provider: &str,
    session_id: &str,
    payment_id: &str,
    fee: Money,
    cause: &str,
) -> ApiResult<()> {
    let mut record = lock_order(conn, "provider = $1 and provider_session = $2", &[provider, session_id])
        .await?
        .ok_or_else(|| ApiError::not_found("checkout session", session_id))?;
    if matches!(
        record.status,
        OrderStatus::Paid
            | OrderStatus::Fulfilled
            | OrderStatus::PartiallyRefunded
            | OrderStatus::Refunded
            | OrderStatus::Disputed
            | OrderStatus::ChargedBack
    ) {
        return Ok(()); // Already paid: a replay with another event id changes nothing.
    }
    let fee_micros =
        fee.to_micros().map_err(|error| ApiError::invalid("data.fee", error))?.clamp(0, record.gross_micros);
    let net_micros = record.gross_micros - fee_micros;
    sqlx::query(
        "update payment_order set provider_payment = $2, fee_micros = $3, net_micros = $4 where id = $1",
    )
    .bind(record.id.to_string())
    .bind(payment_id)
    .bind(fee_micros)
    .bind(net_micros)
    .execute(&mut *conn)
    .await?;
    record.provider_payment = Some(payment_id.to_owned());
    record.fee_micros = Some(fee_micros);
    record.net_micros = Some(net_micros);
    transition(conn, &mut record, OrderStatus::Paid, cause).await?;

    if let Some(tab_id) = record.tab_id {
        let entry_id =
            crate::tabs::settlement_paid(conn, tab_id, record.id, record.gross_micros, fee_micros, provider)
                .await?;
        sqlx::query("update payment_order set entry_id = $2 where id = $1")
            .bind(record.id.to_string())
            .bind(entry_id.to_string())
            .execute(&mut *conn)
            .await?;
        record.entry_id = Some(entry_id.to_string());
        let facts = ReceiptFacts {
            kind: EntryKind::TabSettlement,
            purchase_id: None,
            offer_id: None,
            paid: None,
            paid_money: Some(record.money(record.gross_micros)),
            order_id: Some(record.id),
            granted: store_api::ledger::Granted::default(),
        };
        issue_receipt(conn, record.player_id, entry_id, facts).await?;
        return transition(conn, &mut record, OrderStatus::Fulfilled, "the tab is settled").await;
    }

    let snapshot = order_snapshot(conn, state, &record).await?;
    let mut movement = granted_by(&snapshot, &record)?;
    let catalog = state.catalog_cache().get(conn).await?;
    if let Err(error) = movement.check(conn, record.player_id, &catalog).await {
        let reason = format!("could not be fulfilled: {error}");
        sqlx::query("update payment_order set failure_reason = $2 where id = $1")
            .bind(record.id.to_string())
            .bind(&reason)
            .execute(&mut *conn)
            .await?;
        record_money_received(conn, &record).await?;
        create_refund(conn, &record, record.gross_micros, &reason, "system", RefundKind::Refund).await?;
        return announce(conn, &record).await;
    }
    movement.postings.push(Posting {
        account: money_account(SystemAccount::Clearing, record.currency)?,
        amount: -record.gross_micros,
    });
    if fee_micros > 0 {
        movement.postings.push(Posting {
            account: money_account(SystemAccount::Fees, record.currency)?,
            amount: fee_micros,
        });
    }
    if net_micros > 0 {
        movement.postings.push(Posting {
            account: money_account(SystemAccount::Revenue, record.currency)?,
            amount: net_micros,
        });
    }
    if let Some(item) = snapshot.items.iter().find(|item| item.sku.as_str() == record.sku) {
        movement.postings.extend(crate::revenue_share::share_postings(
            item,
            record.currency.code(),
            net_micros,
        ));
    }
    let entry = append_entry(
        conn,
        &NewEntry {
            kind: EntryKind::OrderFulfillment,
            player_id: Some(record.player_id),
            actor: format!("provider:{provider}"),
            reason: Some(format!("order {}", record.id)),
            postings: movement.postings,
            items: movement.items,
            clawback: false,
        },
        &catalog.balance_maxima(),
    )
    .await?;
    sqlx::query("update payment_order set entry_id = $2 where id = $1")
        .bind(record.id.to_string())
        .bind(entry.id.to_string())
        .execute(&mut *conn)
        .await?;
    record.entry_id = Some(entry.id.to_string());
    let facts = ReceiptFacts {
        kind: EntryKind::OrderFulfillment,
        purchase_id: None,
        offer_id: store_api::catalog::OfferId::parse(&record.offer_id).ok(),
        paid: None,
        paid_money: Some(record.money(record.gross_micros)),
        order_id: Some(record.id),
        granted: movement.granted,
    };
    issue_receipt(conn, record.player_id, entry.id, facts).await?;
    transition(conn, &mut record, OrderStatus::Fulfilled, "granted in the payment's transaction").await
}

/// Books money received for an order that is not fulfilled (to be refunded): clearing gives the
/// gross, fees and revenue take fee and net, so the refund can reverse it like any other.
async fn record_money_received(conn: &mut AnyConnection, record: &OrderRecord) -> ApiResult<()> {
    let fee = record.fee_micros.unwrap_or(0);
    let net = record.gross_micros - fee;
    let mut postings = vec![Posting {
        account: money_account(SystemAccount::Clearing, record.currency)?,
        amount: -record.gross_micros,
    }];
    if fee > 0 {
        postings.push(Posting { account: money_account(SystemAccount::Fees, record.currency)?, amount: fee });
    }
    if net > 0 {
        postings
            .push(Posting { account: money_account(SystemAccount::Revenue, record.currency)?, amount: net });
    }
    let entry = append_entry(
        conn,
        &NewEntry {
            kind: EntryKind::OrderFulfillment,
            player_id: Some(record.player_id),
            actor: format!("provider:{}", record.provider),
            reason: Some(format!("order {} paid but not fulfilled", record.id)),
            postings,
            items: Vec::new(),
            clawback: false,
        },
        &BTreeMap::new(),
    )
    .await?;
    sqlx::query("update payment_order set entry_id = $2 where id = $1")
        .bind(record.id.to_string())
        .bind(entry.id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// `payment.failed`: the order fails with the provider's reason.
///
/// # Errors
/// `not_found` for an unknown session, `order_state_conflict` for an order past payment.
pub async fn payment_failed(
    conn: &mut AnyConnection,
    provider: &str,
    session_id: &str,
    reason: &str,
    cause: &str,
) -> ApiResult<()> {
    let mut record = lock_order(conn, "provider = $1 and provider_session = $2", &[provider, session_id])
        .await?
        .ok_or_else(|| ApiError::not_found("checkout session", session_id))?;
    if record.status == OrderStatus::Failed {
        return Ok(());
    }
    sqlx::query("update payment_order set failure_reason = $2 where id = $1")
        .bind(record.id.to_string())
        .bind(reason)
        .execute(&mut *conn)
        .await?;
    record.failure_reason = Some(reason.to_owned());
    if let Some(tab_id) = record.tab_id {
        crate::tabs::settlement_abandoned(conn, tab_id).await?;
    }
    transition(conn, &mut record, OrderStatus::Failed, cause).await
}

/// Records a refund or chargeback of `amount_micros` as `pending`; the refund worker sends
/// refunds to the provider, chargebacks are already done.
async fn create_refund(
    conn: &mut AnyConnection,
    record: &OrderRecord,
    amount_micros: i64,
    reason: &str,
    actor: &str,
    kind: RefundKind,
) -> ApiResult<Refund> {
    let id = Uuid::now_v7();
    let now = now_micros();
    let kind_text = match kind {
        RefundKind::Refund => "refund",
        RefundKind::Chargeback => "chargeback",
    };
    sqlx::query(
        "insert into refund (id, order_id, kind, amount_micros, reason, actor, status, created_at, updated_at) \
         values ($1, $2, $3, $4, $5, $6, 'pending', $7, $7)",
    )
    .bind(id.to_string())
    .bind(record.id.to_string())
    .bind(kind_text)
    .bind(amount_micros)
    .bind(reason)
    .bind(actor)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(Refund {
        id,
        order_id: record.id,
        kind,
        amount: record.money(amount_micros),
        reason: reason.to_owned(),
        status: RefundStatus::Pending,
        created_at: from_micros(now),
    })
}

/// `POST /admin/v1/orders/{id}/refunds`: records a refund to be sent to the provider.
#[derive(Debug, Clone)]
pub struct RefundOp {
    /// The order.
    pub order_id: Uuid,
    /// How much, in the order's currency; everything refundable when absent.
    pub amount: Option<String>,
    /// Why.
    pub reason: String,
    /// The operator.
    pub actor: String,
}

impl MoneyOp for RefundOp {
    type Output = Refund;
    const SUCCESS: StatusCode = StatusCode::ACCEPTED;

    async fn apply(self, _state: &AppState, conn: &mut AnyConnection) -> ApiResult<Refund> {
        let id = self.order_id.to_string();
        let record =
            lock_order(conn, "id = $1", &[&id]).await?.ok_or_else(|| ApiError::not_found("order", &id))?;
        if !matches!(record.status, OrderStatus::Fulfilled | OrderStatus::PartiallyRefunded) {
            return Err(state_conflict(&record, "refunded"));
        }
        let reserved: Option<i64> =
            sqlx::query_scalar("select cast(sum(amount_micros) as bigint) from refund where order_id = $1 and status in ('pending', 'submitted')")
                .bind(&id)
                .fetch_one(&mut *conn)
                .await?;
        let refundable = record.gross_micros - record.refunded_micros - reserved.unwrap_or(0);
        let amount = match &self.amount {
            None => refundable,
            Some(text) => {
                let amount = store_api::money::parse_amount(text)
                    .map_err(|error| ApiError::invalid("amount", error))?;
                let money = Money { currency: record.currency, amount };
                if amount.is_zero() || !money.is_whole_minor_units() {
                    return Err(ApiError::invalid(
                        "amount",
                        format!("a refund is a positive amount of whole {} minor units", record.currency),
                    ));
                }
                money.to_micros().map_err(|error| ApiError::invalid("amount", error))?
            }
        };
        if amount > refundable || refundable <= 0 {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::RefundExceedsPaid,
                format!("at most {} can still be refunded", record.money(refundable.max(0))),
            )
            .with_detail("refundable", record.money(refundable.max(0)).amount.normalize().to_string()));
        }
        let refund =
            create_refund(conn, &record, amount, &self.reason, &self.actor, RefundKind::Refund).await?;
        let after = serde_json::to_string(&refund).map_err(anyhow::Error::from)?;
        crate::catalog::append_audit(conn, &self.actor, "order.refund", &id, None, Some(&after)).await?;
        Ok(refund)
    }
}

/// Returns `amount_micros` of an order's money and claws back its grant in proportion: currency
/// grants by the share refunded so far (rounded down, so the total clawed never passes the
/// grant), items once the order is refunded in full. What the player spent or used up becomes a
/// debt: the wallet goes below zero through this entry alone and is flagged `in_debt`.
async fn reverse(
    conn: &mut AnyConnection,
    state: &AppState,
    record: &mut OrderRecord,
    refund_id: Uuid,
    amount_micros: i64,
    chargeback: bool,
    cause: &str,
) -> ApiResult<()> {
    let before = record.refunded_micros;
    let after = before + amount_micros;
    if after > record.gross_micros {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "refunds of order {} would pass its gross",
            record.id
        )));
    }
    let mut postings = vec![
        Posting { account: money_account(SystemAccount::Clearing, record.currency)?, amount: amount_micros },
        Posting { account: money_account(SystemAccount::Revenue, record.currency)?, amount: -amount_micros },
    ];
    let mut items = Vec::new();
    let fulfilled = record.entry_id.is_some() && record.failure_reason.is_none() && record.tab_id.is_none();
    if fulfilled {
        let snapshot = order_snapshot(conn, state, record).await?;
        // Creators give back their shares in the same proportion as the money refunded.
        if let Some(item) = snapshot.items.iter().find(|item| item.sku.as_str() == record.sku) {
            let credited = crate::revenue_share::split(record.net_micros.unwrap_or(0), &item.creators);
            for (share, part) in item.creators.iter().zip(credited) {
                let owed = |refunded: i64| {
                    i64::try_from(i128::from(part) * i128::from(refunded) / i128::from(record.gross_micros))
                        .unwrap_or(0)
                };
                let back = owed(after) - owed(before);
                if back > 0 {
                    let code = record.currency.code().to_owned();
                    postings.push(Posting {
                        account: AccountId::CreatorPayable(share.creator.as_str().to_owned(), code.clone()),
                        amount: -back,
                    });
                    postings.push(Posting {
                        account: AccountId::System(SystemAccount::Revenue, code),
                        amount: back,
                    });
                }
            }
        }
        let granted = granted_by(&snapshot, record)?.granted;
        for grant in &granted.currencies {
            let share = |refunded: i64| {
                i64::try_from(
                    i128::from(grant.amount) * i128::from(refunded) / i128::from(record.gross_micros),
                )
                .unwrap_or(0)
            };
            let claw = share(after) - share(before);
            if claw > 0 {
                postings.push(Posting {
                    account: AccountId::Wallet(record.player_id, grant.currency.clone()),
                    amount: -claw,
                });
                postings.push(Posting {
                    account: AccountId::System(SystemAccount::Issuance, grant.currency.as_str().to_owned()),
                    amount: claw,
                });
            }
        }
        if after == record.gross_micros {
            for grant in &granted.items {
                let held = item_quantity(conn, record.player_id, &grant.sku).await?;
                let taken = held.min(grant.quantity);
                if taken > 0 {
                    items.push(ItemDelta { sku: grant.sku.clone(), delta: -taken, quantity_max: i64::MAX });
                }
            }
        }
    }
    let entry = append_entry(
        conn,
        &NewEntry {
            kind: EntryKind::Reversal,
            player_id: Some(record.player_id),
            actor: format!("provider:{}", record.provider),
            reason: Some(cause.to_owned()),
            postings,
            items,
            clawback: true,
        },
        &BTreeMap::new(),
    )
    .await?;
    sqlx::query("update refund set status = 'succeeded', entry_id = $2, updated_at = $3 where id = $1")
        .bind(refund_id.to_string())
        .bind(entry.id.to_string())
        .bind(now_micros())
        .execute(&mut *conn)
        .await?;
    sqlx::query("update payment_order set refunded_micros = $2 where id = $1")
        .bind(record.id.to_string())
        .bind(after)
        .execute(&mut *conn)
        .await?;
    record.refunded_micros = after;
    let next = if chargeback {
        OrderStatus::ChargedBack
    } else if after == record.gross_micros {
        OrderStatus::Refunded
    } else {
        OrderStatus::PartiallyRefunded
    };
    transition(conn, record, next, cause).await
}

/// `refund.succeeded`: the provider returned the money; the ledger follows.
///
/// # Errors
/// `not_found` for an unknown refund.
pub async fn refund_succeeded(
    conn: &mut AnyConnection,
    state: &AppState,
    refund_id: Uuid,
    provider_refund: &str,
    cause: &str,
) -> ApiResult<()> {
    let row: Option<(String, i64, String)> =
        sqlx::query_as("select order_id, amount_micros, status from refund where id = $1")
            .bind(refund_id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    let (order_id, amount_micros, status) =
        row.ok_or_else(|| ApiError::not_found("refund", &refund_id.to_string()))?;
    if status == "succeeded" {
        return Ok(());
    }
    let mut record = lock_order(conn, "id = $1", &[&order_id])
        .await?
        .ok_or_else(|| ApiError::not_found("order", &order_id))?;
    sqlx::query("update refund set provider_refund = $2 where id = $1")
        .bind(refund_id.to_string())
        .bind(provider_refund)
        .execute(&mut *conn)
        .await?;
    reverse(conn, state, &mut record, refund_id, amount_micros, false, cause).await
}

/// `payment.disputed`: the dispute is lost; everything not yet refunded is charged back.
///
/// # Errors
/// `not_found` for an unknown payment; `order_state_conflict` when the order is not fulfilled yet
/// (the provider retries, so a dispute that overtakes its payment waits for it).
pub async fn payment_disputed(
    conn: &mut AnyConnection,
    state: &AppState,
    provider: &str,
    payment_id: &str,
    cause: &str,
) -> ApiResult<()> {
    let mut record = lock_order(conn, "provider = $1 and provider_payment = $2", &[provider, payment_id])
        .await?
        .ok_or_else(|| ApiError::not_found("payment", payment_id))?;
    if record.status == OrderStatus::ChargedBack {
        return Ok(());
    }
    if !matches!(record.status, OrderStatus::Fulfilled | OrderStatus::PartiallyRefunded) {
        return Err(state_conflict(&record, "disputed"));
    }
    transition(conn, &mut record, OrderStatus::Disputed, cause).await?;
    let remaining = record.gross_micros - record.refunded_micros;
    let chargeback = create_refund(
        conn,
        &record,
        remaining.max(1),
        "chargeback: dispute lost",
        &format!("provider:{provider}"),
        RefundKind::Chargeback,
    )
    .await?;
    if remaining > 0 {
        reverse(conn, state, &mut record, chargeback.id, remaining, true, cause).await
    } else {
        transition(conn, &mut record, OrderStatus::ChargedBack, cause).await
    }
}

/// Expires unpaid orders past their time; returns how many.
///
/// # Errors
/// Fails when the database does.
pub async fn expire_due_orders(state: &AppState) -> ApiResult<u64> {
    let due: Vec<String> = sqlx::query_scalar(
        "select id from payment_order where status = 'requires_payment' and expires_at <= $1 limit 100",
    )
    .bind(now_micros())
    .fetch_all(state.db().pool())
    .await?;
    let mut expired = 0;
    for id in due {
        let mut tx = state.db().begin_write().await?;
        if let Some(mut record) = lock_order(&mut tx, "id = $1", &[&id]).await?
            && record.status == OrderStatus::RequiresPayment
            && record.expires_at <= now_micros()
        {
            if let Some(tab_id) = record.tab_id {
                crate::tabs::settlement_abandoned(&mut tx, tab_id).await?;
            }
            transition(&mut tx, &mut record, OrderStatus::Expired, "not paid in time (expiry sweeper)")
                .await?;
            expired += 1;
        }
        tx.commit().await?;
    }
    Ok(expired)
}

/// Sends pending refunds to their provider; the outcome arrives by webhook.
///
/// # Errors
/// Fails when the database does (a provider failure leaves the refund pending, to retry).
pub async fn submit_pending_refunds(state: &AppState) -> ApiResult<u64> {
    let pending: Vec<(String, String, i64)> = sqlx::query_as(
        "select r.id, r.order_id, r.amount_micros from refund r where r.status = 'pending' and r.kind = 'refund' order by r.id limit 20",
    )
    .fetch_all(state.db().pool())
    .await?;
    let mut submitted = 0;
    for (refund_id, order_id, amount_micros) in pending {
        let mut conn = state.db().pool().acquire().await?;
        let Some(record) =
            find_order(&mut conn, Uuid::parse_str(&order_id).map_err(|error| corrupt("id", error))?).await?
        else {
            continue;
        };
        drop(conn);
        let (Some(payment_id), Some(provider)) =
            (record.provider_payment.clone(), state.provider(&record.provider))
        else {
            continue;
        };
        let call = RefundCall {
            idempotency_key: refund_id.clone(),
            payment_id,
            amount: record.money(amount_micros),
        };
        match provider.refund(&call).await {
            Ok(accepted) => {
                let mut tx = state.db().begin_write().await?;
                sqlx::query("update refund set status = 'submitted', provider_refund = $2, updated_at = $3 where id = $1 and status = 'pending'")
                    .bind(&refund_id)
                    .bind(&accepted.id)
                    .bind(now_micros())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                submitted += 1;
            }
            Err(error) => {
                tracing::warn!(%error, refund = %refund_id, "refund not sent to the provider yet; will retry")
            }
        }
    }
    Ok(submitted)
}
