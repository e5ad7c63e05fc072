//! Tabs: the player's running real-money balance and its settlement; operators' view.

use axum::extract::State;
use axum::response::Response;
use store_api::orders::{AdminTabPage, Order, SettleTabRequest, TabList};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::db::now_micros;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, PageQuery};
use crate::ledger::idempotency::{IdempotentJson, run_reserved};
use crate::payments::provider::CheckoutRequest;
use crate::payments::tabs::{SettleTabOp, admin_tabs, describe, player_tabs, tab_to_settle};
use crate::players::auth::scopes::PlayersRead;
use crate::players::auth::{Operator, PlayerAuth};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_tab)).routes(routes!(settle_tab)).routes(routes!(list_tabs))
}

/// The player's open tabs (one per currency): what is owed, the threshold, the credit limit,
/// when settlement is due, and what settling now would charge.
#[utoipa::path(
    get, path = "/v1/tab", tag = "players",
    security(("player" = [])),
    responses((status = 200, body = TabList))
)]
async fn get_tab(State(state): State<AppState>, player: PlayerAuth) -> ApiResult<axum::Json<TabList>> {
    let mut conn = state.db().pool().acquire().await?;
    Ok(axum::Json(TabList { tabs: player_tabs(&mut conn, state.payments(), player.player_id).await? }))
}

/// Settles the tab: one order for what it owes (rounded down to whole minor units; the rest is
/// carried to the next tab), paid through the normal checkout. Needs an `Idempotency-Key`.
#[utoipa::path(
    post, path = "/v1/tab/settle", tag = "players",
    security(("player" = [])),
    params(("Idempotency-Key" = String, Header, description = "1 to 255 printable ASCII characters")),
    request_body(content = SettleTabRequest, description = "Optional; no body settles the only open tab"),
    responses(
        (status = 201, body = Order),
        (status = 409, body = store_api::ErrorBody, description = "nothing_to_settle, amount_below_minimum, order_state_conflict"),
    )
)]
async fn settle_tab(
    State(state): State<AppState>,
    player: PlayerAuth,
    request: IdempotentJson<SettleTabRequest>,
) -> ApiResult<Response> {
    let scope = player.idempotency_scope();
    let player_id = player.player_id;
    run_reserved(state.batcher(), &scope, request.idempotency, |order_id, provider_key| {
        open_settlement(&state, player_id, order_id, provider_key, &request.body)
    })
    .await
}

/// Finds what the tab owes and opens a checkout session for that amount.
async fn open_settlement(
    state: &AppState,
    player_id: Uuid,
    order_id: Uuid,
    provider_key: String,
    request: &SettleTabRequest,
) -> ApiResult<SettleTabOp> {
    let provider = state.default_provider().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            store_api::ErrorCode::ProviderUnavailable,
            "no payment provider is configured",
        )
    })?;
    let (tab, charge) = {
        let mut conn = state.db().pool().acquire().await?;
        crate::payments::orders::check_velocity(&mut conn, state.payments(), player_id).await?;
        tab_to_settle(&mut conn, state.payments(), player_id, request.currency).await?
    };
    let expires_at = now_micros() + super::orders::order_ttl_micros(state);
    let checkout = provider
        .create_checkout(&CheckoutRequest {
            idempotency_key: provider_key,
            merchant: state.settings().merchant_name.clone(),
            reference: order_id.to_string(),
            description: describe(&tab),
            amount: charge,
            expires_at: expires_at / 1_000_000,
            sku: "tab".to_owned(),
            quantity: 1,
            payer: None,
        })
        .await?;
    Ok(SettleTabOp {
        payments: state.payments().clone(),
        order_id,
        player_id,
        tab_id: tab.id,
        charge,
        provider: provider.name(),
        checkout,
        expires_at,
    })
}

/// Every tab, newest first, with its items, age, and the fee saved against charging each item
/// separately.
#[utoipa::path(
    get, path = "/admin/v1/tabs", tag = "operators",
    security(("operator" = ["players:read"])),
    params(PageQuery),
    responses((status = 200, body = AdminTabPage))
)]
async fn list_tabs(
    State(state): State<AppState>,
    _operator: Operator<PlayersRead>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<AdminTabPage>> {
    let page = query.parse()?;
    let mut conn = state.db().pool().acquire().await?;
    let (tabs, next_cursor) = admin_tabs(&mut conn, state.payments(), &page).await?;
    Ok(axum::Json(AdminTabPage { tabs, next_cursor }))
}
