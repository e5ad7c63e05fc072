//! Group commit: money-moving requests of this instance queue for one writer, which runs as
//! many as are waiting (up to `batch_size_max`, after waiting at most `batch_wait` for more) in
//! one database transaction and commits once. Each request runs inside its own savepoint, so one
//! that is refused (or fails) is rolled back alone and gets its own answer; the others are not
//! affected. Nobody hears back before the batch's commit is durable.
//!
//! Correctness stays in the database: every request takes the same locks and guarded updates it
//! would alone, so several instances on one PostgreSQL each batch their own requests safely. Two
//! instances' batches can wait on each other's locks (one holds a player's row, the other an
//! idempotency key); PostgreSQL then aborts one request's statement as a deadlock victim. That
//! request alone is rolled back to its savepoint and runs again in the next batch (at most
//! [`ATTEMPTS_MAX`] times, then `unavailable`: retry with the same key); its neighbours commit.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt as _;

use axum::http::StatusCode;
use futures_util::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::{AnyConnection, Connection as _};
use store_api::ErrorCode;
use tokio::sync::{mpsc, oneshot};

use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::ledger::batch::{self, LoginSetJob, SetJob, SetOutcome};

/// Requests waiting for the writer at most; a full queue makes submitters wait (back-pressure).
pub const QUEUE_CAPACITY: usize = 4_096;
/// Runs of one request at most when the database picks it as a deadlock or serialization victim.
pub const ATTEMPTS_MAX: u32 = 4;
/// The savepoint each request of a batch runs in.
const SAVEPOINT: &str = "coinslot_request";

/// One request's work inside a shared transaction. A job carries the handles it needs (the
/// catalog, a provider): the writer knows only the database.
pub(crate) trait BatchJob: Send + Sync {
    /// Runs the request on `conn`, which is inside the batch's transaction and the request's
    /// savepoint. It may run again (in a later transaction) if the database retries it.
    fn run<'a>(&'a self, conn: &'a mut AnyConnection) -> BoxFuture<'a, ApiResult<Done>>;

    /// The job as the set path sees it, when it can take it (see [`crate::ledger::batch`]).
    fn set_job(&self) -> Option<&dyn SetJob> {
        None
    }

    /// The job as a device login the set path takes.
    fn login_job(&self) -> Option<&dyn LoginSetJob> {
        None
    }
}

/// Whether the database gave up on this request only because of other transactions (a deadlock
/// victim, a serialization failure): running it again is correct.
fn retryable(error: &ApiError) -> bool {
    match error {
        ApiError::Database(sqlx::Error::Database(error)) => {
            matches!(error.code().as_deref(), Some("40P01" | "40001"))
        }
        _ => false,
    }
}

/// What a request came to: its stored answer, and whether it was replayed.
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) status: StatusCode,
    pub(crate) body: axum::body::Bytes,
    pub(crate) replayed: bool,
}

pub(crate) struct Pending {
    job: Box<dyn BatchJob>,
    reply: oneshot::Sender<ApiResult<Done>>,
    attempts: u32,
}

/// How the writer batches.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Whether requests queue for the writer at all (`group_commit`); off, each runs alone.
    pub enabled: bool,
    /// Requests in one batch at most.
    pub size_max: usize,
    /// How long the writer waits for more requests before it commits a batch.
    pub wait: Duration,
    /// Writers sharing the queue, each with a transaction of its own (at least one).
    pub writers: usize,
    /// The instance's label on the batch-size metric (one process may run several stores).
    pub instance: String,
}

/// The queue to the writer, and the database it writes to. The writer runs while the server
/// runs; without it, requests run one transaction each. Cheap to clone: clones share the queue.
#[derive(Clone)]
pub struct Batcher(Arc<Shared>);

struct Shared {
    db: Db,
    config: WriterConfig,
    sender: mpsc::Sender<Pending>,
    receiver: Mutex<Option<mpsc::Receiver<Pending>>>,
    /// Set while the writer runs: cleared when it stops, however it stops.
    alive: AtomicBool,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("config", &self.0.config).finish_non_exhaustive()
    }
}

