//! The command line: `serve` (the default), `migrate`, `admin create-key`, `catalog import` and
//! `catalog export`. Every subcommand reads the same settings, from flags or `COINSLOT_*`
//! environment variables.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use store_api::auth::Scope;

use crate::app::{Application, run_sandbox};
use crate::db::Db;
use crate::ledger::audit::audit;
use crate::ledger::receipts::rotate_receipt_key;
use crate::ops::install::{Seed, prepare, read_catalog_file};
use crate::payments::fees::FeeSchedule;
use crate::payments::sandbox::SandboxConfig;
use crate::players::auth::create_api_key;
use crate::settings::{
    ASSETS_DIR_DEFAULT, AgeBandShares, DATABASE_URL_DEFAULT, LISTEN_DEFAULT, SandboxMode, Settings,
    SpendingLimits,
};
use crate::store::catalog::{CatalogRules, export_catalog, import_catalog, lock_catalog, publish};

/// Coinslot store server.
#[derive(Debug, Parser)]
#[command(name = "store-server", version, about)]
pub struct Cli {
    #[command(flatten)]
    settings: SettingsArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Settings shared by every subcommand.
#[derive(Debug, Args)]
struct SettingsArgs {
    /// Database URL: `sqlite://path` or `postgres://user:pass@host/db`.
    #[arg(long, env = "COINSLOT_DATABASE_URL", default_value = DATABASE_URL_DEFAULT, global = true)]
    database_url: String,
    /// Address to listen on.
    #[arg(long, env = "COINSLOT_LISTEN", default_value = LISTEN_DEFAULT, global = true)]
    listen: SocketAddr,
    /// URL the server is reached at, if not `http://<listen>` (`https://` with TLS).
    #[arg(long, env = "COINSLOT_PUBLIC_URL", global = true)]
    public_url: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (with `--tls-key`).
    #[arg(long, env = "COINSLOT_TLS_CERT", global = true, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, env = "COINSLOT_TLS_KEY", global = true, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Folder with `catalog/catalog.json` and the demo's art.
    #[arg(long, env = "COINSLOT_ASSETS", default_value = ASSETS_DIR_DEFAULT, global = true)]
    assets: PathBuf,
    /// Player session lifetime in seconds.
    #[arg(long, env = "COINSLOT_SESSION_TTL_S", default_value_t = 86_400, global = true)]
    session_ttl_s: u64,
    /// Seconds shutdown waits for requests in flight.
    #[arg(long, env = "COINSLOT_SHUTDOWN_TIMEOUT_S", default_value_t = 10, global = true)]
    shutdown_timeout_s: u64,
    /// Most database connections.
    #[arg(long, env = "COINSLOT_DB_CONNECTIONS_MAX", default_value_t = 16, global = true)]
    db_connections_max: u32,
    /// Seconds an unpaid order waits for its payment.
    #[arg(long, env = "COINSLOT_ORDER_TTL_S", default_value_t = 1_800, global = true)]
    order_ttl_s: u64,
    /// Group commit: money-moving requests share transactions (`false` runs each alone).
    #[arg(long, env = "COINSLOT_GROUP_COMMIT", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    group_commit: bool,
    /// Requests in one group-commit transaction at most (1 to 4096).
    #[arg(long, env = "COINSLOT_BATCH_SIZE_MAX", default_value_t = crate::settings::BATCH_SIZE_MAX_DEFAULT, global = true)]
    batch_size_max: usize,
    /// Microseconds the group-commit writer waits for more requests after the first (0 to 100000).
    #[arg(long, env = "COINSLOT_BATCH_WAIT_US", default_value_t = 0, global = true)]
    batch_wait_us: u64,
    /// Group-commit writers sharing the queue, each with its own transaction (1 to 8; more than
    /// one helps only on PostgreSQL, with cores to spare).
    #[arg(long, env = "COINSLOT_WRITERS", default_value_t = 1, global = true, value_parser = clap::value_parser!(u8).range(1..=8))]
    writers: u8,
    /// Requests per player, `RATE/BURST` per second (or `off`).
    #[arg(long, env = "COINSLOT_PLAYER_RATE_LIMIT", default_value = "50/100", global = true, value_parser = crate::players::rate_limit::Limit::parse)]
    player_rate_limit: crate::players::rate_limit::Limit,
    /// Requests per operator API key, `RATE/BURST` per second (or `off`).
    #[arg(long, env = "COINSLOT_KEY_RATE_LIMIT", default_value = "200/400", global = true, value_parser = crate::players::rate_limit::Limit::parse)]
    key_rate_limit: crate::players::rate_limit::Limit,
    /// Orders a player may create in 10 minutes before being flagged for review.
    #[arg(long, env = "COINSLOT_VELOCITY_ORDERS_MAX", default_value_t = 10, global = true)]
    velocity_orders_max: u32,
    /// Declined payments a player may have in an hour before being flagged for review.
    #[arg(long, env = "COINSLOT_VELOCITY_DECLINES_MAX", default_value_t = 5, global = true)]
    velocity_declines_max: u32,
    /// Adult spending caps per order/day/month, e.g. `USD=50/100/500,EUR=40/80/400` (others:
    /// 100x/200x/1000x the currency's minimum card charge).
    #[arg(long, env = "COINSLOT_SPENDING_LIMITS", default_value = "", global = true, value_parser = SpendingLimits::parse)]
    spending_limits: SpendingLimits,
    /// Each younger age band's share of the adult caps, in percent: `minor=20,child=10` by default
    /// (an operator sets a player's band).
    #[arg(long, env = "COINSLOT_AGE_BAND_LIMITS", default_value = "", global = true, value_parser = AgeBandShares::parse)]
    age_band_limits: AgeBandShares,
    /// Real-money orders and tab purchases need the player's consent to immediate delivery (the
    /// EU withdrawal waiver for digital content: `immediate_delivery_consent: true`), recorded
    /// on the order and its receipt.
    #[arg(long, env = "COINSLOT_REQUIRE_DELIVERY_CONSENT", global = true)]
    require_delivery_consent: bool,
    /// The currency analytics report real revenue in (ISO 4217).
    #[arg(long, env = "COINSLOT_REPORTING_CURRENCY", default_value = "USD", global = true, value_parser = store_api::MoneyCurrency::parse)]
    reporting_currency: store_api::MoneyCurrency,
    /// Exchange rates into the reporting currency for analytics, e.g. `EUR=1.08,JPY=0.0067`
    /// (one unit of each in reporting units); revenue without a rate is shown unconverted.
    #[arg(long, env = "COINSLOT_EXCHANGE_RATES", default_value = "", global = true)]
    exchange_rates: String,
    /// The merchant name on checkout pages.
    #[arg(long, env = "COINSLOT_MERCHANT_NAME", default_value = "Coinslot demo store", global = true)]
    merchant_name: String,
    /// Keep the sandbox payment provider beside a provider that takes real money (a staging
    /// server); without it such a server refuses to start. Test mode shows on `/readyz`, the
    /// dashboard and the checkout pages.
    #[arg(long, env = "COINSLOT_TEST_MODE", global = true)]
    test_mode: bool,
    /// Do not mount the sandbox payment provider.
    #[arg(long, env = "COINSLOT_NO_SANDBOX", global = true)]
    no_sandbox: bool,
    /// Use a standalone sandbox (`store-server sandbox`) at this URL (ending in `/sandbox`)
    /// instead of mounting one.
    #[arg(long, env = "COINSLOT_SANDBOX_URL", global = true)]
    sandbox_url: Option<String>,
    /// The standalone sandbox's API key.
    #[arg(long, env = "COINSLOT_SANDBOX_API_KEY", global = true)]
    sandbox_api_key: Option<String>,
    /// The standalone sandbox's webhook signing secret.
    #[arg(long, env = "COINSLOT_SANDBOX_WEBHOOK_SECRET", global = true)]
    sandbox_webhook_secret: Option<String>,
    /// The Steam game's App ID: with the publisher Web API key, turns Steam logins on
    /// (`POST /v1/auth/steam`).
    #[arg(long, env = "COINSLOT_STEAM_APP_ID", global = true)]
    steam_app_id: Option<u32>,
    /// The Steamworks publisher Web API key.
    #[arg(long, env = "COINSLOT_STEAM_WEB_API_KEY", global = true, hide_env_values = true)]
    steam_web_api_key: Option<String>,
    /// Steam's partner Web API (a stand-in's, in tests).
    #[arg(
        long,
        env = "COINSLOT_STEAM_API_URL",
        default_value = "https://partner.steam-api.com",
        global = true
    )]
    steam_api_url: String,
    /// Send Steam purchases to `ISteamMicroTxnSandbox` (nothing is charged) instead of
    /// `ISteamMicroTxn`.
    #[arg(long, env = "COINSLOT_STEAM_MICROTXN_SANDBOX", global = true)]
    steam_microtxn_sandbox: bool,
    /// Steam's share of each purchase in percent, booked as its fee (30 under the Steam
    /// Distribution Agreement, 25 or 20 past a game's revenue thresholds).
    #[arg(long, env = "COINSLOT_STEAM_REVENUE_SHARE_PERCENT", default_value_t = 30, global = true, value_parser = clap::value_parser!(u8).range(0..=100))]
    steam_revenue_share_percent: u8,
    /// The ISO 639-1 language of the catalog's item names, which the Steam overlay shows.
    #[arg(long, env = "COINSLOT_STEAM_LANGUAGE", default_value = "en", global = true)]
    steam_language: String,
    /// The iOS app's bundle id: with the trusted roots, turns App Store purchase redemption on
    /// (`POST /v1/platform-purchases/apple`).
    #[arg(long, env = "COINSLOT_APPLE_BUNDLE_ID", global = true)]
    apple_bundle_id: Option<String>,
    /// Which App Store environment's transactions are redeemed: `Production` or `Sandbox`.
    #[arg(long, env = "COINSLOT_APPLE_ENVIRONMENT", default_value = "Production", global = true, value_parser = ["Production", "Sandbox"])]
    apple_environment: String,
    /// The roots App Store signed data must chain to: certificate files (DER or PEM), separated
    /// by commas (Apple Root CA - G3, `AppleRootCA-G3.cer` from apple.com/certificateauthority).
    #[arg(long, env = "COINSLOT_APPLE_ROOT_CERTIFICATES", global = true)]
    apple_root_certificates: Option<String>,
    /// Apple's commission in percent, booked as the fee (30; 15 under the Small Business
    /// Program).
    #[arg(long, env = "COINSLOT_APPLE_COMMISSION_PERCENT", default_value_t = 30, global = true, value_parser = clap::value_parser!(u8).range(0..=100))]
    apple_commission_percent: u8,
    /// The App Store Server API (its sandbox: `https://api.storekit-sandbox.apple.com`; a
    /// stand-in's in tests).
    #[arg(
        long,
        env = "COINSLOT_APPLE_API_URL",
        default_value = "https://api.storekit.apple.com",
        global = true
    )]
    apple_api_url: String,
    /// The In-App Purchase key's issuer id: with the key id and the key, consumption requests
    /// are answered through the App Store Server API.
    #[arg(long, env = "COINSLOT_APPLE_ISSUER_ID", global = true)]
    apple_issuer_id: Option<String>,
    /// The In-App Purchase key's id.
    #[arg(long, env = "COINSLOT_APPLE_KEY_ID", global = true)]
    apple_key_id: Option<String>,
    /// The In-App Purchase key file (`SubscriptionKey_….p8`).
    #[arg(long, env = "COINSLOT_APPLE_PRIVATE_KEY", global = true)]
    apple_private_key: Option<String>,
    /// Tell Apple, in answers to consumption requests, that the player consented to share
    /// consumption data (only when the studio's terms obtain that consent).
    #[arg(long, env = "COINSLOT_APPLE_CUSTOMER_CONSENTED", global = true)]
    apple_customer_consented: bool,
    /// How often, at most, the App Store Server API's Notification History is read back (with
    /// the In-App Purchase key configured), so a notification lost for good is still booked.
    #[arg(long, env = "COINSLOT_APPLE_HISTORY_POLL_SECONDS", default_value_t = 600, global = true)]
    apple_history_poll_seconds: u64,
    /// The Android app's package name: with the service account key, turns Google Play purchase
    /// redemption on (`POST /v1/platform-purchases/google`).
    #[arg(long, env = "COINSLOT_GOOGLE_PACKAGE_NAME", global = true)]
    google_package_name: Option<String>,
    /// The service account key file (JSON, from Google Cloud) the server calls the Android
    /// Publisher API as; the account needs the Play Console's "View financial data" and "Manage
    /// orders" permissions.
    #[arg(long, env = "COINSLOT_GOOGLE_SERVICE_ACCOUNT_KEY", global = true)]
    google_service_account_key: Option<String>,
    /// The Android Publisher API (a stand-in's in tests).
    #[arg(
        long,
        env = "COINSLOT_GOOGLE_API_URL",
        default_value = "https://androidpublisher.googleapis.com",
        global = true
    )]
    google_api_url: String,
    /// Google's service fee in percent, booked (with the tax) only when an order does not report
    /// the studio's revenue.
    #[arg(long, env = "COINSLOT_GOOGLE_COMMISSION_PERCENT", default_value_t = 15, global = true, value_parser = clap::value_parser!(u8).range(0..=100))]
    google_commission_percent: u8,
    /// Redeem license testers' purchases (no money is paid): for a staging server only.
    #[arg(long, env = "COINSLOT_GOOGLE_ACCEPT_TEST_PURCHASES", global = true)]
    google_accept_test_purchases: bool,
    /// The audience of the Pub/Sub push subscription that delivers Real-time developer
    /// notifications to `/v1/webhooks/google`: with the push service account, turns them on.
    #[arg(long, env = "COINSLOT_GOOGLE_PUSH_AUDIENCE", global = true)]
    google_push_audience: Option<String>,
    /// The service account the push subscription authenticates as.
    #[arg(long, env = "COINSLOT_GOOGLE_PUSH_SERVICE_ACCOUNT", global = true)]
    google_push_service_account: Option<String>,
    /// Where Google publishes the keys its push tokens are signed with (a JWK Set).
    #[arg(
        long,
        env = "COINSLOT_GOOGLE_CERTS_URL",
        default_value = "https://www.googleapis.com/oauth2/v3/certs",
        global = true
    )]
    google_certs_url: String,
    /// How often, at most, the Voided Purchases API is polled (its quota is a few thousand calls
    /// a day).
    #[arg(long, env = "COINSLOT_GOOGLE_VOIDED_POLL_SECONDS", default_value_t = 600, global = true)]
    google_voided_poll_seconds: u64,
    /// Stripe's secret API key (`sk_live_…`, `sk_test_…`): turns Stripe on; new orders and tab
    /// settlements are then paid through Stripe Checkout (docs/payment-providers.md).
    #[arg(long, env = "COINSLOT_STRIPE_SECRET_KEY", global = true, hide_env_values = true)]
    stripe_secret_key: Option<String>,
    /// The Stripe webhook endpoint's signing secret (`whsec_…`); during a rotation, the new and
    /// the old separated by a comma.
    #[arg(long, env = "COINSLOT_STRIPE_WEBHOOK_SECRET", global = true, hide_env_values = true)]
    stripe_webhook_secret: Option<String>,
    /// Stripe's API (a stand-in's, in tests).
    #[arg(long, env = "COINSLOT_STRIPE_API_URL", default_value = "https://api.stripe.com", global = true)]
    stripe_api_url: String,
    /// Where Stripe Checkout sends the player after paying (`{ORDER_ID}` is filled in); this
    /// server's `/checkout/complete` page by default.
    #[arg(long, env = "COINSLOT_STRIPE_SUCCESS_URL", global = true)]
    stripe_success_url: Option<String>,
    /// Where Stripe Checkout sends a player who goes back; `/checkout/canceled` by default.
    #[arg(long, env = "COINSLOT_STRIPE_CANCEL_URL", global = true)]
    stripe_cancel_url: Option<String>,
    /// The sandbox's fees, e.g. `USD=0.30+2.9%` (others: 60% of the minimum charge + 2.9%).
    #[arg(long, env = "COINSLOT_SANDBOX_FEES", default_value = "", global = true, value_parser = FeeSchedule::parse)]
    sandbox_fees: FeeSchedule,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "COINSLOT_LOG_JSON", global = true)]
    log_json: bool,
}

