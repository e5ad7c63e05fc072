//! A local stand-in for Stripe's API, so the store's Stripe adapter runs its real code without
//! the internet. It implements what the adapter calls, as Stripe documents it: form-encoded
//! requests with bracketed keys, `Authorization: Bearer sk_…`, `Idempotency-Key` (the same key
//! with other parameters is an `idempotency_error`), JSON objects with Stripe's field names,
//! `{"error": {"type", "code", "message", "param"}}` errors, lists newest first with
//! `ending_before`, `expand[]`, and webhooks signed `Stripe-Signature: t=…,v1=…` (HMAC-SHA256 of
//! `t.payload`, one `v1` per signing secret during a rotation).
//!
//! What a customer does on Stripe's hosted page, and what Stripe does later (a bank debit
//! settling, a dispute, a refund in the dashboard), are methods of [`StripeStandIn`]; each
//! records its events and delivers them to the webhook endpoint unless deliveries are off
//! (a lost webhook), returning the endpoint's answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// The secret key the stand-in accepts.
pub const SECRET_KEY: &str = "sk_test_coinslot_standin";
/// The webhook endpoint's signing secret.
pub const WEBHOOK_SECRET: &str = "whsec_coinslot_standin";
/// Stripe's dispute fee in the stand-in, in cents.
pub const DISPUTE_FEE: i64 = 1_500;

/// How a balance transaction settles a charge.
#[derive(Debug, Clone)]
pub struct Settlement {
    /// The account's settlement currency (lower case), or `None` to settle in the charge's.
    pub currency: Option<String>,
    /// Settled = charged x rate, the rate in millionths (900000: 0.9).
    pub rate_millionths: i64,
}

#[derive(Debug, Default)]
struct Inner {
    webhook_url: Option<String>,
    signing_secrets: Vec<String>,
    delivering: bool,
    settlement: Option<Settlement>,
    fail_refunds: bool,
    next_id: u64,
    sessions: HashMap<String, Value>,
    intents: HashMap<String, Value>,
    charges: HashMap<String, Value>,
    transactions: HashMap<String, Value>,
    refunds: Vec<Value>,
    disputes: HashMap<String, Value>,
    events: Vec<Value>,
    idempotency: HashMap<String, (Vec<(String, String)>, Value)>,
    requests: Vec<Received>,
}

impl Inner {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_standin{:08}", self.next_id)
    }

    fn now() -> i64 {
        store_server::db::now_micros() / 1_000_000
    }

    /// Records an event (a snapshot of `object`) and returns it.
    fn event(&mut self, kind: &str, object: Value) -> Value {
        let event = json!({
            "id": self.id("evt"), "object": "event", "api_version": "2024-06-20", "created": Self::now(),
            "livemode": false, "pending_webhooks": 1, "request": {"id": null, "idempotency_key": null},
            "type": kind, "data": {"object": object},
        });
        self.events.push(event.clone());
        event
    }
}

/// The stand-in, serving on a loopback port until dropped.
#[derive(Debug, Clone)]
pub struct StripeStandIn {
    base_url: String,
    inner: Arc<Mutex<Inner>>,
    http: reqwest::Client,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Drop for StripeStandIn {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

type Shared = Arc<Mutex<Inner>>;

/// A request the stand-in received: method, path, form or query, headers.
pub type Received = (String, String, Vec<(String, String)>, HeaderMap);

/// Stripe's error answer: `{"error": {"type", "code", "message", "param"}}` with its status.
#[derive(Debug)]
struct StripeError(StatusCode, Value);

impl IntoResponse for StripeError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

fn lock(inner: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

fn stripe_error(
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    message: &str,
    param: Option<&str>,
) -> StripeError {
    StripeError(status, json!({"error": {"type": kind, "code": code, "message": message, "param": param}}))
}

fn invalid(message: &str, param: &str) -> StripeError {
    stripe_error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        Some("parameter_invalid"),
        message,
        Some(param),
    )
}

fn authorized(headers: &HeaderMap) -> Result<(), StripeError> {
    let expected = format!("Bearer {SECRET_KEY}");
    if headers.get("authorization").and_then(|value| value.to_str().ok()) == Some(expected.as_str()) {
        Ok(())
    } else {
        Err(stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            "Invalid API Key provided",
            None,
        ))
    }
}

fn field<'f>(form: &'f [(String, String)], key: &str) -> Option<&'f str> {
    form.iter().find(|(name, _)| name == key).map(|(_, value)| value.as_str())
}

