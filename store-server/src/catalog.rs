//! The catalog's rules and storage: currencies, the draft, publishing immutable versions, the
//! diff, and the cached live catalog players read.
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

/// The rules a catalog is validated against that depend on settings: the payment provider's
/// fees and the least an immediate-settlement price must net after them.
#[derive(Debug, Clone)]
pub struct CatalogRules {
    /// The provider's fee schedule.
    pub fees: crate::fees::FeeSchedule,
    /// The least net of an immediate price, as a percentage of the currency's minimum card
    /// charge (50: USD 0.25).
    pub net_floor_percent: u32,
}

impl Default for CatalogRules {
    fn default() -> Self {
        Self { fees: crate::fees::FeeSchedule::default(), net_floor_percent: 50 }
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

// ---------------------------------------------------------------------------------------------
// Currencies

type CurrencyRow = (String, String, String, i64, i64);

fn currency_from_row((code, name, kind, initial_grant, balance_max): CurrencyRow) -> ApiResult<Currency> {
    let corrupt = |error: String| ApiError::Internal(anyhow::anyhow!("stored currency `{code}`: {error}"));
    Ok(Currency {
        code: CurrencyCode::parse(&code).map_err(corrupt)?,
        name: Name::parse(&name).map_err(corrupt)?,
        kind: CurrencyKind::parse(&kind).map_err(corrupt)?,
        initial_grant,
        balance_max,
    })
}

/// Every currency, sorted by code.
///
/// # Errors
/// Fails when the database does.
pub async fn list_currencies(conn: &mut AnyConnection) -> ApiResult<Vec<Currency>> {
    let rows: Vec<CurrencyRow> =
        sqlx::query_as("select code, name, kind, initial_grant, balance_max from currency order by code")
            .fetch_all(&mut *conn)
            .await?;
    rows.into_iter().map(currency_from_row).collect()
}

/// One currency.
///
/// # Errors
/// Fails when the database does.
pub async fn find_currency(conn: &mut AnyConnection, code: &CurrencyCode) -> ApiResult<Option<Currency>> {
    let row: Option<CurrencyRow> =
        sqlx::query_as("select code, name, kind, initial_grant, balance_max from currency where code = $1")
            .bind(code.as_str())
            .fetch_optional(&mut *conn)
            .await?;
    row.map(currency_from_row).transpose()
}

/// The `ETag` of a currency.
///
/// # Errors
/// Fails only if serialization does.
pub fn currency_etag(currency: &Currency) -> ApiResult<String> {
    Ok(etag_of(canonical(currency)?.as_bytes()))
}

/// Creates a currency.
///
/// # Errors
/// `already_exists` for a taken code, `limit_exceeded` past 64 currencies.
pub async fn create_currency(conn: &mut AnyConnection, currency: &Currency) -> ApiResult<()> {
    let count: i64 = sqlx::query_scalar("select count(*) from currency").fetch_one(&mut *conn).await?;
    if usize::try_from(count).unwrap_or(usize::MAX) >= CURRENCIES_MAX {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::LimitExceeded,
            format!("an installation has at most {CURRENCIES_MAX} currencies"),
        ));
    }
    let now = now_micros();
    let inserted = sqlx::query(
        "insert into currency (code, name, kind, initial_grant, balance_max, created_at, updated_at) \
         values ($1, $2, $3, $4, $5, $6, $6) on conflict (code) do nothing",
    )
    .bind(currency.code.as_str())
    .bind(currency.name.as_str())
    .bind(currency.kind.as_str())
    .bind(currency.initial_grant)
    .bind(currency.balance_max)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AlreadyExists,
            format!("currency `{}` already exists", currency.code),
        )
        .with_detail("field", "code"));
    }
    touch_live_catalog(conn).await?;
    Ok(())
}

