//! Sales analytics, computed from the ledger's records (purchases), the orders and the store
//! views only: there is no second source of truth to drift. Rows in the date range are read
//! once and aggregated here by plain functions, which the tests feed hand-built data.
//!
//! Definitions (also in ARCHITECTURE.md):
//! - a *sale* is a purchase (virtual currency or tab) or an order that was paid; a tab's
//!   settlement order is not a sale (its items were sales when bought) but its fee is a cost;
//! - days are UTC days; the heatmap alone takes a fixed UTC offset (`tz=+09:00`);
//! - *buyers* are distinct players; a pair of items is *together* when one player bought both
//!   within `window_h` hours of each other;
//! - a viewer *converts* when they buy the offer at or after their first view of it that way.

// Support, confidence, lift and conversion intervals are statistics over counts, not money.
#![allow(clippy::float_arithmetic)]

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use sqlx::AnyConnection;
use store_api::analytics::{
    CombinationsReport, ConversionRow, GeographyReport, GeographyRow, PairRow, PeakCell, PeakTimesReport,
    ReportingDay, ReportingRevenue, RevenueReport, RevenueRow, TabsReport, TabsRow,
};
use store_api::{Money, MoneyCurrency};
use time::{Duration, OffsetDateTime, UtcOffset};

use crate::error::ApiResult;
use crate::payments::fees::FeeSchedule;

pub mod reports;

pub use reports::*;

/// The sku revenue rows give the fees of settling tabs.
pub const TAB_SETTLEMENT_SKU: &str = "tab_settlement";
/// Pairs returned at most.
pub const PAIRS_TOP_MAX: usize = 100;
/// Rows one report reads at most, by default (`analytics_rows_max`): a bound on memory. A range
/// holding more is refused (`range_too_large`-style 422 naming `from`), never silently cut.
pub const SALES_ROWS_MAX: i64 = 200_000;
const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_HOUR: i64 = 3_600 * MICROS_PER_SECOND;
const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;
/// The normal quantile of a two-sided 95% interval.
const Z_95: f64 = 1.959_963_984_540_054;

/// One sale, as read from a purchase or an order.
#[derive(Debug, Clone, PartialEq)]
pub struct Sale {
    /// The buyer.
    pub player_id: String,
    /// Their country at login, if known.
    pub country: Option<String>,
    /// The offer, empty for a tab settlement.
    pub offer_id: String,
    /// The item, [`TAB_SETTLEMENT_SKU`] for a tab settlement.
    pub sku: String,
    /// Virtual currency code or ISO 4217 code.
    pub currency: String,
    /// Units.
    pub quantity: i64,
    /// What was paid, in the currency's units (whole units for virtual currency).
    pub gross: Decimal,
    /// The provider's fee.
    pub fee: Decimal,
    /// Refunded or charged back.
    pub refunded: Decimal,
    /// The price variant it was priced in.
    pub variant: Option<String>,
    /// When, in microseconds since the epoch.
    pub at_micros: i64,
}

impl Sale {
    /// Whether it sold an item (a tab settlement does not).
    #[must_use]
    pub fn is_item_sale(&self) -> bool {
        self.sku != TAB_SETTLEMENT_SKU
    }
}

/// One store view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The viewer.
    pub player_id: String,
    /// The offer.
    pub offer_id: String,
    /// Its item.
    pub sku: String,
    /// The price variant shown, if any.
    pub variant: Option<String>,
    /// The prices shown (`500 gold / 50 gems`).
    pub price_point: String,
    /// When.
    pub at_micros: i64,
}

/// A report's range: `[from, to)` in microseconds, and an optional currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// Inclusive start.
    pub from_micros: i64,
    /// Exclusive end.
    pub to_micros: i64,
    /// Only sales in this currency.
    pub currency: Option<String>,
    /// Rows the report may read; a range holding more is refused.
    pub rows_max: i64,
}

/// Refuses a range that holds more rows than a report may read.
fn check_bound(count: usize, range: &Range, what: &str) -> ApiResult<()> {
    if i64::try_from(count).unwrap_or(i64::MAX) > range.rows_max {
        return Err(crate::error::ApiError::validation(
            "from",
            format!(
                "this range holds more than {} {what}, more than one report reads; choose a shorter range",
                range.rows_max
            ),
        ));
    }
    Ok(())
}

fn within_bound<T>(rows: Vec<T>, range: &Range, what: &str) -> ApiResult<Vec<T>> {
    check_bound(rows.len(), range, what)?;
    Ok(rows)
}

fn micros_to_decimal(micros: i64) -> Decimal {
    Decimal::new(micros, 6).normalize()
}

