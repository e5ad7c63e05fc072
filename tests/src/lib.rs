//! The end-to-end test harness: a real store server on a loopback port over a real database (a
//! temporary SQLite file, or a fresh database on a real PostgreSQL server), a real HTTP client,
//! and direct database reads to check that a refused request changed nothing.
//!
//! PostgreSQL cases need `COINSLOT_TEST_POSTGRES_URL`, a URL of a server where the test user may
//! create databases (the README's test command starts one). Under `CI=true` a PostgreSQL case
//! without it fails; elsewhere it says why it did not run.

pub mod apple;
pub mod game;
pub mod google;
pub mod proxy;
pub mod steam;
pub mod stripe;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use store_server::{Application, Settings};

/// Which database a case runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A temporary SQLite file.
    Sqlite,
    /// A fresh database on the PostgreSQL server at `COINSLOT_TEST_POSTGRES_URL`.
    Postgres,
}

/// Offers of the seed catalog (`assets/catalog/catalog.json`).
pub mod seed {
    /// `skin.red` (durable): 500 gold or 50 gems.
    pub const SKIN_RED: &str = "019a6b1e-0001-7000-8000-000000000001";
    /// `skin.blue` (durable): 80 gems.
    pub const SKIN_BLUE: &str = "019a6b1e-0002-7000-8000-000000000002";
    /// `magnet` (consumable): 100 gold.
    pub const MAGNET: &str = "019a6b1e-0003-7000-8000-000000000003";
    /// `shield` (consumable): 150 gold.
    pub const SHIELD: &str = "019a6b1e-0004-7000-8000-000000000004";
    /// `extra_life` (consumable): USD 0.05 on a tab, or 300 gold.
    pub const EXTRA_LIFE: &str = "019a6b1e-0005-7000-8000-000000000005";
    /// `gems.small` (currency pack): USD 0.99.
    pub const GEMS_SMALL: &str = "019a6b1e-0006-7000-8000-000000000006";
    /// `gems.large` (currency pack): USD 4.99.
    pub const GEMS_LARGE: &str = "019a6b1e-0007-7000-8000-000000000007";
    /// `turbo` (consumable) in a price experiment: variant `a` 200 gold, `b` 250 gold.
    pub const TURBO: &str = "019a6b1e-0009-7000-8000-000000000009";
    /// `starter_bundle`: USD 1.99.
    pub const STARTER_BUNDLE: &str = "019a6b1e-0008-7000-8000-000000000008";
}

/// The environment variable naming the PostgreSQL server for tests.
pub const POSTGRES_URL_VAR: &str = "COINSLOT_TEST_POSTGRES_URL";

/// A database that lives as long as the test: a temporary folder, or a PostgreSQL database
/// dropped when this is dropped.
#[derive(Debug)]
pub struct TestDb {
    url: String,
    backend: Backend,
    _dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

impl TestDb {
    /// A fresh, empty database, or `None` when PostgreSQL is asked for outside CI with no server
    /// configured.
    ///
    /// # Panics
    /// When the database cannot be created, or PostgreSQL is not configured under `CI=true`.
    pub async fn new(backend: Backend) -> Option<Self> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("coinslot.db").display());
                Some(Self { url, backend, _dir: dir, postgres: None })
            }
            Backend::Postgres => {
                let admin_url = postgres_admin_url()?;
                let name = format!("coinslot_test_{}", uuid::Uuid::now_v7().simple());
                let mut admin = connect_postgres(&admin_url).await;
                sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
                    .execute(&mut admin)
                    .await
                    .expect("create the test database");
                let url = replace_database(&admin_url, &name);
                Some(Self { url, backend, _dir: dir, postgres: Some((admin_url, name)) })
            }
        }
    }

    /// The database URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Which backend this is.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else { return };
        // Drop runs inside the test's runtime, where blocking is not allowed; a thread with its
        // own runtime drops the database and is joined so nothing outlives the test.
        let dropper = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(async {
                let mut admin = connect_postgres(&admin_url).await;
                let sql = format!("drop database if exists {name} with (force)");
                if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await {
                    eprintln!("could not drop test database {name}: {error}");
                }
            });
        });
        let _ = dropper.join();
    }
}

