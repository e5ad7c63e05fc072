//! Receipts: server-signed (Ed25519) statements of what a player received, verifiable offline
//! with the public keys from `GET /v1/receipt-keys`.
//!
//! Every receipt is signed twice over the same payload string:
//! - `jws`: a compact JWS (RFC 7515) with `alg: EdDSA` (RFC 8037), the key's `kid` and `typ:
//!   coinslot-receipt+jwt`, whose payload is the receipt payload; any JOSE library verifies it
//!   with the key set at `/v1/receipt-keys` (also `/.well-known/jwks.json`), a JWK Set of `OKP`
//!   `Ed25519` keys;
//! - `signature` (kept for verifiers written before the JWS): Ed25519 over a domain-separation
//!   prefix and the payload string exactly as sent.
//!
//! No canonical JSON form is needed: a verifier checks the string, then parses it.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
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

/// The `typ` of a receipt's JWS header (explicit typing, RFC 8725 §3.11).
pub const RECEIPT_JWS_TYP: &str = "coinslot-receipt+jwt";

/// A public key receipts are verified with: a JWK (RFC 7517, `OKP`/`Ed25519` per RFC 8037),
/// with the key's history beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReceiptKey {
    /// `OKP`.
    #[serde(default)]
    pub kty: String,
    /// `Ed25519`.
    #[serde(default)]
    pub crv: String,
    /// The public key, base64url without padding.
    #[serde(default)]
    pub x: String,
    /// The key id receipts name (`kid` in their JWS header; the same as `id`).
    #[serde(default)]
    pub kid: String,
    /// `sig`.
    #[serde(default, rename = "use")]
    pub use_: String,
    /// `EdDSA`.
    #[serde(default)]
    pub alg: String,
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

impl ReceiptKey {
    /// The key `id` with the 32-byte Ed25519 public key `public_key`.
    #[must_use]
    pub fn ed25519(
        id: String,
        public_key: &[u8],
        created_at: OffsetDateTime,
        retired_at: Option<OffsetDateTime>,
    ) -> Self {
        Self {
            kty: "OKP".to_owned(),
            crv: "Ed25519".to_owned(),
            x: URL_SAFE_NO_PAD.encode(public_key),
            kid: id.clone(),
            use_: "sig".to_owned(),
            alg: "EdDSA".to_owned(),
            id,
            public_key: STANDARD.encode(public_key),
            created_at,
            retired_at,
        }
    }
}

/// `GET /v1/receipt-keys` and `/.well-known/jwks.json`: a JWK Set.
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
    /// The same payload as a compact JWS (`EdDSA`, `kid`, `typ: coinslot-receipt+jwt`): what a
    /// JOSE library verifies with the key set. Absent from receipts of servers that predate it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jws: String,
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
    /// `true` when the player consented to immediate delivery of what real money bought (the
    /// EU withdrawal waiver for digital content); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immediate_delivery_consent: Option<bool>,
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
    /// The JWS is not a receipt's (its form, header or payload).
    #[error("the receipt's JWS is malformed: {0}")]
    MalformedJws(String),
}

fn verifying_key(key: &ReceiptKey) -> Result<VerifyingKey, ReceiptError> {
    let invalid_key = || ReceiptError::InvalidKey(key.id.clone());
    let key_bytes: [u8; 32] =
        STANDARD.decode(&key.public_key).map_err(|_| invalid_key())?.try_into().map_err(|_| invalid_key())?;
    VerifyingKey::from_bytes(&key_bytes).map_err(|_| invalid_key())
}

fn find_key<'k>(keys: &'k [ReceiptKey], key_id: &str) -> Result<&'k ReceiptKey, ReceiptError> {
    keys.iter().find(|key| key.id == key_id).ok_or_else(|| ReceiptError::UnknownKey(key_id.to_owned()))
}

/// Checks a receipt's compact JWS (`EdDSA`, a known `kid`, `typ: coinslot-receipt+jwt`) and
/// returns its payload string, unparsed.
///
/// # Errors
/// [`ReceiptError`] when the JWS is malformed, its key unknown or invalid, or its signature
/// does not match.
pub fn verify_receipt_jws(jws: &str, keys: &[ReceiptKey]) -> Result<String, ReceiptError> {
    let malformed = |what: &str| ReceiptError::MalformedJws(what.to_owned());
    let mut parts = jws.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("not three parts"));
    };
    let header_json: serde_json::Value = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| malformed("the header is not base64url JSON"))?;
    if header_json["alg"] != "EdDSA" || header_json["typ"] != RECEIPT_JWS_TYP {
        return Err(malformed("not an EdDSA receipt"));
    }
    let key = find_key(keys, header_json["kid"].as_str().unwrap_or_default())?;
    let signature_bytes: [u8; 64] = URL_SAFE_NO_PAD
        .decode(signature)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(ReceiptError::BadSignature)?;
    verifying_key(key)?
        .verify(format!("{header}.{payload}").as_bytes(), &Signature::from_bytes(&signature_bytes))
        .map_err(|_| ReceiptError::BadSignature)?;
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| malformed("the payload is not base64url"))?;
    String::from_utf8(payload).map_err(|_| malformed("the payload is not UTF-8"))
}

/// The base64url JWS header of the receipts key `key_id` signs: `{"alg":"EdDSA","kid":…,"typ":…}`.
#[must_use]
pub fn jws_header(key_id: &str) -> String {
    let header = serde_json::json!({ "alg": "EdDSA", "kid": key_id, "typ": RECEIPT_JWS_TYP });
    URL_SAFE_NO_PAD.encode(header.to_string())
}

/// Checks a receipt's signature (and its JWS, when it has one) against the known keys and
/// returns what it states.
///
/// # Errors
/// [`ReceiptError`] when the key is unknown or invalid, the signature does not match, or the
/// payload is not a receipt for this id.
pub fn verify_receipt(receipt: &SignedReceipt, keys: &[ReceiptKey]) -> Result<ReceiptPayload, ReceiptError> {
    let key = find_key(keys, &receipt.key_id)?;
    let verifying_key = verifying_key(key)?;
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
    // A receipt with its JWS must carry the same statement, signed by the same key.
    if !receipt.jws.is_empty() {
        if verify_receipt_jws(&receipt.jws, keys)? != receipt.payload {
            return Err(ReceiptError::MalformedJws("it states something else than the payload".to_owned()));
        }
        if !receipt.jws.starts_with(&jws_header(&receipt.key_id)) {
            return Err(ReceiptError::MalformedJws("it is signed by another key".to_owned()));
        }
    }
    Ok(payload)
}
