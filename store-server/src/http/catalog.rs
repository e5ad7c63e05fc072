//! Operator routes for the catalog: the draft's items and offers (with `ETag` / `If-Match`),
//! publishing, versions and the diff.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use store_api::ErrorCode;
use store_api::catalog::{
    CatalogDiff, CatalogVersion, CatalogVersionPage, DraftSummary, Item, ItemPage, NewOffer, Offer, OfferId,
    OfferPage,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, IfMatch, PageQuery};
use crate::http::with_etag;
use crate::players::auth::Operator;
use crate::players::auth::scopes::{CatalogRead, CatalogWrite};
use crate::store::catalog::{
    CatalogRules, DraftObject, append_audit, delete_draft, diff_draft, diff_has_changes, draft_snapshot,
    equivalents, find_draft, list_draft, list_versions, lock_catalog, publish, put_draft,
};

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

fn json_text<T: serde::Serialize>(value: &T) -> ApiResult<String> {
    Ok(serde_json::to_string(value).map_err(anyhow::Error::from)?)
}

/// The key in a path, if it could name a `T` (anything else names nothing: 404).
fn path_key<T: DraftObject>(key: &str) -> ApiResult<&str> {
    if T::is_key(key) { Ok(key) } else { Err(ApiError::not_found(T::NAME, key)) }
}

/// One draft object with its `ETag`.
async fn get_draft_object<T: DraftObject>(state: &AppState, key: &str) -> ApiResult<Response> {
    let key = path_key::<T>(key)?;
    let mut conn = state.db().pool().acquire().await?;
    let found = find_draft::<T>(&mut conn, key).await?.ok_or_else(|| ApiError::not_found(T::NAME, key))?;
    Ok(with_etag(StatusCode::OK, &found.etag, axum::Json(found.value)))
}

/// Adds a new object to the draft; 409 when its key is taken.
async fn create_draft_object<T: DraftObject>(
    state: &AppState,
    actor: &str,
    object: T,
) -> ApiResult<Response> {
    let key = object.key();
    let mut tx = state.db().begin_write().await?;
    lock_catalog(&mut tx).await?;
    if find_draft::<T>(&mut tx, &key).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AlreadyExists,
            format!("{} `{key}` already exists", T::NAME),
        )
        .with_detail("field", if T::NAME == "item" { "sku" } else { "id" }));
    }
    let etag = put_draft(&mut tx, &object, true, &CatalogRules::from_settings(state.settings())).await?;
    append_audit(
        &mut tx,
        actor,
        &format!("draft_{}.create", T::NAME),
        &key,
        None,
        Some(&json_text(&object)?),
    )
    .await?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::CREATED, &etag, axum::Json(object)))
}

/// Creates or replaces the object at `key`, honouring `If-Match`.
async fn replace_draft_object<T: DraftObject>(
    state: &AppState,
    actor: &str,
    key: &str,
    if_match: &IfMatch,
    object: T,
) -> ApiResult<Response> {
    let key = path_key::<T>(key)?;
    if object.key() != key {
        let field = if T::NAME == "item" { "sku" } else { "id" };
        return Err(ApiError::invalid(field, format!("the body's {field} must be `{key}`, as in the path")));
    }
    let mut tx = state.db().begin_write().await?;
    lock_catalog(&mut tx).await?;
    let before = find_draft::<T>(&mut tx, key).await?;
    if_match.check(before.as_ref().map(|found| found.etag.as_str()))?;
    let etag =
        put_draft(&mut tx, &object, before.is_none(), &CatalogRules::from_settings(state.settings())).await?;
    let before_json = before.map(|found| json_text(&found.value)).transpose()?;
    let action = format!("draft_{}.replace", T::NAME);
    append_audit(&mut tx, actor, &action, key, before_json.as_deref(), Some(&json_text(&object)?)).await?;
    tx.commit().await?;
    let status = if before_json.is_some() { StatusCode::OK } else { StatusCode::CREATED };
    Ok(with_etag(status, &etag, axum::Json(object)))
}

/// Deletes the object at `key`, honouring `If-Match`, unless something refers to it.
async fn delete_draft_object<T: DraftObject>(
    state: &AppState,
    actor: &str,
    key: &str,
    if_match: &IfMatch,
) -> ApiResult<StatusCode> {
    let key = path_key::<T>(key)?;
    let mut tx = state.db().begin_write().await?;
    lock_catalog(&mut tx).await?;
    let before = find_draft::<T>(&mut tx, key).await?.ok_or_else(|| ApiError::not_found(T::NAME, key))?;
    if_match.check(Some(&before.etag))?;
    delete_draft::<T>(&mut tx, key).await?;
    append_audit(
        &mut tx,
        actor,
        &format!("draft_{}.delete", T::NAME),
        key,
        Some(&json_text(&before.value)?),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A page of draft objects.
async fn list_draft_objects<T: DraftObject>(
    state: &AppState,
    query: PageQuery,
) -> ApiResult<(Vec<T>, Option<String>)> {
    let page = query.parse()?;
    let mut conn = state.db().pool().acquire().await?;
    list_draft::<T>(&mut conn, &page).await
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
    let draft = draft_snapshot(&mut conn).await?;
    Ok(axum::Json(DraftSummary {
        base_version: diff.base_version,
        item_count,
        offer_count,
        has_changes: diff_has_changes(&diff),
        reference_packs: equivalents::reference_pack_list(&draft.items, &draft.offers),
        warnings: equivalents::catalog_warnings(&draft.items, &draft.offers),
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
    let (items, next_cursor) = list_draft_objects(&state, query).await?;
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
    create_draft_object(&state, &operator.actor(), item).await
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
    get_draft_object::<Item>(&state, &sku).await
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
    replace_draft_object(&state, &operator.actor(), &sku, &if_match, item).await
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
    delete_draft_object::<Item>(&state, &operator.actor(), &sku, &if_match).await
}

/// Draft offers, sorted by id, a page at a time; their virtual prices carry their real-money
/// equivalents at the draft's reference packs (for a player with no regional price or
/// experiment), as the player's catalog will once published.
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
    let (mut offers, next_cursor) = list_draft_objects::<Offer>(&state, query).await?;
    let mut conn = state.db().pool().acquire().await?;
    let draft = draft_snapshot(&mut conn).await?;
    let rates = equivalents::anyones_rates(&draft.items, &draft.offers);
    for offer in &mut offers {
        equivalents::set_equivalents(offer, &rates);
    }
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
    let offer = new_offer
        .into_offer(OfferId::generate())
        .map_err(|message| ApiError::invalid(".", message))?
        .without_equivalents();
    create_draft_object(&state, &operator.actor(), offer).await
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
    get_draft_object::<Offer>(&state, &id).await
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
    replace_draft_object(&state, &operator.actor(), &id, &if_match, offer.without_equivalents()).await
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
    delete_draft_object::<Offer>(&state, &operator.actor(), &id, &if_match).await
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
    let version =
        publish(&mut tx, Some(&operator.actor()), &CatalogRules::from_settings(state.settings())).await?;
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
