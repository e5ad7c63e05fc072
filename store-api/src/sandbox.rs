//! The sandbox payment provider's player-facing contract: paying a checkout session with a
//! test card. The store server serves it; the game SDK's in-game checkout form calls it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The test cards.
pub mod cards {
    /// Always succeeds.
    pub const SUCCEEDS: &str = "4242424242424242";
    /// Always declined.
    pub const DECLINED: &str = "4000000000000002";
    /// Declined for insufficient funds.
    pub const INSUFFICIENT_FUNDS: &str = "4000000000009995";
    /// Succeeds, then is disputed (and the dispute lost) a little later.
    pub const DISPUTED: &str = "4000000000000259";
}

/// `POST /sandbox/checkout/{session}/pay` as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PayRequest {
    /// Sixteen digits; spaces are ignored.
    pub card_number: String,
}

/// What a payment attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayStatus {
    /// The card was charged; the order is fulfilled when the provider's webhook arrives.
    Succeeded,
    /// The card was declined.
    CardDeclined,
    /// The card has too little money.
    InsufficientFunds,
    /// A status this version of the contract does not know.
    #[serde(other)]
    Other,
}

/// The outcome of a payment attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PayResult {
    /// `succeeded`, `card_declined` or `insufficient_funds`.
    pub status: PayStatus,
    /// The payment, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
}
