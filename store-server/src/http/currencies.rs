//! Operator routes for virtual currencies: create, read, list and replace.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use store_api::currency::{Currency, CurrencyCode, CurrencyList};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, IfMatch};
use crate::http::with_etag;
use crate::players::auth::Operator;
use crate::players::auth::scopes::{CatalogRead, CatalogWrite};
use crate::store::catalog::{
    append_audit, create_currency, currency_etag, find_currency, list_currencies, lock_catalog,
    update_currency,
};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_currencies_route, create_currency_route))
        .routes(routes!(get_currency, replace_currency))
}

fn parse_code(code: &str) -> ApiResult<CurrencyCode> {
    CurrencyCode::parse(code).map_err(|_| ApiError::not_found("currency", code))
}

/// Every currency, sorted by code (at most 64, so never paged).
#[utoipa::path(
    get, path = "/admin/v1/currencies", tag = "catalog",
    security(("operator" = ["catalog:read"])),
    responses((status = 200, body = CurrencyList), (status = 401, body = store_api::ErrorBody), (status = 403, body = store_api::ErrorBody))
)]
async fn list_currencies_route(
    State(state): State<AppState>,
    _operator: Operator<CatalogRead>,
) -> ApiResult<axum::Json<CurrencyList>> {
    let mut conn = state.db().pool().acquire().await?;
    Ok(axum::Json(CurrencyList { currencies: list_currencies(&mut conn).await? }))
}

/// Creates a currency. It is live at once (currencies are not drafted).
#[utoipa::path(
    post, path = "/admin/v1/currencies", tag = "catalog",
    security(("operator" = ["catalog:write"])),
    request_body = Currency,
    responses(
        (status = 201, body = Currency, headers(("ETag" = String))),
        (status = 400, body = store_api::ErrorBody),
        (status = 409, body = store_api::ErrorBody, description = "already_exists or limit_exceeded"),
    )
)]
async fn create_currency_route(
    State(state): State<AppState>,
    operator: Operator<CatalogWrite>,
    ApiJson(currency): ApiJson<Currency>,
) -> ApiResult<Response> {
    let mut tx = state.db().begin_write().await?;
    lock_catalog(&mut tx).await?;
    create_currency(&mut tx, &currency).await?;
    let after = serde_json::to_string(&currency).map_err(anyhow::Error::from)?;
    append_audit(&mut tx, &operator.actor(), "currency.create", currency.code.as_str(), None, Some(&after))
        .await?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::CREATED, &currency_etag(&currency)?, axum::Json(currency)))
}

/// One currency, with its `ETag`.
#[utoipa::path(
    get, path = "/admin/v1/currencies/{code}", tag = "catalog",
    security(("operator" = ["catalog:read"])),
    params(("code" = String, Path, description = "Currency code")),
    responses((status = 200, body = Currency, headers(("ETag" = String))), (status = 404, body = store_api::ErrorBody))
)]
async fn get_currency(
    State(state): State<AppState>,
    _operator: Operator<CatalogRead>,
    Path(code): Path<String>,
) -> ApiResult<Response> {
    let code = parse_code(&code)?;
    let mut conn = state.db().pool().acquire().await?;
    let currency = find_currency(&mut conn, &code)
        .await?
        .ok_or_else(|| ApiError::not_found("currency", code.as_str()))?;
    Ok(with_etag(StatusCode::OK, &currency_etag(&currency)?, axum::Json(currency)))
}

/// Replaces a currency's fields. The body's `code` must be the path's. Send `If-Match` with the
/// `ETag` you read to refuse a stale write (412).
#[utoipa::path(
    put, path = "/admin/v1/currencies/{code}", tag = "catalog",
    security(("operator" = ["catalog:write"])),
    params(("code" = String, Path, description = "Currency code"), ("If-Match" = Option<String>, Header, description = "ETag last read")),
    request_body = Currency,
    responses(
        (status = 200, body = Currency, headers(("ETag" = String))),
        (status = 404, body = store_api::ErrorBody),
        (status = 412, body = store_api::ErrorBody),
    )
)]
async fn replace_currency(
    State(state): State<AppState>,
    operator: Operator<CatalogWrite>,
    Path(code): Path<String>,
    if_match: IfMatch,
    ApiJson(currency): ApiJson<Currency>,
) -> ApiResult<Response> {
    let code = parse_code(&code)?;
    if currency.code != code {
        return Err(ApiError::invalid("code", format!("the body's code must be `{code}`, as in the path")));
    }
    let mut tx = state.db().begin_write().await?;
    lock_catalog(&mut tx).await?;
    let before =
        find_currency(&mut tx, &code).await?.ok_or_else(|| ApiError::not_found("currency", code.as_str()))?;
    if_match.check(Some(&currency_etag(&before)?))?;
    update_currency(&mut tx, &currency).await?;
    let before_json = serde_json::to_string(&before).map_err(anyhow::Error::from)?;
    let after_json = serde_json::to_string(&currency).map_err(anyhow::Error::from)?;
    append_audit(
        &mut tx,
        &operator.actor(),
        "currency.update",
        code.as_str(),
        Some(&before_json),
        Some(&after_json),
    )
    .await?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::OK, &currency_etag(&currency)?, axum::Json(currency)))
}
