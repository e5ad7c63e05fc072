//! Google Play purchases: purchase tokens verified with the Android Publisher API, acknowledged
//! or consumed, and voided purchases taken back.
//!
//! - **Verification** (`POST /v1/platform-purchases/google`): `purchases.products.get` says
//!   whether the token is a purchase of this app's product, purchased (not pending, not
//!   canceled), for whom (`obfuscatedExternalAccountId`) and under which Google order id;
//!   `orders.get` says what the player paid (`total`) and what is left for the studio
//!   (`developerRevenueInBuyerCurrency`): the fee booked is the difference (Google's service fee
//!   and the tax it remits), so the net booked is what Google pays out.
//! - **Credentials**: a service account's key (the JSON file from Google Cloud) signs an
//!   OAuth 2.0 JWT-bearer assertion (`RS256`) for an access token with the `androidpublisher`
//!   scope, kept until a minute before it expires.
//! - **Acknowledgement**: a purchase Google is not told about within three days is refunded; a
//!   redemption writes the work in its own transaction and
//!   [`crate::payments::platform::acknowledge_due`] sends `:consume` (or `:acknowledge` for a
//!   durable item) until Google confirms.
//! - **Voided purchases**: Real-time developer notifications (`POST /v1/webhooks/google`, a
//!   Pub/Sub push whose OIDC bearer token is checked: Google's signature, the audience, the
//!   push service account) say a purchase was voided; the Voided Purchases API, polled by
//!   reconciliation, is the source of truth for why. A chargeback or fraud (`voidedReason` 5, 6,
//!   7) is booked as a lost dispute; any other void as a refund of the amount `orders.get`
//!   reports refunded (a refund an operator asked for through the store is that refund).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rust_decimal::Decimal;
use serde_json::Value;
use store_api::orders::{GooglePlayPurchaseRequest, PlatformProof};
use store_api::{ErrorCode, Money, MoneyCurrency};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::payments::platform::{
    HistoryCursor, PendingAcknowledgement, PlatformPurchase, PollThrottle, proof_invalid,
};
use crate::payments::provider::{
    BoxFuture, Checkout, CheckoutRequest, EventPage, PaymentProvider, PaymentReport, ProviderEvent,
    RefundAccepted, RefundCall, Refunds, VerifiedEvent, not_confirmed, unavailable, urlencode,
};

/// The platform's name in orders: `google_play`.
pub const PLATFORM: &str = "google_play";

/// The longest purchase token accepted, in bytes (Google's are a few hundred).
pub const PURCHASE_TOKEN_MAX: usize = 4_096;

/// The OAuth 2.0 scope of the Android Publisher API.
const SCOPE: &str = "https://www.googleapis.com/auth/androidpublisher";

/// How far back the Voided Purchases API reaches.
const VOIDED_WINDOW_MS: i64 = 30 * 24 * 3_600 * 1_000;

/// How far back a notification's void is looked for (Pub/Sub retries a push for a week).
const NOTIFIED_VOID_WINDOW_MS: i64 = 8 * 24 * 3_600 * 1_000;

/// How Google Play purchases are checked.
#[derive(Clone, PartialEq, Eq)]
pub struct GooglePlaySettings {
    /// The app's package name (`com.example.game`).
    pub package_name: String,
    /// The service account the server calls the Android Publisher API as.
    pub service_account: ServiceAccount,
    /// The Android Publisher API (`https://androidpublisher.googleapis.com`; a stand-in's in
    /// tests).
    pub api_url: String,
    /// Google's service fee in percent, booked (with the tax) when an order does not report the
    /// studio's revenue (15 on the first million a year, 30 past it).
    pub commission_percent: u8,
    /// Whether license testers' purchases (free, `purchaseType` 0) are redeemed: for a staging
    /// server only.
    pub accept_test_purchases: bool,
    /// How Real-time developer notifications are authenticated; without it they are refused and
    /// voids come by polling only.
    pub push: Option<PushAuthentication>,
    /// How often the Voided Purchases API is polled at most (its quota is a few thousand calls
    /// a day).
    pub voided_poll_interval: Duration,
}

