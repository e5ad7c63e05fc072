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
use crate::fees::FeeSchedule;
use crate::payments::{
    Checkout, CheckoutRequest, EventEnvelope, RefundAccepted, RefundCall, SIGNATURE_HEADER, sign_webhook,
};

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

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title><style>\
         body{{font-family:system-ui,sans-serif;background:#f4f1ea;margin:0;display:flex;justify-content:center}}\
         main{{background:#fff;margin:3rem 1rem;padding:2rem;border-radius:12px;box-shadow:0 2px 12px #0002;max-width:26rem;width:100%}}\
         h1{{font-size:1.2rem;margin:0 0 1rem}} .amount{{font-size:2rem;font-weight:700;margin:.5rem 0 1.5rem}}\
         label{{display:block;font-size:.9rem;margin-bottom:.3rem}} input{{width:100%;box-sizing:border-box;font-size:1.1rem;padding:.6rem;border:1px solid #bbb;border-radius:6px}}\
         button{{margin-top:1rem;width:100%;padding:.8rem;font-size:1.1rem;border:0;border-radius:6px;background:#2d6a4f;color:#fff;cursor:pointer}}\
         .muted{{color:#666;font-size:.85rem}} .ok{{color:#2d6a4f}} .bad{{color:#a4161a}}\
         </style></head><body><main>{body}<p class=\"muted\">Coinslot sandbox: no real money moves.</p></main></body></html>"
    ))
}

/// The hosted checkout page: the merchant, what is bought, the amount, and a card form.
#[utoipa::path(
    get, path = "/sandbox/checkout/{session}", tag = "sandbox",
    params(("session" = String, Path, description = "Checkout session id")),
    responses((status = 200, content_type = "text/html", body = String), (status = 404, content_type = "text/html", body = String))
)]
async fn checkout_page(
    State(sandbox): State<Sandbox>,
    Path(session_id): Path<String>,
) -> ApiResult<Response> {
    let mut conn = sandbox.0.db.pool().acquire().await?;
    let Some(session) = find_session(&mut conn, &session_id).await? else {
        return Ok((StatusCode::NOT_FOUND, page("Not found", "<h1>This checkout does not exist.</h1>"))
            .into_response());
    };
    let closed = session.status != "open" || session.expires_at_s <= now_micros() / 1_000_000;
    let form = if closed {
        format!(
            "<p class=\"bad\" id=\"status\">This checkout is closed ({}).</p>",
            escape_html(&session.status)
        )
    } else {
        format!(
            "<form method=\"post\" action=\"{}/checkout/{}/pay\"><label for=\"card_number\">Card number</label>\
             <input id=\"card_number\" name=\"card_number\" inputmode=\"numeric\" autocomplete=\"cc-number\" placeholder=\"4242 4242 4242 4242\" required>\
             <button id=\"pay\" type=\"submit\">Pay {}</button></form>\
             <p class=\"muted\">Test cards: 4242 4242 4242 4242 succeeds, 4000 0000 0000 0002 is declined.</p>",
            escape_html(&sandbox.0.public_url),
            escape_html(&session.id),
            escape_html(&session.amount.to_string())
        )
    };
    let body = format!(
        "<h1>{}</h1><p id=\"description\">{}</p><p class=\"amount\" id=\"amount\">{}</p>{form}",
        escape_html(&session.merchant),
        escape_html(&session.description),
        escape_html(&session.amount.to_string())
    );
    Ok(page("Checkout", &body).into_response())
}

fn luhn_ok(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(index, byte)| {
            let digit = u32::from(byte - b'0');
            if index % 2 == 1 { if digit * 2 > 9 { digit * 2 - 9 } else { digit * 2 } } else { digit }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Pays a checkout session with a test card: from the page's form, or as JSON `{card_number}`
/// (the in-game checkout).
#[utoipa::path(
    post, path = "/sandbox/checkout/{session}/pay", tag = "sandbox",
    params(("session" = String, Path, description = "Checkout session id")),
    request_body(content = PayRequest, content_type = "application/json"),
    responses(
        (status = 200, body = PayResult, description = "succeeded, card_declined or insufficient_funds"),
        (status = 400, body = store_api::ErrorBody, description = "not a card number"),
        (status = 404, body = store_api::ErrorBody),
        (status = 409, body = store_api::ErrorBody, description = "the checkout is closed"),
    )
)]
async fn pay(
    State(sandbox): State<Sandbox>,
    Path(session_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    let card_number = if is_form {
        let fields: Vec<(String, String)> = serde_urlencoded_form(&body)
            .map_err(|_| ApiError::invalid("card_number", "the form is malformed"))?;
        fields.into_iter().find(|(name, _)| name == "card_number").map(|(_, value)| value).unwrap_or_default()
    } else {
        let request: PayRequest = parse_json(&body)?;
        request.card_number
    };
    let digits: String = card_number.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_digit()) || !luhn_ok(&digits) {
        return Err(ApiError::invalid(
            "card_number",
            "the card number must be 16 digits that pass the Luhn check",
        ));
    }
    let outcome = charge(&sandbox, &session_id, &digits).await?;
    if is_form {
        let (class, text, status) = match outcome.status {
            PayStatus::Succeeded => ("ok", "Payment succeeded. You can return to the game.", "succeeded"),
            PayStatus::InsufficientFunds => ("bad", "The card has insufficient funds.", "insufficient_funds"),
            PayStatus::CardDeclined | PayStatus::Other => ("bad", "The card was declined.", "card_declined"),
        };
        return Ok(page(
            "Checkout",
            &format!("<h1>{}</h1><p class=\"{class}\" id=\"status\">{text}</p>", escape_html(status)),
        )
        .into_response());
    }
    Ok(axum::Json(outcome).into_response())
}

fn serde_urlencoded_form(body: &[u8]) -> Result<Vec<(String, String)>, ()> {
    let text = std::str::from_utf8(body).map_err(|_| ())?;
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode_form_part(name)?, decode_form_part(value)?))
        })
        .collect()
}

fn decode_form_part(part: &str) -> Result<String, ()> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(index + 1..index + 3).ok_or(())?;
                out.push(u8::from_str_radix(std::str::from_utf8(hex).map_err(|_| ())?, 16).map_err(|_| ())?);
                index += 2;
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8(out).map_err(|_| ())
}