fn required<'f>(form: &'f [(String, String)], key: &str) -> Result<&'f str, StripeError> {
    field(form, key).ok_or_else(|| {
        stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("parameter_missing"),
            &format!("Missing required param: {key}."),
            Some(key),
        )
    })
}

/// `metadata[k]=v` pairs under `prefix` as an object.
fn metadata(form: &[(String, String)], prefix: &str) -> Value {
    let mut map = serde_json::Map::new();
    for (key, value) in form {
        if let Some(name) = key
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('['))
            .and_then(|rest| rest.strip_suffix(']'))
        {
            map.insert(name.to_owned(), Value::String(value.clone()));
        }
    }
    Value::Object(map)
}

/// Replays an idempotent request's answer; refuses the key reused with other parameters.
fn replay(inner: &Inner, headers: &HeaderMap, form: &[(String, String)]) -> Option<Response> {
    let key = headers.get("idempotency-key")?.to_str().ok()?;
    let (sent, answer) = inner.idempotency.get(key)?;
    if sent != form {
        return Some(
            stripe_error(
                StatusCode::BAD_REQUEST,
                "idempotency_error",
                None,
                "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                None,
            )
            .into_response(),
        );
    }
    Some(Json(answer.clone()).into_response())
}

fn remember(inner: &mut Inner, headers: &HeaderMap, form: &[(String, String)], answer: &Value) {
    if let Some(key) = headers.get("idempotency-key").and_then(|value| value.to_str().ok()) {
        inner.idempotency.insert(key.to_owned(), (form.to_vec(), answer.clone()));
    }
}

/// Records a request (what a test inspects) and checks its API key, as Stripe does first.
fn admit(
    inner: &Shared,
    method: &str,
    path: &str,
    form: &[(String, String)],
    headers: &HeaderMap,
) -> Result<(), StripeError> {
    lock(inner).requests.push((method.to_owned(), path.to_owned(), form.to_vec(), headers.clone()));
    authorized(headers)
}

async fn create_session(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Err(refusal) = admit(&inner, "POST", "/v1/checkout/sessions", &form, &headers) {
        return refusal.into_response();
    }
    let mut inner = lock(&inner);
    if let Some(answer) = replay(&inner, &headers, &form) {
        return answer;
    }
    let parsed = (|| {
        if required(&form, "mode")? != "payment" {
            return Err(invalid("This stand-in implements mode=payment only.", "mode"));
        }
        let currency = required(&form, "line_items[0][price_data][currency]")?.to_owned();
        let unit: i64 = required(&form, "line_items[0][price_data][unit_amount]")?
            .parse()
            .map_err(|_| invalid("Invalid integer", "line_items[0][price_data][unit_amount]"))?;
        let quantity: i64 = required(&form, "line_items[0][quantity]")?
            .parse()
            .map_err(|_| invalid("Invalid integer", "line_items[0][quantity]"))?;
        required(&form, "line_items[0][price_data][product_data][name]")?;
        let success_url = required(&form, "success_url")?.to_owned();
        let cancel_url = required(&form, "cancel_url")?.to_owned();
        let now = Inner::now();
        let expires_at = match field(&form, "expires_at") {
            Some(text) => text.parse::<i64>().map_err(|_| invalid("Invalid integer", "expires_at"))?,
            None => now + 24 * 3_600,
        };
        if expires_at < now + 30 * 60 || expires_at > now + 24 * 3_600 {
            return Err(invalid(
                "The `expires_at` timestamp must be between 30 minutes and 24 hours after the Checkout Session is created.",
                "expires_at",
            ));
        }
        Ok((currency, unit * quantity, success_url, cancel_url, expires_at))
    })();
    let (currency, amount, success_url, cancel_url, expires_at) = match parsed {
        Ok(parsed) => parsed,
        Err(refusal) => return refusal.into_response(),
    };
    let id = inner.id("cs_test");
    let session = json!({
        "id": id, "object": "checkout.session", "mode": "payment", "status": "open", "payment_status": "unpaid",
        "amount_total": amount, "amount_subtotal": amount, "currency": currency,
        "client_reference_id": field(&form, "client_reference_id"), "metadata": metadata(&form, "metadata"),
        "payment_intent": null, "url": format!("https://checkout.stripe.com/c/pay/{id}"),
        "success_url": success_url, "cancel_url": cancel_url, "expires_at": expires_at, "created": Inner::now(),
        "livemode": false, "coinslot_standin_intent_metadata": metadata(&form, "payment_intent_data[metadata]"),
    });
    inner.sessions.insert(id, session.clone());
    remember(&mut inner, &headers, &form, &session);
    Json(public(&session)).into_response()
}

