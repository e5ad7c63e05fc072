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
use crate::ledger::{AccountId, ItemDelta, NewEntry, Posting, SystemAccount, append_entry, lock_player};
use crate::operations::{Movement, period_window};
use crate::payments::{Checkout, PaymentReport, RefundCall};
use crate::receipts::{ReceiptFacts, find_receipt_of_entry, issue_receipt};

const ORDER_COLUMNS: &str = "id, player_id, offer_id, sku, quantity, price_index, currency, gross_micros, fee_micros, \
     net_micros, refunded_micros, status, provider, provider_session, provider_payment, checkout_url, catalog_version, \
     entry_id, failure_reason, expires_at, created_at, updated_at, tab_id, over_reversed_micros, review_reason";

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
    provider_session: String,
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
    /// Returned beyond the order's price (overlapping refunds and chargebacks), in micros.
    over_reversed_micros: i64,
    review_reason: Option<String>,
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
            provider_session: text("provider_session")?,
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
            over_reversed_micros: number("over_reversed_micros")?,
            review_reason: optional_text("review_reason")?,
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
            review: self.review_reason.clone(),
            created_at: from_micros(self.created_at),
            updated_at: from_micros(self.updated_at),
            receipt,
            transitions,
            refunds: Vec::new(),
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
    let mut order = record.to_wire(receipt, transitions)?;
    order.refunds = order_refunds(conn, record).await?;
    Ok(order)
}

/// `id, kind, amount_micros, reason, status, created_at, last_error, returned payment currency`.
type RefundRow = (String, String, i64, String, String, i64, Option<String>, Option<String>);

/// An order's refunds and chargebacks, oldest first; a returned payment's refund is in that
/// payment's currency.
async fn order_refunds(conn: &mut AnyConnection, record: &OrderRecord) -> ApiResult<Vec<Refund>> {
    let rows: Vec<RefundRow> = sqlx::query_as(
        "select r.id, r.kind, r.amount_micros, r.reason, r.status, r.created_at, r.last_error, p.currency \
         from refund r left join provider_payment p on p.provider = $2 and p.payment_id = r.payment_id \
         where r.order_id = $1 order by r.id",
    )
    .bind(record.id.to_string())
    .bind(&record.provider)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|(id, kind, amount, reason, status, created_at, last_error, currency)| {
            let currency = match currency {
                Some(code) => {
                    MoneyCurrency::parse(&code).map_err(|error| corrupt("refund currency", error))?
                }
                None => record.currency,
            };
            Ok(Refund {
                id: Uuid::parse_str(&id).map_err(|error| corrupt("refund id", error))?,
                order_id: record.id,
                kind: if kind == "chargeback" { RefundKind::Chargeback } else { RefundKind::Refund },
                amount: Money::from_micros(currency, amount),
                reason,
                status: match status.as_str() {
                    "pending" => RefundStatus::Pending,
                    "submitted" => RefundStatus::Submitted,
                    "succeeded" => RefundStatus::Succeeded,
                    _ => RefundStatus::Failed,
                },
                created_at: from_micros(created_at),
                last_error,
            })
        })
        .collect()
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
    if matches!(to, OrderStatus::Failed | OrderStatus::Expired | OrderStatus::Canceled) {
        release_reserved_stock(conn, record).await?;
    }
    announce(conn, record).await
}

