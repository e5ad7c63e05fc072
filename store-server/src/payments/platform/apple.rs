//! App Store purchases: StoreKit 2 signed transactions, verified as Apple's own App Store Server
//! Library verifies them.
//!
//! A signed transaction is a compact JWS (`ES256`) whose header carries the signing chain in
//! `x5c`: the leaf (marked with Apple's OID `1.2.840.113635.100.6.11.1`), the intermediate
//! (`1.2.840.113635.100.6.2.1`, a CA) and the root, which must be one of the configured roots
//! (Apple Root CA - G3 in production; a test authority made at test time in tests). Each
//! certificate must be signed by the next and valid at the transaction's `signedDate`; the JWS
//! signature must verify with the leaf's P-256 key. Only then are the payload's claims read:
//! bundle id, environment, product, type, revocation, quantity, price and currency.

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rust_decimal::Decimal;
use serde_json::Value;
use store_api::{ErrorCode, Money, MoneyCurrency};
use uuid::Uuid;
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::Oid;
use x509_parser::prelude::FromDer as _;
use x509_parser::time::ASN1Time;

use crate::error::{ApiError, ApiResult};
use crate::payments::platform::{HistoryCursor, PlatformPurchase, PollThrottle, proof_invalid};
use crate::payments::provider::{
    BoxFuture, Checkout, CheckoutRequest, EventPage, PaymentProvider, PaymentReport, ProviderEvent,
    RefundAccepted, RefundCall, Refunds, VerifiedEvent, refused,
};

/// The platform's name in orders: `app_store`.
pub const PLATFORM: &str = "app_store";

/// How far back the Notification History reaches (180 days; a minute less, to stay inside).
const HISTORY_WINDOW_MS: i64 = 180 * 24 * 3_600 * 1_000 - 60_000;

/// How far back the first read of the Notification History goes.
const FIRST_HISTORY_MS: i64 = 30 * 24 * 3_600 * 1_000;

/// The longest signed transaction accepted, in bytes (Apple's are a few kilobytes).
pub const SIGNED_TRANSACTION_MAX: usize = 16 * 1024;

/// Apple's marker on the leaf certificate of App Store signed data.
const LEAF_OID: &[u64] = &[1, 2, 840, 113_635, 100, 6, 11, 1];
/// Apple's marker on the intermediate (the Worldwide Developer Relations CA).
const INTERMEDIATE_OID: &[u64] = &[1, 2, 840, 113_635, 100, 6, 2, 1];

/// How the server checks App Store purchases.
#[derive(Clone, PartialEq, Eq)]
pub struct AppleSettings {
    /// The app's bundle id (`com.example.game`).
    pub bundle_id: String,
    /// `Production` or `Sandbox`: a transaction of the other environment is refused.
    pub environment: String,
    /// The trusted roots, DER (Apple Root CA - G3 from apple.com/certificateauthority).
    pub root_certificates: Vec<Vec<u8>>,
    /// Apple's commission in percent, booked as the fee (30; 15 under the Small Business
    /// Program).
    pub commission_percent: u8,
    /// The App Store Server API, when configured: consumption requests are answered through it.
    pub server_api: Option<AppStoreServerApi>,
}

/// How the server reaches the App Store Server API: an In-App Purchase key from App Store
/// Connect (Users and Access → Integrations → In-App Purchase).
#[derive(Clone, PartialEq, Eq)]
pub struct AppStoreServerApi {
    /// `https://api.storekit.apple.com` (`https://api.storekit-sandbox.apple.com` for Sandbox).
    pub url: String,
    /// The issuer id shown above the keys.
    pub issuer_id: String,
    /// The key's id.
    pub key_id: String,
    /// The key (`SubscriptionKey_….p8`), PKCS #8 DER.
    pub private_key: Vec<u8>,
    /// Whether the studio's terms obtain the player's consent to share consumption data with
    /// Apple (`customerConsented`).
    pub customer_consented: bool,
    /// How often, at most, reconciliation reads the Notification History.
    pub history_poll_interval: std::time::Duration,
}

impl std::fmt::Debug for AppStoreServerApi {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AppStoreServerApi")
            .field("url", &self.url)
            .field("issuer_id", &self.issuer_id)
            .field("key_id", &self.key_id)
            .field("private_key", &"<redacted>")
            .field("customer_consented", &self.customer_consented)
            .field("history_poll_interval", &self.history_poll_interval)
            .finish()
    }
}

