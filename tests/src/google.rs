//! Google Play, served on loopback as its documented APIs behave: the OAuth 2.0 token endpoint
//! (JWT-bearer assertions verified with the service account's public key), the Android
//! Publisher API's `purchases.products` (get, `:acknowledge`, `:consume`), `orders` (get,
//! `:refund`) and `purchases.voidedpurchases` (list, token paging), and Google's JWK Set for
//! Pub/Sub push tokens. Tests buy, void and notify through it, and make calls fail.
//!
//! The RSA keys are test-only files (`tests/fixtures/google`): ring cannot make RSA keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use axum::{Form, Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair, RsaPublicKeyComponents};
use serde_json::{Value, json};
use uuid::Uuid;

/// The test app's package name.
pub const PACKAGE_NAME: &str = "com.coinslot.coincatcher";
/// The studio's service account.
pub const CLIENT_EMAIL: &str = "coinslot-store@coin-catcher.iam.gserviceaccount.com";
/// The push subscription's service account.
pub const PUSH_SERVICE_ACCOUNT: &str = "rtdn-push@coin-catcher.iam.gserviceaccount.com";
/// The push subscription's audience.
pub const PUSH_AUDIENCE: &str = "https://store.example/v1/webhooks/google";
/// The `kid` of Google's push-signing key.
pub const PUSH_KID: &str = "push-key-1";

const SERVICE_ACCOUNT_PEM: &str = include_str!("../fixtures/google/service-account.pem");
const PUSH_SIGNER_PEM: &str = include_str!("../fixtures/google/push-signer.pem");
const FOREIGN_PEM: &str = include_str!("../fixtures/google/foreign.pem");

fn key_pair(pem_text: &str) -> RsaKeyPair {
    let der = pem::parse(pem_text).expect("a PEM key").into_contents();
    RsaKeyPair::from_pkcs8(&der).expect("an RSA PKCS #8 key")
}

/// A compact JWS (`RS256`) over `claims`, signed with `pem_text`'s key.
fn sign_jwt(pem_text: &str, kid: &str, claims: &Value) -> String {
    let key = key_pair(pem_text);
    let header = json!({"alg": "RS256", "kid": kid, "typ": "JWT"});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), input.as_bytes(), &mut signature)
        .expect("signed");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// Google's `Money` for a decimal string (`"0.99"`).
#[must_use]
pub fn money(currency: &str, amount: &str) -> Value {
    let (units, fraction) = amount.split_once('.').unwrap_or((amount, ""));
    let nanos: i64 = format!("{fraction:0<9}")[..9].parse().expect("digits");
    json!({"currencyCode": currency, "units": units, "nanos": nanos})
}

/// What the next calls of a method do wrong ([`GooglePlayStandIn::fail_next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Google fails (`503`) and does nothing.
    Unavailable,
    /// Google does the work and the answer is lost (`503`).
    AnswerLost,
}

#[derive(Debug, Clone)]
struct Purchase {
    body: Value,
}

#[derive(Debug, Default)]
struct Inner {
    access_tokens: Vec<String>,
    assertions: Vec<Value>,
    purchases: HashMap<String, Purchase>,
    orders: HashMap<String, Value>,
    voided: Vec<Value>,
    faults: HashMap<String, Vec<Fault>>,
    calls: Vec<(String, String)>,
    next: u64,
    page_size: usize,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(inner: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis(),
    )
    .expect("in range")
}

fn google_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message, "status": "INVALID_ARGUMENT"}})),
    )
        .into_response()
}

/// The stand-in, serving on a loopback port until dropped.
#[derive(Debug)]
pub struct GooglePlayStandIn {
    base_url: String,
    inner: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GooglePlayStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn token(State(inner): State<Shared>, Form(form): Form<HashMap<String, String>>) -> Response {
    let refuse = |why: &str| {
        (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_grant", "error_description": why})))
            .into_response()
    };
    if form.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return refuse("unsupported grant type");
    }
    let Some(assertion) = form.get("assertion") else { return refuse("no assertion") };
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, payload, signature] = parts.as_slice() else { return refuse("not a JWT") };
    let public = RsaPublicKeyComponents::<Vec<u8>>::from(key_pair(SERVICE_ACCOUNT_PEM).public());
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap_or_default();
    if public
        .verify(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            format!("{header}.{payload}").as_bytes(),
            &signature,
        )
        .is_err()
    {
        return refuse("Invalid JWT Signature.");
    }
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap_or_default()).unwrap_or_default();
    let mut inner = lock(&inner);
    inner.calls.push(("token".to_owned(), String::new()));
    let now_s = now_ms() / 1_000;
    let audience_ok = claims["aud"].as_str().is_some_and(|aud| aud.ends_with("/token"));
    if claims["iss"] != CLIENT_EMAIL
        || claims["scope"] != "https://www.googleapis.com/auth/androidpublisher"
        || !audience_ok
        || claims["exp"].as_i64().is_none_or(|exp| exp < now_s || exp > now_s + 3_700)
    {
        return refuse("Invalid JWT: claims");
    }
    inner.assertions.push(claims);
    inner.next += 1;
    let access_token = format!("ya29.test-{}", inner.next);
    inner.access_tokens.push(access_token.clone());
    Json(json!({"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"})).into_response()
}

