//! Store views from games (`POST /v1/events/store-viewed`) and the operators' sales analytics
//! (`GET /admin/v1/analytics/…`), as JSON or, with `?format=csv`, as CSV.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use store_api::analytics::{
    CombinationsReport, GeographyReport, PeakTimesReport, PriceSensitivityReport, RevenueReport,
    STORE_VIEW_OFFERS_MAX, StoreViewedRequest, StoreViewedResult, TabsReport,
};
use store_api::catalog::{Price, Settlement};
use time::Date;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::analytics::{self, Range};
use crate::app::AppState;
use crate::db::now_micros;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery};
use crate::players::auth::scopes::AnalyticsRead;
use crate::players::auth::{Operator, PlayerAuth};

/// The range a report covers when none is given, in days ending today.
const RANGE_DAYS_DEFAULT: i64 = 30;
/// The widest range one report may cover.
const RANGE_DAYS_MAX: i64 = 366;
/// The combination window when none is given.
const WINDOW_H_DEFAULT: i64 = 24;
/// The widest combination window.
const WINDOW_H_MAX: i64 = 24 * 90;
/// Pairs returned when `top` is not given.
const TOP_DEFAULT: usize = 10;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(store_viewed))
        .routes(routes!(revenue))
        .routes(routes!(peak_times))
        .routes(routes!(combinations))
        .routes(routes!(price_sensitivity))
        .routes(routes!(geography))
        .routes(routes!(tabs))
}

/// Records that the storefront showed these offers to the player, with the prices they saw
/// (their region's, their price variant's): the views of the price-sensitivity report.
#[utoipa::path(
    post, path = "/v1/events/store-viewed", tag = "players",
    security(("player" = [])),
    request_body = StoreViewedRequest,
    responses(
        (status = 202, body = StoreViewedResult),
        (status = 400, body = store_api::ErrorBody, description = "no offers, too many, or one not in the live catalog"),
    )
)]
async fn store_viewed(
    State(state): State<AppState>,
    player: PlayerAuth,
    ApiJson(request): ApiJson<StoreViewedRequest>,
) -> ApiResult<Response> {
    if request.offer_ids.is_empty() || request.offer_ids.len() > STORE_VIEW_OFFERS_MAX {
        return Err(ApiError::invalid("offer_ids", format!("send 1 to {STORE_VIEW_OFFERS_MAX} offer ids")));
    }
    let mut tx = state.db().begin_write().await?;
    let catalog = state.catalog_cache().get(&mut tx).await?;
    let buyer = crate::store::pricing::buyer(&mut tx, player.player_id).await?;
    let now = now_micros();
    for (index, offer_id) in request.offer_ids.iter().enumerate() {
        let offer = catalog.offer(*offer_id).ok_or_else(|| {
            ApiError::invalid(
                &format!("offer_ids[{index}]"),
                format!("offer {offer_id} is not in the live catalog"),
            )
        })?;
        let (prices, variant) = crate::store::pricing::effective_prices(offer, &buyer);
        sqlx::query(
            "insert into store_view (player_id, offer_id, sku, price_variant, price_point, created_at) \
             values ($1, $2, $3, $4, $5, $6)",
        )
        .bind(player.player_id.to_string())
        .bind(offer_id.to_string())
        .bind(offer.sku.as_str())
        .bind(variant.map(str::to_owned))
        .bind(price_point(prices))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let result = StoreViewedResult { recorded: request.offer_ids.len() };
    Ok((StatusCode::ACCEPTED, axum::Json(result)).into_response())
}

/// The prices as shown: `500 gold / 50 gems`, `0.99 USD`, `0.05 USD on tab`.
fn price_point(prices: &[Price]) -> String {
    prices
        .iter()
        .map(|price| match price {
            Price::Virtual { currency, amount, .. } => format!("{amount} {currency}"),
            Price::Real { money, settlement: Settlement::Immediate } => money.to_string(),
            Price::Real { money, settlement: Settlement::Tab } => format!("{money} on tab"),
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The query every report takes.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    /// First day, `YYYY-MM-DD` (UTC); 29 days before `to` when absent.
    from: Option<String>,
    /// Last day, inclusive; today when absent. At most 366 days after `from`.
    to: Option<String>,
    /// Only sales in this currency (a virtual currency code or ISO 4217).
    currency: Option<String>,
    /// `json` (the default) or `csv`.
    format: Option<String>,
    /// Heatmap only: a UTC offset such as `+09:00` (default `UTC`).
    tz: Option<String>,
    /// Combinations only: hours within which two purchases count as together (default 24).
    window_h: Option<i64>,
    /// Combinations only: how many pairs (default 10, at most 100).
    top: Option<usize>,
    /// Geography only: `day` (default) or `week`.
    granularity: Option<String>,
}

impl ReportQuery {
    fn range(&self, rows_max: i64) -> ApiResult<Range> {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        let parse = |field: &str, text: &str| {
            Date::parse(text, &format).map_err(|_| ApiError::invalid(field, "a date is YYYY-MM-DD"))
        };
        let today = crate::db::now().date();
        let to = match &self.to {
            Some(text) => parse("to", text)?,
            None => today,
        };
        let from = match &self.from {
            Some(text) => parse("from", text)?,
            None => to - time::Duration::days(RANGE_DAYS_DEFAULT - 1),
        };
        let days = (to - from).whole_days();
        if days < 0 {
            return Err(ApiError::invalid("from", "`from` must not be after `to`"));
        }
        if days >= RANGE_DAYS_MAX {
            return Err(ApiError::invalid("to", format!("a report covers at most {RANGE_DAYS_MAX} days")));
        }
        let start = |date: Date| date.midnight().assume_utc().unix_timestamp() * 1_000_000;
        Ok(Range {
            from_micros: start(from),
            to_micros: start(to + time::Duration::days(1)),
            currency: self.currency.clone(),
            rows_max,
        })
    }

    fn csv(&self) -> ApiResult<bool> {
        match self.format.as_deref() {
            None | Some("json") => Ok(false),
            Some("csv") => Ok(true),
            Some(_) => Err(ApiError::invalid("format", "`json` or `csv`")),
        }
    }
}

/// What every report handler starts from: the checked range, the answer's format, and a
/// connection.
struct Opened {
    range: Range,
    csv: bool,
    conn: sqlx::pool::PoolConnection<sqlx::Any>,
}

async fn open_report(state: &AppState, query: &ReportQuery) -> ApiResult<Opened> {
    let (range, csv) = (query.range(state.settings().analytics_rows_max)?, query.csv()?);
    Ok(Opened { range, csv, conn: state.db().pool().acquire().await? })
}

/// Answers with the report as JSON, or its rows as CSV.
fn answer<R: Serialize, Row: Serialize>(
    name: &str,
    report: &R,
    rows: &[Row],
    csv: bool,
) -> ApiResult<Response> {
    if !csv {
        return Ok(axum::Json(report).into_response());
    }
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in rows {
        writer.serialize(row).map_err(|error| anyhow::anyhow!(error))?;
    }
    let body = writer.into_inner().map_err(|error| anyhow::anyhow!(error.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}.csv\"")),
        ],
        body,
    )
        .into_response())
}

