//! `POST /v1/webhooks/{provider}`: the payment providers' signed events, verified by the
//! provider's adapter and applied once by [`crate::payments::reconcile::apply_event`] (which
//! reconciliation shares, for the events a webhook never brought).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::db::now_micros;
use crate::error::{ApiError, ApiResult};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(receive_webhook))
}

/// The answer to a webhook.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookAck {
    /// `processed`, `duplicate` or `ignored`.
    pub status: String,
}

/// Receives a payment provider's signed event. Forged, stale and malformed events are refused
/// (`400`) and change nothing; a duplicate is acknowledged and ignored; an event that arrives
/// before what it depends on is refused with `409` so the provider retries it later.
#[utoipa::path(
    post, path = "/v1/webhooks/{provider}", tag = "providers",
    params(("provider" = String, Path, description = "Provider name: sandbox, stripe, apple (App Store Server Notifications V2, a signedPayload verified like a transaction), google (Real-time developer notifications, a Pub/Sub push whose OIDC bearer token is verified)"), ("Coinslot-Signature" = String, Header, description = "The sandbox's signature: t=<unix>,v1=<hex HMAC-SHA256 of t.body>; Stripe sends Stripe-Signature in the same form")),
    request_body = Object,
    responses(
        (status = 200, body = WebhookAck),
        (status = 400, body = store_api::ErrorBody, description = "webhook_signature_invalid, webhook_timestamp_out_of_tolerance"),
        (status = 404, body = store_api::ErrorBody),
        (status = 409, body = store_api::ErrorBody, description = "order_state_conflict: retry later"),
    )
)]
async fn receive_webhook(
    State(state): State<AppState>,
    Path(provider_name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<axum::Json<WebhookAck>> {
    let outcome = process_webhook(&state, &provider_name, &headers, &body).await;
    let label = match &outcome {
        Ok(ack) => ack.status.clone(),
        Err(error) => error.code().to_string(),
    };
    metrics::counter!("coinslot_webhooks_total", "provider" => provider_name, "outcome" => label)
        .increment(1);
    outcome.map(axum::Json)
}

async fn process_webhook(
    state: &AppState,
    provider_name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<WebhookAck> {
    let provider = state
        .providers()
        .find(|provider| provider.webhook_name() == provider_name)
        .ok_or_else(|| ApiError::not_found("provider", provider_name))?;
    provider.prepare_webhook(headers).await?;
    let verified = provider.verify_webhook(headers, body, now_micros() / 1_000_000)?;
    // A platform asking how much of a purchase was consumed is answered first: if the answer
    // fails, nothing is recorded and the platform asks again.
    if let crate::payments::provider::ProviderEvent::ConsumptionRequested { payment_id } = &verified.event {
        let status: Option<String> = sqlx::query_scalar(
            "select status from payment_order where provider = $1 and provider_payment = $2",
        )
        .bind(provider.name())
        .bind(payment_id)
        .fetch_optional(state.db().pool())
        .await?;
        let status = status.ok_or_else(|| ApiError::not_found("payment", payment_id))?;
        let delivered = matches!(
            status.as_str(),
            "fulfilled" | "partially_refunded" | "refunded" | "disputed" | "charged_back"
        );
        provider.answer_consumption(payment_id, delivered).await?;
    }
    let status = crate::payments::reconcile::apply_event(state.payments(), provider.name(), verified).await?;
    Ok(WebhookAck { status: status.to_owned() })
}
