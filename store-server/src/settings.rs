//! Settings: plain data that `main` fills from flags and `COINSLOT_*` variables, and that tests
//! build directly.

use std::collections::BTreeMap;
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
/// Requests in one group-commit transaction at most, unless set.
pub const BATCH_SIZE_MAX_DEFAULT: usize = 128;
/// The largest batch the setting accepts.
pub const BATCH_SIZE_MAX_LIMIT: usize = 4_096;
/// The longest batch wait the setting accepts.
pub const BATCH_WAIT_US_MAX: u64 = 100_000;

/// The least time idempotency keys are kept: a week, so a game reopened days after a purchase
/// whose answer it never saw resumes it with its key and gets the first answer.
pub const IDEMPOTENCY_RETENTION_MIN: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `sqlite://path` or `postgres://…`.
    pub database_url: String,
    /// Address to bind; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The URL players and operators reach the server at; defaults to `http://{listen}`.
    pub public_url: Option<String>,
    /// Serve HTTPS with this PEM certificate chain and private key (`--tls-cert`, `--tls-key`).
    pub tls: Option<TlsFiles>,
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
    /// How long an unpaid order waits for its payment.
    pub order_ttl: Duration,
    /// Players' spending limits per day and month.
    pub spending_limits: SpendingLimits,
    /// Requests per player: sustained per second and burst (`off` in tests that race one player).
    pub player_rate_limit: crate::players::rate_limit::Limit,
    /// Requests per operator API key.
    pub key_rate_limit: crate::players::rate_limit::Limit,
    /// Orders a player may create in [`VELOCITY_ORDERS_WINDOW`] before being flagged.
    pub velocity_orders_max: u32,
    /// Declined payments a player may have in [`VELOCITY_DECLINES_WINDOW`] before being flagged.
    pub velocity_declines_max: u32,
    /// How far a webhook's timestamp may be from now.
    pub webhook_tolerance: Duration,
    /// How often the background workers (order expiry, refunds, sandbox deliveries) run.
    pub worker_tick: Duration,
    /// How often reconciliation reads each provider's events API for what no webhook brought.
    pub reconcile_interval: Duration,
    /// Rows one analytics report reads at most; a range holding more is refused.
    pub analytics_rows_max: i64,
    /// The merchant name shown on checkout pages.
    pub merchant_name: String,
    /// Where the sandbox payment provider is: mounted in this server, running elsewhere, or off.
    pub sandbox: SandboxMode,
    /// Steam, when configured: `POST /v1/auth/steam` logs players in with Steam session tickets.
    pub steam: Option<crate::players::steam::SteamSettings>,
    /// The App Store, when configured: `POST /v1/platform-purchases/apple` redeems StoreKit 2
    /// signed transactions.
    pub apple: Option<crate::payments::platform::apple::AppleSettings>,
    /// Google Play, when configured: `POST /v1/platform-purchases/google` redeems purchase
    /// tokens, and `POST /v1/webhooks/google` receives Real-time developer notifications.
    pub google_play: Option<crate::payments::platform::google::GooglePlaySettings>,
    /// Whether the sandbox may stay beside a provider that takes real money (a staging server).
    /// Without it, such a server refuses to start: production runs with the sandbox off.
    pub test_mode: bool,
    /// Stripe, when configured: new orders and tab settlements are paid through it.
    pub stripe: Option<crate::payments::stripe::StripeSettings>,
    /// The sandbox's fees.
    pub sandbox_fees: crate::payments::fees::FeeSchedule,
    /// How long after a payment with the dispute test card the dispute arrives.
    pub sandbox_dispute_delay: Duration,
    /// Tab thresholds, credit limits and time limit.
    pub tabs: TabSettings,
    /// The least an immediate-settlement price must net after the provider's fee, as a
    /// percentage of the currency's minimum card charge (50: USD 0.25).
    pub net_floor_percent: u32,
    /// Creators are paid out once a balance reaches this multiple of the currency's minimum card
    /// charge (20: USD 10.00).
    pub creator_payout_multiple: u32,
    /// Whether money-moving requests share transactions (group commit); off runs each in its own.
    pub group_commit: bool,
    /// Requests in one group-commit transaction at most.
    pub batch_size_max: usize,
    /// How long the group-commit writer waits for more requests after the first (0: takes what
    /// is queued and commits at once; batches still form while a commit is in progress).
    pub batch_wait: Duration,
    /// Group-commit writers, each committing its own batches from the one queue (one by
    /// default: on SQLite writes are serial anyway, and on PostgreSQL a second writer measured
    /// no clear gain on two cores; see ARCHITECTURE.md).
    pub writers: usize,
}

