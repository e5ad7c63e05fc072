//! Payment providers behind one trait: the sandbox and Stripe ([`crate::payments::stripe`]) are
//! adapters of it. The sandbox provider's adapter talks to the sandbox service over HTTP,
//! exactly as an adapter for a real provider does.
//!
//! Webhooks are signed `t=<unix seconds>,v1=<hex HMAC-SHA256>` over `"{t}.{body}"` (the
//! sandbox's `Coinslot-Signature` header, Stripe's `Stripe-Signature`), checked in constant time
//! against every configured secret and every `v1` value, with a tolerance on `t`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use store_api::{ErrorCode, Money, MoneyCurrency};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// The header carrying a webhook's signature.
pub const SIGNATURE_HEADER: &str = "coinslot-signature";

/// A boxed future, so providers can sit behind `dyn PaymentProvider`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a checkout session is opened for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckoutRequest {
    /// Makes the request safe to retry: the same key opens the same session.
    pub idempotency_key: String,
    /// Shown on the checkout page.
    pub merchant: String,
    /// The store's reference (the order id).
    pub reference: String,
    /// Shown on the checkout page.
    pub description: String,
    /// The charge.
    pub amount: Money,
    /// When the session closes, Unix seconds.
    pub expires_at: i64,
    /// The item sold (its SKU; `tab` for a tab settlement), for providers that list items
    /// (Steam's `itemid`).
    #[serde(skip)]
    pub sku: String,
    /// How many, for providers that list items.
    #[serde(skip)]
    pub quantity: u32,
    /// The player's identity key, for a provider that charges a platform account
    /// ([`PaymentProvider::needs_platform_login`]: Steam's `steam:<app>:<SteamID>`).
    #[serde(skip)]
    pub payer: Option<String>,
}

/// An open checkout session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkout {
    /// The provider's session id.
    pub id: String,
    /// Where the player pays.
    pub checkout_url: String,
}

/// A refund asked of the provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundCall {
    /// Our refund id: the same id refunds once.
    pub idempotency_key: String,
    /// The provider's payment.
    pub payment_id: String,
    /// How much.
    pub amount: Money,
}

/// The provider's answer to a refund.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundAccepted {
    /// The provider's refund id.
    pub id: String,
}

/// A webhook event as providers send it: `{"id","type","created","data"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Unique per event; duplicates carry the same id.
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When, Unix seconds.
    pub created: i64,
    /// The event's facts.
    pub data: serde_json::Value,
}

/// What a verified webhook says happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderEvent {
    /// A checkout session was paid.
    PaymentSucceeded(PaymentReport),
    /// A checkout session's payment failed.
    PaymentFailed {
        /// The session.
        session_id: String,
        /// Why (`card_declined`, `insufficient_funds`).
        reason: String,
    },
    /// A refund went through.
    RefundSucceeded {
        /// Our refund id (the idempotency key we sent).
        refund_id: Uuid,
        /// The provider's refund id.
        provider_refund_id: String,
    },
    /// A checkout session was paid, as the event says; what was paid (amount, currency,
    /// reference, fee) is read from the provider's API ([`PaymentProvider::session_payment`])
    /// before anything is booked.
    SessionPaid {
        /// The session.
        session_id: String,
    },
    /// A payment was refunded, in one or more refunds the provider lists through its API
    /// ([`PaymentProvider::resolve`] turns this into one event per refund).
    PaymentRefunded {
        /// The payment.
        payment_id: String,
    },
    /// A refund the provider made that this store did not ask for (an operator refunded in the
    /// provider's dashboard): booked like a refund of ours.
    RefundedAtProvider {
        /// The payment refunded.
        payment_id: String,
        /// The provider's refund id: it is booked once.
        provider_refund_id: String,
        /// How much.
        amount: Money,
    },
    /// A refund this store asked for failed at the provider.
    RefundFailed {
        /// Our refund id.
        refund_id: Uuid,
        /// The provider's reason.
        reason: String,
    },
    /// A payment is disputed; the outcome comes later ([`ProviderEvent::DisputeWon`] or
    /// [`ProviderEvent::PaymentDisputed`]). The order waits in `disputed`.
    DisputeOpened {
        /// The payment.
        payment_id: String,
    },
    /// A dispute closed in the merchant's favour: the payment stands.
    DisputeWon {
        /// The payment.
        payment_id: String,
    },
    /// The platform asks how much of a purchase the player consumed before it decides on a
    /// refund the player asked it for (the App Store's `CONSUMPTION_REQUEST`): answered through
    /// the platform's API ([`PaymentProvider::answer_consumption`]) before the event is applied.
    ConsumptionRequested {
        /// The payment asked about.
        payment_id: String,
    },
    /// A payment was disputed and the dispute lost: the money is taken back.
    PaymentDisputed {
        /// The payment.
        payment_id: String,
        /// What the provider took back; the whole payment when it does not say.
        amount: Option<Money>,
    },
    /// An event type this store does not act on.
    Ignored,
}

