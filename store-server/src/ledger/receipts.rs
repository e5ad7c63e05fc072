//! Receipt signing: the installation's Ed25519 keys (made on first start, rotatable, the old
//! ones kept so their receipts still verify), and issuing a signed receipt for an entry.
//!
//! The secret keys live in the database, which is as trusted as the ledger they vouch for.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signer as _, SigningKey};
use rand::RngCore;
use sqlx::AnyConnection;
use store_api::Money;
use store_api::catalog::OfferId;
use store_api::ledger::{CurrencyAmount, EntryKind, Granted};
use store_api::receipt::{RECEIPT_SIGNING_CONTEXT, ReceiptKey, ReceiptPayload, SignedReceipt, jws_header};
use uuid::Uuid;

use crate::db::{from_micros, now_micros};
use crate::error::{ApiError, ApiResult};

/// Creates a new signing key and retires the current one (which keeps verifying what it signed).
/// Returns the new key's id.
///
/// # Errors
/// Fails when the database does.
pub async fn rotate_receipt_key(conn: &mut AnyConnection) -> Result<String, sqlx::Error> {
    let now = now_micros();
    sqlx::query("update receipt_key set retired_at = $1 where retired_at is null")
        .bind(now)
        .execute(&mut *conn)
        .await?;
    insert_key(conn, now).await
}

/// Makes a signing key if there is none (first start).
///
/// # Errors
/// Fails when the database does.
pub async fn ensure_receipt_key(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    let active: i64 = sqlx::query_scalar("select count(*) from receipt_key where retired_at is null")
        .fetch_one(&mut *conn)
        .await?;
    if active == 0 {
        insert_key(conn, now_micros()).await?;
    }
    Ok(())
}

async fn insert_key(conn: &mut AnyConnection, now: i64) -> Result<String, sqlx::Error> {
    let mut secret = [0_u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let signing_key = SigningKey::from_bytes(&secret);
    let id = format!("rk_{}", Uuid::now_v7().simple());
    sqlx::query("insert into receipt_key (id, public_key, secret_key, created_at) values ($1, $2, $3, $4)")
        .bind(&id)
        .bind(STANDARD.encode(signing_key.verifying_key().as_bytes()))
        .bind(hex::encode(secret))
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(id)
}

/// Every key that ever signed, newest first.
///
/// # Errors
/// Fails when the database does.
pub async fn list_receipt_keys(conn: &mut AnyConnection) -> ApiResult<Vec<ReceiptKey>> {
    let rows: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(
        "select id, public_key, created_at, retired_at from receipt_key order by created_at desc, id desc",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|(id, public_key, created_at, retired_at)| {
            let bytes = STANDARD
                .decode(&public_key)
                .map_err(|error| ApiError::Internal(anyhow::anyhow!("receipt key {id}: {error}")))?;
            Ok(ReceiptKey::ed25519(id, &bytes, from_micros(created_at), retired_at.map(from_micros)))
        })
        .collect()
}

/// What a receipt is about, besides its player and entry.
#[derive(Debug, Clone)]
pub struct ReceiptFacts {
    /// The kind of movement.
    pub kind: EntryKind,
    /// The purchase, for purchases.
    pub purchase_id: Option<Uuid>,
    /// The offer, for purchases.
    pub offer_id: Option<OfferId>,
    /// What was paid, for purchases.
    pub paid: Option<CurrencyAmount>,
    /// What was paid in real money, for orders.
    pub paid_money: Option<Money>,
    /// The order, for orders.
    pub order_id: Option<Uuid>,
    /// Whether the player consented to immediate delivery of what real money bought.
    pub immediate_delivery_consent: bool,
    /// What the player received.
    pub granted: Granted,
}

impl ReceiptFacts {
    /// A receipt for something given without payment (a reward, a grant).
    #[must_use]
    pub fn given(kind: EntryKind, granted: Granted) -> Self {
        Self {
            kind,
            purchase_id: None,
            offer_id: None,
            paid: None,
            paid_money: None,
            order_id: None,
            immediate_delivery_consent: false,
            granted,
        }
    }
}

/// The current signing key: its id and the parsed key. Parsing a key costs about as much as a
/// signature, so parsed keys are kept by id (a key's secret never changes; rotation makes a new
/// id, and a retired key is simply no longer current).
///
/// # Errors
/// Fails when the database does or no key exists.
pub async fn current_signer(conn: &mut AnyConnection) -> ApiResult<Signer> {
    let key_id: String = sqlx::query_scalar(
        "select id from receipt_key where retired_at is null order by created_at desc, id desc limit 1",
    )
    .fetch_one(&mut *conn)
    .await?;
    signer(conn, key_id).await
}

/// The signer for key `key_id`, parsed once per process.
///
/// # Errors
/// Fails when the database does or the stored key is malformed.
pub async fn signer(conn: &mut AnyConnection, key_id: String) -> ApiResult<Signer> {
    static PARSED: std::sync::Mutex<Vec<Signer>> = std::sync::Mutex::new(Vec::new());
    if let Some(known) =
        PARSED.lock().ok().and_then(|parsed| parsed.iter().find(|known| *known.key_id == *key_id).cloned())
    {
        return Ok(known);
    }
    let secret_hex: String = sqlx::query_scalar("select secret_key from receipt_key where id = $1")
        .bind(&key_id)
        .fetch_one(&mut *conn)
        .await?;
    let secret: [u8; 32] = hex::decode(&secret_hex)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("receipt key {key_id} is not 32 hex bytes")))?;
    let signer = Signer { key_id: key_id.into(), key: std::sync::Arc::new(SigningKey::from_bytes(&secret)) };
    if let Ok(mut parsed) = PARSED.lock() {
        // A handful of keys per installation; the newest first, a bounded list.
        parsed.insert(0, signer.clone());
        parsed.truncate(16);
    }
    Ok(signer)
}