impl SettingsArgs {
    fn sandbox_mode(&self) -> anyhow::Result<SandboxMode> {
        if self.no_sandbox {
            return Ok(SandboxMode::Off);
        }
        match (&self.sandbox_url, &self.sandbox_api_key, &self.sandbox_webhook_secret) {
            (None, None, None) => Ok(SandboxMode::Mounted),
            (Some(url), Some(api_key), Some(secret)) => Ok(SandboxMode::External {
                url: url.clone(),
                api_key: api_key.clone(),
                webhook_secret: secret.clone().into_bytes(),
            }),
            _ => anyhow::bail!("--sandbox-url, --sandbox-api-key and --sandbox-webhook-secret go together"),
        }
    }

    fn steam(&self) -> anyhow::Result<Option<crate::players::steam::SteamSettings>> {
        match (self.steam_app_id, &self.steam_web_api_key) {
            (None, None) => Ok(None),
            (Some(app_id), Some(web_api_key)) => Ok(Some(crate::players::steam::SteamSettings {
                api_url: self.steam_api_url.trim_end_matches('/').to_owned(),
                web_api_key: web_api_key.clone(),
                app_id,
                microtxn_sandbox: self.steam_microtxn_sandbox,
                revenue_share_percent: self.steam_revenue_share_percent,
                language: self.steam_language.clone(),
            })),
            _ => anyhow::bail!("--steam-app-id and --steam-web-api-key go together"),
        }
    }

