//! The App Store's signing, made at test time: a certificate authority shaped like Apple's (a
//! root, an intermediate marked `1.2.840.113635.100.6.2.1`, a P-256 leaf marked
//! `1.2.840.113635.100.6.11.1`) and StoreKit 2 signed transactions (`ES256` compact JWS with the
//! chain in `x5c`) as the App Store makes them. The store trusts this root the way production
//! trusts Apple Root CA - G3 (the roots are configuration, as in Apple's own libraries).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::{BasicConstraints, CertificateParams, CustomExtension, IsCa, KeyPair};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::{Value, json};

/// The bundle id of the test app.
pub const BUNDLE_ID: &str = "com.coinslot.coincatcher";

const LEAF_OID: &[u64] = &[1, 2, 840, 113_635, 100, 6, 11, 1];
const INTERMEDIATE_OID: &[u64] = &[1, 2, 840, 113_635, 100, 6, 2, 1];

/// Which leaf certificate signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaf {
    /// Apple's shape, valid now.
    Valid,
    /// Expired a year ago.
    Expired,
    /// Without Apple's marker extension.
    Unmarked,
}

/// A signing authority: root, intermediate and leaves.
#[derive(Debug)]
pub struct AppleSigner {
    root: Vec<u8>,
    intermediate: Vec<u8>,
    /// Each leaf's certificate (DER) and key (PKCS #8).
    leaves: Vec<(Leaf, Vec<u8>, Vec<u8>)>,
}

fn marker(arcs: &[u64]) -> CustomExtension {
    // An empty marker (`NULL`), as Apple's certificates carry it.
    CustomExtension::from_oid_content(arcs, vec![0x05, 0x00])
}

fn params(name: &str, days: (i64, i64)) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("parameters");
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(days.0);
    params.not_after = now + time::Duration::days(days.1);
    params
}

fn key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a P-256 key")
}

impl Default for AppleSigner {
    fn default() -> Self {
        Self::new()
    }
}

impl AppleSigner {
    /// A new authority with its own root (another instance is a foreign root).
    ///
    /// # Panics
    /// When a certificate cannot be made.
    #[must_use]
    pub fn new() -> Self {
        let root_key = key();
        let mut root = params("Test Root CA - G3", (-3_650, 3_650));
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = root.self_signed(&root_key).expect("the root");
        let intermediate_key = key();
        let mut intermediate = params("Test Worldwide Developer Relations CA - G6", (-1_000, 1_000));
        intermediate.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        intermediate.custom_extensions.push(marker(INTERMEDIATE_OID));
        let intermediate =
            intermediate.signed_by(&intermediate_key, &root, &root_key).expect("the intermediate");
        let leaves = [
            (Leaf::Valid, (-30, 365), true),
            (Leaf::Expired, (-400, -365), true),
            (Leaf::Unmarked, (-30, 365), false),
        ]
        .into_iter()
        .map(|(kind, days, marked)| {
            let leaf_key = key();
            let mut leaf = params("Test Mac App Store and iTunes Store Receipt Signing", days);
            if marked {
                leaf.custom_extensions.push(marker(LEAF_OID));
            }
            let leaf = leaf.signed_by(&leaf_key, &intermediate, &intermediate_key).expect("the leaf");
            (kind, leaf.der().to_vec(), leaf_key.serialize_der())
        })
        .collect();
        Self { root: root.der().to_vec(), intermediate: intermediate.der().to_vec(), leaves }
    }

    /// The root, DER: what the store is configured to trust.
    #[must_use]
    pub fn root_der(&self) -> Vec<u8> {
        self.root.clone()
    }

    /// The store's settings trusting this root, for [`BUNDLE_ID`] in `environment`.
    #[must_use]
    pub fn settings(&self, environment: &str) -> store_server::payments::platform::apple::AppleSettings {
        store_server::payments::platform::apple::AppleSettings {
            bundle_id: BUNDLE_ID.to_owned(),
            environment: environment.to_owned(),
            root_certificates: vec![self.root_der()],
            commission_percent: 30,
            server_api: None,
        }
    }

    /// `payload` signed as the App Store signs it, by `leaf`.
    ///
    /// # Panics
    /// When the key cannot sign.
    #[must_use]
    pub fn sign_with(&self, leaf: Leaf, payload: &Value) -> String {
        let (_, certificate, pkcs8) = self.leaves.iter().find(|(kind, ..)| *kind == leaf).expect("the leaf");
        let chain = [certificate, &self.intermediate, &self.root];
        let header = json!({ "alg": "ES256", "x5c": chain.iter().map(|der| STANDARD.encode(der)).collect::<Vec<_>>() });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let rng = ring::rand::SystemRandom::new();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng).expect("the leaf's key");
        let signature = key.sign(&rng, signing_input.as_bytes()).expect("a signature");
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    /// `payload` signed by the valid leaf.
    #[must_use]
    pub fn sign(&self, payload: &Value) -> String {
        self.sign_with(Leaf::Valid, payload)
    }
}

