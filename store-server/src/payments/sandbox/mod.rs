//! The sandbox payment provider: a real HTTP service mounted at `/sandbox/…` with a hosted
//! checkout page, the standard test cards, a fee schedule, and signed webhooks delivered over
//! HTTP with retries, plus test controls to delay, duplicate, reorder and drop deliveries.
//!
//! It keeps its own tables (`sandbox_*`) and talks to the store only over HTTP: the store's
//! adapter (`payments::SandboxProvider`) calls its API, and it calls the store's webhook URL.
//! Its deliveries are rows, so they survive restarts and are retried until acknowledged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::{Rng as _, RngCore as _};
use serde::{Deserialize, Serialize};
use store_api::{ErrorCode, Money};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::db::{Db, now_micros};
use crate::error::{ApiError, ApiResult};
use crate::extract::parse_json;
use crate::payments::fees::FeeSchedule;
use crate::payments::provider::{
    Checkout, CheckoutRequest, EventEnvelope, RefundAccepted, RefundCall, SIGNATURE_HEADER, sign_webhook,
};

pub mod checkout;
pub mod deliveries;
pub mod events;

pub use checkout::*;
pub use deliveries::*;
pub use events::*;

/// Attempts per delivery before the sandbox gives up on it.
pub const DELIVERY_ATTEMPTS_MAX: i64 = 12;
/// Deliveries sent per tick of the delivery worker.
const DELIVERY_BATCH_MAX: i64 = 64;
/// The longest wait between two attempts of one delivery.
const DELIVERY_BACKOFF_MAX_MS: i64 = 30_000;

pub use store_api::sandbox::{PayRequest, PayResult, PayStatus, cards};

/// Test controls applied to the events emitted after they are set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Controls {
    /// Extra milliseconds before each event's first delivery.
    #[serde(default)]
    pub delay_ms: u64,
    /// Extra copies of each event delivered, all at once.
    #[serde(default)]
    pub duplicates: u32,
    /// Drop this many of the next delivery attempts (they are retried with backoff).
    #[serde(default)]
    pub drop_first: u32,
    /// A random extra delay of up to this many milliseconds per delivery, so events arrive out
    /// of order.
    #[serde(default)]
    pub reorder_ms: u64,
    /// The next this many events are never delivered, as if every retry had failed (a store
    /// outage longer than the retry window): only the events API shows them.
    #[serde(default)]
    pub lose_next: u32,
}

/// The sandbox's settings and state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Sandbox(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    db: Db,
    api_key: String,
    webhook_secret: Vec<u8>,
    webhook_url: String,
    public_url: String,
    fees: FeeSchedule,
    dispute_delay: Duration,
    delivery_attempts_max: i64,
    controls: Mutex<Controls>,
    http: reqwest::Client,
}

/// What the sandbox needs to run.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Its own database (the store's, when mounted in it).
    pub db: Db,
    /// Callers of its API send `Authorization: Bearer <api_key>`.
    pub api_key: String,
    /// Webhooks are signed with this.
    pub webhook_secret: Vec<u8>,
    /// Where webhooks go.
    pub webhook_url: String,
    /// The URL the sandbox is reached at (`…/sandbox`), for checkout links.
    pub public_url: String,
    /// Its fees.
    pub fees: FeeSchedule,
    /// How long after a payment with the dispute card the dispute arrives.
    pub dispute_delay: Duration,
    /// Delivery attempts of one webhook before the sandbox gives up on it (like a real
    /// provider's retry window); [`DELIVERY_ATTEMPTS_MAX`] unless set.
    pub delivery_attempts_max: i64,
}

impl Sandbox {
    /// A sandbox with no test controls set.
    #[must_use]
    pub fn new(config: SandboxConfig) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        Self(Arc::new(Inner {
            db: config.db,
            api_key: config.api_key,
            webhook_secret: config.webhook_secret,
            webhook_url: config.webhook_url,
            public_url: config.public_url,
            fees: config.fees,
            dispute_delay: config.dispute_delay,
            delivery_attempts_max: config.delivery_attempts_max.max(1),
            controls: Mutex::new(Controls::default()),
            http,
        }))
    }

    fn check_api_key(&self, headers: &HeaderMap) -> ApiResult<()> {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        let expected = self.0.api_key.as_bytes();
        let matches =
            sent.is_some_and(|sent| subtle::ConstantTimeEq::ct_eq(sent.as_bytes(), expected).into());
        if matches {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidCredentials,
                "the sandbox API needs its secret key",
            ))
        }
    }
}

/// The sandbox's routes, with their OpenAPI description.
pub fn routes() -> OpenApiRouter<Sandbox> {
    OpenApiRouter::new()
        .routes(routes!(create_session))
        .routes(routes!(checkout_page))
        .routes(routes!(pay))
        .routes(routes!(create_refund))
        .routes(routes!(set_controls))
        .routes(routes!(create_stray_payment))
        .routes(routes!(list_events))
        .routes(routes!(get_session))
}