async fn charge(sandbox: &Sandbox, session_id: &str, card: &str) -> ApiResult<PayResult> {
    let mut tx = sandbox.0.db.begin_write().await?;
    let session =
        find_session(&mut tx, session_id).await?.ok_or_else(|| ApiError::not_found("session", session_id))?;
    if session.status != "open" || session.expires_at_s <= now_micros() / 1_000_000 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::OrderStateConflict,
            "this checkout is closed",
        )
        .with_detail("status", session.status));
    }
    let failure = match card {
        cards::DECLINED => Some((PayStatus::CardDeclined, "card_declined")),
        cards::INSUFFICIENT_FUNDS => Some((PayStatus::InsufficientFunds, "insufficient_funds")),
        _ => None,
    };
    let result = if let Some((status, reason)) = failure {
        close_session(&mut tx, &session.id, "failed", None).await?;
        let data =
            serde_json::json!({ "session_id": session.id, "reference": session.reference, "reason": reason });
        emit(sandbox, &mut tx, "payment.failed", data, Duration::ZERO).await?;
        PayResult { status, payment_id: None }
    } else {
        // One transaction: if the session was closed meanwhile, the payment is rolled back too.
        let payment_id =
            record_payment(sandbox, &mut tx, &session, session.amount, &session.reference, &card[12..])
                .await?;
        close_session(&mut tx, &session.id, "paid", Some(&payment_id)).await?;
        if card == cards::DISPUTED {
            let data = serde_json::json!({ "payment_id": payment_id, "reference": session.reference, "amount": session.amount });
            emit(sandbox, &mut tx, "payment.disputed", data, sandbox.0.dispute_delay).await?;
        }
        PayResult { status: PayStatus::Succeeded, payment_id: Some(payment_id) }
    };
    tx.commit().await?;
    Ok(result)
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

