//! The double-entry ledger: accounts with stored balances, immutable entries whose postings sum
//! to zero per currency, each posting recording the balance after it, and the inventory changes
//! an entry makes.
//!
//! [`append_entry`] is the only way a balance or an item count changes. It asserts the entry is
//! balanced (only a bug can break that), then applies every change with a guarded `UPDATE` (the
//! database's half of "no wallet below zero, none above its maximum"); the callers check the
//! same rules in Rust first, so a guard failing means a race, and it is still refused.
//!
//! Lock order, so two transactions never deadlock: the player row ([`lock_player`]) first, then
//! accounts in id order (system accounts `s:…` sort before wallets `w:…`), then inventory rows.
//!
//! The folder owns everything that makes a write durable and exact whatever the business: the
//! batch writer ([`group_commit`]), idempotency keys and their stored answers ([`idempotency`]),
//! the bulk path ([`bulk`]), the audit of every invariant ([`audit`]), signed receipts
//! ([`receipts`]) and the players' event outbox ([`events`]). It uses only [`crate::db`],
//! [`crate::error`] and [`crate::extract`]: nothing here knows about providers, orders, the
//! catalog's rules or HTTP.

pub mod audit;
pub mod batch;
pub mod bulk;
pub mod events;
pub mod group_commit;
pub mod idempotency;
pub mod receipts;

use std::collections::BTreeMap;

use axum::http::StatusCode;
use sqlx::AnyConnection;
use store_api::ErrorCode;
use store_api::admin::AgeBand;
use store_api::catalog::Sku;
use store_api::currency::CurrencyCode;
use store_api::ledger::{Balance, BalanceChange, EntryKind, HistoryEntry, InventoryItem, ItemChange, Wallet};
use store_api::orders::{InventoryUpdated, WalletUpdated};
use uuid::Uuid;

use crate::db::{from_micros, now_micros};
use crate::error::{ApiError, ApiResult};
use crate::extract::Page;
use crate::ledger::events::EntryHeads;

pub mod reads;

pub use reads::*;

/// The kinds of system account, one per currency each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SystemAccount {
    /// Where currency comes from: its balance is minus everything ever granted.
    Issuance,
    /// What players paid for purchases.
    Revenue,
    /// Corrections.
    Adjustment,
    /// Real money in the payment provider's hands: gives the gross of each order.
    Clearing,
    /// Payment fees.
    Fees,
    /// What players owe on their tabs.
    TabReceivable,
    /// Money paid out to creators.
    Payouts,
}

impl SystemAccount {
    fn as_str(self) -> &'static str {
        match self {
            Self::Issuance => "issuance",
            Self::Revenue => "revenue",
            Self::Adjustment => "adjustment",
            Self::Clearing => "clearing",
            Self::Fees => "fees",
            Self::TabReceivable => "tab_receivable",
            Self::Payouts => "payouts",
        }
    }
}

/// An account's id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum AccountId {
    /// A player's wallet for one currency.
    Wallet(Uuid, CurrencyCode),
    /// A system account for one virtual currency code or ISO 4217 code.
    System(SystemAccount, String),
    /// What the store owes a creator, in one ISO currency (micros).
    CreatorPayable(String, String),
}

tokio::task_local! {
    /// The system account shard of the writer running this task (see [`with_system_shard`]).
    static SYSTEM_SHARD: u32;
}

/// Runs `work` with its system accounts in shard `shard`: every system account it moves is the
/// row `s:<kind>:<currency>#<shard>` instead of `s:<kind>:<currency>`. A system account's balance
/// is the sum of its rows. Each group-commit writer works in a shard of its own, so writers (and
/// instances) never wait on each other's system rows, which every batch moves; everything else
/// (webhooks, workers, the command line) moves the unsharded row.
pub async fn with_system_shard<F: std::future::Future>(shard: u32, work: F) -> F::Output {
    SYSTEM_SHARD.scope(shard, work).await
}

