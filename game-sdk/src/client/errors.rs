//! What can go wrong and what is tried again: the retry policy, [`StoreError`] and the idempotency
//! key every money-moving request carries.

use super::*;

/// When and how often a request is tried again.
///
/// Only transport failures (no answer, a timeout, a 502/503/504) are retried: a business error such as `insufficient_funds` is an answer, and asking again would not change
/// it. Money-moving requests carry their idempotency key on every attempt, so a retry can never
/// charge twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; at least 1.
    pub attempts_max: u32,
    /// The wait after the first failure; it doubles after each further one.
    pub backoff_initial: Duration,
    /// The longest wait between two attempts.
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts_max: 4,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// One attempt only.
    #[must_use]
    pub fn never() -> Self {
        Self { attempts_max: 1, ..Self::default() }
    }

    /// The wait before attempt `attempt + 1` (attempt counts from 1).
    #[must_use]
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1_u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        self.backoff_initial.saturating_mul(factor).min(self.backoff_max)
    }
}

/// What went wrong, by kind. A server's refusal keeps its stable [`ErrorCode`]; match on that,
/// never on the message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The server answered with a typed error.
    #[error("the store refused ({code:?}, HTTP {status}): {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The stable code.
        code: ErrorCode,
        /// The server's explanation, for people.
        message: String,
        /// Structured details (`required`, `available`, `resets_at`…).
        details: serde_json::Map<String, serde_json::Value>,
    },
    /// The server could not be reached, or did not answer in time, after every retry.
    #[error("the store could not be reached: {0}")]
    Transport(String),
    /// The server answered something this client cannot read.
    #[error("the store's answer could not be read: {0}")]
    Decode(String),
    /// A player route was called before logging in.
    #[error("not logged in")]
    NotLoggedIn,
    /// A receipt did not verify against the server's receipt keys, or states something other
    /// than what was asked: the result is not trusted.
    #[error("the receipt does not verify: {0}")]
    ReceiptInvalid(String),
    /// Too many requests are in flight; nothing was sent. Try again after some finish.
    #[error("the store is busy: {in_flight_max} requests are already in flight")]
    Busy {
        /// The limit that was reached.
        in_flight_max: usize,
    },
    /// The local record of a request in flight could not be written or read.
    #[error("local storage failed: {0}")]
    Storage(String),
    /// A request left in flight (the game closed before its answer) was older than the server
    /// keeps idempotency keys, so it was dropped rather than sent again: it may or may not have
    /// happened; the wallet history says.
    #[error("a request left in flight for {age_s} s was dropped; the history shows whether it happened")]
    Abandoned {
        /// How long it had been in flight.
        age_s: u64,
    },
}