fn unavailable(message: &str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, message)
}

impl Batcher {
    /// A batcher writing to `db`; its writer starts with `run_writer`.
    #[must_use]
    pub fn new(db: Db, config: WriterConfig) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        Self(Arc::new(Shared {
            db,
            config,
            sender,
            receiver: Mutex::new(Some(receiver)),
            alive: AtomicBool::new(false),
        }))
    }

    /// The database the writer writes to.
    #[must_use]
    pub fn db(&self) -> &Db {
        &self.0.db
    }

    /// Whether the writer is running: `/readyz` fails when group commit is on and it is not, and
    /// requests then run in transactions of their own.
    pub fn running(&self) -> bool {
        self.0.alive.load(Ordering::Acquire)
    }

    /// Whether requests queue for the writer (`group_commit`).
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.0.config.enabled
    }

    /// Queues a request and waits for its batch to commit.
    pub(crate) async fn submit(&self, job: Box<dyn BatchJob>) -> ApiResult<Done> {
        let (reply, answer) = oneshot::channel();
        self.0
            .sender
            .send(Pending { job, reply, attempts: 0 })
            .await
            .map_err(|_| unavailable("the store is shutting down; retry"))?;
        answer.await.map_err(|_| unavailable("the store is shutting down; retry"))?
    }

    /// The writer's end of the queue, once; the writer counts as running from here on.
    pub(crate) fn take_receiver(&self) -> Option<mpsc::Receiver<Pending>> {
        let receiver = self.0.receiver.lock().ok()?.take();
        if receiver.is_some() {
            self.0.alive.store(true, Ordering::Release);
        }
        receiver
    }

    /// Runs `job` in the writer's next batch when group commit is on and the writer runs;
    /// otherwise alone, in its own transaction (rolled back when it only replayed an answer).
    ///
    /// # Errors
    /// The job's own refusal, or a database failure (then nothing was committed).
    pub(crate) async fn run(&self, job: Box<dyn BatchJob>) -> ApiResult<Done> {
        if self.enabled() && self.running() {
            return self.submit(job).await;
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut tx = self.db().begin_write().await?;
            // A refusal returns early: the transaction rolls back on drop.
            let done = match run_caught(job.as_ref(), &mut tx).await {
                Err(error) if retryable(&error) && attempts < ATTEMPTS_MAX => continue,
                Err(error) if retryable(&error) => {
                    return Err(unavailable("the database was busy; retry with the same key"));
                }
                other => other?,
            };
            if done.replayed {
                tx.rollback().await?;
            } else {
                tx.commit().await?;
            }
            return Ok(done);
        }
    }
}

/// Runs a job, turning a panic into an internal error of this request alone: nothing a request
/// does can stop the writer.
async fn run_caught(job: &dyn BatchJob, conn: &mut AnyConnection) -> ApiResult<Done> {
    caught(job.run(conn)).await
}

/// Awaits `work`, turning a panic inside it into an internal error.
async fn caught<T>(work: impl std::future::Future<Output = ApiResult<T>>) -> ApiResult<T> {
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            metrics::counter!("coinslot_request_panics_total").increment(1);
            Err(ApiError::Internal(anyhow::anyhow!("the request panicked: {message}")))
        }
    }
}

/// Clears the batcher's `alive` flag when the writer stops, by return or by unwinding.
struct AliveGuard<'a>(&'a AtomicBool);

impl Drop for AliveGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The writers: `config.writers` loops sharing the queue, each batching what is queued and
/// committing it on a connection of its own, until the queue closes. With two, one batch's
/// statements and commit overlap the other's (on PostgreSQL, where a batch mostly waits on the
/// network and the commit's flush); their locks are taken in the same global order as two
/// instances' are, so they are as safe as two instances.
pub(crate) async fn run_writer(batcher: Batcher, queue: mpsc::Receiver<Pending>) {
    let _alive = AliveGuard(&batcher.0.alive);
    let queue = tokio::sync::Mutex::new(queue);
    let writers = batcher.0.config.writers.max(1);
    futures_util::future::join_all((0..writers).map(|_| async {
        match claim_system_shard(batcher.db()).await {
            Ok(shard) => crate::ledger::with_system_shard(shard, writer_loop(&batcher, &queue)).await,
            Err(error) => {
                tracing::warn!(%error, "the writer could not claim a system account shard; it moves the shared rows");
                writer_loop(&batcher, &queue).await;
            }
        }
    }))
    .await;
}

