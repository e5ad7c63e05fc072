//! Stripe as a [`PaymentProvider`]: Checkout Sessions for orders and tab settlements, the
//! Refunds API, signed webhooks and the Events API for reconciliation.
//!
//! - **Checkout**: `POST /v1/checkout/sessions` (form-encoded, one line item with `price_data`
//!   in the currency's minor units, `client_reference_id` and `metadata[coinslot_order]` = the
//!   order id, the success and cancel URLs, `expires_at`), sent with Stripe's `Idempotency-Key`
//!   = the store's key for the request (a hash of the player's key and the request), so a retry
//!   opens the same session. The order's `checkout_url` is the session's `url`.
//! - **What was paid is read, not trusted**: `checkout.session.completed` (when `payment_status`
//!   is `paid`) and `checkout.session.async_payment_succeeded` only name the session; the
//!   adapter retrieves it with its payment intent, latest charge and balance transaction
//!   expanded, and reports the amount, currency, reference and the real fee from the balance
//!   transaction (converted back at its `exchange_rate` when Stripe settles in another
//!   currency). The order is fulfilled only when all of them match it.
//! - **Money back**: refunds go through `POST /v1/refunds` (`payment_intent`, `amount`,
//!   `metadata[coinslot_refund]`, `Idempotency-Key` = the refund's id); `refund.created`,
//!   `refund.updated` and `charge.refunded` book them, a refund made in Stripe's dashboard
//!   included. `charge.dispute.created` holds the order in `disputed`; `charge.dispute.closed`
//!   books the chargeback and clawback when lost, and returns the order when won.
//! - **Webhooks**: `Stripe-Signature: t=…,v1=…` (HMAC-SHA256 of `t.body` with the endpoint's
//!   signing secret; every configured secret and every `v1` is tried, for rotation), 300 s
//!   tolerance by default.
//! - **Reconciliation**: `GET /v1/events` (`types[]` = the events above, `ending_before` = the
//!   newest event already read) replays what no webhook brought; before an order expires its
//!   session is expired at Stripe (`POST /v1/checkout/sessions/{id}/expire`) and retrieved.
//!
//! Requests name the API version they were written against ([`API_VERSION`]); the webhook
//! endpoint must be created with the same version so events have the shapes read here.

use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::Value;
use store_api::{Money, MoneyCurrency};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::payments::provider::{
    BoxFuture, Checkout, CheckoutRequest, EventPage, PaymentProvider, PaymentReport, ProviderEvent,
    RefundAccepted, RefundCall, VerifiedEvent, not_confirmed, paid_session, refused, unavailable, urlencode,
    verify_signature,
};

/// The Stripe API version requests are made with and events are read as.
pub const API_VERSION: &str = "2024-06-20";

/// The header Stripe signs webhooks in.
pub const SIGNATURE_HEADER: &str = "stripe-signature";

/// The events the store acts on: register exactly these on the webhook endpoint.
pub const EVENT_TYPES: [&str; 9] = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "charge.refunded",
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.dispute.created",
    "charge.dispute.closed",
];

/// The metadata key naming our order on a session and its payment intent.
const ORDER_METADATA: &str = "coinslot_order";
/// The metadata key naming our refund on a Stripe refund.
const REFUND_METADATA: &str = "coinslot_refund";

/// Stripe keeps a Checkout Session open at least this long after it is created.
const SESSION_LIFETIME_MIN_S: i64 = 31 * 60;
/// And at most this long.
const SESSION_LIFETIME_MAX_S: i64 = 24 * 60 * 60;

/// How a server reaches Stripe. Its `Debug` leaves the secrets out.
#[derive(Clone, PartialEq, Eq)]
pub struct StripeSettings {
    /// `https://api.stripe.com` (a local stand-in in tests).
    pub api_url: String,
    /// The secret API key (`sk_live_…`, `sk_test_…`) or a restricted key with the permissions
    /// the operator guide lists.
    pub secret_key: String,
    /// The webhook endpoint's signing secrets (`whsec_…`): the current one, and the previous
    /// one while Stripe rolls it.
    pub webhook_secrets: Vec<String>,
    /// Where Stripe sends the player after paying (`{ORDER_ID}` is filled in); the server's
    /// own `/checkout/complete` page when not set.
    pub success_url: Option<String>,
    /// Where Stripe sends the player who gives up; `/checkout/canceled` when not set.
    pub cancel_url: Option<String>,
}

