//! Idempotency (DESIGN.md principle 4) and the runner every money-moving request goes through.
//!
//! The key is claimed in the same transaction as the work, so the work and the stored response
//! commit together or not at all. A duplicate waits for the first request's transaction (the
//! database's unique-key wait on PostgreSQL, the write lock on SQLite), then replays its stored
//! response byte for byte. Responses to the operation's own refusals (`insufficient_funds` and
//! the like) are stored too: the work runs in a savepoint of its own, which a refusal rolls back
//! while the claim keeps the refusal, so the answer is final. Failures before the work starts
//! (credentials, malformed input), `unavailable` and server failures store nothing, so a retry
//! runs again.
//!
//! Real-money requests call a payment provider before their work, which cannot be rolled back:
//! they `reserve` the key first, with the request hash, in a transaction of its own. The
//! provider's idempotency key is derived from the reservation (key and request hash), so two
//! requests with one key and different bodies can never share a provider session, and a retry
//! of the same request reuses the reserved order id and the provider's session.

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

use crate::db::{Db, now_micros};
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_json, read_json_body};
use crate::ledger::batch::{BatchLedger, Finished, SetJob, Unfinished};
use crate::ledger::group_commit::Batcher;
use crate::ledger::group_commit::{BatchJob, Done};
use crate::ledger::receipts::Signed;
use crate::players::auth::{PlayerWrite, live_session};
use std::collections::HashMap;

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
    /// work back. The operation carries whatever else it needs (the catalog, a provider).
    fn apply(self, conn: &mut AnyConnection) -> impl Future<Output = ApiResult<Self::Output>> + Send;

    /// The player whose state the operation changes, when it can take the set path (see
    /// [`crate::ledger::batch`]); `None` keeps it on the per-request path.
    fn batch_player(&self) -> Option<uuid::Uuid> {
        None
    }

    /// The reward rule the operation claims under, read with the batch (set path only).
    fn batch_reward_rule(&self) -> Option<&str> {
        None
    }

    /// The receipts in an answer, which the set path signs after its decide phase (their
    /// signatures are empty until then). An operation whose `decide` issues receipts must list
    /// them here: a receipt left unsigned fails the batch.
    fn receipts(output: &mut Self::Output) -> Vec<&mut store_api::receipt::SignedReceipt> {
        let _ = output;
        Vec::new()
    }

    /// The item the operation buys, when the batch must read its purchase limit or stock (set
    /// path only).
    fn batch_item_reads(&self) -> Option<crate::ledger::batch::ItemReads> {
        None
    }

    /// The currencies of the tabs the operation may charge (set path only).
    fn batch_tab_currencies(&self) -> Vec<store_api::MoneyCurrency> {
        Vec::new()
    }

    /// Decides the operation against the batch's state, exactly as [`MoneyOp::apply`] would
    /// against the database; `None` defers it to `apply`.
    ///
    /// # Errors
    /// The operation's refusals, as `apply` gives them.
    fn decide(&self, ledger: &mut BatchLedger) -> ApiResult<Option<Self::Output>> {
        let _ = ledger;
        Ok(None)
    }
}

/// A stored response.
struct Stored {
    status: StatusCode,
    body: Bytes,
}