/// Gross, fees, refunds and net, and purchase counts, by day (UTC), currency and item.
#[utoipa::path(
    get, path = "/admin/v1/analytics/revenue", tag = "analytics",
    security(("operator" = ["analytics:read"])),
    params(ReportQuery),
    responses((status = 200, body = RevenueReport, description = "JSON, or CSV with ?format=csv"), (status = 400, body = store_api::ErrorBody))
)]
async fn revenue(
    State(state): State<AppState>,
    _operator: Operator<AnalyticsRead>,
    ApiQuery(query): ApiQuery<ReportQuery>,
) -> ApiResult<Response> {
    let Opened { range, csv, mut conn } = open_report(&state, &query).await?;
    let report =
        analytics::revenue(&analytics::load_sales(&mut conn, &range).await?, &state.settings().reporting);
    answer("revenue", &report, &report.rows, csv)
}

/// Purchases and revenue by weekday and hour: when players buy.
#[utoipa::path(
    get, path = "/admin/v1/analytics/peak-times", tag = "analytics",
    security(("operator" = ["analytics:read"])),
    params(ReportQuery),
    responses((status = 200, body = PeakTimesReport, description = "JSON, or CSV with ?format=csv"), (status = 400, body = store_api::ErrorBody))
)]
async fn peak_times(
    State(state): State<AppState>,
    _operator: Operator<AnalyticsRead>,
    ApiQuery(query): ApiQuery<ReportQuery>,
) -> ApiResult<Response> {
    let offset = analytics::parse_offset(query.tz.as_deref().unwrap_or("UTC"))
        .map_err(|message| ApiError::invalid("tz", message))?;
    let Opened { range, csv, mut conn } = open_report(&state, &query).await?;
    let sales = analytics::load_sales(&mut conn, &range).await?;
    let report = analytics::peak_times(&sales, offset, range.currency.as_deref());
    answer("peak-times", &report, &report.cells, csv)
}

