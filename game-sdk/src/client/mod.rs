//! `StoreClient`: the Bevy-free async client for the store server's player routes.
//!
//! It speaks `store-api` types over reqwest, turns every failed answer into a typed
//! [`StoreError`] by the server's error code, retries transport failures (never business errors)
//! with backoff, and verifies receipts before it reports a purchase, a reward or a fulfilled
//! order. Plain Rust programs use it directly; the Bevy plugin runs it on its own thread.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::header::{ETAG, HeaderValue, IF_NONE_MATCH};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use store_api::analytics::{StoreViewedRequest, StoreViewedResult};
use store_api::auth::{DeviceLoginRequest, Session, SteamLoginRequest};
use store_api::catalog::{Catalog, Sku};
use store_api::ledger::{
    ConsumeRequest, ConsumeResult, HistoryPage, Inventory, PurchaseRequest, PurchaseResult,
    RewardClaimRequest, RewardClaimResult, Wallet,
};
use store_api::orders::{
    CreateOrderRequest, Order, OrderPage, PlatformProof, SettleTabRequest, SteamAuthorization, TabList,
};
use store_api::receipt::{ReceiptKey, ReceiptKeys, ReceiptPayload, SignedReceipt, verify_receipt};
use store_api::sandbox::{PayRequest, PayResult};
use store_api::{ErrorBody, ErrorCode};
use uuid::Uuid;

use crate::events::EventStream;

pub mod errors;

pub use errors::*;

/// How long one HTTP request may take before it counts as a transport failure.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// How long connecting may take.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3);

/// The catalog, or word that the copy held is still current.
#[derive(Debug, Clone, PartialEq)]
pub enum CatalogFetch {
    /// The `ETag` sent still matches: keep the catalog held.
    Unchanged,
    /// The catalog and its `ETag`.
    Changed {
        /// The catalog as this player sees it (regional prices and price variants applied).
        catalog: Box<Catalog>,
        /// Send it back to be told when nothing changed.
        etag: Option<String>,
    },
}

/// A purchase whose receipt verified.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedPurchase {
    /// The server's answer.
    pub result: PurchaseResult,
    /// What the receipt states, checked against the server's keys.
    pub receipt: ReceiptPayload,
}

/// A reward claim whose receipt verified.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedReward {
    /// The server's answer.
    pub result: RewardClaimResult,
    /// What the receipt states, checked against the server's keys.
    pub receipt: ReceiptPayload,
}

/// The async client. Cheap to clone: clones share the connection pool, the session and the
/// receipt keys.
#[derive(Debug, Clone)]
pub struct StoreClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base_url: String,
    retry: RetryPolicy,
    session: Mutex<Option<Session>>,
    receipt_keys: Mutex<Vec<ReceiptKey>>,
}

impl StoreClient {
    /// A client for the server at `base_url` (`http://127.0.0.1:8080`), with the default
    /// timeouts and retry policy.
    ///
    /// # Errors
    /// Fails when the HTTP client cannot be built (no TLS backend).
    pub fn new(base_url: &str) -> StoreResult<Self> {
        Self::with_retry(base_url, RetryPolicy::default())
    }