impl std::fmt::Debug for StripeSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StripeSettings")
            .field("api_url", &self.api_url)
            .field("secret_key", &"<redacted>")
            .field("webhook_secrets", &format_args!("<{} redacted>", self.webhook_secrets.len()))
            .field("success_url", &self.success_url)
            .field("cancel_url", &self.cancel_url)
            .finish()
    }
}

/// The Stripe adapter.
#[derive(Debug, Clone)]
pub struct StripeProvider {
    settings: StripeSettings,
    success_url: String,
    cancel_url: String,
    tolerance: Duration,
    http: reqwest::Client,
}

impl StripeProvider {
    /// An adapter with these settings for the server at `public_url`, accepting webhooks signed
    /// within `tolerance` of now.
    #[must_use]
    pub fn new(settings: StripeSettings, public_url: &str, tolerance: Duration) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap_or_default();
        let success_url = settings
            .success_url
            .clone()
            .unwrap_or_else(|| format!("{public_url}/checkout/complete?order={{ORDER_ID}}"));
        let cancel_url = settings
            .cancel_url
            .clone()
            .unwrap_or_else(|| format!("{public_url}/checkout/canceled?order={{ORDER_ID}}"));
        Self { settings, success_url, cancel_url, tolerance, http }
    }

    /// Calls Stripe: `form` as the form-encoded body (or the query of a `GET`), with an
    /// idempotency key on `POST`s that have one.
    async fn call(
        &self,
        method: Method,
        path: &str,
        form: &[(String, String)],
        idempotency_key: Option<&str>,
    ) -> ApiResult<Value> {
        let encoded = form_encode(form);
        let url = format!("{}{path}", self.settings.api_url.trim_end_matches('/'));
        let mut request = if method == Method::GET {
            let separator = if path.contains('?') { '&' } else { '?' };
            let url = if encoded.is_empty() { url } else { format!("{url}{separator}{encoded}") };
            self.http.get(url)
        } else {
            self.http
                .request(method, url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(encoded)
        };
        request = request.bearer_auth(&self.settings.secret_key).header("stripe-version", API_VERSION);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response =
            request.send().await.map_err(|error| unavailable(path, &format!("unreachable: {error}")))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let error = &body["error"];
        let detail = format!(
            "{status} {} {}: {}",
            error["type"].as_str().unwrap_or("?"),
            error["code"].as_str().unwrap_or(""),
            error["message"].as_str().unwrap_or("")
        );
        // 409: the same idempotency key is in flight; 429: rate limited; 5xx: Stripe's side.
        if status == StatusCode::CONFLICT
            || status == StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error()
        {
            return Err(unavailable(path, &detail));
        }
        tracing::warn!(path, %detail, "Stripe refused a call");
        Err(refused(&format!("the payment provider refused the request ({status})")))
    }

    /// The session, with what paid it expanded down to the balance transaction.
    async fn retrieve_session(&self, session_id: &str) -> ApiResult<Value> {
        let expand = [("expand[]".to_owned(), "payment_intent.latest_charge.balance_transaction".to_owned())];
        self.call(Method::GET, &format!("/v1/checkout/sessions/{}", urlencode(session_id)), &expand, None)
            .await
    }

    /// Every refund of a payment, as events of their own.
    async fn payment_refunds(&self, payment_id: &str) -> ApiResult<Vec<ProviderEvent>> {
        let query =
            [("payment_intent".to_owned(), payment_id.to_owned()), ("limit".to_owned(), "100".to_owned())];
        let list = self.call(Method::GET, "/v1/refunds", &query, None).await?;
        let refunds = list["data"].as_array().cloned().unwrap_or_default();
        refunds.iter().map(read_refund).collect()
    }
}