async fn certs() -> Json<Value> {
    let public = RsaPublicKeyComponents::<Vec<u8>>::from(key_pair(PUSH_SIGNER_PEM).public());
    Json(json!({"keys": [{
        "kid": PUSH_KID, "kty": "RSA", "alg": "RS256", "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(&public.n), "e": URL_SAFE_NO_PAD.encode(&public.e),
    }]}))
}

/// Every Android Publisher call under `/androidpublisher/v3/applications/{package}/…`.
async fn publisher(
    State(inner): State<Shared>,
    Path((package, rest)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    method: axum::http::Method,
) -> Response {
    let mut inner = lock(&inner);
    let authorized = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|token| inner.access_tokens.iter().any(|known| known == token));
    if !authorized {
        return google_error(StatusCode::UNAUTHORIZED, "Request had invalid authentication credentials.");
    }
    if package != PACKAGE_NAME {
        return google_error(StatusCode::NOT_FOUND, "No application was found for the given package name.");
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let name = match (method.as_str(), segments.as_slice()) {
        ("GET", ["purchases", "products", _, "tokens", _]) => "products.get",
        ("POST", ["purchases", "products", _, "tokens", token]) if token.ends_with(":acknowledge") => {
            "acknowledge"
        }
        ("POST", ["purchases", "products", _, "tokens", token]) if token.ends_with(":consume") => "consume",
        ("GET", ["orders", _]) => "orders.get",
        ("POST", ["orders", order]) if order.ends_with(":refund") => "orders.refund",
        ("GET", ["purchases", "voidedpurchases"]) => "voidedpurchases.list",
        _ => return google_error(StatusCode::NOT_FOUND, "Not found"),
    };
    inner.calls.push((name.to_owned(), rest.clone()));
    let fault = inner.faults.get_mut(name).and_then(|faults| (!faults.is_empty()).then(|| faults.remove(0)));
    if fault == Some(Fault::Unavailable) {
        return google_error(StatusCode::SERVICE_UNAVAILABLE, "The service is currently unavailable.");
    }
    let answer = match (name, segments.as_slice()) {
        ("products.get", [_, _, product, _, token]) => match inner.purchases.get(*token) {
            Some(purchase) if purchase.body["productId"] == *product => {
                Json(purchase.body.clone()).into_response()
            }
            _ => google_error(StatusCode::BAD_REQUEST, "Invalid Value"),
        },
        ("acknowledge" | "consume", [_, _, product, _, token]) => {
            let token = token.rsplit_once(':').map_or(*token, |(token, _)| token);
            match inner.purchases.get_mut(token) {
                Some(purchase) if purchase.body["productId"] == *product => {
                    if name == "consume" {
                        purchase.body["consumptionState"] = json!(1);
                    } else if purchase.body["acknowledgementState"] == 1 {
                        return google_error(
                            StatusCode::BAD_REQUEST,
                            "The purchase is already acknowledged.",
                        );
                    }
                    purchase.body["acknowledgementState"] = json!(1);
                    StatusCode::NO_CONTENT.into_response()
                }
                _ => google_error(StatusCode::BAD_REQUEST, "Invalid Value"),
            }
        }
        ("orders.get", [_, order_id]) => match inner.orders.get(*order_id) {
            Some(order) => Json(order.clone()).into_response(),
            None => google_error(StatusCode::NOT_FOUND, "Order not found."),
        },
        ("orders.refund", [_, order]) => {
            let order_id = order.trim_end_matches(":refund").to_owned();
            if query.get("revoke").map(String::as_str) != Some("true") {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "revoke must be set for one-time products here",
                );
            }
            match inner.orders.get(&order_id) {
                None => return google_error(StatusCode::NOT_FOUND, "Order not found."),
                Some(order) if order["state"] == "REFUNDED" => {
                    return google_error(StatusCode::BAD_REQUEST, "The order has already been refunded.");
                }
                Some(_) => {}
            }
            void_order(&mut inner, &order_id, 1, 0);
            StatusCode::NO_CONTENT.into_response()
        }
        ("voidedpurchases.list", _) => {
            let start: i64 = query.get("startTime").and_then(|ms| ms.parse().ok()).unwrap_or(0);
            if start < now_ms() - 30 * 24 * 3_600 * 1_000 {
                return google_error(StatusCode::BAD_REQUEST, "startTime is older than 30 days");
            }
            let offset: usize = query.get("token").and_then(|token| token.parse().ok()).unwrap_or(0);
            let seen: Vec<Value> = inner
                .voided
                .iter()
                .filter(|void| void["seenMillis"].as_i64().is_some_and(|seen| seen >= start) || offset > 0)
                .map(|void| {
                    let mut void = void.clone();
                    void.as_object_mut().map(|fields| fields.remove("seenMillis"));
                    void
                })
                .collect();
            let page: Vec<Value> = seen.iter().skip(offset).take(inner.page_size.max(1)).cloned().collect();
            let mut body = json!({"voidedPurchases": page});
            if offset + inner.page_size.max(1) < seen.len() {
                body["tokenPagination"] =
                    json!({"nextPageToken": (offset + inner.page_size.max(1)).to_string()});
            }
            Json(body).into_response()
        }
        _ => google_error(StatusCode::NOT_FOUND, "Not found"),
    };
    if fault == Some(Fault::AnswerLost) {
        return google_error(StatusCode::SERVICE_UNAVAILABLE, "The service is currently unavailable.");
    }
    answer
}