impl AccountId {
    /// The stored id: `w:<player>:<currency>`, `s:<kind>:<currency>` (with `#<shard>` in a
    /// sharded writer, [`with_system_shard`]) or `c:<creator>:<currency>`.
    #[must_use]
    pub fn key(&self) -> String {
        match self {
            Self::Wallet(player, currency) => format!("w:{player}:{currency}"),
            Self::System(kind, currency) => match SYSTEM_SHARD.try_with(|shard| *shard) {
                Ok(shard) => format!("s:{}:{currency}#{shard}", kind.as_str()),
                Err(_) => format!("s:{}:{currency}", kind.as_str()),
            },
            Self::CreatorPayable(creator, currency) => format!("c:{creator}:{currency}"),
        }
    }

    pub(crate) fn currency(&self) -> &str {
        match self {
            Self::Wallet(_, currency) => currency.as_str(),
            Self::System(_, currency) | Self::CreatorPayable(_, currency) => currency,
        }
    }
}

/// One account's change within an entry.
#[derive(Debug, Clone)]
pub struct Posting {
    /// The account.
    pub account: AccountId,
    /// Positive credit, negative debit.
    pub amount: i64,
}

/// One item count's change within an entry.
#[derive(Debug, Clone)]
pub struct ItemDelta {
    /// The item.
    pub sku: Sku,
    /// Positive gained, negative used up.
    pub delta: i64,
    /// The most the player may hold afterwards (1 for durable items).
    pub quantity_max: i64,
}

/// An entry about to be appended.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// Why.
    pub kind: EntryKind,
    /// The player it concerns (none for the store's own movements, such as payouts).
    pub player_id: Option<Uuid>,
    /// Who caused it: `player:<id>`, `api_key:<id>` or `system`.
    pub actor: String,
    /// The operator's reason, for grants.
    pub reason: Option<String>,
    /// Balance changes; they must sum to zero per currency.
    pub postings: Vec<Posting>,
    /// Item changes of the player.
    pub items: Vec<ItemDelta>,
    /// A clawback: wallet debits and item removals may go below zero, which records a debt.
    pub clawback: bool,
}

/// What appending an entry did.
#[derive(Debug, Clone)]
pub struct AppendedEntry {
    /// The entry's id.
    pub id: Uuid,
    /// The player's balances it changed.
    pub changes: Vec<BalanceChange>,
    /// The player's items it changed.
    pub items: Vec<ItemChange>,
}

/// A player's row, locked until the transaction ends.
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct PlayerLock {
    blocked: bool,
    age_band: AgeBand,
}

impl PlayerLock {
    /// The flags of a player row read elsewhere (the batch path's, already locked).
    pub fn new(blocked: bool, age_band: AgeBand) -> Self {
        Self { blocked, age_band }
    }

    /// Refuses a blocked player (players' own requests; operators may still grant).
    ///
    /// # Errors
    /// `player_blocked`.
    pub fn refuse_if_blocked(self) -> ApiResult<()> {
        if self.blocked {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::PlayerBlocked,
                "this player is blocked from the store",
            ))
        } else {
            Ok(())
        }
    }

    /// The player's age band (their spending caps and tab credit).
    #[must_use]
    pub fn age_band(self) -> AgeBand {
        self.age_band
    }
}

