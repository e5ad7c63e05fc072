//! Operator routes for the catalog: the draft's items and offers (with `ETag` / `If-Match`),
//! publishing, versions and the diff.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use store_api::catalog::{
    CatalogDiff, CatalogVersion, CatalogVersionPage, DraftSummary, Item, ItemPage, NewOffer, Offer, OfferId,
    OfferPage, Sku,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::Operator;
use crate::auth::scopes::{CatalogRead, CatalogWrite};
use crate::catalog::{
    append_audit, delete_draft_item, delete_draft_offer, diff_draft, diff_has_changes, find_draft_item,
    find_draft_offer, list_draft_items, list_draft_offers, list_versions, lock_catalog, publish,
    put_draft_item, put_draft_offer,
};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, IfMatch, PageQuery};
use crate::http::with_etag;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_draft))
        .routes(routes!(list_items, create_item))
        .routes(routes!(get_item, replace_item, delete_item))
        .routes(routes!(list_offers, create_offer))
        .routes(routes!(get_offer, replace_offer, delete_offer))
        .routes(routes!(publish_draft))
        .routes(routes!(list_catalog_versions))
        .routes(routes!(get_diff))
}

fn path_sku(sku: &str) -> ApiResult<Sku> {
    Sku::parse(sku).map_err(|_| ApiError::not_found("sku", sku))
}

fn path_offer_id(id: &str) -> ApiResult<OfferId> {
    OfferId::parse(id).map_err(|_| ApiError::not_found("offer", id))
}

fn json_text<T: serde::Serialize>(value: &T) -> ApiResult<String> {
    Ok(serde_json::to_string(value).map_err(anyhow::Error::from)?)
}

/// A summary of the draft: counts, the live version it builds on, and whether it differs.
#[utoipa::path(
    get, path = "/admin/v1/catalog/draft", tag = "catalog",
    security(("operator" = ["catalog:read"])),
    responses((status = 200, body = DraftSummary), (status = 401, body = store_api::ErrorBody))
)]
async fn get_draft(
    State(state): State<AppState>,
    _operator: Operator<CatalogRead>,
) -> ApiResult<axum::Json<DraftSummary>> {
    let mut conn = state.db().pool().acquire().await?;
    let item_count: i64 = sqlx::query_scalar("select count(*) from draft_item").fetch_one(&mut *conn).await?;
    let offer_count: i64 =
        sqlx::query_scalar("select count(*) from draft_offer").fetch_one(&mut *conn).await?;
    let diff = diff_draft(&mut conn).await?;
    Ok(axum::Json(DraftSummary {
        base_version: diff.base_version,
        item_count,
        offer_count,
        has_changes: diff_has_changes(&diff),
    }))
}

/// Draft items, sorted by sku, a page at a time.
#[utoipa::path(
    get, path = "/admin/v1/catalog/draft/items", tag = "catalog",
    security(("operator" = ["catalog:read"])),
    params(PageQuery),
    responses((status = 200, body = ItemPage), (status = 400, body = store_api::ErrorBody))
)]
async fn list_items(
    State(state): State<AppState>,
    _operator: Operator<CatalogRead>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<ItemPage>> {
    let page = query.parse()?;
    let mut conn = state.db().pool().acquire().await?;
    let (items, next_cursor) = list_draft_items(&mut conn, &page).await?;
    Ok(axum::Json(ItemPage { items, next_cursor }))
}

/// Adds an item to the draft.
#[utoipa::path(
    post, path = "/admin/v1/catalog/draft/items", tag = "catalog",
    security(("operator" = ["catalog:write"])),
    request_body = Item,
    responses(
        (status = 201, body = Item, headers(("ETag" = String))),
        (status = 409, body = store_api::ErrorBody, description = "already_exists"),
        (status = 422, body = store_api::ErrorBody, description = "validation_failed"),
    )
)]
async fn create_item(
    State(state): State<AppState>,
    operator: Operator<CatalogWrite>,
    ApiJson(item): ApiJson<Item>,
) -> ApiResult<Response> {
    let mut tx = state.db().begin_write().await?;
    lock_catalog(&mut tx).await?;
    if find_draft_item(&mut tx, &item.sku).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            store_api::ErrorCode::AlreadyExists,
            format!("item `{}` already exists", item.sku),
        )
        .with_detail("field", "sku"));
    }
    let etag = put_draft_item(&mut tx, &item, true).await?;
    append_audit(
        &mut tx,
        &operator.actor(),
        "draft_item.create",
        item.sku.as_str(),
        None,
        Some(&json_text(&item)?),
    )
    .await?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::CREATED, &etag, axum::Json(item)))
}