/// A bearer token for the App Store Server API: a JWT (`ES256`, `kid`) with `iss`, `iat`, `exp`
/// (five minutes), `aud: appstoreconnect-v1` and `bid`, signed with the In-App Purchase key.
fn api_token(api: &AppStoreServerApi, bundle_id: &str, now_s: i64) -> ApiResult<String> {
    let header = serde_json::json!({ "alg": "ES256", "kid": api.key_id, "typ": "JWT" });
    let claims = serde_json::json!({
        "iss": api.issuer_id, "iat": now_s, "exp": now_s + 300, "aud": "appstoreconnect-v1", "bid": bundle_id,
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let rng = ring::rand::SystemRandom::new();
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &api.private_key,
        &rng,
    )
    .map_err(|_| {
        ApiError::Internal(anyhow::anyhow!("the App Store Server API key is not a P-256 PKCS #8 key"))
    })?;
    let signature = key
        .sign(&rng, input.as_bytes())
        .map_err(|_| ApiError::Internal(anyhow::anyhow!("the App Store Server API key cannot sign")))?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref())))
}

impl std::fmt::Debug for AppleSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AppleSettings")
            .field("bundle_id", &self.bundle_id)
            .field("environment", &self.environment)
            .field("root_certificates", &self.root_certificates.len())
            .field("commission_percent", &self.commission_percent)
            .field("server_api", &self.server_api)
            .finish()
    }
}

/// A transaction the App Store signed, verified and checked against the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppleTransaction {
    /// Unique per purchase: redeemed once.
    pub transaction_id: String,
    /// The App Store product id bought.
    pub product_id: String,
    /// How many.
    pub quantity: i64,
    /// What the player paid (`price` in milliunits, `currency`).
    pub price: Money,
    /// The UUID the game set when it started the purchase (`appAccountToken`), if any.
    pub app_account_token: Option<Uuid>,
}

fn oid(arcs: &[u64]) -> ApiResult<Oid<'static>> {
    Oid::from(arcs).map_err(|_| ApiError::Internal(anyhow::anyhow!("a malformed OID constant")))
}

/// Verifies App Store signed data (a transaction, a notification) and returns its payload.
///
/// # Errors
/// `platform_proof_invalid` with `reason`: `format` (not a JWS of Apple's shape), `chain` (a
/// certificate missing, foreign, not Apple's, unsigned by the next or expired at the signing
/// date) or `signature`.
pub fn verify_signed_data(settings: &AppleSettings, jws: &str) -> ApiResult<Value> {
    let format = |what: &str| proof_invalid("format", format!("the signed data is not a JWS: {what}"));
    let mut parts = jws.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format("it has not three parts"));
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| format("a part is not base64url"));
    let header_json: Value =
        serde_json::from_slice(&decode(header)?).map_err(|_| format("its header is not JSON"))?;
    let payload_bytes = decode(payload)?;
    let claims: Value =
        serde_json::from_slice(&payload_bytes).map_err(|_| format("its payload is not JSON"))?;
    if header_json["alg"].as_str() != Some("ES256") {
        return Err(format("its algorithm is not ES256"));
    }
    let chain: Vec<Vec<u8>> = header_json["x5c"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|entry| entry.as_str().and_then(|text| STANDARD.decode(text).ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| format("x5c is not a list of base64 certificates"))?;
    // Apple signs at `signedDate` (milliseconds); the chain must be valid then.
    let signed_s = claims["signedDate"]
        .as_i64()
        .or_else(|| claims["receiptCreationDate"].as_i64())
        .map(|ms| ms / 1_000)
        .ok_or_else(|| format("it has no signedDate"))?;
    let leaf_key = verify_chain(settings, &chain, signed_s)?;
    let signature = decode(signature)?;
    let signed = format!("{header}.{payload}");
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &leaf_key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| proof_invalid("signature", "the signature does not match the signed data"))?;
    Ok(claims)
}

/// Checks `x5c` (leaf, intermediate, root) and returns the leaf's public key.
fn verify_chain(settings: &AppleSettings, chain: &[Vec<u8>], at_s: i64) -> ApiResult<Vec<u8>> {
    let bad = |message: &str| proof_invalid("chain", message.to_owned());
    let [leaf, intermediate, root] = chain else {
        return Err(bad("x5c must hold the leaf, the intermediate and the root"));
    };
    if !settings.root_certificates.iter().any(|trusted| trusted == root) {
        return Err(bad("the chain does not end at a trusted root"));
    }
    let (leaf, intermediate, root) = (parse(leaf)?, parse(intermediate)?, parse(root)?);
    let at = ASN1Time::from_timestamp(at_s).map_err(|_| bad("the signing date is out of range"))?;
    for certificate in [&leaf, &intermediate, &root] {
        if !certificate.validity().is_valid_at(at) {
            return Err(bad("a certificate of the chain was not valid at the signing date"));
        }
    }
    leaf.verify_signature(Some(intermediate.public_key()))
        .and_then(|()| intermediate.verify_signature(Some(root.public_key())))
        .map_err(|_| bad("a certificate is not signed by the next one"))?;
    if !intermediate.is_ca() {
        return Err(bad("the intermediate is not a certificate authority"));
    }
    let marked = |certificate: &X509Certificate<'_>, arcs: &[u64]| -> ApiResult<bool> {
        let wanted = oid(arcs)?;
        Ok(certificate.iter_extensions().any(|extension| extension.oid == wanted))
    };
    if !marked(&leaf, LEAF_OID)? || !marked(&intermediate, INTERMEDIATE_OID)? {
        return Err(bad("the chain is not Apple's App Store signing chain"));
    }
    Ok(leaf.public_key().subject_public_key.data.to_vec())
}