/// An object as Stripe shows it: without the stand-in's own bookkeeping fields.
fn public(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.retain(|key, _| !key.starts_with("coinslot_standin"));
    }
    object
}

fn expanded_session(inner: &Inner, session: &Value) -> Value {
    let mut session = public(session);
    if let Some(intent) = session["payment_intent"].as_str().and_then(|id| inner.intents.get(id)) {
        let mut intent = intent.clone();
        if let Some(charge) = intent["latest_charge"].as_str().and_then(|id| inner.charges.get(id)) {
            let mut charge = charge.clone();
            if let Some(transaction) =
                charge["balance_transaction"].as_str().and_then(|id| inner.transactions.get(id))
            {
                charge["balance_transaction"] = transaction.clone();
            }
            intent["latest_charge"] = charge;
        }
        session["payment_intent"] = intent;
    }
    session
}

async fn retrieve_session(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    if let Err(refusal) = admit(&inner, "GET", &format!("/v1/checkout/sessions/{id}"), &query, &headers) {
        return refusal.into_response();
    }
    let inner = lock(&inner);
    let Some(session) = inner.sessions.get(&id) else {
        return stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("resource_missing"),
            &format!("No such checkout.session: '{id}'"),
            Some("session"),
        )
        .into_response();
    };
    let expand = query
        .iter()
        .any(|(key, value)| key == "expand[]" && value == "payment_intent.latest_charge.balance_transaction");
    Json(if expand { expanded_session(&inner, session) } else { public(session) }).into_response()
}

async fn expire_session(State(inner): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(refusal) = admit(&inner, "POST", &format!("/v1/checkout/sessions/{id}/expire"), &[], &headers)
    {
        return refusal.into_response();
    }
    let mut inner = lock(&inner);
    let Some(session) = inner.sessions.get_mut(&id) else {
        return stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("resource_missing"),
            "No such checkout.session",
            None,
        )
        .into_response();
    };
    if session["status"] != "open" {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "Only Checkout Sessions with a status in [\"open\"] can be expired.",
            None,
        )
        .into_response();
    }
    session["status"] = json!("expired");
    let snapshot = public(session);
    inner.event("checkout.session.expired", snapshot.clone());
    Json(snapshot).into_response()
}

async fn create_refund(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Err(refusal) = admit(&inner, "POST", "/v1/refunds", &form, &headers) {
        return refusal.into_response();
    }
    let (answer, events) = {
        let mut inner = lock(&inner);
        if let Some(answer) = replay(&inner, &headers, &form) {
            return answer;
        }
        let Some(intent_id) = field(&form, "payment_intent").map(str::to_owned) else {
            return invalid("Missing required param: payment_intent.", "payment_intent").into_response();
        };
        let amount = field(&form, "amount").map(str::parse::<i64>);
        match refund(&mut inner, &intent_id, amount.transpose().ok().flatten(), metadata(&form, "metadata")) {
            Ok(result) => {
                remember(&mut inner, &headers, &form, &result.0);
                result
            }
            Err(refusal) => return refusal.into_response(),
        }
    };
    // Stripe sends a refund's events after answering, and retries what is not acknowledged.
    tokio::spawn(deliver_in_background(inner.clone(), events));
    Json(answer).into_response()
}