    /// A client with its own retry policy.
    ///
    /// # Errors
    /// Fails when the HTTP client cannot be built (no TLS backend).
    pub fn with_retry(base_url: &str, retry: RetryPolicy) -> StoreResult<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT_DEFAULT)
            .connect_timeout(CONNECT_TIMEOUT_DEFAULT)
            .build()
            .map_err(|error| StoreError::Transport(error.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base_url: base_url.trim_end_matches('/').to_owned(),
                retry: RetryPolicy { attempts_max: retry.attempts_max.max(1), ..retry },
                session: Mutex::new(None),
                receipt_keys: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The server's address.
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The current session, after a login.
    #[must_use]
    pub fn session(&self) -> Option<Session> {
        self.inner.session.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Logs in as a device (creating the player on first sight) and keeps the session token
    /// for the calls that follow.
    ///
    /// # Errors
    /// The server's refusal (`invalid_request` for a bad device id) or a transport failure.
    pub async fn login(&self, request: &DeviceLoginRequest) -> StoreResult<Session> {
        let session: Session =
            self.send_json(Method::POST, "/v1/auth/device", Some(request), None, false).await?;
        *self.inner.session.lock().unwrap_or_else(PoisonError::into_inner) = Some(session.clone());
        Ok(session)
    }

    /// Logs in with a Steam session ticket (`GetAuthTicketForWebApi("coinslot")`, hex): one
    /// player per SteamID, the one Steam purchases charge.
    ///
    /// # Errors
    /// `invalid_credentials` when Steam does not accept the ticket; a transport failure.
    pub async fn login_steam(&self, request: &SteamLoginRequest) -> StoreResult<Session> {
        let session: Session =
            self.send_json(Method::POST, "/v1/auth/steam", Some(request), None, false).await?;
        *self.inner.session.lock().unwrap_or_else(PoisonError::into_inner) = Some(session.clone());
        Ok(session)
    }

    /// The catalog as this player sees it; with the `ETag` of the copy held, only when it
    /// changed.
    ///
    /// # Errors
    /// A transport failure or an unreadable answer.
    pub async fn catalog(&self, etag: Option<&str>) -> StoreResult<CatalogFetch> {
        let authed = self.session().is_some();
        let response = self
            .execute(|| {
                let request = self.request(Method::GET, "/v1/catalog", authed);
                match etag.and_then(|etag| HeaderValue::from_str(etag).ok()) {
                    Some(etag) => request.map(|request| request.header(IF_NONE_MATCH, etag)),
                    None => request,
                }
            })
            .await?;
        if response.status() == StatusCode::NOT_MODIFIED {
            return Ok(CatalogFetch::Unchanged);
        }
        let etag = response.headers().get(ETAG).and_then(|value| value.to_str().ok()).map(str::to_owned);
        let catalog: Catalog = read_json(response).await?;
        Ok(CatalogFetch::Changed { catalog: Box::new(catalog), etag })
    }

    /// The player's balances.
    ///
    /// # Errors
    /// `NotLoggedIn`, the server's refusal or a transport failure.
    pub async fn wallet(&self) -> StoreResult<Wallet> {
        self.get("/v1/wallet").await
    }

    /// One page of the player's history, newest first.
    ///
    /// # Errors
    /// `NotLoggedIn`, the server's refusal (a bad cursor) or a transport failure.
    pub async fn history(&self, cursor: Option<&str>, limit: Option<u32>) -> StoreResult<HistoryPage> {
        let mut path = "/v1/wallet/history?".to_owned();
        if let Some(limit) = limit {
            path.push_str(&format!("limit={limit}&"));
        }
        if let Some(cursor) = cursor {
            path.push_str(&format!("cursor={}", encode_query(cursor)));
        }
        self.get(&path).await
    }

    /// The items the player holds.
    ///
    /// # Errors
    /// `NotLoggedIn`, the server's refusal or a transport failure.
    pub async fn inventory(&self) -> StoreResult<Inventory> {
        self.get("/v1/inventory").await
    }

    /// Uses up some of a consumable item.
    ///
    /// # Errors
    /// `insufficient_quantity`, `not_consumable`, or a transport failure.
    pub async fn consume(
        &self,
        sku: &Sku,
        request: &ConsumeRequest,
        key: &IdempotencyKey,
    ) -> StoreResult<ConsumeResult> {
        let path = format!("/v1/inventory/{}/consume", encode_path(sku.as_str()));
        self.send_json(Method::POST, &path, Some(request), Some(key), true).await
    }

    /// Buys an offer with virtual currency (or onto the player's tab), and verifies the receipt
    /// before answering.
    ///
    /// # Errors
    /// The store's refusal (`insufficient_funds`, `offer_not_available`…), `ReceiptInvalid`
    /// when the receipt does not verify, or a transport failure.
    pub async fn purchase(
        &self,
        request: &PurchaseRequest,
        key: &IdempotencyKey,
    ) -> StoreResult<VerifiedPurchase> {
        let result: PurchaseResult =
            self.send_json(Method::POST, "/v1/purchases", Some(request), Some(key), true).await?;
        let receipt = self.verify_receipt(&result.receipt).await?;
        if receipt.purchase_id != Some(result.purchase.id) {
            return Err(StoreError::ReceiptInvalid("the receipt names another purchase".to_owned()));
        }
        Ok(VerifiedPurchase { result, receipt })
    }

    /// Claims a reward rule (`coin`), for the rule's amount or a smaller one.
    ///
    /// # Errors
    /// `reward_cap_reached`, `not_found`, `ReceiptInvalid`, or a transport failure.
    pub async fn claim_reward(
        &self,
        rule: &str,
        request: &RewardClaimRequest,
        key: &IdempotencyKey,
    ) -> StoreResult<VerifiedReward> {
        let path = format!("/v1/rewards/{}", encode_path(rule));
        let result: RewardClaimResult =
            self.send_json(Method::POST, &path, Some(request), Some(key), true).await?;
        let receipt = self.verify_receipt(&result.receipt).await?;
        Ok(VerifiedReward { result, receipt })
    }

    /// Opens a real-money order; pay it at `checkout_url` (or [`Self::pay_sandbox`]).
    ///
    /// # Errors
    /// `amount_below_minimum`, `spending_limit_exceeded`, `price_requires_purchase`… or a
    /// transport failure.
    pub async fn create_order(
        &self,
        request: &CreateOrderRequest,
        key: &IdempotencyKey,
    ) -> StoreResult<Order> {
        let order: Order = self.send_json(Method::POST, "/v1/orders", Some(request), Some(key), true).await?;
        self.verify_order(order).await
    }

    /// Redeems a platform's proof of purchase (a StoreKit 2 `jwsRepresentation`, a Google Play
    /// purchase token): the server verifies it with the platform and answers the order that
    /// granted it, fulfilled, with its receipt verified here. Safe to send again: a purchase is
    /// redeemed once, and the same player gets the same order.
    ///
    /// # Errors
    /// `platform_proof_invalid`, `already_exists` (another player redeemed it),
    /// `offer_not_available`, `order_state_conflict` (a pending Google Play purchase); a
    /// transport failure.
    pub async fn redeem_platform(&self, proof: &PlatformProof) -> StoreResult<Order> {
        let order: Order = match proof {
            PlatformProof::AppStore(request) => {
                self.send_json(Method::POST, "/v1/platform-purchases/apple", Some(request), None, true)
                    .await?
            }
            PlatformProof::GooglePlay(request) => {
                self.send_json(Method::POST, "/v1/platform-purchases/google", Some(request), None, true)
                    .await?
            }
        };
        self.verify_order(order).await
    }

    /// Reports how the Steam overlay's purchase dialog ended for a Steam order; the server asks
    /// Steam, finalizes an authorized transaction and answers with the order (fulfilled, with
    /// its receipt verified, once Steam confirms).
    ///
    /// # Errors
    /// `order_state_conflict` while Steam has not recorded the authorization, and
    /// `provider_unavailable` when Steam failed: both may be reported again; a transport failure.
    pub async fn report_steam_authorization(&self, order_id: Uuid, authorized: bool) -> StoreResult<Order> {
        let path = format!("/v1/orders/{order_id}/steam-authorization");
        let order: Order =
            self.send_json(Method::POST, &path, Some(&SteamAuthorization { authorized }), None, true).await?;
        self.verify_order(order).await
    }

    /// The player's orders, newest first.
    ///
    /// # Errors
    /// `NotLoggedIn` or a transport failure.
    pub async fn orders(&self) -> StoreResult<OrderPage> {
        self.get("/v1/orders").await
    }

    /// One order, with its receipt once fulfilled (verified before it is returned).
    ///
    /// # Errors
    /// `not_found`, `ReceiptInvalid`, or a transport failure.
    pub async fn order(&self, id: Uuid) -> StoreResult<Order> {
        let order: Order = self.get(&format!("/v1/orders/{id}")).await?;
        self.verify_order(order).await
    }

    /// The player's open tabs.
    ///
    /// # Errors
    /// `NotLoggedIn` or a transport failure.
    pub async fn tabs(&self) -> StoreResult<TabList> {
        self.get("/v1/tab").await
    }

    /// Settles the open tab: opens the order that pays it.
    ///
    /// # Errors
    /// `nothing_to_settle`, `amount_below_minimum` before the tab is due, or a transport failure.
    pub async fn settle_tab(&self, request: &SettleTabRequest, key: &IdempotencyKey) -> StoreResult<Order> {
        self.send_json(Method::POST, "/v1/tab/settle", Some(request), Some(key), true).await
    }

    /// Pays an order's checkout with a sandbox test card (the in-game checkout form). The
    /// order is fulfilled when the provider's webhook reaches the server; watch the order.
    ///
    /// # Errors
    /// `invalid_request` for a card number that is not 16 Luhn-valid digits,
    /// `order_state_conflict` for a closed checkout, or a transport failure.
    pub async fn pay_sandbox(&self, checkout_url: &str, card_number: &str) -> StoreResult<PayResult> {
        let url = format!("{}/pay", checkout_url.trim_end_matches('/'));
        let body = PayRequest { card_number: card_number.to_owned() };
        let response = self.execute(|| Ok(self.inner.http.post(&url).json(&body))).await?;
        read_json(response).await
    }

    /// Tells the server which offers the storefront showed the player (for the operators'
    /// price-sensitivity report).
    ///
    /// # Errors
    /// `invalid_request` for an empty list, over 100 offers, or one not in the live catalog;
    /// a transport failure.
    pub async fn store_viewed(&self, request: &StoreViewedRequest) -> StoreResult<StoreViewedResult> {
        self.send_json(Method::POST, "/v1/events/store-viewed", Some(request), None, true).await
    }

    /// The public keys receipts are signed with.
    ///
    /// # Errors
    /// A transport failure or an unreadable answer.
    pub async fn receipt_keys(&self) -> StoreResult<Vec<ReceiptKey>> {
        let keys: ReceiptKeys =
            self.send_json::<(), _>(Method::GET, "/v1/receipt-keys", None, None, false).await?;
        Ok(keys.keys)
    }

    /// A receipt issued to the player, by id (verified before it is returned).
    ///
    /// # Errors
    /// `not_found`, `ReceiptInvalid`, or a transport failure.
    pub async fn receipt(&self, id: Uuid) -> StoreResult<(SignedReceipt, ReceiptPayload)> {
        let receipt: SignedReceipt = self.get(&format!("/v1/receipts/{id}")).await?;
        let payload = self.verify_receipt(&receipt).await?;
        Ok((receipt, payload))
    }

    /// Checks a receipt's signature against the server's keys (fetched once and again when a
    /// receipt names a key not seen yet) and that it was issued to this player.
    ///
    /// # Errors
    /// `ReceiptInvalid` when it does not verify; a transport failure fetching the keys.
    pub async fn verify_receipt(&self, receipt: &SignedReceipt) -> StoreResult<ReceiptPayload> {
        let known = {
            let keys = self.inner.receipt_keys.lock().unwrap_or_else(PoisonError::into_inner);
            keys.iter().any(|key| key.id == receipt.key_id)
        };
        if !known {
            let keys = self.receipt_keys().await?;
            *self.inner.receipt_keys.lock().unwrap_or_else(PoisonError::into_inner) = keys;
        }
        let keys = self.inner.receipt_keys.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let payload =
            verify_receipt(receipt, &keys).map_err(|error| StoreError::ReceiptInvalid(error.to_string()))?;
        if let Some(session) = self.session()
            && payload.player_id != session.player_id
        {
            return Err(StoreError::ReceiptInvalid("the receipt was issued to another player".to_owned()));
        }
        Ok(payload)
    }

    /// Opens the player's event stream (`wallet.updated`, `inventory.updated`,
    /// `order.updated`), resuming after `last_event_id` when given.
    ///
    /// # Errors
    /// `NotLoggedIn`, the server's refusal, or a transport failure (not retried: the caller
    /// reconnects).
    pub async fn events(&self, last_event_id: Option<&str>) -> StoreResult<EventStream> {
        let mut request =
            self.request(Method::GET, "/v1/events", true)?.timeout(Duration::from_secs(u64::from(u32::MAX)));
        if let Some(id) = last_event_id.and_then(|id| HeaderValue::from_str(id).ok()) {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.map_err(|error| StoreError::Transport(error.to_string()))?;
        if !response.status().is_success() {
            return Err(error_from(response).await);
        }
        Ok(EventStream::new(response))
    }

    async fn verify_order(&self, order: Order) -> StoreResult<Order> {
        if let Some(receipt) = &order.receipt {
            let payload = self.verify_receipt(receipt).await?;
            if payload.order_id != Some(order.id) {
                return Err(StoreError::ReceiptInvalid("the receipt names another order".to_owned()));
            }
        }
        Ok(order)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> StoreResult<T> {
        self.send_json::<(), T>(Method::GET, path, None, None, true).await
    }

    async fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        key: Option<&IdempotencyKey>,
        authed: bool,
    ) -> StoreResult<T> {
        let response = self
            .execute(|| {
                let mut request = self.request(method.clone(), path, authed)?;
                if let Some(key) = key {
                    request = request.header("idempotency-key", key.as_str());
                }
                if let Some(body) = body {
                    request = request.json(body);
                }
                Ok(request)
            })
            .await?;
        read_json(response).await
    }

    fn request(&self, method: Method, path: &str, authed: bool) -> StoreResult<RequestBuilder> {
        let request = self.inner.http.request(method, format!("{}{path}", self.inner.base_url));
        if !authed {
            return Ok(request);
        }
        let session = self.session().ok_or(StoreError::NotLoggedIn)?;
        Ok(request.bearer_auth(session.session_token))
    }

    /// Sends a request built afresh for each attempt, retrying transport failures only.
    async fn execute(
        &self,
        build: impl Fn() -> StoreResult<RequestBuilder>,
    ) -> StoreResult<reqwest::Response> {
        let retry = self.inner.retry;
        let mut attempt = 1;
        loop {
            let outcome = build()?.send().await;
            let retryable = match &outcome {
                Err(error) => Some(StoreError::Transport(error.to_string())),
                Ok(response) if is_retryable_status(response.status()) => {
                    Some(StoreError::Transport(format!("HTTP {}", response.status())))
                }
                Ok(_) => None,
            };
            let Some(failure) = retryable else {
                return outcome.map_err(|error| StoreError::Transport(error.to_string()));
            };
            if attempt >= retry.attempts_max {
                return match outcome {
                    Ok(response) => Err(error_from(response).await),
                    Err(_) => Err(failure),
                };
            }
            tokio::time::sleep(retry.backoff(attempt)).await;
            attempt += 1;
        }
    }
}

/// 502, 503 and 504 say the server (or a proxy before it) could not serve now.
fn is_retryable_status(status: StatusCode) -> bool {
    matches!(status, StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT)
}

async fn read_json<T: DeserializeOwned>(response: reqwest::Response) -> StoreResult<T> {
    if !response.status().is_success() {
        return Err(error_from(response).await);
    }
    let bytes = response.bytes().await.map_err(|error| StoreError::Transport(error.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|error| StoreError::Decode(error.to_string()))
}

async fn error_from(response: reqwest::Response) -> StoreError {
    let status = response.status().as_u16();
    let bytes = match response.bytes().await {
        Ok(bytes) => bytes,
        Err(error) => return StoreError::Transport(error.to_string()),
    };
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => StoreError::Api {
            status,
            code: body.error.code,
            message: body.error.message,
            details: body.error.details,
        },
        Err(_) if (500..600).contains(&status) => StoreError::Transport(format!("HTTP {status}")),
        Err(error) => StoreError::Decode(format!("HTTP {status} without an error body: {error}")),
    }
}

/// Percent-encodes a path segment (skus and rule codes are already restricted; this is belt and
/// braces).
fn encode_path(segment: &str) -> String {
    segment
        .bytes()
        .map(|byte| match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn encode_query(value: &str) -> String {
    encode_path(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_maximum() {
        let policy = RetryPolicy {
            attempts_max: 10,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(500),
        };
        let waits: Vec<u128> = (1..=5).map(|attempt| policy.backoff(attempt).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 400, 500, 500]);
        assert_eq!(policy.backoff(200), Duration::from_millis(500), "no overflow on a huge attempt count");
    }

    #[test]
    fn an_idempotency_key_is_printable_ascii_of_bounded_length() {
        assert!(IdempotencyKey::parse("order-1").is_ok());
        for (bad, why) in [("", "empty"), ("é", "not ASCII"), ("a\nb", "a control character")] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{why} must be refused");
        }
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err(), "too long must be refused");
        assert_ne!(IdempotencyKey::new(), IdempotencyKey::new(), "fresh keys are unique");
    }

    #[test]
    fn player_messages_carry_no_error_codes() {
        let mut details = serde_json::Map::new();
        details.insert("currency".to_owned(), "gold".into());
        details.insert("required".to_owned(), 50.into());
        details.insert("available".to_owned(), 20.into());
        let error = StoreError::Api {
            status: 402,
            code: ErrorCode::InsufficientFunds,
            message: "insufficient funds".to_owned(),
            details,
        };
        assert_eq!(error.player_message(), "Not enough gold: this costs 50 and you have 20.");
        let declined = StoreError::Transport("connection refused".to_owned());
        assert!(!declined.player_message().contains("refused"), "no transport jargon for players");
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode_path("gem_pack-1"), "gem_pack-1");
        assert_eq!(encode_path("a/b c"), "a%2Fb%20c");
    }
}