fn parse(der: &[u8]) -> ApiResult<X509Certificate<'_>> {
    X509Certificate::from_der(der)
        .map(|(_, certificate)| certificate)
        .map_err(|_| proof_invalid("chain", "a certificate does not parse"))
}

/// Verifies a StoreKit 2 signed transaction and checks it is this app's, of this environment, a
/// one-time purchase (consumable or not) and not revoked.
///
/// # Errors
/// `platform_proof_invalid` (`reason`: as [`verify_signed_data`], and `bundle_id`,
/// `environment`, `type`, `revoked`, `price`).
pub fn verify_transaction(settings: &AppleSettings, jws: &str) -> ApiResult<AppleTransaction> {
    if jws.len() > SIGNED_TRANSACTION_MAX {
        return Err(ApiError::invalid(
            "signed_transaction",
            format!("at most {SIGNED_TRANSACTION_MAX} bytes"),
        ));
    }
    let claims = verify_signed_data(settings, jws)?;
    let text = |field: &str| claims[field].as_str().map(str::to_owned);
    if text("bundleId").as_deref() != Some(settings.bundle_id.as_str()) {
        return Err(proof_invalid("bundle_id", "the transaction is another app's"));
    }
    if text("environment").as_deref() != Some(settings.environment.as_str()) {
        return Err(proof_invalid(
            "environment",
            format!("the transaction is not of the {} environment", settings.environment),
        ));
    }
    if !matches!(text("type").as_deref(), Some("Consumable" | "Non-Consumable")) {
        return Err(proof_invalid("type", "only one-time purchases (consumable or not) are redeemed here"));
    }
    if claims.get("revocationDate").is_some_and(|date| !date.is_null()) {
        return Err(proof_invalid("revoked", "Apple revoked this transaction"));
    }
    let missing = |field: &str| proof_invalid("format", format!("the transaction has no {field}"));
    let transaction_id = text("transactionId").ok_or_else(|| missing("transactionId"))?;
    let product_id = text("productId").ok_or_else(|| missing("productId"))?;
    let quantity = claims["quantity"].as_i64().filter(|quantity| (1..=100).contains(quantity)).unwrap_or(1);
    let currency = text("currency").and_then(|code| MoneyCurrency::parse(&code).ok()).ok_or_else(|| {
        proof_invalid("price", "the transaction's currency is missing or unknown to this store")
    })?;
    let milliunits = claims["price"]
        .as_i64()
        .filter(|price| *price > 0)
        .ok_or_else(|| proof_invalid("price", "the transaction has no positive price"))?;
    let app_account_token = text("appAccountToken").and_then(|token| Uuid::parse_str(&token).ok());
    Ok(AppleTransaction {
        transaction_id,
        product_id,
        quantity,
        price: Money { currency, amount: Decimal::new(milliunits, 3).normalize() },
        app_account_token,
    })
}

/// The App Store as a provider of the store's orders: purchases come by redemption, refunds at
/// the player's request only, and App Store Server Notifications V2 (`POST /v1/webhooks/apple`)
/// report them: `REFUND` and `REVOKE` (Family Sharing withdrawn) take the money and the grant
/// back like a lost dispute. Every notification is verified like a transaction (its
/// `signedPayload`, then the `signedTransactionInfo` inside) and applied once per
/// `notificationUUID`.
#[derive(Debug)]
pub struct AppStoreProvider {
    settings: AppleSettings,
    http: reqwest::Client,
    history_poll: PollThrottle,
}

impl AppStoreProvider {
    /// The provider for these settings.
    #[must_use]
    pub fn new(settings: AppleSettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        let every =
            settings.server_api.as_ref().map_or(std::time::Duration::ZERO, |api| api.history_poll_interval);
        Self { settings, http, history_poll: PollThrottle::new(every) }
    }