/// The sales in `range`.
///
/// # Errors
/// Fails when the database does.
pub async fn load_sales(conn: &mut AnyConnection, range: &Range) -> ApiResult<Vec<Sale>> {
    // Counted first, through the time indexes (at most one more than the bound of each), so a
    // range over the bound is refused before any of its rows is loaded.
    let counted: i64 = sqlx::query_scalar(
        "select cast((select count(*) from (select 1 from entry e where e.created_at >= $1 and e.created_at < $2 \
         and e.purchase_id is not null limit $3) p) \
         + (select count(*) from (select 1 from payment_order o where o.created_at >= $1 and o.created_at < $2 \
         and o.status in ('paid', 'fulfilled', 'refunded', 'partially_refunded', 'disputed', 'charged_back') limit $3) o) \
         as bigint)",
    )
    .bind(range.from_micros)
    .bind(range.to_micros)
    .bind(range.rows_max.saturating_add(1))
    .fetch_one(&mut *conn)
    .await?;
    check_bound(usize::try_from(counted).unwrap_or(usize::MAX), range, "sales")?;
    type PurchaseRow = (String, Option<String>, String, String, String, i64, i64, i64, Option<String>);
    let purchases: Vec<PurchaseRow> = sqlx::query_as(
        "select e.player_id, pl.country, e.purchase_offer, e.purchase_sku, e.purchase_currency, e.purchase_quantity, \
         e.purchase_amount, e.created_at, e.purchase_price_variant \
         from entry e join player pl on pl.id = e.player_id \
         where e.created_at >= $1 and e.created_at < $2 and e.purchase_id is not null \
         order by e.created_at limit $3",
    )
    .bind(range.from_micros)
    .bind(range.to_micros)
    .bind(range.rows_max.saturating_add(1))
    .fetch_all(&mut *conn)
    .await?;
    let purchases = within_bound(purchases, range, "sales")?;
    type OrderRow =
        (String, Option<String>, String, String, String, i64, i64, Option<i64>, i64, i64, Option<String>);
    let orders: Vec<OrderRow> = sqlx::query_as(
        "select o.player_id, pl.country, o.offer_id, o.sku, o.currency, o.quantity, o.gross_micros, o.fee_micros, \
         o.refunded_micros, o.created_at, o.price_variant \
         from payment_order o join player pl on pl.id = o.player_id \
         where o.created_at >= $1 and o.created_at < $2 \
         and o.status in ('paid', 'fulfilled', 'refunded', 'partially_refunded', 'disputed', 'charged_back') \
         order by o.created_at limit $3",
    )
    .bind(range.from_micros)
    .bind(range.to_micros)
    .bind(range.rows_max.saturating_add(1).saturating_sub(i64::try_from(purchases.len()).unwrap_or(0)))
    .fetch_all(&mut *conn)
    .await?;
    check_bound(purchases.len() + orders.len(), range, "sales")?;
    let mut sales = Vec::with_capacity(purchases.len() + orders.len());
    for (player_id, country, offer_id, sku, currency, quantity, amount, at_micros, variant) in purchases {
        // A tab purchase records money micros; a virtual one whole units.
        let gross = if MoneyCurrency::parse(&currency).is_ok() {
            micros_to_decimal(amount)
        } else {
            Decimal::from(amount)
        };
        sales.push(Sale {
            player_id,
            country,
            offer_id,
            sku,
            currency,
            quantity,
            gross,
            fee: Decimal::ZERO,
            refunded: Decimal::ZERO,
            variant,
            at_micros,
        });
    }
    for (player_id, country, offer_id, sku, currency, quantity, gross, fee, refunded, at_micros, variant) in
        orders
    {
        let settlement = sku.is_empty();
        sales.push(Sale {
            player_id,
            country,
            offer_id,
            sku: if settlement { TAB_SETTLEMENT_SKU.to_owned() } else { sku },
            currency,
            quantity: if settlement { 0 } else { quantity },
            // A settlement collects what tab purchases already counted as gross.
            gross: if settlement { Decimal::ZERO } else { micros_to_decimal(gross) },
            fee: micros_to_decimal(fee.unwrap_or(0)),
            refunded: micros_to_decimal(refunded),
            variant,
            at_micros,
        });
    }
    if let Some(currency) = &range.currency {
        sales.retain(|sale| &sale.currency == currency);
    }
    sales.sort_by_key(|sale| sale.at_micros);
    Ok(sales)
}

/// The store views in `range`.
///
/// # Errors
/// Fails when the database does.
pub async fn load_views(conn: &mut AnyConnection, range: &Range) -> ApiResult<Vec<View>> {
    let rows: Vec<(String, String, String, Option<String>, String, i64)> = sqlx::query_as(
        "select player_id, offer_id, sku, price_variant, price_point, created_at from store_view \
         where created_at >= $1 and created_at < $2 order by created_at limit $3",
    )
    .bind(range.from_micros)
    .bind(range.to_micros)
    .bind(range.rows_max.saturating_add(1))
    .fetch_all(&mut *conn)
    .await?;
    Ok(within_bound(rows, range, "store views")?
        .into_iter()
        .map(|(player_id, offer_id, sku, variant, price_point, at_micros)| View {
            player_id,
            offer_id,
            sku,
            variant,
            price_point,
            at_micros,
        })
        .collect())
}
