//! Credentials: operator API keys (random, shown once, stored hashed, scoped) and player session
//! tokens (HMAC-signed, expiring, revocable), with the extractors that guard every route.
//!
//! A route states what it needs in its signature: `Operator<CatalogWrite>` or `PlayerAuth`
//! (their extractors are in `http::auth`). Each way a credential can be wrong has its own error
//! code.

use std::marker::PhantomData;

use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;
use store_api::ErrorCode;
use store_api::auth::{ApiKey, Scope};
use uuid::Uuid;

use crate::db::{from_micros, now_micros};
use crate::error::{ApiError, ApiResult};

/// How long an expired session's row is kept (its token is refused from its expiry on).
pub const EXPIRED_SESSION_RETENTION: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);
/// Expired sessions deleted per statement, so a purge never holds a long lock.
const SESSIONS_PURGED_PER_STATEMENT: i64 = 1_000;

/// Every operator API key starts with this.
pub const API_KEY_PREFIX: &str = "csk_";
/// Every player session token starts with this.
pub const SESSION_TOKEN_PREFIX: &str = "cst_";
/// Characters of a key kept in clear to recognise it in lists.
const API_KEY_SHOWN_CHARS: usize = 12;
/// The id of the current session signing key; tokens carry it so the key can rotate.
const SESSION_KEY_ID: &str = "1";

/// Deletes the sessions that expired more than [`EXPIRED_SESSION_RETENTION`] ago, a thousand per
/// statement; returns how many.
///
/// # Errors
/// Fails when the database does.
pub async fn delete_expired_sessions(db: &crate::db::Db) -> Result<u64, sqlx::Error> {
    let retention = i64::try_from(EXPIRED_SESSION_RETENTION.as_micros()).unwrap_or(i64::MAX);
    let before = now_micros().saturating_sub(retention);
    let mut deleted = 0;
    loop {
        let done = sqlx::query(
            "delete from session where id in (select id from session where expires_at < $1 limit $2)",
        )
        .bind(before)
        .bind(SESSIONS_PURGED_PER_STATEMENT)
        .execute(db.pool())
        .await?
        .rows_affected();
        deleted += done;
        if done < u64::try_from(SESSIONS_PURGED_PER_STATEMENT).unwrap_or(u64::MAX) {
            return Ok(deleted);
        }
    }
}

