//! Idempotency (DESIGN.md principle 4) and the runner every money-moving request goes through.
//!
//! The key is claimed in the same transaction as the work, so the work and the stored response
//! commit together or not at all. A duplicate waits for the first request's transaction (the
//! database's unique-key wait on PostgreSQL, the write lock on SQLite), then replays its stored
//! response byte for byte. Responses to the operation's own refusals (`insufficient_funds` and
//! the like) are stored too: the request was processed and its answer is final. Failures before
//! the work starts (credentials, malformed input) and server failures store nothing, so a retry
//! runs again.

use std::future::Future;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;
use store_api::ErrorCode;
use store_api::limits::IDEMPOTENCY_KEY_LENGTH_MAX;

use futures_util::future::BoxFuture;

use crate::app::AppState;
use crate::db::{Db, now_micros};
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_json, read_json_body};
use crate::group_commit::{BatchJob, Done};

/// The header carrying the key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Set on a response that replays a stored one.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Rows removed per cleanup statement, so cleanup never holds a long lock.
const CLEANUP_BATCH_ROWS: i64 = 1_000;

/// A money-moving request's idempotency key and a hash of what was sent.
#[derive(Debug, Clone)]
pub struct Idempotency {
    /// The key, 1 to 255 printable ASCII characters.
    pub key: String,
    /// SHA-256 of the method, path and body: the same key with another request is refused.
    pub request_hash: String,
}

/// A money-moving request's JSON body (no body reads as `{}`) with its [`Idempotency`].
#[derive(Debug)]
pub struct IdempotentJson<T> {
    /// The key and request hash.
    pub idempotency: Idempotency,
    /// The parsed body.
    pub body: T,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for IdempotentJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let key = match request.headers().get(IDEMPOTENCY_KEY_HEADER) {
            None => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::IdempotencyKeyRequired,
                    "money-moving requests need an `Idempotency-Key` header",
                ));
            }
            Some(value) => value
                .to_str()
                .ok()
                .filter(|key| !key.is_empty() && key.len() <= IDEMPOTENCY_KEY_LENGTH_MAX && key.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "Idempotency-Key",
                        format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_LENGTH_MAX} printable ASCII characters"),
                    )
                })?
                .to_owned(),
        };
        let mut hasher = Sha256::new();
        hasher.update(request.method().as_str());
        hasher.update(b"\n");
        hasher.update(request.uri().path());
        hasher.update(b"\n");
        let bytes = read_json_body(request, state).await?;
        hasher.update(&bytes);
        let body = parse_json(if bytes.is_empty() { b"{}" } else { &bytes })?;
        Ok(Self { idempotency: Idempotency { key, request_hash: hex::encode(hasher.finalize()) }, body })
    }
}

/// One money-moving operation: a plain function over one database transaction, so it can run
/// alone or (later) as one of many in a batch.
pub trait MoneyOp: Send + Sync + Clone {
    /// What a success answers.
    type Output: Serialize + Send;
    /// The status of a success.
    const SUCCESS: StatusCode;

    /// Does the work inside `conn`'s transaction. A refusal is an `Err`; the runner rolls the
    /// work back.
    fn apply(
        self,
        state: &AppState,
        conn: &mut AnyConnection,
    ) -> impl Future<Output = ApiResult<Self::Output>> + Send;
}

/// A stored response.
struct Stored {
    status: StatusCode,
    body: Bytes,
}

fn stored_response(stored: Stored, replayed: bool) -> Response {
    let mut response =
        (stored.status, [(header::CONTENT_TYPE, "application/json")], stored.body).into_response();
    if replayed {
        response.headers_mut().insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    response
}

/// The stored answer for a key, if the key was used: for work that must not start again on a
/// retry (opening a provider session) before `run_once` replays.
///
/// # Errors
/// `idempotency_key_reused` for the same key with another request.
pub async fn stored_answer(
    state: &AppState,
    scope: &str,
    idempotency: &Idempotency,
) -> ApiResult<Option<Response>> {
    let row: Option<(String, i64, String)> = sqlx::query_as(
        "select request_hash, status_code, response_body from idempotency where scope = $1 and key = $2",
    )
    .bind(scope)
    .bind(&idempotency.key)
    .fetch_optional(state.db().pool())
    .await?;
    let Some((hash, status, body)) = row else { return Ok(None) };
    if hash != idempotency.request_hash {
        return Err(key_reused());
    }
    let status = u16::try_from(status).ok().and_then(|status| StatusCode::from_u16(status).ok());
    Ok(status.map(|status| stored_response(Stored { status, body: body.into() }, true)))
}

fn key_reused() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::IdempotencyKeyReused,
        "this Idempotency-Key was used for a different request; use a new key for a new request",
    )
}

