//! The typed error body every failed request returns:
//! `{"error":{"code":"…","message":"…","details":{…}}}`.
//!
//! Clients match on [`ErrorCode`], never on the message, which is for people.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A stable, machine-readable error code. New codes may be added; existing ones never change
/// meaning. Clients that meet a code they do not know see [`ErrorCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    // Credentials (401) and permissions (403).
    /// No credentials were sent.
    Unauthenticated,
    /// The `Authorization` header is not `Bearer <token>` of a known shape.
    MalformedCredentials,
    /// The credentials are well formed but unknown, or their signature is wrong.
    InvalidCredentials,
    /// The session token's lifetime has passed; log in again.
    TokenExpired,
    /// The session was revoked.
    SessionRevoked,
    /// The API key was revoked.
    ApiKeyRevoked,
    /// The credentials are valid but of the wrong kind for this route (a player token on an
    /// operator route, or the reverse).
    WrongCredentialKind,
    /// The API key lacks the scope this route needs.
    InsufficientScope,
    // Request shape (4xx).
    /// The body is not valid JSON.
    MalformedJson,
    /// The body or a parameter has the wrong type, a missing field or a value out of range.
    InvalidRequest,
    /// The request is well formed but breaks a rule of the domain (catalog validation).
    ValidationFailed,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// The body is larger than the server reads.
    PayloadTooLarge,
    /// No route has this path.
    RouteNotFound,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// The object named in the path does not exist.
    NotFound,
    /// An object with this identity already exists.
    AlreadyExists,
    /// The object is referenced by another and cannot be removed.
    InUse,
    /// `If-Match` named an old version of the object.
    PreconditionFailed,
    /// The draft is the same as the live catalog.
    NothingToPublish,
    /// A count limit (currencies, items, offers) would be exceeded.
    LimitExceeded,
    /// Too many requests; retry after the `Retry-After` header.
    RateLimited,
    // Idempotency.
    /// A money-moving request came without an `Idempotency-Key` header.
    IdempotencyKeyRequired,
    /// The key was used before with a different request.
    IdempotencyKeyReused,
    /// A request with this key is still being processed.
    RequestInProgress,
    /// A list's `cursor` is not a `next_cursor` that list gave out.
    InvalidCursor,
    // The store's rules.
    /// The wallet holds less than the price (`details.required`, `details.available`).
    InsufficientFunds,
    /// The offer is unknown, not live, or outside its sale window (`details.reason`).
    OfferNotAvailable,
    /// The chosen price is real money; buy it with `POST /v1/orders`.
    PriceRequiresOrder,
    /// The player bought this item as often as its limit allows in this period (`details.resets_at`).
    PurchaseLimitReached,
    /// No stock is left.
    OutOfStock,
    /// The grant would take a wallet over the currency's `balance_max`.
    BalanceMaxExceeded,
    /// The player is blocked from buying and earning.
    PlayerBlocked,
    /// A durable item the player already owns.
    AlreadyOwned,
    /// The player holds fewer of the item than asked to consume.
    InsufficientQuantity,
    /// The item is not a consumable.
    NotConsumable,
    /// The reward rule's cap for this period is reached (`details.resets_at`).
    RewardCapReached,
    // Real money.
    /// The chosen price is virtual currency or settles on a tab; buy it with `POST /v1/purchases`.
    PriceRequiresPurchase,
    /// The order is below the currency's minimum card charge (`details.minimum`).
    AmountBelowMinimum,
    /// The order is above the largest single order (`details.maximum`).
    AmountAboveMaximum,
    /// The order would pass the player's spending limit (`details.remaining`, `details.period`).
    SpendingLimitExceeded,
    /// The store asks players to consent to immediate delivery (waiving the EU right of
    /// withdrawal for digital content) before they pay real money: send
    /// `immediate_delivery_consent: true` once the player has agreed.
    DeliveryConsentRequired,
    /// Orders came too fast (many orders or declines in a short time): the player is flagged for
    /// review and new orders wait until an operator clears the flag (`details.reason`).
    PlayerFlagged,
    /// The wallet owes a clawed-back debt in this currency; it must be repaid first.
    OutstandingDebt,
    /// The order is not in a state that allows this (`details.status`).
    OrderStateConflict,
    /// A refund larger than what is left to refund (`details.refundable`).
    RefundExceedsPaid,
    /// The payment provider could not be reached or refused the request.
    ProviderUnavailable,
    /// A platform's proof of purchase (an App Store signed transaction, a Google Play purchase
    /// token) does not verify, or is not for this app (`details.reason` says which check).
    PlatformProofInvalid,
    /// The webhook's signature is missing or does not match.
    WebhookSignatureInvalid,
    /// The webhook's timestamp is outside the tolerance.
    WebhookTimestampOutOfTolerance,
    // Tabs.
    /// The tab must be settled before more is added (`details.reason`: threshold, age,
    /// credit_limit or settling).
    TabSettlementRequired,
    /// There is no tab with anything to settle.
    NothingToSettle,
    /// No balance of the creator has reached the payout threshold (`details.threshold`).
    BelowPayoutThreshold,
    // Server side (5xx).
    /// Something went wrong inside the server; it is logged with its cause.
    Internal,
    /// The server cannot serve right now (database unreachable, shutting down).
    Unavailable,
    /// A code this version of the contract does not know.
    #[serde(other)]
    Other,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::MalformedCredentials => "malformed_credentials",
            Self::InvalidCredentials => "invalid_credentials",
            Self::TokenExpired => "token_expired",
            Self::SessionRevoked => "session_revoked",
            Self::ApiKeyRevoked => "api_key_revoked",
            Self::WrongCredentialKind => "wrong_credential_kind",
            Self::InsufficientScope => "insufficient_scope",
            Self::MalformedJson => "malformed_json",
            Self::InvalidRequest => "invalid_request",
            Self::ValidationFailed => "validation_failed",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RouteNotFound => "route_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::InUse => "in_use",
            Self::PreconditionFailed => "precondition_failed",
            Self::NothingToPublish => "nothing_to_publish",
            Self::LimitExceeded => "limit_exceeded",
            Self::RateLimited => "rate_limited",
            Self::IdempotencyKeyRequired => "idempotency_key_required",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::RequestInProgress => "request_in_progress",
            Self::InvalidCursor => "invalid_cursor",
            Self::InsufficientFunds => "insufficient_funds",
            Self::OfferNotAvailable => "offer_not_available",
            Self::PriceRequiresOrder => "price_requires_order",
            Self::PurchaseLimitReached => "purchase_limit_reached",
            Self::OutOfStock => "out_of_stock",
            Self::BalanceMaxExceeded => "balance_max_exceeded",
            Self::PlayerBlocked => "player_blocked",
            Self::AlreadyOwned => "already_owned",
            Self::InsufficientQuantity => "insufficient_quantity",
            Self::NotConsumable => "not_consumable",
            Self::RewardCapReached => "reward_cap_reached",
            Self::PriceRequiresPurchase => "price_requires_purchase",
            Self::AmountBelowMinimum => "amount_below_minimum",
            Self::AmountAboveMaximum => "amount_above_maximum",
            Self::SpendingLimitExceeded => "spending_limit_exceeded",
            Self::DeliveryConsentRequired => "delivery_consent_required",
            Self::PlayerFlagged => "player_flagged",
            Self::OutstandingDebt => "outstanding_debt",
            Self::OrderStateConflict => "order_state_conflict",
            Self::RefundExceedsPaid => "refund_exceeds_paid",
            Self::ProviderUnavailable => "provider_unavailable",
            Self::PlatformProofInvalid => "platform_proof_invalid",
            Self::WebhookSignatureInvalid => "webhook_signature_invalid",
            Self::WebhookTimestampOutOfTolerance => "webhook_timestamp_out_of_tolerance",
            Self::TabSettlementRequired => "tab_settlement_required",
            Self::NothingToSettle => "nothing_to_settle",
            Self::BelowPayoutThreshold => "below_payout_threshold",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
            Self::Other => "other",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong: a code for programs, a message for people, details for both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// A sentence for a person.
    pub message: String,
    /// Structured facts about the failure (for example `{"field": "items[0].sku"}`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub details: serde_json::Map<String, serde_json::Value>,
}
