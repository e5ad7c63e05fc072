//! Running an installation: what an operator does from the command line.
//!
//! Owns the first start ([`install`]: migrations, the seeded catalog, the first operator key),
//! the demo data that fills a database through the real write paths ([`demo_data`]), the scale
//! generator that fills one through the ledger's bulk path ([`generate`]) and TLS
//! ([`tls`]).
//!
//! Uses the domains and the ledger like any caller (demo data plays against a store `cli.rs`
//! starts, over HTTP); nothing else depends on it.

pub mod demo_data;
pub mod generate;
pub mod install;
pub mod tls;