/// Records an event and schedules its deliveries, as the test controls say.
async fn emit(
    sandbox: &Sandbox,
    conn: &mut sqlx::AnyConnection,
    event_type: &str,
    data: serde_json::Value,
    delay: Duration,
) -> ApiResult<()> {
    let id = random_id("evt");
    let controls = {
        let mut controls = sandbox.0.controls.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = *controls;
        controls.lose_next = controls.lose_next.saturating_sub(1);
        current
    };
    // An event happens when its first delivery is due (a dispute comes later than its payment);
    // the events API lists it from then on.
    let happens_at = now_micros()
        + i64::try_from(delay.as_micros()).unwrap_or(i64::MAX / 2)
        + i64::try_from(controls.delay_ms).unwrap_or(0) * 1_000;
    let envelope = EventEnvelope {
        id: id.clone(),
        event_type: event_type.to_owned(),
        created: happens_at / 1_000_000,
        data,
    };
    let payload = serde_json::to_string(&envelope).map_err(anyhow::Error::from)?;
    sqlx::query("insert into sandbox_event (id, event_type, payload, created_at) values ($1, $2, $3, $4)")
        .bind(&id)
        .bind(event_type)
        .bind(&payload)
        .bind(happens_at)
        .execute(&mut *conn)
        .await?;
    let base_due = happens_at;
    let deliveries = if controls.lose_next > 0 { 0 } else { controls.duplicates + 1 };
    for _ in 0..deliveries {
        let jitter =
            if controls.reorder_ms > 0 { rand::rng().random_range(0..=controls.reorder_ms) } else { 0 };
        sqlx::query("insert into sandbox_delivery (event_id, due_at) values ($1, $2)")
            .bind(&id)
            .bind(base_due + i64::try_from(jitter).unwrap_or(0) * 1_000)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// `{idempotency_key, payment_id, amount}`: refunds part or all of a payment.
#[utoipa::path(
    post, path = "/sandbox/v1/refunds", tag = "sandbox",
    request_body = Object,
    responses((status = 200, description = "The refund: {id}", body = Object), (status = 409, body = store_api::ErrorBody))
)]
async fn create_refund(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<axum::Json<RefundAccepted>> {
    sandbox.check_api_key(&headers)?;
    let call: RefundCall = parse_json(&body)?;
    let amount_micros = call.amount.to_micros().map_err(|error| ApiError::invalid("amount", error))?;
    let mut tx = sandbox.0.db.begin_write().await?;
    let existing: Option<String> =
        sqlx::query_scalar("select id from sandbox_refund where idempotency_key = $1")
            .bind(&call.idempotency_key)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(id) = existing {
        return Ok(axum::Json(RefundAccepted { id }));
    }
    let refundable: Option<i64> = sqlx::query_scalar(
        "update sandbox_payment set refunded_micros = refunded_micros + $2 \
         where id = $1 and refunded_micros + $2 <= amount_micros returning amount_micros - refunded_micros",
    )
    .bind(&call.payment_id)
    .bind(amount_micros)
    .fetch_optional(&mut *tx)
    .await?;
    if refundable.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::RefundExceedsPaid,
            "the payment is unknown or has less left to refund",
        ));
    }
    let id = random_id("re");
    sqlx::query("insert into sandbox_refund (id, payment_id, idempotency_key, amount_micros, created_at) values ($1, $2, $3, $4, $5)")
        .bind(&id)
        .bind(&call.payment_id)
        .bind(&call.idempotency_key)
        .bind(amount_micros)
        .bind(now_micros())
        .execute(&mut *tx)
        .await?;
    let data = serde_json::json!({ "refund_id": id, "payment_id": call.payment_id, "idempotency_key": call.idempotency_key, "amount": call.amount });
    emit(&sandbox, &mut tx, "refund.succeeded", data, Duration::ZERO).await?;
    tx.commit().await?;
    Ok(axum::Json(RefundAccepted { id }))
}

/// A page of the events API.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    /// Events in the order they happened, as their webhooks carry them.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<EventEnvelope>,
    /// Pass as `after` for the next page; absent when there is none yet.
    pub next_cursor: Option<String>,
}

/// The `after` query of the events API.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// The `next_cursor` of the page before; from the first event when absent.
    after: Option<String>,
}

/// Events per page of the events API.
const EVENTS_PAGE_MAX: i64 = 100;