/// A StoreKit 2 transaction of [`BUNDLE_ID`] in `environment`, for `product_id`, bought for
/// `price_milliunits` of `currency`, signed now.
#[must_use]
pub fn transaction(
    transaction_id: &str,
    product_id: &str,
    price_milliunits: i64,
    currency: &str,
    environment: &str,
) -> Value {
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1_000;
    json!({
        "transactionId": transaction_id,
        "originalTransactionId": transaction_id,
        "webOrderLineItemId": null,
        "bundleId": BUNDLE_ID,
        "productId": product_id,
        "purchaseDate": now_ms - 5_000,
        "originalPurchaseDate": now_ms - 5_000,
        "quantity": 1,
        "type": "Consumable",
        "inAppOwnershipType": "PURCHASED",
        "signedDate": now_ms,
        "environment": environment,
        "transactionReason": "PURCHASE",
        "storefront": "USA",
        "storefrontId": "143441",
        "price": price_milliunits,
        "currency": currency,
    })
}

/// An App Store Server Notification V2 payload (to be signed with [`AppleSigner::sign`]) of
/// `kind` (`REFUND`, `REVOKE`, `CONSUMPTION_REQUEST`…) about the signed transaction `signed`.
#[must_use]
pub fn notification(uuid: &str, kind: &str, signed_transaction: &str, environment: &str) -> Value {
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1_000;
    json!({
        "notificationType": kind,
        "notificationUUID": uuid,
        "data": {
            "appAppleId": 1_234_567_890,
            "bundleId": BUNDLE_ID,
            "bundleVersion": "1.0",
            "environment": environment,
            "signedTransactionInfo": signed_transaction,
            "status": 1,
        },
        "version": "2.0",
        "signedDate": now_ms,
    })
}

/// A local stand-in for the App Store Server API's `PUT /inApps/v2/transactions/consumption/{id}`,
/// as Apple documents it: a bearer JWT (`ES256`, `kid`; `iss`, `iat`, `exp` at most an hour ahead,
/// `aud: appstoreconnect-v1`, `bid`) signed with the In-App Purchase key made here, and a body
/// with `customerConsented`, `sampleContentProvided` and `deliveryStatus`. Answers `202`.
#[derive(Debug)]
pub struct AppStoreApiStandIn {
    base_url: String,
    key_pkcs8: Vec<u8>,
    answers: std::sync::Arc<std::sync::Mutex<ApiState>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct ApiState {
    public_key: Vec<u8>,
    received: Vec<(String, Value)>,
    failures: u32,
    /// Notifications Apple sent (or tried to): when, and the `signedPayload`.
    history: Vec<(i64, String)>,
    history_requests: Vec<Value>,
    /// Notifications a history page holds (Apple: 20).
    history_page: usize,
}

/// How many notifications a page of the Notification History holds, as Apple documents.
const HISTORY_PAGE: usize = 20;

impl ApiState {
    fn page_size(&self) -> usize {
        if self.history_page == 0 { HISTORY_PAGE } else { self.history_page }
    }
}

/// The stand-in's issuer and key ids.
pub const ISSUER_ID: &str = "57246542-96fe-1a63-e053-0824d011072a";
/// The key id.
pub const KEY_ID: &str = "2X9R4HXF34";

impl Drop for AppStoreApiStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn api_error(status: axum::http::StatusCode, code: i64, message: &str) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (status, axum::Json(json!({ "errorCode": code, "errorMessage": message }))).into_response()
}

/// Whether the request carries a bearer JWT Apple would accept: `ES256` with the stand-in's key
/// and id, the issuer, `aud: appstoreconnect-v1`, the bundle id, and at most an hour to live.
fn authorized(state: &ApiState, headers: &axum::http::HeaderMap) -> bool {
    let Some(token) = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
    else {
        return false;
    };
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else { return false };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).ok();
    let (Some(header_json), Some(claims_json), Some(signature)) =
        (decode(header), decode(claims), decode(signature))
    else {
        return false;
    };
    let verified =
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &state.public_key)
            .verify(format!("{header}.{claims}").as_bytes(), &signature)
            .is_ok();
    let header_json: Value = serde_json::from_slice(&header_json).unwrap_or_default();
    let claims_json: Value = serde_json::from_slice(&claims_json).unwrap_or_default();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let exp = claims_json["exp"].as_i64().unwrap_or(0);
    verified
        && header_json["alg"] == "ES256"
        && header_json["kid"] == KEY_ID
        && claims_json["iss"] == ISSUER_ID
        && claims_json["aud"] == "appstoreconnect-v1"
        && claims_json["bid"] == BUNDLE_ID
        && exp > now
        && exp <= now + 3_600
}