/// What a provider says was paid: the store applies it only when every fact matches its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentReport {
    /// The session paid.
    pub session_id: String,
    /// The payment: one provider-confirmed movement of money, booked once.
    pub payment_id: String,
    /// The store's reference the session was opened with (the order id).
    pub reference: String,
    /// What the player paid, in the currency the provider charged.
    pub amount: Money,
    /// The provider's fee.
    pub fee: Money,
}

/// A webhook whose signature checked out.
#[derive(Debug, Clone)]
pub struct VerifiedEvent {
    /// The event id, for deduplication.
    pub id: String,
    /// Its type, as sent.
    pub event_type: String,
    /// What it says.
    pub event: ProviderEvent,
}

/// What the store can refund through a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refunds {
    /// Any amount up to what is left (Stripe, the sandbox).
    Any,
    /// Whole payments only, each once (Steam).
    WholePayments,
    /// None: the platform refunds at the player's request only, and notifies (the App Store).
    AtThePlayersRequest,
}

/// A payment provider.
pub trait PaymentProvider: Send + Sync + std::fmt::Debug {
    /// The name in `POST /v1/webhooks/{provider}` and in stored orders.
    fn name(&self) -> &'static str;

    /// Opens (or, for the same idempotency key, returns) a checkout session.
    fn create_checkout<'a>(&'a self, request: &'a CheckoutRequest) -> BoxFuture<'a, ApiResult<Checkout>>;

    /// Asks for a refund; the outcome arrives as a webhook.
    fn refund<'a>(&'a self, call: &'a RefundCall) -> BoxFuture<'a, ApiResult<RefundAccepted>>;

    /// Checks a webhook's signature and freshness and reads it.
    ///
    /// # Errors
    /// `webhook_signature_invalid`, `webhook_timestamp_out_of_tolerance`, `invalid_request`.
    fn verify_webhook(&self, headers: &HeaderMap, body: &[u8], now_s: i64) -> ApiResult<VerifiedEvent>;

    /// The events that happened after `cursor` (from the first when `None`), oldest first, read
    /// through the provider's authenticated API: what reconciliation replays, so a webhook the
    /// store never received is applied all the same (once: events are deduplicated by id).
    fn events_since<'a>(&'a self, cursor: Option<&'a str>) -> BoxFuture<'a, ApiResult<EventPage>>;

    /// The payment that paid a checkout session, if one did: asked before an order expires, and
    /// for every [`ProviderEvent::SessionPaid`].
    fn session_payment<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, ApiResult<Option<PaymentReport>>>;

    /// Closes a checkout session so it can no longer be paid (the order is about to expire).
    /// A session that is paid or closed already is not an error. Providers whose sessions close
    /// by themselves at the order's expiry keep the default, which does nothing.
    fn close_checkout<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, ApiResult<()>> {
        let _ = session_id;
        Box::pin(async { Ok(()) })
    }

    /// The reference a payment of this provider names for the order `order_id`, which fulfilment
    /// checks: the order id the session was opened with; Steam's 64-bit `orderid` made from it.
    fn reference_for(&self, order_id: Uuid) -> String {
        order_id.to_string()
    }