/// Refunds `amount` (all that is left when `None`) of a payment: the refund and its events.
fn refund(
    inner: &mut Inner,
    intent_id: &str,
    amount: Option<i64>,
    metadata: Value,
) -> Result<(Value, Vec<Value>), StripeError> {
    let Some(intent) = inner.intents.get(intent_id).cloned() else {
        return Err(stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("resource_missing"),
            &format!("No such payment_intent: '{intent_id}'"),
            Some("payment_intent"),
        ));
    };
    let charge_id = intent["latest_charge"].as_str().unwrap_or_default().to_owned();
    let charge = inner.charges.get(&charge_id).cloned().unwrap_or_default();
    if charge["disputed"] == json!(true) {
        return Err(stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("charge_disputed"),
            "This charge has been disputed and cannot be refunded.",
            None,
        ));
    }
    let left = charge["amount"].as_i64().unwrap_or(0) - charge["amount_refunded"].as_i64().unwrap_or(0);
    let amount = amount.unwrap_or(left);
    if left <= 0 {
        return Err(stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("charge_already_refunded"),
            "Charge has already been refunded.",
            None,
        ));
    }
    if amount <= 0 || amount > left {
        return Err(invalid("Refund amount is greater than unrefunded amount on charge.", "amount"));
    }
    let failed = inner.fail_refunds;
    let id = inner.id("re");
    let refund = json!({
        "id": id, "object": "refund", "amount": amount, "currency": charge["currency"], "charge": charge_id,
        "payment_intent": intent_id, "metadata": metadata, "created": Inner::now(),
        "status": if failed { "failed" } else { "succeeded" },
        "failure_reason": if failed { json!("expired_or_canceled_card") } else { Value::Null },
        "balance_transaction": null, "reason": null,
    });
    inner.refunds.push(refund.clone());
    let mut events = Vec::new();
    if failed {
        events.push(inner.event("refund.failed", refund.clone()));
    } else {
        let charge = inner.charges.get_mut(&charge_id).expect("the charge");
        let refunded = charge["amount_refunded"].as_i64().unwrap_or(0) + amount;
        charge["amount_refunded"] = json!(refunded);
        charge["refunded"] = json!(refunded == charge["amount"].as_i64().unwrap_or(0));
        let charge = charge.clone();
        events.push(inner.event("refund.created", refund.clone()));
        events.push(inner.event("charge.refunded", charge));
    }
    Ok((refund, events))
}

async fn list_refunds(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    if let Err(refusal) = admit(&inner, "GET", "/v1/refunds", &query, &headers) {
        return refusal.into_response();
    }
    let inner = lock(&inner);
    let intent = field(&query, "payment_intent");
    let data: Vec<Value> = inner
        .refunds
        .iter()
        .rev()
        .filter(|refund| intent.is_none_or(|id| refund["payment_intent"] == id))
        .cloned()
        .collect();
    Json(json!({"object": "list", "url": "/v1/refunds", "has_more": false, "data": data})).into_response()
}

async fn list_events(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    if let Err(refusal) = admit(&inner, "GET", "/v1/events", &query, &headers) {
        return refusal.into_response();
    }
    let inner = lock(&inner);
    let types: Vec<&str> =
        query.iter().filter(|(key, _)| key == "types[]").map(|(_, value)| value.as_str()).collect();
    let limit =
        field(&query, "limit").and_then(|text| text.parse::<usize>().ok()).unwrap_or(10).clamp(1, 100);
    let matching: Vec<&Value> = inner
        .events
        .iter()
        .filter(|event| types.is_empty() || types.iter().any(|kind| event["type"] == *kind))
        .collect();
    // Oldest first here; Stripe lists newest first, `ending_before` = the page just newer.
    let (page, has_more) = match field(&query, "ending_before") {
        Some(cursor) => {
            let Some(position) = matching.iter().position(|event| event["id"] == cursor) else {
                return stripe_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some("resource_missing"),
                    &format!("No such event: '{cursor}'"),
                    Some("ending_before"),
                )
                .into_response();
            };
            let newer = &matching[position + 1..];
            (newer[..newer.len().min(limit)].to_vec(), newer.len() > limit)
        }
        None => {
            let start = matching.len().saturating_sub(limit);
            (matching[start..].to_vec(), start > 0)
        }
    };
    let data: Vec<Value> = page.into_iter().rev().cloned().collect();
    Json(json!({"object": "list", "url": "/v1/events", "has_more": has_more, "data": data})).into_response()
}

/// A `Stripe-Signature` header for `payload` signed with `secret` at `timestamp`.
#[must_use]
pub fn signature_header(secret: &str, timestamp: i64, payload: &str) -> String {
    format!("t={timestamp},v1={}", sign(secret, timestamp, payload))
}