/// How many system account rows each system account is spread over, one per writer (writers
/// started after the first [`SYSTEM_SHARDS`] share them round-robin).
const SYSTEM_SHARDS: i64 = 16;

/// The next writer's system account shard, from 1 to [`SYSTEM_SHARDS`]: round-robin over the
/// writers that start on the database, so instances started one after another get shards of
/// their own.
async fn claim_system_shard(db: &Db) -> Result<u32, sqlx::Error> {
    let claimed: String = sqlx::query_scalar(
        "insert into meta (key, value) values ('system_shard_next', '1') on conflict (key) \
         do update set value = cast(cast(meta.value as bigint) + 1 as text) returning value",
    )
    .fetch_one(db.pool())
    .await?;
    let claimed: i64 = claimed.parse().map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
    Ok(u32::try_from(claimed.rem_euclid(SYSTEM_SHARDS) + 1).unwrap_or(1))
}

/// One writer: takes the next batch off the shared queue and commits it.
async fn writer_loop(batcher: &Batcher, queue: &tokio::sync::Mutex<mpsc::Receiver<Pending>>) {
    let size_max = batcher.0.config.size_max.max(1);
    let wait = batcher.0.config.wait;
    // Labelled by instance: the metrics recorder is process-wide, and one process may run
    // several stores (the tests do).
    let batch_sizes = metrics::histogram!("coinslot_group_commit_batch_size", "instance" => batcher.0.config.instance.clone());
    // The writer keeps one connection, so its page cache stays warm from batch to batch (a
    // pooled connection another statement used in between has had its cache invalidated); a
    // batch that fails at the database gives it back and the next one takes a fresh one.
    let mut connection: Option<PoolConnection<sqlx::Any>> = None;
    loop {
        let batch = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else { return };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + wait;
            while batch.len() < size_max {
                match queue.try_recv() {
                    Ok(pending) => batch.push(pending),
                    Err(_) if wait.is_zero() => break,
                    Err(_) => match tokio::time::timeout_at(deadline, queue.recv()).await {
                        Ok(Some(pending)) => batch.push(pending),
                        _ => break,
                    },
                }
            }
            batch
        };
        batch_sizes.record(u32::try_from(batch.len()).unwrap_or(u32::MAX));
        // Deadlock victims run again in a batch of their own, after this one committed.
        let mut retry = commit_batch(batcher, &mut connection, batch).await;
        while !retry.is_empty() {
            retry = commit_batch(batcher, &mut connection, retry).await;
        }
    }
}

/// Runs savepoint statements (`savepoint`, `release savepoint`, ...) on the request savepoint in
/// one round trip.
async fn savepoint(conn: &mut AnyConnection, statements: &[&str]) -> Result<(), sqlx::Error> {
    let sql: String = statements.iter().map(|statement| format!("{statement} {SAVEPOINT};")).collect();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await.map(|_| ())
}

/// Closes a request's savepoint: kept when it succeeded, rolled back when it was refused.
fn closing(outcome: &ApiResult<Done>) -> &'static [&'static str] {
    match outcome {
        Ok(_) => &["release savepoint"],
        // A refusal leaves no trace: its savepoint is rolled back; the others keep theirs.
        Err(_) => &["rollback to savepoint", "release savepoint"],
    }
}