/// The response for an answer; a replayed one (stored without its receipts' JWS) gets them
/// back first.
async fn stored_response(db: &crate::db::Db, stored: Stored, replayed: bool) -> ApiResult<Response> {
    let body = if replayed {
        crate::ledger::receipts::with_receipt_jws(db, stored.body).await?
    } else {
        stored.body
    };
    let mut response = (stored.status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if replayed {
        response.headers_mut().insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// A real-money request's key, claimed before any provider call.
#[derive(Debug)]
enum Reservation {
    /// The request runs (for the first time, or again after a failure that stored nothing): it
    /// opens the resource reserved for it, with this provider idempotency key.
    Run {
        /// The id of what the request creates (an order), the same on every retry.
        resource_id: uuid::Uuid,
        /// The key for the provider: the scope, the key and the request hash.
        provider_key: String,
    },
    /// The request ran; its answer.
    Answered(Response),
}

/// Claims a real-money request's key in a transaction of its own, with the request hash and
/// the id of the order it will open, before any provider is called.
///
/// # Errors
/// `idempotency_key_reused` for the same key with another request.
async fn reserve(writer: &Batcher, scope: &str, idempotency: &Idempotency) -> ApiResult<Reservation> {
    let mut tx = writer.db().begin_write().await?;
    sqlx::query(
        "insert into idempotency (scope, key, request_hash, status_code, response_body, created_at, resource_id) \
         values ($1, $2, $3, 0, '', $4, $5) on conflict (scope, key) do nothing",
    )
    .bind(scope)
    .bind(&idempotency.key)
    .bind(&idempotency.request_hash)
    .bind(now_micros())
    .bind(uuid::Uuid::now_v7().to_string())
    .execute(&mut *tx)
    .await?;
    let (hash, status, body, resource): (String, i64, String, Option<String>) = sqlx::query_as(
        "select request_hash, status_code, response_body, resource_id from idempotency where scope = $1 and key = $2",
    )
    .bind(scope)
    .bind(&idempotency.key)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    if hash != idempotency.request_hash {
        return Err(key_reused());
    }
    if let Some(status) = stored_status(status) {
        return Ok(Reservation::Answered(
            stored_response(writer.db(), Stored { status, body: body.into() }, true).await?,
        ));
    }
    let resource_id = resource.and_then(|id| uuid::Uuid::parse_str(&id).ok()).ok_or_else(in_progress)?;
    let provider_key = hex::encode(Sha256::digest(format!("{scope}\n{}\n{hash}", idempotency.key)));
    Ok(Reservation::Run { resource_id, provider_key })
}

/// Stores a reserved request's refusal (see [`ApiError::refusal_body`]) as its final answer and
/// returns it; any other failure leaves the reservation, so a retry of the same request runs.
///
/// # Errors
/// The refusal itself, when it is not final or cannot be stored.
async fn refuse_reserved(
    writer: &Batcher,
    scope: &str,
    idempotency: &Idempotency,
    error: ApiError,
) -> ApiResult<Response> {
    let Some((status, body)) = error.refusal_body() else { return Err(error) };
    let mut tx = writer.db().begin_write().await?;
    store_answer(&mut tx, scope, &idempotency.key, status, &body).await?;
    tx.commit().await?;
    stored_response(writer.db(), Stored { status, body: body.into() }, false).await
}

async fn store_answer(
    conn: &mut AnyConnection,
    scope: &str,
    key: &str,
    status: StatusCode,
    body: &[u8],
) -> ApiResult<()> {
    sqlx::query(
        "update idempotency set status_code = $3, response_body = $4 where scope = $1 and key = $2 and status_code = 0",
    )
    .bind(scope)
    .bind(key)
    .bind(i64::from(status.as_u16()))
    .bind(String::from_utf8_lossy(body).into_owned())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn stored_status(status: i64) -> Option<StatusCode> {
    u16::try_from(status)
        .ok()
        .filter(|status| *status != 0)
        .and_then(|status| StatusCode::from_u16(status).ok())
}

pub(crate) fn in_progress() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::RequestInProgress,
        "a request with this key is still running; retry shortly",
    )
}

pub(crate) fn key_reused() -> ApiError {
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
    writer: &Batcher,
    scope: &str,
    idempotency: Idempotency,
    op: O,
) -> ApiResult<Response> {
    let job = OpJob { scope: scope.to_owned(), session: None, idempotency, op, reserved: false };
    let done = writer.run(Box::new(job)).await?;
    stored_response(writer.db(), Stored { status: done.status, body: done.body }, done.replayed).await
}

/// [`run_once`] for a player's write: the request runs only if the player's session is still
/// live when its transaction reads it (see [`PlayerWrite`]); otherwise it is refused
/// `session_revoked` and nothing is stored.
///
/// # Errors
/// As [`run_once`], and `session_revoked`.
pub async fn run_for_player<O: MoneyOp + 'static>(
    writer: &Batcher,
    player: PlayerWrite,
    idempotency: Idempotency,
    op: O,
) -> ApiResult<Response> {
    let job = OpJob {
        scope: player.idempotency_scope(),
        session: Some(player.session_id),
        idempotency,
        op,
        reserved: false,
    };
    let done = writer.run(Box::new(job)).await?;
    stored_response(writer.db(), Stored { status: done.status, body: done.body }, done.replayed).await
}

/// Runs a real-money request once per `(scope, key)`: reserves the key (`reserve`), then `open` (which
/// prices the request and calls the provider with the reserved id and provider key) and the
/// operation it returns, whose work completes the reservation. A refusal by `open` is stored
/// like the operation's own.
///
/// # Errors
/// As [`run_once`], and `open`'s failures that store nothing (the provider unreachable).
pub async fn run_reserved<O, F, Fut>(
    writer: &Batcher,
    scope: &str,
    idempotency: Idempotency,
    open: F,
) -> ApiResult<Response>
where
    O: MoneyOp + 'static,
    F: FnOnce(uuid::Uuid, String) -> Fut,
    Fut: Future<Output = ApiResult<O>>,
{
    let op = match reserve(writer, scope, &idempotency).await? {
        Reservation::Answered(answer) => return Ok(answer),
        Reservation::Run { resource_id, provider_key } => match open(resource_id, provider_key).await {
            Ok(op) => op,
            Err(refusal) => return refuse_reserved(writer, scope, &idempotency, refusal).await,
        },
    };
    let job = OpJob { scope: scope.to_owned(), session: None, idempotency, op, reserved: true };
    let done = writer.run(Box::new(job)).await?;
    stored_response(writer.db(), Stored { status: done.status, body: done.body }, done.replayed).await
}

/// One money-moving request: claim its key, do the work, store the answer.
struct OpJob<O> {
    scope: String,
    /// The session of a player's write, checked by the write's transaction before the claim.
    session: Option<uuid::Uuid>,
    idempotency: Idempotency,
    op: O,
    /// The key was reserved before (a real-money request): complete that claim.
    reserved: bool,
}

/// The savepoint a request's work runs in, inside its claim: a refusal rolls back the work
/// and keeps the claim, which stores the refusal.
const WORK_SAVEPOINT: &str = "coinslot_work";

impl<O: MoneyOp> OpJob<O> {
    async fn execute(&self, conn: &mut AnyConnection) -> ApiResult<Done> {
        let Idempotency { key, request_hash } = &self.idempotency;
        if let Some(session) = self.session {
            let revoked: Option<Option<i64>> =
                sqlx::query_scalar("select revoked_at from session where id = $1")
                    .bind(session.to_string())
                    .fetch_optional(&mut *conn)
                    .await?;
            live_session(revoked)?;
        }
        let stored = if self.reserved {
            claim_reserved(conn, &self.scope, key, request_hash).await?
        } else {
            claim(conn, &self.scope, key, request_hash).await?
        };
        if let Some(stored) = stored {
            return Ok(Done { status: stored.status, body: stored.body, replayed: true });
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("savepoint {WORK_SAVEPOINT}"))).execute(&mut *conn).await?;
        // A copy of the operation, so the job can run again if the database retries it.
        let (status, body, stored) = match self.op.clone().apply(conn).await {
            Ok(output) => {
                let body = serde_json::to_vec(&output).map_err(anyhow::Error::from)?;
                // Stored without the receipts' JWS: a replay makes it again.
                let stored = crate::ledger::receipts::without_receipt_jws(&body);
                (O::SUCCESS, body, Some(stored))
            }
            Err(error) => {
                let Some(refusal) = error.refusal_body() else { return Err(error) };
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "rollback to savepoint {WORK_SAVEPOINT}; release savepoint {WORK_SAVEPOINT}"
                )))
                .execute(&mut *conn)
                .await?;
                (refusal.0, refusal.1, None)
            }
        };
        store_answer(conn, &self.scope, key, status, stored.as_deref().unwrap_or(&body)).await?;
        Ok(Done { status, body: body.into(), replayed: false })
    }
}

