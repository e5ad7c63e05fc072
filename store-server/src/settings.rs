//! Settings: plain data that `main` fills from flags and `COINSLOT_*` variables, and that tests
//! build directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the repository's `assets/` folder is, so the server finds its default catalog when
/// started from any directory.
pub const ASSETS_DIR_DEFAULT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets");
/// The SQLite file used when no database URL is given, relative to the working directory.
pub const DATABASE_URL_DEFAULT: &str = "sqlite://coinslot.db";
/// Where the server listens when no address is given.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:8080";

/// The least time idempotency keys are kept (DESIGN.md section 11).
pub const IDEMPOTENCY_RETENTION_MIN: Duration = Duration::from_secs(24 * 60 * 60);

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `sqlite://path` or `postgres://…`.
    pub database_url: String,
    /// Address to bind; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The URL players and operators reach the server at; defaults to `http://{listen}`.
    pub public_url: Option<String>,
    /// The folder holding `catalog/catalog.json` and the demo's art.
    pub assets_dir: PathBuf,
    /// Lifetime of a player session token.
    pub session_ttl: Duration,
    /// How long shutdown waits for requests in flight before dropping them.
    pub shutdown_timeout: Duration,
    /// Most database connections the server holds.
    pub db_connections_max: u32,
    /// How long a request waits for a database connection, or for SQLite's write lock.
    pub db_timeout: Duration,
    /// Largest request body read, in bytes.
    pub request_body_bytes_max: usize,
    /// Longest a request may take before it is answered 503.
    pub request_timeout: Duration,
    /// How long idempotency keys are kept (at least 24 hours).
    pub idempotency_retention: Duration,
    /// How often expired idempotency keys are deleted.
    pub idempotency_cleanup_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: DATABASE_URL_DEFAULT.to_owned(),
            listen: LISTEN_DEFAULT.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080))),
            public_url: None,
            assets_dir: PathBuf::from(ASSETS_DIR_DEFAULT),
            session_ttl: Duration::from_secs(24 * 60 * 60),
            shutdown_timeout: Duration::from_secs(10),
            db_connections_max: 16,
            db_timeout: Duration::from_secs(5),
            request_body_bytes_max: store_api::limits::REQUEST_BODY_BYTES_MAX,
            request_timeout: Duration::from_secs(30),
            idempotency_retention: IDEMPOTENCY_RETENTION_MIN * 2,
            idempotency_cleanup_interval: Duration::from_secs(10 * 60),
        }
    }
}