/// The rate-limit bucket of logins with one device id: a device logging in again and again
/// (each login a session row) is throttled like a player's requests.
#[must_use]
pub fn device_login_caller(device_id: &str) -> Uuid {
    let digest = Sha256::digest(format!("device-login\n{device_id}").as_bytes());
    let mut bytes = [0_u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

/// What is stored for a device id: its SHA-256, never the id itself. The device id is the whole
/// credential of a device login, so a reader of the player table (an analyst's key, an export, a
/// backup) must not be able to log in as the player.
#[must_use]
pub fn device_key(device_id: &str) -> String {
    format!("{DEVICE_KEY_PREFIX}{}", hex::encode(Sha256::digest(device_id.as_bytes())))
}

/// The prefix of a stored device key.
pub const DEVICE_KEY_PREFIX: &str = "sha256:";

/// Replaces device ids stored in the clear (by versions before device keys) with their keys, a
/// thousand players per transaction; returns how many. Erased players keep their marker.
///
/// # Errors
/// Fails when the database does.
pub async fn hash_stored_device_ids(db: &crate::db::Db) -> Result<u64, sqlx::Error> {
    let mut hashed = 0;
    loop {
        let mut tx = db.begin_write().await?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "select id, device_id from player where device_id not like 'sha256:%' and device_id not like 'erased:%' \
             and device_id not like 'steam:%' limit 1000",
        )
        .fetch_all(&mut *tx)
        .await?;
        for (id, device_id) in &rows {
            sqlx::query("update player set device_id = $2 where id = $1")
                .bind(id)
                .bind(device_key(device_id))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        hashed += rows.len() as u64;
        if rows.len() < 1000 {
            return Ok(hashed);
        }
    }
}

/// A fresh operator API key: the prefix and 256 random bits.
#[must_use]
pub fn generate_api_key() -> String {
    let mut secret = [0_u8; 32];
    rand::rng().fill_bytes(&mut secret);
    format!("{API_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret))
}

/// How a key is stored: its SHA-256. The key has 256 bits of entropy, so a plain hash is enough
/// (a slow password hash would protect nothing more and cost every request).
#[must_use]
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Creates and stores an API key, returning the key (shown once) and its record.
///
/// # Errors
/// Fails when the database write fails.
pub async fn create_api_key(
    conn: &mut AnyConnection,
    name: &str,
    scopes: &[Scope],
) -> Result<(String, ApiKey), sqlx::Error> {
    let key = generate_api_key();
    let id = Uuid::now_v7();
    let created_at = now_micros();
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    let scope_text = scopes.iter().map(|scope| scope.as_str()).collect::<Vec<_>>().join(",");
    let prefix: String = key.chars().take(API_KEY_SHOWN_CHARS).collect();
    sqlx::query(
        "insert into api_key (id, name, prefix, secret_hash, scopes, created_at) values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id.to_string())
    .bind(name)
    .bind(&prefix)
    .bind(hash_api_key(&key))
    .bind(scope_text)
    .bind(created_at)
    .execute(&mut *conn)
    .await?;
    let record = ApiKey {
        id,
        name: name.to_owned(),
        prefix,
        scopes,
        created_at: from_micros(created_at),
        revoked_at: None,
    };
    Ok((key, record))
}

/// Parses the stored comma-separated scopes, skipping any this version does not know.
#[must_use]
pub fn parse_scopes(text: &str) -> Vec<Scope> {
    text.split(',').filter_map(|name| Scope::parse(name).ok()).collect()
}

/// Signs and checks player session tokens with the installation's secret.
#[derive(Clone)]
pub struct SessionSigner {
    secret: Vec<u8>,
}

impl std::fmt::Debug for SessionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSigner(..)")
    }
}

/// What a valid session token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionClaims {
    /// The session row, checked for revocation.
    pub session_id: Uuid,
    /// The player.
    pub player_id: Uuid,
    /// Expiry, microseconds since the epoch.
    pub expires_at: i64,
}

impl SessionSigner {
    /// A signer over the given secret.
    #[must_use]
    pub fn new(secret: Vec<u8>) -> Self {
        Self { secret }
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(payload.as_bytes());
        mac
    }

    /// A token `cst_<key id>.<session>.<player>.<expiry>.<signature>`.
    #[must_use]
    pub fn sign(&self, claims: SessionClaims) -> String {
        let payload = format!(
            "{SESSION_TOKEN_PREFIX}{SESSION_KEY_ID}.{}.{}.{}",
            claims.session_id, claims.player_id, claims.expires_at
        );
        let signature = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{signature}")
    }

    /// Checks a token's shape, signature (in constant time) and expiry.
    ///
    /// # Errors
    /// `malformed_credentials`, `invalid_credentials` or `token_expired`.
    pub fn verify(&self, token: &str, now: i64) -> ApiResult<SessionClaims> {
        let malformed =
            || credential_error(ErrorCode::MalformedCredentials, "the session token is malformed");
        let (payload, signature) = token.rsplit_once('.').ok_or_else(malformed)?;
        let parts: Vec<&str> =
            payload.strip_prefix(SESSION_TOKEN_PREFIX).ok_or_else(malformed)?.split('.').collect();
        let [key_id, session_id, player_id, expires_at] = parts.as_slice() else { return Err(malformed()) };
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| malformed())?;
        let claims = SessionClaims {
            session_id: Uuid::parse_str(session_id).map_err(|_| malformed())?,
            player_id: Uuid::parse_str(player_id).map_err(|_| malformed())?,
            expires_at: expires_at.parse().map_err(|_| malformed())?,
        };
        if *key_id != SESSION_KEY_ID || self.mac(payload).verify_slice(&signature).is_err() {
            return Err(credential_error(
                ErrorCode::InvalidCredentials,
                "the session token's signature is not valid",
            ));
        }
        if claims.expires_at <= now {
            return Err(credential_error(ErrorCode::TokenExpired, "the session has expired; log in again"));
        }
        Ok(claims)
    }
}

/// A 401 with the given code.
pub(crate) fn credential_error(code: ErrorCode, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// The kinds of bearer credential, told apart by prefix.
pub(crate) enum Bearer<'a> {
    ApiKey(&'a str),
    SessionToken(&'a str),
}

pub(crate) fn bearer(parts: &Parts) -> ApiResult<Bearer<'_>> {
    let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
        credential_error(ErrorCode::Unauthenticated, "send credentials as `Authorization: Bearer …`")
    })?;
    let malformed = || {
        credential_error(
            ErrorCode::MalformedCredentials,
            "the Authorization header must be `Bearer <credential>`",
        )
    };
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, credential) = value.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed());
    }
    let credential = credential.trim();
    if credential.starts_with(API_KEY_PREFIX) {
        Ok(Bearer::ApiKey(credential))
    } else if credential.starts_with(SESSION_TOKEN_PREFIX) {
        Ok(Bearer::SessionToken(credential))
    } else {
        Err(malformed())
    }
}

/// The scope(s) a route requires, as a type so the route's signature says it.
pub trait RequiredScope: Send + Sync + 'static {
    /// The scopes any one of which lets the key in.
    const ANY_OF: &'static [Scope];
}

/// Either of two scopes: `AnyOf<PlayersWrite, RewardsWrite>`.
#[derive(Debug, Clone, Copy)]
pub struct AnyOf<A, B>(PhantomData<(A, B)>);

/// Marker types for [`RequiredScope`], one per scope.
pub mod scopes {
    use super::{RequiredScope, Scope};