fn postgres_admin_url() -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("{POSTGRES_URL_VAR} is not set under CI=true: the PostgreSQL cases must run in CI")
        }
        _ => {
            eprintln!("PostgreSQL case not run: set {POSTGRES_URL_VAR} (the README's test command does)");
            None
        }
    }
}

async fn connect_postgres(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection as _;
    sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|error| panic!("cannot reach PostgreSQL at {url}: {error}"))
}

fn replace_database(url: &str, database: &str) -> String {
    let (without_query, query) = url.split_once('?').map_or((url, None), |(base, query)| (base, Some(query)));
    let base = match without_query.rfind('/') {
        Some(slash)
            if without_query[..slash].contains("://")
                && slash > without_query.find("://").unwrap_or(0) + 2 =>
        {
            &without_query[..slash]
        }
        _ => without_query,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// Settings for a test server on `db`: port 0 on loopback, the repository's assets.
#[must_use]
pub fn test_settings(db: &TestDb) -> Settings {
    Settings {
        database_url: db.url().to_owned(),
        listen: ([127, 0, 0, 1], 0).into(),
        shutdown_timeout: Duration::from_secs(5),
        worker_tick: Duration::from_millis(50),
        sandbox_dispute_delay: Duration::from_millis(300),
        // Many tests race one player on purpose; the rate-limit tests turn limits on.
        player_rate_limit: store_server::players::rate_limit::Limit::OFF,
        key_rate_limit: store_server::players::rate_limit::Limit::OFF,
        // Tests run the sandbox beside stand-ins of real providers: a staging server.
        test_mode: true,
        ..Settings::default()
    }
}

/// A running store server and a client for it.
#[derive(Debug)]
pub struct TestServer {
    base_url: String,
    client: reqwest::Client,
    operator_key: String,
    db: Arc<TestDb>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
    reader: sqlx::AnyPool,
}

impl TestServer {
    /// A server on a fresh database of `backend`, or `None` for PostgreSQL outside CI with no
    /// server configured.
    pub async fn start(backend: Backend) -> Option<Self> {
        Self::start_with(backend, |_| {}).await
    }

    /// Like [`TestServer::start`], with settings adjusted by `adjust`.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> Option<Self> {
        let db = Arc::new(TestDb::new(backend).await?);
        Some(Self::start_on(db, None, adjust).await)
    }

    /// A server on an existing database. `operator_key` is the key from an earlier start, since
    /// only the first start creates one.
    ///
    /// # Panics
    /// When the server cannot start.
    pub async fn start_on(
        db: Arc<TestDb>,
        operator_key: Option<String>,
        adjust: impl FnOnce(&mut Settings),
    ) -> Self {
        init_logs();
        let mut settings = test_settings(&db);
        adjust(&mut settings);
        let application = Application::build(settings).await.expect("the server starts");
        let operator_key = application
            .first_operator_key()
            .map(str::to_owned)
            .or(operator_key)
            .expect("a first start prints an operator key; a restart is given the earlier one");
        let base_url = format!("http://127.0.0.1:{}", application.port());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            application
                .run_until_stopped(async {
                    let _ = stopped.await;
                })
                .await
                .map_err(|error| format!("{error:#}"))
        });
        let reader = reader_pool(db.url()).await;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("a client");
        Self { base_url, client, operator_key, db, stop: Some(stop), task: Some(task), reader }
    }

    /// Stops the server gracefully and hands back its database and operator key for a restart.
    ///
    /// # Panics
    /// When the server failed while running.
    pub async fn stop(mut self) -> (Arc<TestDb>, String) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("the server task joins").expect("the server ran without failing");
        }
        self.reader.close().await;
        (Arc::clone(&self.db), self.operator_key.clone())
    }

    /// The server's base URL.
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The operator key with every scope.
    #[must_use]
    pub fn operator_key(&self) -> &str {
        &self.operator_key
    }

    /// The database under the server.
    #[must_use]
    pub fn db(&self) -> &TestDb {
        &self.db
    }

    /// A request to `path` with no credentials.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base_url))
    }

    /// A request with the all-scopes operator key.
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(&self.operator_key)
    }

    /// A request as the player holding `token`.
    pub fn player(&self, token: &str, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(token)
    }

    /// Logs in with `device_id` and returns the session token.
    ///
    /// # Panics
    /// When the login fails.
    pub async fn login(&self, device_id: &str) -> String {
        let body = serde_json::json!({ "device_id": device_id });
        let (status, session) = send(self.request(Method::POST, "/v1/auth/device").json(&body)).await;
        assert_eq!(status, StatusCode::OK, "login failed: {session}");
        session["session_token"].as_str().expect("a session token").to_owned()
    }

    /// Logs in with `device_id` and returns the player id and session token.
    ///
    /// # Panics
    /// When the login fails.
    pub async fn login_player(&self, device_id: &str) -> (String, String) {
        let body = serde_json::json!({ "device_id": device_id });
        let (status, session) = send(self.request(Method::POST, "/v1/auth/device").json(&body)).await;
        assert_eq!(status, StatusCode::OK, "login failed: {session}");
        (
            session["player_id"].as_str().expect("a player id").to_owned(),
            session["session_token"].as_str().expect("a session token").to_owned(),
        )
    }

    /// Grants `amount` of `currency` to a player as the operator.
    ///
    /// # Panics
    /// When the grant fails.
    pub async fn grant(&self, player_id: &str, currency: &str, amount: i64) -> Value {
        let body = serde_json::json!({ "currency": currency, "amount": amount, "reason": "test setup" });
        let (status, result) = send(
            self.admin(Method::POST, &format!("/admin/v1/players/{player_id}/grants"))
                .header("idempotency-key", uuid::Uuid::now_v7().to_string())
                .json(&body),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "grant failed: {result}");
        result
    }

    /// A purchase request as the player, with the given idempotency key.
    pub fn purchase(&self, token: &str, key: &str, body: &Value) -> RequestBuilder {
        self.player(token, Method::POST, "/v1/purchases").header("idempotency-key", key).json(body)
    }

    /// A player's balance of one currency, read over HTTP.
    ///
    /// # Panics
    /// When the wallet cannot be read or has no such currency.
    pub async fn balance(&self, token: &str, currency: &str) -> i64 {
        let (status, wallet) = send(self.player(token, Method::GET, "/v1/wallet")).await;
        assert_eq!(status, StatusCode::OK, "{wallet}");
        wallet["balances"]
            .as_array()
            .expect("balances")
            .iter()
            .find(|balance| balance["currency"] == currency)
            .and_then(|balance| balance["balance"].as_i64())
            .unwrap_or_else(|| panic!("no {currency} in {wallet}"))
    }

    /// Starts a real-money order as the player and returns it.
    ///
    /// # Panics
    /// When the order is refused.
    pub async fn order(&self, token: &str, offer_id: &str) -> Value {
        let (status, order) = send(
            self.player(token, Method::POST, "/v1/orders")
                .header("idempotency-key", uuid::Uuid::now_v7().to_string())
                .json(&serde_json::json!({ "offer_id": offer_id })),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "order refused: {order}");
        order
    }

    /// Pays a checkout with a test card through the sandbox's JSON endpoint.
    pub async fn pay(&self, checkout_url: &str, card: &str) -> (StatusCode, Value) {
        send(
            self.client.post(format!("{checkout_url}/pay")).json(&serde_json::json!({ "card_number": card })),
        )
        .await
    }

    /// Polls the player's order until `done` holds (at most 20 seconds) and returns it.
    ///
    /// # Panics
    /// When it does not happen in time.
    pub async fn wait_for_order(&self, token: &str, order_id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (_, order) = send(self.player(token, Method::GET, &format!("/v1/orders/{order_id}"))).await;
            if done(&order) {
                return order;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the order never reached the expected state: {order}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The sandbox's webhook signing secret, read from the database (as only a test may).
    pub async fn sandbox_webhook_secret(&self) -> Vec<u8> {
        let secret: String =
            sqlx::query_scalar("select value from meta where key = 'sandbox_webhook_secret'")
                .fetch_one(&self.reader)
                .await
                .expect("the sandbox secret");
        secret.into_bytes()
    }

    /// The sandbox's API key, read from the database (as only a test may).
    pub async fn sandbox_api_key(&self) -> String {
        sqlx::query_scalar("select value from meta where key = 'sandbox_api_key'")
            .fetch_one(&self.reader)
            .await
            .expect("the sandbox key")
    }

    /// Names live offers' products on the platforms' stores (`platform_products`, e.g.
    /// `{"google_play": "gems_small"}`) and publishes.
    ///
    /// # Panics
    /// When the catalog refuses them.
    pub async fn sell_on_platforms(&self, offers: &[(&str, Value)]) {
        for (offer_id, products) in offers {
            let path = format!("/admin/v1/catalog/draft/offers/{offer_id}");
            let (status, mut offer) = send(self.admin(Method::GET, &path)).await;
            assert_eq!(status, StatusCode::OK, "{offer}");
            offer["platform_products"] = products.clone();
            let (status, body) = send(self.admin(Method::PUT, &path).json(&offer)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let (status, body) = send(self.admin(Method::POST, "/admin/v1/catalog/publish")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// Adds an item and an offer for it to the draft and publishes; returns the offer's id.
    ///
    /// # Panics
    /// When the catalog refuses them.
    pub async fn publish_offer(&self, item: Value, offer: Value) -> String {
        let (status, body) =
            send(self.admin(Method::POST, "/admin/v1/catalog/draft/items").json(&item)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, created) =
            send(self.admin(Method::POST, "/admin/v1/catalog/draft/offers").json(&offer)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let (status, body) = send(self.admin(Method::POST, "/admin/v1/catalog/publish")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        created["id"].as_str().expect("id").to_owned()
    }

    /// Has the sandbox record a payment on a checkout session whatever its state, with the
    /// session's amount and reference unless `overrides` (`amount`, `reference`) says otherwise,
    /// as a provider reporting a stray payment would; returns the payment id.
    ///
    /// # Panics
    /// When the sandbox refuses.
    pub async fn sandbox_stray_payment(&self, checkout_url: &str, overrides: Value) -> String {
        let session_id = checkout_url.rsplit('/').next().expect("a session id");
        let mut body = serde_json::json!({ "session_id": session_id });
        if let (Some(body), Some(overrides)) = (body.as_object_mut(), overrides.as_object()) {
            body.extend(overrides.clone());
        }
        let key = self.sandbox_api_key().await;
        let (status, paid) =
            send(self.request(Method::POST, "/sandbox/v1/test/payments").bearer_auth(key).json(&body)).await;
        assert_eq!(status, StatusCode::OK, "{paid}");
        paid["payment_id"].as_str().expect("a payment id").to_owned()
    }

    /// Waits (at most 20 seconds) until `sql`, a count, reaches at least `wanted`.
    ///
    /// # Panics
    /// When it does not in time.
    pub async fn wait_for_count(&self, sql: &'static str, wanted: i64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let count = self.count(sql).await;
            if count >= wanted {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "`{sql}` stayed at {count}, not {wanted}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sets the sandbox's test controls.
    ///
    /// # Panics
    /// When the sandbox refuses them.
    pub async fn sandbox_controls(&self, controls: Value) {
        let key = self.sandbox_api_key().await;
        let (status, body) =
            send(self.request(Method::POST, "/sandbox/v1/controls").bearer_auth(key).json(&controls)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// Runs `store-server audit`'s checks on the database and asserts every invariant holds.
    ///
    /// # Panics
    /// When an invariant is broken.
    pub async fn assert_audit_clean(&self) {
        let db =
            store_server::db::Db::connect(self.db.url(), 2, Duration::from_secs(30)).await.expect("connect");
        let report = store_server::ledger::audit::audit(&db).await.expect("audit runs");
        db.close().await;
        assert!(report.is_clean(), "{report}");
    }

    /// The value of this server's instance-labelled metric whose line starts with `name` (0 when
    /// it has none yet), rounded: the exporter prints counts as floats.
    ///
    /// # Panics
    /// When `/metrics` cannot be read.
    pub async fn metric(&self, name: &str) -> u64 {
        let text =
            self.request(Method::GET, "/metrics").send().await.expect("metrics").text().await.expect("text");
        let instance = format!("instance=\"{}\"", self.base_url);
        text.lines()
            .find(|line| line.starts_with(name) && line.contains(&instance))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse::<f64>().ok())
            .map_or(0, |value| value.round() as u64)
    }

    /// Creates an operator key with the given scopes and returns it.
    ///
    /// # Panics
    /// When the key cannot be created.
    pub async fn key_with_scopes(&self, scopes: &[&str]) -> String {
        let body = serde_json::json!({ "name": "test key", "scopes": scopes });
        let (status, created) = send(self.admin(Method::POST, "/admin/v1/api-keys").json(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "key creation failed: {created}");
        created["key"].as_str().expect("a key").to_owned()
    }

    /// Runs a `select count(*) …` (or any single-integer query) directly on the database.
    ///
    /// # Panics
    /// When the query fails.
    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.reader).await.unwrap_or_else(|error| panic!("{sql}: {error}"))
    }

    /// Runs a write statement on the server's database, binding each JSON value as an integer
    /// or a text (`null` as a null text): for tests that must enter what no route makes.
    ///
    /// # Panics
    /// When the statement fails.
    pub async fn execute(&self, sql: &'static str, binds: &[Value]) {
        let mut query = sqlx::query(sql);
        for bind in binds {
            query = match bind.as_i64() {
                Some(number) => query.bind(number),
                None => query.bind(bind.as_str().map(str::to_owned)),
            };
        }
        query.execute(&self.reader).await.unwrap_or_else(|error| panic!("{sql}: {error}"));
    }

    /// Enters a ledger entry of `kind` for `player` made at `micros` (its id a UUIDv7 of that
    /// time, as the ledger makes them), with no postings, and returns its id: for tests of what
    /// reads a period's entries.
    ///
    /// # Panics
    /// When the insert fails.
    pub async fn backdated_entry(&self, player: &str, kind: &str, micros: i64) -> String {
        let millis = u64::try_from(micros / 1_000).expect("after the epoch");
        let id = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            millis / 1_000,
            u32::try_from(millis % 1_000).expect("millis") * 1_000_000,
        ))
        .to_string();
        self.execute(
            "insert into entry (id, kind, player_id, actor, reason, created_at) values ($1, $2, $3, $4, null, $5)",
            &[id.clone().into(), kind.into(), player.into(), format!("player:{player}").into(), micros.into()],
        )
        .await;
        id
    }

    /// A text the database answers `sql` with.
    ///
    /// # Panics
    /// When the query fails.
    pub async fn text(&self, sql: &'static str) -> String {
        sqlx::query_scalar(sql).fetch_one(&self.reader).await.unwrap_or_else(|error| panic!("{sql}: {error}"))
    }

    /// A fingerprint of every table the foundation writes: row counts and the draft's and
    /// versions' contents. Equal fingerprints before and after a refused request mean it changed
    /// nothing.
    pub async fn fingerprint(&self) -> Vec<String> {
        let mut parts = Vec::new();
        for table in [
            "api_key",
            "player",
            "session",
            "currency",
            "draft_item",
            "draft_item_grant",
            "draft_offer",
            "catalog_version",
            "audit_log",
        ] {
            let sql = format!("select count(*) from {table}");
            let count: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&self.reader).await.expect("count");
            parts.push(format!("{table}={count}"));
        }
        for sql in [
            "select coalesce(max(body), '') from draft_item",
            "select coalesce(max(body), '') from draft_offer",
            "select coalesce(max(code || name || kind || initial_grant || '/' || balance_max), '') from currency",
            "select coalesce(max(coalesce(revoked_at, 0)), 0) || '' from api_key",
            "select coalesce(sum(balance), 0) || '/' || coalesce(sum(abs(balance)), 0) from account",
            "select coalesce(sum(quantity), 0) || '' from inventory",
            "select coalesce(sum(sold), 0) || '' from item_sold",
            // Keys with a success stored: a refusal stored under its key is an answer, not an effect.
            "select count(*) || '' from idempotency where status_code between 200 and 299",
        ] {
            let text: String = sqlx::query_scalar(sql).fetch_one(&self.reader).await.expect("fingerprint");
            parts.push(text);
        }
        parts
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An order's condition for [`TestServer::wait_for_order`]: it has reached `status`.
pub fn status_is(status: &'static str) -> impl Fn(&Value) -> bool {
    move |order| order["status"] == status
}

/// Server warnings and errors go to the test's captured output (shown when a test fails).
fn init_logs() {
    static LOGS: OnceLock<()> = OnceLock::new();
    LOGS.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,store_server=info,tower_http=warn"));
        if let Err(error) = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init() {
            eprintln!("test logs are off: {error}");
        }
    });
}

async fn reader_pool(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new().max_connections(2).connect(url).await.expect("a reader connection")
}

/// Sends a request and returns its status and JSON body (`Value::Null` when the body is empty,
/// the text as a string when it is not JSON).
///
/// # Panics
/// When the request cannot be sent.
pub async fn send(request: RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("the request is sent");
    let status = response.status();
    let text = response.text().await.expect("a body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// Asserts that a response is the typed error `code` with `status`, and returns its body.
///
/// # Panics
/// When it is not.
#[track_caller]
pub fn assert_error(
    case: &str,
    (status, body): &(StatusCode, Value),
    expected_status: StatusCode,
    code: &str,
) {
    assert_eq!(*status, expected_status, "{case}: status; body {body}");
    assert_eq!(body["error"]["code"], code, "{case}: error code; body {body}");
    assert!(
        body["error"]["message"].as_str().is_some_and(|message| !message.is_empty()),
        "{case}: a message; body {body}"
    );
}

/// The `store-server` binary, built once per test process (a no-op when `cargo test
/// --workspace` already built it).
///
/// # Panics
/// When it cannot be built.
pub fn store_server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| workspace_binary("store-server"))
}

/// Builds the binary of the workspace package `name` (its bin has the same name) with the
/// profile the tests run under, and returns its path as cargo reports it.
fn workspace_binary(name: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["build", "--quiet", "-p", name, "--bin", name, "--message-format=json"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(output.status.success(), "building {name} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reports the {name} executable"))
}

/// Serves `router` on a free loopback port (a stand-in for an external service): its base URL
/// and the serving task, which the caller aborts when done.
///
/// # Panics
/// When no loopback port can be bound.
pub async fn serve_on_loopback(router: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let base_url = format!("http://{}", listener.local_addr().expect("an address"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (base_url, task)
}

/// A SQLite server on a runtime of its own, for tests and benches whose own thread is busy
/// running a window or an app's frames (a Bevy app), or waiting on a child process.
///
/// # Panics
/// When the runtime or the server cannot start.
#[must_use]
pub fn server_beside_a_window() -> (tokio::runtime::Runtime, TestServer) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let server = runtime.block_on(TestServer::start(Backend::Sqlite)).expect("SQLite always runs");
    (runtime, server)
}

/// The repository's `assets/` folder (item icons, the default catalog), as a plain absolute
/// path: Bevy's asset server does not resolve `..` in the folder it is given.
///
/// # Panics
/// When the folder is missing.
#[must_use]
pub fn repository_assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package sits in the repository")
        .join("assets")
        .canonicalize()
        .expect("the repository has an assets folder")
}

/// Whether a test that needs an X display (a real window) can run: `DISPLAY` names one.
/// Under `CI=true` a missing display fails the test instead of letting it pass unrun.
///
/// # Panics
/// Under `CI=true` without a display.
#[must_use]
pub fn display_available() -> bool {
    if std::env::var_os("DISPLAY").is_some_and(|display| !display.is_empty()) {
        return true;
    }
    assert!(
        !std::env::var("CI").is_ok_and(|ci| ci == "true"),
        "DISPLAY is not set under CI=true: the window tests must run (scripts/test.sh starts Xvfb)"
    );
    eprintln!("DISPLAY is not set, so this window test cannot run here (scripts/test.sh starts Xvfb)");
    false
}

/// How much a screenshot's pixels vary: the variance of their luminance (0 for a blank image).
///
/// # Panics
/// When the file is not a readable PNG.
#[must_use]
pub fn luminance_variance(png: &Path) -> u64 {
    let image = image::open(png).unwrap_or_else(|error| panic!("{}: {error}", png.display())).to_luma8();
    let pixels: Vec<u64> = image.pixels().map(|pixel| u64::from(pixel.0[0])).collect();
    let count = u64::try_from(pixels.len()).expect("a pixel count").max(1);
    let mean = pixels.iter().sum::<u64>() / count;
    pixels.iter().map(|value| value.abs_diff(mean).pow(2)).sum::<u64>() / count
}

/// The records of requests in flight a game's store keeps under `persistence`.
///
/// # Panics
/// When the directory exists but cannot be read.
#[must_use]
pub fn pending_records(persistence: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(persistence.join("pending")) else { return Vec::new() };
    entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().and_then(|ext| ext.to_str()) == Some("json"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn the_database_name_in_a_postgres_url_is_replaced() {
        assert_eq!(
            replace_database("postgres://u@127.0.0.1:5432/postgres", "x"),
            "postgres://u@127.0.0.1:5432/x"
        );
        assert_eq!(replace_database("postgres://u@127.0.0.1:5432", "x"), "postgres://u@127.0.0.1:5432/x");
        assert_eq!(
            replace_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}

/// A `store-server` child process, for tests of the real binary: its command line, signals and
/// restarts. It is killed if still running when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every stdout line read so far.
    pub stdout: Vec<String>,
    /// The URL the server printed.
    pub base_url: String,
}

/// Logs a device in on the server at `base` (a process, say); returns the player id and token.
///
/// # Panics
/// When the login fails.
pub async fn login_at(http: &reqwest::Client, base: &str, device_id: &str) -> (String, String) {
    let session: Value = http
        .post(format!("{base}/v1/auth/device"))
        .json(&serde_json::json!({ "device_id": device_id }))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("a session");
    (
        session["player_id"].as_str().expect("a player id").to_owned(),
        session["session_token"].as_str().expect("a session token").to_owned(),
    )
}

/// A `store-server` command with no inherited `COINSLOT_*` settings, run in `cwd`.
#[must_use]
pub fn store_server_command(cwd: &Path, database_url: Option<&str>) -> Command {
    let mut command = Command::new(store_server_binary());
    for (name, _) in std::env::vars() {
        if name.starts_with("COINSLOT_") {
            command.env_remove(name);
        }
    }
    command.current_dir(cwd).env("RUST_LOG", "warn");
    if let Some(url) = database_url {
        command.env("COINSLOT_DATABASE_URL", url);
    }
    command
}

impl ServerProcess {
    /// Starts `store-server serve` on a free loopback port and waits until it says where it
    /// listens.
    ///
    /// # Panics
    /// When it does not start within 60 seconds.
    pub fn start(cwd: &Path, database_url: &str) -> Self {
        let mut command = store_server_command(cwd, Some(database_url));
        command.env("COINSLOT_LISTEN", "127.0.0.1:0");
        Self::spawn(command)
    }

    /// Starts a prepared `store-server` command and waits until it says where it listens.
    ///
    /// # Panics
    /// When it does not start within 60 seconds.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("store-server starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut process = Self { child, lines, stdout: Vec::new(), base_url: String::new() };
        let line = process.read_line_until(|line| line.contains("listening on "), Duration::from_secs(60));
        process.base_url = line.rsplit(' ').next().expect("a URL").to_owned();
        // The first-start banner, if any, follows at once; give it a moment to arrive.
        while let Ok(line) = process.lines.recv_timeout(Duration::from_millis(300)) {
            process.stdout.push(line);
        }
        process
    }

    fn read_line_until(&mut self, wanted: impl Fn(&str) -> bool, limit: Duration) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("store-server printed no expected line in {limit:?}; so far: {:?}", self.stdout)
            });
            self.stdout.push(line.clone());
            if wanted(&line) {
                return line;
            }
        }
    }

    /// The operator key printed on first start, if this start printed one.
    #[must_use]
    pub fn printed_key(&self) -> Option<String> {
        self.stdout.iter().map(|line| line.trim()).find(|line| line.starts_with("csk_")).map(str::to_owned)
    }

    /// Sends SIGTERM and waits (at most 30 seconds) for the exit status.
    ///
    /// # Panics
    /// When the process does not exit in time.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("sh").args(["-c", &format!("kill -TERM {pid}")]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "store-server did not stop within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A free loopback port.
///
/// # Panics
/// When no port can be bound.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("an address").port()
}

/// The sandbox payment provider as a process of its own (`store-server sandbox`), with its own
/// SQLite database, as a store reaches a real provider: over HTTP, through
/// `SandboxMode::External`. Killed when dropped.
#[derive(Debug)]
pub struct StandaloneSandbox {
    /// The process (`terminate` it to check it stops cleanly).
    pub process: ServerProcess,
    /// Its base URL, ending in `/sandbox`.
    pub url: String,
    /// Its database.
    pub database_url: String,
    _dir: tempfile::TempDir,
}

impl StandaloneSandbox {
    /// Starts one on `port` (its checkout URLs name its address), delivering webhooks to
    /// `webhook_url` signed with `webhook_secret`, giving up on each after `delivery_attempts`
    /// when given.
    ///
    /// # Panics
    /// When it does not start.
    #[must_use]
    pub fn start(
        port: u16,
        webhook_url: &str,
        api_key: &str,
        webhook_secret: &str,
        delivery_attempts: Option<u32>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("a directory");
        let database_url = format!("sqlite://{}", dir.path().join("sandbox.db").display());
        let mut command = store_server_command(dir.path(), Some(&database_url));
        command.env("COINSLOT_LISTEN", format!("127.0.0.1:{port}")).args([
            "sandbox",
            "--webhook-url",
            webhook_url,
            "--api-key",
            api_key,
            "--webhook-secret",
            webhook_secret,
        ]);
        if let Some(attempts) = delivery_attempts {
            command.args(["--delivery-attempts", &attempts.to_string()]);
        }
        let process = ServerProcess::spawn(command);
        let url = process.base_url.clone();
        Self { process, url, database_url, _dir: dir }
    }
}

/// A PostgreSQL cluster of one test's own (in a temporary directory, on a loopback port, with
/// full durability), which the test may kill and restart without touching anyone else's.
#[derive(Debug)]
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// `runuser -u <user> --` when running as root (PostgreSQL refuses root).
    run_as: Option<String>,
    /// `fsync` and `synchronous_commit`: `on` but for a test that Coinslot refuses a server
    /// that does not keep its commits.
    durability: &'static str,
}

impl PrivatePostgres {
    /// Initializes and starts a cluster, or `None` outside CI when PostgreSQL is not installed.
    ///
    /// # Panics
    /// When PostgreSQL is missing under `CI=true`, or the cluster cannot start.
    #[must_use]
    pub fn start() -> Option<Self> {
        Self::start_with_durability("on")
    }

    /// A cluster that does not flush its commits (`fsync = off`), which Coinslot must refuse.
    ///
    /// # Panics
    /// As [`PrivatePostgres::start`].
    #[must_use]
    pub fn start_without_fsync() -> Option<Self> {
        Self::start_with_durability("off")
    }

    fn start_with_durability(durability: &'static str) -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .map(|dir| dir.path().join("bin"))
            .find(|bin| bin.join("initdb").exists());
        let Some(bin) = bin else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "PostgreSQL is not installed, and CI must run this"
            );
            eprintln!("PostgreSQL is not installed: the private-cluster test did not run");
            return None;
        };
        let dir = tempfile::tempdir().expect("a temp dir");
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
        let run_as = is_root.then(|| {
            let user =
                if Command::new("id").args(["-u", "postgres"]).output().is_ok_and(|out| out.status.success())
                {
                    "postgres"
                } else {
                    "nobody"
                };
            let owned = Command::new("chown").args([user, &dir.path().display().to_string()]).status();
            assert!(owned.is_ok_and(|status| status.success()), "chown the cluster directory");
            user.to_owned()
        });
        let port = free_port();
        let cluster = Self { dir, bin, port, run_as, durability };
        let data = cluster.data();
        let initdb = cluster
            .command("initdb")
            .args([
                "--pgdata",
                &data,
                "--username=coinslot",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ])
            .output()
            .expect("initdb runs");
        assert!(initdb.status.success(), "initdb: {}", String::from_utf8_lossy(&initdb.stderr));
        cluster.up();
        Some(cluster)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program).display().to_string();
        match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--", &program]);
                command
            }
            None => Command::new(program),
        }
    }

    /// Starts the server (again), retrying while a killed one's processes are still leaving.
    ///
    /// # Panics
    /// When it does not start within 60 seconds.
    pub fn up(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} -c fsync={durable} -c synchronous_commit={durable} -c max_connections=100",
            self.port,
            self.dir.path().display(),
            durable = self.durability,
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.dir.path().join("server.log").display().to_string();
            let started = self
                .command("pg_ctl")
                .args([
                    "--pgdata",
                    &self.data(),
                    "--log",
                    &log,
                    "--wait",
                    "--timeout=30",
                    "-o",
                    &options,
                    "start",
                ])
                .output()
                .expect("pg_ctl runs");
            if started.status.success() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "PostgreSQL did not start: {}",
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Kills the postmaster with SIGKILL (its backends follow); the next start recovers from the
    /// write-ahead log.
    pub fn kill(&self) {
        let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next().map(str::to_owned))
            .expect("a running postmaster");
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A URL to its `postgres` database.
    #[must_use]
    pub fn url(&self) -> String {
        format!("postgres://coinslot@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["--pgdata", &self.data(), "--mode=immediate", "--wait", "stop"])
            .output();
    }
}
