//! Player routes for what the player holds: wallet, history, inventory, consumption, receipts,
//! and the public receipt keys.

use axum::extract::{Path, State};
use axum::response::Response;
use store_api::catalog::Sku;
use store_api::ledger::{ConsumeRequest, ConsumeResult, HistoryPage, Inventory, Wallet};
use store_api::receipt::{ReceiptKeys, SignedReceipt};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, PageQuery};
use crate::ledger::idempotency::{IdempotentJson, run_for_player};
use crate::ledger::receipts::{find_receipt, list_receipt_keys};
use crate::ledger::{read_history, read_inventory, read_wallet};
use crate::players::auth::{PlayerAuth, PlayerWrite};
use crate::store::operations::ConsumeOp;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_wallet))
        .routes(routes!(get_wallet_history))
        .routes(routes!(get_inventory))
        .routes(routes!(consume_item))
        .routes(routes!(get_receipt))
        .routes(routes!(get_receipt_keys))
        .routes(routes!(get_jwks))
}

/// The player's balance in every currency.
#[utoipa::path(
    get, path = "/v1/wallet", tag = "players",
    security(("player" = [])),
    responses((status = 200, body = Wallet), (status = 401, body = store_api::ErrorBody))
)]
async fn get_wallet(State(state): State<AppState>, player: PlayerAuth) -> ApiResult<axum::Json<Wallet>> {
    let mut conn = state.db().pool().acquire().await?;
    Ok(axum::Json(read_wallet(&mut conn, player.player_id).await?))
}

/// The player's ledger entries, newest first: kind, reason, time, and each change to the
/// player's balances (with the balance after) and items.
#[utoipa::path(
    get, path = "/v1/wallet/history", tag = "players",
    security(("player" = [])),
    params(PageQuery),
    responses((status = 200, body = HistoryPage), (status = 400, body = store_api::ErrorBody))
)]
async fn get_wallet_history(
    State(state): State<AppState>,
    player: PlayerAuth,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<HistoryPage>> {
    let page = query.parse()?;
    let mut conn = state.db().pool().acquire().await?;
    let (entries, next_cursor) = read_history(&mut conn, player.player_id, &page).await?;
    Ok(axum::Json(HistoryPage { entries, next_cursor }))
}

/// The player's items.
#[utoipa::path(
    get, path = "/v1/inventory", tag = "players",
    security(("player" = [])),
    responses((status = 200, body = Inventory), (status = 401, body = store_api::ErrorBody))
)]
async fn get_inventory(
    State(state): State<AppState>,
    player: PlayerAuth,
) -> ApiResult<axum::Json<Inventory>> {
    let mut conn = state.db().pool().acquire().await?;
    Ok(axum::Json(Inventory { items: read_inventory(&mut conn, player.player_id).await? }))
}

/// Uses up consumables. Needs an `Idempotency-Key`.
#[utoipa::path(
    post, path = "/v1/inventory/{sku}/consume", tag = "players",
    security(("player" = [])),
    params(("sku" = String, Path, description = "The item"), ("Idempotency-Key" = String, Header, description = "1 to 255 printable ASCII characters")),
    request_body = ConsumeRequest,
    responses(
        (status = 200, body = ConsumeResult),
        (status = 404, body = store_api::ErrorBody),
        (status = 409, body = store_api::ErrorBody, description = "insufficient_quantity, not_consumable, idempotency_key_reused"),
    )
)]
async fn consume_item(
    State(state): State<AppState>,
    player: PlayerWrite,
    Path(sku): Path<String>,
    request: IdempotentJson<ConsumeRequest>,
) -> ApiResult<Response> {
    let sku = Sku::parse(&sku).map_err(|_| ApiError::not_found("sku", &sku))?;
    let op = ConsumeOp {
        catalog: state.catalog_cache().clone(),
        player_id: player.player_id,
        sku,
        request: request.body,
    };
    run_for_player(state.batcher(), player, request.idempotency, op).await
}

/// One of the player's receipts.
#[utoipa::path(
    get, path = "/v1/receipts/{id}", tag = "players",
    security(("player" = [])),
    params(("id" = String, Path, description = "Receipt id")),
    responses((status = 200, body = SignedReceipt), (status = 404, body = store_api::ErrorBody))
)]
async fn get_receipt(
    State(state): State<AppState>,
    player: PlayerAuth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<SignedReceipt>> {
    let not_found = || ApiError::not_found("receipt", &id);
    let receipt_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let mut conn = state.db().pool().acquire().await?;
    let receipt = find_receipt(&mut conn, player.player_id, receipt_id).await?.ok_or_else(not_found)?;
    Ok(axum::Json(receipt))
}

/// The public keys receipts are verified with, including retired ones: a JWK Set (RFC 7517;
/// `OKP`/`Ed25519` keys per RFC 8037, `kid`, `use: sig`, `alg: EdDSA`), each key also under its
/// original fields (`id`, `public_key` in standard base64, `created_at`, `retired_at`).
#[utoipa::path(get, path = "/v1/receipt-keys", tag = "players", responses((status = 200, body = ReceiptKeys)))]
async fn get_receipt_keys(State(state): State<AppState>) -> ApiResult<axum::Json<ReceiptKeys>> {
    let mut conn = state.db().pool().acquire().await?;
    Ok(axum::Json(ReceiptKeys { keys: list_receipt_keys(&mut conn).await? }))
}

/// The receipt keys at the JWK Set's well-known place, for JOSE libraries that look there: the
/// same set as `/v1/receipt-keys`.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "players", responses((status = 200, body = ReceiptKeys)))]
async fn get_jwks(state: State<AppState>) -> ApiResult<axum::Json<ReceiptKeys>> {
    get_receipt_keys(state).await
}