    /// Whether the provider charges an account of a platform the player logs in with (Steam):
    /// it then serves only players logged in with that platform, only when an order names it,
    /// and is never where orders go by default.
    fn needs_platform_login(&self) -> bool {
        false
    }

    /// What the store can refund through this provider.
    fn refunds(&self) -> Refunds {
        Refunds::Any
    }

    /// The name in `POST /v1/webhooks/{name}`: the provider's own name unless it says otherwise
    /// (the App Store's orders say `app_store`, its notifications come to `/v1/webhooks/apple`).
    fn webhook_name(&self) -> &'static str {
        self.name()
    }

    /// The currency this provider charges the `payer` in, when it decides (Steam charges in the
    /// player's wallet currency, from `GetUserInfo`); `None` when the order's price decides.
    ///
    /// # Errors
    /// The payer cannot buy through this provider; the provider cannot be reached.
    fn payer_currency<'a>(&'a self, payer: &'a str) -> BoxFuture<'a, ApiResult<Option<MoneyCurrency>>> {
        let _ = payer;
        Box::pin(async { Ok(None) })
    }

    /// What the game reports about the provider's own purchase dialog (the Steam overlay's
    /// authorization callback) comes to, asked of the provider, never taken on the game's word:
    /// the payment (finalized first when the provider needs it), the order's failure, or a
    /// `409` while the provider has not recorded the outcome yet.
    ///
    /// # Errors
    /// `invalid_request` for a provider whose payments are not authorized in the game; the
    /// provider cannot be reached or does not confirm the outcome yet.
    fn client_authorization<'a>(
        &'a self,
        session_id: &'a str,
        authorized: bool,
    ) -> BoxFuture<'a, ApiResult<Vec<ProviderEvent>>> {
        let _ = (session_id, authorized);
        Box::pin(async {
            Err(ApiError::invalid(
                "provider",
                "this order is paid on the provider's checkout page, not in the game",
            ))
        })
    }

    /// Answers a [`ProviderEvent::ConsumptionRequested`]: whether the purchase was `delivered`
    /// (its order fulfilled). Providers that never ask keep the default, which does nothing.
    ///
    /// # Errors
    /// The provider cannot be reached or refuses the answer (the notification is retried).
    fn answer_consumption<'a>(
        &'a self,
        payment_id: &'a str,
        delivered: bool,
    ) -> BoxFuture<'a, ApiResult<()>> {
        let _ = (payment_id, delivered);
        Box::pin(async { Ok(()) })
    }

    /// Verifies a platform's proof of purchase (a purchase made in the platform's own store, to
    /// redeem) and says what it grants and books. Providers that sell through checkouts keep the
    /// default, which refuses.
    ///
    /// # Errors
    /// `platform_proof_invalid` (`details.reason` says which check failed); the platform cannot
    /// be reached.
    fn verify_purchase<'a>(
        &'a self,
        proof: &'a store_api::orders::PlatformProof,
    ) -> BoxFuture<'a, ApiResult<crate::payments::platform::PlatformPurchase>> {
        let _ = proof;
        Box::pin(async {
            Err(ApiError::invalid("platform", "this provider does not redeem platform purchases"))
        })
    }

    /// Tells the platform a redeemed purchase was delivered: Google Play's acknowledgement, or
    /// its consumption (`consume`), without which Google refunds the purchase after three days.
    ///
    /// # Errors
    /// The platform cannot be reached or refuses (the work is retried).
    fn acknowledge_purchase<'a>(
        &'a self,
        product_id: &'a str,
        purchase_token: &'a str,
        consume: bool,
    ) -> BoxFuture<'a, ApiResult<()>> {
        let _ = (product_id, purchase_token, consume);
        Box::pin(async { Ok(()) })
    }

    /// Fetches what [`PaymentProvider::verify_webhook`] will check a request with, when it is
    /// published elsewhere and rotates (the keys Google signs Pub/Sub push tokens with). Runs
    /// before every webhook; the default has nothing to fetch.
    ///
    /// # Errors
    /// The keys cannot be fetched.
    fn prepare_webhook<'a>(&'a self, headers: &'a HeaderMap) -> BoxFuture<'a, ApiResult<()>> {
        let _ = headers;
        Box::pin(async { Ok(()) })
    }

    /// What an event comes to once the facts it only names are read from the provider's API:
    /// a paid session becomes the payment that paid it, a refunded payment its refunds. Runs
    /// before the event is applied, outside any transaction.
    ///
    /// # Errors
    /// The provider cannot be reached, or (`409`) does not confirm the event yet: it is tried
    /// again later (the webhook is retried, reconciliation waits).
    fn resolve<'a>(&'a self, event: ProviderEvent) -> BoxFuture<'a, ApiResult<Vec<ProviderEvent>>> {
        Box::pin(async move {
            match event {
                ProviderEvent::SessionPaid { session_id } => paid_session(self, &session_id).await,
                other => Ok(vec![other]),
            }
        })
    }
}