impl PaymentProvider for StripeProvider {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn create_checkout<'a>(&'a self, request: &'a CheckoutRequest) -> BoxFuture<'a, ApiResult<Checkout>> {
        Box::pin(async move {
            let now_s = crate::db::now_micros() / 1_000_000;
            let expires_at =
                request.expires_at.clamp(now_s + SESSION_LIFETIME_MIN_S, now_s + SESSION_LIFETIME_MAX_S);
            let pair = |key: &str, value: String| (key.to_owned(), value);
            let form = vec![
                pair("mode", "payment".to_owned()),
                pair("line_items[0][quantity]", "1".to_owned()),
                pair(
                    "line_items[0][price_data][currency]",
                    request.amount.currency.code().to_ascii_lowercase(),
                ),
                pair("line_items[0][price_data][unit_amount]", to_minor(request.amount)?.to_string()),
                pair("line_items[0][price_data][product_data][name]", request.description.clone()),
                pair("client_reference_id", request.reference.clone()),
                pair(&format!("metadata[{ORDER_METADATA}]"), request.reference.clone()),
                pair(&format!("payment_intent_data[metadata][{ORDER_METADATA}]"), request.reference.clone()),
                pair("success_url", fill_order(&self.success_url, &request.reference)),
                pair("cancel_url", fill_order(&self.cancel_url, &request.reference)),
                pair("expires_at", expires_at.to_string()),
            ];
            let session = self
                .call(Method::POST, "/v1/checkout/sessions", &form, Some(&request.idempotency_key))
                .await?;
            let (Some(id), Some(url)) = (session["id"].as_str(), session["url"].as_str()) else {
                return Err(anyhow::anyhow!("Stripe answered a session without an id or url").into());
            };
            Ok(Checkout { id: id.to_owned(), checkout_url: url.to_owned() })
        })
    }

    fn refund<'a>(&'a self, call: &'a RefundCall) -> BoxFuture<'a, ApiResult<RefundAccepted>> {
        Box::pin(async move {
            let form = vec![
                ("payment_intent".to_owned(), call.payment_id.clone()),
                ("amount".to_owned(), to_minor(call.amount)?.to_string()),
                (format!("metadata[{REFUND_METADATA}]"), call.idempotency_key.clone()),
            ];
            let key = format!("refund-{}", call.idempotency_key);
            let refund = self.call(Method::POST, "/v1/refunds", &form, Some(&key)).await?;
            let id = refund["id"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("Stripe answered a refund without an id"))?;
            Ok(RefundAccepted { id: id.to_owned() })
        })
    }

    fn verify_webhook(&self, headers: &HeaderMap, body: &[u8], now_s: i64) -> ApiResult<VerifiedEvent> {
        let secrets: Vec<&[u8]> = self.settings.webhook_secrets.iter().map(String::as_bytes).collect();
        verify_signature(&secrets, SIGNATURE_HEADER, headers, body, now_s, self.tolerance)?;
        read_event(&crate::extract::parse_json::<Value>(body)?)
    }

    fn events_since<'a>(&'a self, cursor: Option<&'a str>) -> BoxFuture<'a, ApiResult<EventPage>> {
        Box::pin(async move {
            // Stripe lists newest first; `ending_before` gives the page just newer than the
            // cursor, which is read oldest first.
            let mut query = vec![("limit".to_owned(), "100".to_owned())];
            query.extend(EVENT_TYPES.iter().map(|kind| ("types[]".to_owned(), (*kind).to_owned())));
            if let Some(cursor) = cursor {
                query.push(("ending_before".to_owned(), cursor.to_owned()));
            }
            let list = self.call(Method::GET, "/v1/events", &query, None).await?;
            let mut events = list["data"].as_array().cloned().unwrap_or_default();
            events.reverse();
            let next_cursor = events.last().and_then(|event| event["id"].as_str()).map(str::to_owned);
            Ok(EventPage { events: events.iter().map(read_event).collect(), next_cursor })
        })
    }

    fn session_payment<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, ApiResult<Option<PaymentReport>>> {
        Box::pin(async move {
            let session = self.retrieve_session(session_id).await?;
            if session["payment_status"].as_str() != Some("paid") {
                return Ok(None);
            }
            session_report(&session).map(Some)
        })
    }