fn random_id(prefix: &str) -> String {
    let mut bytes = [0_u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A sandbox session as the checkout page and payment see it.
#[derive(Debug)]
struct Session {
    id: String,
    merchant: String,
    reference: String,
    description: String,
    amount: Money,
    status: String,
    expires_at_s: i64,
}

/// `id, merchant, reference, description, currency, amount_micros, status, expires_at`.
type SessionRow = (String, String, String, String, String, i64, String, i64);

async fn find_session(conn: &mut sqlx::AnyConnection, id: &str) -> ApiResult<Option<Session>> {
    let row: Option<SessionRow> = sqlx::query_as(
        "select id, merchant, reference, description, currency, amount_micros, status, expires_at \
         from sandbox_session where id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|(id, merchant, reference, description, currency, amount_micros, status, expires_at)| {
        let currency = store_api::MoneyCurrency::parse(&currency).map_err(|error| anyhow::anyhow!(error))?;
        Ok(Session {
            id,
            merchant,
            reference,
            description,
            amount: Money::from_micros(currency, amount_micros),
            status,
            expires_at_s: expires_at,
        })
    })
    .transpose()
}

/// Opens a checkout session (the same `idempotency_key` returns the same session).
#[utoipa::path(
    post, path = "/sandbox/v1/checkout-sessions", tag = "sandbox",
    request_body = Object,
    responses((status = 200, description = "The session: {id, checkout_url}", body = Object), (status = 401, body = store_api::ErrorBody))
)]
async fn create_session(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<axum::Json<Checkout>> {
    sandbox.check_api_key(&headers)?;
    let request: CheckoutRequest = parse_json(&body)?;
    let amount_micros = request.amount.to_micros().map_err(|error| ApiError::invalid("amount", error))?;
    let mut tx = sandbox.0.db.begin_write().await?;
    let id = random_id("cs");
    let opened = sqlx::query(
        "insert into sandbox_session (id, idempotency_key, merchant, reference, description, currency, amount_micros, \
         status, expires_at, created_at) values ($1, $2, $3, $4, $5, $6, $7, 'open', $8, $9) \
         on conflict (idempotency_key) do nothing",
    )
    .bind(&id)
    .bind(&request.idempotency_key)
    .bind(&request.merchant)
    .bind(&request.reference)
    .bind(&request.description)
    .bind(request.amount.currency.code())
    .bind(amount_micros)
    .bind(request.expires_at)
    .bind(now_micros())
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let id = if opened {
        id
    } else {
        // Like a real provider, a reused key returns its session only for the same parameters.
        let (id, reference, currency, existing_micros): (String, String, String, i64) = sqlx::query_as(
            "select id, reference, currency, amount_micros from sandbox_session where idempotency_key = $1",
        )
        .bind(&request.idempotency_key)
        .fetch_one(&mut *tx)
        .await?;
        if reference != request.reference
            || currency != request.amount.currency.code()
            || existing_micros != amount_micros
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::IdempotencyKeyReused,
                "this idempotency key opened a session with other parameters",
            ));
        }
        id
    };
    tx.commit().await?;
    Ok(axum::Json(Checkout { checkout_url: format!("{}/checkout/{id}", sandbox.0.public_url), id }))
}

/// Records a successful payment of `amount` on a session and emits its `payment.succeeded`.
async fn record_payment(
    sandbox: &Sandbox,
    conn: &mut sqlx::AnyConnection,
    session: &Session,
    amount: Money,
    reference: &str,
    card_last4: &str,
) -> ApiResult<String> {
    let payment_id = random_id("py");
    let fee = sandbox.0.fees.fee(amount);
    let amount_micros = amount.to_micros().map_err(|error| ApiError::invalid("amount", error))?;
    let fee_micros = fee.to_micros().map_err(|error| anyhow::anyhow!(error))?;
    sqlx::query(
        "insert into sandbox_payment (id, session_id, card_last4, currency, amount_micros, fee_micros, status, created_at) \
         values ($1, $2, $3, $4, $5, $6, 'succeeded', $7)",
    )
    .bind(&payment_id)
    .bind(&session.id)
    .bind(card_last4)
    .bind(amount.currency.code())
    .bind(amount_micros)
    .bind(fee_micros)
    .bind(now_micros())
    .execute(&mut *conn)
    .await?;
    let data = serde_json::json!({
        "session_id": session.id, "payment_id": payment_id, "reference": reference,
        "amount": amount, "fee": fee,
    });
    emit(sandbox, conn, "payment.succeeded", data, Duration::ZERO).await?;
    Ok(payment_id)
}

/// A payment made outside the checkout page, as real providers report them now and then.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct StrayPayment {
    /// The session it names.
    session_id: String,
    /// What was paid; the session's amount when absent.
    amount: Option<Money>,
    /// The reference it names; the session's when absent.
    reference: Option<String>,
}