impl StoreError {
    /// The server's error code, when the server refused.
    #[must_use]
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the failure was the network or a server that cannot serve right now (worth
    /// trying later), rather than an answer.
    #[must_use]
    pub fn is_transport(&self) -> bool {
        matches!(self, Self::Transport(_)) || self.code() == Some(ErrorCode::Unavailable)
    }

    /// Whether the request may have had no effect yet and must be sent again with the same
    /// key rather than forgotten: no answer came, the answer could not be read, the server
    /// could not serve, or the same key is still being worked on.
    #[must_use]
    pub fn leaves_request_open(&self) -> bool {
        match self {
            Self::Transport(_) | Self::Decode(_) => true,
            Self::Api { status, code, .. } => *status >= 500 || *code == ErrorCode::RequestInProgress,
            _ => false,
        }
    }

    /// Whether a connection should keep trying after this: an outage, a server error, or a
    /// session that ended (logging in again fixes it). A refusal of the login itself is not.
    #[must_use]
    pub fn is_worth_retrying(&self) -> bool {
        match self {
            Self::Transport(_) | Self::Decode(_) => true,
            Self::Api { status, code, .. } => {
                *status >= 500 || matches!(code, ErrorCode::TokenExpired | ErrorCode::SessionRevoked)
            }
            _ => false,
        }
    }

    pub(super) fn detail(&self, name: &str) -> Option<String> {
        let Self::Api { details, .. } = self else { return None };
        details.get(name).map(|value| match value {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        })
    }

    /// The failure in words a player understands: no codes, no jargon.
    #[must_use]
    pub fn player_message(&self) -> String {
        match self {
            Self::Api { code, .. } => match code {
                ErrorCode::InsufficientFunds => {
                    let currency = self.detail("currency").unwrap_or_else(|| "currency".to_owned());
                    match (self.detail("required"), self.detail("available")) {
                        (Some(required), Some(available)) => {
                            format!("Not enough {currency}: this costs {required} and you have {available}.")
                        }
                        _ => format!("You do not have enough {currency} for this."),
                    }
                }
                ErrorCode::OfferNotAvailable => "This item is not for sale right now.".to_owned(),
                ErrorCode::PurchaseLimitReached => {
                    "You have bought this as many times as allowed for now.".to_owned()
                }
                ErrorCode::OutOfStock => "This item is sold out.".to_owned(),
                ErrorCode::AlreadyOwned => "You already own this.".to_owned(),
                ErrorCode::BalanceMaxExceeded => "Your wallet cannot hold that much.".to_owned(),
                ErrorCode::PlayerBlocked => {
                    "Purchases are disabled for this account. Please contact support.".to_owned()
                }
                ErrorCode::PlayerFlagged => {
                    "Card purchases are paused while we check your account. Please contact support."
                        .to_owned()
                }
                ErrorCode::InsufficientQuantity => "You do not have enough of that item.".to_owned(),
                ErrorCode::NotConsumable => "That item cannot be used up.".to_owned(),
                ErrorCode::RewardCapReached => {
                    "You have collected all the rewards you can for now.".to_owned()
                }
                ErrorCode::AmountBelowMinimum => "That amount is too small to pay by card.".to_owned(),
                ErrorCode::AmountAboveMaximum => "That amount is too large for one payment.".to_owned(),
                ErrorCode::SpendingLimitExceeded => "This would pass your spending limit.".to_owned(),
                ErrorCode::DeliveryConsentRequired => {
                    "Please agree to get this at once, which ends your right to cancel, before paying."
                        .to_owned()
                }
                ErrorCode::OutstandingDebt => {
                    "A refunded payment left your balance owing; it must be repaid first.".to_owned()
                }
                ErrorCode::TabSettlementRequired => "Your tab is full. Settle it to keep buying.".to_owned(),
                ErrorCode::NothingToSettle => "There is nothing on your tab to pay.".to_owned(),
                ErrorCode::OrderStateConflict => "This payment is already closed.".to_owned(),
                ErrorCode::ProviderUnavailable => {
                    "Payments are unavailable right now. Please try again later.".to_owned()
                }
                ErrorCode::TokenExpired | ErrorCode::SessionRevoked | ErrorCode::InvalidCredentials => {
                    "Your session ended. Reconnecting…".to_owned()
                }
                ErrorCode::RateLimited => "Too many requests. Please wait a moment.".to_owned(),
                ErrorCode::Unavailable | ErrorCode::Internal => {
                    "The store is having trouble. Please try again in a moment.".to_owned()
                }
                _ => "The store could not do that.".to_owned(),
            },
            Self::Transport(_) => {
                "Cannot reach the store. Check your connection; we will keep trying.".to_owned()
            }
            Self::Busy { .. } => "The store is busy. Please try again in a moment.".to_owned(),
            Self::ReceiptInvalid(_) => {
                "The purchase could not be confirmed. Please contact support.".to_owned()
            }
            Self::NotLoggedIn => "Connecting to the store…".to_owned(),
            Self::Decode(_) | Self::Storage(_) => "Something went wrong in the store.".to_owned(),
            Self::Abandoned { .. } => {
                "A purchase from an earlier session could not be confirmed. Check your history.".to_owned()
            }
        }
    }
}

/// A result of the store client.
pub type StoreResult<T> = Result<T, StoreError>;

/// An `Idempotency-Key`: the same key on a retried request makes the server do the work once and
/// answer every retry with the first answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// A fresh, unique key.
    #[must_use]
    pub fn new() -> Self {
        Self(Uuid::now_v7().to_string())
    }

    /// Checks a key chosen by the caller: 1 to 255 printable ASCII characters.
    ///
    /// # Errors
    /// Returns a message when the key is empty, too long or not printable ASCII.
    pub fn parse(text: &str) -> Result<Self, String> {
        let max = store_api::limits::IDEMPOTENCY_KEY_LENGTH_MAX;
        if text.is_empty() || text.len() > max || !text.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(format!("an idempotency key is 1 to {max} printable ASCII characters"));
        }
        Ok(Self(text.to_owned()))
    }

    /// The key as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for IdempotencyKey {
    fn default() -> Self {
        Self::new()
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<IdempotencyKey> for String {
    fn from(key: IdempotencyKey) -> Self {
        key.0
    }
}