    fn close_checkout<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let path = format!("/v1/checkout/sessions/{}/expire", urlencode(session_id));
            match self.call(Method::POST, &path, &[], None).await {
                // Stripe refuses (400) to expire a session that is complete or expired already.
                Err(error) if error.status() == StatusCode::UNPROCESSABLE_ENTITY => Ok(()),
                other => other.map(|_| ()),
            }
        })
    }

    fn resolve<'a>(&'a self, event: ProviderEvent) -> BoxFuture<'a, ApiResult<Vec<ProviderEvent>>> {
        Box::pin(async move {
            match event {
                ProviderEvent::SessionPaid { session_id } => paid_session(self, &session_id).await,
                ProviderEvent::PaymentRefunded { payment_id } => self.payment_refunds(&payment_id).await,
                other => Ok(vec![other]),
            }
        })
    }
}

/// `{ORDER_ID}` in a success or cancel URL becomes the order's id; Stripe fills its own
/// `{CHECKOUT_SESSION_ID}`.
fn fill_order(url: &str, order_id: &str) -> String {
    url.replace("{ORDER_ID}", order_id)
}

/// Form-encodes pairs, in order, brackets and all (`line_items[0][quantity]=1`).
fn form_encode(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(key, value)| format!("{}={}", urlencode(key), urlencode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The decimal places Stripe counts a currency's amounts in: ISO 4217's for every currency the
/// store accepts (`store_api::money`; Stripe's exceptions, such as ISK, are not among them).
fn stripe_exponent(currency: MoneyCurrency) -> u32 {
    currency.minor_units()
}

/// An amount in Stripe's integer minor units.
fn to_minor(money: Money) -> ApiResult<i64> {
    let scaled = money.amount * Decimal::from(10_i64.pow(stripe_exponent(money.currency)));
    if scaled.fract() != Decimal::ZERO {
        return Err(ApiError::invalid(
            "amount",
            format!("{money} is not a whole number of {} minor units", money.currency),
        ));
    }
    i64::try_from(scaled).map_err(|error| ApiError::invalid("amount", error.to_string()))
}

fn from_minor(currency: MoneyCurrency, minor: i64) -> Money {
    Money { currency, amount: Decimal::new(minor, stripe_exponent(currency)) }
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::invalid(field, format!("the Stripe object has no valid `{field}`: {message}"))
}

fn text<'v>(object: &'v Value, field: &str) -> ApiResult<&'v str> {
    object[field].as_str().ok_or_else(|| invalid(field, "missing"))
}

fn integer(object: &Value, field: &str) -> ApiResult<i64> {
    object[field].as_i64().ok_or_else(|| invalid(field, "missing"))
}

fn currency(object: &Value, field: &str) -> ApiResult<MoneyCurrency> {
    MoneyCurrency::parse(&text(object, field)?.to_ascii_uppercase())
        .map_err(|error| invalid(field, &error.to_string()))
}

/// An expandable field's id, whether Stripe sent the id or the object.
fn id_of(value: &Value) -> Option<&str> {
    value.as_str().or_else(|| value["id"].as_str())
}

/// What paid a session retrieved with its payment expanded.
fn session_report(session: &Value) -> ApiResult<PaymentReport> {
    let charged = currency(session, "currency")?;
    let amount = from_minor(charged, integer(session, "amount_total")?);
    let intent = &session["payment_intent"];
    let payment_id = id_of(intent).ok_or_else(|| invalid("payment_intent", "missing"))?.to_owned();
    let transaction = &intent["latest_charge"]["balance_transaction"];
    if !transaction.is_object() {
        // Stripe writes the balance transaction with the charge; until then the fee is unknown.
        return Err(not_confirmed(&format!("the fee of payment {payment_id} is not known yet")));
    }
    Ok(PaymentReport {
        session_id: text(session, "id")?.to_owned(),
        payment_id,
        reference: session["client_reference_id"]
            .as_str()
            .or_else(|| session["metadata"][ORDER_METADATA].as_str())
            .unwrap_or_default()
            .to_owned(),
        amount,
        fee: fee_in(charged, transaction)?,
    })
}

