//! Settings: plain data that `main` fills from flags and `COINSLOT_*` variables, and that tests
//! build directly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use store_api::admin::AgeBand;

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
    /// Players' spending caps per payment, day and month, by age band.
    pub spending_limits: SpendingLimits,
    /// Real-money orders and tab purchases need the player's consent to immediate delivery
    /// (the EU withdrawal waiver for digital content).
    pub require_delivery_consent: bool,
    /// The currency analytics report real revenue in, and the rates into it.
    pub reporting: Reporting,
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
/// players in a younger age band (minor or child).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TabSettings {
    /// Settlement is required at this multiple of the minimum charge.
    pub threshold_multiple: u32,
    /// Credit limit for players who settled a tab before.
    pub credit_multiple: u32,
    /// Credit limit for players who never settled a tab.
    pub credit_new_multiple: u32,
    /// Credit limit for players in a younger age band (minor or child).
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

    /// A tab's credit, as a multiple of the minimum charge, by the tab rules alone (see
    /// [`Settings::credit_limit`], which also keeps it within one payment's cap).
    fn credit_multiple(&self, age_band: AgeBand, settled_before: bool) -> u32 {
        if age_band != AgeBand::Adult {
            self.credit_minor_multiple
        } else if settled_before {
            self.credit_multiple
        } else {
            self.credit_new_multiple
        }
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

/// Spending caps per currency: the most one order (or tab charge, or settlement) may cost, and
/// the most a player may spend per UTC day and calendar month. Currencies without an entry allow
/// 100 times their minimum card charge an order, 200 times a day and 1,000 times a month (USD
/// 50, 100 and 500); players in a younger age band get their band's share of that
/// ([`AgeBandShares`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpendingLimits {
    per_currency: BTreeMap<&'static str, SpendingCaps>,
    bands: AgeBandShares,
}

/// One player's caps in one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpendingCaps {
    /// The most one order, tab charge or settlement may cost.
    pub transaction: rust_decimal::Decimal,
    /// The most spent per UTC day.
    pub day: rust_decimal::Decimal,
    /// The most spent per calendar month.
    pub month: rust_decimal::Decimal,
}

/// Each younger age band's share of the adult caps, in percent: `minor` (13 to 17) 20 and
/// `child` (under 13) 10 unless set (USD 10 an order, 20 a day, 100 a month for a minor; 5, 10
/// and 50 for a child).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgeBandShares {
    minor_percent: u32,
    child_percent: u32,
}

impl Default for AgeBandShares {
    fn default() -> Self {
        Self { minor_percent: 20, child_percent: 10 }
    }
}

impl AgeBandShares {
    /// Parses `minor=20,child=10` (percent of the adult caps, 0 to 100; a band left out keeps
    /// its default).
    ///
    /// # Errors
    /// Returns a message naming the entry that is not `BAND=PERCENT`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut shares = Self::default();
        for entry in text.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
            let bad = || {
                format!(
                    "age band limit `{entry}` must look like minor=20 (percent of the adult caps, 0 to 100)"
                )
            };
            let (band, percent) = entry.split_once('=').ok_or_else(bad)?;
            let percent: u32 = percent.trim().parse().map_err(|_| bad())?;
            if percent > 100 {
                return Err(bad());
            }
            match band.trim() {
                "minor" => shares.minor_percent = percent,
                "child" => shares.child_percent = percent,
                _ => return Err(bad()),
            }
        }
        Ok(shares)
    }

    /// A band's share of the adult caps, in percent.
    #[must_use]
    pub fn percent(&self, band: AgeBand) -> u32 {
        match band {
            AgeBand::Adult => 100,
            AgeBand::Minor => self.minor_percent,
            AgeBand::Child => self.child_percent,
        }
    }
}

impl SpendingLimits {
    /// Parses `USD=50/100/500,EUR=40/80/400` (per order / per day / per month); the older
    /// `USD=100/500` (per day / per month) caps an order at the day's limit.
    ///
    /// # Errors
    /// Returns a message naming the entry that is not `CODE=ORDER/DAY/MONTH`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut limits = Self::default();
        for entry in text.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
            let bad =
                || format!("spending limit `{entry}` must look like USD=50/100/500 (per order/day/month)");
            let (code, amounts) = entry.split_once('=').ok_or_else(bad)?;
            let currency = store_api::MoneyCurrency::parse(code.trim())?;
            let amounts = amounts
                .split('/')
                .map(|amount| store_api::money::parse_amount(amount.trim()).map_err(|_| bad()))
                .collect::<Result<Vec<_>, _>>()?;
            let caps = match amounts[..] {
                [transaction, day, month] => SpendingCaps { transaction, day, month },
                [day, month] => SpendingCaps { transaction: day, day, month },
                _ => return Err(bad()),
            };
            limits.per_currency.insert(currency.code(), caps);
        }
        Ok(limits)
    }

    /// These limits with the younger bands' shares of them.
    #[must_use]
    pub fn with_bands(self, bands: AgeBandShares) -> Self {
        Self { bands, ..self }
    }

    /// A player's caps in `currency`, by their age band (rounded down to whole minor units).
    #[must_use]
    pub fn caps(&self, currency: store_api::MoneyCurrency, band: AgeBand) -> SpendingCaps {
        use rust_decimal::Decimal;
        let adult = self.per_currency.get(currency.code()).copied().unwrap_or_else(|| {
            let minimum = currency.minimum_charge().amount;
            SpendingCaps {
                transaction: minimum * Decimal::from(100),
                day: minimum * Decimal::from(200),
                month: minimum * Decimal::from(1_000),
            }
        });
        let share = Decimal::from(self.bands.percent(band)) / Decimal::ONE_HUNDRED;
        let part = |amount: Decimal| {
            (amount * share)
                .round_dp_with_strategy(currency.minor_units(), rust_decimal::RoundingStrategy::ToZero)
        };
        SpendingCaps { transaction: part(adult.transaction), day: part(adult.day), month: part(adult.month) }
    }
}