/// Serializes every money-moving transaction of one player: a row lock on PostgreSQL (SQLite's
/// `BEGIN IMMEDIATE` already holds the database's write lock). Reads made after it (balances,
/// caps, limits) stay true until commit.
///
/// # Errors
/// `not_found` for an unknown player.
pub async fn lock_player(conn: &mut AnyConnection, player_id: Uuid) -> ApiResult<PlayerLock> {
    let flags: Option<(i64, i64)> = sqlx::query_as(
        "update player set lock_version = lock_version + 1 where id = $1 returning blocked, age_band",
    )
    .bind(player_id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    match flags {
        None => Err(ApiError::not_found("player", &player_id.to_string())),
        Some((blocked, age_band)) => {
            Ok(PlayerLock { blocked: blocked != 0, age_band: AgeBand::from_code(age_band) })
        }
    }
}

/// A player's age band, read without locking (quotes and views; what moves money reads it
/// under [`lock_player`]). An unknown player is an adult: the caller finds them missing.
///
/// # Errors
/// Fails when the database does.
pub async fn age_band_of(conn: &mut AnyConnection, player_id: Uuid) -> ApiResult<AgeBand> {
    let band: Option<i64> = sqlx::query_scalar("select age_band from player where id = $1")
        .bind(player_id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(band.map_or(AgeBand::Adult, AgeBand::from_code))
}

/// A wallet's balance (0 when the wallet was never used).
///
/// # Errors
/// Fails when the database does.
pub async fn wallet_balance(
    conn: &mut AnyConnection,
    player_id: Uuid,
    currency: &CurrencyCode,
) -> ApiResult<i64> {
    let balance: Option<i64> = sqlx::query_scalar("select balance from account where id = $1")
        .bind(AccountId::Wallet(player_id, currency.clone()).key())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(balance.unwrap_or(0))
}

/// How many of an item a player holds.
///
/// # Errors
/// Fails when the database does.
pub async fn item_quantity(conn: &mut AnyConnection, player_id: Uuid, sku: &Sku) -> ApiResult<i64> {
    let quantity: Option<i64> =
        sqlx::query_scalar("select quantity from inventory where player_id = $1 and sku = $2")
            .bind(player_id.to_string())
            .bind(sku.as_str())
            .fetch_optional(&mut *conn)
            .await?;
    Ok(quantity.unwrap_or(0))
}

/// 402 `insufficient_funds` with what was required and what is available.
#[must_use]
pub fn insufficient_funds(currency: &CurrencyCode, required: i64, available: i64) -> ApiError {
    ApiError::new(
        StatusCode::PAYMENT_REQUIRED,
        ErrorCode::InsufficientFunds,
        format!("this needs {required} {currency} and the wallet holds {available}"),
    )
    .with_detail("currency", currency.as_str())
    .with_detail("required", required)
    .with_detail("available", available)
}

/// 409 `balance_max_exceeded`: a credit would take the wallet over the currency's maximum.
#[must_use]
pub fn balance_max_exceeded(
    currency: &CurrencyCode,
    balance: i64,
    credit: i64,
    balance_max: i64,
) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::BalanceMaxExceeded,
        format!(
            "adding {credit} {currency} to {balance} would pass the most a wallet may hold ({balance_max})"
        ),
    )
    .with_detail("currency", currency.as_str())
    .with_detail("balance", balance)
    .with_detail("credit", credit)
    .with_detail("balance_max", balance_max)
}

/// The facts of a purchase, kept in the row of the entry that books it (one record per money
/// movement; the `purchase` view reads them back with the entry's player and time).
#[derive(Debug)]
pub struct PurchaseRecord<'a> {
    /// The purchase.
    pub id: Uuid,
    /// The offer.
    pub offer_id: String,
    /// The item.
    pub sku: &'a str,
    /// Units bought.
    pub quantity: i64,
    /// Which of the offer's prices.
    pub price_index: u32,
    /// The currency paid in.
    pub currency: &'a str,
    /// The total paid.
    pub amount: i64,
    /// The catalog version sold from.
    pub catalog_version: i64,
    /// The entry.
    pub entry_id: Uuid,
    /// The price experiment's variant, if any.
    pub price_variant: Option<&'a str>,
}

impl PurchaseRecord<'_> {
    /// The entry's purchase columns, in order: id, offer, sku, quantity, price index, price
    /// variant, currency, amount, catalog version.
    #[must_use]
    pub fn columns(&self) -> [serde_json::Value; 9] {
        use serde_json::json;
        [
            json!(self.id.to_string()),
            json!(self.offer_id),
            json!(self.sku),
            json!(self.quantity),
            json!(self.price_index),
            json!(self.price_variant),
            json!(self.currency),
            json!(self.amount),
            json!(self.catalog_version),
        ]
    }
}