/// Test control: records a payment on a session whatever its state, of any amount, currency or
/// reference (a second card on a paid session, a changed amount, a late payment), so a store's
/// reconciliation can be tested against the provider's real books. Answers `{payment_id}`.
#[utoipa::path(
    post, path = "/sandbox/v1/test/payments", tag = "sandbox",
    request_body = StrayPayment,
    responses((status = 200, body = PayResult), (status = 401, body = store_api::ErrorBody), (status = 404, body = store_api::ErrorBody))
)]
async fn create_stray_payment(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<axum::Json<PayResult>> {
    sandbox.check_api_key(&headers)?;
    let request: StrayPayment = parse_json(&body)?;
    let mut tx = sandbox.0.db.begin_write().await?;
    let session = find_session(&mut tx, &request.session_id)
        .await?
        .ok_or_else(|| ApiError::not_found("session", &request.session_id))?;
    let amount = request.amount.unwrap_or(session.amount);
    let reference = request.reference.unwrap_or_else(|| session.reference.clone());
    let payment_id = record_payment(&sandbox, &mut tx, &session, amount, &reference, "0000").await?;
    tx.commit().await?;
    Ok(axum::Json(PayResult { status: PayStatus::Succeeded, payment_id: Some(payment_id) }))
}

/// Closes an open session; a session closes once (two payments racing for one: the second is
/// refused).
async fn close_session(
    conn: &mut sqlx::AnyConnection,
    session_id: &str,
    status: &str,
    payment_id: Option<&str>,
) -> ApiResult<()> {
    let closed = sqlx::query(
        "update sandbox_session set status = $2, payment_id = $3 where id = $1 and status = 'open'",
    )
    .bind(session_id)
    .bind(status)
    .bind(payment_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if closed != 1 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::OrderStateConflict,
            "this checkout is closed",
        ));
    }
    Ok(())
}

/// A checkout session as its API shows it: whether it was paid, and by which payment.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    /// The session.
    pub id: String,
    /// `open`, `paid`, `failed` or `expired`.
    pub status: String,
    /// The payment that paid it, with its facts as `payment.succeeded` carries them.
    #[schema(value_type = Option<Object>)]
    pub payment: Option<serde_json::Value>,
}

/// A checkout session, so a store can ask whether it was paid before giving up on its order.
#[utoipa::path(
    get, path = "/sandbox/v1/checkout-sessions/{session}", tag = "sandbox",
    params(("session" = String, Path, description = "Checkout session id")),
    responses((status = 200, body = SessionView), (status = 401, body = store_api::ErrorBody), (status = 404, body = store_api::ErrorBody))
)]
async fn get_session(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    Path(session_id): Path<String>,
) -> ApiResult<axum::Json<SessionView>> {
    sandbox.check_api_key(&headers)?;
    let mut conn = sandbox.0.db.pool().acquire().await?;
    let session = find_session(&mut conn, &session_id)
        .await?
        .ok_or_else(|| ApiError::not_found("session", &session_id))?;
    let paid: Option<(String, String, i64, i64)> = sqlx::query_as(
        "select p.id, p.currency, p.amount_micros, p.fee_micros from sandbox_session s \
         join sandbox_payment p on p.id = s.payment_id where s.id = $1",
    )
    .bind(&session.id)
    .fetch_optional(&mut *conn)
    .await?;
    let payment = paid
        .map(|(payment_id, currency, amount, fee)| -> ApiResult<serde_json::Value> {
            let currency =
                store_api::MoneyCurrency::parse(&currency).map_err(|error| anyhow::anyhow!(error))?;
            Ok(serde_json::json!({
                "session_id": session.id, "payment_id": payment_id, "reference": session.reference,
                "amount": Money::from_micros(currency, amount), "fee": Money::from_micros(currency, fee),
            }))
        })
        .transpose()?;
    let status = if session.status == "open" && session.expires_at_s <= now_micros() / 1_000_000 {
        "expired".to_owned()
    } else {
        session.status
    };
    Ok(axum::Json(SessionView { id: session.id, status, payment }))
}

/// Sets the test controls for the events emitted from now on.
#[utoipa::path(
    post, path = "/sandbox/v1/controls", tag = "sandbox",
    request_body = Controls,
    responses((status = 200, body = Controls))
)]
async fn set_controls(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<axum::Json<Controls>> {
    sandbox.check_api_key(&headers)?;
    let controls: Controls = parse_json(&body)?;
    *sandbox.0.controls.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = controls;
    Ok(axum::Json(controls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_cards_pass_the_luhn_check() {
        for card in [cards::SUCCEEDS, cards::DECLINED, cards::INSUFFICIENT_FUNDS, cards::DISPUTED] {
            assert!(luhn_ok(card), "{card}");
        }
        assert!(!luhn_ok("4242424242424241"));
    }

    #[test]
    fn form_bodies_decode() {
        assert_eq!(
            serde_urlencoded_form(b"card_number=4242+4242%204242").unwrap(),
            [("card_number".to_owned(), "4242 4242 4242".to_owned())]
        );
        assert!(serde_urlencoded_form(b"card_number=%zz").is_err());
    }
}