/// Voids an order as Google does: a voided-purchase record, the order refunded.
fn void_order(inner: &mut Inner, order_id: &str, source: i64, reason: i64) {
    let Some(order) = inner.orders.get_mut(order_id) else { return };
    order["state"] = json!("REFUNDED");
    order["orderHistory"]["refundEvent"] = json!({"eventTime": "2026-12-03T00:00:00Z", "refundDetails": {"total": order["total"].clone(), "tax": order["tax"].clone()}});
    let token = order["purchaseToken"].as_str().unwrap_or_default().to_owned();
    let now = now_ms();
    inner.voided.push(json!({
        "kind": "androidpublisher#voidedPurchase", "purchaseToken": token, "orderId": order_id,
        "purchaseTimeMillis": (now - 60_000).to_string(), "voidedTimeMillis": now.to_string(),
        "voidedSource": source, "voidedReason": reason, "seenMillis": now,
    }));
}

/// What a test sells.
#[derive(Debug, Clone)]
pub struct Sale {
    /// The Play product id.
    pub product_id: String,
    /// The currency.
    pub currency: String,
    /// What the player pays, tax included (`"0.99"`).
    pub total: String,
    /// The tax in it.
    pub tax: String,
    /// What is left for the studio; `None` leaves the field out.
    pub revenue: Option<String>,
    /// `obfuscatedExternalAccountId`.
    pub account: Option<String>,
    /// 0 purchased, 1 canceled, 2 pending.
    pub purchase_state: i64,
    /// 0 test, 1 promo, 2 rewarded; `None` for a real purchase.
    pub purchase_type: Option<i64>,
}

impl Sale {
    /// A real purchase of `product_id` for `total` in `currency`, no tax, 15% kept by Google.
    #[must_use]
    pub fn of(product_id: &str, currency: &str, total: &str, revenue: &str) -> Self {
        Self {
            product_id: product_id.to_owned(),
            currency: currency.to_owned(),
            total: total.to_owned(),
            tax: "0".to_owned(),
            revenue: Some(revenue.to_owned()),
            account: None,
            purchase_state: 0,
            purchase_type: None,
        }
    }

    /// Made for this player (`setObfuscatedAccountId`).
    #[must_use]
    pub fn for_player(mut self, player: impl ToString) -> Self {
        self.account = Some(player.to_string());
        self
    }
}