/// HMAC-SHA256 of `t.payload`, hex.
fn sign(secret: &str, timestamp: i64, payload: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(format!("{timestamp}.{payload}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Signs and posts one event to the webhook endpoint; its status and body.
async fn post_event(
    http: &reqwest::Client,
    url: &str,
    event: &Value,
    delivery: &Delivery,
) -> (StatusCode, Value) {
    let payload = event.to_string();
    let timestamp = Inner::now() + delivery.clock_offset_s;
    let mut header = format!("t={timestamp}");
    for secret in &delivery.secrets {
        header.push_str(&format!(",v1={}", sign(secret, timestamp, &payload)));
    }
    let response = http
        .post(url)
        .header("content-type", "application/json; charset=utf-8")
        .header("stripe-signature", header)
        .body(payload)
        .send()
        .await
        .expect("the store answers webhooks");
    let status = StatusCode::from_u16(response.status().as_u16()).expect("a status");
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Delivers events in order when deliveries are on, each retried (20 times, 250 ms apart) until
/// the endpoint acknowledges it, as Stripe retries (over days; here over seconds).
async fn deliver_in_background(inner: Shared, events: Vec<Value>) {
    let http = reqwest::Client::new();
    for event in events {
        for _ in 0..20 {
            let (url, delivering, secrets) = {
                let inner = lock(&inner);
                (inner.webhook_url.clone(), inner.delivering, inner.signing_secrets.clone())
            };
            let (Some(url), true) = (url, delivering) else { break };
            let (status, _) = post_event(&http, &url, &event, &Delivery { clock_offset_s: 0, secrets }).await;
            if status.is_success() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
}

/// How a webhook is delivered.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Seconds added to now in `t`.
    pub clock_offset_s: i64,
    /// The secrets to sign with, one `v1` each.
    pub secrets: Vec<String>,
}

impl StripeStandIn {
    /// Starts the stand-in on a free loopback port.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            signing_secrets: vec![WEBHOOK_SECRET.to_owned()],
            delivering: true,
            ..Inner::default()
        }));
        let router = Router::new()
            .route("/v1/checkout/sessions", post(create_session))
            .route("/v1/checkout/sessions/{id}", get(retrieve_session))
            .route("/v1/checkout/sessions/{id}/expire", post(expire_session))
            .route("/v1/refunds", post(create_refund).get(list_refunds))
            .route("/v1/events", get(list_events))
            .with_state(inner.clone());
        let (base_url, task) = crate::serve_on_loopback(router).await;
        let http =
            reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().expect("a client");
        Self { base_url, inner, http, task: Arc::new(task) }
    }

    /// Where the API is (`--stripe-api-url`).
    #[must_use]
    pub fn api_url(&self) -> &str {
        &self.base_url
    }

    /// The store's settings for this stand-in.
    #[must_use]
    pub fn settings(&self) -> store_server::payments::stripe::StripeSettings {
        store_server::payments::stripe::StripeSettings {
            api_url: self.base_url.clone(),
            secret_key: SECRET_KEY.to_owned(),
            webhook_secrets: vec![WEBHOOK_SECRET.to_owned()],
            success_url: None,
            cancel_url: None,
        }
    }

    /// Where webhooks go (the store's `/v1/webhooks/stripe`).
    pub fn set_webhook_url(&self, url: &str) {
        lock(&self.inner).webhook_url = Some(url.to_owned());
    }

    /// Whether events are delivered as they happen (off: webhooks are lost).
    pub fn set_delivering(&self, delivering: bool) {
        lock(&self.inner).delivering = delivering;
    }

    /// How charges settle (another currency, at a rate).
    pub fn set_settlement(&self, settlement: Settlement) {
        lock(&self.inner).settlement = Some(settlement);
    }

    /// Whether refunds fail (an expired card).
    pub fn set_refunds_fail(&self, fail: bool) {
        lock(&self.inner).fail_refunds = fail;
    }

    /// The requests the stand-in received: method, path, form or query, headers.
    #[must_use]
    pub fn requests(&self) -> Vec<Received> {
        lock(&self.inner).requests.clone()
    }

    /// Every event so far, oldest first.
    #[must_use]
    pub fn events(&self) -> Vec<Value> {
        lock(&self.inner).events.clone()
    }

    /// A session as Stripe holds it.
    #[must_use]
    pub fn session(&self, id: &str) -> Value {
        lock(&self.inner).sessions.get(id).cloned().unwrap_or(Value::Null)
    }

    /// The session behind a checkout URL.
    #[must_use]
    pub fn session_of_url(&self, checkout_url: &str) -> String {
        checkout_url.rsplit('/').next().expect("a session id").to_owned()
    }

    /// Changes a field of a session before the customer pays (`amount_total`, `currency`,
    /// `client_reference_id`): what a payment that does not match its order looks like.
    pub fn set_session_field(&self, session_id: &str, field: &str, value: Value) {
        lock(&self.inner).sessions.get_mut(session_id).expect("the session")[field] = value;
    }

    /// The payment intent that paid a session.
    #[must_use]
    pub fn payment_of(&self, session_id: &str) -> String {
        self.session(session_id)["payment_intent"].as_str().expect("a paid session").to_owned()
    }

    /// Delivers `event` now with `delivery`; the endpoint's status and body.
    pub async fn deliver_with(&self, event: &Value, delivery: &Delivery) -> (StatusCode, Value) {
        let url = lock(&self.inner).webhook_url.clone().expect("a webhook URL");
        post_event(&self.http, &url, event, delivery).await
    }

    /// Delivers `event` as Stripe does, if deliveries are on; the endpoint's answer.
    pub async fn deliver(&self, event: &Value) -> Option<(StatusCode, Value)> {
        let (delivering, secrets) = {
            let inner = lock(&self.inner);
            (inner.delivering, inner.signing_secrets.clone())
        };
        if !delivering {
            return None;
        }
        Some(self.deliver_with(event, &Delivery { clock_offset_s: 0, secrets }).await)
    }

    async fn deliver_all(&self, events: Vec<Value>) -> Vec<(StatusCode, Value)> {
        let mut answers = Vec::new();
        for event in events {
            answers.extend(self.deliver(&event).await);
        }
        answers
    }

    /// The customer pays a session by card: the payment intent, charge and balance transaction
    /// (fee 2.9% + 30 cents, settled as set), and `checkout.session.completed`, delivered.
    pub async fn pay(&self, session_id: &str) -> Vec<(StatusCode, Value)> {
        let event = {
            let mut inner = lock(&self.inner);
            let session = inner.sessions.get(session_id).cloned().expect("the session");
            assert_eq!(session["status"], "open", "only an open session can be paid");
            settle(&mut inner, session_id, &session);
            let session = inner.sessions.get_mut(session_id).expect("the session");
            session["status"] = json!("complete");
            session["payment_status"] = json!("paid");
            let snapshot = public(session);
            inner.event("checkout.session.completed", snapshot)
        };
        self.deliver_all(vec![event]).await
    }

    /// The customer pays with a bank debit that settles later: the session completes unpaid.
    pub async fn pay_later(&self, session_id: &str) -> Vec<(StatusCode, Value)> {
        let event = {
            let mut inner = lock(&self.inner);
            let intent = inner.id("pi");
            let session = inner.sessions.get_mut(session_id).expect("the session");
            session["status"] = json!("complete");
            session["payment_status"] = json!("unpaid");
            session["payment_intent"] = json!(intent);
            let snapshot = public(session);
            inner.event("checkout.session.completed", snapshot)
        };
        self.deliver_all(vec![event]).await
    }

    /// The bank debit of a session paid later succeeds or fails.
    pub async fn settle_later(&self, session_id: &str, succeeded: bool) -> Vec<(StatusCode, Value)> {
        let event = {
            let mut inner = lock(&self.inner);
            let session = inner.sessions.get(session_id).cloned().expect("the session");
            if succeeded {
                settle(&mut inner, session_id, &session);
                inner.sessions.get_mut(session_id).expect("the session")["payment_status"] = json!("paid");
            }
            let snapshot = public(&inner.sessions[session_id]);
            let kind = if succeeded {
                "checkout.session.async_payment_succeeded"
            } else {
                "checkout.session.async_payment_failed"
            };
            inner.event(kind, snapshot)
        };
        self.deliver_all(vec![event]).await
    }

    /// A refund made in Stripe's dashboard (no metadata of the store's), delivered.
    pub async fn refund_in_dashboard(
        &self,
        payment_intent: &str,
        amount: Option<i64>,
    ) -> Vec<(StatusCode, Value)> {
        let events = {
            let mut inner = lock(&self.inner);
            refund(&mut inner, payment_intent, amount, json!({})).map_err(|_| "refused").expect("a refund").1
        };
        self.deliver_all(events).await
    }

    /// The cardholder disputes a payment: `charge.dispute.created` (Stripe withdraws the amount
    /// and its dispute fee).
    pub async fn open_dispute(&self, payment_intent: &str) -> Vec<(StatusCode, Value)> {
        let event = {
            let mut inner = lock(&self.inner);
            let intent = inner.intents.get(payment_intent).cloned().expect("the payment");
            let charge_id = intent["latest_charge"].as_str().expect("a charge").to_owned();
            let charge = inner.charges.get_mut(&charge_id).expect("the charge");
            charge["disputed"] = json!(true);
            let (amount, currency) = (charge["amount"].clone(), charge["currency"].clone());
            let id = inner.id("dp");
            let withdrawal = inner.id("txn");
            let dispute = json!({
                "id": id, "object": "dispute", "amount": amount, "currency": currency, "charge": charge_id,
                "payment_intent": payment_intent, "reason": "fraudulent", "status": "needs_response",
                "created": Inner::now(), "is_charge_refundable": false, "metadata": {},
                "balance_transactions": [{"id": withdrawal, "object": "balance_transaction", "amount": -amount.as_i64().unwrap_or(0),
                    "currency": currency, "fee": DISPUTE_FEE, "net": -amount.as_i64().unwrap_or(0) - DISPUTE_FEE,
                    "type": "adjustment", "reporting_category": "dispute"}],
            });
            inner.disputes.insert(payment_intent.to_owned(), dispute.clone());
            inner.event("charge.dispute.created", dispute)
        };
        self.deliver_all(vec![event]).await
    }

    /// The dispute closes, won or lost: `charge.dispute.closed`.
    pub async fn close_dispute(&self, payment_intent: &str, won: bool) -> Vec<(StatusCode, Value)> {
        let event = {
            let mut inner = lock(&self.inner);
            let dispute = inner.disputes.get_mut(payment_intent).expect("the dispute");
            dispute["status"] = json!(if won { "won" } else { "lost" });
            let dispute = dispute.clone();
            inner.event("charge.dispute.closed", dispute)
        };
        self.deliver_all(vec![event]).await
    }
}

/// A payment of `session`: intent, charge and balance transaction.
fn settle(inner: &mut Inner, session_id: &str, session: &Value) {
    let amount = session["amount_total"].as_i64().expect("an amount");
    let currency = session["currency"].as_str().expect("a currency").to_owned();
    let intent_id = session["payment_intent"].as_str().map_or_else(|| inner.id("pi"), str::to_owned);
    let charge_id = inner.id("ch");
    let transaction_id = inner.id("txn");
    let (settled_currency, rate) = match &inner.settlement {
        Some(Settlement { currency: Some(other), rate_millionths }) => {
            (other.clone(), Some(*rate_millionths))
        }
        _ => (currency.clone(), None),
    };
    let settled_amount = rate.map_or(amount, |rate| (amount * rate + 500_000) / 1_000_000);
    // Stripe writes the rate as a JSON number.
    let rate: Value = rate.map_or(Value::Null, |rate| {
        serde_json::from_str(&format!("{}.{:06}", rate / 1_000_000, rate % 1_000_000)).expect("a number")
    });
    // Stripe's US card pricing: 2.9% + 30 cents (in the settlement currency).
    let fee = (settled_amount * 29 + 500) / 1_000 + 30;
    inner.transactions.insert(
        transaction_id.clone(),
        json!({"id": transaction_id, "object": "balance_transaction", "amount": settled_amount, "currency": settled_currency,
               "exchange_rate": rate, "fee": fee, "net": settled_amount - fee, "type": "charge", "source": charge_id,
               "status": "pending", "reporting_category": "charge"}),
    );
    inner.charges.insert(
        charge_id.clone(),
        json!({"id": charge_id, "object": "charge", "amount": amount, "amount_captured": amount, "amount_refunded": 0,
               "currency": currency, "paid": true, "refunded": false, "disputed": false, "payment_intent": intent_id,
               "balance_transaction": transaction_id, "status": "succeeded"}),
    );
    let intent_metadata = session["coinslot_standin_intent_metadata"].clone();
    inner.intents.insert(
        intent_id.clone(),
        json!({"id": intent_id, "object": "payment_intent", "amount": amount, "amount_received": amount, "currency": currency,
               "latest_charge": charge_id, "status": "succeeded", "metadata": intent_metadata}),
    );
    inner.sessions.get_mut(session_id).expect("the session")["payment_intent"] = json!(intent_id);
}
