//! Operations routes anyone may call: health, readiness, metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use store_api::ErrorCode;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
}

/// Health of a check.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
    /// `/readyz` only: `test` when the sandbox payment provider is mounted (its test cards pay
    /// for orders), `live` when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    /// `/readyz` in test mode: `TEST MODE: …`, for people reading it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<&'static str>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok", mode: None, notice: None })
}

/// The database is reachable, every migration is applied and (with group commit on) the writer
/// runs. The body says whether the server is in test mode (the sandbox mounted).
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = store_api::ErrorBody))
)]
async fn readyz(State(state): State<AppState>) -> ApiResult<axum::Json<Health>> {
    let unavailable =
        |message: &str| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, message);
    if state.settings().group_commit && !state.batcher().running() {
        return Err(unavailable("the group-commit writer is not running"));
    }
    match state.db().migrations_applied().await {
        Ok(true) => Ok(axum::Json(if state.settings().in_test_mode() {
            Health { status: "ok", mode: Some("test"), notice: Some(crate::settings::TEST_MODE_NOTICE) }
        } else {
            Health { status: "ok", mode: Some("live"), notice: None }
        })),
        Ok(false) => Err(unavailable("migrations are pending")),
        Err(error) => {
            tracing::warn!(%error, "readiness check could not reach the database");
            Err(unavailable("the database is not reachable"))
        }
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String))
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let pool = state.db().pool();
    metrics::gauge!("coinslot_db_pool_connections").set(f64::from(pool.size()));
    metrics::gauge!("coinslot_db_pool_idle_connections")
        .set(f64::from(u32::try_from(pool.num_idle()).unwrap_or(u32::MAX)));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics().render())
}

/// This document: OpenAPI 3.1, generated from the routes.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    responses((status = 200, content_type = "application/json", body = Object))
)]
async fn openapi_json(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], state.openapi_json())
}