/// Items bought by the same players within a window, with support, confidence and lift.
#[utoipa::path(
    get, path = "/admin/v1/analytics/combinations", tag = "analytics",
    security(("operator" = ["analytics:read"])),
    params(ReportQuery),
    responses((status = 200, body = CombinationsReport, description = "JSON, or CSV with ?format=csv"), (status = 400, body = store_api::ErrorBody))
)]
async fn combinations(
    State(state): State<AppState>,
    _operator: Operator<AnalyticsRead>,
    ApiQuery(query): ApiQuery<ReportQuery>,
) -> ApiResult<Response> {
    let window_h = query.window_h.unwrap_or(WINDOW_H_DEFAULT);
    if !(1..=WINDOW_H_MAX).contains(&window_h) {
        return Err(ApiError::invalid("window_h", format!("1 to {WINDOW_H_MAX} hours")));
    }
    let top = query.top.unwrap_or(TOP_DEFAULT);
    if !(1..=analytics::PAIRS_TOP_MAX).contains(&top) {
        return Err(ApiError::invalid("top", format!("1 to {}", analytics::PAIRS_TOP_MAX)));
    }
    let Opened { range, csv, mut conn } = open_report(&state, &query).await?;
    let report = analytics::combinations(&analytics::load_sales(&mut conn, &range).await?, window_h, top);
    answer("combinations", &report, &report.pairs, csv)
}

/// For each offer, viewers, buyers and conversion (with a 95% interval) by price point and by
/// A/B price variant.
#[utoipa::path(
    get, path = "/admin/v1/analytics/price-sensitivity", tag = "analytics",
    security(("operator" = ["analytics:read"])),
    params(ReportQuery),
    responses((status = 200, body = PriceSensitivityReport, description = "JSON, or CSV with ?format=csv"), (status = 400, body = store_api::ErrorBody))
)]
async fn price_sensitivity(
    State(state): State<AppState>,
    _operator: Operator<AnalyticsRead>,
    ApiQuery(query): ApiQuery<ReportQuery>,
) -> ApiResult<Response> {
    let Opened { range, csv, mut conn } = open_report(&state, &query).await?;
    let sales = analytics::load_sales(&mut conn, &range).await?;
    let views = analytics::load_views(&mut conn, &range).await?;
    let report = PriceSensitivityReport { rows: analytics::price_sensitivity(&views, &sales) };
    answer("price-sensitivity", &report, &report.rows, csv)
}

/// Revenue, buyers and purchases by country over time.
#[utoipa::path(
    get, path = "/admin/v1/analytics/geography", tag = "analytics",
    security(("operator" = ["analytics:read"])),
    params(ReportQuery),
    responses((status = 200, body = GeographyReport, description = "JSON, or CSV with ?format=csv"), (status = 400, body = store_api::ErrorBody))
)]
async fn geography(
    State(state): State<AppState>,
    _operator: Operator<AnalyticsRead>,
    ApiQuery(query): ApiQuery<ReportQuery>,
) -> ApiResult<Response> {
    let weekly = match query.granularity.as_deref() {
        None | Some("day") => false,
        Some("week") => true,
        Some(_) => return Err(ApiError::invalid("granularity", "`day` or `week`")),
    };
    let Opened { range, csv, mut conn } = open_report(&state, &query).await?;
    let report = analytics::geography(&analytics::load_sales(&mut conn, &range).await?, weekly);
    answer("geography", &report, &report.rows, csv)
}

/// Open tabs and what they owe; tabs opened in the range, their settlement rate, and the card
/// fees settling them saved.
#[utoipa::path(
    get, path = "/admin/v1/analytics/tabs", tag = "analytics",
    security(("operator" = ["analytics:read"])),
    params(ReportQuery),
    responses((status = 200, body = TabsReport, description = "JSON, or CSV with ?format=csv"), (status = 400, body = store_api::ErrorBody))
)]
async fn tabs(
    State(state): State<AppState>,
    _operator: Operator<AnalyticsRead>,
    ApiQuery(query): ApiQuery<ReportQuery>,
) -> ApiResult<Response> {
    let Opened { range, csv, mut conn } = open_report(&state, &query).await?;
    let facts = analytics::load_tabs(&mut conn, &range).await?;
    let report = analytics::tabs(&facts, &range, &state.settings().sandbox_fees);
    answer("tabs", &report, &report.rows, csv)
}