    fn apple(&self) -> anyhow::Result<Option<crate::payments::platform::apple::AppleSettings>> {
        let (Some(bundle_id), Some(roots)) = (&self.apple_bundle_id, &self.apple_root_certificates) else {
            if self.apple_bundle_id.is_some() || self.apple_root_certificates.is_some() {
                anyhow::bail!("--apple-bundle-id and --apple-root-certificates go together");
            }
            return Ok(None);
        };
        let mut root_certificates = Vec::new();
        for path in roots.split(',').map(str::trim).filter(|path| !path.is_empty()) {
            let bytes = std::fs::read(path).map_err(|error| anyhow::anyhow!("{path}: {error}"))?;
            // A PEM file holds base64 between its markers; a .cer file is DER.
            let der = match pem::parse(&bytes) {
                Ok(block) => block.into_contents(),
                Err(_) => bytes,
            };
            root_certificates.push(der);
        }
        anyhow::ensure!(!root_certificates.is_empty(), "--apple-root-certificates names no file");
        let server_api = match (&self.apple_issuer_id, &self.apple_key_id, &self.apple_private_key) {
            (None, None, None) => None,
            (Some(issuer_id), Some(key_id), Some(path)) => {
                let bytes = std::fs::read(path).map_err(|error| anyhow::anyhow!("{path}: {error}"))?;
                let private_key = pem::parse(&bytes).map(pem::Pem::into_contents).unwrap_or(bytes);
                Some(crate::payments::platform::apple::AppStoreServerApi {
                    url: self.apple_api_url.trim_end_matches('/').to_owned(),
                    issuer_id: issuer_id.clone(),
                    key_id: key_id.clone(),
                    private_key,
                    customer_consented: self.apple_customer_consented,
                    history_poll_interval: Duration::from_secs(self.apple_history_poll_seconds),
                })
            }
            _ => anyhow::bail!("--apple-issuer-id, --apple-key-id and --apple-private-key go together"),
        };
        Ok(Some(crate::payments::platform::apple::AppleSettings {
            bundle_id: bundle_id.clone(),
            environment: self.apple_environment.clone(),
            root_certificates,
            commission_percent: self.apple_commission_percent,
            server_api,
        }))
    }

