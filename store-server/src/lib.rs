//! Coinslot's store server: an axum service over SQLite or PostgreSQL that sells virtual items
//! for game currency and real money.
//!
//! Start here: [`app::Application`] builds and serves; [`http`] holds the routes, one module per
//! resource; [`catalog`] holds the catalog's rules and storage; [`auth`] the credentials;
//! [`db`] the pool and migrations; [`cli`] the command line `main` runs.

pub mod analytics;
pub mod app;
pub mod audit;
pub mod auth;
pub mod bulk;
pub mod catalog;
pub mod cli;
pub mod db;
pub mod demo_data;
pub mod error;
pub mod events;
pub mod extract;
pub mod fees;
pub mod group_commit;
pub mod http;
pub mod idempotency;
pub mod install;
pub mod ledger;
pub mod operations;
pub mod orders;
pub mod payments;
pub mod pricing;
pub mod privacy;
pub mod rate_limit;
pub mod receipts;
pub mod reconcile;
pub mod revenue_share;
pub mod rewards;
pub mod sandbox;
pub mod scale;
pub mod settings;
pub mod tabs;
pub mod tls;

pub use app::Application;
pub use settings::Settings;