/// Runs and commits one batch, answering each request; returns the deadlock victims to run again.
///
/// The jobs the set path takes run first, together ([`batch::run`]); the others, and those it
/// defers, then run one at a time in savepoints of the same transaction. When the set phase
/// fails (a database error, a guard that does not verify), the transaction is rolled back and
/// the whole batch runs on the savepoint path, with fresh reads.
async fn commit_batch(
    batcher: &Batcher,
    connection: &mut Option<PoolConnection<sqlx::Any>>,
    batch: Vec<Pending>,
) -> Vec<Pending> {
    let db = batcher.db();
    if connection.is_none() {
        match db.pool().acquire().await {
            Ok(acquired) => *connection = Some(acquired),
            Err(error) => {
                tracing::error!(%error, "the writer could not get a connection");
                fail_all(batch, "the database is unavailable; retry");
                return Vec::new();
            }
        }
    }
    let Some(held) = connection.as_mut() else { return Vec::new() };
    let started = std::time::Instant::now();
    let (again, healthy) = run_batch(batcher, held, batch).await;
    metrics::histogram!("coinslot_writer_phase_seconds", "phase" => "batch")
        .record(started.elapsed().as_secs_f64());
    if !healthy {
        *connection = None;
    }
    again
}

/// Runs and commits one batch on the writer's connection; returns the deadlock victims to run
/// again, and whether the connection is still to be trusted (nothing failed at the database).
async fn run_batch(batcher: &Batcher, conn: &mut AnyConnection, batch: Vec<Pending>) -> (Vec<Pending>, bool) {
    let db = batcher.db();
    let mut tx = match conn.begin_with(db.begin_statement()).await {
        Ok(tx) => tx,
        Err(error) => {
            tracing::error!(%error, "a batch could not begin");
            fail_all(batch, "the database is unavailable; retry");
            return (Vec::new(), false);
        }
    };

    let mut finished: Vec<(oneshot::Sender<ApiResult<Done>>, ApiResult<Done>)> =
        Vec::with_capacity(batch.len());
    let (set, mut slow): (Vec<Pending>, Vec<Pending>) = batch
        .into_iter()
        .partition(|pending| pending.job.set_job().is_some() || pending.job.login_job().is_some());
    if !set.is_empty() {
        let jobs: Vec<&dyn SetJob> = set.iter().filter_map(|pending| pending.job.set_job()).collect();
        let logins: Vec<&dyn LoginSetJob> =
            set.iter().filter_map(|pending| pending.job.login_job()).collect();
        // Logins first: no request of the batch can be by a player its logins create.
        let set_phase = async {
            let mut logins = batch::run_logins(&mut tx, db.backend(), &logins).await?.into_iter();
            let mut jobs = batch::run(&mut tx, db.backend(), &jobs).await?.into_iter();
            set.iter()
                .map(|pending| {
                    let next = if pending.job.set_job().is_some() { jobs.next() } else { logins.next() };
                    next.ok_or_else(|| ApiError::from(anyhow::anyhow!("a set job without an outcome")))
                })
                .collect::<ApiResult<Vec<SetOutcome>>>()
        };
        match caught(set_phase).await {
            Ok(outcomes) => {
                drop(jobs);
                drop(logins);
                let decided =
                    outcomes.iter().filter(|outcome| matches!(outcome, SetOutcome::Answered(_))).count();
                metrics::counter!("coinslot_set_path_requests_total", "instance" => batcher.0.config.instance.clone())
                    .increment(u64::try_from(decided).unwrap_or(u64::MAX));
                for (pending, outcome) in set.into_iter().zip(outcomes) {
                    match outcome {
                        SetOutcome::Answered(answer) => finished.push((pending.reply, answer)),
                        SetOutcome::Defer => slow.push(pending),
                    }
                }
            }
            Err(error) => {
                drop(jobs);
                drop(logins);
                tracing::warn!(error = ?error, "a batch's set phase failed; it runs on the per-request path");
                metrics::counter!("coinslot_set_path_fallbacks_total", "instance" => batcher.0.config.instance.clone())
                    .increment(1);
                if tx.rollback().await.is_err() {
                    fail_all(set.into_iter().chain(slow), "the database is unavailable; retry");
                    return (Vec::new(), false);
                }
                tx = match conn.begin_with(db.begin_statement()).await {
                    Ok(tx) => tx,
                    Err(error) => {
                        tracing::error!(%error, "a batch could not begin");
                        fail_all(set.into_iter().chain(slow), "the database is unavailable; retry");
                        return (Vec::new(), false);
                    }
                };
                slow = set.into_iter().chain(slow).collect();
            }
        }
    }
    let mut broken = false;
    // The previous request's closing statements travel with the next one's opening.
    let mut close: &[&str] = &[];
    let mut again = Vec::new();
    for Pending { job, reply, attempts } in slow {
        if broken {
            finished.push((reply, Err(unavailable("the batch failed; retry"))));
            continue;
        }
        let opening: Vec<&str> = close.iter().copied().chain(["savepoint"]).collect();
        if let Err(error) = savepoint(&mut tx, &opening).await {
            tracing::error!(%error, "a batch could not open a savepoint");
            broken = true;
            finished.push((reply, Err(unavailable("the batch failed; retry"))));
            continue;
        }
        let outcome = run_caught(job.as_ref(), &mut tx).await;
        close = closing(&outcome);
        match outcome {
            Err(error) if retryable(&error) && attempts + 1 < ATTEMPTS_MAX => {
                tracing::info!(%error, attempts, "a request was a deadlock victim; it runs again in the next batch");
                again.push(Pending { job, reply, attempts: attempts + 1 });
            }
            Err(error) if retryable(&error) => {
                finished.push((reply, Err(unavailable("the database was busy; retry with the same key"))));
            }
            outcome => finished.push((reply, outcome)),
        }
    }
    if !broken
        && !close.is_empty()
        && let Err(error) = savepoint(&mut tx, close).await
    {
        tracing::error!(%error, "a batch could not close a savepoint");
        broken = true;
    }
    let commit_started = std::time::Instant::now();
    let committed = if broken {
        let _ = tx.rollback().await;
        false
    } else {
        match tx.commit().await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, "a batch could not commit");
                false
            }
        }
    };
    metrics::histogram!("coinslot_writer_phase_seconds", "phase" => "commit")
        .record(commit_started.elapsed().as_secs_f64());
    for (reply, outcome) in finished {
        // Only a committed batch answers: a refusal computed against neighbours that were then
        // rolled back is no final answer either.
        let answer = if committed {
            outcome
        } else {
            Err(unavailable("the batch could not be committed; retry with the same key"))
        };
        let _ = reply.send(answer);
    }
    (again, committed)
}

