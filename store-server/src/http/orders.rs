//! Real-money orders for players, and orders and refunds for operators.

use axum::extract::{Path, State};
use axum::response::Response;
use store_api::orders::{CreateOrderRequest, Order, OrderPage, Refund, RefundRequest, SteamAuthorization};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::db::now_micros;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, PageQuery};
use crate::ledger::idempotency::{IdempotentJson, run_once, run_reserved};
use crate::payments::orders::{
    CreateOrderOp, RefundOp, find_order, list_orders, order_detail, precheck_order,
};
use crate::payments::provider::{CheckoutRequest, Refunds};
use crate::players::auth::scopes::{PlayersRead, RefundsWrite};
use crate::players::auth::{Operator, PlayerAuth};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_order, list_my_orders))
        .routes(routes!(get_my_order))
        .routes(routes!(report_steam_authorization))
        .routes(routes!(list_all_orders))
        .routes(routes!(get_any_order))
        .routes(routes!(refund_order))
}

fn provider_unavailable() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        store_api::ErrorCode::ProviderUnavailable,
        "no payment provider is configured",
    )
}

/// Starts a real-money purchase: the server prices the offer, checks the minimum charge, the
/// order limit and the player's spending limits, opens a checkout session with the payment
/// provider and returns the order with its `checkout_url`. Needs an `Idempotency-Key`.
#[utoipa::path(
    post, path = "/v1/orders", tag = "players",
    security(("player" = [])),
    params(("Idempotency-Key" = String, Header, description = "1 to 255 printable ASCII characters")),
    request_body = CreateOrderRequest,
    responses(
        (status = 201, body = Order),
        (status = 409, body = store_api::ErrorBody, description = "offer_not_available, price_requires_purchase, amount_below_minimum, amount_above_maximum, spending_limit_exceeded"),
        (status = 502, body = store_api::ErrorBody, description = "provider_unavailable"),
    )
)]
async fn create_order(
    State(state): State<AppState>,
    player: PlayerAuth,
    request: IdempotentJson<CreateOrderRequest>,
) -> ApiResult<Response> {
    let scope = player.idempotency_scope();
    let player_id = player.player_id;
    run_reserved(state.batcher(), &scope, request.idempotency, |order_id, provider_key| {
        open_order(&state, player_id, order_id, provider_key, &request.body)
    })
    .await
}