/// Tab limits, as multiples of each currency's minimum card charge (USD 0.50), so they make
/// sense in every currency: a tab must be settled at 10x (USD 5.00) or after `time_limit`; it may
/// hold 20x (USD 10.00) for players who settled a tab before, 10x for new players and 2x for
/// players flagged minor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TabSettings {
    /// Settlement is required at this multiple of the minimum charge.
    pub threshold_multiple: u32,
    /// Credit limit for players who settled a tab before.
    pub credit_multiple: u32,
    /// Credit limit for players who never settled a tab.
    pub credit_new_multiple: u32,
    /// Credit limit for players flagged minor.
    pub credit_minor_multiple: u32,
    /// A tab must be settled this long after it opened.
    pub time_limit: Duration,
}

impl Default for TabSettings {
    fn default() -> Self {
        Self {
            threshold_multiple: 10,
            credit_multiple: 20,
            credit_new_multiple: 10,
            credit_minor_multiple: 2,
            time_limit: Duration::from_secs(30 * 24 * 60 * 60),
        }
    }
}

impl TabSettings {
    fn times(currency: store_api::MoneyCurrency, multiple: u32) -> store_api::Money {
        let minimum = currency.minimum_charge();
        store_api::Money { currency, amount: minimum.amount * rust_decimal::Decimal::from(multiple) }
    }

    /// The amount at which a tab must be settled.
    #[must_use]
    pub fn threshold(&self, currency: store_api::MoneyCurrency) -> store_api::Money {
        Self::times(currency, self.threshold_multiple)
    }

    /// The most a player's tab may hold.
    #[must_use]
    pub fn credit_limit(
        &self,
        currency: store_api::MoneyCurrency,
        minor: bool,
        settled_before: bool,
    ) -> store_api::Money {
        let multiple = if minor {
            self.credit_minor_multiple
        } else if settled_before {
            self.credit_multiple
        } else {
            self.credit_new_multiple
        };
        Self::times(currency, multiple)
    }
}

/// Where the sandbox payment provider runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxMode {
    /// Mounted at `/sandbox` of this server, with per-installation secrets.
    Mounted,
    /// A standalone sandbox (`store-server sandbox`) at `url` (ending in `/sandbox`).
    External {
        /// Its base URL, e.g. `http://127.0.0.1:8090/sandbox`.
        url: String,
        /// Its API key.
        api_key: String,
        /// Its webhook signing secret.
        webhook_secret: Vec<u8>,
    },
    /// No sandbox: real-money orders are refused with `provider_unavailable`.
    Off,
}

/// Spending limits per currency, per UTC day and calendar month. Currencies without an entry
/// allow 200 times their minimum card charge a day and 1,000 times a month (USD 100 and 500);
/// players flagged `minor` get `minor_percent` of that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendingLimits {
    per_currency: BTreeMap<&'static str, (rust_decimal::Decimal, rust_decimal::Decimal)>,
    minor_percent: u32,
}

impl Default for SpendingLimits {
    fn default() -> Self {
        Self { per_currency: BTreeMap::new(), minor_percent: 20 }
    }
}

impl SpendingLimits {
    /// Parses `USD=100/500,EUR=80/400` (per day / per month).
    ///
    /// # Errors
    /// Returns a message naming the entry that is not `CODE=DAY/MONTH`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut limits = Self::default();
        for entry in text.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
            let bad = || format!("spending limit `{entry}` must look like USD=100/500");
            let (code, amounts) = entry.split_once('=').ok_or_else(bad)?;
            let (day, month) = amounts.split_once('/').ok_or_else(bad)?;
            let currency = store_api::MoneyCurrency::parse(code.trim())?;
            let day = store_api::money::parse_amount(day.trim()).map_err(|_| bad())?;
            let month = store_api::money::parse_amount(month.trim()).map_err(|_| bad())?;
            limits.per_currency.insert(currency.code(), (day, month));
        }
        Ok(limits)
    }

    /// The day and month limits for a player.
    #[must_use]
    pub fn limits(
        &self,
        currency: store_api::MoneyCurrency,
        minor: bool,
    ) -> (rust_decimal::Decimal, rust_decimal::Decimal) {
        let (day, month) = self.per_currency.get(currency.code()).copied().unwrap_or_else(|| {
            let minimum = currency.minimum_charge().amount;
            (minimum * rust_decimal::Decimal::from(200), minimum * rust_decimal::Decimal::from(1_000))
        });
        if minor {
            let share = rust_decimal::Decimal::from(self.minor_percent) / rust_decimal::Decimal::ONE_HUNDRED;
            (day * share, month * share)
        } else {
            (day, month)
        }
    }
}