impl GooglePlayStandIn {
    /// Starts the stand-in on a free loopback port.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start() -> Self {
        let inner = Shared::default();
        lock(&inner).page_size = 1_000;
        let router = Router::new()
            .route("/token", axum::routing::post(token))
            .route("/oauth2/v3/certs", get(certs))
            .route("/androidpublisher/v3/applications/{package}/{*rest}", get(publisher).post(publisher))
            .with_state(inner.clone());
        let (base_url, task) = crate::serve_on_loopback(router).await;
        Self { base_url, inner, task }
    }

    /// The service account key file's content, as Google Cloud gives it.
    #[must_use]
    pub fn service_account_json(&self) -> String {
        json!({
            "type": "service_account", "project_id": "coin-catcher", "private_key_id": "0123456789abcdef",
            "private_key": SERVICE_ACCOUNT_PEM, "client_email": CLIENT_EMAIL, "client_id": "1",
            "token_uri": format!("{}/token", self.base_url),
        })
        .to_string()
    }

    /// The store's settings for this stand-in: notifications authenticated, voids polled at
    /// every reconciliation.
    ///
    /// # Panics
    /// Never: the fixture key is a service account key.
    #[must_use]
    pub fn settings(&self) -> store_server::payments::platform::google::GooglePlaySettings {
        use store_server::payments::platform::google::{
            GooglePlaySettings, PushAuthentication, ServiceAccount,
        };
        GooglePlaySettings {
            package_name: PACKAGE_NAME.to_owned(),
            service_account: ServiceAccount::from_json(self.service_account_json().as_bytes())
                .expect("a key file"),
            api_url: self.base_url.clone(),
            commission_percent: 15,
            accept_test_purchases: false,
            push: Some(PushAuthentication {
                audience: PUSH_AUDIENCE.to_owned(),
                service_account: PUSH_SERVICE_ACCOUNT.to_owned(),
                certs_url: format!("{}/oauth2/v3/certs", self.base_url),
            }),
            voided_poll_interval: std::time::Duration::ZERO,
        }
    }

    /// Where the API is (`--google-api-url`).
    #[must_use]
    pub fn api_url(&self) -> &str {
        &self.base_url
    }

    /// A player buys: returns the purchase token and Google's order id.
    pub fn buy(&self, sale: &Sale) -> (String, String) {
        let mut inner = lock(&self.inner);
        inner.next += 1;
        let n = inner.next;
        let token = format!("opaque-token-{n}.AO-J1Oz{}", Uuid::new_v4().simple());
        let order_id = format!("GPA.3391-4827-{n:04}-{:05}", n * 7 % 100_000);
        let mut purchase = json!({
            "kind": "androidpublisher#productPurchase", "purchaseTimeMillis": now_ms().to_string(),
            "purchaseState": sale.purchase_state, "consumptionState": 0, "developerPayload": "",
            "orderId": order_id, "acknowledgementState": 0, "productId": sale.product_id,
            "quantity": 1, "regionCode": "US", "refundableQuantity": 1,
        });
        if let Some(kind) = sale.purchase_type {
            purchase["purchaseType"] = json!(kind);
        }
        if let Some(account) = &sale.account {
            purchase["obfuscatedExternalAccountId"] = json!(account);
        }
        let state = match sale.purchase_state {
            0 => "PROCESSED",
            2 => "PENDING",
            _ => "CANCELED",
        };
        let mut order = json!({
            "orderId": order_id, "purchaseToken": token, "state": state,
            "createTime": "2026-12-03T00:00:00Z", "lastEventTime": "2026-12-03T00:00:00Z",
            "total": money(&sale.currency, &sale.total), "tax": money(&sale.currency, &sale.tax),
            "lineItems": [{"productId": sale.product_id, "total": money(&sale.currency, &sale.total),
                           "oneTimePurchaseDetails": {"quantity": 1}}],
            "salesChannel": "IN_APP",
        });
        if let Some(revenue) = &sale.revenue {
            order["developerRevenueInBuyerCurrency"] = money(&sale.currency, revenue);
        }
        inner.purchases.insert(token.clone(), Purchase { body: purchase });
        inner.orders.insert(order_id.clone(), order);
        (token, order_id)
    }

    /// Google completes a pending purchase.
    pub fn complete_pending(&self, token: &str) {
        let mut inner = lock(&self.inner);
        let order_id = {
            let purchase = inner.purchases.get_mut(token).expect("a purchase");
            purchase.body["purchaseState"] = json!(0);
            purchase.body["orderId"].as_str().unwrap_or_default().to_owned()
        };
        if let Some(order) = inner.orders.get_mut(&order_id) {
            order["state"] = json!("PROCESSED");
        }
    }

    /// Google voids a purchase (source 0 user, 1 developer, 2 Google; reason 0-8, 7 a chargeback).
    pub fn void(&self, order_id: &str, source: i64, reason: i64) {
        void_order(&mut lock(&self.inner), order_id, source, reason);
    }

    /// How many voided purchases a page of the list holds (token paging past it).
    pub fn set_page_size(&self, size: usize) {
        lock(&self.inner).page_size = size;
    }

    /// Makes the next calls of `method` (`products.get`, `orders.get`, `acknowledge`, `consume`,
    /// `orders.refund`, `voidedpurchases.list`) fail, one fault per call.
    pub fn fail_next(&self, method: &str, faults: &[Fault]) {
        lock(&self.inner).faults.entry(method.to_owned()).or_default().extend_from_slice(faults);
    }

    /// The purchase as `purchases.products.get` answers it.
    #[must_use]
    pub fn purchase(&self, token: &str) -> Value {
        lock(&self.inner).purchases.get(token).map(|purchase| purchase.body.clone()).unwrap_or_default()
    }

    /// The order as `orders.get` answers it.
    #[must_use]
    pub fn order(&self, order_id: &str) -> Value {
        lock(&self.inner).orders.get(order_id).cloned().unwrap_or_default()
    }

    /// Changes an order as `orders.get` answers it.
    pub fn edit_order(&self, order_id: &str, edit: impl FnOnce(&mut Value)) {
        if let Some(order) = lock(&self.inner).orders.get_mut(order_id) {
            edit(order);
        }
    }

    /// Changes a purchase as `purchases.products.get` answers it.
    pub fn edit_purchase(&self, token: &str, edit: impl FnOnce(&mut Value)) {
        if let Some(purchase) = lock(&self.inner).purchases.get_mut(token) {
            edit(&mut purchase.body);
        }
    }

    /// How many calls of `method` were made (`token` for the token endpoint).
    #[must_use]
    pub fn calls(&self, method: &str) -> usize {
        lock(&self.inner).calls.iter().filter(|(name, _)| name == method).count()
    }

    /// The assertions the token endpoint accepted.
    #[must_use]
    pub fn assertions(&self) -> Vec<Value> {
        lock(&self.inner).assertions.clone()
    }

    /// A Pub/Sub push of a developer notification, as Google sends it: its body and its
    /// `Authorization` header (an OIDC token signed with Google's key for the audience and
    /// service account the subscription names).
    #[must_use]
    pub fn push(&self, message_id: &str, notification: &Value) -> (Value, String) {
        let token = push_token(PushSigner::Google, PUSH_AUDIENCE, PUSH_SERVICE_ACCOUNT, 3_600);
        (push_body(message_id, notification), format!("Bearer {token}"))
    }
}