/// Prices the order once and opens its checkout session at that price.
async fn open_order(
    state: &AppState,
    player_id: Uuid,
    order_id: Uuid,
    provider_key: String,
    request: &CreateOrderRequest,
) -> ApiResult<CreateOrderOp> {
    let provider = match request.provider.as_deref() {
        None => state.default_provider().ok_or_else(provider_unavailable)?,
        Some(name) => state.provider(name).ok_or_else(|| {
            ApiError::invalid("provider", format!("`{name}` is not a payment provider of this store"))
        })?,
    };
    // A provider that charges a platform account (Steam) charges the player's account there,
    // in that account's currency.
    let (payer, currency) = if provider.needs_platform_login() {
        let mut conn = state.db().pool().acquire().await?;
        let key: Option<String> = sqlx::query_scalar("select device_id from player where id = $1")
            .bind(player_id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
        drop(conn);
        let key = key.unwrap_or_default();
        let currency = provider.payer_currency(&key).await?;
        (Some(key), currency)
    } else {
        (None, None)
    };
    // Price first, so a request the store would refuse never opens a checkout session.
    let quote = {
        let mut conn = state.db().pool().acquire().await?;
        precheck_order(&mut conn, state.payments(), player_id, request, currency).await?
    };
    let expires_at = now_micros() + order_ttl_micros(state);
    let checkout = provider
        .create_checkout(&CheckoutRequest {
            idempotency_key: provider_key,
            merchant: state.settings().merchant_name.clone(),
            reference: order_id.to_string(),
            description: quote.description.clone(),
            amount: quote.total,
            expires_at: expires_at / 1_000_000,
            sku: quote.sku().to_owned(),
            quantity: u32::try_from(quote.quantity()).unwrap_or(u32::MAX),
            payer,
        })
        .await?;
    Ok(CreateOrderOp {
        payments: state.payments().clone(),
        order_id,
        player_id,
        quote,
        provider: provider.name(),
        checkout,
        expires_at,
    })
}

/// How long an order waits for its payment, in microseconds.
pub(super) fn order_ttl_micros(state: &AppState) -> i64 {
    i64::try_from(state.settings().order_ttl.as_micros()).unwrap_or(i64::MAX / 2)
}

/// The player's orders, newest first.
#[utoipa::path(
    get, path = "/v1/orders", tag = "players",
    security(("player" = [])),
    params(PageQuery),
    responses((status = 200, body = OrderPage))
)]
async fn list_my_orders(
    State(state): State<AppState>,
    player: PlayerAuth,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<OrderPage>> {
    let page = query.parse()?;
    let mut conn = state.db().pool().acquire().await?;
    let (orders, next_cursor) = list_orders(&mut conn, Some(player.player_id), &page).await?;
    Ok(axum::Json(OrderPage { orders, next_cursor }))
}

async fn load_order(state: &AppState, id: &str, player: Option<Uuid>) -> ApiResult<Order> {
    let not_found = || ApiError::not_found("order", id);
    let order_id = Uuid::parse_str(id).map_err(|_| not_found())?;
    let mut conn = state.db().pool().acquire().await?;
    let record = find_order(&mut conn, order_id)
        .await?
        .filter(|record| player.is_none_or(|player| record.player_id == player))
        .ok_or_else(not_found)?;
    order_detail(&mut conn, &record).await
}

/// One of the player's orders, with its transitions and, once fulfilled, its receipt.
#[utoipa::path(
    get, path = "/v1/orders/{id}", tag = "players",
    security(("player" = [])),
    params(("id" = String, Path, description = "Order id")),
    responses((status = 200, body = Order), (status = 404, body = store_api::ErrorBody))
)]
async fn get_my_order(
    State(state): State<AppState>,
    player: PlayerAuth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Order>> {
    Ok(axum::Json(load_order(&state, &id, Some(player.player_id)).await?))
}

/// Reports how the Steam overlay's purchase dialog ended for one of the player's Steam orders
/// (the game's `MicroTxnAuthorizationResponse_t`). The server asks Steam: an authorized
/// transaction is finalized and the order fulfilled with what Steam says was paid; a denial
/// Steam confirms (or has not recorded) fails the order. Safe to repeat; an order already past
/// payment is returned as it is.
#[utoipa::path(
    post, path = "/v1/orders/{id}/steam-authorization", tag = "players",
    security(("player" = [])),
    params(("id" = String, Path, description = "Order id")),
    request_body = SteamAuthorization,
    responses(
        (status = 200, body = Order),
        (status = 400, body = store_api::ErrorBody, description = "invalid_request: not a Steam order"),
        (status = 404, body = store_api::ErrorBody),
        (status = 409, body = store_api::ErrorBody, description = "order_state_conflict: Steam has not recorded the authorization yet; report again"),
        (status = 502, body = store_api::ErrorBody, description = "provider_unavailable: Steam could not be reached or could not finalize; report again"),
    )
)]
async fn report_steam_authorization(
    State(state): State<AppState>,
    player: PlayerAuth,
    Path(id): Path<String>,
    crate::extract::ApiJson(report): crate::extract::ApiJson<SteamAuthorization>,
) -> ApiResult<axum::Json<Order>> {
    let not_found = || ApiError::not_found("order", &id);
    let order_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let record = {
        let mut conn = state.db().pool().acquire().await?;
        find_order(&mut conn, order_id).await?.filter(|record| record.player_id == player.player_id)
    }
    .ok_or_else(not_found)?;
    if record.provider != crate::payments::steam::PROVIDER {
        return Err(ApiError::invalid("id", "this order is not paid with Steam"));
    }
    if record.status == store_api::orders::OrderStatus::RequiresPayment {
        let session_id = state
            .provider(crate::payments::steam::PROVIDER)
            .map(|steam| steam.reference_for(order_id))
            .ok_or_else(provider_unavailable)?;
        crate::payments::reconcile::apply_client_authorization(
            state.payments(),
            crate::payments::steam::PROVIDER,
            &session_id,
            report.authorized,
        )
        .await?;
    }
    Ok(axum::Json(load_order(&state, &id, Some(player.player_id)).await?))
}