/// [`ProviderEvent::SessionPaid`] resolved: the payment the provider says paid the session.
///
/// # Errors
/// `409` when the provider does not report the session paid; the provider cannot be reached.
pub async fn paid_session<P: PaymentProvider + ?Sized>(
    provider: &P,
    session_id: &str,
) -> ApiResult<Vec<ProviderEvent>> {
    match provider.session_payment(session_id).await? {
        Some(report) => Ok(vec![ProviderEvent::PaymentSucceeded(report)]),
        None => Err(not_confirmed(&format!("checkout session {session_id} is not paid"))),
    }
}

/// `409 order_state_conflict`: the provider does not confirm what an event says yet; the event
/// is tried again later.
#[must_use]
pub fn not_confirmed(message: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::OrderStateConflict,
        format!("the provider does not confirm it yet: {message}"),
    )
}

/// A page of a provider's events.
#[derive(Debug)]
pub struct EventPage {
    /// The events, oldest first. An event this store cannot read is `Err` (it is skipped).
    pub events: Vec<ApiResult<VerifiedEvent>>,
    /// Where the next page starts.
    pub next_cursor: Option<String>,
}

/// Signs a webhook body: the header value for `t`.
#[must_use]
pub fn sign_webhook(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut mac = webhook_mac(secret, t);
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn webhook_mac(secret: &[u8], t: i64) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac
}

fn signature_error(code: ErrorCode, message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// Checks a `t=…,v1=…` signature header (`header`: the sandbox's `Coinslot-Signature`, Stripe's
/// `Stripe-Signature`) against the body: one of its `v1` signatures must match one of `secrets`
/// (compared in constant time; several of each while a secret is rotated) and `t` must be within
/// `tolerance` of now.
///
/// # Errors
/// `webhook_signature_invalid` or `webhook_timestamp_out_of_tolerance`.
pub fn verify_signature(
    secrets: &[&[u8]],
    header: &str,
    headers: &HeaderMap,
    body: &[u8],
    now_s: i64,
    tolerance: Duration,
) -> ApiResult<()> {
    let invalid = || {
        signature_error(
            ErrorCode::WebhookSignatureInvalid,
            "the webhook's signature is missing or does not match",
        )
    };
    let header = headers.get(header).and_then(|value| value.to_str().ok()).ok_or_else(invalid)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signatures.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or_else(invalid)?;
    let matches = secrets.iter().any(|secret| {
        signatures.iter().any(|signature| {
            let mut mac = webhook_mac(secret, timestamp);
            mac.update(body);
            mac.verify_slice(signature).is_ok()
        })
    });
    if !matches {
        return Err(invalid());
    }
    let tolerance_s = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if (now_s - timestamp).abs() > tolerance_s {
        return Err(signature_error(
            ErrorCode::WebhookTimestampOutOfTolerance,
            "the webhook's timestamp is too far from now; it may be a replay",
        ));
    }
    Ok(())
}

/// The sandbox provider's adapter: HTTP calls to the sandbox service's API.
#[derive(Debug, Clone)]
pub struct SandboxProvider {
    api_url: String,
    api_key: String,
    webhook_secret: Vec<u8>,
    tolerance: Duration,
    http: reqwest::Client,
}

impl SandboxProvider {
    /// An adapter for the sandbox at `api_url` (`…/sandbox`).
    #[must_use]
    pub fn new(api_url: String, api_key: String, webhook_secret: Vec<u8>, tolerance: Duration) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        Self { api_url, api_key, webhook_secret, tolerance, http }
    }

    async fn call<B: Serialize + Sync, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> ApiResult<R> {
        self.send(self.http.post(format!("{}{path}", self.api_url)).json(body), path).await
    }

    async fn get<R: serde::de::DeserializeOwned>(&self, path: &str) -> ApiResult<R> {
        self.send(self.http.get(format!("{}{path}", self.api_url)), path).await
    }

    async fn send<R: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        path: &str,
    ) -> ApiResult<R> {
        let unavailable = |detail: String| unavailable(path, &detail);
        let response = request
            .bearer_auth(&self.api_key)
            .send()
            .await
            .map_err(|error| unavailable(format!("unreachable: {error}")))?;
        let status = response.status();
        if status.is_client_error() {
            let text = response.text().await.unwrap_or_default();
            tracing::warn!(path, %status, %text, "the payment provider refused a call");
            return Err(refused(&format!("the payment provider refused the request ({status})")));
        }
        if !status.is_success() {
            return Err(unavailable(format!("answered {status}")));
        }
        response.json().await.map_err(|error| unavailable(format!("unreadable answer: {error}")))
    }
}