/// Who signs a push token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushSigner {
    /// Google's published key.
    Google,
    /// A key Google never published, under Google's `kid`.
    Foreign,
}

/// An OIDC token as Pub/Sub push sends it, valid for `lifetime_s` (negative: expired).
#[must_use]
pub fn push_token(signer: PushSigner, audience: &str, email: &str, lifetime_s: i64) -> String {
    let now_s = now_ms() / 1_000;
    let claims = json!({
        "aud": audience, "azp": "113774264463038321964", "email": email, "email_verified": true,
        "exp": now_s + lifetime_s, "iat": now_s + lifetime_s - 3_600,
        "iss": "https://accounts.google.com", "sub": "113774264463038321964",
    });
    let pem_text = match signer {
        PushSigner::Google => PUSH_SIGNER_PEM,
        PushSigner::Foreign => FOREIGN_PEM,
    };
    sign_jwt(pem_text, PUSH_KID, &claims)
}

/// A Pub/Sub push body carrying `notification`.
#[must_use]
pub fn push_body(message_id: &str, notification: &Value) -> Value {
    json!({
        "message": {
            "attributes": {}, "data": STANDARD.encode(notification.to_string()),
            "messageId": message_id, "message_id": message_id,
            "publishTime": "2026-12-03T00:00:00.000Z", "publish_time": "2026-12-03T00:00:00.000Z",
        },
        "subscription": "projects/coin-catcher/subscriptions/play-rtdn",
    })
}

/// A developer notification that a one-time purchase was voided (refunded in full).
#[must_use]
pub fn voided_notification(purchase_token: &str, order_id: &str) -> Value {
    json!({
        "version": "1.0", "packageName": PACKAGE_NAME, "eventTimeMillis": now_ms().to_string(),
        "voidedPurchaseNotification": {
            "purchaseToken": purchase_token, "orderId": order_id, "productType": 2, "refundType": 1,
        },
    })
}