/// Runs `op` once per `(scope, key)`: the first time for real, afterwards replaying the first
/// answer. With group commit on (and the server running), the request joins the writer's next
/// batch and returns once that batch has committed; otherwise it runs in its own transaction.
///
/// # Errors
/// `idempotency_key_reused` for the same key with another request; server failures (nothing is
/// stored for them).
pub async fn run_once<O: MoneyOp + 'static>(
    state: &AppState,
    scope: &str,
    idempotency: Idempotency,
    op: O,
) -> ApiResult<Response> {
    let job = OpJob { scope: scope.to_owned(), idempotency, op };
    let done = crate::group_commit::run_job(state, Box::new(job)).await?;
    Ok(stored_response(Stored { status: done.status, body: done.body }, done.replayed))
}

/// One money-moving request: claim its key, do the work, store the answer.
struct OpJob<O> {
    scope: String,
    idempotency: Idempotency,
    op: O,
}

impl<O: MoneyOp> OpJob<O> {
    async fn execute(&self, state: &AppState, conn: &mut AnyConnection) -> ApiResult<Done> {
        let Idempotency { key, request_hash } = &self.idempotency;
        if let Some(stored) = claim(conn, &self.scope, key, request_hash).await? {
            return Ok(Done { status: stored.status, body: stored.body, replayed: true });
        }
        // A copy of the operation, so the job can run again if the database retries it.
        let output = self.op.clone().apply(state, conn).await?;
        let body = serde_json::to_vec(&output).map_err(anyhow::Error::from)?;
        sqlx::query(
            "update idempotency set status_code = $3, response_body = $4 where scope = $1 and key = $2",
        )
        .bind(&self.scope)
        .bind(key)
        .bind(i64::from(O::SUCCESS.as_u16()))
        .bind(String::from_utf8_lossy(&body).into_owned())
        .execute(&mut *conn)
        .await?;
        Ok(Done { status: O::SUCCESS, body: body.into(), replayed: false })
    }
}

impl<O: MoneyOp + 'static> BatchJob for OpJob<O> {
    fn run<'a>(&'a self, state: &'a AppState, conn: &'a mut AnyConnection) -> BoxFuture<'a, ApiResult<Done>> {
        Box::pin(self.execute(state, conn))
    }
}

/// Claims the key, or returns the stored answer of the request that claimed it first.
async fn claim(
    conn: &mut AnyConnection,
    scope: &str,
    key: &str,
    request_hash: &str,
) -> ApiResult<Option<Stored>> {
    let claimed = sqlx::query(
        "insert into idempotency (scope, key, request_hash, status_code, response_body, created_at) \
         values ($1, $2, $3, 0, '', $4) on conflict (scope, key) do nothing",
    )
    .bind(scope)
    .bind(key)
    .bind(request_hash)
    .bind(now_micros())
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if claimed {
        return Ok(None);
    }
    let (first_hash, status, body): (String, i64, String) = sqlx::query_as(
        "select request_hash, status_code, response_body from idempotency where scope = $1 and key = $2",
    )
    .bind(scope)
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
    if first_hash != request_hash {
        return Err(key_reused());
    }
    let status = u16::try_from(status)
        .ok()
        .and_then(|status| StatusCode::from_u16(status).ok())
        .filter(|_| status != 0);
    match status {
        Some(status) => Ok(Some(Stored { status, body: body.into() })),
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::RequestInProgress,
            "a request with this key is still running; retry shortly",
        )),
    }
}

/// Deletes keys older than `retention`, a bounded batch at a time, until none are left.
///
/// # Errors
/// Fails when the database does.
pub async fn delete_expired_keys(db: &Db, retention: Duration) -> Result<u64, sqlx::Error> {
    let cutoff = now_micros().saturating_sub(i64::try_from(retention.as_micros()).unwrap_or(i64::MAX));
    let mut deleted = 0;
    loop {
        let mut tx = db.begin_write().await?;
        let rows = sqlx::query(
            "delete from idempotency where (scope, key) in \
             (select scope, key from idempotency where created_at < $1 limit $2)",
        )
        .bind(cutoff)
        .bind(CLEANUP_BATCH_ROWS)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        deleted += rows;
        if rows < u64::try_from(CLEANUP_BATCH_ROWS).unwrap_or(u64::MAX) {
            return Ok(deleted);
        }
    }
}