/// The provider could not be reached or failed on its side (`502 provider_unavailable`): the
/// same call may succeed later. The details (internal URLs, the provider's own words) are
/// logged with the call's `path`, not shown to players.
#[must_use]
pub fn unavailable(path: &str, detail: &str) -> ApiError {
    tracing::warn!(path, %detail, "a payment provider call failed");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        ErrorCode::ProviderUnavailable,
        "the payment provider could not be reached; retry with the same key",
    )
}

/// The provider refused a call for good (`422 provider_unavailable`): retrying it as it is will
/// not help. A refusal is a 4xx; a provider that cannot be reached is a 502.
#[must_use]
pub fn refused(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ProviderUnavailable, message)
}

fn data_str(data: &serde_json::Value, field: &str) -> ApiResult<String> {
    data.get(field).and_then(serde_json::Value::as_str).map(str::to_owned).ok_or_else(|| {
        ApiError::invalid(&format!("data.{field}"), format!("the event has no `data.{field}`"))
    })
}

fn data_money(data: &serde_json::Value, field: &str) -> ApiResult<Money> {
    serde_json::from_value(data.get(field).cloned().unwrap_or_default())
        .map_err(|error| ApiError::invalid(&format!("data.{field}"), error.to_string()))
}

impl PaymentProvider for SandboxProvider {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    fn create_checkout<'a>(&'a self, request: &'a CheckoutRequest) -> BoxFuture<'a, ApiResult<Checkout>> {
        Box::pin(self.call("/v1/checkout-sessions", request))
    }

    fn refund<'a>(&'a self, call: &'a RefundCall) -> BoxFuture<'a, ApiResult<RefundAccepted>> {
        Box::pin(self.call("/v1/refunds", call))
    }

    fn verify_webhook(&self, headers: &HeaderMap, body: &[u8], now_s: i64) -> ApiResult<VerifiedEvent> {
        verify_signature(&[&self.webhook_secret], SIGNATURE_HEADER, headers, body, now_s, self.tolerance)?;
        read_event(crate::extract::parse_json(body)?)
    }

