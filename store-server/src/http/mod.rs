//! The HTTP surface: one module per resource, each owning its routes, plus the OpenAPI
//! document generated from those routes. Handlers only: each parses the request, asks a domain
//! module ([`crate::store`], [`crate::payments`], [`crate::players`], [`crate::analytics`]) or
//! the ledger, and answers; the rules live there.

pub mod admin_players;
pub mod analytics;
pub mod api_keys;
pub mod auth;
pub mod catalog;
pub mod checkout;
pub mod creators;
pub mod currencies;
pub mod dashboard;
pub mod events;
pub mod ops;
pub mod orders;
pub mod platform;
pub mod players;
pub mod purchases;
pub mod rewards;
pub mod tabs;
pub mod wallet;
pub mod webhooks;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

/// The parts of the OpenAPI document not tied to one route.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Coinslot store API",
        description = "Virtual currency and item stores for games: catalog, wallets, purchases and real-money orders.",
        license(name = "MIT OR Apache-2.0")
    ),
    modifiers(&SecuritySchemes),
    components(schemas(store_api::ErrorBody, store_api::ErrorCode))
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(description)).build(),
            )
        };
        components.add_security_scheme(
            "player",
            bearer("A player session token (`cst_…`) from POST /v1/auth/device."),
        );
        components.add_security_scheme(
            "operator",
            bearer("An operator API key (`csk_…`) with the scopes the route names."),
        );
    }
}

/// Every route, with its OpenAPI description.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(ops::routes())
        .merge(players::routes())
        .merge(api_keys::routes())
        .merge(currencies::routes())
        .merge(catalog::routes())
        .merge(wallet::routes())
        .merge(purchases::routes())
        .merge(rewards::routes())
        .merge(orders::routes())
        .merge(platform::routes())
        .merge(webhooks::routes())
        .merge(checkout::routes())
        .merge(events::routes())
        .merge(tabs::routes())
        .merge(creators::routes())
        .merge(analytics::routes())
        .merge(admin_players::routes())
        .merge(dashboard::routes())
}

/// A JSON response carrying an `ETag`.
pub fn with_etag(status: StatusCode, etag: &str, body: impl IntoResponse) -> Response {
    let mut response = (status, body).into_response();
    if let Ok(value) = HeaderValue::from_str(etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}
