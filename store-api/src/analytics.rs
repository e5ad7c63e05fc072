//! Store views (what the SDK reports players were shown) and the sales analytics operators
//! read: every report is a list of flat rows, so it also reads as CSV.
//!
//! Amounts are decimal strings (real money in its currency, virtual currency in whole units).
//! Ratios (support, confidence, lift, conversion and its interval) are statistics, not money,
//! and are plain JSON numbers rounded to four decimal places.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::catalog::OfferId;

/// Offers in one store-view report at most.
pub const STORE_VIEW_OFFERS_MAX: usize = 100;

/// `POST /v1/events/store-viewed`: the offers the storefront showed the player.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreViewedRequest {
    /// 1 to 100 offer ids of the live catalog.
    pub offer_ids: Vec<OfferId>,
}

/// How many views were recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StoreViewedResult {
    /// One per offer.
    pub recorded: usize,
}

/// Sales of one item, in one currency, on one day (UTC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RevenueRow {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// A virtual currency code or an ISO 4217 code.
    pub currency: String,
    /// The item, or `tab_settlement` for the fees of settling tabs.
    pub sku: String,
    /// Purchases and orders.
    pub purchases: i64,
    /// Units sold.
    pub quantity: i64,
    /// What players paid.
    pub gross: String,
    /// The payment provider's fees.
    pub fees: String,
    /// Refunded and charged back.
    pub refunded: String,
    /// Gross less fees and refunds.
    pub net: String,
}

/// `GET /admin/v1/analytics/revenue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RevenueReport {
    /// By day, then currency, then sku.
    pub rows: Vec<RevenueRow>,
    /// Real money by day in the operator's reporting currency (`--reporting-currency`), each
    /// currency converted at the operator's rate (`--exchange-rates`). Virtual spend stays in
    /// `rows`.
    #[serde(default)]
    pub reporting: ReportingRevenue,
}

/// Real-money revenue by day in one reporting currency.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReportingRevenue {
    /// The ISO 4217 code every amount here is in.
    pub currency: String,
    /// By day: gross, fees, refunds and net, converted and summed.
    pub days: Vec<ReportingDay>,
    /// Currencies sold in the range with no exchange rate to the reporting currency: left out
    /// of `days` (their revenue is in `rows`).
    pub unconverted: Vec<String>,
}

/// One day of real-money revenue in the reporting currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReportingDay {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// What players paid.
    pub gross: String,
    /// The payment providers' fees.
    pub fees: String,
    /// Refunded and charged back.
    pub refunded: String,
    /// Gross less fees and refunds.
    pub net: String,
}

/// One cell of the weekday × hour heatmap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PeakCell {
    /// 1 (Monday) to 7 (Sunday), in the requested time zone.
    pub weekday: u8,
    /// 0 to 23, in the requested time zone.
    pub hour: u8,
    /// Purchases and orders.
    pub purchases: i64,
    /// Revenue (gross) in the requested currency; `0` without one.
    pub revenue: String,
}

/// `GET /admin/v1/analytics/peak-times`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PeakTimesReport {
    /// The UTC offset the cells are in (`+09:00`).
    pub tz: String,
    /// All 168 cells, Monday 00:00 first.
    pub cells: Vec<PeakCell>,
}

/// Two items bought by the same players.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PairRow {
    /// One item (the smaller sku).
    pub a: String,
    /// The other.
    pub b: String,
    /// Players who bought both within the window.
    pub players: i64,
    /// `players` / all buyers.
    pub support: f64,
    /// `players` / buyers of `a`: how often `a`'s buyers also bought `b`.
    pub confidence_a_to_b: f64,
    /// `players` / buyers of `b`.
    pub confidence_b_to_a: f64,
    /// `support` / (share of buyers of `a` × share of buyers of `b`): above 1, bought together
    /// more than chance.
    pub lift: f64,
}

/// `GET /admin/v1/analytics/combinations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CombinationsReport {
    /// Two purchases count as together when at most this far apart.
    pub window_h: i64,
    /// Players who bought anything in the range.
    pub buyers: i64,
    /// The top pairs by lift, then support.
    pub pairs: Vec<PairRow>,
}

/// Conversion of one offer at one price point or in one price variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConversionRow {
    /// The offer.
    pub offer_id: String,
    /// Its item.
    pub sku: String,
    /// `price_point` or `variant`.
    pub by: String,
    /// The price point shown (`500 gold / 50 gems`) or the variant's name.
    pub value: String,
    /// Players shown the offer this way.
    pub viewers: i64,
    /// Of them, players who then bought it.
    pub buyers: i64,
    /// `buyers` / `viewers`.
    pub conversion: f64,
    /// The 95% Wilson score interval of the conversion: low end.
    pub ci_low: f64,
    /// High end.
    pub ci_high: f64,
}

/// `GET /admin/v1/analytics/price-sensitivity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PriceSensitivityReport {
    /// By offer, then `by`, then value.
    pub rows: Vec<ConversionRow>,
}

/// Sales in one country in one period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GeographyRow {
    /// The period's first day, `YYYY-MM-DD` (a Monday for weeks).
    pub period: String,
    /// ISO 3166-1 alpha-2, or `unknown`.
    pub country: String,
    /// The currency of `revenue`.
    pub currency: String,
    /// Distinct buyers.
    pub buyers: i64,
    /// Purchases and orders.
    pub purchases: i64,
    /// Gross.
    pub revenue: String,
}

/// `GET /admin/v1/analytics/geography`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GeographyReport {
    /// `day` or `week`.
    pub granularity: String,
    /// By period, then country, then currency.
    pub rows: Vec<GeographyRow>,
}

/// Tabs in one money currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TabsRow {
    /// ISO 4217.
    pub currency: String,
    /// Tabs open now.
    pub open_tabs: i64,
    /// What open tabs are owed now.
    pub outstanding: String,
    /// Tabs opened in the range.
    pub opened: i64,
    /// Of those, tabs settled.
    pub settled: i64,
    /// `settled` / `opened`.
    pub settlement_rate: f64,
    /// Card fees saved by settling tabs in the range instead of charging each item.
    pub fees_saved: String,
}

/// `GET /admin/v1/analytics/tabs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TabsReport {
    /// One row per money currency with tabs.
    pub rows: Vec<TabsRow>,
}
