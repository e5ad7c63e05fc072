//! Real-money orders: pricing and limits, the state machine with every transition recorded,
//! fulfilment when the provider says the payment succeeded, refunds and chargebacks that return
//! the money and claw back the grant, and the sweepers that expire orders and submit refunds.
//!
//! This file holds an order's record, its lookups and its state machine; the rest is split by
//! what moves: [`create`] (pricing and opening), [`paid`] (money in), [`refunds`] (money back: refunds and chargebacks)
//! and [`workers`] (expiry and refund submission).
//!
//! Money postings use ISO currency accounts in micros: on fulfilment the clearing account gives
//! the gross, the fees account takes the fee and revenue takes the net; a reversal returns the
//! refunded amount from revenue to clearing (the provider keeps its fee).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use rust_decimal::Decimal;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row as _};
use store_api::admin::AgeBand;
use store_api::catalog::{Item, Offer, Price, Settlement};
use store_api::ledger::EntryKind;
use store_api::orders::{
    CreateOrderRequest, Order, OrderStatus, OrderTransition, Refund, RefundKind, RefundStatus,
};
use store_api::{ErrorCode, Money, MoneyCurrency};
use uuid::Uuid;

use crate::db::{from_micros, now_micros, to_micros};
use crate::error::{ApiError, ApiResult};
use crate::ledger::events::push_event;
use crate::ledger::idempotency::MoneyOp;
use crate::ledger::receipts::{ReceiptFacts, find_receipt_of_entry, issue_receipt};
use crate::ledger::{AccountId, ItemDelta, NewEntry, Posting, SystemAccount, append_entry, lock_player};
use crate::payments::Payments;
use crate::payments::provider::{Checkout, PaymentReport, RefundCall};
use crate::store::catalog::{CatalogSnapshot, RenderedCatalog};
use crate::store::operations::{Movement, period_window};

pub mod create;
pub mod paid;
pub mod refunds;
pub mod workers;

pub use create::*;
pub use paid::*;
pub use refunds::*;
pub use workers::*;

const ORDER_COLUMNS: &str = "id, player_id, offer_id, sku, quantity, price_index, currency, gross_micros, fee_micros, \
     net_micros, refunded_micros, status, provider, provider_session, provider_payment, checkout_url, catalog_version, \
     entry_id, failure_reason, expires_at, created_at, updated_at, tab_id, over_reversed_micros, review_reason, \
     delivery_consent";

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
    /// The buyer consented to immediate delivery (the EU withdrawal waiver).
    pub delivery_consent: bool,
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
            delivery_consent: number("delivery_consent")? != 0,
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
            provider: self.provider.clone(),
            provider_order_id: (self.provider == crate::payments::steam::PROVIDER)
                .then(|| self.provider_session.clone()),
            expires_at: from_micros(self.expires_at),
            failure_reason: self.failure_reason.clone(),
            review: self.review_reason.clone(),
            immediate_delivery_consent: self.delivery_consent,
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
        crate::store::operations::release_stock(conn, &record.sku, taken).await?;
    }
    Ok(())
}

async fn announce(conn: &mut AnyConnection, record: &OrderRecord) -> ApiResult<()> {
    push_event(conn, record.player_id, "order.updated", &record.to_wire(None, Vec::new())?).await
}