impl std::fmt::Debug for GooglePlaySettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GooglePlaySettings")
            .field("package_name", &self.package_name)
            .field("service_account", &self.service_account.client_email)
            .field("api_url", &self.api_url)
            .field("commission_percent", &self.commission_percent)
            .field("accept_test_purchases", &self.accept_test_purchases)
            .field("push", &self.push)
            .field("voided_poll_interval", &self.voided_poll_interval)
            .finish()
    }
}

/// A service account's key, as Google Cloud gives it (a JSON file).
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// `client_email`.
    pub client_email: String,
    /// `private_key_id`, sent as the assertion's `kid`.
    pub private_key_id: Option<String>,
    /// `private_key`: an RSA key, PKCS #8 DER.
    pub private_key: Vec<u8>,
    /// `token_uri` (`https://oauth2.googleapis.com/token`).
    pub token_uri: String,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("private_key", &"<redacted>")
            .field("token_uri", &self.token_uri)
            .finish()
    }
}

impl ServiceAccount {
    /// Reads a service account key file.
    ///
    /// # Errors
    /// The file is not a service account key with an RSA private key.
    pub fn from_json(bytes: &[u8]) -> anyhow::Result<Self> {
        #[derive(serde::Deserialize)]
        struct KeyFile {
            client_email: String,
            private_key_id: Option<String>,
            private_key: String,
            token_uri: String,
        }
        let file: KeyFile = serde_json::from_slice(bytes)
            .map_err(|error| anyhow::anyhow!("not a service account key file: {error}"))?;
        let private_key = pem::parse(file.private_key.as_bytes())
            .map_err(|error| anyhow::anyhow!("private_key is not PEM: {error}"))?
            .into_contents();
        ring::signature::RsaKeyPair::from_pkcs8(&private_key)
            .map_err(|error| anyhow::anyhow!("private_key is not an RSA PKCS #8 key: {error}"))?;
        Ok(Self {
            client_email: file.client_email,
            private_key_id: file.private_key_id,
            private_key,
            token_uri: file.token_uri,
        })
    }
}

/// How a Pub/Sub push is authenticated: its `Authorization: Bearer` OIDC token, signed by
/// Google, for this audience, as this service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushAuthentication {
    /// The audience the push subscription was made with (its endpoint URL by default).
    pub audience: String,
    /// The service account the subscription pushes as (`…@….iam.gserviceaccount.com`).
    pub service_account: String,
    /// Where Google publishes the keys its tokens are signed with, a JWK Set
    /// (`https://www.googleapis.com/oauth2/v3/certs`).
    pub certs_url: String,
}

/// An access token and when to stop using it.
struct AccessToken {
    value: String,
    renew_at: Instant,
}

/// Google's token-signing keys, by `kid`: RSA modulus and exponent.
#[derive(Default)]
struct PushKeys {
    keys: HashMap<String, (Vec<u8>, Vec<u8>)>,
    fetched_at: Option<Instant>,
}

/// Google Play as a provider of the store's orders: purchases come by redemption, refunds of
/// whole orders through `orders.refund`, voids from notifications and the Voided Purchases API.
pub struct GooglePlayProvider {
    settings: GooglePlaySettings,
    http: reqwest::Client,
    token: tokio::sync::Mutex<Option<AccessToken>>,
    push_keys: Mutex<PushKeys>,
    voided_poll: PollThrottle,
}

impl std::fmt::Debug for GooglePlayProvider {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("GooglePlayProvider").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// What Google answered, when it answered: the body, or its refusal (a 4xx).
type Answer = Result<Value, (StatusCode, String)>;

impl GooglePlayProvider {
    /// The provider for these settings.
    #[must_use]
    pub fn new(settings: GooglePlaySettings) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        Self {
            voided_poll: PollThrottle::new(settings.voided_poll_interval),
            settings,
            http,
            token: tokio::sync::Mutex::new(None),
            push_keys: Mutex::new(PushKeys::default()),
        }
    }