/// A balance transaction's fee in the charge's currency: as it is when Stripe settles in that
/// currency, else converted back at the transaction's `exchange_rate` (settled = charged x rate)
/// and rounded to the charge currency's minor units.
fn fee_in(charged: MoneyCurrency, transaction: &Value) -> ApiResult<Money> {
    let settled = currency(transaction, "currency")?;
    let fee = from_minor(settled, integer(transaction, "fee")?);
    if settled == charged {
        return Ok(fee);
    }
    let rate = transaction["exchange_rate"]
        .as_f64()
        .and_then(|rate| Decimal::try_from(rate).ok())
        .filter(|rate| *rate > Decimal::ZERO)
        .ok_or_else(|| invalid("exchange_rate", "missing for a transaction in another currency"))?;
    let amount = (fee.amount / rate).round_dp_with_strategy(
        stripe_exponent(charged),
        rust_decimal::RoundingStrategy::MidpointAwayFromZero,
    );
    Ok(Money { currency: charged, amount })
}

/// A refund object as the event it is: ours (named by its metadata) or one made at Stripe.
fn read_refund(refund: &Value) -> ApiResult<ProviderEvent> {
    let ours = refund["metadata"][REFUND_METADATA].as_str().and_then(|id| Uuid::parse_str(id).ok());
    let provider_refund_id = text(refund, "id")?.to_owned();
    Ok(match (refund["status"].as_str(), ours) {
        (Some("succeeded"), Some(refund_id)) => {
            ProviderEvent::RefundSucceeded { refund_id, provider_refund_id }
        }
        (Some("succeeded"), None) => ProviderEvent::RefundedAtProvider {
            payment_id: id_of(&refund["payment_intent"])
                .ok_or_else(|| invalid("payment_intent", "missing"))?
                .to_owned(),
            provider_refund_id,
            amount: from_minor(currency(refund, "currency")?, integer(refund, "amount")?),
        },
        (Some("failed" | "canceled"), Some(refund_id)) => ProviderEvent::RefundFailed {
            refund_id,
            reason: refund["failure_reason"].as_str().unwrap_or("failed at the provider").to_owned(),
        },
        _ => ProviderEvent::Ignored,
    })
}