impl<O: MoneyOp + 'static> BatchJob for OpJob<O> {
    fn run<'a>(&'a self, conn: &'a mut AnyConnection) -> BoxFuture<'a, ApiResult<Done>> {
        Box::pin(self.execute(conn))
    }

    fn set_job(&self) -> Option<&dyn SetJob> {
        (!self.reserved && self.op.batch_player().is_some()).then_some(self as &dyn SetJob)
    }
}

impl<O: MoneyOp + 'static> SetJob for OpJob<O> {
    fn scope(&self) -> &str {
        &self.scope
    }

    fn key(&self) -> &str {
        &self.idempotency.key
    }

    fn request_hash(&self) -> &str {
        &self.idempotency.request_hash
    }

    fn player_id(&self) -> uuid::Uuid {
        self.op.batch_player().unwrap_or_default()
    }

    fn session_id(&self) -> Option<uuid::Uuid> {
        self.session
    }

    fn reward_rule(&self) -> Option<&str> {
        self.op.batch_reward_rule()
    }

    fn tab_currencies(&self) -> Vec<store_api::MoneyCurrency> {
        self.op.batch_tab_currencies()
    }

    fn item_reads(&self) -> Option<crate::ledger::batch::ItemReads> {
        self.op.batch_item_reads()
    }

    fn decide(&self, ledger: &mut BatchLedger) -> ApiResult<Option<(StatusCode, Box<dyn Unfinished>)>> {
        let Some(output) = self.op.decide(ledger)? else { return Ok(None) };
        Ok(Some((O::SUCCESS, Box::new(UnsignedAnswer::<O>(output)))))
    }
}