    /// The OAuth 2.0 JWT-bearer assertion: `RS256`, signed with the service account's key.
    fn assertion(&self, now_s: i64) -> ApiResult<String> {
        let account = &self.settings.service_account;
        let mut header = serde_json::json!({ "alg": "RS256", "typ": "JWT" });
        if let Some(kid) = &account.private_key_id {
            header["kid"] = Value::from(kid.as_str());
        }
        let claims = serde_json::json!({
            "iss": account.client_email, "scope": SCOPE, "aud": account.token_uri,
            "iat": now_s, "exp": now_s + 3_600,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let key = ring::signature::RsaKeyPair::from_pkcs8(&account.private_key).map_err(|_| {
            ApiError::Internal(anyhow::anyhow!("the Google service account key is not an RSA key"))
        })?;
        let mut signature = vec![0; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            input.as_bytes(),
            &mut signature,
        )
        .map_err(|_| ApiError::Internal(anyhow::anyhow!("the Google service account key cannot sign")))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    /// An access token for the Android Publisher API, from the cache or the token endpoint.
    async fn access_token(&self) -> ApiResult<String> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref().filter(|token| token.renew_at > Instant::now()) {
            return Ok(token.value.clone());
        }
        #[derive(serde::Deserialize)]
        struct Granted {
            access_token: String,
            expires_in: u64,
        }
        let uri = &self.settings.service_account.token_uri;
        let assertion = self.assertion(crate::db::now_micros() / 1_000_000)?;
        let response = self
            .http
            .post(uri)
            .form(&[("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", &assertion)])
            .send()
            .await
            .map_err(|error| unavailable("oauth2 token", &format!("unreachable: {error}")))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(unavailable("oauth2 token", &format!("answered {status}: {text}")));
        }
        let granted: Granted = response
            .json()
            .await
            .map_err(|error| unavailable("oauth2 token", &format!("unreadable answer: {error}")))?;
        let lifetime = Duration::from_secs(granted.expires_in.saturating_sub(60));
        *cached =
            Some(AccessToken { value: granted.access_token.clone(), renew_at: Instant::now() + lifetime });
        Ok(granted.access_token)
    }

    /// Calls the Android Publisher API at `path` (under the app), with a fresh token once more
    /// if Google says the token is no longer good.
    ///
    /// # Errors
    /// `502 provider_unavailable` when Google cannot be reached, fails (5xx) or refuses the
    /// credentials; a 4xx about the request itself is the [`Answer`]'s `Err`.
    async fn call(&self, method: Method, path: &str, query: &[(&str, String)]) -> ApiResult<Answer> {
        let url = format!(
            "{}/androidpublisher/v3/applications/{}{path}",
            self.settings.api_url.trim_end_matches('/'),
            urlencode(&self.settings.package_name)
        );
        for attempt in 0..2 {
            let token = self.access_token().await?;
            let mut request = self.http.request(method.clone(), &url).bearer_auth(token).query(query);
            if method == Method::POST {
                request = request.header(header::CONTENT_TYPE, "application/json").body("{}");
            }
            let response =
                request.send().await.map_err(|error| unavailable(path, &format!("unreachable: {error}")))?;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                *self.token.lock().await = None;
                continue;
            }
            if status.is_success() {
                let body = if text.trim().is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&text).unwrap_or(Value::Null)
                };
                return Ok(Ok(body));
            }
            if status.is_client_error()
                && !matches!(
                    status,
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS
                )
            {
                return Ok(Err((status, text)));
            }
            return Err(unavailable(path, &format!("answered {status}: {text}")));
        }
        Err(unavailable(path, "refused a fresh access token"))
    }

    fn product_path(product_id: &str, purchase_token: &str) -> String {
        format!("/purchases/products/{}/tokens/{}", urlencode(product_id), urlencode(purchase_token))
    }

    /// `orders.get`.
    async fn order(&self, order_id: &str) -> ApiResult<Answer> {
        self.call(Method::GET, &format!("/orders/{}", urlencode(order_id)), &[]).await
    }

    /// Verifies a purchase token with Google and reads what it grants and books.
    async fn verify(&self, request: &GooglePlayPurchaseRequest) -> ApiResult<PlatformPurchase> {
        let GooglePlayPurchaseRequest { product_id, purchase_token } = request;
        store_api::catalog::PlatformProducts { app_store: None, google_play: Some(product_id.clone()) }
            .check()
            .map_err(|message| ApiError::invalid("product_id", message))?;
        if purchase_token.is_empty() || purchase_token.len() > PURCHASE_TOKEN_MAX {
            return Err(ApiError::invalid("purchase_token", format!("1 to {PURCHASE_TOKEN_MAX} bytes")));
        }
        let purchase =
            match self.call(Method::GET, &Self::product_path(product_id, purchase_token), &[]).await? {
                Ok(purchase) => purchase,
                Err(_) => {
                    return Err(proof_invalid(
                        "token",
                        "Google Play knows no purchase of this product with this token for this app",
                    ));
                }
            };
        if purchase["productId"].as_str().is_some_and(|named| named != product_id) {
            return Err(proof_invalid("product", "the token is a purchase of another product"));
        }
        match purchase["purchaseState"].as_i64().unwrap_or(0) {
            0 => {}
            2 => return Err(pending()),
            _ => return Err(proof_invalid("canceled", "the purchase was canceled")),
        }
        match purchase["purchaseType"].as_i64() {
            None => {}
            Some(0) if self.settings.accept_test_purchases => {}
            Some(0) => {
                return Err(proof_invalid("test_purchase", "a license tester's purchase: no money was paid"));
            }
            Some(_) => {
                return Err(proof_invalid(
                    "purchase_type",
                    "a promotional or rewarded purchase: no money was paid",
                ));
            }
        }
        let bought_for = match purchase["obfuscatedExternalAccountId"].as_str() {
            None => None,
            Some(account) => Some(Uuid::parse_str(account).map_err(|_| {
                proof_invalid(
                    "account",
                    "the purchase was made for an account that is not a player of this store",
                )
            })?),
        };
        let order_id = purchase["orderId"]
            .as_str()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| proof_invalid("format", "the purchase names no order"))?
            .to_owned();
        let order = self
            .order(&order_id)
            .await?
            .map_err(|_| proof_invalid("format", "Google Play has no order for the purchase"))?;
        match order["state"].as_str() {
            Some("PROCESSED") => {}
            Some("PENDING") => return Err(pending()),
            Some("CANCELED") => return Err(proof_invalid("canceled", "the order was canceled")),
            _ => return Err(proof_invalid("revoked", "the order was refunded or is being refunded")),
        }
        let price =
            google_money(&order["total"]).filter(|total| total.amount > Decimal::ZERO).ok_or_else(|| {
                proof_invalid("price", "the order has no positive total in a currency this store knows")
            })?;
        let fee = match google_money(&order["developerRevenueInBuyerCurrency"]) {
            Some(revenue) if revenue.currency == price.currency && revenue.amount <= price.amount => {
                Money { currency: price.currency, amount: (price.amount - revenue.amount).normalize() }
            }
            Some(_) => return Err(proof_invalid("price", "the order's revenue does not fit its total")),
            None => {
                // Not reported: the tax Google remits, and its service fee on the rest.
                let tax = google_money(&order["tax"])
                    .filter(|tax| tax.currency == price.currency && tax.amount <= price.amount)
                    .map_or(Decimal::ZERO, |tax| tax.amount);
                let net = Money { currency: price.currency, amount: price.amount - tax };
                let commission =
                    crate::payments::fees::share(net, Decimal::from(self.settings.commission_percent));
                Money { currency: price.currency, amount: (tax + commission.amount).normalize() }
            }
        };
        let quantity =
            purchase["quantity"].as_i64().filter(|quantity| (1..=100).contains(quantity)).unwrap_or(1);
        Ok(PlatformPurchase {
            platform: PLATFORM,
            transaction_id: order_id,
            product_id: product_id.clone(),
            quantity,
            price,
            fee,
            bought_for,
            acknowledgement: Some(PendingAcknowledgement {
                purchase_token: purchase_token.clone(),
                acknowledged: purchase["acknowledgementState"].as_i64() == Some(1),
                consumed: purchase["consumptionState"].as_i64() == Some(1),
            }),
        })
    }

    /// What a voided purchase comes to: a lost dispute for a chargeback or fraud, else a refund
    /// of what Google reports refunded on the order.
    async fn void_event(&self, void: &Value) -> ApiResult<ProviderEvent> {
        let order_id = void["orderId"]
            .as_str()
            .ok_or_else(|| ApiError::invalid("orderId", "a voided purchase without its order"))?
            .to_owned();
        if matches!(void["voidedReason"].as_i64(), Some(5..=7)) {
            return Ok(ProviderEvent::PaymentDisputed { payment_id: order_id, amount: None });
        }
        let order = self.order(&order_id).await?.map_err(|(status, text)| {
            ApiError::invalid("orderId", format!("Google Play answered {status} for the order: {text}"))
        })?;
        let refunded = google_money(&order["orderHistory"]["refundEvent"]["refundDetails"]["total"])
            .filter(|total| total.amount > Decimal::ZERO)
            .ok_or_else(|| not_confirmed("Google Play does not report the voided order refunded yet"))?;
        Ok(ProviderEvent::RefundedAtProvider {
            provider_refund_id: format!("google-refund:{order_id}"),
            payment_id: order_id,
            amount: refunded,
        })
    }

    /// Google's voided purchases from `start_ms`, one page (`page_token` continues one).
    async fn voided_page(
        &self,
        start_ms: i64,
        page_token: Option<&str>,
    ) -> ApiResult<(Vec<Value>, Option<String>)> {
        let mut query = vec![("startTime", start_ms.to_string()), ("maxResults", "1000".to_owned())];
        if let Some(token) = page_token {
            query.push(("token", token.to_owned()));
        }
        let page = self.call(Method::GET, "/purchases/voidedpurchases", &query).await?.map_err(
            |(status, text)| unavailable("voidedpurchases", &format!("answered {status}: {text}")),
        )?;
        let voids = page["voidedPurchases"].as_array().cloned().unwrap_or_default();
        let next = page["tokenPagination"]["nextPageToken"]
            .as_str()
            .filter(|token| !token.is_empty())
            .map(str::to_owned);
        Ok((voids, next))
    }

    /// The void of `order_id`, found in the Voided Purchases API (a notification says which
    /// order was voided, not why).
    async fn find_void(&self, order_id: &str) -> ApiResult<Value> {
        let now_ms = crate::db::now_micros() / 1_000;
        let start_ms = now_ms - NOTIFIED_VOID_WINDOW_MS.min(VOIDED_WINDOW_MS - 60_000);
        let mut page_token: Option<String> = None;
        for _ in 0..20 {
            let (voids, next) = self.voided_page(start_ms, page_token.as_deref()).await?;
            if let Some(void) = voids.into_iter().find(|void| void["orderId"].as_str() == Some(order_id)) {
                return Ok(void);
            }
            let Some(next) = next else { break };
            page_token = Some(next);
        }
        Err(not_confirmed("the Voided Purchases API does not list the order yet"))
    }

    /// Checks a Pub/Sub push's OIDC token: Google's `RS256` signature with a published key,
    /// issuer, audience, service account, verified e-mail, and lifetime.
    fn verify_push_token(&self, push: &PushAuthentication, headers: &HeaderMap, now_s: i64) -> ApiResult<()> {
        let bad = |message: &str| {
            ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::WebhookSignatureInvalid, message.to_owned())
        };
        let token = bearer(headers).ok_or_else(|| bad("the push carries no bearer token"))?;
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("the bearer token is not a JWT"));
        };
        let decode =
            |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| bad("the bearer token is not base64url"));
        let header_json: Value =
            serde_json::from_slice(&decode(header)?).map_err(|_| bad("the token's header is not JSON"))?;
        let claims: Value =
            serde_json::from_slice(&decode(payload)?).map_err(|_| bad("the token's claims are not JSON"))?;
        if header_json["alg"].as_str() != Some("RS256") {
            return Err(bad("the token is not RS256"));
        }
        let kid = header_json["kid"].as_str().unwrap_or_default();
        let key = self.push_keys.lock().unwrap_or_else(PoisonError::into_inner).keys.get(kid).cloned();
        let (n, e) = key.ok_or_else(|| bad("the token is not signed with a key Google publishes"))?;
        ring::signature::RsaPublicKeyComponents { n, e }
            .verify(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                format!("{header}.{payload}").as_bytes(),
                &decode(signature)?,
            )
            .map_err(|_| bad("the token's signature does not verify"))?;
        if !matches!(claims["iss"].as_str(), Some("accounts.google.com" | "https://accounts.google.com")) {
            return Err(bad("the token is not Google's"));
        }
        if claims["aud"].as_str() != Some(push.audience.as_str()) {
            return Err(bad("the token is for another audience"));
        }
        if claims["email"].as_str() != Some(push.service_account.as_str())
            || claims["email_verified"] != Value::Bool(true)
        {
            return Err(bad("the token is not the push subscription's service account"));
        }
        let leeway = 60;
        if claims["exp"].as_i64().is_none_or(|exp| exp + leeway < now_s)
            || claims["iat"].as_i64().is_none_or(|iat| iat - leeway > now_s)
        {
            return Err(bad("the token has expired"));
        }
        Ok(())
    }

    /// Fetches Google's token-signing keys (a JWK Set).
    async fn fetch_push_keys(&self, push: &PushAuthentication) -> ApiResult<()> {
        let response = self
            .http
            .get(&push.certs_url)
            .send()
            .await
            .map_err(|error| unavailable("oauth2 certs", &format!("unreachable: {error}")))?;
        let set: Value = response
            .json()
            .await
            .map_err(|error| unavailable("oauth2 certs", &format!("unreadable: {error}")))?;
        let mut keys = HashMap::new();
        for key in set["keys"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let part = |name: &str| key[name].as_str().and_then(|text| URL_SAFE_NO_PAD.decode(text).ok());
            if let (Some(kid), Some("RSA"), Some(n), Some(e)) =
                (key["kid"].as_str(), key["kty"].as_str(), part("n"), part("e"))
            {
                keys.insert(kid.to_owned(), (n, e));
            }
        }
        *self.push_keys.lock().unwrap_or_else(PoisonError::into_inner) =
            PushKeys { keys, fetched_at: Some(Instant::now()) };
        Ok(())
    }

    fn read_notification(&self, headers: &HeaderMap, body: &[u8], now_s: i64) -> ApiResult<VerifiedEvent> {
        let Some(push) = &self.settings.push else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::WebhookSignatureInvalid,
                "push authentication is not configured (COINSLOT_GOOGLE_PUSH_AUDIENCE): notifications are refused",
            ));
        };
        self.verify_push_token(push, headers, now_s)?;
        let push_body: Value = serde_json::from_slice(body).map_err(|_| {
            ApiError::invalid("message", "a push is {\"message\": {...}, \"subscription\": ...}")
        })?;
        let message = &push_body["message"];
        let id = message["messageId"]
            .as_str()
            .or_else(|| message["message_id"].as_str())
            .ok_or_else(|| ApiError::invalid("message.messageId", "a push message has an id"))?
            .to_owned();
        let data = message["data"]
            .as_str()
            .and_then(|data| STANDARD.decode(data).ok())
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .ok_or_else(|| ApiError::invalid("message.data", "base64 of a developer notification"))?;
        if data["packageName"].as_str() != Some(self.settings.package_name.as_str()) {
            return Err(ApiError::invalid("message.data.packageName", "another app's notification"));
        }
        let voided = &data["voidedPurchaseNotification"];
        let (event_type, event) = if voided.is_object() {
            // productType 2: a one-time product; refundType 1: the whole purchase. Quantity-based
            // partial refunds are left to operators (docs/payment-providers.md).
            let event = match (
                voided["productType"].as_i64(),
                voided["refundType"].as_i64(),
                voided["orderId"].as_str(),
            ) {
                (Some(2), Some(1), Some(order_id)) => {
                    ProviderEvent::PaymentRefunded { payment_id: order_id.to_owned() }
                }
                _ => ProviderEvent::Ignored,
            };
            ("voided_purchase".to_owned(), event)
        } else if let Some(kind) = data["oneTimeProductNotification"]["notificationType"].as_i64() {
            (format!("one_time_product.{kind}"), ProviderEvent::Ignored)
        } else if data["testNotification"].is_object() {
            ("test".to_owned(), ProviderEvent::Ignored)
        } else {
            ("other".to_owned(), ProviderEvent::Ignored)
        };
        Ok(VerifiedEvent { id, event_type, event })
    }
}