async fn consumption(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<std::sync::Mutex<ApiState>>>,
    axum::extract::Path(transaction_id): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse as _;
    let mut state = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if state.failures > 0 {
        state.failures -= 1;
        return api_error(StatusCode::INTERNAL_SERVER_ERROR, 5_000_000, "An unknown error occurred.");
    }
    if !authorized(&state, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return api_error(StatusCode::BAD_REQUEST, 4_000_000, "Invalid request.");
    };
    let statuses = [
        "DELIVERED",
        "UNDELIVERED_QUALITY_ISSUE",
        "UNDELIVERED_WRONG_ITEM",
        "UNDELIVERED_SERVER_OUTAGE",
        "UNDELIVERED_OTHER",
    ];
    if !request["customerConsented"].is_boolean()
        || !request["sampleContentProvided"].is_boolean()
        || !request["deliveryStatus"].as_str().is_some_and(|status| statuses.contains(&status))
    {
        return api_error(StatusCode::BAD_REQUEST, 4_000_000, "Invalid request.");
    }
    state.received.push((transaction_id, request));
    StatusCode::ACCEPTED.into_response()
}

async fn notification_history(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<std::sync::Mutex<ApiState>>>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse as _;
    let mut state = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !authorized(&state, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let (Some(start), Some(end)) = (request["startDate"].as_i64(), request["endDate"].as_i64()) else {
        return api_error(StatusCode::BAD_REQUEST, 4_000_003, "Invalid start date or end date.");
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1_000;
    if start >= end || start < now - 180 * 24 * 3_600 * 1_000 {
        return api_error(StatusCode::BAD_REQUEST, 4_000_003, "Invalid start date or end date.");
    }
    state.history_requests.push(request);
    let offset: usize = query.get("paginationToken").and_then(|token| token.parse().ok()).unwrap_or(0);
    let sent: Vec<&String> = state
        .history
        .iter()
        .filter(|(at, _)| (start..end).contains(at))
        .map(|(_, payload)| payload)
        .collect();
    let page: Vec<Value> = sent
        .iter()
        .skip(offset)
        .take(state.page_size())
        .map(|payload| json!({ "signedPayload": payload, "sendAttempts": [{"attemptDate": now, "sendAttemptResult": "TIMED_OUT"}] }))
        .collect();
    let more = offset + state.page_size() < sent.len();
    let mut answer = json!({ "notificationHistory": page, "hasMore": more });
    if more {
        answer["paginationToken"] = json!((offset + state.page_size()).to_string());
    }
    axum::Json(answer).into_response()
}

impl AppStoreApiStandIn {
    /// Starts the stand-in on a free loopback port, with a new In-App Purchase key.
    ///
    /// # Panics
    /// When no port can be bound or no key made.
    pub async fn start() -> Self {
        let key = key();
        let answers = std::sync::Arc::new(std::sync::Mutex::new(ApiState {
            public_key: key.public_key_raw().to_vec(),
            ..ApiState::default()
        }));
        let router = axum::Router::new()
            .route("/inApps/v2/transactions/consumption/{id}", axum::routing::put(consumption))
            .route("/inApps/v1/notifications/history", axum::routing::post(notification_history))
            .with_state(answers.clone());
        let (base_url, task) = crate::serve_on_loopback(router).await;
        Self { base_url, key_pkcs8: key.serialize_der(), answers, task }
    }

    /// The store's App Store Server API settings for this stand-in.
    #[must_use]
    pub fn settings(
        &self,
        customer_consented: bool,
    ) -> store_server::payments::platform::apple::AppStoreServerApi {
        store_server::payments::platform::apple::AppStoreServerApi {
            url: self.base_url.clone(),
            issuer_id: ISSUER_ID.to_owned(),
            key_id: KEY_ID.to_owned(),
            private_key: self.key_pkcs8.clone(),
            customer_consented,
            history_poll_interval: std::time::Duration::ZERO,
        }
    }

    /// Apple sent a notification (its `signedPayload`) that the store never received: it is in
    /// the Notification History from now on.
    pub fn sent_but_lost(&self, signed_payload: &str) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1_000;
        self.answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .history
            .push((now, signed_payload.to_owned()));
    }

    /// How many notifications a history page holds (to page through few).
    pub fn set_history_page_size(&self, size: usize) {
        self.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).history_page = size;
    }

    /// The Notification History requests' bodies.
    #[must_use]
    pub fn history_requests(&self) -> Vec<Value> {
        self.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).history_requests.clone()
    }

    /// The next `failures` calls answer `500`.
    pub fn fail_next(&self, failures: u32) {
        self.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).failures = failures;
    }

    /// The consumption answers received: transaction id and body.
    #[must_use]
    pub fn received(&self) -> Vec<(String, Value)> {
        self.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).received.clone()
    }
}