    fn events_since<'a>(&'a self, cursor: Option<&'a str>) -> BoxFuture<'a, ApiResult<EventPage>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            struct Page {
                events: Vec<EventEnvelope>,
                next_cursor: Option<String>,
            }
            let path = match cursor {
                Some(cursor) => format!("/v1/events?after={}", urlencode(cursor)),
                None => "/v1/events".to_owned(),
            };
            let page: Page = self.get(&path).await?;
            Ok(EventPage {
                events: page.events.into_iter().map(read_event).collect(),
                next_cursor: page.next_cursor,
            })
        })
    }

    fn session_payment<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, ApiResult<Option<PaymentReport>>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            struct Session {
                payment: Option<serde_json::Value>,
            }
            let session: Session =
                self.get(&format!("/v1/checkout-sessions/{}", urlencode(session_id))).await?;
            session.payment.as_ref().map(payment_report).transpose()
        })
    }
}

/// Percent-encodes everything but unreserved characters, for a path segment, a query value or a
/// form field.
pub(crate) fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn payment_report(data: &serde_json::Value) -> ApiResult<PaymentReport> {
    Ok(PaymentReport {
        session_id: data_str(data, "session_id")?,
        payment_id: data_str(data, "payment_id")?,
        reference: data_str(data, "reference")?,
        amount: data_money(data, "amount")?,
        fee: data_money(data, "fee")?,
    })
}

/// Reads a sandbox event, from a webhook or the events API.
fn read_event(envelope: EventEnvelope) -> ApiResult<VerifiedEvent> {
    let data = &envelope.data;
    let event = match envelope.event_type.as_str() {
        "payment.succeeded" => ProviderEvent::PaymentSucceeded(payment_report(data)?),
        "payment.failed" => ProviderEvent::PaymentFailed {
            session_id: data_str(data, "session_id")?,
            reason: data_str(data, "reason")?,
        },
        "refund.succeeded" => ProviderEvent::RefundSucceeded {
            refund_id: Uuid::parse_str(&data_str(data, "idempotency_key")?)
                .map_err(|_| ApiError::invalid("data.idempotency_key", "not a refund of this store"))?,
            provider_refund_id: data_str(data, "refund_id")?,
        },
        "payment.disputed" => ProviderEvent::PaymentDisputed {
            payment_id: data_str(data, "payment_id")?,
            amount: data.get("amount").map(|_| data_money(data, "amount")).transpose()?,
        },
        _ => ProviderEvent::Ignored,
    };
    Ok(VerifiedEvent { id: envelope.id, event_type: envelope.event_type, event })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(SIGNATURE_HEADER, value.parse().unwrap());
        headers
    }

    #[test]
    fn a_signed_body_verifies_within_the_tolerance_only() {
        let secret = b"whsec";
        let body = br#"{"id":"evt_1"}"#;
        let tolerance = Duration::from_secs(300);
        let signed = headers(&sign_webhook(secret, 1_000, body));
        assert!(verify_signature(&[secret], SIGNATURE_HEADER, &signed, body, 1_200, tolerance).is_ok());
        let stale =
            verify_signature(&[secret], SIGNATURE_HEADER, &signed, body, 1_301, tolerance).unwrap_err();
        assert_eq!(stale.code(), ErrorCode::WebhookTimestampOutOfTolerance);
        let forged =
            verify_signature(&[b"other"], SIGNATURE_HEADER, &signed, body, 1_000, tolerance).unwrap_err();
        assert_eq!(forged.code(), ErrorCode::WebhookSignatureInvalid);
        let altered =
            verify_signature(&[secret], SIGNATURE_HEADER, &signed, br#"{"id":"evt_2"}"#, 1_000, tolerance)
                .unwrap_err();
        assert_eq!(altered.code(), ErrorCode::WebhookSignatureInvalid);
        let missing =
            verify_signature(&[secret], SIGNATURE_HEADER, &HeaderMap::new(), body, 1_000, tolerance)
                .unwrap_err();
        assert_eq!(missing.code(), ErrorCode::WebhookSignatureInvalid);
        // A stale timestamp cannot be refreshed without the secret: the signature covers it.
        let moved = headers(&sign_webhook(secret, 1_000, body).replace("t=1000", "t=1200"));
        assert_eq!(
            verify_signature(&[secret], SIGNATURE_HEADER, &moved, body, 1_200, tolerance).unwrap_err().code(),
            ErrorCode::WebhookSignatureInvalid
        );
    }
}