    fn google_play(&self) -> anyhow::Result<Option<crate::payments::platform::google::GooglePlaySettings>> {
        use crate::payments::platform::google::{GooglePlaySettings, PushAuthentication, ServiceAccount};
        let (Some(package_name), Some(key_path)) =
            (&self.google_package_name, &self.google_service_account_key)
        else {
            if self.google_package_name.is_some() || self.google_service_account_key.is_some() {
                anyhow::bail!("--google-package-name and --google-service-account-key go together");
            }
            return Ok(None);
        };
        let bytes = std::fs::read(key_path).map_err(|error| anyhow::anyhow!("{key_path}: {error}"))?;
        let service_account =
            ServiceAccount::from_json(&bytes).map_err(|error| anyhow::anyhow!("{key_path}: {error}"))?;
        let push = match (&self.google_push_audience, &self.google_push_service_account) {
            (None, None) => None,
            (Some(audience), Some(service_account)) => Some(PushAuthentication {
                audience: audience.clone(),
                service_account: service_account.clone(),
                certs_url: self.google_certs_url.clone(),
            }),
            _ => anyhow::bail!("--google-push-audience and --google-push-service-account go together"),
        };
        Ok(Some(GooglePlaySettings {
            package_name: package_name.clone(),
            service_account,
            api_url: self.google_api_url.trim_end_matches('/').to_owned(),
            commission_percent: self.google_commission_percent,
            accept_test_purchases: self.google_accept_test_purchases,
            push,
            voided_poll_interval: Duration::from_secs(self.google_voided_poll_seconds),
        }))
    }