/// A success decided on the set path, its receipts not signed yet and its JSON not written.
struct UnsignedAnswer<O: MoneyOp>(O::Output);

impl<O: MoneyOp> Unfinished for UnsignedAnswer<O> {
    fn finish(mut self: Box<Self>, signatures: &HashMap<String, Signed>) -> ApiResult<Finished> {
        let mut receipts = 0;
        for receipt in O::receipts(&mut self.0) {
            let signed = signatures.get(&receipt.id.to_string()).cloned().ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("receipt {} was not signed", receipt.id))
            })?;
            receipt.signature = signed.signature;
            receipt.jws = signed.jws;
            receipts += 1;
        }
        let body = serde_json::to_vec(&self.0).map_err(anyhow::Error::from)?;
        Ok(Finished { stored: crate::ledger::receipts::without_receipt_jws(&body), body, receipts })
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
    match stored_status(status) {
        Some(status) => Ok(Some(Stored { status, body: body.into() })),
        None => Err(in_progress()),
    }
}

/// Takes a reserved key for the work (a no-op update locks its row, so a concurrent retry of
/// the same request waits and then replays), or returns the answer stored meanwhile.
async fn claim_reserved(
    conn: &mut AnyConnection,
    scope: &str,
    key: &str,
    request_hash: &str,
) -> ApiResult<Option<Stored>> {
    let row: Option<(String, i64, String)> = sqlx::query_as(
        "update idempotency set status_code = status_code where scope = $1 and key = $2 \
         returning request_hash, status_code, response_body",
    )
    .bind(scope)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    let (first_hash, status, body) =
        row.ok_or_else(|| anyhow::anyhow!("the reserved key {key} of {scope} vanished"))?;
    if first_hash != request_hash {
        return Err(key_reused());
    }
    Ok(stored_status(status).map(|status| Stored { status, body: body.into() }))
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
