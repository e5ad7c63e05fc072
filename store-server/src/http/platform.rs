//! Purchases made in a platform's own store, redeemed: the App Store's signed transactions.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse as _, Response};
use store_api::orders::{ApplePurchaseRequest, Order};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::payments::platform::{PlatformPurchase, RedeemJob, apple};
use crate::players::auth::PlayerAuth;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(redeem_apple))
}

/// Redeems a purchase made with StoreKit 2: the server verifies the App Store's signature (the
/// `x5c` chain up to a configured Apple root, valid at the signing date), the bundle id, the
/// environment and the product, then grants the offer sold as that product, once per
/// `transactionId` whoever asks, and books the price Apple charged. `201` with the fulfilled
/// order; `200` with the same order when this player redeems it again. When the game set
/// `appAccountToken` at purchase, it must be the player's id.
#[utoipa::path(
    post, path = "/v1/platform-purchases/apple", tag = "players",
    security(("player" = [])),
    request_body = ApplePurchaseRequest,
    responses(
        (status = 201, body = Order, description = "redeemed: the order, fulfilled, with its receipt"),
        (status = 200, body = Order, description = "redeemed before by this player"),
        (status = 400, body = store_api::ErrorBody, description = "platform_proof_invalid (details.reason: format, chain, signature, bundle_id, environment, type, revoked, price, account), invalid_request"),
        (status = 409, body = store_api::ErrorBody, description = "already_exists: redeemed by another player; offer_not_available: no offer is sold as the product"),
        (status = 503, body = store_api::ErrorBody, description = "provider_unavailable: the App Store is not configured"),
    )
)]
async fn redeem_apple(
    State(state): State<AppState>,
    player: PlayerAuth,
    ApiJson(request): ApiJson<ApplePurchaseRequest>,
) -> ApiResult<Response> {
    let settings = state.settings().apple.as_ref().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            store_api::ErrorCode::ProviderUnavailable,
            "App Store purchases are not configured on this server",
        )
    })?;
    let transaction = apple::verify_transaction(settings, &request.signed_transaction)?;
    let job = RedeemJob {
        payments: state.payments().clone(),
        player_id: player.player_id,
        purchase: PlatformPurchase {
            platform: apple::PLATFORM,
            transaction_id: transaction.transaction_id,
            product_id: transaction.product_id,
            quantity: transaction.quantity,
            price: transaction.price,
            commission_percent: settings.commission_percent,
            bought_for: transaction.app_account_token,
        },
    };
    let done = state.batcher().run(Box::new(job)).await?;
    Ok((done.status, [(header::CONTENT_TYPE, "application/json")], done.body).into_response())
}
