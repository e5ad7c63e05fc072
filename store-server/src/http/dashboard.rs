//! The operators' web dashboard: one self-contained page (HTML, CSS and script embedded in the
//! binary) that talks to the admin API with the operator's key. It loads nothing from anywhere
//! else, and its Content-Security-Policy says so.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;

/// The page, compiled in.
const DASHBOARD_HTML: &str = include_str!("../../dashboard/index.html");

/// Scripts and styles are inline; requests go only to this server.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
     connect-src 'self'; img-src 'self' data: blob:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(dashboard))
}

/// The operators' dashboard: log in with an operator key; analytics with charts and CSV
/// downloads.
#[utoipa::path(
    get, path = "/dashboard", tag = "operators",
    responses((status = 200, content_type = "text/html", description = "The dashboard page", body = String))
)]
async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        DASHBOARD_HTML,
    )
        .into_response()
}