/// One draft item, with its `ETag`.
#[utoipa::path(
    get, path = "/admin/v1/catalog/draft/items/{sku}", tag = "catalog",
    security(("operator" = ["catalog:read"])),
    params(("sku" = String, Path, description = "Item sku")),
    responses((status = 200, body = Item, headers(("ETag" = String))), (status = 404, body = store_api::ErrorBody))
)]
async fn get_item(
    State(state): State<AppState>,
    _operator: Operator<CatalogRead>,
    Path(sku): Path<String>,
) -> ApiResult<Response> {
    let sku = path_sku(&sku)?;
    let mut conn = state.db().pool().acquire().await?;
    let found =
        find_draft_item(&mut conn, &sku).await?.ok_or_else(|| ApiError::not_found("sku", sku.as_str()))?;
    Ok(with_etag(StatusCode::OK, &found.etag, axum::Json(found.value)))
}

/// Creates or replaces a draft item. The body's `sku` must be the path's. With `If-Match`, a
/// stale write is refused (412).
#[utoipa::path(
    put, path = "/admin/v1/catalog/draft/items/{sku}", tag = "catalog",
    security(("operator" = ["catalog:write"])),
    params(("sku" = String, Path, description = "Item sku"), ("If-Match" = Option<String>, Header, description = "ETag last read")),
    request_body = Item,
    responses(
        (status = 200, body = Item, headers(("ETag" = String))),
        (status = 201, body = Item, headers(("ETag" = String))),
        (status = 412, body = store_api::ErrorBody),
        (status = 422, body = store_api::ErrorBody),
    )
)]
async fn replace_item(
    State(state): State<AppState>,
    operator: Operator<CatalogWrite>,
    Path(sku): Path<String>,
    if_match: IfMatch,
    ApiJson(item): ApiJson<Item>,
) -> ApiResult<Response> {
    let sku = path_sku(&sku)?;
    if item.sku != sku {
        return Err(ApiError::invalid("sku", format!("the body's sku must be `{sku}`, as in the path")));
    }
    let mut tx = state.db().begin_write().await?;
    lock_catalog(&mut tx).await?;
    let before = find_draft_item(&mut tx, &sku).await?;
    if_match.check(before.as_ref().map(|found| found.etag.as_str()))?;
    let etag = put_draft_item(&mut tx, &item, before.is_none()).await?;
    let before_json = before.map(|found| json_text(&found.value)).transpose()?;
    append_audit(
        &mut tx,
        &operator.actor(),
        "draft_item.replace",
        sku.as_str(),
        before_json.as_deref(),
        Some(&json_text(&item)?),
    )
    .await?;
    tx.commit().await?;
    let status = if before_json.is_some() { StatusCode::OK } else { StatusCode::CREATED };
    Ok(with_etag(status, &etag, axum::Json(item)))
}