/// `409 order_state_conflict` (`details.status: pending`): Google Play has not completed the
/// purchase (a pending payment method); the game redeems it when Google says it is purchased.
fn pending() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::OrderStateConflict,
        "the purchase is pending at Google Play; redeem it once it is purchased",
    )
    .with_detail("status", "pending")
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

/// Google's `Money` (`currencyCode`, `units` as a decimal string, `nanos`), in a currency this
/// store knows.
fn google_money(value: &Value) -> Option<Money> {
    let currency = MoneyCurrency::parse(value["currencyCode"].as_str()?).ok()?;
    let units: i128 = match &value["units"] {
        Value::String(text) => text.parse().ok()?,
        Value::Number(number) => i128::from(number.as_i64()?),
        Value::Null => 0,
        _ => return None,
    };
    let nanos = i128::from(value["nanos"].as_i64().unwrap_or(0));
    let amount =
        Decimal::try_from_i128_with_scale(units.checked_mul(1_000_000_000)?.checked_add(nanos)?, 9).ok()?;
    Some(Money { currency, amount: amount.normalize() })
}

impl PaymentProvider for GooglePlayProvider {
    fn name(&self) -> &'static str {
        PLATFORM
    }

    fn webhook_name(&self) -> &'static str {
        "google"
    }

    fn needs_platform_login(&self) -> bool {
        true
    }

    fn refunds(&self) -> Refunds {
        Refunds::WholePayments
    }

    fn verify_purchase<'a>(&'a self, proof: &'a PlatformProof) -> BoxFuture<'a, ApiResult<PlatformPurchase>> {
        Box::pin(async move {
            let PlatformProof::GooglePlay(request) = proof else {
                return Err(ApiError::invalid("platform", "Google Play redeems Google Play purchases"));
            };
            self.verify(request).await
        })
    }

    /// `POST …/purchases/products/{product}/tokens/{token}:consume` (or `:acknowledge`). When
    /// Google refuses, the purchase is read again: one consumed (or acknowledged) already is
    /// done.
    fn acknowledge_purchase<'a>(
        &'a self,
        product_id: &'a str,
        purchase_token: &'a str,
        consume: bool,
    ) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let path = Self::product_path(product_id, purchase_token);
            let verb = if consume { ":consume" } else { ":acknowledge" };
            let Err((status, text)) = self.call(Method::POST, &format!("{path}{verb}"), &[]).await? else {
                return Ok(());
            };
            let purchase = self.call(Method::GET, &path, &[]).await?.unwrap_or(Value::Null);
            let done = if consume {
                purchase["consumptionState"].as_i64() == Some(1)
            } else {
                purchase["acknowledgementState"].as_i64() == Some(1)
            };
            if done {
                return Ok(());
            }
            Err(unavailable(&path, &format!("{verb} answered {status}: {text}")))
        })
    }

    fn create_checkout<'a>(&'a self, _request: &'a CheckoutRequest) -> BoxFuture<'a, ApiResult<Checkout>> {
        Box::pin(async {
            Err(ApiError::invalid(
                "provider",
                "Google Play purchases are made with the Play Billing Library and redeemed with POST /v1/platform-purchases/google",
            ))
        })
    }

    /// `POST …/orders/{orderId}:refund?revoke=true`: Google refunds the whole order (and revokes
    /// the purchase); the void that follows books it.
    fn refund<'a>(&'a self, call: &'a RefundCall) -> BoxFuture<'a, ApiResult<RefundAccepted>> {
        Box::pin(async move {
            let path = format!("/orders/{}:refund", urlencode(&call.payment_id));
            match self.call(Method::POST, &path, &[("revoke", "true".to_owned())]).await? {
                Ok(_) => Ok(RefundAccepted { id: format!("google-refund:{}", call.payment_id) }),
                Err((status, text)) => Err(crate::payments::provider::refused(&format!(
                    "Google Play refused the refund ({status}): {text}"
                ))),
            }
        })
    }

    fn prepare_webhook<'a>(&'a self, headers: &'a HeaderMap) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let Some(push) = &self.settings.push else { return Ok(()) };
            let kid = bearer(headers)
                .and_then(|token| token.split('.').next())
                .and_then(|header| URL_SAFE_NO_PAD.decode(header).ok())
                .and_then(|header| serde_json::from_slice::<Value>(&header).ok())
                .and_then(|header| header["kid"].as_str().map(str::to_owned));
            let Some(kid) = kid else { return Ok(()) };
            let stale = {
                let keys = self.push_keys.lock().unwrap_or_else(PoisonError::into_inner);
                // An unknown key is fetched at most once a minute: Google publishes a new key
                // well before it signs with it, and a forger's `kid` must not make us fetch.
                !keys.keys.contains_key(&kid)
                    && keys.fetched_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
            };
            if stale {
                self.fetch_push_keys(push).await?;
            }
            Ok(())
        })
    }

    fn verify_webhook(&self, headers: &HeaderMap, body: &[u8], now_s: i64) -> ApiResult<VerifiedEvent> {
        self.read_notification(headers, body, now_s)
    }

    /// The Voided Purchases API, from the cursor ([`HistoryCursor`]); at most once per
    /// `voided_poll_interval` unless continuing a page.
    fn events_since<'a>(&'a self, cursor: Option<&'a str>) -> BoxFuture<'a, ApiResult<EventPage>> {
        Box::pin(async move {
            let cursor = HistoryCursor::parse(cursor);
            if cursor.page.is_none() && !self.voided_poll.due() {
                return Ok(EventPage { events: Vec::new(), next_cursor: None });
            }
            let now_ms = crate::db::now_micros() / 1_000;
            let earliest = now_ms - VOIDED_WINDOW_MS + 60_000;
            let start = cursor.start_ms.unwrap_or(earliest).max(earliest);
            let (voids, next) =
                self.voided_page(start, cursor.page.as_ref().map(|(_, token)| token.as_str())).await?;
            let mut events = Vec::with_capacity(voids.len());
            let mut latest = start;
            for void in &voids {
                let voided_ms = match &void["voidedTimeMillis"] {
                    Value::String(ms) => ms.parse().ok(),
                    other => other.as_i64(),
                };
                latest = latest.max(voided_ms.unwrap_or(start));
                let id = format!("void:{}", void["orderId"].as_str().unwrap_or_default());
                events.push(self.void_event(void).await.map(|event| VerifiedEvent {
                    id,
                    event_type: format!("voided_purchase.{}", void["voidedReason"].as_i64().unwrap_or(0)),
                    event,
                }));
            }
            let next_cursor = match next {
                Some(token) => HistoryCursor::continued(start, now_ms, &token),
                None => HistoryCursor::after(start, latest.min(now_ms)),
            };
            Ok(EventPage { events, next_cursor: Some(next_cursor) })
        })
    }

    fn session_payment<'a>(
        &'a self,
        _session_id: &'a str,
    ) -> BoxFuture<'a, ApiResult<Option<PaymentReport>>> {
        Box::pin(async { Ok(None) })
    }

    /// A notified void ([`ProviderEvent::PaymentRefunded`]) is looked up in the Voided Purchases
    /// API, which says why, and booked as the poll books it.
    fn resolve<'a>(&'a self, event: ProviderEvent) -> BoxFuture<'a, ApiResult<Vec<ProviderEvent>>> {
        Box::pin(async move {
            match event {
                ProviderEvent::PaymentRefunded { payment_id } => {
                    let void = self.find_void(&payment_id).await?;
                    Ok(vec![self.void_event(&void).await?])
                }
                other => Ok(vec![other]),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_money_reads_units_and_nanos() {
        let money =
            google_money(&serde_json::json!({"currencyCode": "USD", "units": "1", "nanos": 990_000_000}))
                .unwrap();
        assert_eq!(money.to_string(), "1.99 USD");
        let yen = google_money(&serde_json::json!({"currencyCode": "JPY", "units": "160"})).unwrap();
        assert_eq!(yen.amount, Decimal::from(160));
        let cents = google_money(&serde_json::json!({"currencyCode": "EUR", "nanos": 50_000_000})).unwrap();
        assert_eq!(cents.amount, Decimal::new(5, 2));
        assert!(google_money(&serde_json::json!({"currencyCode": "XXX", "units": "1"})).is_none());
        assert!(google_money(&serde_json::json!({"units": "1"})).is_none());
    }
}