/// Every order, newest first.
#[utoipa::path(
    get, path = "/admin/v1/orders", tag = "operators",
    security(("operator" = ["players:read"])),
    params(PageQuery),
    responses((status = 200, body = OrderPage))
)]
async fn list_all_orders(
    State(state): State<AppState>,
    _operator: Operator<PlayersRead>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<OrderPage>> {
    let page = query.parse()?;
    let mut conn = state.db().pool().acquire().await?;
    let (orders, next_cursor) = list_orders(&mut conn, None, &page).await?;
    Ok(axum::Json(OrderPage { orders, next_cursor }))
}

/// Any order, with its transitions and receipt.
#[utoipa::path(
    get, path = "/admin/v1/orders/{id}", tag = "operators",
    security(("operator" = ["players:read"])),
    params(("id" = String, Path, description = "Order id")),
    responses((status = 200, body = Order), (status = 404, body = store_api::ErrorBody))
)]
async fn get_any_order(
    State(state): State<AppState>,
    _operator: Operator<PlayersRead>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Order>> {
    Ok(axum::Json(load_order(&state, &id, None).await?))
}

/// Refunds all (no `amount`) or part of a fulfilled order. The refund goes to the provider;
/// when it confirms, the money entries are reversed and the grant is clawed back (what was spent
/// becomes a debt). Answers `202` with the pending refund. Needs an `Idempotency-Key`.
#[utoipa::path(
    post, path = "/admin/v1/orders/{id}/refunds", tag = "operators",
    security(("operator" = ["refunds:write"])),
    params(("id" = String, Path, description = "Order id"), ("Idempotency-Key" = String, Header, description = "1 to 255 printable ASCII characters")),
    request_body = RefundRequest,
    responses(
        (status = 202, body = Refund),
        (status = 404, body = store_api::ErrorBody),
        (status = 409, body = store_api::ErrorBody, description = "order_state_conflict, refund_exceeds_paid"),
    )
)]
async fn refund_order(
    State(state): State<AppState>,
    operator: Operator<RefundsWrite>,
    Path(id): Path<String>,
    request: IdempotentJson<RefundRequest>,
) -> ApiResult<Response> {
    let order_id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found("order", &id))?;
    let provider = {
        let mut conn = state.db().pool().acquire().await?;
        find_order(&mut conn, order_id).await?.map(|record| record.provider)
    };
    match provider.and_then(|name| state.provider(&name)).map(|provider| provider.refunds()) {
        Some(Refunds::WholePayments) if request.body.amount.is_some() => {
            return Err(ApiError::invalid(
                "amount",
                "this order's provider refunds whole payments only; leave `amount` out to refund all of it",
            ));
        }
        Some(Refunds::AtThePlayersRequest) => {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                store_api::ErrorCode::OrderStateConflict,
                "this platform refunds only at the player's request (for the App Store: reportaproblem.apple.com); \
                 its refund is booked when the platform reports it",
            ));
        }
        _ => {}
    }
    let op = RefundOp {
        order_id,
        amount: request.body.amount,
        reason: request.body.reason.as_str().to_owned(),
        actor: operator.actor(),
    };
    run_once(state.batcher(), &operator.actor(), request.idempotency, op).await
}