/// Removes an item from the draft, unless an offer or another item still refers to it (409).
#[utoipa::path(
    delete, path = "/admin/v1/catalog/draft/items/{sku}", tag = "catalog",
    security(("operator" = ["catalog:write"])),
    params(("sku" = String, Path, description = "Item sku"), ("If-Match" = Option<String>, Header, description = "ETag last read")),
    responses(
        (status = 204),
        (status = 404, body = store_api::ErrorBody),
        (status = 409, body = store_api::ErrorBody, description = "in_use"),
        (status = 412, body = store_api::ErrorBody),
    )
)]
async fn delete_item(
    State(state): State<AppState>,
    operator: Operator<CatalogWrite>,
    Path(sku): Path<String>,
    if_match: IfMatch,
) -> ApiResult<StatusCode> {
    let sku = path_sku(&sku)?;
    let mut tx = state.db().begin_write().await?;
    lock_catalog(&mut tx).await?;
    let before =
        find_draft_item(&mut tx, &sku).await?.ok_or_else(|| ApiError::not_found("sku", sku.as_str()))?;
    if_match.check(Some(&before.etag))?;
    delete_draft_item(&mut tx, &sku).await?;
    append_audit(
        &mut tx,
        &operator.actor(),
        "draft_item.delete",
        sku.as_str(),
        Some(&json_text(&before.value)?),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Draft offers, sorted by id, a page at a time.
#[utoipa::path(
    get, path = "/admin/v1/catalog/draft/offers", tag = "catalog",
    security(("operator" = ["catalog:read"])),
    params(PageQuery),
    responses((status = 200, body = OfferPage), (status = 400, body = store_api::ErrorBody))
)]
async fn list_offers(
    State(state): State<AppState>,
    _operator: Operator<CatalogRead>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<OfferPage>> {
    let page = query.parse()?;
    let mut conn = state.db().pool().acquire().await?;
    let (offers, next_cursor) = list_draft_offers(&mut conn, &page).await?;
    Ok(axum::Json(OfferPage { offers, next_cursor }))
}

/// Adds an offer to the draft; the server assigns its id unless the body gives one.
#[utoipa::path(
    post, path = "/admin/v1/catalog/draft/offers", tag = "catalog",
    security(("operator" = ["catalog:write"])),
    request_body = NewOffer,
    responses(
        (status = 201, body = Offer, headers(("ETag" = String))),
        (status = 409, body = store_api::ErrorBody, description = "already_exists"),
        (status = 422, body = store_api::ErrorBody, description = "validation_failed"),
    )
)]
async fn create_offer(
    State(state): State<AppState>,
    operator: Operator<CatalogWrite>,
    ApiJson(new_offer): ApiJson<NewOffer>,
) -> ApiResult<Response> {
    let offer_json = serde_json::json!({
        "id": new_offer.id.unwrap_or_else(OfferId::generate),
        "sku": new_offer.sku,
        "prices": new_offer.prices,
        "sale_window": new_offer.sale_window,
    });
    let offer: Offer =
        serde_json::from_value(offer_json).map_err(|error| ApiError::invalid("", error.to_string()))?;
    let mut tx = state.db().begin_write().await?;
    lock_catalog(&mut tx).await?;
    if find_draft_offer(&mut tx, offer.id).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            store_api::ErrorCode::AlreadyExists,
            format!("offer `{}` already exists", offer.id),
        )
        .with_detail("field", "id"));
    }
    let etag = put_draft_offer(&mut tx, &offer, true).await?;
    append_audit(
        &mut tx,
        &operator.actor(),
        "draft_offer.create",
        &offer.id.to_string(),
        None,
        Some(&json_text(&offer)?),
    )
    .await?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::CREATED, &etag, axum::Json(offer)))
}

/// One draft offer, with its `ETag`.
#[utoipa::path(
    get, path = "/admin/v1/catalog/draft/offers/{id}", tag = "catalog",
    security(("operator" = ["catalog:read"])),
    params(("id" = String, Path, description = "Offer id")),
    responses((status = 200, body = Offer, headers(("ETag" = String))), (status = 404, body = store_api::ErrorBody))
)]
async fn get_offer(
    State(state): State<AppState>,
    _operator: Operator<CatalogRead>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = path_offer_id(&id)?;
    let mut conn = state.db().pool().acquire().await?;
    let found = find_draft_offer(&mut conn, id)
        .await?
        .ok_or_else(|| ApiError::not_found("offer", &id.to_string()))?;
    Ok(with_etag(StatusCode::OK, &found.etag, axum::Json(found.value)))
}

/// Creates or replaces a draft offer. The body's `id` must be the path's. With `If-Match`, a
/// stale write is refused (412).
#[utoipa::path(
    put, path = "/admin/v1/catalog/draft/offers/{id}", tag = "catalog",
    security(("operator" = ["catalog:write"])),
    params(("id" = String, Path, description = "Offer id"), ("If-Match" = Option<String>, Header, description = "ETag last read")),
    request_body = Offer,
    responses(
        (status = 200, body = Offer, headers(("ETag" = String))),
        (status = 201, body = Offer, headers(("ETag" = String))),
        (status = 412, body = store_api::ErrorBody),
        (status = 422, body = store_api::ErrorBody),
    )
)]
async fn replace_offer(
    State(state): State<AppState>,
    operator: Operator<CatalogWrite>,
    Path(id): Path<String>,
    if_match: IfMatch,
    ApiJson(offer): ApiJson<Offer>,
) -> ApiResult<Response> {
    let id = path_offer_id(&id)?;
    if offer.id != id {
        return Err(ApiError::invalid("id", format!("the body's id must be `{id}`, as in the path")));
    }
    let mut tx = state.db().begin_write().await?;
    lock_catalog(&mut tx).await?;
    let before = find_draft_offer(&mut tx, id).await?;
    if_match.check(before.as_ref().map(|found| found.etag.as_str()))?;
    let etag = put_draft_offer(&mut tx, &offer, before.is_none()).await?;
    let before_json = before.map(|found| json_text(&found.value)).transpose()?;
    append_audit(
        &mut tx,
        &operator.actor(),
        "draft_offer.replace",
        &id.to_string(),
        before_json.as_deref(),
        Some(&json_text(&offer)?),
    )
    .await?;
    tx.commit().await?;
    let status = if before_json.is_some() { StatusCode::OK } else { StatusCode::CREATED };
    Ok(with_etag(status, &etag, axum::Json(offer)))
}