/// Reads a Stripe event, from a webhook or the Events API.
fn read_event(envelope: &Value) -> ApiResult<VerifiedEvent> {
    let id = text(envelope, "id")?.to_owned();
    let event_type = text(envelope, "type")?.to_owned();
    let object = &envelope["data"]["object"];
    let payment_of = |object: &Value| {
        id_of(&object["payment_intent"])
            .map(str::to_owned)
            .ok_or_else(|| invalid("payment_intent", "missing"))
    };
    let event = match event_type.as_str() {
        "checkout.session.completed" if object["payment_status"].as_str() == Some("paid") => {
            ProviderEvent::SessionPaid { session_id: text(object, "id")?.to_owned() }
        }
        "checkout.session.async_payment_succeeded" => {
            ProviderEvent::SessionPaid { session_id: text(object, "id")?.to_owned() }
        }
        "checkout.session.async_payment_failed" => ProviderEvent::PaymentFailed {
            session_id: text(object, "id")?.to_owned(),
            reason: "async_payment_failed".to_owned(),
        },
        "charge.refunded" => ProviderEvent::PaymentRefunded { payment_id: payment_of(object)? },
        "refund.created" | "refund.updated" | "refund.failed" => read_refund(object)?,
        "charge.dispute.created" => ProviderEvent::DisputeOpened { payment_id: payment_of(object)? },
        "charge.dispute.closed" => match object["status"].as_str() {
            Some("lost") => ProviderEvent::PaymentDisputed {
                payment_id: payment_of(object)?,
                amount: Some(from_minor(currency(object, "currency")?, integer(object, "amount")?)),
            },
            Some("won" | "warning_closed") => ProviderEvent::DisputeWon { payment_id: payment_of(object)? },
            _ => ProviderEvent::Ignored,
        },
        _ => ProviderEvent::Ignored,
    };
    Ok(VerifiedEvent { id, event_type, event })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> MoneyCurrency {
        MoneyCurrency::parse("USD").unwrap()
    }

    #[test]
    fn amounts_are_sent_in_stripe_minor_units_and_fractions_of_them_refused() {
        let money = |code: &str, amount: &str| Money {
            currency: MoneyCurrency::parse(code).unwrap(),
            amount: store_api::money::parse_amount(amount).unwrap(),
        };
        assert_eq!(to_minor(money("USD", "0.99")).unwrap(), 99);
        assert_eq!(to_minor(money("JPY", "120")).unwrap(), 120);
        assert_eq!(to_minor(money("KRW", "1500")).unwrap(), 1_500);
        assert_eq!(to_minor(money("USD", "0.005")).unwrap_err().code(), store_api::ErrorCode::InvalidRequest);
        assert_eq!(from_minor(usd(), 199), money("USD", "1.99"));
    }

    #[test]
    fn the_fee_is_the_balance_transaction_s_converted_back_when_settled_elsewhere() {
        let same = serde_json::json!({"currency": "usd", "fee": 59, "exchange_rate": null});
        assert_eq!(fee_in(usd(), &same).unwrap(), from_minor(usd(), 59));
        // Charged in EUR, settled in USD at 1.10 USD per EUR: a USD 0.66 fee is EUR 0.60.
        let eur = MoneyCurrency::parse("EUR").unwrap();
        let other = serde_json::json!({"currency": "usd", "fee": 66, "exchange_rate": 1.1});
        assert_eq!(fee_in(eur, &other).unwrap(), from_minor(eur, 60));
        let no_rate = serde_json::json!({"currency": "usd", "fee": 66});
        assert!(fee_in(eur, &no_rate).is_err());
    }

    #[test]
    fn events_name_what_they_need_and_unknown_ones_are_ignored() {
        let event = |kind: &str, object: Value| {
            read_event(&serde_json::json!({"id": "evt_1", "type": kind, "data": {"object": object}}))
                .unwrap()
                .event
        };
        assert_eq!(
            event("checkout.session.completed", serde_json::json!({"id": "cs_1", "payment_status": "paid"})),
            ProviderEvent::SessionPaid { session_id: "cs_1".into() }
        );
        // Paid later (a bank debit): the async events decide.
        assert_eq!(
            event(
                "checkout.session.completed",
                serde_json::json!({"id": "cs_1", "payment_status": "unpaid"})
            ),
            ProviderEvent::Ignored
        );
        let refund_id = Uuid::now_v7();
        assert_eq!(
            event(
                "refund.updated",
                serde_json::json!({"id": "re_1", "status": "succeeded", "amount": 50, "currency": "usd",
                    "payment_intent": "pi_1", "metadata": {"coinslot_refund": refund_id.to_string()}})
            ),
            ProviderEvent::RefundSucceeded { refund_id, provider_refund_id: "re_1".into() }
        );
        assert_eq!(
            event(
                "refund.created",
                serde_json::json!({"id": "re_2", "status": "succeeded", "amount": 50, "currency": "usd",
                    "payment_intent": "pi_1", "metadata": {}})
            ),
            ProviderEvent::RefundedAtProvider {
                payment_id: "pi_1".into(),
                provider_refund_id: "re_2".into(),
                amount: from_minor(usd(), 50)
            }
        );
        assert_eq!(
            event(
                "charge.dispute.closed",
                serde_json::json!({"status": "lost", "amount": 99, "currency": "usd", "payment_intent": "pi_1"})
            ),
            ProviderEvent::PaymentDisputed { payment_id: "pi_1".into(), amount: Some(from_minor(usd(), 99)) }
        );
        assert_eq!(
            event("charge.dispute.closed", serde_json::json!({"status": "won", "payment_intent": "pi_1"})),
            ProviderEvent::DisputeWon { payment_id: "pi_1".into() }
        );
        assert_eq!(event("customer.created", serde_json::json!({})), ProviderEvent::Ignored);
    }
}