/// What a server in test mode says about itself (start-up log, `/readyz`).
pub const TEST_MODE_NOTICE: &str =
    "TEST MODE: the sandbox payment provider is mounted and its test cards pay for orders";

impl Settings {
    /// Whether the sandbox payment provider serves this server (mounted or standalone): its test
    /// cards pay for orders.
    #[must_use]
    pub fn in_test_mode(&self) -> bool {
        !matches!(self.sandbox, SandboxMode::Off)
    }

    /// The configured providers that move real money (Steam's and the App Store's test
    /// environments do not).
    #[must_use]
    pub fn real_money_providers(&self) -> Vec<&'static str> {
        let mut real = Vec::new();
        if self.stripe.is_some() {
            real.push("Stripe");
        }
        if self.steam.as_ref().is_some_and(|steam| !steam.microtxn_sandbox) {
            real.push("Steam");
        }
        if self.apple.as_ref().is_some_and(|apple| apple.environment == "Production") {
            real.push("the App Store");
        }
        if self.google_play.is_some() {
            real.push("Google Play");
        }
        real
    }

    /// Refuses a sandbox beside real money unless the operator said so (`--test-mode`).
    ///
    /// # Errors
    /// The sandbox is on, a real provider is configured, and test mode was not asked for.
    pub fn check_test_mode(&self) -> anyhow::Result<()> {
        let real = self.real_money_providers();
        if self.in_test_mode() && !real.is_empty() && !self.test_mode {
            anyhow::bail!(
                "{} take real money, and the sandbox payment provider, whose test cards pay for orders, is mounted: \
                 start with --no-sandbox (COINSLOT_NO_SANDBOX=true) in production, or with --test-mode \
                 (COINSLOT_TEST_MODE=true) for a staging server that keeps both",
                real.join(", ")
            );
        }
        Ok(())
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: DATABASE_URL_DEFAULT.to_owned(),
            listen: LISTEN_DEFAULT.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080))),
            public_url: None,
            tls: None,
            assets_dir: PathBuf::from(ASSETS_DIR_DEFAULT),
            session_ttl: Duration::from_secs(24 * 60 * 60),
            shutdown_timeout: Duration::from_secs(10),
            db_connections_max: 16,
            db_timeout: Duration::from_secs(5),
            request_body_bytes_max: store_api::limits::REQUEST_BODY_BYTES_MAX,
            request_timeout: Duration::from_secs(30),
            idempotency_retention: IDEMPOTENCY_RETENTION_MIN,
            idempotency_cleanup_interval: Duration::from_secs(10 * 60),
            order_ttl: Duration::from_secs(30 * 60),
            spending_limits: SpendingLimits::default(),
            player_rate_limit: PLAYER_RATE_LIMIT_DEFAULT,
            key_rate_limit: KEY_RATE_LIMIT_DEFAULT,
            velocity_orders_max: 10,
            velocity_declines_max: 5,
            webhook_tolerance: Duration::from_secs(300),
            worker_tick: Duration::from_millis(200),
            reconcile_interval: Duration::from_secs(5),
            analytics_rows_max: crate::analytics::SALES_ROWS_MAX,
            merchant_name: "Coinslot demo store".to_owned(),
            sandbox: SandboxMode::Mounted,
            steam: None,
            apple: None,
            google_play: None,
            test_mode: false,
            stripe: None,
            sandbox_fees: crate::payments::fees::FeeSchedule::default(),
            sandbox_dispute_delay: Duration::from_secs(2),
            tabs: TabSettings::default(),
            net_floor_percent: 50,
            creator_payout_multiple: 20,
            group_commit: true,
            batch_size_max: BATCH_SIZE_MAX_DEFAULT,
            batch_wait: Duration::ZERO,
            writers: 1,
        }
    }
}

/// The PEM files HTTPS is served with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Requests a player may send: 50 a second sustained, bursts of 100.
pub const PLAYER_RATE_LIMIT_DEFAULT: crate::players::rate_limit::Limit =
    crate::players::rate_limit::Limit { per_second: 50, burst: 100 };
/// Requests an operator API key may send: 200 a second sustained, bursts of 400.
pub const KEY_RATE_LIMIT_DEFAULT: crate::players::rate_limit::Limit =
    crate::players::rate_limit::Limit { per_second: 200, burst: 400 };

/// The window the velocity check counts a player's orders in.
pub const VELOCITY_ORDERS_WINDOW: Duration = Duration::from_secs(10 * 60);
/// The window the velocity check counts a player's declined payments in.
pub const VELOCITY_DECLINES_WINDOW: Duration = Duration::from_secs(60 * 60);