/// Records a purchase in its entry's row, in the transaction that appended the entry (the
/// request-at-a-time path; the set path writes the row whole). Returns the entry's time, which
/// is the purchase's.
///
/// # Errors
/// Fails when the database does, or the entry is not there or already books a purchase.
pub async fn record_purchase(conn: &mut AnyConnection, purchase: &PurchaseRecord<'_>) -> ApiResult<i64> {
    let created_at: Option<i64> = sqlx::query_scalar(
        "update entry set purchase_id = $2, purchase_offer = $3, purchase_sku = $4, purchase_quantity = $5, \
         purchase_price_index = $6, purchase_price_variant = $7, purchase_currency = $8, purchase_amount = $9, \
         purchase_catalog_version = $10 where id = $1 and purchase_id is null returning created_at",
    )
    .bind(purchase.entry_id.to_string())
    .bind(purchase.id.to_string())
    .bind(&purchase.offer_id)
    .bind(purchase.sku)
    .bind(purchase.quantity)
    .bind(i64::from(purchase.price_index))
    .bind(purchase.price_variant)
    .bind(purchase.currency)
    .bind(purchase.amount)
    .bind(purchase.catalog_version)
    .fetch_optional(&mut *conn)
    .await?;
    created_at.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "entry {} cannot record purchase {}",
            purchase.entry_id,
            purchase.id
        ))
    })
}

/// Clock steps an entry id may lag its entry's time by (see [`entry_id_floor`]).
const ENTRY_ID_CLOCK_MARGIN_MICROS: i64 = 60_000_000;

/// The least entry id an entry made at or after `micros` can have, as stored text: entry ids
/// are UUIDv7, whose first 48 bits are the Unix time in milliseconds, taken from the system
/// clock after the entry's time (`created_at`), so a range of a player's entries by time is a
/// range of `entry_player_idx`. A minute of margin covers the clock stepping back; the server's
/// clock only ever runs behind the system's (`demo-data` moves it into the past), which makes
/// ids later, never earlier.
pub(crate) fn entry_id_floor(micros: i64) -> String {
    let millis = u64::try_from((micros - ENTRY_ID_CLOCK_MARGIN_MICROS) / 1_000).unwrap_or(0);
    format!("{:08x}-{:04x}-0000-0000-000000000000", millis >> 16, millis & 0xffff)
}