/// Answers every request of a batch that could not run `unavailable`.
fn fail_all(batch: impl IntoIterator<Item = Pending>, message: &str) {
    for pending in batch {
        let _ = pending.reply.send(Err(unavailable(message)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_request_becomes_its_own_internal_error() {
        let panicked = caught(async {
            let amount = i64::MAX;
            let doubled = amount.checked_mul(2).unwrap_or_else(|| panic!("overflow in a request"));
            Ok::<i64, ApiError>(doubled)
        })
        .await
        .unwrap_err();
        assert_eq!(panicked.code(), ErrorCode::Internal);
        assert!(format!("{:#}", anyhow::Error::from(panicked)).contains("overflow in a request"));
        assert_eq!(caught(async { Ok::<_, ApiError>(7) }).await.unwrap(), 7, "a calm request is untouched");
    }

    #[tokio::test]
    async fn the_writer_counts_as_running_only_between_taking_the_queue_and_stopping() {
        let dir = tempfile::tempdir().expect("a directory");
        let url = format!("sqlite://{}", dir.path().join("writer.db").display());
        let db = Db::connect(&url, 1, Duration::from_secs(5)).await.expect("a database");
        let config = WriterConfig {
            enabled: true,
            size_max: 1,
            wait: Duration::ZERO,
            writers: 1,
            instance: "test".to_owned(),
        };
        let batcher = Batcher::new(db, config);
        assert!(!batcher.running());
        let queue = batcher.take_receiver().expect("the queue, once");
        assert!(batcher.running());
        assert!(batcher.take_receiver().is_none());
        {
            let _alive = AliveGuard(&batcher.0.alive);
            drop(queue);
        }
        assert!(!batcher.running(), "a stopped writer, by return or by panic, is not running");
    }
}
