//! Earning: players claim rewards; operators manage the rules.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use store_api::ledger::{RewardClaimRequest, RewardClaimResult, RewardRule, RewardRuleList, RuleCode};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, IfMatch};
use crate::http::with_etag;
use crate::ledger::idempotency::{IdempotentJson, run_for_player};
use crate::players::auth::scopes::{CatalogRead, CatalogWrite};
use crate::players::auth::{Operator, PlayerWrite};
use crate::store::catalog::append_audit;
use crate::store::operations::RewardOp;
use crate::store::rewards::{create_rule, find_rule, list_rules, rule_etag, update_rule};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(claim_reward))
        .routes(routes!(list_reward_rules, create_reward_rule))
        .routes(routes!(get_reward_rule, replace_reward_rule))
}

fn path_rule(code: &str) -> ApiResult<RuleCode> {
    RuleCode::parse(code).map_err(|_| ApiError::not_found("reward_rule", code))
}

/// Claims a reward: earns the rule's amount (or less, if asked) unless a cap is reached.
/// Needs an `Idempotency-Key`.
#[utoipa::path(
    post, path = "/v1/rewards/{rule}", tag = "players",
    security(("player" = [])),
    params(("rule" = String, Path, description = "Reward rule code"), ("Idempotency-Key" = String, Header, description = "1 to 255 printable ASCII characters")),
    request_body(content = RewardClaimRequest, description = "Optional; no body claims the rule's amount"),
    responses(
        (status = 201, body = RewardClaimResult),
        (status = 404, body = store_api::ErrorBody),
        (status = 409, body = store_api::ErrorBody, description = "balance_max_exceeded, idempotency_key_reused"),
        (status = 429, body = store_api::ErrorBody, description = "reward_cap_reached, with details.resets_at"),
    )
)]
async fn claim_reward(
    State(state): State<AppState>,
    player: PlayerWrite,
    Path(rule): Path<String>,
    request: IdempotentJson<RewardClaimRequest>,
) -> ApiResult<Response> {
    let rule = path_rule(&rule)?;
    let op = RewardOp {
        catalog: state.catalog_cache().clone(),
        player_id: player.player_id,
        rule,
        request: request.body,
    };
    run_for_player(state.batcher(), player, request.idempotency, op).await
}

/// Every reward rule.
#[utoipa::path(
    get, path = "/admin/v1/reward-rules", tag = "operators",
    security(("operator" = ["catalog:read"])),
    responses((status = 200, body = RewardRuleList), (status = 401, body = store_api::ErrorBody))
)]
async fn list_reward_rules(
    State(state): State<AppState>,
    _operator: Operator<CatalogRead>,
) -> ApiResult<axum::Json<RewardRuleList>> {
    let mut conn = state.db().pool().acquire().await?;
    Ok(axum::Json(RewardRuleList { reward_rules: list_rules(&mut conn).await? }))
}

/// Creates a reward rule.
#[utoipa::path(
    post, path = "/admin/v1/reward-rules", tag = "operators",
    security(("operator" = ["catalog:write"])),
    request_body = RewardRule,
    responses(
        (status = 201, body = RewardRule, headers(("ETag" = String))),
        (status = 409, body = store_api::ErrorBody, description = "already_exists"),
        (status = 422, body = store_api::ErrorBody, description = "validation_failed"),
    )
)]
async fn create_reward_rule(
    State(state): State<AppState>,
    operator: Operator<CatalogWrite>,
    ApiJson(rule): ApiJson<RewardRule>,
) -> ApiResult<Response> {
    let mut tx = state.db().begin_write().await?;
    create_rule(&mut tx, &rule).await?;
    let after = serde_json::to_string(&rule).map_err(anyhow::Error::from)?;
    append_audit(&mut tx, &operator.actor(), "reward_rule.create", rule.code.as_str(), None, Some(&after))
        .await?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::CREATED, &rule_etag(&rule)?, axum::Json(rule)))
}

/// One reward rule, with its `ETag`.
#[utoipa::path(
    get, path = "/admin/v1/reward-rules/{rule}", tag = "operators",
    security(("operator" = ["catalog:read"])),
    params(("rule" = String, Path, description = "Reward rule code")),
    responses((status = 200, body = RewardRule, headers(("ETag" = String))), (status = 404, body = store_api::ErrorBody))
)]
async fn get_reward_rule(
    State(state): State<AppState>,
    _operator: Operator<CatalogRead>,
    Path(code): Path<String>,
) -> ApiResult<Response> {
    let code = path_rule(&code)?;
    let mut conn = state.db().pool().acquire().await?;
    let rule = find_rule(&mut conn, &code)
        .await?
        .ok_or_else(|| ApiError::not_found("reward_rule", code.as_str()))?;
    Ok(with_etag(StatusCode::OK, &rule_etag(&rule)?, axum::Json(rule)))
}

/// Replaces a reward rule. The body's `code` must be the path's; `If-Match` refuses a stale write.
#[utoipa::path(
    put, path = "/admin/v1/reward-rules/{rule}", tag = "operators",
    security(("operator" = ["catalog:write"])),
    params(("rule" = String, Path, description = "Reward rule code"), ("If-Match" = Option<String>, Header, description = "ETag last read")),
    request_body = RewardRule,
    responses(
        (status = 200, body = RewardRule, headers(("ETag" = String))),
        (status = 404, body = store_api::ErrorBody),
        (status = 412, body = store_api::ErrorBody),
    )
)]
async fn replace_reward_rule(
    State(state): State<AppState>,
    operator: Operator<CatalogWrite>,
    Path(code): Path<String>,
    if_match: IfMatch,
    ApiJson(rule): ApiJson<RewardRule>,
) -> ApiResult<Response> {
    let code = path_rule(&code)?;
    if rule.code != code {
        return Err(ApiError::invalid("code", format!("the body's code must be `{code}`, as in the path")));
    }
    let mut tx = state.db().begin_write().await?;
    let before =
        find_rule(&mut tx, &code).await?.ok_or_else(|| ApiError::not_found("reward_rule", code.as_str()))?;
    if_match.check(Some(&rule_etag(&before)?))?;
    update_rule(&mut tx, &rule).await?;
    let before_json = serde_json::to_string(&before).map_err(anyhow::Error::from)?;
    let after_json = serde_json::to_string(&rule).map_err(anyhow::Error::from)?;
    append_audit(
        &mut tx,
        &operator.actor(),
        "reward_rule.update",
        code.as_str(),
        Some(&before_json),
        Some(&after_json),
    )
    .await?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::OK, &rule_etag(&rule)?, axum::Json(rule)))
}