/// Appends an entry: checks it is balanced, applies every posting and item change with a
/// guarded update, and records the entry, its postings and item changes.
///
/// `balance_max` maps each currency to the most a wallet may hold.
///
/// # Errors
/// `insufficient_funds`, `balance_max_exceeded` or `insufficient_quantity` when a guard refuses
/// (the caller's own checks should have refused first); database failures.
///
/// # Panics
/// When the postings do not sum to zero per currency: only a bug can cause that.
///
/// # Errors
/// Fails when the database does, a guard trips, or the amounts overflow.
pub async fn append_entry(
    conn: &mut AnyConnection,
    entry: &NewEntry,
    balance_max: &BTreeMap<String, i64>,
) -> ApiResult<AppendedEntry> {
    let net = net_changes(entry)?;
    // The player's lock and newest entry first: the new entry's id is after it, so the player's
    // entries commit in id order (the event stream reads them by id, `events`).
    let players: Vec<Uuid> = entry.player_id.into_iter().collect();
    let mut heads = EntryHeads::lock(conn, &players).await?;
    // The time first, then the id: an id is never older than its entry (see `entry_id_floor`).
    let now = now_micros();
    let id = heads.next(entry.player_id);
    // Balances first, then items (the lock order), then the entry with its item changes, then
    // the postings, which name it.
    let mut postings = Vec::with_capacity(net.accounts.len());
    let mut changes = Vec::new();
    for (key, account, amount) in net.accounts {
        let currency = account.currency().to_owned();
        let max = balance_max.get(&currency).copied().unwrap_or(i64::MAX);
        let balance_after = apply_posting(conn, &key, &account, amount, max, entry.clawback, now).await?;
        if let AccountId::Wallet(_, code) = &account {
            changes.push(BalanceChange { currency: code.clone(), amount, balance_after });
        }
        postings.push((key, currency, amount, balance_after));
    }
    let mut items = Vec::new();
    let player_id = entry.player_id.unwrap_or_default();
    for change in net.items {
        let quantity_after = apply_item_delta(conn, player_id, &change, entry.clawback).await?;
        items.push(ItemChange { sku: change.sku, delta: change.delta, quantity_after });
    }
    sqlx::query(
        "insert into entry (id, kind, player_id, actor, reason, created_at, items) values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id.to_string())
    .bind(entry.kind.as_str())
    .bind(entry.player_id.map(|player| player.to_string()))
    .bind(&entry.actor)
    .bind(entry.reason.clone())
    .bind(now)
    .bind(items_json(&items)?)
    .execute(&mut *conn)
    .await?;
    for (key, currency, amount, balance_after) in postings {
        sqlx::query("insert into posting (entry_id, account_id, currency, amount, balance_after) values ($1, $2, $3, $4, $5)")
            .bind(id.to_string())
            .bind(&key)
            .bind(&currency)
            .bind(amount)
            .bind(balance_after)
            .execute(&mut *conn)
            .await?;
    }
    Ok(AppendedEntry { id, changes, items })
}

/// An entry's item changes as stored in its row (`entry.items`): a JSON array of
/// `[sku, delta, quantity after]`, none when it changed no item.
///
/// # Errors
/// Fails only if serializing fails.
pub(crate) fn items_json(items: &[ItemChange]) -> ApiResult<Option<String>> {
    if items.is_empty() {
        return Ok(None);
    }
    let rows: Vec<(&str, i64, i64)> =
        items.iter().map(|change| (change.sku.as_str(), change.delta, change.quantity_after)).collect();
    Ok(Some(serde_json::to_string(&rows).map_err(anyhow::Error::from)?))
}

/// An entry's item changes read back from its row ([`items_json`]'s form).
///
/// # Errors
/// A stored value that is not that form.
pub(crate) fn stored_items(items: Option<&str>) -> ApiResult<Vec<ItemChange>> {
    let Some(items) = items else { return Ok(Vec::new()) };
    let rows: Vec<(String, i64, i64)> = serde_json::from_str(items)
        .map_err(|error| anyhow::anyhow!("an entry's stored items `{items}`: {error}"))?;
    rows.into_iter()
        .map(|(sku, delta, quantity_after)| {
            Ok(ItemChange { sku: reads::stored_sku(&sku)?, delta, quantity_after })
        })
        .collect()
}

impl AppendedEntry {
    /// The events announcing the entry to its player on the event stream, which builds them
    /// from the stored entry: `wallet.updated` when it changed a balance, then
    /// `inventory.updated` when it changed an item, as (type, JSON).
    ///
    /// # Errors
    /// Fails only if serializing fails.
    pub(crate) fn events(&self) -> ApiResult<Vec<(&'static str, String)>> {
        let mut events = Vec::new();
        if !self.changes.is_empty() {
            let data = WalletUpdated { entry_id: self.id, changes: self.changes.clone() };
            events.push(("wallet.updated", serde_json::to_string(&data).map_err(anyhow::Error::from)?));
        }
        if !self.items.is_empty() {
            let data = InventoryUpdated { entry_id: self.id, items: self.items.clone() };
            events.push(("inventory.updated", serde_json::to_string(&data).map_err(anyhow::Error::from)?));
        }
        Ok(events)
    }
}

/// An entry's changes, netted: one per account in id order (the lock order) and one per item in
/// sku order, without the changes that net to zero.
#[derive(Debug)]
pub(crate) struct NetChanges {
    /// (stored id, account, amount) per account.
    pub(crate) accounts: Vec<(String, AccountId, i64)>,
    /// Per item, with the tightest maximum any of its changes named.
    pub(crate) items: Vec<ItemDelta>,
}

/// Nets an entry's postings and item changes, after checking it is balanced.
///
/// # Panics
/// When the postings do not sum to zero per currency: only a bug can cause that.
///
/// # Errors
/// When the amounts overflow, or item changes name no player.
pub(crate) fn net_changes(entry: &NewEntry) -> ApiResult<NetChanges> {
    let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
    for posting in &entry.postings {
        let sum = sums.entry(posting.account.currency()).or_default();
        *sum = sum
            .checked_add(posting.amount)
            .ok_or_else(|| anyhow::anyhow!("an entry's posting sum overflows: {entry:?}"))?;
    }
    assert!(
        sums.values().all(|sum| *sum == 0),
        "an entry's postings must sum to zero per currency: {entry:?}"
    );
    let mut per_account: BTreeMap<String, (AccountId, i64)> = BTreeMap::new();
    for posting in &entry.postings {
        let slot = per_account.entry(posting.account.key()).or_insert_with(|| (posting.account.clone(), 0));
        slot.1 = slot.1.checked_add(posting.amount).ok_or_else(|| anyhow::anyhow!("posting overflow"))?;
    }
    let mut per_item: BTreeMap<String, ItemDelta> = BTreeMap::new();
    for change in &entry.items {
        let slot = per_item.entry(change.sku.as_str().to_owned()).or_insert_with(|| ItemDelta {
            sku: change.sku.clone(),
            delta: 0,
            quantity_max: change.quantity_max,
        });
        slot.delta =
            slot.delta.checked_add(change.delta).ok_or_else(|| anyhow::anyhow!("item delta overflow"))?;
        slot.quantity_max = slot.quantity_max.min(change.quantity_max);
    }
    let items: Vec<ItemDelta> = per_item.into_values().filter(|change| change.delta != 0).collect();
    if !items.is_empty() && entry.player_id.is_none() {
        return Err(ApiError::Internal(anyhow::anyhow!("item changes need a player: {entry:?}")));
    }
    Ok(NetChanges {
        accounts: per_account
            .into_iter()
            .filter(|(_, (_, amount))| *amount != 0)
            .map(|(key, (account, amount))| (key, account, amount))
            .collect(),
        items,
    })
}

/// Applies one account's change with a guard: a wallet stays at or above zero on a debit (unless
/// this is a clawback, which records the debt) and at or below `balance_max` on a credit. A wallet
/// back at zero or above no longer owes. Returns the balance after.
async fn apply_posting(
    conn: &mut AnyConnection,
    key: &str,
    account: &AccountId,
    amount: i64,
    balance_max: i64,
    clawback: bool,
    now: i64,
) -> ApiResult<i64> {
    let (kind, player_id) = match account {
        AccountId::Wallet(player, _) => ("wallet", Some(player.to_string())),
        AccountId::System(kind, _) => (kind.as_str(), None),
        AccountId::CreatorPayable(..) => ("creator_payable", None),
    };
    // The account usually exists: update first, and create it only when the update found nothing.
    let mut created = false;
    let mut updates = 0;
    let balance = loop {
        updates += 1;
        let balance_after: Option<i64> = sqlx::query_scalar(
            "update account set balance = balance + $2, \
             in_debt = case when kind <> 'wallet' then 0 when balance + $2 >= 0 then 0 when $4 = 1 then 1 else in_debt end \
             where id = $1 and (kind <> 'wallet' or \
             (($2 >= 0 or $4 = 1 or balance + $2 >= 0) and ($2 <= 0 or balance + $2 <= $3))) returning balance",
        )
        .bind(key)
        .bind(amount)
        .bind(balance_max)
        .bind(i64::from(clawback))
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(balance_after) = balance_after {
            return Ok(balance_after);
        }
        let balance: Option<i64> = sqlx::query_scalar("select balance from account where id = $1")
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
        match balance {
            // The guard refused, or another transaction created the account after the update
            // looked (two first grants of a currency at once): then the update runs again.
            Some(balance) if updates > 1 => break balance,
            Some(_) => {}
            None if !created => {
                sqlx::query(
                    "insert into account (id, kind, player_id, currency, balance, created_at) values ($1, $2, $3, $4, 0, $5) \
                     on conflict (id) do nothing",
                )
                .bind(key)
                .bind(kind)
                .bind(player_id.clone())
                .bind(account.currency())
                .bind(now)
                .execute(&mut *conn)
                .await?;
                created = true;
            }
            None => return Err(ApiError::Internal(anyhow::anyhow!("account {key} vanished"))),
        }
    };
    let AccountId::Wallet(_, currency) = account else {
        return Err(ApiError::Internal(anyhow::anyhow!("system account {key} refused a posting")));
    };
    Err(if amount < 0 {
        insufficient_funds(currency, -amount, balance)
    } else {
        balance_max_exceeded(currency, balance, amount, balance_max)
    })
}

/// Applies one item change with a guard: never below zero on a removal (unless this is a
/// clawback, which records an item debt for what the player used up), never above the item's
/// maximum on an addition. A count back at zero or above no longer owes. Returns the quantity
/// after.
async fn apply_item_delta(
    conn: &mut AnyConnection,
    player_id: Uuid,
    change: &ItemDelta,
    clawback: bool,
) -> ApiResult<i64> {
    // The row usually exists: update first, and create it only when the update found nothing.
    let mut created = false;
    let held = loop {
        let quantity_after: Option<i64> = sqlx::query_scalar(
            "update inventory set quantity = quantity + $3, \
             in_debt = case when quantity + $3 >= 0 then 0 when $5 = 1 then 1 else in_debt end \
             where player_id = $1 and sku = $2 \
             and ($3 >= 0 or $5 = 1 or quantity + $3 >= 0) and ($3 <= 0 or quantity + $3 <= $4) returning quantity",
        )
        .bind(player_id.to_string())
        .bind(change.sku.as_str())
        .bind(change.delta)
        .bind(change.quantity_max)
        .bind(i64::from(clawback))
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(quantity_after) = quantity_after {
            return Ok(quantity_after);
        }
        let held: Option<i64> =
            sqlx::query_scalar("select quantity from inventory where player_id = $1 and sku = $2")
                .bind(player_id.to_string())
                .bind(change.sku.as_str())
                .fetch_optional(&mut *conn)
                .await?;
        match held {
            Some(held) => break held,
            None if !created => {
                sqlx::query(
                    "insert into inventory (player_id, sku, quantity) values ($1, $2, 0) on conflict (player_id, sku) do nothing",
                )
                .bind(player_id.to_string())
                .bind(change.sku.as_str())
                .execute(&mut *conn)
                .await?;
                created = true;
            }
            None => {
                return Err(ApiError::Internal(anyhow::anyhow!("inventory row of {} vanished", change.sku)));
            }
        }
    };
    Err(if change.delta < 0 {
        insufficient_quantity(&change.sku, -change.delta, held)
    } else {
        already_owned(&change.sku)
    })
}

/// 409 `insufficient_quantity`.
#[must_use]
pub fn insufficient_quantity(sku: &Sku, required: i64, held: i64) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::InsufficientQuantity,
        format!("this needs {required} `{sku}` and the player holds {held}"),
    )
    .with_detail("sku", sku.as_str())
    .with_detail("required", required)
    .with_detail("available", held)
}

/// 409 `already_owned` for a durable item.
#[must_use]
pub fn already_owned(sku: &Sku) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::AlreadyOwned,
        format!("the player already owns `{sku}`, which can be owned once"),
    )
    .with_detail("sku", sku.as_str())
}

#[cfg(test)]
mod tests {
    use super::entry_id_floor;
    use crate::db::now_micros;

    #[test]
    fn an_entry_id_taken_after_a_time_is_above_its_floor_and_below_a_later_one() {
        let now = now_micros();
        let id = uuid::Uuid::now_v7().to_string();
        assert!(entry_id_floor(now) <= id, "{} > {id}", entry_id_floor(now));
        // Past the margin, a later time's floor is above the id.
        let later = now + 2 * 60_000_000;
        assert!(entry_id_floor(later) > id, "{} <= {id}", entry_id_floor(later));
        // Before the epoch (a lifetime limit's start less the margin) every id is above it.
        assert_eq!(entry_id_floor(0), "00000000-0000-0000-0000-000000000000");
    }
}
