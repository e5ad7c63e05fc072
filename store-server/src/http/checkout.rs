//! The pages a hosted checkout (Stripe Checkout) sends the player back to. They say what to do
//! next and nothing else: the order itself changes only when the provider's webhook (or
//! reconciliation) confirms the payment, and the game learns it from its order's events.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(checkout_complete)).routes(routes!(checkout_canceled))
}

fn page(title: &str, message: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"></head><body style=\"font-family:sans-serif;\
         max-width:32em;margin:4em auto\"><h1>{title}</h1><p>{message}</p></body></html>"
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'; style-src 'unsafe-inline'"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        html,
    )
        .into_response()
}

/// Where a hosted checkout sends the player after paying.
#[utoipa::path(
    get, path = "/checkout/complete", tag = "players",
    responses((status = 200, content_type = "text/html", description = "Return to the game", body = String))
)]
async fn checkout_complete() -> Response {
    page(
        "Thank you",
        "Your payment is being confirmed. Return to the game: your purchase arrives there as soon as \
         the payment provider confirms it.",
    )
}

/// Where a hosted checkout sends a player who went back without paying.
#[utoipa::path(
    get, path = "/checkout/canceled", tag = "players",
    responses((status = 200, content_type = "text/html", description = "Return to the game", body = String))
)]
async fn checkout_canceled() -> Response {
    page("Payment canceled", "Nothing was charged. Return to the game to try again or choose something else.")
}