/// Replaces a currency's fields.
///
/// # Errors
/// Fails when the database does.
pub async fn update_currency(conn: &mut AnyConnection, currency: &Currency) -> ApiResult<()> {
    // Guarded in the statement: a maximum below a balance some wallet holds would make that
    // wallet invalid (and the audit would report it).
    let updated = sqlx::query(
        "update currency set name = $2, kind = $3, initial_grant = $4, balance_max = $5, updated_at = $6 \
         where code = $1 and $5 >= coalesce((select max(balance) from account where kind = 'wallet' and currency = $1), 0)",
    )
    .bind(currency.code.as_str())
    .bind(currency.name.as_str())
    .bind(currency.kind.as_str())
    .bind(currency.initial_grant)
    .bind(currency.balance_max)
    .bind(now_micros())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated != 1 {
        let held: Option<i64> =
            sqlx::query_scalar("select max(balance) from account where kind = 'wallet' and currency = $1")
                .bind(currency.code.as_str())
                .fetch_one(&mut *conn)
                .await?;
        return Err(ApiError::validation(
            "balance_max",
            format!(
                "a wallet holds {} {}; balance_max cannot be lower than a balance that exists",
                held.unwrap_or(0),
                currency.code
            ),
        ));
    }
    touch_live_catalog(conn).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Validation: the rules that involve more than one object.

/// Checks one item's references: granted currencies exist, granted items exist, and no chain of
/// grants leads back to the item (a bundle that contains itself).
///
/// `grant_edges` maps each other item's sku to the skus it grants.
fn check_item_references(
    item: &Item,
    field: &str,
    balance_maxima: &HashMap<String, i64>,
    item_exists: impl Fn(&str) -> bool,
    grant_edges: &HashMap<String, Vec<String>>,
) -> ApiResult<()> {
    for (index, grant) in item.grants.currencies.iter().enumerate() {
        let Some(&balance_max) = balance_maxima.get(grant.currency.as_str()) else {
            return Err(ApiError::validation(
                &format!("{field}grants.currencies[{index}].currency"),
                format!("currency `{}` does not exist", grant.currency),
            ));
        };
        // Bounded, so no grant times a quantity can overflow, and no grant is one no wallet holds.
        if grant.amount > balance_max {
            return Err(ApiError::validation(
                &format!("{field}grants.currencies[{index}].amount"),
                format!(
                    "a grant of {} {} is more than a wallet can hold (balance_max {balance_max})",
                    grant.amount, grant.currency
                ),
            ));
        }
    }
    for (index, grant) in item.grants.items.iter().enumerate() {
        let granted = grant.sku.as_str();
        if granted == item.sku.as_str() {
            return Err(ApiError::validation(
                &format!("{field}grants.items[{index}].sku"),
                format!("item `{}` cannot grant itself", item.sku),
            ));
        }
        if !item_exists(granted) {
            return Err(ApiError::validation(
                &format!("{field}grants.items[{index}].sku"),
                format!("item `{granted}` does not exist"),
            ));
        }
    }
    // Walk the grant graph from this item's grants; reaching the item again is a cycle.
    let mut stack: Vec<&str> = item.grants.items.iter().map(|grant| grant.sku.as_str()).collect();
    let mut seen: HashSet<&str> = HashSet::new();
    while let Some(sku) = stack.pop() {
        if sku == item.sku.as_str() {
            return Err(ApiError::validation(
                &format!("{field}grants.items"),
                format!("item `{}` would contain itself through its grants", item.sku),
            ));
        }
        if seen.insert(sku) {
            stack.extend(grant_edges.get(sku).into_iter().flatten().map(String::as_str));
        }
    }
    Ok(())
}

/// Checks one offer against the currencies and items it names and the order limits.
fn check_offer_references(
    offer: &Offer,
    field: &str,
    rules: &CatalogRules,
    currencies: &HashMap<String, Currency>,
    item_exists: impl Fn(&str) -> bool,
) -> ApiResult<()> {
    if !item_exists(offer.sku.as_str()) {
        return Err(ApiError::validation(
            &format!("{field}sku"),
            format!("item `{}` does not exist", offer.sku),
        ));
    }
    let mut lists: Vec<(String, &Vec<Price>)> = vec![(format!("{field}prices"), &offer.prices)];
    lists.extend(
        offer
            .regional_prices
            .iter()
            .map(|(country, prices)| (format!("{field}regional_prices.{country}"), prices)),
    );
    lists.extend(
        offer
            .variants
            .iter()
            .enumerate()
            .map(|(index, variant)| (format!("{field}variants[{index}].prices"), &variant.prices)),
    );
    for (list_field, prices) in lists {
        check_prices(&list_field, prices, rules, currencies)?;
    }
    Ok(())
}

/// Checks one list of an offer's prices against the currencies, the order limits, the minimum
/// charge and the fee floor.
fn check_prices(
    list_field: &str,
    prices: &[Price],
    rules: &CatalogRules,
    currencies: &HashMap<String, Currency>,
) -> ApiResult<()> {
    for (index, price) in prices.iter().enumerate() {
        let at = format!("{list_field}[{index}]");
        match price {
            Price::Virtual { currency, amount } => {
                let Some(known) = currencies.get(currency.as_str()) else {
                    return Err(ApiError::validation(
                        &format!("{at}.currency"),
                        format!("currency `{currency}` does not exist"),
                    ));
                };
                if *amount > known.balance_max {
                    return Err(ApiError::validation(
                        &format!("{at}.amount"),
                        format!(
                            "price {amount} is more than a wallet of `{currency}` can hold ({})",
                            known.balance_max
                        ),
                    ));
                }
            }
            Price::Real { money, settlement } => {
                let field = format!("{at}.money.amount");
                if money.amount > Decimal::from(ORDER_AMOUNT_UNITS_MAX) {
                    return Err(ApiError::validation(
                        &field,
                        format!("a real price is at most {ORDER_AMOUNT_UNITS_MAX} {}", money.currency),
                    ));
                }
                if *settlement == Settlement::Immediate {
                    if !money.is_whole_minor_units() {
                        return Err(ApiError::validation(
                            &field,
                            format!(
                                "{money} has more precision than {} allows ({} decimal places); \
                                 finer prices must settle on a tab",
                                money.currency,
                                money.currency.minor_units()
                            ),
                        ));
                    }
                    let minimum = money.currency.minimum_charge();
                    if money.amount < minimum.amount {
                        return Err(ApiError::validation(
                            &field,
                            format!("{money} is below the minimum card charge of {minimum}; use settlement \"tab\""),
                        )
                        .with_detail("minimum", minimum.amount.normalize().to_string()));
                    }
                    let floor = rules.net_floor(money.currency);
                    if rules.net(*money) < floor.amount {
                        let mut error = ApiError::validation(
                            &field,
                            format!(
                                "{money} nets {} {} after the provider's fee, below the floor of {floor}; raise the price or use settlement \"tab\"",
                                rules.net(*money).normalize(),
                                money.currency
                            ),
                        )
                        .with_detail("net_floor", floor.amount.normalize().to_string());
                        if let Some(smallest) = rules.smallest_viable_price(money.currency) {
                            error = error.with_detail("smallest_price", smallest.amount.to_string());
                        }
                        return Err(error);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Checks a whole catalog: limits, unique keys and every reference. Used on publish and import,
/// as the second line behind the per-object checks of draft edits.
///
/// # Errors
/// `validation_failed` naming the first field at fault (`items[3].grants.items[0].sku`).
pub fn validate_catalog(file: &CatalogFile, rules: &CatalogRules) -> ApiResult<()> {
    if file.currencies.len() > CURRENCIES_MAX {
        return Err(ApiError::validation("currencies", format!("at most {CURRENCIES_MAX} currencies")));
    }
    if file.items.len() > CATALOG_ITEMS_MAX {
        return Err(ApiError::validation("items", format!("at most {CATALOG_ITEMS_MAX} items")));
    }
    if file.offers.len() > CATALOG_OFFERS_MAX {
        return Err(ApiError::validation("offers", format!("at most {CATALOG_OFFERS_MAX} offers")));
    }
    let mut currencies = HashMap::new();
    for (index, currency) in file.currencies.iter().enumerate() {
        if currencies.insert(currency.code.as_str().to_owned(), currency.clone()).is_some() {
            return Err(ApiError::validation(
                &format!("currencies[{index}].code"),
                format!("currency `{}` appears twice", currency.code),
            ));
        }
    }
    let mut skus = HashSet::new();
    for (index, item) in file.items.iter().enumerate() {
        if !skus.insert(item.sku.as_str()) {
            return Err(ApiError::validation(
                &format!("items[{index}].sku"),
                format!("sku `{}` appears twice", item.sku),
            ));
        }
    }
    let edges = grant_edges_of(&file.items);
    let balance_maxima: HashMap<String, i64> =
        currencies.iter().map(|(code, currency)| (code.clone(), currency.balance_max)).collect();
    for (index, item) in file.items.iter().enumerate() {
        check_item_references(
            item,
            &format!("items[{index}]."),
            &balance_maxima,
            |sku| skus.contains(sku),
            &edges,
        )?;
    }
    let mut offer_ids = HashSet::new();
    for (index, offer) in file.offers.iter().enumerate() {
        if !offer_ids.insert(offer.id) {
            return Err(ApiError::validation(
                &format!("offers[{index}].id"),
                format!("offer `{}` appears twice", offer.id),
            ));
        }
        check_offer_references(offer, &format!("offers[{index}]."), rules, &currencies, |sku| {
            skus.contains(sku)
        })?;
    }
    Ok(())
}

fn grant_edges_of(items: &[Item]) -> HashMap<String, Vec<String>> {
    items
        .iter()
        .map(|item| {
            (
                item.sku.as_str().to_owned(),
                item.grants.items.iter().map(|grant| grant.sku.as_str().to_owned()).collect(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The draft

/// A stored draft object with its `ETag`.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    /// The object.
    pub value: T,
    /// Its `ETag`.
    pub etag: String,
}

/// A kind of object the draft holds: items (keyed by sku) and offers (keyed by id). What differs
/// between them (the table, the references to check) is here; reading, listing, writing and
/// deleting are the generic functions below.
pub trait DraftObject: Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static {
    /// The object's name in messages and the audit log (`item`, `offer`).
    const NAME: &'static str;
    /// The most a draft may hold.
    const COUNT_MAX: usize;
    /// `select body … where key = $1`.
    const SELECT_ONE: &'static str;
    /// `select body … where key > $1 order by key limit $2`.
    const SELECT_PAGE: &'static str;
    /// `select count(*) …`.
    const COUNT: &'static str;
    /// `delete … where key = $1`.
    const DELETE: &'static str;

    /// The key as text (sku or offer id).
    fn key(&self) -> String;

    /// Whether `text` could be a key (a malformed one names nothing, so it is `not_found`).
    fn is_key(text: &str) -> bool;

    /// Checks the references the object makes, against the draft and the currencies.
    fn check_references(
        &self,
        conn: &mut AnyConnection,
        rules: &CatalogRules,
    ) -> impl Future<Output = ApiResult<()>> + Send;

    /// Writes the object's row (and anything derived from it) with its canonical body.
    fn write(&self, conn: &mut AnyConnection, body: &str) -> impl Future<Output = ApiResult<()>> + Send;

    /// Checks that nothing else in the draft refers to the object with this key.
    fn check_unreferenced(conn: &mut AnyConnection, key: &str) -> impl Future<Output = ApiResult<()>> + Send;
}

/// One draft object.
///
/// # Errors
/// Fails when the database does.
pub async fn find_draft<T: DraftObject>(
    conn: &mut AnyConnection,
    key: &str,
) -> ApiResult<Option<Versioned<T>>> {
    let body: Option<String> = sqlx::query_scalar(T::SELECT_ONE).bind(key).fetch_optional(&mut *conn).await?;
    body.map(|body| Ok(Versioned { value: parse_stored(T::NAME, &body)?, etag: etag_of(body.as_bytes()) }))
        .transpose()
}

/// A page of draft objects, sorted by key.
///
/// # Errors
/// Fails when the database does.
pub async fn list_draft<T: DraftObject>(
    conn: &mut AnyConnection,
    page: &Page,
) -> ApiResult<(Vec<T>, Option<String>)> {
    let bodies: Vec<String> = sqlx::query_scalar(T::SELECT_PAGE)
        .bind(page.cursor.clone().unwrap_or_default())
        .bind(page.fetch_count())
        .fetch_all(&mut *conn)
        .await?;
    let objects = bodies.iter().map(|body| parse_stored(T::NAME, body)).collect::<ApiResult<Vec<T>>>()?;
    Ok(page.finish(objects, T::key))
}

/// Writes a draft object (creating or replacing it) after checking its references.
/// Returns the new `ETag`.
///
/// # Errors
/// `validation_failed` for a bad reference, `limit_exceeded` past the count limit.
pub async fn put_draft<T: DraftObject>(
    conn: &mut AnyConnection,
    object: &T,
    is_new: bool,
    rules: &CatalogRules,
) -> ApiResult<String> {
    if is_new {
        let count: i64 = sqlx::query_scalar(T::COUNT).fetch_one(&mut *conn).await?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= T::COUNT_MAX {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::LimitExceeded,
                format!("a catalog has at most {} {}s", T::COUNT_MAX, T::NAME),
            ));
        }
    }
    object.check_references(conn, rules).await?;
    let body = canonical(object)?;
    object.write(conn, &body).await?;
    Ok(etag_of(body.as_bytes()))
}

/// Deletes a draft object that nothing else refers to.
///
/// # Errors
/// `in_use` naming what still refers to it.
pub async fn delete_draft<T: DraftObject>(conn: &mut AnyConnection, key: &str) -> ApiResult<()> {
    T::check_unreferenced(conn, key).await?;
    sqlx::query(T::DELETE).bind(key).execute(&mut *conn).await?;
    Ok(())
}

async fn draft_item_exists(conn: &mut AnyConnection, sku: &str) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = sqlx::query_scalar("select 1 from draft_item where sku = $1")
        .bind(sku)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(found.is_some())
}

fn in_use(message: String, key: &str, value: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, ErrorCode::InUse, message).with_detail(key, value)
}

impl DraftObject for Item {
    const NAME: &'static str = "item";
    const COUNT_MAX: usize = CATALOG_ITEMS_MAX;
    const SELECT_ONE: &'static str = "select body from draft_item where sku = $1";
    const SELECT_PAGE: &'static str = "select body from draft_item where sku > $1 order by sku limit $2";
    const COUNT: &'static str = "select count(*) from draft_item";
    const DELETE: &'static str = "delete from draft_item where sku = $1";

    fn key(&self) -> String {
        self.sku.as_str().to_owned()
    }

    fn is_key(text: &str) -> bool {
        Sku::parse(text).is_ok()
    }

    async fn check_references(&self, conn: &mut AnyConnection, _rules: &CatalogRules) -> ApiResult<()> {
        let balance_maxima: HashMap<String, i64> = list_currencies(conn)
            .await?
            .into_iter()
            .map(|currency| (currency.code.as_str().to_owned(), currency.balance_max))
            .collect();
        let mut existing = HashSet::new();
        for grant in &self.grants.items {
            if draft_item_exists(conn, grant.sku.as_str()).await? {
                existing.insert(grant.sku.as_str().to_owned());
            }
        }
        let edge_rows: Vec<(String, String)> =
            sqlx::query_as("select sku, granted_sku from draft_item_grant").fetch_all(&mut *conn).await?;
        let mut edges: HashMap<String, Vec<String>> = HashMap::new();
        for (sku, granted) in edge_rows {
            edges.entry(sku).or_default().push(granted);
        }
        edges.remove(self.sku.as_str());
        check_item_references(self, "", &balance_maxima, |sku| existing.contains(sku), &edges)
    }

    async fn write(&self, conn: &mut AnyConnection, body: &str) -> ApiResult<()> {
        sqlx::query(
            "insert into draft_item (sku, body) values ($1, $2) on conflict (sku) do update set body = $2",
        )
        .bind(self.sku.as_str())
        .bind(body)
        .execute(&mut *conn)
        .await?;
        sqlx::query("delete from draft_item_grant where sku = $1")
            .bind(self.sku.as_str())
            .execute(&mut *conn)
            .await?;
        write_grant_edges(conn, self).await
    }

    async fn check_unreferenced(conn: &mut AnyConnection, sku: &str) -> ApiResult<()> {
        let offer: Option<String> = sqlx::query_scalar("select id from draft_offer where sku = $1 limit 1")
            .bind(sku)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(offer) = offer {
            return Err(in_use(format!("offer `{offer}` sells item `{sku}`"), "offer_id", offer));
        }
        let granting: Option<String> = sqlx::query_scalar(
            "select sku from draft_item_grant where granted_sku = $1 and sku <> $1 limit 1",
        )
        .bind(sku)
        .fetch_optional(&mut *conn)
        .await?;
        match granting {
            Some(granting) => Err(in_use(format!("item `{granting}` grants `{sku}`"), "sku", granting)),
            None => Ok(()),
        }
    }
}

/// Records which items an item grants, for reference checks without reading every document.
async fn write_grant_edges(conn: &mut AnyConnection, item: &Item) -> ApiResult<()> {
    let granted: BTreeSet<&str> = item.grants.items.iter().map(|grant| grant.sku.as_str()).collect();
    for granted_sku in granted {
        sqlx::query("insert into draft_item_grant (sku, granted_sku) values ($1, $2)")
            .bind(item.sku.as_str())
            .bind(granted_sku)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

impl DraftObject for Offer {
    const NAME: &'static str = "offer";
    const COUNT_MAX: usize = CATALOG_OFFERS_MAX;
    const SELECT_ONE: &'static str = "select body from draft_offer where id = $1";
    const SELECT_PAGE: &'static str = "select body from draft_offer where id > $1 order by id limit $2";
    const COUNT: &'static str = "select count(*) from draft_offer";
    const DELETE: &'static str = "delete from draft_offer where id = $1";

    fn key(&self) -> String {
        self.id.to_string()
    }

    fn is_key(text: &str) -> bool {
        OfferId::parse(text).is_ok()
    }

    async fn check_references(&self, conn: &mut AnyConnection, rules: &CatalogRules) -> ApiResult<()> {
        let currencies: HashMap<String, Currency> = list_currencies(conn)
            .await?
            .into_iter()
            .map(|currency| (currency.code.as_str().to_owned(), currency))
            .collect();
        let sku_exists = draft_item_exists(conn, self.sku.as_str()).await?;
        check_offer_references(self, "", rules, &currencies, |_| sku_exists)
    }

    async fn write(&self, conn: &mut AnyConnection, body: &str) -> ApiResult<()> {
        sqlx::query(
            "insert into draft_offer (id, sku, body) values ($1, $2, $3) \
             on conflict (id) do update set sku = $2, body = $3",
        )
        .bind(self.id.to_string())
        .bind(self.sku.as_str())
        .bind(body)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn check_unreferenced(_conn: &mut AnyConnection, _id: &str) -> ApiResult<()> {
        // Nothing in the draft refers to an offer.
        Ok(())
    }
}

/// The whole draft, sorted, as stored bodies keyed by sku and offer id.
async fn draft_bodies(
    conn: &mut AnyConnection,
) -> Result<(BTreeMap<String, String>, BTreeMap<String, String>), sqlx::Error> {
    let items: Vec<(String, String)> =
        sqlx::query_as("select sku, body from draft_item").fetch_all(&mut *conn).await?;
    let offers: Vec<(String, String)> =
        sqlx::query_as("select id, body from draft_offer").fetch_all(&mut *conn).await?;
    Ok((items.into_iter().collect(), offers.into_iter().collect()))
}

/// The draft as a snapshot.
///
/// # Errors
/// Fails when the database does.
pub async fn draft_snapshot(conn: &mut AnyConnection) -> ApiResult<CatalogSnapshot> {
    let (items, offers) = draft_bodies(conn).await?;
    Ok(CatalogSnapshot {
        items: items.values().map(|body| parse_stored("item", body)).collect::<ApiResult<_>>()?,
        offers: offers.values().map(|body| parse_stored("offer", body)).collect::<ApiResult<_>>()?,
    })
}

/// The newest published version and its snapshot, if any version exists.
///
/// # Errors
/// Fails when the database does.
pub async fn live_snapshot(conn: &mut AnyConnection) -> ApiResult<Option<(i64, CatalogSnapshot)>> {
    let row: Option<(i64, String)> =
        sqlx::query_as("select version, body from catalog_version order by version desc limit 1")
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|(version, body)| Ok((version, parse_stored("catalog version", &body)?))).transpose()
}

/// A published version's items and offers.
///
/// # Errors
/// Fails when the database does.
pub async fn version_snapshot(conn: &mut AnyConnection, version: i64) -> ApiResult<Option<CatalogSnapshot>> {
    let body: Option<String> = sqlx::query_scalar("select body from catalog_version where version = $1")
        .bind(version)
        .fetch_optional(&mut *conn)
        .await?;
    body.map(|body| parse_stored("catalog version", &body)).transpose()
}

/// What publishing would change.
///
/// # Errors
/// Fails when the database does.
pub async fn diff_draft(conn: &mut AnyConnection) -> ApiResult<CatalogDiff> {
    let (draft_items, draft_offers) = draft_bodies(conn).await?;
    let (base_version, live) = live_snapshot(conn).await?.unwrap_or_default();
    let live_items: BTreeMap<String, String> = live
        .items
        .iter()
        .map(|item| Ok((item.sku.as_str().to_owned(), canonical(item)?)))
        .collect::<ApiResult<_>>()?;
    let live_offers: BTreeMap<String, String> = live
        .offers
        .iter()
        .map(|offer| Ok((offer.id.to_string(), canonical(offer)?)))
        .collect::<ApiResult<_>>()?;
    Ok(CatalogDiff {
        base_version,
        items: diff_keys(&draft_items, &live_items),
        offers: diff_keys(&draft_offers, &live_offers),
    })
}

fn diff_keys(draft: &BTreeMap<String, String>, live: &BTreeMap<String, String>) -> DiffKeys {
    DiffKeys {
        added: draft.keys().filter(|key| !live.contains_key(*key)).cloned().collect(),
        removed: live.keys().filter(|key| !draft.contains_key(*key)).cloned().collect(),
        changed: draft
            .iter()
            .filter(|(key, body)| live.get(*key).is_some_and(|live_body| live_body != *body))
            .map(|(key, _)| key.clone())
            .collect(),
    }
}

/// Whether the diff changes anything.
#[must_use]
pub fn diff_has_changes(diff: &CatalogDiff) -> bool {
    diff.base_version == 0 || !diff.items.is_empty() || !diff.offers.is_empty()
}

/// Publishes the draft as the next immutable version after validating all of it.
///
/// # Errors
/// `validation_failed` when the draft breaks a rule; `nothing_to_publish` when it equals the
/// live version.
pub async fn publish(
    conn: &mut AnyConnection,
    published_by: Option<&str>,
    rules: &CatalogRules,
) -> ApiResult<CatalogVersion> {
    let diff = diff_draft(conn).await?;
    if !diff_has_changes(&diff) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::NothingToPublish,
            format!("the draft is the same as live version {}", diff.base_version),
        ));
    }
    let snapshot = draft_snapshot(conn).await?;
    let currencies = list_currencies(conn).await?;
    validate_catalog(
        &CatalogFile { currencies, items: snapshot.items.clone(), offers: snapshot.offers.clone() },
        rules,
    )?;
    let version = diff.base_version + 1;
    let published_at = now_micros();
    let item_count = i64::try_from(snapshot.items.len()).unwrap_or(i64::MAX);
    let offer_count = i64::try_from(snapshot.offers.len()).unwrap_or(i64::MAX);
    sqlx::query(
        "insert into catalog_version (version, body, item_count, offer_count, published_at, published_by) \
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(version)
    .bind(canonical(&snapshot)?)
    .bind(item_count)
    .bind(offer_count)
    .bind(published_at)
    .bind(published_by)
    .execute(&mut *conn)
    .await?;
    touch_live_catalog(conn).await?;
    Ok(CatalogVersion {
        version,
        published_at: from_micros(published_at),
        published_by: published_by.map(str::to_owned),
        item_count,
        offer_count,
    })
}

/// A page of published versions, newest first.
///
/// # Errors
/// Fails when the database does.
pub async fn list_versions(
    conn: &mut AnyConnection,
    page: &Page,
) -> ApiResult<(Vec<CatalogVersion>, Option<String>)> {
    let before = match &page.cursor {
        None => i64::MAX,
        Some(cursor) => {
            cursor.parse().map_err(|_| ApiError::invalid("cursor", "cursor is not from this list"))?
        }
    };
    let rows: Vec<(i64, i64, i64, i64, Option<String>)> = sqlx::query_as(
        "select version, item_count, offer_count, published_at, published_by from catalog_version \
         where version < $1 order by version desc limit $2",
    )
    .bind(before)
    .bind(page.fetch_count())
    .fetch_all(&mut *conn)
    .await?;
    let versions = rows
        .into_iter()
        .map(|(version, item_count, offer_count, published_at, published_by)| CatalogVersion {
            version,
            published_at: from_micros(published_at),
            published_by,
            item_count,
            offer_count,
        })
        .collect();
    Ok(page.finish(versions, |version| version.version.to_string()))
}

/// The editable catalog as a file: currencies and the draft.
///
/// # Errors
/// Fails when the database does.
pub async fn export_catalog(conn: &mut AnyConnection) -> ApiResult<CatalogFile> {
    let snapshot = draft_snapshot(conn).await?;
    Ok(CatalogFile {
        currencies: list_currencies(conn).await?,
        items: snapshot.items,
        offers: snapshot.offers,
    })
}

/// Replaces the draft with a file's items and offers and creates or updates its currencies,
/// after validating the whole file. Currencies not in the file are kept (wallets may hold them).
///
/// # Errors
/// `validation_failed` naming the first field at fault; nothing is written then.
pub async fn import_catalog(
    conn: &mut AnyConnection,
    file: &CatalogFile,
    rules: &CatalogRules,
) -> ApiResult<()> {
    let mut codes = HashSet::new();
    for (index, currency) in file.currencies.iter().enumerate() {
        if !codes.insert(currency.code.as_str()) {
            return Err(ApiError::validation(
                &format!("currencies[{index}].code"),
                format!("currency `{}` appears twice", currency.code),
            ));
        }
    }
    let mut currencies: BTreeMap<String, Currency> = list_currencies(conn)
        .await?
        .into_iter()
        .map(|currency| (currency.code.as_str().to_owned(), currency))
        .collect();
    for currency in &file.currencies {
        currencies.insert(currency.code.as_str().to_owned(), currency.clone());
    }
    let merged = CatalogFile { currencies: currencies.into_values().collect(), ..file.clone() };
    validate_catalog(&merged, rules)?;
    for currency in &file.currencies {
        match find_currency(conn, &currency.code).await? {
            Some(existing) if existing == *currency => {}
            Some(_) => update_currency(conn, currency).await?,
            None => create_currency(conn, currency).await?,
        }
    }
    sqlx::query("delete from draft_offer").execute(&mut *conn).await?;
    sqlx::query("delete from draft_item_grant").execute(&mut *conn).await?;
    sqlx::query("delete from draft_item").execute(&mut *conn).await?;
    // Items first without their item grants, then the grants, so order in the file is free.
    for item in &file.items {
        sqlx::query("insert into draft_item (sku, body) values ($1, $2)")
            .bind(item.sku.as_str())
            .bind(canonical(item)?)
            .execute(&mut *conn)
            .await?;
    }
    for item in &file.items {
        write_grant_edges(conn, item).await?;
    }
    for offer in &file.offers {
        sqlx::query("insert into draft_offer (id, sku, body) values ($1, $2, $3)")
            .bind(offer.id.to_string())
            .bind(offer.sku.as_str())
            .bind(canonical(offer)?)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The live catalog players read, cached by the stamp that every live change moves.

/// The live catalog, parsed for purchases and rendered for players.
#[derive(Debug)]
pub struct RenderedCatalog {
    stamp: String,
    /// The `ETag` players send back in `If-None-Match`.
    pub etag: String,
    /// The JSON body.
    pub body: axum::body::Bytes,
    /// The published version (0 before any).
    pub version: i64,
    offers: HashMap<OfferId, Offer>,
    items: HashMap<Sku, Item>,
    currencies: HashMap<CurrencyCode, Currency>,
    /// The offers whose prices differ between players, in id order.
    varying: Vec<OfferId>,
    /// Personalized renderings by what makes them differ (each varying offer's prices), so a
    /// player's catalog is serialized once per distinct view, not once per request.
    personalized: std::sync::Mutex<HashMap<String, (String, axum::body::Bytes)>>,
}

/// Personalized renderings kept per live catalog at most; past that, views are rendered each time.
const PERSONALIZED_MAX: usize = 1_024;

impl RenderedCatalog {
    /// A live offer.
    #[must_use]
    pub fn offer(&self, id: OfferId) -> Option<&Offer> {
        self.offers.get(&id)
    }

    /// A live item.
    #[must_use]
    pub fn item(&self, sku: &Sku) -> Option<&Item> {
        self.items.get(sku)
    }

    /// A currency.
    #[must_use]
    pub fn currency(&self, code: &CurrencyCode) -> Option<&Currency> {
        self.currencies.get(code)
    }

    /// Whether some offer's prices differ between players (regional prices, experiments).
    #[must_use]
    pub fn varies(&self) -> bool {
        !self.varying.is_empty()
    }

    /// The catalog as `buyer` sees it (their prices only), rendered, with its `ETag`.
    ///
    /// # Errors
    /// Fails only if serialization does.
    pub fn render_for(&self, buyer: &crate::pricing::Buyer) -> ApiResult<(String, axum::body::Bytes)> {
        // What this buyer's view depends on: each varying offer's prices (a region or a variant).
        let view: String = self
            .varying
            .iter()
            .filter_map(|id| self.offers.get(id))
            .map(|offer| {
                let regional =
                    buyer.country.as_ref().filter(|country| offer.regional_prices.contains_key(*country));
                match (regional, crate::pricing::effective_prices(offer, buyer).1) {
                    (Some(country), _) => format!("r:{country:?};"),
                    (None, Some(variant)) => format!("v:{variant};"),
                    (None, None) => "-;".to_owned(),
                }
            })
            .collect();
        let cached = self.personalized.lock().ok().and_then(|views| views.get(&view).cloned());
        if let Some(rendered) = cached {
            return Ok(rendered);
        }
        let rendered = self.render_uncached(buyer)?;
        if let Ok(mut views) = self.personalized.lock()
            && views.len() < PERSONALIZED_MAX
        {
            views.insert(view, rendered.clone());
        }
        Ok(rendered)
    }

    fn render_uncached(&self, buyer: &crate::pricing::Buyer) -> ApiResult<(String, axum::body::Bytes)> {
        let snapshot = self.snapshot();
        let mut currencies: Vec<Currency> = self.currencies.values().cloned().collect();
        currencies.sort_by(|a, b| a.code.cmp(&b.code));
        let catalog = Catalog {
            version: self.version,
            currencies,
            items: snapshot.items,
            offers: snapshot.offers.iter().map(|offer| crate::pricing::personalize(offer, buyer)).collect(),
        };
        let body = canonical(&catalog)?;
        Ok((etag_of(body.as_bytes()), body.into()))
    }

    /// The live items and offers, sorted.
    #[must_use]
    pub fn snapshot(&self) -> CatalogSnapshot {
        let mut items: Vec<Item> = self.items.values().cloned().collect();
        items.sort_by(|a, b| a.sku.cmp(&b.sku));
        let mut offers: Vec<Offer> = self.offers.values().cloned().collect();
        offers.sort_by_key(|offer| offer.id);
        CatalogSnapshot { items, offers }
    }

    /// Every currency.
    pub fn currencies(&self) -> impl Iterator<Item = &Currency> {
        self.currencies.values()
    }

    /// The most a wallet may hold, per currency code.
    #[must_use]
    pub fn balance_maxima(&self) -> BTreeMap<String, i64> {
        self.currencies
            .values()
            .map(|currency| (currency.code.as_str().to_owned(), currency.balance_max))
            .collect()
    }
}

/// A read-through cache of the rendered live catalog. Each read checks the stored stamp (one
/// indexed row), so every instance serves a change as soon as it commits.
#[derive(Debug, Default)]
pub struct CatalogCache {
    current: RwLock<Option<Arc<RenderedCatalog>>>,
}

impl CatalogCache {
    /// The live catalog, rendered at most once per change.
    ///
    /// # Errors
    /// Fails when the database does.
    pub async fn get(&self, conn: &mut AnyConnection) -> ApiResult<Arc<RenderedCatalog>> {
        let stamp: String = sqlx::query_scalar("select value from meta where key = 'catalog_stamp'")
            .fetch_one(&mut *conn)
            .await?;
        if let Some(cached) = self.current.read().await.as_ref().filter(|cached| cached.stamp == stamp) {
            return Ok(Arc::clone(cached));
        }
        let (version, snapshot) = live_snapshot(conn).await?.unwrap_or_default();
        let catalog = Catalog {
            version,
            currencies: list_currencies(conn).await?,
            items: snapshot.items,
            offers: snapshot.offers,
        };
        let body = canonical(&catalog)?;
        let mut varying: Vec<OfferId> = catalog
            .offers
            .iter()
            .filter(|offer| crate::pricing::varies(offer))
            .map(|offer| offer.id)
            .collect();
        varying.sort_unstable();
        let rendered = Arc::new(RenderedCatalog {
            stamp,
            etag: etag_of(body.as_bytes()),
            body: body.into(),
            version: catalog.version,
            offers: catalog.offers.into_iter().map(|offer| (offer.id, offer)).collect(),
            varying,
            personalized: std::sync::Mutex::default(),
            items: catalog.items.into_iter().map(|item| (item.sku.clone(), item)).collect(),
            currencies: catalog
                .currencies
                .into_iter()
                .map(|currency| (currency.code.clone(), currency))
                .collect(),
        });
        *self.current.write().await = Some(Arc::clone(&rendered));
        Ok(rendered)
    }
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
