//! Purchases made in a platform's own store, redeemed: the App Store's signed transactions and
//! Google Play's purchase tokens.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use store_api::orders::{ApplePurchaseRequest, GooglePlayPurchaseRequest, Order, PlatformProof};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::payments::platform::{RedeemJob, acknowledge_due, apple, google};
use crate::players::auth::PlayerAuth;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(redeem_apple)).routes(routes!(redeem_google))
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
    redeem(&state, &player, apple::PLATFORM, "App Store", PlatformProof::AppStore(request)).await
}

/// Redeems a purchase made with the Play Billing Library: the server asks the Android Publisher
/// API about the token (`purchases.products.get`: purchased, not pending or canceled, this
/// product, this player's when the game set `obfuscatedAccountId`) and the order it names
/// (`orders.get`: what the player paid and what Google keeps), then grants the offer sold as that
/// product, once per Google order id whoever asks, and consumes the purchase (acknowledges it for
/// a durable item), retrying until Google confirms. `201` with the fulfilled order; `200` with the
/// same order when this player redeems it again.
#[utoipa::path(
    post, path = "/v1/platform-purchases/google", tag = "players",
    security(("player" = [])),
    request_body = GooglePlayPurchaseRequest,
    responses(
        (status = 201, body = Order, description = "redeemed: the order, fulfilled, with its receipt"),
        (status = 200, body = Order, description = "redeemed before by this player"),
        (status = 400, body = store_api::ErrorBody, description = "platform_proof_invalid (details.reason: token, product, canceled, revoked, test_purchase, purchase_type, price, account, format), invalid_request"),
        (status = 409, body = store_api::ErrorBody, description = "order_state_conflict (details.status: pending): the purchase is pending, redeem it once Google Play completes it; already_exists: redeemed by another player; offer_not_available: no offer is sold as the product"),
        (status = 502, body = store_api::ErrorBody, description = "provider_unavailable: Google Play could not be reached; send it again"),
        (status = 503, body = store_api::ErrorBody, description = "provider_unavailable: Google Play is not configured"),
    )
)]
async fn redeem_google(
    State(state): State<AppState>,
    player: PlayerAuth,
    ApiJson(request): ApiJson<GooglePlayPurchaseRequest>,
) -> ApiResult<Response> {
    redeem(&state, &player, google::PLATFORM, "Google Play", PlatformProof::GooglePlay(request)).await
}

/// Verifies the proof with its platform, redeems it in the writer's next batch and, for a
/// purchase the platform must be told about, tells it at once (the order workers retry what
/// fails).
async fn redeem(
    state: &AppState,
    player: &PlayerAuth,
    platform: &'static str,
    label: &str,
    proof: PlatformProof,
) -> ApiResult<Response> {
    let provider = state.payments().provider(platform).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            store_api::ErrorCode::ProviderUnavailable,
            format!("{label} purchases are not configured on this server"),
        )
    })?;
    let purchase = provider.verify_purchase(&proof).await?;
    let token = purchase.acknowledgement.as_ref().map(|work| work.purchase_token.clone());
    let job = RedeemJob { payments: state.payments().clone(), player_id: player.player_id, purchase };
    let done = state.batcher().run(Box::new(job)).await?;
    if let Some(token) = token
        && let Err(error) = acknowledge_due(state.payments(), Some(&token)).await
    {
        tracing::warn!(%error, "could not acknowledge a redeemed purchase; the workers retry");
    }
    Ok((done.status, [(header::CONTENT_TYPE, "application/json")], done.body).into_response())
}