/// A parsed receipt signing key.
#[derive(Clone)]
pub struct Signer {
    key_id: std::sync::Arc<str>,
    key: std::sync::Arc<SigningKey>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl Signer {
    /// Signs a new receipt for an entry, issued at `now` (micros). The caller stores it.
    ///
    /// # Errors
    /// Fails only if the payload cannot be serialized.
    pub fn sign(
        &self,
        player_id: Uuid,
        entry_id: Uuid,
        facts: ReceiptFacts,
        now: i64,
    ) -> ApiResult<SignedReceipt> {
        let mut receipt = self.unsigned(player_id, entry_id, facts, now)?;
        let signed = self.sign_payload(&receipt.payload);
        receipt.signature = signed.signature;
        receipt.jws = signed.jws;
        Ok(receipt)
    }

    /// A new receipt for an entry, issued at `now` (micros), whose signature is still empty:
    /// the set path signs its batch's receipts together, after deciding them
    /// ([`Signer::signature`]).
    ///
    /// # Errors
    /// Fails only if the payload cannot be serialized.
    pub fn unsigned(
        &self,
        player_id: Uuid,
        entry_id: Uuid,
        facts: ReceiptFacts,
        now: i64,
    ) -> ApiResult<SignedReceipt> {
        let id = Uuid::now_v7();
        let payload = ReceiptPayload {
            receipt_id: id,
            player_id,
            entry_id,
            kind: facts.kind,
            purchase_id: facts.purchase_id,
            offer_id: facts.offer_id,
            paid: facts.paid,
            paid_money: facts.paid_money,
            order_id: facts.order_id,
            immediate_delivery_consent: facts.immediate_delivery_consent.then_some(true),
            granted: facts.granted,
            issued_at: from_micros(now),
        };
        let payload = serde_json::to_string(&payload).map_err(anyhow::Error::from)?;
        Ok(SignedReceipt {
            id,
            key_id: self.key_id.to_string(),
            payload,
            signature: String::new(),
            jws: String::new(),
        })
    }

    /// The signature of a receipt's payload (Ed25519 over the context prefix and the payload,
    /// standard base64).
    #[must_use]
    pub fn signature(&self, payload: &str) -> String {
        let mut message = RECEIPT_SIGNING_CONTEXT.to_vec();
        message.extend_from_slice(payload.as_bytes());
        STANDARD.encode(self.key.sign(&message).to_bytes())
    }

    /// The payload as a compact JWS (`EdDSA`, this key's `kid`): Ed25519 is deterministic, so
    /// the same receipt always gets the same JWS, and it is made again whenever the receipt is
    /// read rather than stored.
    #[must_use]
    pub fn jws(&self, payload: &str) -> String {
        let input = format!("{}.{}", jws_header(&self.key_id), URL_SAFE_NO_PAD.encode(payload));
        let signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    /// Both signatures of a payload.
    #[must_use]
    pub fn sign_payload(&self, payload: &str) -> Signed {
        Signed { signature: self.signature(payload), jws: self.jws(payload) }
    }
}

/// A payload's two signatures: the original one, and the JWS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// Ed25519 over the context prefix and the payload, standard base64.
    pub signature: String,
    /// The compact JWS.
    pub jws: String,
}

/// An answer's JSON without its receipts' JWS, as it is stored for replays: every
/// `,"jws":"…"` member cut out. (A JWS is base64url and dots, so its string has no escape; and a
/// quote inside any other string is escaped, so the member's text occurs nowhere else.)
#[must_use]
pub fn without_receipt_jws(body: &[u8]) -> Vec<u8> {
    const MEMBER: &[u8] = br#","jws":""#;
    let mut stored = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest.windows(MEMBER.len()).position(|window| window == MEMBER) {
        let value = &rest[at + MEMBER.len()..];
        let Some(end) = value.iter().position(|byte| *byte == b'"') else { break };
        stored.extend_from_slice(&rest[..at]);
        rest = &value[end + 1..];
    }
    stored.extend_from_slice(rest);
    stored
}

/// A stored answer (JSON) with every receipt in it given its JWS again: answers are stored
/// for replays without it. The JWS goes back where it was, right after the receipt's
/// `signature` (the last field before it), so a replay is the first answer byte for byte. A body
/// with no receipt comes back as it is.
///
/// # Errors
/// Fails when the database does or a receipt's key is unknown.
pub async fn with_receipt_jws(db: &crate::db::Db, body: axum::body::Bytes) -> ApiResult<axum::body::Bytes> {
    const SIGNATURE: &[u8] = br#""signature":""#;
    if !body.windows(SIGNATURE.len()).any(|window| window == SIGNATURE) {
        return Ok(body);
    }
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(&body) else { return Ok(body) };
    // Every receipt without its JWS: (signature, key id, payload).
    let mut receipts = Vec::new();
    let mut stack = vec![&answer];
    while let Some(value) = stack.pop() {
        match value {
            serde_json::Value::Object(map) => {
                match (map.get("key_id"), map.get("payload"), map.get("signature"), map.get("jws")) {
                    (
                        Some(serde_json::Value::String(key_id)),
                        Some(serde_json::Value::String(payload)),
                        Some(serde_json::Value::String(signature)),
                        None,
                    ) => receipts.push((signature.clone(), key_id.clone(), payload.clone())),
                    _ => stack.extend(map.values()),
                }
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    if receipts.is_empty() {
        return Ok(body);
    }
    let mut conn = db.pool().acquire().await?;
    let mut text = String::from_utf8(body.to_vec()).map_err(anyhow::Error::from)?;
    for (signature, key_id, payload) in receipts {
        let jws = signer(&mut conn, key_id).await?.jws(&payload);
        // A base64 signature is written as it is (no escapes), and is unique to its receipt.
        let field = format!(r#""signature":"{signature}""#);
        let Some(at) = text.find(&field) else { continue };
        text.insert_str(at + field.len(), &format!(r#","jws":"{jws}""#));
    }
    Ok(text.into_bytes().into())
}

/// A stored receipt, with its JWS made again by the key that signed it.
async fn with_jws(conn: &mut AnyConnection, mut receipt: SignedReceipt) -> ApiResult<SignedReceipt> {
    receipt.jws = signer(conn, receipt.key_id.clone()).await?.jws(&receipt.payload);
    Ok(receipt)
}

/// Signs a receipt for an entry with the current key and stores it in the entry's row, in the
/// transaction that appended the entry (the request-at-a-time path; the set path writes the row
/// whole).
///
/// # Errors
/// Fails when the database does, no key exists, or the entry is not the player's or already
/// has a receipt.
pub async fn issue_receipt(
    conn: &mut AnyConnection,
    player_id: Uuid,
    entry_id: Uuid,
    facts: ReceiptFacts,
) -> ApiResult<SignedReceipt> {
    let receipt = current_signer(conn).await?.sign(player_id, entry_id, facts, now_micros())?;
    let stored = sqlx::query(
        "update entry set receipt_id = $3, receipt_key = $4, receipt_payload = $5, receipt_signature = $6 \
         where id = $1 and player_id = $2 and receipt_id is null",
    )
    .bind(entry_id.to_string())
    .bind(player_id.to_string())
    .bind(receipt.id.to_string())
    .bind(&receipt.key_id)
    .bind(&receipt.payload)
    .bind(&receipt.signature)
    .execute(&mut *conn)
    .await?;
    if stored.rows_affected() != 1 {
        return Err(ApiError::Internal(anyhow::anyhow!("entry {entry_id} cannot take a receipt")));
    }
    Ok(receipt)
}

/// One of a player's receipts (found through the entries' receipt index).
///
/// # Errors
/// Fails when the database does.
pub async fn find_receipt(
    conn: &mut AnyConnection,
    player_id: Uuid,
    id: Uuid,
) -> ApiResult<Option<SignedReceipt>> {
    let row: Option<(String, String, String)> = sqlx::query_as(
        "select receipt_key, receipt_payload, receipt_signature from entry where receipt_id = $1 and player_id = $2",
    )
    .bind(id.to_string())
    .bind(player_id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    let Some((key_id, payload, signature)) = row else { return Ok(None) };
    let receipt = SignedReceipt { id, key_id, payload, signature, jws: String::new() };
    Ok(Some(with_jws(conn, receipt).await?))
}

/// The receipt issued for an entry, if any.
///
/// # Errors
/// Fails when the database does.
pub async fn find_receipt_of_entry(
    conn: &mut AnyConnection,
    entry_id: &str,
) -> ApiResult<Option<SignedReceipt>> {
    let row: Option<(String, String, String, String)> = sqlx::query_as(
        "select receipt_id, receipt_key, receipt_payload, receipt_signature from entry \
         where id = $1 and receipt_id is not null",
    )
    .bind(entry_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((id, key_id, payload, signature)) = row else { return Ok(None) };
    let id = Uuid::parse_str(&id)
        .map_err(|error| ApiError::Internal(anyhow::anyhow!("stored receipt id: {error}")))?;
    let receipt = SignedReceipt { id, key_id, payload, signature, jws: String::new() };
    Ok(Some(with_jws(conn, receipt).await?))
}

#[cfg(test)]
mod tests {
    use super::without_receipt_jws;

    #[test]
    fn stored_answers_lose_only_their_receipts_jws() {
        let body = br#"{"receipt":{"id":"r","signature":"c2ln+/=","jws":"aGVhZA.cGF5bG9hZA.c2ln"},"note":"a \",\"jws\":\" in text"}"#;
        let stored = without_receipt_jws(body);
        assert_eq!(
            String::from_utf8(stored).unwrap(),
            r#"{"receipt":{"id":"r","signature":"c2ln+/="},"note":"a \",\"jws\":\" in text"}"#
        );
        assert_eq!(without_receipt_jws(br#"{"a":1}"#), br#"{"a":1}"#.to_vec());
    }
}