/// Removes an offer from the draft.
#[utoipa::path(
    delete, path = "/admin/v1/catalog/draft/offers/{id}", tag = "catalog",
    security(("operator" = ["catalog:write"])),
    params(("id" = String, Path, description = "Offer id"), ("If-Match" = Option<String>, Header, description = "ETag last read")),
    responses((status = 204), (status = 404, body = store_api::ErrorBody), (status = 412, body = store_api::ErrorBody))
)]
async fn delete_offer(
    State(state): State<AppState>,
    operator: Operator<CatalogWrite>,
    Path(id): Path<String>,
    if_match: IfMatch,
) -> ApiResult<StatusCode> {
    let id = path_offer_id(&id)?;
    let mut tx = state.db().begin_write().await?;
    lock_catalog(&mut tx).await?;
    let before =
        find_draft_offer(&mut tx, id).await?.ok_or_else(|| ApiError::not_found("offer", &id.to_string()))?;
    if_match.check(Some(&before.etag))?;
    delete_draft_offer(&mut tx, id).await?;
    append_audit(
        &mut tx,
        &operator.actor(),
        "draft_offer.delete",
        &id.to_string(),
        Some(&json_text(&before.value)?),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Validates the whole draft and makes it live as the next immutable version.
#[utoipa::path(
    post, path = "/admin/v1/catalog/publish", tag = "catalog",
    security(("operator" = ["catalog:write"])),
    responses(
        (status = 201, body = CatalogVersion),
        (status = 409, body = store_api::ErrorBody, description = "nothing_to_publish"),
        (status = 422, body = store_api::ErrorBody, description = "validation_failed"),
    )
)]
async fn publish_draft(
    State(state): State<AppState>,
    operator: Operator<CatalogWrite>,
) -> ApiResult<impl IntoResponse> {
    let mut tx = state.db().begin_write().await?;
    lock_catalog(&mut tx).await?;
    let version = publish(&mut tx, Some(&operator.actor())).await?;
    append_audit(
        &mut tx,
        &operator.actor(),
        "catalog.publish",
        &version.version.to_string(),
        None,
        Some(&json_text(&version)?),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(version)))
}

/// Published versions, newest first.
#[utoipa::path(
    get, path = "/admin/v1/catalog/versions", tag = "catalog",
    security(("operator" = ["catalog:read"])),
    params(PageQuery),
    responses((status = 200, body = CatalogVersionPage), (status = 400, body = store_api::ErrorBody))
)]
async fn list_catalog_versions(
    State(state): State<AppState>,
    _operator: Operator<CatalogRead>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<CatalogVersionPage>> {
    let page = query.parse()?;
    let mut conn = state.db().pool().acquire().await?;
    let (versions, next_cursor) = list_versions(&mut conn, &page).await?;
    Ok(axum::Json(CatalogVersionPage { versions, next_cursor }))
}

/// What publishing the draft would change: skus and offer ids added, removed and changed.
#[utoipa::path(
    get, path = "/admin/v1/catalog/diff", tag = "catalog",
    security(("operator" = ["catalog:read"])),
    responses((status = 200, body = CatalogDiff))
)]
async fn get_diff(
    State(state): State<AppState>,
    _operator: Operator<CatalogRead>,
) -> ApiResult<axum::Json<CatalogDiff>> {
    let mut conn = state.db().pool().acquire().await?;
    Ok(axum::Json(diff_draft(&mut conn).await?))
}
