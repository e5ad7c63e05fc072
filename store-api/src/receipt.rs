//! Receipts: server-signed (Ed25519) statements of what a player received, verifiable offline
//! with the public keys from `GET /v1/receipt-keys`.
//!
//! The signed bytes are the payload string exactly as sent, after a domain-separation prefix,
//! so no canonical JSON form is needed: a verifier checks the string, then parses it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::catalog::OfferId;
use crate::ledger::{CurrencyAmount, EntryKind, Granted};
use crate::money::Money;

/// Prepended to every payload before signing, so a receipt signature can never be mistaken for
/// a signature over anything else.
pub const RECEIPT_SIGNING_CONTEXT: &[u8] = b"coinslot-receipt-v1\n";

/// A public key receipts are verified with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReceiptKey {
    /// The key id receipts name.
    pub id: String,
    /// The Ed25519 public key, 32 bytes in standard base64.
    pub public_key: String,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stopped signing new receipts; it still verifies the ones it signed.
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<OffsetDateTime>,
}

/// `GET /v1/receipt-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReceiptKeys {
    /// Every key that ever signed a receipt, newest first.
    pub keys: Vec<ReceiptKey>,
}

/// A signed receipt as the server sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SignedReceipt {
    /// The receipt's id.
    pub id: Uuid,
    /// The id of the key that signed it.
    pub key_id: String,
    /// The signed statement: a JSON [`ReceiptPayload`], as a string.
    pub payload: String,
    /// Ed25519 signature over the context prefix and the payload, standard base64.
    pub signature: String,
}

/// What a receipt states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReceiptPayload {
    /// The receipt's id (the same as [`SignedReceipt::id`]).
    pub receipt_id: Uuid,
    /// Who received.
    pub player_id: Uuid,
    /// The ledger entry behind it.
    pub entry_id: Uuid,
    /// What kind of movement it was.
    pub kind: EntryKind,
    /// The purchase, for purchases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchase_id: Option<Uuid>,
    /// The offer, for purchases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<OfferId>,
    /// What was paid in virtual currency, for purchases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid: Option<CurrencyAmount>,
    /// What was paid in real money, for orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_money: Option<Money>,
    /// The order, for orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    /// What the player received.
    pub granted: Granted,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
}

/// Why a receipt did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// No key with the receipt's key id is known.
    #[error("receipt key `{0}` is not known")]
    UnknownKey(String),
    /// The key is not a valid Ed25519 public key.
    #[error("receipt key `{0}` is not a valid Ed25519 public key")]
    InvalidKey(String),
    /// The signature is malformed or does not match the payload.
    #[error("the receipt's signature does not match its payload")]
    BadSignature,
    /// The payload is not a receipt, or names another receipt id.
    #[error("the receipt's payload is malformed: {0}")]
    MalformedPayload(String),
}

/// Checks a receipt's signature against the known keys and returns what it states.
///
/// # Errors
/// [`ReceiptError`] when the key is unknown or invalid, the signature does not match, or the
/// payload is not a receipt for this id.
pub fn verify_receipt(receipt: &SignedReceipt, keys: &[ReceiptKey]) -> Result<ReceiptPayload, ReceiptError> {
    let key = keys
        .iter()
        .find(|key| key.id == receipt.key_id)
        .ok_or_else(|| ReceiptError::UnknownKey(receipt.key_id.clone()))?;
    let invalid_key = || ReceiptError::InvalidKey(key.id.clone());
    let key_bytes: [u8; 32] =
        STANDARD.decode(&key.public_key).map_err(|_| invalid_key())?.try_into().map_err(|_| invalid_key())?;
    let verifying_key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| invalid_key())?;
    let signature_bytes: [u8; 64] = STANDARD
        .decode(&receipt.signature)
        .map_err(|_| ReceiptError::BadSignature)?
        .try_into()
        .map_err(|_| ReceiptError::BadSignature)?;
    let mut message = RECEIPT_SIGNING_CONTEXT.to_vec();
    message.extend_from_slice(receipt.payload.as_bytes());
    verifying_key
        .verify(&message, &Signature::from_bytes(&signature_bytes))
        .map_err(|_| ReceiptError::BadSignature)?;
    let payload: ReceiptPayload = serde_json::from_str(&receipt.payload)
        .map_err(|error| ReceiptError::MalformedPayload(error.to_string()))?;
    if payload.receipt_id != receipt.id {
        return Err(ReceiptError::MalformedPayload("it names another receipt".to_owned()));
    }
    Ok(payload)
}