    /// Calls the App Store Server API with a fresh bearer JWT; the answer's body (JSON, or null
    /// when empty).
    ///
    /// # Errors
    /// `502 provider_unavailable` when Apple cannot be reached or does not answer 2xx.
    async fn api_call(
        &self,
        api: &AppStoreServerApi,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: &Value,
    ) -> ApiResult<Value> {
        let token = api_token(api, &self.settings.bundle_id, crate::db::now_micros() / 1_000_000)?;
        let response = self
            .http
            .request(method, format!("{}{path}", api.url.trim_end_matches('/')))
            .bearer_auth(token)
            .query(query)
            .json(body)
            .send()
            .await
            .map_err(|error| {
                crate::payments::provider::unavailable(path, &format!("unreachable: {error}"))
            })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(crate::payments::provider::unavailable(path, &format!("answered {status}: {text}")));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// A notification that does not verify is refused as a forged webhook.
fn forged(error: ApiError) -> ApiError {
    let ApiError::Client { details, .. } = &error else { return error };
    let reason = details.get("reason").and_then(Value::as_str).unwrap_or("format").to_owned();
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::WebhookSignatureInvalid,
        format!("the notification does not verify ({reason})"),
    )
    .with_detail("reason", reason)
}

impl AppStoreProvider {
    /// The id of the transaction a notification's `signedTransactionInfo` carries, verified.
    fn transaction_in(&self, data: &Value) -> ApiResult<String> {
        let signed = data["signedTransactionInfo"]
            .as_str()
            .ok_or_else(|| forged(proof_invalid("format", "a notification without its transaction")))?;
        let transaction = verify_signed_data(&self.settings, signed).map_err(forged)?;
        if transaction["bundleId"].as_str() != Some(self.settings.bundle_id.as_str()) {
            return Err(forged(proof_invalid("bundle_id", "another app's transaction")));
        }
        transaction["transactionId"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| forged(proof_invalid("format", "a transaction without transactionId")))
    }

    fn read_notification(&self, body: &[u8]) -> ApiResult<VerifiedEvent> {
        #[derive(serde::Deserialize)]
        struct Body {
            #[serde(rename = "signedPayload")]
            signed_payload: String,
        }
        let body: Body = serde_json::from_slice(body).map_err(|_| {
            ApiError::invalid("signedPayload", "a notification is {\"signedPayload\": \"<JWS>\"}")
        })?;
        let notification = verify_signed_data(&self.settings, &body.signed_payload).map_err(forged)?;
        let data = &notification["data"];
        if data["bundleId"].as_str() != Some(self.settings.bundle_id.as_str()) {
            return Err(forged(proof_invalid("bundle_id", "another app's notification")));
        }
        if data["environment"].as_str() != Some(self.settings.environment.as_str()) {
            return Err(forged(proof_invalid("environment", "another environment's notification")));
        }
        let id = notification["notificationUUID"]
            .as_str()
            .ok_or_else(|| forged(proof_invalid("format", "a notification without notificationUUID")))?
            .to_owned();
        let kind = notification["notificationType"].as_str().unwrap_or_default().to_owned();
        let event_type = match notification["subtype"].as_str() {
            Some(subtype) => format!("{kind}.{subtype}"),
            None => kind.clone(),
        };
        let event = match kind.as_str() {
            "REFUND" | "REVOKE" => {
                ProviderEvent::PaymentDisputed { payment_id: self.transaction_in(data)?, amount: None }
            }
            // Answered only when the App Store Server API is configured.
            "CONSUMPTION_REQUEST" if self.settings.server_api.is_some() => {
                let transaction_id = self.transaction_in(data)?;
                ProviderEvent::ConsumptionRequested { payment_id: transaction_id }
            }
            _ => ProviderEvent::Ignored,
        };
        Ok(VerifiedEvent { id, event_type, event })
    }
}

impl PaymentProvider for AppStoreProvider {
    fn name(&self) -> &'static str {
        PLATFORM
    }

