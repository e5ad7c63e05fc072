//! The catalog's rules and storage: currencies, the draft, publishing immutable versions, the
//! diff, and the cached live catalog players read.
//!
//! This file holds the rules that depend on settings and the catalog lock; the rest is split by
//! what it owns: [`currencies`], [`validation`], [`draft`] (and publishing) and [`live`] (the
//! cached catalog players read).
//!
//! Every write runs in a transaction that first takes the catalog lock ([`lock_catalog`]), so
//! checks and writes see one consistent draft even with several server instances.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use axum::http::StatusCode;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use store_api::ErrorCode;
use store_api::catalog::{
    Catalog, CatalogDiff, CatalogFile, CatalogVersion, DiffKeys, Item, Offer, OfferId, Price, Settlement, Sku,
};
use store_api::currency::{Currency, CurrencyCode, CurrencyKind, Name};
use store_api::limits::{CATALOG_ITEMS_MAX, CATALOG_OFFERS_MAX, CURRENCIES_MAX, ORDER_AMOUNT_UNITS_MAX};
use tokio::sync::RwLock;
use uuid::Uuid;

use crate::db::{from_micros, now_micros};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Page, etag_of};

pub mod currencies;
pub mod draft;
pub mod equivalents;
pub mod live;
pub mod validation;

pub use currencies::*;
pub use draft::*;
pub use live::*;
pub use validation::*;

/// The rules a catalog is validated against that depend on settings: the payment provider's
/// fees and the least an immediate-settlement price must net after them.
#[derive(Debug, Clone)]
pub struct CatalogRules {
    /// The provider's fee schedule.
    pub fees: crate::payments::fees::FeeSchedule,
    /// The least net of an immediate price, as a percentage of the currency's minimum card
    /// charge (50: USD 0.25).
    pub net_floor_percent: u32,
}

impl Default for CatalogRules {
    fn default() -> Self {
        Self { fees: crate::payments::fees::FeeSchedule::default(), net_floor_percent: 50 }
    }
}

impl CatalogRules {
    /// The rules of these settings.
    #[must_use]
    pub fn from_settings(settings: &crate::settings::Settings) -> Self {
        Self { fees: settings.sandbox_fees.clone(), net_floor_percent: settings.net_floor_percent }
    }

    /// The least net of an immediate price in `currency`.
    #[must_use]
    pub fn net_floor(&self, currency: store_api::MoneyCurrency) -> store_api::Money {
        let amount =
            currency.minimum_charge().amount * Decimal::from(self.net_floor_percent) / Decimal::ONE_HUNDRED;
        store_api::Money { currency, amount }
    }

    /// What a price nets after the provider's fee.
    #[must_use]
    pub fn net(&self, price: store_api::Money) -> Decimal {
        price.amount - self.fees.fee(price).amount
    }

    /// The smallest whole-minor-unit price at or above the minimum charge whose net reaches the
    /// floor (searched upwards, one minor unit at a time, within the order limit).
    #[must_use]
    pub fn smallest_viable_price(&self, currency: store_api::MoneyCurrency) -> Option<store_api::Money> {
        let step = Decimal::new(1, currency.minor_units());
        let floor = self.net_floor(currency).amount;
        let mut price = store_api::Money { currency, amount: currency.minimum_charge().amount };
        let limit = Decimal::from(ORDER_AMOUNT_UNITS_MAX);
        while price.amount <= limit {
            if self.net(price) >= floor {
                return Some(store_api::Money { currency, amount: price.amount.normalize() });
            }
            price.amount += step;
        }
        None
    }
}

/// What a published version stores: its items and offers, sorted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CatalogSnapshot {
    /// Items sorted by sku.
    pub items: Vec<Item>,
    /// Offers sorted by id.
    pub offers: Vec<Offer>,
}

/// Serializes a value the one way it is stored and hashed.
fn canonical<T: Serialize>(value: &T) -> ApiResult<String> {
    serde_json::to_string(value).map_err(|error| ApiError::Internal(error.into()))
}

fn parse_stored<T: serde::de::DeserializeOwned>(what: &str, body: &str) -> ApiResult<T> {
    serde_json::from_str(body)
        .map_err(|error| ApiError::Internal(anyhow::anyhow!("stored {what} is unreadable: {error}")))
}

/// Serializes catalog writers: a row lock on PostgreSQL; SQLite's `BEGIN IMMEDIATE` already has
/// the database's write lock.
///
/// # Errors
/// Fails when the database does.
pub async fn lock_catalog(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    sqlx::query("update meta set value = value where key = 'catalog_lock'").execute(&mut *conn).await?;
    Ok(())
}

/// Marks the live catalog (currencies or published version) as changed, so caches rebuild.
///
/// # Errors
/// Fails when the database does.
pub async fn touch_live_catalog(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    sqlx::query("update meta set value = $1 where key = 'catalog_stamp'")
        .bind(Uuid::now_v7().to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Appends one operator action to the audit log.
///
/// # Errors
/// Fails when the database does.
pub async fn append_audit(
    conn: &mut AnyConnection,
    actor: &str,
    action: &str,
    target: &str,
    before: Option<&str>,
    after: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into audit_log (id, actor, action, target, before_value, after_value, created_at) \
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(actor)
    .bind(action)
    .bind(target)
    .bind(before)
    .bind(after)
    .bind(now_micros())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::CatalogRules;
    use store_api::MoneyCurrency;

    #[test]
    fn the_smallest_viable_price_nets_the_floor_and_one_cent_less_does_not() {
        let rules = CatalogRules::default();
        let usd = MoneyCurrency::parse("USD").unwrap();
        let smallest = rules.smallest_viable_price(usd).unwrap();
        assert_eq!(smallest.amount.to_string(), "0.57");
        assert!(rules.net(smallest) >= rules.net_floor(usd).amount);
        let cheaper =
            store_api::Money { currency: usd, amount: smallest.amount - rust_decimal::Decimal::new(1, 2) };
        assert!(rules.net(cheaper) < rules.net_floor(usd).amount);
    }
}
