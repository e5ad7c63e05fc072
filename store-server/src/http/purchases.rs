//! `POST /v1/purchases`: buying offers with virtual currency.

use axum::extract::State;
use axum::response::Response;
use store_api::ledger::{PurchaseRequest, PurchaseResult};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::ApiResult;
use crate::ledger::idempotency::{IdempotentJson, run_for_player};
use crate::players::auth::PlayerWrite;
use crate::store::operations::PurchaseOp;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_purchase))
}

/// Buys an offer with virtual currency: one transaction debits the wallet, credits revenue,
/// grants the items and currency, records the entry and signs a receipt. The server prices it;
/// the request names only the offer, the quantity and which price. Needs an `Idempotency-Key`.
#[utoipa::path(
    post, path = "/v1/purchases", tag = "players",
    security(("player" = [])),
    params(("Idempotency-Key" = String, Header, description = "1 to 255 printable ASCII characters")),
    request_body = PurchaseRequest,
    responses(
        (status = 201, body = PurchaseResult),
        (status = 402, body = store_api::ErrorBody, description = "insufficient_funds"),
        (status = 403, body = store_api::ErrorBody, description = "player_blocked"),
        (status = 409, body = store_api::ErrorBody, description = "offer_not_available, price_requires_order, purchase_limit_reached, out_of_stock, balance_max_exceeded, already_owned, idempotency_key_reused"),
    )
)]
async fn create_purchase(
    State(state): State<AppState>,
    player: PlayerWrite,
    request: IdempotentJson<PurchaseRequest>,
) -> ApiResult<Response> {
    let op =
        PurchaseOp { payments: state.payments().clone(), player_id: player.player_id, request: request.body };
    run_for_player(state.batcher(), player, request.idempotency, op).await
}
