//! Operator API keys: create (shown once), list, revoke.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use store_api::auth::{ApiKey, ApiKeyPage, CreateApiKeyRequest, CreatedApiKey};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::db::from_micros;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, PageQuery};
use crate::players::auth::{Operator, create_api_key, parse_scopes, scopes::KeysAdmin};
use crate::store::catalog::append_audit;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_api_keys, create_api_key_route)).routes(routes!(revoke_api_key))
}

/// Lists API keys, oldest first, never with their secrets.
#[utoipa::path(
    get, path = "/admin/v1/api-keys", tag = "operators",
    security(("operator" = ["keys:admin"])),
    params(PageQuery),
    responses((status = 200, body = ApiKeyPage), (status = 401, body = store_api::ErrorBody), (status = 403, body = store_api::ErrorBody))
)]
async fn list_api_keys(
    State(state): State<AppState>,
    _operator: Operator<KeysAdmin>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<ApiKeyPage>> {
    let page = query.parse()?;
    let rows: Vec<(String, String, String, String, i64, Option<i64>)> = sqlx::query_as(
        "select id, name, prefix, scopes, created_at, revoked_at from api_key where id > $1 order by id limit $2",
    )
    .bind(page.cursor.clone().unwrap_or_default())
    .bind(page.fetch_count())
    .fetch_all(state.db().pool())
    .await?;
    let keys = rows
        .into_iter()
        .map(|(id, name, prefix, scopes, created_at, revoked_at)| {
            Ok(ApiKey {
                id: Uuid::parse_str(&id).map_err(|error| anyhow::anyhow!("stored key id: {error}"))?,
                name,
                prefix,
                scopes: parse_scopes(&scopes),
                created_at: from_micros(created_at),
                revoked_at: revoked_at.map(from_micros),
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let (api_keys, next_cursor) = page.finish(keys, |key| key.id.to_string());
    Ok(axum::Json(ApiKeyPage { api_keys, next_cursor }))
}

/// Creates an API key. The key is in this response only; store it now.
#[utoipa::path(
    post, path = "/admin/v1/api-keys", tag = "operators",
    security(("operator" = ["keys:admin"])),
    request_body = CreateApiKeyRequest,
    responses((status = 201, body = CreatedApiKey), (status = 400, body = store_api::ErrorBody), (status = 403, body = store_api::ErrorBody))
)]
async fn create_api_key_route(
    State(state): State<AppState>,
    operator: Operator<KeysAdmin>,
    ApiJson(request): ApiJson<CreateApiKeyRequest>,
) -> ApiResult<(StatusCode, axum::Json<CreatedApiKey>)> {
    if request.scopes.is_empty() {
        return Err(ApiError::invalid("scopes", "a key needs at least one scope"));
    }
    let mut tx = state.db().begin_write().await?;
    let (key, api_key) = create_api_key(&mut tx, request.name.as_str(), &request.scopes).await?;
    let after = serde_json::to_string(&api_key).map_err(anyhow::Error::from)?;
    append_audit(&mut tx, &operator.actor(), "api_key.create", &api_key.id.to_string(), None, Some(&after))
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(CreatedApiKey { key, api_key })))
}

/// Revokes an API key at once. Revoking twice is harmless.
#[utoipa::path(
    delete, path = "/admin/v1/api-keys/{id}", tag = "operators",
    security(("operator" = ["keys:admin"])),
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 204), (status = 404, body = store_api::ErrorBody))
)]
async fn revoke_api_key(
    State(state): State<AppState>,
    operator: Operator<KeysAdmin>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found("api_key", &id))?;
    let mut tx = state.db().begin_write().await?;
    let found: Option<(String, String, Option<i64>)> =
        sqlx::query_as("select name, prefix, revoked_at from api_key where id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
    let (name, prefix, revoked_at) = found.ok_or_else(|| ApiError::not_found("api_key", &id.to_string()))?;
    let now = crate::db::now_micros();
    sqlx::query("update api_key set revoked_at = coalesce(revoked_at, $2) where id = $1")
        .bind(id.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let state_of = |revoked_at: Option<i64>| {
        serde_json::json!({
            "name": name,
            "prefix": prefix,
            "revoked_at": revoked_at.map(|at| crate::store::operations::rfc3339(crate::db::from_micros(at))),
        })
        .to_string()
    };
    let (before, after) = (state_of(revoked_at), state_of(revoked_at.or(Some(now))));
    append_audit(&mut tx, &operator.actor(), "api_key.revoke", &id.to_string(), Some(&before), Some(&after))
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