    fn webhook_name(&self) -> &'static str {
        "apple"
    }

    fn needs_platform_login(&self) -> bool {
        true
    }

    fn refunds(&self) -> Refunds {
        Refunds::AtThePlayersRequest
    }

    fn verify_purchase<'a>(
        &'a self,
        proof: &'a store_api::orders::PlatformProof,
    ) -> BoxFuture<'a, ApiResult<PlatformPurchase>> {
        Box::pin(async move {
            let store_api::orders::PlatformProof::AppStore(request) = proof else {
                return Err(ApiError::invalid("platform", "the App Store redeems App Store transactions"));
            };
            let transaction = verify_transaction(&self.settings, &request.signed_transaction)?;
            let fee = crate::payments::fees::share(
                transaction.price,
                Decimal::from(self.settings.commission_percent),
            );
            Ok(PlatformPurchase {
                platform: PLATFORM,
                transaction_id: transaction.transaction_id,
                product_id: transaction.product_id,
                quantity: transaction.quantity,
                price: transaction.price,
                fee,
                bought_for: transaction.app_account_token,
                acknowledgement: None,
            })
        })
    }

    fn create_checkout<'a>(&'a self, _request: &'a CheckoutRequest) -> BoxFuture<'a, ApiResult<Checkout>> {
        Box::pin(async {
            Err(ApiError::invalid(
                "provider",
                "App Store purchases are made with StoreKit and redeemed with POST /v1/platform-purchases/apple",
            ))
        })
    }

    fn refund<'a>(&'a self, _call: &'a RefundCall) -> BoxFuture<'a, ApiResult<RefundAccepted>> {
        Box::pin(async { Err(refused("the App Store refunds only at the player's request")) })
    }

    fn verify_webhook(&self, _headers: &HeaderMap, body: &[u8], _now_s: i64) -> ApiResult<VerifiedEvent> {
        self.read_notification(body)
    }

    /// The Notification History (`POST /inApps/v1/notifications/history`, `startDate` and
    /// `endDate` in milliseconds, twenty a page), when the App Store Server API is configured:
    /// every notification Apple sent, or tried to, read back and applied like a webhook (once
    /// per `notificationUUID`), so a notification lost for good is still booked. At most once per
    /// `history_poll_interval` unless continuing a page; the first read goes back 30 days.
    fn events_since<'a>(&'a self, cursor: Option<&'a str>) -> BoxFuture<'a, ApiResult<EventPage>> {
        Box::pin(async move {
            let Some(api) = &self.settings.server_api else {
                return Ok(EventPage { events: Vec::new(), next_cursor: None });
            };
            let cursor = HistoryCursor::parse(cursor);
            if cursor.page.is_none() && !self.history_poll.due() {
                return Ok(EventPage { events: Vec::new(), next_cursor: None });
            }
            let now_ms = crate::db::now_micros() / 1_000;
            let earliest = now_ms - HISTORY_WINDOW_MS;
            let start = cursor.start_ms.unwrap_or(now_ms - FIRST_HISTORY_MS).max(earliest);
            let end = cursor.page.as_ref().map_or(now_ms, |(end, _)| *end);
            let query: Vec<(&str, String)> =
                cursor.page.iter().map(|(_, token)| ("paginationToken", token.clone())).collect();
            let page = self
                .api_call(
                    api,
                    reqwest::Method::POST,
                    "/inApps/v1/notifications/history",
                    &query,
                    &serde_json::json!({ "startDate": start, "endDate": end }),
                )
                .await?;
            let mut events = Vec::new();
            for item in page["notificationHistory"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let body = serde_json::json!({ "signedPayload": item["signedPayload"] }).to_string();
                events.push(self.read_notification(body.as_bytes()));
            }
            let next_cursor = match page["paginationToken"].as_str() {
                Some(token) if page["hasMore"] == Value::Bool(true) => {
                    HistoryCursor::continued(start, end, token)
                }
                _ => HistoryCursor::after(start, end),
            };
            Ok(EventPage { events, next_cursor: Some(next_cursor) })
        })
    }

    /// `PUT /inApps/v2/transactions/consumption/{transactionId}` with `customerConsented` (the
    /// setting), `sampleContentProvided: false` and `deliveryStatus` (`DELIVERED` when the order
    /// was fulfilled, else `UNDELIVERED_OTHER`). `consumptionPercentage` is not sent.
    fn answer_consumption<'a>(
        &'a self,
        payment_id: &'a str,
        delivered: bool,
    ) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let Some(api) = &self.settings.server_api else { return Ok(()) };
            let path = format!(
                "/inApps/v2/transactions/consumption/{}",
                crate::payments::provider::urlencode(payment_id)
            );
            let body = serde_json::json!({
                "customerConsented": api.customer_consented,
                "sampleContentProvided": false,
                "deliveryStatus": if delivered { "DELIVERED" } else { "UNDELIVERED_OTHER" },
            });
            self.api_call(api, reqwest::Method::PUT, &path, &[], &body).await?;
            Ok(())
        })
    }

    fn session_payment<'a>(
        &'a self,
        _session_id: &'a str,
    ) -> BoxFuture<'a, ApiResult<Option<PaymentReport>>> {
        Box::pin(async { Ok(None) })
    }
}
