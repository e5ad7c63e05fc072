//! Operators' view of creators: balances, sales, and batched payouts.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use store_api::catalog::CreatorId;
use store_api::orders::{Creator, CreatorList, PayoutList};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::ledger::idempotency::{IdempotentJson, MoneyOp, run_once};
use crate::payments::revenue_share::{list_creators, list_payouts, pay_out};
use crate::players::auth::Operator;
use crate::players::auth::scopes::{PlayersRead, PlayersWrite};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_creators))
        .routes(routes!(get_creator))
        .routes(routes!(list_creator_payouts, create_payouts))
}

fn creator_id(id: &str) -> ApiResult<CreatorId> {
    CreatorId::parse(id).map_err(|_| ApiError::not_found("creator", id))
}

/// Every creator with a sale: what the store owes them, what they earned, how many sales.
#[utoipa::path(
    get, path = "/admin/v1/creators", tag = "operators",
    security(("operator" = ["players:read"])),
    responses((status = 200, body = CreatorList))
)]
async fn get_creators(
    State(state): State<AppState>,
    _operator: Operator<PlayersRead>,
) -> ApiResult<axum::Json<CreatorList>> {
    let mut conn = state.db().pool().acquire().await?;
    Ok(axum::Json(CreatorList { creators: list_creators(&mut conn, None).await? }))
}

/// One creator.
#[utoipa::path(
    get, path = "/admin/v1/creators/{id}", tag = "operators",
    security(("operator" = ["players:read"])),
    params(("id" = String, Path, description = "Creator id")),
    responses((status = 200, body = Creator), (status = 404, body = store_api::ErrorBody))
)]
async fn get_creator(
    State(state): State<AppState>,
    _operator: Operator<PlayersRead>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Creator>> {
    let id = creator_id(&id)?;
    let mut conn = state.db().pool().acquire().await?;
    let creator = list_creators(&mut conn, Some(id.as_str()))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("creator", id.as_str()))?;
    Ok(axum::Json(creator))
}

/// A creator's payouts, newest first.
#[utoipa::path(
    get, path = "/admin/v1/creators/{id}/payouts", tag = "operators",
    security(("operator" = ["players:read"])),
    params(("id" = String, Path, description = "Creator id")),
    responses((status = 200, body = PayoutList))
)]
async fn list_creator_payouts(
    State(state): State<AppState>,
    _operator: Operator<PlayersRead>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<PayoutList>> {
    let id = creator_id(&id)?;
    let mut conn = state.db().pool().acquire().await?;
    Ok(axum::Json(PayoutList { payouts: list_payouts(&mut conn, id.as_str()).await? }))
}

/// Pays out each of the creator's balances that reached the payout threshold (20 × the
/// currency's minimum card charge): one ledger entry and one record per currency. Needs an
/// `Idempotency-Key`.
#[utoipa::path(
    post, path = "/admin/v1/creators/{id}/payouts", tag = "operators",
    security(("operator" = ["players:write"])),
    params(("id" = String, Path, description = "Creator id"), ("Idempotency-Key" = String, Header, description = "1 to 255 printable ASCII characters")),
    responses((status = 201, body = PayoutList), (status = 404, body = store_api::ErrorBody), (status = 409, body = store_api::ErrorBody, description = "below_payout_threshold"))
)]
async fn create_payouts(
    State(state): State<AppState>,
    operator: Operator<PlayersWrite>,
    Path(id): Path<String>,
    request: IdempotentJson<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<Response> {
    let creator = creator_id(&id)?;
    run_once(
        state.batcher(),
        &operator.actor(),
        request.idempotency,
        PayoutOp {
            creator,
            actor: operator.actor(),
            payout_multiple: state.settings().creator_payout_multiple,
        },
    )
    .await
}

#[derive(Debug, Clone)]
struct PayoutOp {
    creator: CreatorId,
    actor: String,
    /// Payouts are whole multiples of this (`creator_payout_multiple`).
    payout_multiple: u32,
}

impl MoneyOp for PayoutOp {
    type Output = PayoutList;
    const SUCCESS: StatusCode = StatusCode::CREATED;

    async fn apply(self, conn: &mut sqlx::AnyConnection) -> ApiResult<PayoutList> {
        let payouts = pay_out(conn, self.creator.as_str(), self.payout_multiple, &self.actor).await?;
        let record = serde_json::to_string(&payouts).map_err(anyhow::Error::from)?;
        crate::store::catalog::append_audit(
            conn,
            &self.actor,
            "creator.payout",
            self.creator.as_str(),
            None,
            Some(&record),
        )
        .await?;
        Ok(PayoutList { payouts })
    }
}
