//! The database: one `AnyPool` over SQLite or PostgreSQL, chosen by the URL scheme, with each
//! backend's durability settings and migrations.
//!
//! Both backends take the same SQL (`$1` placeholders, `bigint` and `text` columns), so every
//! query is written once. Writes go through [`Db::begin_write`], which on SQLite takes the
//! write lock up front (`BEGIN IMMEDIATE`) so two writers never deadlock upgrading a read lock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Transaction};

/// An open write transaction on either backend.
pub type Tx = Transaction<'static, sqlx::Any>;

/// Which database engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// Chooses the backend from a database URL's scheme.
    ///
    /// # Errors
    /// Fails for any scheme but `sqlite:`, `postgres:` and `postgresql:`.
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Self::Postgres)
        } else {
            anyhow::bail!("database URL must start with sqlite: or postgres:, not `{url}`")
        }
    }
}

/// WAL pages after which a SQLite commit checkpoints by itself (16 MiB with 4 KiB pages): a
/// safety net behind the server's own checkpointer.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 4_096;
/// How often the server checkpoints SQLite's write-ahead log.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The connection pool and what it connects to.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

impl Db {
    /// Connects to the database named by `url`, creating a SQLite file if it does not exist.
    ///
    /// # Errors
    /// Fails when the URL is not understood or the database cannot be reached.
    pub async fn connect(url: &str, connections_max: u32, timeout: Duration) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let url = match backend {
            // Create the file on first start; an explicit mode in the URL wins.
            Backend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_owned(),
        };
        let options: AnyConnectOptions = url.parse()?;
        let busy_timeout_ms = timeout.as_millis();
        let pool = AnyPoolOptions::new()
            .max_connections(connections_max)
            .acquire_timeout(timeout)
            // No `ping` before every acquire (a round trip, or on SQLite a thread hand-off, on
            // every read and every batch): a connection that died is found by the statement
            // that uses it, which fails that request or batch (retried with the same key), and
            // the pool drops it.
            .test_before_acquire(false)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    match backend {
                        // Durable before acknowledged: WAL with a full fsync on every commit.
                        // A commit checkpoints only when the WAL has grown far: the server's
                        // checkpointer (`Db::checkpoint`) keeps that work off the commit path.
                        Backend::Sqlite => {
                            let pragmas = format!(
                                "pragma journal_mode = wal; pragma synchronous = full; \
                                 pragma foreign_keys = on; pragma busy_timeout = {busy_timeout_ms}; \
                                 pragma wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES};"
                            );
                            conn.execute(sqlx::AssertSqlSafe(pragmas)).await?;
                        }
                        // Durable before acknowledged: set, then asserted, so a pooler or a
                        // server setting that silently drops it is refused rather than trusted.
                        Backend::Postgres => {
                            conn.execute("set synchronous_commit = on").await?;
                            let (commit, fsync): (String, String) =
                                sqlx::query_as("select current_setting('synchronous_commit'), current_setting('fsync')")
                                    .fetch_one(&mut *conn)
                                    .await?;
                            if commit != "on" || fsync != "on" {
                                return Err(sqlx::Error::Configuration(
                                    format!(
                                        "PostgreSQL is not durable (synchronous_commit = {commit}, fsync = {fsync}); \
                                         Coinslot acknowledges only durable commits"
                                    )
                                    .into(),
                                ));
                            }
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self { pool, backend })
    }

    /// Applies the backend's migrations that have not run yet.
    ///
    /// # Errors
    /// Fails when a migration fails or the recorded migrations differ from the embedded ones.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        self.migrator().run(&self.pool).await?;
        Ok(())
    }

    /// Applies the backend's migrations up to `version` only: a database at an earlier layout,
    /// for the tests that fill one and move it to today's.
    ///
    /// # Errors
    /// Fails when a migration fails or the recorded migrations differ from the embedded ones.
    pub async fn migrate_to(&self, version: i64) -> anyhow::Result<()> {
        self.migrator().run_to(version, &self.pool).await?;
        Ok(())
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        }
    }

    /// Whether every embedded migration has been applied (for `/readyz`).
    ///
    /// # Errors
    /// Fails when the database cannot be queried.
    pub async fn migrations_applied(&self) -> Result<bool, sqlx::Error> {
        let latest = self.migrator().iter().map(|migration| migration.version).max().unwrap_or(0);
        let applied: Option<i64> =
            sqlx::query_scalar("select max(version) from _sqlx_migrations where success = true")
                .fetch_one(&self.pool)
                .await?;
        Ok(applied.unwrap_or(0) >= latest)
    }

    /// The statement that begins a write transaction: `BEGIN IMMEDIATE` on SQLite (the write
    /// lock up front), `BEGIN` on PostgreSQL.
    #[must_use]
    pub fn begin_statement(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "begin immediate",
            Backend::Postgres => "begin",
        }
    }

    /// Begins a write transaction: `BEGIN IMMEDIATE` on SQLite, `BEGIN` on PostgreSQL.
    ///
    /// # Errors
    /// Fails when no connection can be had or the lock is not granted within the timeout.
    pub async fn begin_write(&self) -> Result<Tx, sqlx::Error> {
        self.pool.begin_with(self.begin_statement()).await
    }

    /// Copies the SQLite write-ahead log back into the database file without blocking readers
    /// or writers (a passive checkpoint); nothing on PostgreSQL. The server runs it every
    /// [`CHECKPOINT_INTERVAL`], so commits seldom pay for a checkpoint themselves.
    ///
    /// # Errors
    /// Fails when the database does.
    pub async fn checkpoint(&self) -> Result<(), sqlx::Error> {
        if self.backend == Backend::Sqlite {
            sqlx::query("pragma wal_checkpoint(passive)").fetch_all(&self.pool).await?;
        }
        Ok(())
    }

    /// The pool, for reads.
    #[must_use]
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which engine this is.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// How far this process's clock is shifted from the wall clock, in microseconds. Always 0 except
/// in `store-server demo-data`, which runs a whole store (handlers, workers, the sandbox) in its
/// own process in the past, so that weeks of activity happen through the real write paths.
static CLOCK_SHIFT_MICROS: AtomicI64 = AtomicI64::new(0);

/// Now, as integer microseconds since the Unix epoch: how times are stored.
#[must_use]
pub fn now_micros() -> i64 {
    to_micros(time::OffsetDateTime::now_utc()).saturating_add(CLOCK_SHIFT_MICROS.load(Ordering::Relaxed))
}

/// Now, as a date and time (the same clock as [`now_micros`]).
#[must_use]
pub fn now() -> time::OffsetDateTime {
    from_micros(now_micros())
}

/// Moves this process's clock so that "now" is `at_micros`. Only `demo-data` calls it, in a
/// process that serves no one else.
pub fn set_clock_to(at_micros: i64) {
    let wall = to_micros(time::OffsetDateTime::now_utc());
    CLOCK_SHIFT_MICROS.store(at_micros.saturating_sub(wall), Ordering::Relaxed);
}

/// Puts this process's clock back on the wall clock.
pub fn reset_clock() {
    CLOCK_SHIFT_MICROS.store(0, Ordering::Relaxed);
}

/// A time as integer microseconds since the Unix epoch.
#[must_use]
pub fn to_micros(at: time::OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

/// A stored time back as a UTC date-time.
#[must_use]
pub fn from_micros(micros: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}