/// Gives back the stock an order reserved, once (its `stock_taken` goes to zero). The order's
/// row is locked by the caller.
async fn release_reserved_stock(conn: &mut AnyConnection, record: &OrderRecord) -> ApiResult<()> {
    let taken: i64 = sqlx::query_scalar("select stock_taken from payment_order where id = $1")
        .bind(record.id.to_string())
        .fetch_one(&mut *conn)
        .await?;
    if taken > 0 {
        sqlx::query("update payment_order set stock_taken = 0 where id = $1")
            .bind(record.id.to_string())
            .execute(&mut *conn)
            .await?;
        crate::operations::release_stock(conn, &record.sku, taken).await?;
    }
    Ok(())
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

/// An order priced once, before its checkout session opens: the session charges `total`, and
/// the order records the same total, price and catalog version.
#[derive(Debug, Clone)]
pub struct OrderQuote {
    offer_id: String,
    sku: String,
    quantity: i64,
    price_index: u32,
    /// What the checkout charges.
    pub total: Money,
    catalog_version: i64,
    variant: Option<String>,
    /// For the checkout page.
    pub description: String,
}

/// Prices an order request and checks the player's limits without writing anything, so a
/// request the store would refuse never opens a checkout session. The order's own transaction
/// checks the limits again, at this price.
///
/// # Errors
/// As [`price_order`], and `spending_limit_exceeded`, `player_flagged`.
pub async fn precheck_order(
    conn: &mut AnyConnection,
    state: &AppState,
    player_id: Uuid,
    request: &CreateOrderRequest,
) -> ApiResult<OrderQuote> {
    check_velocity(conn, state, player_id).await?;
    let catalog = state.catalog_cache().get(conn).await?;
    let priced = price_order(&catalog, request, &crate::pricing::buyer(conn, player_id).await?)?;
    let minor: Option<i64> = sqlx::query_scalar("select minor from player where id = $1")
        .bind(player_id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    check_spending(conn, state, player_id, minor.unwrap_or(0) != 0, priced.total).await?;
    Ok(OrderQuote {
        offer_id: priced.offer.id.to_string(),
        sku: priced.item.sku.as_str().to_owned(),
        quantity: request.quantity.get(),
        price_index: priced.price_index,
        total: priced.total,
        catalog_version: catalog.version,
        variant: priced.variant,
        description: format!("{} × {}", priced.item.name.as_str(), request.quantity.get()),
    })
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
pub(crate) async fn refuse_if_flagged(conn: &mut AnyConnection, player_id: Uuid) -> ApiResult<()> {
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
pub(crate) async fn check_velocity(
    conn: &mut AnyConnection,
    state: &AppState,
    player_id: Uuid,
) -> ApiResult<()> {
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
    flag_player(&mut tx, player_id, &reason, "system:velocity").await?;
    tx.commit().await?;
    tracing::warn!(%player_id, %reason, "velocity check flagged a player");
    Err(player_flagged(Some(reason)))
}

/// Checks the player's spending limits for a new order of `total`.
pub(crate) async fn check_spending(
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

/// `POST /v1/orders`, once the provider's checkout session is open: checks the player and the
/// limits again inside the transaction and records the order at the quoted price, the price
/// the session charges.
#[derive(Debug, Clone)]
pub struct CreateOrderOp {
    /// The new order's id (reserved with the request's key).
    pub order_id: Uuid,
    /// The buyer.
    pub player_id: Uuid,
    /// What it costs, priced once.
    pub quote: OrderQuote,
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
        let quote = &self.quote;
        check_spending(conn, state, self.player_id, lock.is_minor(), quote.total).await?;
        // An order obeys its item's purchase limit and stock like a purchase: it reserves both
        // now (a failed, expired or canceled order gives them back) and is checked again when paid.
        let catalog = state.catalog_cache().get(conn).await?;
        let sku = store_api::catalog::Sku::parse(&quote.sku).map_err(|error| anyhow::anyhow!(error))?;
        let mut stock_taken = 0;
        if let Some(item) = catalog.item(&sku) {
            crate::operations::check_purchase_limit(
                conn,
                self.player_id,
                item,
                quote.quantity,
                crate::db::now(),
                None,
            )
            .await?;
            if let Some(stock) = item.stock {
                crate::operations::take_stock(conn, &sku, quote.quantity, stock).await?;
                stock_taken = quote.quantity;
            }
        }
        let gross_micros = quote.total.to_micros().map_err(|error| anyhow::anyhow!(error))?;
        let now = now_micros();
        sqlx::query(
            "insert into payment_order (id, player_id, offer_id, sku, quantity, price_index, currency, gross_micros, status, \
             provider, provider_session, checkout_url, catalog_version, expires_at, created_at, updated_at, price_variant, \
             stock_taken) values ($1, $2, $3, $4, $5, $6, $7, $8, 'requires_payment', $9, $10, $11, $12, $13, $14, $14, $15, $16)",
        )
        .bind(self.order_id.to_string())
        .bind(self.player_id.to_string())
        .bind(&quote.offer_id)
        .bind(&quote.sku)
        .bind(quote.quantity)
        .bind(i64::from(quote.price_index))
        .bind(quote.total.currency.code())
        .bind(gross_micros)
        .bind(self.provider)
        .bind(&self.checkout.id)
        .bind(&self.checkout.checkout_url)
        .bind(quote.catalog_version)
        .bind(self.expires_at)
        .bind(now)
        .bind(quote.variant.clone())
        .bind(stock_taken)
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

/// Why a reported payment does not pay for its order, or `None` when every fact matches: the
/// amount, its currency (and the fee's), the reference the session was opened with, and an
/// order (and, for a settlement, a tab) still waiting for this payment.
async fn payment_mismatch(
    conn: &mut AnyConnection,
    record: &OrderRecord,
    report: &PaymentReport,
) -> ApiResult<Option<String>> {
    let order = record.money(record.gross_micros);
    let reason = if report.amount.currency != record.currency {
        format!("paid in {}, but the order is in {}", report.amount.currency, record.currency)
    } else if report.fee.currency != report.amount.currency {
        format!("the fee is in {}, but the payment is in {}", report.fee.currency, report.amount.currency)
    } else if report.amount.to_micros().ok() != Some(record.gross_micros) {
        format!("paid {}, but the order costs {order}", report.amount)
    } else if report.reference != record.id.to_string() {
        format!("the payment names reference `{}`, not this order", report.reference)
    } else if record.status != OrderStatus::RequiresPayment {
        format!("the order is already {}", record.status.as_str())
    } else if let Some(tab_id) = record.tab_id
        && !crate::tabs::is_settling_by(conn, tab_id, record.id).await?
    {
        "the tab was already settled or reopened".to_owned()
    } else {
        return Ok(None);
    };
    Ok(Some(reason))
}

/// `payment.succeeded`: applies a payment to its order, once per payment id. A payment that
/// matches its order exactly marks it paid and fulfils it in the same transaction; an order that
/// cannot be fulfilled any more (the wallet would pass its maximum, a durable item is already
/// owned) stays `paid` and is refunded in full. Any other payment (a wrong amount, currency or
/// reference, a second payment, a payment of a failed, canceled or expired order or of a tab
/// already settled) grants nothing: the money received is booked and returned by a refund of
/// its own.
///
/// # Errors
/// `not_found` for an unknown session.
pub async fn payment_succeeded(
    conn: &mut AnyConnection,
    state: &AppState,
    provider: &str,
    report: &PaymentReport,
    cause: &str,
) -> ApiResult<()> {
    let mut record =
        lock_order(conn, "provider = $1 and provider_session = $2", &[provider, &report.session_id])
            .await?
            .ok_or_else(|| ApiError::not_found("checkout session", &report.session_id))?;
    let amount_micros = report.amount.to_micros().map_err(|error| ApiError::invalid("data.amount", error))?;
    let fee_micros = report.fee.to_micros().map_err(|error| ApiError::invalid("data.fee", error))?;
    if amount_micros <= 0 || !(0..=amount_micros).contains(&fee_micros) {
        return Err(ApiError::invalid(
            "data.amount",
            "a payment is positive and its fee at most the payment",
        ));
    }
    let mismatch = payment_mismatch(conn, &record, report).await?;
    let fresh = sqlx::query(
        "insert into provider_payment (provider, payment_id, order_id, currency, amount_micros, fee_micros, outcome, \
         reason, created_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9) on conflict (provider, payment_id) do nothing",
    )
    .bind(provider)
    .bind(&report.payment_id)
    .bind(record.id.to_string())
    .bind(report.amount.currency.code())
    .bind(amount_micros)
    .bind(fee_micros)
    .bind(if mismatch.is_some() { "returned" } else { "applied" })
    .bind(mismatch.as_deref())
    .bind(now_micros())
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !fresh {
        return Ok(()); // This payment was booked already: a replay under another event id.
    }
    if let Some(reason) = mismatch {
        return return_payment(conn, &record, provider, report, &reason).await;
    }
    let net_micros = record.gross_micros - fee_micros;
    sqlx::query(
        "update payment_order set provider_payment = $2, fee_micros = $3, net_micros = $4 where id = $1",
    )
    .bind(record.id.to_string())
    .bind(&report.payment_id)
    .bind(fee_micros)
    .bind(net_micros)
    .execute(&mut *conn)
    .await?;
    record.provider_payment = Some(report.payment_id.clone());
    record.fee_micros = Some(fee_micros);
    record.net_micros = Some(net_micros);
    transition(conn, &mut record, OrderStatus::Paid, cause).await?;

    if let Some(tab_id) = record.tab_id {
        let entry_id = {
            let catalog = state.catalog_cache().get(conn).await?;
            crate::tabs::settlement_paid(
                conn,
                &catalog,
                tab_id,
                record.id,
                record.gross_micros,
                fee_micros,
                provider,
            )
            .await?
        };
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
    let limit_check = match snapshot.items.iter().find(|item| item.sku.as_str() == record.sku) {
        Some(item) => {
            crate::operations::check_purchase_limit(
                conn,
                record.player_id,
                item,
                record.quantity,
                crate::db::now(),
                Some(record.id),
            )
            .await
        }
        None => Ok(()),
    };
    let check = match limit_check {
        Ok(()) => movement.check(conn, record.player_id, &catalog).await,
        refused => refused,
    };
    // Only a business refusal means "cannot be fulfilled"; a database failure fails the event.
    if let Err(error @ ApiError::Client { .. }) = check {
        let reason = format!("could not be fulfilled: {error}");
        sqlx::query("update payment_order set failure_reason = $2 where id = $1")
            .bind(record.id.to_string())
            .bind(&reason)
            .execute(&mut *conn)
            .await?;
        record_money_received(conn, &record).await?;
        create_refund(
            conn,
            &record,
            record.money(record.gross_micros),
            None,
            &reason,
            "system",
            RefundKind::Refund,
        )
        .await?;
        return announce(conn, &record).await;
    }
    check?;
    movement.postings.extend(money_received(record.currency, record.gross_micros, fee_micros)?);
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

/// The postings of `amount` received through the provider: clearing gives it, the provider's
/// fee and the rest (revenue) take it. A refund later returns it from revenue to clearing.
fn money_received(currency: MoneyCurrency, amount: i64, fee: i64) -> ApiResult<Vec<Posting>> {
    let mut postings =
        vec![Posting { account: money_account(SystemAccount::Clearing, currency)?, amount: -amount }];
    if fee > 0 {
        postings.push(Posting { account: money_account(SystemAccount::Fees, currency)?, amount: fee });
    }
    if amount > fee {
        postings.push(Posting {
            account: money_account(SystemAccount::Revenue, currency)?,
            amount: amount - fee,
        });
    }
    Ok(postings)
}

/// Appends an entry of money alone (no items, no wallet), by the order's provider, for its player.
async fn append_money_entry(
    conn: &mut AnyConnection,
    record: &OrderRecord,
    kind: EntryKind,
    reason: String,
    postings: Vec<Posting>,
) -> ApiResult<crate::ledger::AppendedEntry> {
    let entry = NewEntry {
        kind,
        player_id: Some(record.player_id),
        actor: format!("provider:{}", record.provider),
        reason: Some(reason),
        postings,
        items: Vec::new(),
        clawback: false,
    };
    append_entry(conn, &entry, &BTreeMap::new()).await
}

/// Books money received for an order that is not fulfilled (to be refunded): clearing gives the
/// gross, fees and revenue take fee and net, so the refund can reverse it like any other.
async fn record_money_received(conn: &mut AnyConnection, record: &OrderRecord) -> ApiResult<()> {
    let postings = money_received(record.currency, record.gross_micros, record.fee_micros.unwrap_or(0))?;
    let reason = format!("order {} paid but not fulfilled", record.id);
    let entry = append_money_entry(conn, record, EntryKind::OrderFulfillment, reason, postings).await?;
    sqlx::query("update payment_order set entry_id = $2 where id = $1")
        .bind(record.id.to_string())
        .bind(entry.id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Books a payment that pays for nothing (see [`payment_mismatch`]) as money received, and
/// records a refund of all of it, which the refund worker sends back to the provider. The order
/// itself does not change.
async fn return_payment(
    conn: &mut AnyConnection,
    record: &OrderRecord,
    provider: &str,
    report: &PaymentReport,
    reason: &str,
) -> ApiResult<()> {
    let currency = report.amount.currency;
    let amount = report.amount.to_micros().map_err(|error| ApiError::invalid("data.amount", error))?;
    let fee = report.fee.to_micros().map_err(|error| ApiError::invalid("data.fee", error))?;
    tracing::warn!(order = %record.id, payment = %report.payment_id, %reason, "a payment does not pay for its order; it is returned");
    metrics::counter!("coinslot_payments_returned_total", "provider" => provider.to_owned()).increment(1);
    let postings = money_received(currency, amount, fee)?;
    let why_entry = format!("payment {} of order {} returned: {reason}", report.payment_id, record.id);
    let entry = append_money_entry(conn, record, EntryKind::UnappliedPayment, why_entry, postings).await?;
    sqlx::query("update provider_payment set entry_id = $3 where provider = $1 and payment_id = $2")
        .bind(provider)
        .bind(&report.payment_id)
        .bind(entry.id.to_string())
        .execute(&mut *conn)
        .await?;
    let why = format!("returned: {reason}");
    create_refund(conn, record, report.amount, Some(&report.payment_id), &why, "system", RefundKind::Refund)
        .await?;
    Ok(())
}

/// `payment.failed`: the order fails with the provider's reason.
///
/// # Errors
/// `not_found` for an unknown session. A failure of an order past payment changes nothing.
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
    if record.status != OrderStatus::RequiresPayment {
        // Failed already, or paid after all (the player paid with another card, and that
        // payment's event arrived first): a stale failure changes nothing.
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
    amount: Money,
    returned_payment: Option<&str>,
    reason: &str,
    actor: &str,
    kind: RefundKind,
) -> ApiResult<Refund> {
    let amount_micros = amount.to_micros().map_err(|error| anyhow::anyhow!(error))?;
    let id = Uuid::now_v7();
    let now = now_micros();
    let kind_text = match kind {
        RefundKind::Refund => "refund",
        RefundKind::Chargeback => "chargeback",
    };
    sqlx::query(
        "insert into refund (id, order_id, kind, amount_micros, reason, actor, status, created_at, updated_at, payment_id) \
         values ($1, $2, $3, $4, $5, $6, 'pending', $7, $7, $8)",
    )
    .bind(id.to_string())
    .bind(record.id.to_string())
    .bind(kind_text)
    .bind(amount_micros)
    .bind(reason)
    .bind(actor)
    .bind(now)
    .bind(returned_payment)
    .execute(&mut *conn)
    .await?;
    Ok(Refund {
        id,
        order_id: record.id,
        kind,
        amount,
        reason: reason.to_owned(),
        status: RefundStatus::Pending,
        created_at: from_micros(now),
        last_error: None,
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
        let refund = create_refund(
            conn,
            &record,
            record.money(amount),
            None,
            &self.reason,
            &self.actor,
            RefundKind::Refund,
        )
        .await?;
        let after = serde_json::to_string(&refund).map_err(anyhow::Error::from)?;
        crate::catalog::append_audit(conn, &self.actor, "order.refund", &id, None, Some(&after)).await?;
        Ok(refund)
    }
}

/// Books `amount_micros` the provider returned for an order (a refund or a chargeback), all of
/// it, and claws back the grant in proportion: currency grants by the share refunded so far
/// (rounded down, so the total clawed never passes the grant), items once the order is refunded
/// in full. What the player spent or used up becomes a debt: the wallet goes below zero through
/// this entry alone and is flagged `in_debt`. Money returned beyond the order's price (a refund
/// and a chargeback that overlap) is booked too, counted as over-reversed, and the order is
/// marked for an operator's review; it is never an error the provider retries forever.
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
    let returned =
        before.checked_add(amount_micros).ok_or_else(|| anyhow::anyhow!("refund total overflows"))?;
    let after = returned.min(record.gross_micros);
    let over = returned - after;
    let mut postings = vec![
        Posting { account: money_account(SystemAccount::Clearing, record.currency)?, amount: amount_micros },
        Posting { account: money_account(SystemAccount::Revenue, record.currency)?, amount: -amount_micros },
    ];
    let mut items = Vec::new();
    // Creators give back what the sale credited them (an order's fulfilment or a tab's
    // settlement), in the same proportion as the money returned.
    if after > before
        && let Some(entry_id) = &record.entry_id
    {
        let credited: Vec<(String, i64)> = sqlx::query_as(
            "select account_id, cast(sum(amount) as bigint) from posting where entry_id = $1 \
             and account_id like 'c:%' group by account_id order by account_id",
        )
        .bind(entry_id)
        .fetch_all(&mut *conn)
        .await?;
        for (account, part) in credited {
            let owed = |refunded: i64| {
                i64::try_from(i128::from(part) * i128::from(refunded) / i128::from(record.gross_micros))
                    .unwrap_or(0)
            };
            let back = owed(after) - owed(before);
            let creator = account
                .strip_prefix("c:")
                .and_then(|rest| rest.rsplit_once(':'))
                .map(|(creator, _)| creator.to_owned())
                .ok_or_else(|| corrupt("creator account", &account))?;
            if back > 0 {
                let code = record.currency.code().to_owned();
                postings.push(Posting {
                    account: AccountId::CreatorPayable(creator, code.clone()),
                    amount: -back,
                });
                postings
                    .push(Posting { account: AccountId::System(SystemAccount::Revenue, code), amount: back });
            }
        }
    }
    // What the player got back is clawed back in the share of the price returned so far
    // (rounded down, so the total never passes the grant): currency and items of a fulfilled
    // order, the items of a settled tab. What they spent or used up becomes a debt.
    let share = |quantity: i64, refunded: i64| {
        i64::try_from(i128::from(quantity) * i128::from(refunded) / i128::from(record.gross_micros))
            .unwrap_or(0)
    };
    let fulfilled = record.entry_id.is_some() && record.failure_reason.is_none() && record.tab_id.is_none();
    if fulfilled && after > before {
        let snapshot = order_snapshot(conn, state, record).await?;
        let granted = granted_by(&snapshot, record)?.granted;
        for grant in &granted.currencies {
            let claw = share(grant.amount, after) - share(grant.amount, before);
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
        for grant in &granted.items {
            claw_back_item(
                &grant.sku,
                share(grant.quantity, after) - share(grant.quantity, before),
                &mut items,
            );
        }
    }
    if let Some(tab_id) = record.tab_id
        && record.entry_id.is_some()
        && after > before
    {
        let bought: Vec<(String, i64)> = sqlx::query_as(
            "select sku, cast(sum(quantity) as bigint) from tab_item where tab_id = $1 group by sku order by sku",
        )
        .bind(tab_id.to_string())
        .fetch_all(&mut *conn)
        .await?;
        for (sku, quantity) in bought {
            let sku = store_api::catalog::Sku::parse(&sku).map_err(|error| corrupt("tab item", error))?;
            claw_back_item(&sku, share(quantity, after) - share(quantity, before), &mut items);
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
    refund_booked(conn, refund_id, entry.id).await?;
    // DESIGN 5.5: a clawback that leaves a debt flags the player (orders and tabs wait for an
    // operator), besides refusing purchases in that currency until it is repaid.
    let debts: i64 = sqlx::query_scalar(
        "select (select count(*) from account where player_id = $1 and in_debt = 1) \
         + (select count(*) from inventory where player_id = $1 and in_debt = 1)",
    )
    .bind(record.player_id.to_string())
    .fetch_one(&mut *conn)
    .await?;
    if debts > 0 {
        flag_player(
            conn,
            record.player_id,
            &format!("a reversal of order {} left a debt", record.id),
            "system:clawback",
        )
        .await?;
    }
    if over > 0 {
        let reason = format!(
            "the provider returned {} more than the order's price (overlapping refunds and chargebacks)",
            record.money(record.over_reversed_micros + over)
        );
        tracing::warn!(order = %record.id, %reason, "an order was over-reversed");
        metrics::counter!("coinslot_orders_over_reversed_total").increment(1);
        record.over_reversed_micros += over;
        record.review_reason = Some(reason);
    }
    sqlx::query("update payment_order set refunded_micros = $2, over_reversed_micros = $3, review_reason = $4 where id = $1")
        .bind(record.id.to_string())
        .bind(after)
        .bind(record.over_reversed_micros)
        .bind(record.review_reason.as_deref())
        .execute(&mut *conn)
        .await?;
    record.refunded_micros = after;
    let next = if chargeback {
        OrderStatus::ChargedBack
    } else if matches!(record.status, OrderStatus::ChargedBack | OrderStatus::Disputed) {
        // A refund that was in flight when the dispute landed: booked, the status stays.
        return announce(conn, record).await;
    } else if after == record.gross_micros {
        OrderStatus::Refunded
    } else {
        OrderStatus::PartiallyRefunded
    };
    if next == record.status {
        return announce(conn, record).await;
    }
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
    let order_id: String = sqlx::query_scalar("select order_id from refund where id = $1")
        .bind(refund_id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApiError::not_found("refund", &refund_id.to_string()))?;
    let mut record = lock_order(conn, "id = $1", &[&order_id])
        .await?
        .ok_or_else(|| ApiError::not_found("order", &order_id))?;
    // Read under the order's lock: two events for one refund (on two instances) book it once.
    let (amount_micros, status, returned_payment): (i64, String, Option<String>) =
        sqlx::query_as("select amount_micros, status, payment_id from refund where id = $1")
            .bind(refund_id.to_string())
            .fetch_one(&mut *conn)
            .await?;
    if status == "succeeded" {
        return Ok(());
    }
    sqlx::query("update refund set provider_refund = $2 where id = $1")
        .bind(refund_id.to_string())
        .bind(provider_refund)
        .execute(&mut *conn)
        .await?;
    if let Some(payment_id) = returned_payment {
        return payment_returned(conn, &record, refund_id, &payment_id, amount_micros, cause).await;
    }
    reverse(conn, state, &mut record, refund_id, amount_micros, false, cause).await
}

/// Takes back `quantity` of an item; what the player no longer holds becomes an item debt.
fn claw_back_item(sku: &store_api::catalog::Sku, quantity: i64, items: &mut Vec<ItemDelta>) {
    if quantity > 0 {
        items.push(ItemDelta { sku: sku.clone(), delta: -quantity, quantity_max: i64::MAX });
    }
}

/// Marks a refund succeeded with its entry; a refund is booked once.
async fn refund_booked(conn: &mut AnyConnection, refund_id: Uuid, entry_id: Uuid) -> ApiResult<()> {
    let booked = sqlx::query(
        "update refund set status = 'succeeded', entry_id = $2, updated_at = $3 where id = $1 and status <> 'succeeded'",
    )
    .bind(refund_id.to_string())
    .bind(entry_id.to_string())
    .bind(now_micros())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if booked != 1 {
        return Err(ApiError::Internal(anyhow::anyhow!("refund {refund_id} was booked twice")));
    }
    Ok(())
}

/// A returned payment's refund went through: the money received goes back to the provider. The
/// order is not touched; the payment never paid for it.
async fn payment_returned(
    conn: &mut AnyConnection,
    record: &OrderRecord,
    refund_id: Uuid,
    payment_id: &str,
    amount_micros: i64,
    cause: &str,
) -> ApiResult<()> {
    let currency: String =
        sqlx::query_scalar("select currency from provider_payment where provider = $1 and payment_id = $2")
            .bind(&record.provider)
            .bind(payment_id)
            .fetch_one(&mut *conn)
            .await?;
    let currency = MoneyCurrency::parse(&currency).map_err(|error| corrupt("payment currency", error))?;
    let postings = vec![
        Posting { account: money_account(SystemAccount::Clearing, currency)?, amount: amount_micros },
        Posting { account: money_account(SystemAccount::Revenue, currency)?, amount: -amount_micros },
    ];
    let entry = append_money_entry(conn, record, EntryKind::Reversal, cause.to_owned(), postings).await?;
    refund_booked(conn, refund_id, entry.id).await
}

/// `payment.disputed`: the dispute is lost; the provider took back `amount` (the whole payment
/// when it does not say). It is booked as it stands, whatever was refunded or is still being
/// refunded: refunds not yet sent are canceled, refunds in flight are booked when they land
/// (past the price, the order is marked for review). The player is flagged for review.
///
/// # Errors
/// `not_found` for an unknown payment; `order_state_conflict` when the order is not paid yet
/// (the provider retries, so a dispute that overtakes its payment waits for it).
pub async fn payment_disputed(
    conn: &mut AnyConnection,
    state: &AppState,
    provider: &str,
    payment_id: &str,
    amount: Option<Money>,
    cause: &str,
) -> ApiResult<()> {
    let mut record = lock_order(conn, "provider = $1 and provider_payment = $2", &[provider, payment_id])
        .await?
        .ok_or_else(|| ApiError::not_found("payment", payment_id))?;
    if record.status == OrderStatus::ChargedBack {
        return Ok(());
    }
    if !record.status.can_become(OrderStatus::Disputed) {
        return Err(state_conflict(&record, "disputed"));
    }
    let disputed_micros = match amount {
        Some(amount) if amount.currency == record.currency => {
            amount.to_micros().map_err(|error| ApiError::invalid("data.amount", error))?
        }
        Some(amount) => {
            return Err(ApiError::invalid(
                "data.amount",
                format!("a dispute in {} of an order in {}", amount.currency, record.currency),
            ));
        }
        None => record.gross_micros,
    };
    if disputed_micros <= 0 {
        return Err(ApiError::invalid("data.amount", "a dispute takes back a positive amount"));
    }
    // The provider took the money back itself: refunds not yet sent would return it twice.
    sqlx::query(
        "update refund set status = 'failed', last_error = 'superseded by a chargeback', updated_at = $2 \
         where order_id = $1 and status = 'pending' and kind = 'refund' and payment_id is null",
    )
    .bind(record.id.to_string())
    .bind(now_micros())
    .execute(&mut *conn)
    .await?;
    transition(conn, &mut record, OrderStatus::Disputed, cause).await?;
    let chargeback = create_refund(
        conn,
        &record,
        record.money(disputed_micros),
        None,
        "chargeback: dispute lost",
        &format!("provider:{provider}"),
        RefundKind::Chargeback,
    )
    .await?;
    reverse(conn, state, &mut record, chargeback.id, disputed_micros, true, cause).await?;
    flag_player(conn, record.player_id, &format!("chargeback on order {}", record.id), "system:chargeback")
        .await
}

/// Flags a player for review (if not flagged yet), in the caller's transaction, audited.
async fn flag_player(conn: &mut AnyConnection, player_id: Uuid, reason: &str, actor: &str) -> ApiResult<()> {
    let flagged = sqlx::query(
        "update player set flagged_at = $2, flag_reason = $3 where id = $1 and flagged_at is null",
    )
    .bind(player_id.to_string())
    .bind(now_micros())
    .bind(reason)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if flagged == 1 {
        let after = serde_json::json!({ "flagged": true, "reason": reason }).to_string();
        crate::catalog::append_audit(conn, actor, "player.flag", &player_id.to_string(), None, Some(&after))
            .await?;
    }
    Ok(())
}

/// Expires unpaid orders past their time, each once its provider says its session was not paid
/// (a payment found then is applied instead); returns how many expired.
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
        // Ask the provider first: a payment whose webhook was lost pays the order now.
        let Some(unpaid) = find_order(
            &mut *state.db().pool().acquire().await?,
            Uuid::parse_str(&id).map_err(|error| corrupt("id", error))?,
        )
        .await?
        else {
            continue;
        };
        let provider = state.provider(&unpaid.provider).map(|provider| provider.name());
        if let Some(provider) = provider {
            match crate::reconcile::apply_session_payment(state, provider, &unpaid.provider_session).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, order = %id, "could not ask the provider whether the order was paid; it expires later");
                    continue;
                }
            }
        }
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

/// Submissions of one refund at most; then it is `failed` for an operator to look at.
pub const REFUND_ATTEMPTS_MAX: i64 = 20;
/// The longest wait between two submissions of one refund.
const REFUND_BACKOFF_MAX_S: i64 = 3_600;

/// Sends due refunds to their provider; the outcome arrives by webhook. Each refund backs off on
/// its own (1 s, 2 s, 4 s … up to an hour), so refunds that keep failing never hold up newer
/// ones; a refund the provider refuses, or one with no payment to refund, is `failed` at once,
/// and one still unsent after [`REFUND_ATTEMPTS_MAX`] tries too.
///
/// # Errors
/// Fails when the database does.
pub async fn submit_pending_refunds(state: &AppState) -> ApiResult<u64> {
    // A returned payment is refunded from that payment, in its own currency.
    let due: Vec<(String, i64, String, Option<String>, String, i64)> = sqlx::query_as(
        "select r.id, r.amount_micros, coalesce(p.currency, o.currency), coalesce(r.payment_id, o.provider_payment), \
         o.provider, r.attempts from refund r join payment_order o on o.id = r.order_id \
         left join provider_payment p on p.provider = o.provider and p.payment_id = r.payment_id \
         where r.status = 'pending' and r.kind = 'refund' and r.next_attempt_at <= $1 \
         order by r.next_attempt_at, r.id limit 20",
    )
    .bind(now_micros())
    .fetch_all(state.db().pool())
    .await?;
    let mut submitted = 0;
    for (refund_id, amount_micros, currency, payment_id, provider_name, attempts) in due {
        let outcome = match (payment_id, state.provider(&provider_name)) {
            (None, _) => Err(crate::payments::refused("the order has no provider payment to refund")),
            (_, None) => {
                Err(crate::payments::refused(&format!("provider `{provider_name}` is not configured")))
            }
            (Some(payment_id), Some(provider)) => {
                let currency = MoneyCurrency::parse(&currency).map_err(|error| corrupt("currency", error))?;
                let call = RefundCall {
                    idempotency_key: refund_id.clone(),
                    payment_id,
                    amount: Money::from_micros(currency, amount_micros),
                };
                provider.refund(&call).await
            }
        };
        let now = now_micros();
        let mut tx = state.db().begin_write().await?;
        match outcome {
            Ok(accepted) => {
                sqlx::query("update refund set status = 'submitted', provider_refund = $2, updated_at = $3, attempts = attempts + 1 \
                             where id = $1 and status = 'pending'")
                    .bind(&refund_id)
                    .bind(&accepted.id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                submitted += 1;
            }
            Err(error) => {
                let attempts = attempts + 1;
                let final_refusal = error.status().is_client_error() || attempts >= REFUND_ATTEMPTS_MAX;
                let message = error.to_string();
                tracing::warn!(%message, refund = %refund_id, attempts, final_refusal, "a refund was not sent to the provider");
                let backoff_s = 1_i64
                    .checked_shl(u32::try_from(attempts).unwrap_or(31).min(31))
                    .unwrap_or(i64::MAX)
                    .min(REFUND_BACKOFF_MAX_S);
                sqlx::query(
                    "update refund set status = $2, attempts = $3, next_attempt_at = $4, last_error = $5, updated_at = $6 \
                     where id = $1 and status = 'pending'",
                )
                .bind(&refund_id)
                .bind(if final_refusal { "failed" } else { "pending" })
                .bind(attempts)
                .bind(now + backoff_s * 1_000_000)
                .bind(&message)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if final_refusal {
                    metrics::counter!("coinslot_refunds_failed_total").increment(1);
                }
            }
        }
        tx.commit().await?;
    }
    Ok(submitted)
}