    fn stripe(&self) -> anyhow::Result<Option<crate::payments::stripe::StripeSettings>> {
        match (&self.stripe_secret_key, &self.stripe_webhook_secret) {
            (None, None) => Ok(None),
            (Some(secret_key), Some(webhook_secrets)) => {
                let webhook_secrets: Vec<String> = webhook_secrets
                    .split(',')
                    .map(str::trim)
                    .filter(|secret| !secret.is_empty())
                    .map(str::to_owned)
                    .collect();
                anyhow::ensure!(!webhook_secrets.is_empty(), "--stripe-webhook-secret names no secret");
                Ok(Some(crate::payments::stripe::StripeSettings {
                    api_url: self.stripe_api_url.trim_end_matches('/').to_owned(),
                    secret_key: secret_key.clone(),
                    webhook_secrets,
                    success_url: self.stripe_success_url.clone(),
                    cancel_url: self.stripe_cancel_url.clone(),
                }))
            }
            _ => anyhow::bail!("--stripe-secret-key and --stripe-webhook-secret go together"),
        }
    }

    fn settings(&self) -> anyhow::Result<Settings> {
        Ok(Settings {
            database_url: self.database_url.clone(),
            listen: self.listen,
            public_url: self.public_url.clone(),
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => {
                    Some(crate::settings::TlsFiles { cert: cert.clone(), key: key.clone() })
                }
                _ => None,
            },
            assets_dir: self.assets.clone(),
            session_ttl: Duration::from_secs(self.session_ttl_s),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_s),
            db_connections_max: self.db_connections_max,
            order_ttl: Duration::from_secs(self.order_ttl_s),
            group_commit: self.group_commit,
            batch_size_max: {
                anyhow::ensure!(
                    (1..=crate::settings::BATCH_SIZE_MAX_LIMIT).contains(&self.batch_size_max),
                    "--batch-size-max must be 1 to {}",
                    crate::settings::BATCH_SIZE_MAX_LIMIT
                );
                self.batch_size_max
            },
            batch_wait: {
                anyhow::ensure!(
                    self.batch_wait_us <= crate::settings::BATCH_WAIT_US_MAX,
                    "--batch-wait-us must be 0 to {}",
                    crate::settings::BATCH_WAIT_US_MAX
                );
                Duration::from_micros(self.batch_wait_us)
            },
            writers: usize::from(self.writers),
            spending_limits: self.spending_limits.clone().with_bands(self.age_band_limits),
            require_delivery_consent: self.require_delivery_consent,
            reporting: crate::settings::Reporting::parse(self.reporting_currency, &self.exchange_rates)
                .map_err(|message| anyhow::anyhow!("--exchange-rates: {message}"))?,
            player_rate_limit: self.player_rate_limit,
            key_rate_limit: self.key_rate_limit,
            velocity_orders_max: self.velocity_orders_max,
            velocity_declines_max: self.velocity_declines_max,
            merchant_name: self.merchant_name.clone(),
            sandbox: self.sandbox_mode()?,
            test_mode: self.test_mode,
            steam: self.steam()?,
            apple: self.apple()?,
            google_play: self.google_play()?,
            stripe: self.stripe()?,
            sandbox_fees: self.sandbox_fees.clone(),
            ..Settings::default()
        })
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Operator administration.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Catalog files.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Check every ledger invariant; exits non-zero with a report when one fails.
    Audit,
    /// Fill the database with weeks of plausible activity through the real write paths (logins
    /// from several countries, store views, coins, purchases, tabs, card orders, refunds), so
    /// the dashboard's charts have something to show. Use a database of its own.
    DemoData {
        /// Players to make.
        #[arg(long, default_value_t = 200)]
        players: u32,
        /// Days of activity, ending yesterday.
        #[arg(long, default_value_t = 28)]
        days: u32,
        /// The random seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Add many players with ledger entries through the ledger's bulk path (device ids
    /// `scale-<n>`), for the scale benchmark. Needs a live catalog. Use a database of its own.
    Generate {
        /// Players to add.
        #[arg(long, default_value_t = 1_000_000)]
        players: u64,
        /// Ledger entries per player.
        #[arg(long, default_value_t = 10)]
        entries_per_player: u32,
    },
    /// Run only the sandbox payment provider, for a store configured with `--sandbox-url`.
    Sandbox {
        /// Where the store receives webhooks, e.g. `http://127.0.0.1:8080/v1/webhooks/sandbox`.
        #[arg(long)]
        webhook_url: String,
        /// The API key stores must send.
        #[arg(long, env = "COINSLOT_SANDBOX_API_KEY")]
        api_key: String,
        /// The secret webhooks are signed with.
        #[arg(long, env = "COINSLOT_SANDBOX_WEBHOOK_SECRET")]
        webhook_secret: String,
        /// Delivery attempts of one webhook before giving up on it (its retry window).
        #[arg(long, default_value_t = crate::payments::sandbox::DELIVERY_ATTEMPTS_MAX)]
        delivery_attempts: i64,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an operator API key and print only the key on stdout.
    CreateKey {
        /// Comma-separated scopes, e.g. `catalog:read,catalog:write`.
        #[arg(long, value_delimiter = ',', required = true, value_parser = parse_scope)]
        scopes: Vec<Scope>,
        /// What the key is for.
        #[arg(long, default_value = "created from the command line")]
        name: String,
    },
    /// Start signing receipts with a new key; the old key keeps verifying what it signed.
    RotateReceiptKey,
}

#[derive(Debug, Subcommand)]
enum CatalogCommand {
    /// Replace the draft with a catalog file (and create or update its currencies).
    Import {
        /// The file, as written by `catalog export`.
        file: PathBuf,
        /// Publish the imported draft as a new version.
        #[arg(long)]
        publish: bool,
    },
    /// Print the currencies and the draft as a catalog file.
    Export {
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    Scope::parse(text)
}

impl Cli {
    /// The log filter when `RUST_LOG` is not set: `demo-data` keeps to warnings, so its progress
    /// bar is not buried under thousands of request logs.
    #[must_use]
    pub fn default_log_filter(&self) -> &'static str {
        if matches!(self.command, Some(Command::DemoData { .. })) { "warn" } else { "info,sqlx=warn" }
    }

    /// Whether logs should be JSON lines.
    #[must_use]
    pub fn log_json(&self) -> bool {
        self.settings.log_json
    }

    /// Runs the chosen subcommand.
    ///
    /// # Errors
    /// Fails with a message for the operator when the command cannot complete.
    pub async fn run(self) -> anyhow::Result<()> {
        let settings = self.settings.settings()?;
        match self.command.unwrap_or(Command::Serve) {
            Command::Sandbox { webhook_url, api_key, webhook_secret, delivery_attempts } => {
                let db = open_db(&settings).await?;
                let public_url =
                    settings.public_url.clone().unwrap_or_else(|| format!("http://{}", settings.listen));
                let config = SandboxConfig {
                    db,
                    api_key,
                    webhook_secret: webhook_secret.into_bytes(),
                    webhook_url,
                    public_url: format!("{public_url}/sandbox"),
                    fees: settings.sandbox_fees.clone(),
                    dispute_delay: settings.sandbox_dispute_delay,
                    delivery_attempts_max: delivery_attempts,
                };
                println!("Coinslot sandbox payment provider listening on {public_url}/sandbox");
                run_sandbox(config, settings.listen, settings.worker_tick, shutdown_signal()).await
            }
            Command::Serve => serve(settings).await,
            Command::DemoData { players, days, seed } => {
                let plan = crate::ops::demo_data::Plan { players, days, seed };
                let settings = crate::ops::demo_data::store_settings(settings, &plan)?;
                let database_url = settings.database_url.clone();
                let application = Application::build(settings).await.context("starting the store")?;
                let base = format!("http://127.0.0.1:{}", application.port());
                let key =
                    crate::ops::demo_data::operator_key(&database_url, application.first_operator_key())
                        .await?;
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let server = tokio::spawn(application.run_until_stopped(async {
                    let _ = stopped.await;
                }));
                let played = crate::ops::demo_data::play_against(&base, &key, plan, |done, total| {
                    let filled = usize::try_from(done * 30 / total.max(1)).unwrap_or(30);
                    eprint!(
                        "\r  [{}{}] day {done}/{total}",
                        "#".repeat(filled),
                        " ".repeat(30 - filled.min(30))
                    );
                    if done == total {
                        eprintln!();
                    }
                })
                .await;
                let _ = stop.send(());
                server.await.context("the store's task")??;
                let summary = played?;
                println!(
                    "demo data: {} sessions, {} purchases, {} card orders, {} refunds",
                    summary.sessions, summary.purchases, summary.orders, summary.refunds
                );
                Ok(())
            }
            Command::Migrate => {
                open_db(&settings).await?.close().await;
                eprintln!("migrations applied");
                Ok(())
            }
            Command::Admin(AdminCommand::CreateKey { scopes, name }) => {
                let db = open_db(&settings).await?;
                let mut tx = db.begin_write().await?;
                let (key, _) = create_api_key(&mut tx, &name, &scopes).await?;
                tx.commit().await?;
                db.close().await;
                println!("{key}");
                Ok(())
            }
            Command::Admin(AdminCommand::RotateReceiptKey) => {
                let db = open_db(&settings).await?;
                let mut tx = db.begin_write().await?;
                let key_id = rotate_receipt_key(&mut tx).await?;
                tx.commit().await?;
                db.close().await;
                println!("{key_id}");
                Ok(())
            }
            Command::Generate { players, entries_per_player } => {
                let db = open_db(&settings).await?;
                let started = std::time::Instant::now();
                let plan = crate::ops::generate::Plan { players, entries_per_player };
                let generated = crate::ops::generate::generate(&db, plan, |done, total| {
                    eprint!("\r  {done}/{total} players");
                    if done == total {
                        eprintln!();
                    }
                })
                .await?;
                db.close().await;
                println!(
                    "generated {} players, {} entries ({} purchases) in {:.1} s",
                    generated.players,
                    generated.entries,
                    generated.purchases,
                    started.elapsed().as_secs_f64()
                );
                Ok(())
            }
            Command::Audit => {
                let db = open_db(&settings).await?;
                let report = audit(&db).await?;
                db.close().await;
                print!("{report}");
                if report.is_clean() { Ok(()) } else { anyhow::bail!("the audit found broken invariants") }
            }
            Command::Catalog(CatalogCommand::Import { file, publish: also_publish }) => {
                let catalog = read_catalog_file(&file)?;
                let db = open_db(&settings).await?;
                // Mark the database initialized so a later first `serve` does not seed the
                // default catalog over the imported one.
                prepare(&db, &settings.assets_dir, Seed::Nothing, &CatalogRules::from_settings(&settings))
                    .await?;
                let mut tx = db.begin_write().await?;
                lock_catalog(&mut tx).await?;
                import_catalog(&mut tx, &catalog, &CatalogRules::from_settings(&settings))
                    .await
                    .map_err(|error| anyhow::anyhow!("{error}"))?;
                let published = if also_publish {
                    match publish(&mut tx, Some("cli"), &CatalogRules::from_settings(&settings)).await {
                        Ok(version) => format!("; published version {}", version.version),
                        // Importing the file that is already live is a normal deploy step.
                        Err(error) if error.code() == store_api::ErrorCode::NothingToPublish => {
                            "; it equals the live version, so nothing was published".to_owned()
                        }
                        Err(error) => anyhow::bail!("{error}"),
                    }
                } else {
                    String::new()
                };
                tx.commit().await?;
                db.close().await;
                eprintln!(
                    "imported {} currencies, {} items and {} offers into the draft{published}",
                    catalog.currencies.len(),
                    catalog.items.len(),
                    catalog.offers.len(),
                );
                Ok(())
            }
            Command::Catalog(CatalogCommand::Export { output }) => {
                let db = open_db(&settings).await?;
                let mut conn = db.pool().acquire().await?;
                let catalog = export_catalog(&mut conn).await.map_err(|error| anyhow::anyhow!("{error}"))?;
                drop(conn);
                db.close().await;
                let mut json = serde_json::to_string_pretty(&catalog)?;
                json.push('\n');
                match output {
                    Some(path) => {
                        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?
                    }
                    None => std::io::stdout().write_all(json.as_bytes())?,
                }
                Ok(())
            }
        }
    }
}

async fn open_db(settings: &Settings) -> anyhow::Result<Db> {
    let db = Db::connect(&settings.database_url, settings.db_connections_max, settings.db_timeout)
        .await
        .with_context(|| format!("cannot open the database at {}", settings.database_url))?;
    db.migrate().await.context("cannot migrate the database")?;
    crate::players::auth::hash_stored_device_ids(&db).await.context("cannot hash stored device ids")?;
    Ok(db)
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let test_mode = settings.in_test_mode();
    let application = Application::build(settings).await?;
    let url = application.public_url();
    tracing::info!(%url, "Coinslot store server listening");
    if test_mode {
        println!("{}", crate::settings::TEST_MODE_NOTICE);
    }
    println!("Coinslot store server listening on {url}");
    if let Some(key) = application.first_operator_key() {
        println!();
        println!("First start: created an operator API key with every scope. It is shown only this once:");
        println!();
        println!("    {key}");
        println!();
        println!("Use it as `Authorization: Bearer <key>` on {url}/admin/v1/…");
    }
    application.run_until_stopped(shutdown_signal()).await
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
