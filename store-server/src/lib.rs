//! Coinslot's store server: an axum service over SQLite or PostgreSQL that sells virtual items
//! for game currency and real money.
//!
//! The tree is the architecture; dependencies point one way, down this list:
//! - [`http`]: the routes, one module per resource, and nothing else: each handler parses, asks
//!   a domain module, and answers. [`app`] builds the state and the router and serves
//!   ([`app::Application`]); [`cli`] is the command line `main` runs.
//! - the domains: [`store`] (the catalog, prices, purchases, rewards, grants, inventory),
//!   [`payments`] (real money: the provider trait and each provider, orders, refunds, disputes,
//!   reconciliation, fees, tabs, creators' shares), [`players`] (credentials, sessions, rate
//!   limits, privacy), [`analytics`] (sales reports) and [`ops`] (install, demo data,
//!   `generate`, TLS);
//! - [`ledger`]: accounts, entries, the batch writer, idempotency, the bulk path, the audit,
//!   receipts and the event outbox;
//! - the ground every layer stands on: [`db`] (the pool and migrations), [`error`] (the one
//!   error type), [`extract`] (JSON bodies, queries, pages, `ETag`s) and [`settings`].
//!
//! Nothing below [`http`] imports [`app`]; nothing in [`ledger`] knows about providers, orders
//! or the catalog's rules.

pub mod analytics;
pub mod app;
pub mod cli;
pub mod db;
pub mod error;
pub mod extract;
pub mod http;
pub mod ledger;
pub mod ops;
pub mod payments;
pub mod players;
pub mod settings;
pub mod store;

pub use app::Application;
pub use settings::Settings;