/// The operator's reporting currency and the exchange rates into it (one unit of each currency
/// in reporting units: `EUR=1.08`). Revenue in a currency without a rate is reported as not
/// converted rather than guessed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reporting {
    /// The currency reports convert into.
    pub currency: store_api::MoneyCurrency,
    rates: BTreeMap<&'static str, rust_decimal::Decimal>,
}

impl Default for Reporting {
    fn default() -> Self {
        Self {
            currency: store_api::MoneyCurrency::parse("USD").unwrap_or_else(|_| unreachable!()),
            rates: BTreeMap::new(),
        }
    }
}

impl Reporting {
    /// The reporting currency with rates parsed from `EUR=1.08,JPY=0.0067`.
    ///
    /// # Errors
    /// Returns a message naming the entry that is not `CODE=RATE` with a positive rate.
    pub fn parse(currency: store_api::MoneyCurrency, rates: &str) -> Result<Self, String> {
        let mut reporting = Self { currency, rates: BTreeMap::new() };
        for entry in rates.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
            let bad = || {
                format!(
                    "exchange rate `{entry}` must look like EUR=1.08 (a positive rate into the reporting currency)"
                )
            };
            let (code, rate) = entry.split_once('=').ok_or_else(bad)?;
            let code = store_api::MoneyCurrency::parse(code.trim())?;
            let rate = store_api::money::parse_amount(rate.trim()).map_err(|_| bad())?;
            if rate.is_zero() {
                return Err(bad());
            }
            reporting.rates.insert(code.code(), rate);
        }
        Ok(reporting)
    }

    /// One unit of `currency` in the reporting currency, if known (1 for the reporting currency).
    #[must_use]
    pub fn rate(&self, currency: store_api::MoneyCurrency) -> Option<rust_decimal::Decimal> {
        if currency == self.currency {
            return Some(rust_decimal::Decimal::ONE);
        }
        self.rates.get(currency.code()).copied()
    }
}

/// What a server in test mode says about itself (start-up log, `/readyz`).
pub const TEST_MODE_NOTICE: &str =
    "TEST MODE: the sandbox payment provider is mounted and its test cards pay for orders";

impl Settings {
    /// The most a player's tab may hold: the tab rules' credit for their band and history,
    /// never more than the band's cap on one transaction, so the settlement that pays the tab
    /// always fits that cap.
    #[must_use]
    pub fn credit_limit(
        &self,
        currency: store_api::MoneyCurrency,
        age_band: AgeBand,
        settled_before: bool,
    ) -> store_api::Money {
        let credit = TabSettings::times(currency, self.tabs.credit_multiple(age_band, settled_before));
        let cap = self.spending_limits.caps(currency, age_band).transaction;
        store_api::Money { currency, amount: credit.amount.min(cap) }
    }

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
            require_delivery_consent: false,
            reporting: Reporting::default(),
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

#[cfg(test)]
mod tests {
    use super::{AgeBandShares, SpendingLimits};
    use rust_decimal::Decimal;
    use store_api::MoneyCurrency;
    use store_api::admin::AgeBand;

    fn caps(limits: &SpendingLimits, code: &str, band: AgeBand) -> [String; 3] {
        let caps = limits.caps(MoneyCurrency::parse(code).unwrap(), band);
        [caps.transaction, caps.day, caps.month].map(|amount: Decimal| amount.normalize().to_string())
    }

    #[test]
    fn each_age_band_gets_its_share_of_the_adult_caps() {
        let defaults = SpendingLimits::default();
        assert_eq!(caps(&defaults, "USD", AgeBand::Adult), ["50", "100", "500"]);
        assert_eq!(caps(&defaults, "USD", AgeBand::Minor), ["10", "20", "100"]);
        assert_eq!(caps(&defaults, "USD", AgeBand::Child), ["5", "10", "50"]);
        assert_eq!(caps(&defaults, "JPY", AgeBand::Child), ["500", "1000", "5000"]);

        let set = SpendingLimits::parse("USD=20/50/200, EUR=100/400")
            .unwrap()
            .with_bands(AgeBandShares::parse("child=15").unwrap());
        assert_eq!(caps(&set, "USD", AgeBand::Adult), ["20", "50", "200"]);
        assert_eq!(
            caps(&set, "EUR", AgeBand::Adult),
            ["100", "100", "400"],
            "the older form caps an order at a day"
        );
        assert_eq!(caps(&set, "USD", AgeBand::Minor), ["4", "10", "40"], "minor keeps its default 20%");
        assert_eq!(caps(&set, "USD", AgeBand::Child), ["3", "7.5", "30"]);
        let odd = SpendingLimits::parse("USD=0.99/0.99/0.99").unwrap();
        assert_eq!(
            caps(&odd, "USD", AgeBand::Child),
            ["0.09", "0.09", "0.09"],
            "rounded down to whole cents"
        );
    }

    #[test]
    fn malformed_caps_and_bands_are_refused() {
        for bad in ["USD", "USD=1", "USD=1/2/3/4", "USD=a/2", "usd=1/2", "USD=-1/2"] {
            assert!(SpendingLimits::parse(bad).is_err(), "{bad}");
        }
        for bad in ["minor", "minor=101", "teen=20", "adult=50", "child=-1", "child=ten"] {
            assert!(AgeBandShares::parse(bad).is_err(), "{bad}");
        }
    }
}