    macro_rules! scope_markers {
        ($($marker:ident => $scope:ident),* $(,)?) => {$(
            #[doc = concat!("Requires `", stringify!($scope), "`.")]
            #[derive(Debug, Clone, Copy)]
            pub struct $marker;
            impl RequiredScope for $marker {
                const ANY_OF: &'static [Scope] = &[Scope::$scope];
            }
        )*};
    }

    scope_markers! {
        CatalogRead => CatalogRead,
        CatalogWrite => CatalogWrite,
        PlayersRead => PlayersRead,
        PlayersWrite => PlayersWrite,
        RefundsWrite => RefundsWrite,
        RewardsWrite => RewardsWrite,
        KeysAdmin => KeysAdmin,
        AnalyticsRead => AnalyticsRead,
    }

    /// Operators who manage players, and game servers that grant rewards.
    pub type GrantWriters = super::AnyOf<PlayersWrite, RewardsWrite>;
}

impl<A: RequiredScope, B: RequiredScope> RequiredScope for AnyOf<A, B> {
    const ANY_OF: &'static [Scope] = &[A::ANY_OF[0], B::ANY_OF[0]];
}

/// An operator authenticated by an API key that has scope `S`.
#[derive(Debug, Clone)]
pub struct Operator<S> {
    /// The key used.
    pub key_id: Uuid,
    _scope: PhantomData<S>,
}

impl<S> Operator<S> {
    /// The operator holding key `key_id`, whose scopes were checked.
    pub(crate) fn new(key_id: Uuid) -> Self {
        Self { key_id, _scope: PhantomData }
    }

    /// How the operator is named in the audit log and ledger entries; also the scope of its
    /// idempotency keys.
    #[must_use]
    pub fn actor(&self) -> String {
        format!("api_key:{}", self.key_id)
    }
}

impl PlayerAuth {
    /// The scope of the player's idempotency keys.
    #[must_use]
    pub fn idempotency_scope(&self) -> String {
        format!("player:{}", self.player_id)
    }
}

/// A player authenticated by a live session token.
#[derive(Debug, Clone, Copy)]
pub struct PlayerAuth {
    /// The player.
    pub player_id: Uuid,
    /// The session.
    pub session_id: Uuid,
}

/// A player's money-moving write (purchase, consume, reward claim) by a session token whose
/// signature and expiry are checked at the edge, while whether the session was revoked is read
/// by the write's own transaction (the writer's batch reads every session of the batch with one
/// statement). A write is thus refused `session_revoked` when its transaction began after the
/// revocation committed, and it costs no read of its own.
#[derive(Debug, Clone, Copy)]
pub struct PlayerWrite {
    /// The player.
    pub player_id: Uuid,
    /// The session, checked by the write's transaction.
    pub session_id: Uuid,
}

impl PlayerWrite {
    /// The scope of the player's idempotency keys (the same as [`PlayerAuth`]'s).
    #[must_use]
    pub fn idempotency_scope(&self) -> String {
        format!("player:{}", self.player_id)
    }
}

/// Whether a session row (`None`: no such session; `Some(revoked_at)`) lets its player in.
///
/// # Errors
/// `session_revoked`, or `invalid_credentials` for a session the store does not know.
pub fn live_session(revoked_at: Option<Option<i64>>) -> Result<(), ApiError> {
    match revoked_at {
        Some(None) => Ok(()),
        Some(Some(_)) => {
            Err(credential_error(ErrorCode::SessionRevoked, "the session was revoked; log in again"))
        }
        None => Err(credential_error(ErrorCode::InvalidCredentials, "the session is not known")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires_at: i64) -> SessionClaims {
        SessionClaims { session_id: Uuid::now_v7(), player_id: Uuid::now_v7(), expires_at }
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let signer = SessionSigner::new(vec![7; 32]);
        let token = signer.sign(claims(1_000));
        assert_eq!(signer.verify(&token, 999).unwrap().expires_at, 1_000);
        assert_eq!(signer.verify(&token, 1_000).unwrap_err().code(), ErrorCode::TokenExpired);
    }

    #[test]
    fn a_token_signed_with_another_secret_or_edited_is_refused() {
        let signer = SessionSigner::new(vec![7; 32]);
        let other = SessionSigner::new(vec![8; 32]);
        let token = other.sign(claims(1_000));
        assert_eq!(signer.verify(&token, 0).unwrap_err().code(), ErrorCode::InvalidCredentials);
        let own = signer.sign(claims(1_000));
        let extended = own.replacen(".1000.", ".9999.", 1);
        assert_eq!(signer.verify(&extended, 0).unwrap_err().code(), ErrorCode::InvalidCredentials);
        assert_eq!(signer.verify("cst_nonsense", 0).unwrap_err().code(), ErrorCode::MalformedCredentials);
    }

    #[test]
    fn api_keys_are_random_and_hashed() {
        let (a, b) = (generate_api_key(), generate_api_key());
        assert_ne!(a, b);
        assert!(a.starts_with(API_KEY_PREFIX) && a.len() > 40);
        assert_eq!(hash_api_key(&a).len(), 64);
        assert_ne!(hash_api_key(&a), hash_api_key(&b));
    }
}