/// Every event that has happened, oldest first, a page at a time, as Stripe's `GET /v1/events`
/// lists them: a store that missed a webhook (an outage longer than the retry window) finds it
/// here.
#[utoipa::path(
    get, path = "/sandbox/v1/events", tag = "sandbox",
    params(EventsQuery),
    responses((status = 200, body = EventPage), (status = 401, body = store_api::ErrorBody))
)]
async fn list_events(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<EventsQuery>,
) -> ApiResult<axum::Json<EventPage>> {
    sandbox.check_api_key(&headers)?;
    let (after_at, after_id) = match query.after.as_deref().map(|cursor| cursor.split_once(':')) {
        None => (i64::MIN, String::new()),
        Some(Some((at, id))) => {
            (at.parse().map_err(|_| ApiError::invalid("after", "not a cursor of this API"))?, id.to_owned())
        }
        Some(None) => return Err(ApiError::invalid("after", "not a cursor of this API")),
    };
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "select id, payload, created_at from sandbox_event where created_at <= $1 \
         and (created_at > $2 or (created_at = $2 and id > $3)) order by created_at, id limit $4",
    )
    .bind(now_micros())
    .bind(after_at)
    .bind(&after_id)
    .bind(EVENTS_PAGE_MAX)
    .fetch_all(sandbox.0.db.pool())
    .await?;
    let next_cursor = rows.last().map(|(id, _, at)| format!("{at}:{id}"));
    let events = rows
        .iter()
        .map(|(_, payload, _)| serde_json::from_str(payload).map_err(|error| anyhow::anyhow!(error).into()))
        .collect::<ApiResult<Vec<EventEnvelope>>>()?;
    Ok(axum::Json(EventPage { events, next_cursor: next_cursor.or(query.after) }))
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

/// Delivers due webhooks until the task is dropped: every `tick`, each due delivery is sent
/// (concurrently), signed at the moment of sending; a non-2xx answer or a failure schedules a
/// retry with exponential backoff, up to [`DELIVERY_ATTEMPTS_MAX`] attempts.
pub async fn run_deliveries(sandbox: Sandbox, tick: Duration) {
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = deliver_due(&sandbox).await {
            tracing::warn!(%error, "sandbox webhook delivery failed to run");
        }
    }
}

async fn deliver_due(sandbox: &Sandbox) -> ApiResult<()> {
    let due: Vec<(i64, String, i64)> = sqlx::query_as(
        "select d.id, e.payload, d.attempts from sandbox_delivery d join sandbox_event e on e.id = d.event_id \
         where d.delivered_at is null and d.attempts < $1 and d.due_at <= $2 order by d.due_at, d.id limit $3",
    )
    .bind(sandbox.0.delivery_attempts_max)
    .bind(now_micros())
    .bind(DELIVERY_BATCH_MAX)
    .fetch_all(sandbox.0.db.pool())
    .await?;
    if due.is_empty() {
        return Ok(());
    }
    let attempts = due.into_iter().map(|(id, payload, attempts)| async move {
        let dropped = {
            let mut controls = sandbox.0.controls.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let drop_this = controls.drop_first > 0;
            controls.drop_first = controls.drop_first.saturating_sub(1);
            drop_this
        };
        let outcome = if dropped {
            Err("dropped by the drop_first test control".to_owned())
        } else {
            send_webhook(sandbox, &payload).await
        };
        (id, attempts, outcome)
    });
    let outcomes = futures_util::future::join_all(attempts).await;
    let mut tx = sandbox.0.db.begin_write().await?;
    for (id, attempts, outcome) in outcomes {
        match outcome {
            Ok(()) => {
                sqlx::query(
                    "update sandbox_delivery set delivered_at = $2, attempts = attempts + 1 where id = $1",
                )
                .bind(id)
                .bind(now_micros())
                .execute(&mut *tx)
                .await?;
            }
            Err(error) => {
                let backoff_ms = (200_i64 << attempts.clamp(0, 20)).min(DELIVERY_BACKOFF_MAX_MS);
                sqlx::query("update sandbox_delivery set attempts = attempts + 1, due_at = $2, last_error = $3 where id = $1")
                    .bind(id)
                    .bind(now_micros() + backoff_ms * 1_000)
                    .bind(error)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

async fn send_webhook(sandbox: &Sandbox, payload: &str) -> Result<(), String> {
    let signature = sign_webhook(&sandbox.0.webhook_secret, now_micros() / 1_000_000, payload.as_bytes());
    let response = sandbox
        .0
        .http
        .post(&sandbox.0.webhook_url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .body(payload.to_owned())
        .send()
        .await
        .map_err(|error| format!("not delivered: {error}"))?;
    if response.status().is_success() { Ok(()) } else { Err(format!("answered {}", response.status())) }
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
