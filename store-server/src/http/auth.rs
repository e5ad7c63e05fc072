//! The extractors that guard every route: `Operator<S>` (an API key with scope `S`) and
//! `PlayerAuth` (a live session token), `PlayerWrite` (a session token whose row the write's
//! transaction checks). The credentials themselves are [`crate::players::auth`]'s.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use store_api::ErrorCode;
use uuid::Uuid;

use crate::app::AppState;
use crate::db::now_micros;
use crate::error::ApiError;
use crate::players::auth::{
    Bearer, Operator, PlayerAuth, PlayerWrite, RequiredScope, SessionClaims, bearer, credential_error,
    hash_api_key, live_session, parse_scopes,
};

impl<S: RequiredScope> FromRequestParts<AppState> for Operator<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let key = match bearer(parts)? {
            Bearer::ApiKey(key) => key,
            Bearer::SessionToken(_) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::WrongCredentialKind,
                    "this route needs an operator API key, not a player session token",
                ));
            }
        };
        let row: Option<(String, String, Option<i64>)> =
            sqlx::query_as("select id, scopes, revoked_at from api_key where secret_hash = $1")
                .bind(hash_api_key(key))
                .fetch_optional(state.db().pool())
                .await?;
        let Some((id, scope_text, revoked_at)) = row else {
            return Err(credential_error(ErrorCode::InvalidCredentials, "the API key is not known"));
        };
        if revoked_at.is_some() {
            return Err(credential_error(ErrorCode::ApiKeyRevoked, "the API key was revoked"));
        }
        let key_id =
            Uuid::parse_str(&id).map_err(|error| anyhow::anyhow!("stored api key id `{id}`: {error}"))?;
        state.key_limits().check(key_id)?;
        let held = parse_scopes(&scope_text);
        if !S::ANY_OF.iter().any(|scope| held.contains(scope)) {
            let required: Vec<&str> = S::ANY_OF.iter().map(|scope| scope.as_str()).collect();
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::InsufficientScope,
                format!("the API key needs the `{}` scope", required.join("` or `")),
            )
            .with_detail("required_scope", required.join(" or ")));
        }
        Ok(Self::new(key_id))
    }
}

/// The claims of a valid player session token (signature and expiry checked), not yet checked
/// against the session's row.
fn session_claims(parts: &Parts, state: &AppState) -> Result<SessionClaims, ApiError> {
    let token = match bearer(parts)? {
        Bearer::SessionToken(token) => token,
        Bearer::ApiKey(_) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::WrongCredentialKind,
                "this route needs a player session token, not an operator API key",
            ));
        }
    };
    state.signer().verify(token, now_micros())
}

impl FromRequestParts<AppState> for PlayerAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let claims = session_claims(parts, state)?;
        let revoked: Option<Option<i64>> = sqlx::query_scalar("select revoked_at from session where id = $1")
            .bind(claims.session_id.to_string())
            .fetch_optional(state.db().pool())
            .await?;
        live_session(revoked)?;
        state.player_limits().check(claims.player_id)?;
        Ok(Self { player_id: claims.player_id, session_id: claims.session_id })
    }
}

impl FromRequestParts<AppState> for PlayerWrite {
    type Rejection = ApiError;

    /// The session's row is read by the write's transaction (see [`PlayerWrite`]).
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let claims = session_claims(parts, state)?;
        state.player_limits().check(claims.player_id)?;
        Ok(Self { player_id: claims.player_id, session_id: claims.session_id })
    }
}
