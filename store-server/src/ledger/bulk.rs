//! The ledger's bulk path: many entries appended in a few multi-row statements, for imports and
//! the scale generator. It keeps [`crate::ledger::append_entry`]'s rules: every entry balanced
//! per currency, every posting recording the balance after it (in entry order), no wallet below
//! zero or above its currency's maximum, no item count below zero or above its maximum; a
//! violation refuses the whole bulk (the caller's transaction rolls back). Like every entry, its
//! entries are announced on their players' event streams, which read the entries: it locks the
//! players first and gives each entry an id after its player's newest (`events::EntryHeads`).
//!
//! It reads the balances and item counts it will change, checks every rule in memory, then writes:
//! existing rows take their total change guarded by the value read (a concurrent change on
//! PostgreSQL refuses the bulk rather than breaking a chain), new rows are inserted.

use std::collections::{BTreeMap, HashMap};

use sqlx::AnyConnection;
use uuid::Uuid;

use crate::db::now_micros;
use crate::error::{ApiError, ApiResult};
use crate::ledger::events::EntryHeads;
use store_api::ledger::ItemChange;

use crate::ledger::{
    AccountId, NewEntry, already_owned, balance_max_exceeded, insufficient_funds, insufficient_quantity,
    items_json,
};

/// Bound parameters per statement at most: SQLite looks `$n` parameters up by name, so the cost
/// of a statement grows with the square of its parameters; a thousand keeps that small.
const BINDS_MAX: usize = 1_000;
/// Ids per `in (...)` lookup.
const LOOKUP_CHUNK: usize = 500;

/// One bound value of a multi-row insert.
#[derive(Debug, Clone)]
pub enum Value {
    /// Text.
    Text(String),
    /// An integer.
    Int(i64),
    /// SQL null (a text column).
    Null,
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Self::Int(value)
    }
}

impl From<Option<String>> for Value {
    fn from(text: Option<String>) -> Self {
        text.map_or(Self::Null, Self::Text)
    }
}

/// `sql` with every value of `rows` bound in order.
fn bound<'q>(
    sql: sqlx::AssertSqlSafe<String>,
    rows: Vec<Vec<Value>>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    let mut query = sqlx::query(sql);
    for value in rows.into_iter().flatten() {
        query = match value {
            Value::Text(text) => query.bind(text),
            Value::Int(value) => query.bind(value),
            Value::Null => query.bind(None::<String>),
        };
    }
    query
}

/// Inserts `rows` into `table (columns)` in as few statements as the bind limit allows.
///
/// # Errors
/// Fails when the database does.
pub async fn insert_rows(
    conn: &mut AnyConnection,
    table: &str,
    columns: &[&str],
    rows: Vec<Vec<Value>>,
) -> Result<(), sqlx::Error> {
    let per_statement = (BINDS_MAX / columns.len().max(1)).max(1);
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Value>> = rows.by_ref().take(per_statement).collect();
        let mut sql = format!("insert into {table} ({}) values ", columns.join(", "));
        let mut index = 0;
        for (row_index, _) in chunk.iter().enumerate() {
            sql.push_str(if row_index == 0 { "(" } else { ", (" });
            for column in 0..columns.len() {
                index += 1;
                sql.push_str(if column == 0 { "$" } else { ", $" });
                sql.push_str(&index.to_string());
            }
            sql.push(')');
        }
        bound(sqlx::AssertSqlSafe(sql), chunk).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Sets `columns` of the rows of `table` whose `key` is each row's first value (the rest are the
/// columns' values, in order), in as few statements as the bind limit allows.
///
/// # Errors
/// Fails when the database does.
pub async fn update_rows(
    conn: &mut AnyConnection,
    table: &str,
    key: &str,
    columns: &[&str],
    rows: Vec<Vec<Value>>,
) -> Result<(), sqlx::Error> {
    let width = columns.len() + 1;
    let per_statement = (BINDS_MAX / width).max(1);
    let assignments: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(index, column)| format!("{column} = v.column{}", index + 2))
        .collect();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Value>> = rows.by_ref().take(per_statement).collect();
        let tuples: Vec<String> = (0..chunk.len())
            .map(|row| {
                let binds: Vec<String> =
                    (1..=width).map(|column| format!("${}", row * width + column)).collect();
                format!("({})", binds.join(", "))
            })
            .collect();
        let sql = format!(
            "update {table} set {} from (values {}) as v where {table}.{key} = v.column1",
            assignments.join(", "),
            tuples.join(", ")
        );
        bound(sqlx::AssertSqlSafe(sql), chunk).execute(&mut *conn).await?;
    }
    Ok(())
}

/// The balances of those of `keys` that exist.
async fn balances_of(conn: &mut AnyConnection, keys: &[String]) -> Result<HashMap<String, i64>, sqlx::Error> {
    let mut found = HashMap::new();
    for chunk in keys.chunks(LOOKUP_CHUNK) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|index| format!("${index}")).collect();
        let sql = format!("select id, balance from account where id in ({})", placeholders.join(", "));
        let mut query = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql));
        for key in chunk {
            query = query.bind(key.clone());
        }
        found.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(found)
}

/// The item counts held by `players`, by player and sku.
async fn quantities_of(
    conn: &mut AnyConnection,
    players: &[Uuid],
) -> Result<HashMap<(Uuid, String), i64>, sqlx::Error> {
    let mut found = HashMap::new();
    for chunk in players.chunks(LOOKUP_CHUNK) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|index| format!("${index}")).collect();
        let sql = format!(
            "select player_id, sku, quantity from inventory where player_id in ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query_as::<_, (String, String, i64)>(sqlx::AssertSqlSafe(sql));
        for player in chunk {
            query = query.bind(player.to_string());
        }
        for (player, sku, quantity) in query.fetch_all(&mut *conn).await? {
            let player = Uuid::parse_str(&player).map_err(|error| sqlx::Error::Decode(error.into()))?;
            found.insert((player, sku), quantity);
        }
    }
    Ok(found)
}

/// A change that raced this bulk on PostgreSQL: the row moved between reading and writing.
fn raced(what: &str) -> ApiError {
    ApiError::Internal(anyhow::anyhow!("{what} changed while a bulk was written; retry the bulk"))
}

/// Appends `entries` in order, as [`crate::ledger::append_entry`] would one by one; returns their
/// ids.
///
/// # Errors
/// The first rule an entry breaks (`insufficient_funds`, `balance_max_exceeded`, ...), or a
/// database failure; then nothing may be committed.
pub async fn append_entries(
    conn: &mut AnyConnection,
    entries: &[NewEntry],
    balance_max: &HashMap<String, i64>,
) -> ApiResult<Vec<Uuid>> {
    let now = now_micros();
    // Each entry's changes, merged per account and per item as append_entry merges them.
    let mut account_totals: BTreeMap<String, (AccountId, i64)> = BTreeMap::new();
    let mut item_totals: BTreeMap<(Uuid, String), i64> = BTreeMap::new();
    let mut merged = Vec::with_capacity(entries.len());
    for entry in entries {
        let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
        let mut per_account: BTreeMap<String, (AccountId, i64)> = BTreeMap::new();
        for posting in &entry.postings {
            let sum = sums.entry(posting.account.currency()).or_default();
            *sum = sum.checked_add(posting.amount).ok_or_else(|| anyhow::anyhow!("posting sum overflows"))?;
            let slot =
                per_account.entry(posting.account.key()).or_insert_with(|| (posting.account.clone(), 0));
            slot.1 = slot.1.checked_add(posting.amount).ok_or_else(|| anyhow::anyhow!("posting overflow"))?;
        }
        if sums.values().any(|sum| *sum != 0) {
            return Err(ApiError::Internal(anyhow::anyhow!("an unbalanced entry: {entry:?}")));
        }
        if !entry.items.is_empty() && entry.player_id.is_none() {
            return Err(ApiError::Internal(anyhow::anyhow!("item changes need a player: {entry:?}")));
        }
        per_account.retain(|_, (_, amount)| *amount != 0);
        for (key, (account, amount)) in &per_account {
            let slot = account_totals.entry(key.clone()).or_insert_with(|| (account.clone(), 0));
            slot.1 = slot.1.checked_add(*amount).ok_or_else(|| anyhow::anyhow!("posting overflow"))?;
        }
        let player = entry.player_id.unwrap_or_default();
        for item in &entry.items {
            let total = item_totals.entry((player, item.sku.as_str().to_owned())).or_default();
            *total = total.checked_add(item.delta).ok_or_else(|| anyhow::anyhow!("item delta overflows"))?;
        }
        merged.push(per_account);
    }

    let mut entry_players: Vec<Uuid> = entries.iter().filter_map(|entry| entry.player_id).collect();
    entry_players.sort_unstable();
    entry_players.dedup();
    let mut heads = EntryHeads::lock(conn, &entry_players).await?;
    // Starting balances: what the database holds now (0 for accounts and items to create).
    let keys: Vec<String> = account_totals.keys().cloned().collect();
    let present = balances_of(conn, &keys).await?;
    let mut balances: HashMap<String, i64> =
        keys.iter().map(|key| (key.clone(), present.get(key).copied().unwrap_or(0))).collect();
    let players: Vec<Uuid> = {
        let mut players: Vec<Uuid> = item_totals.keys().map(|(player, _)| *player).collect();
        players.dedup();
        players
    };
    let held = quantities_of(conn, &players).await?;
    let mut quantities: HashMap<(Uuid, String), i64> =
        item_totals.keys().map(|key| (key.clone(), held.get(key).copied().unwrap_or(0))).collect();

    let mut ids = Vec::with_capacity(entries.len());
    let (mut entry_rows, mut posting_rows) = (Vec::new(), Vec::new());
    for (entry, per_account) in entries.iter().zip(merged) {
        let id = heads.next(entry.player_id);
        ids.push(id);
        for (key, (account, amount)) in per_account {
            let balance =
                balances.get_mut(&key).ok_or_else(|| anyhow::anyhow!("account {key} not loaded"))?;
            let after = balance.checked_add(amount).ok_or_else(|| anyhow::anyhow!("balance overflow"))?;
            if let AccountId::Wallet(_, currency) = &account {
                let max = balance_max.get(currency.as_str()).copied().unwrap_or(i64::MAX);
                if amount < 0 && after < 0 && !entry.clawback {
                    return Err(insufficient_funds(currency, -amount, *balance));
                }
                if amount > 0 && after > max {
                    return Err(balance_max_exceeded(currency, *balance, amount, max));
                }
            }
            *balance = after;
            let currency = account.currency().to_owned();
            posting_rows.push(vec![
                Value::from(id.to_string()),
                key.into(),
                currency.into(),
                amount.into(),
                after.into(),
            ]);
        }
        let player = entry.player_id.unwrap_or_default();
        let mut changes = Vec::with_capacity(entry.items.len());
        for item in &entry.items {
            let quantity = quantities
                .get_mut(&(player, item.sku.as_str().to_owned()))
                .ok_or_else(|| anyhow::anyhow!("item {} not loaded", item.sku))?;
            let after =
                quantity.checked_add(item.delta).ok_or_else(|| anyhow::anyhow!("item quantity overflows"))?;
            if item.delta < 0 && after < 0 && !entry.clawback {
                return Err(insufficient_quantity(&item.sku, -item.delta, *quantity));
            }
            if item.delta > 0 && after > item.quantity_max {
                return Err(already_owned(&item.sku));
            }
            *quantity = after;
            changes.push(ItemChange { sku: item.sku.clone(), delta: item.delta, quantity_after: after });
        }
        entry_rows.push(vec![
            Value::from(id.to_string()),
            entry.kind.as_str().into(),
            entry.player_id.map(|player| player.to_string()).into(),
            entry.actor.as_str().into(),
            entry.reason.clone().into(),
            now.into(),
            items_json(&changes)?.into(),
        ]);
    }

    // Every rule held: existing rows take their total change, guarded by the value read.
    for (key, (_, total)) in &account_totals {
        let Some(start) = present.get(key) else { continue };
        // Only a clawback can have taken a wallet below zero (checked above): that is its debt.
        let updated = sqlx::query(
            "update account set balance = balance + $2, \
             in_debt = case when kind = 'wallet' and balance + $2 < 0 then 1 else 0 end where id = $1 and balance = $3",
        )
        .bind(key)
            .bind(*total)
            .bind(*start)
            .execute(&mut *conn)
            .await?;
        if updated.rows_affected() != 1 {
            return Err(raced(&format!("account {key}")));
        }
    }
    for ((player, sku), total) in &item_totals {
        let Some(start) = held.get(&(*player, sku.clone())) else { continue };
        let updated = sqlx::query(
            "update inventory set quantity = quantity + $3, in_debt = case when quantity + $3 < 0 then 1 else 0 end \
             where player_id = $1 and sku = $2 and quantity = $4",
        )
        .bind(player.to_string())
        .bind(sku)
        .bind(*total)
        .bind(*start)
        .execute(&mut *conn)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(raced(&format!("the inventory of {player}")));
        }
    }
    insert_rows(
        conn,
        "entry",
        &["id", "kind", "player_id", "actor", "reason", "created_at", "items"],
        entry_rows,
    )
    .await?;
    let new_accounts: Vec<Vec<Value>> = account_totals
        .iter()
        .filter(|(key, _)| !present.contains_key(*key))
        .map(|(key, (account, _))| {
            let (kind, player) = match account {
                AccountId::Wallet(player, _) => ("wallet".to_owned(), Some(player.to_string())),
                AccountId::System(..) => (key.split(':').nth(1).unwrap_or_default().to_owned(), None),
                AccountId::CreatorPayable(..) => ("creator_payable".to_owned(), None),
            };
            let balance = balances.get(key).copied().unwrap_or(0);
            vec![
                Value::from(key.clone()),
                kind.into(),
                player.into(),
                account.currency().to_owned().into(),
                balance.into(),
                i64::from(balance < 0).into(),
                now.into(),
            ]
        })
        .collect();
    insert_rows(
        conn,
        "account",
        &["id", "kind", "player_id", "currency", "balance", "in_debt", "created_at"],
        new_accounts,
    )
    .await?;
    insert_rows(
        conn,
        "posting",
        &["entry_id", "account_id", "currency", "amount", "balance_after"],
        posting_rows,
    )
    .await?;
    let inventory_rows: Vec<Vec<Value>> = item_totals
        .keys()
        .filter(|key| !held.contains_key(*key))
        .map(|(player, sku)| {
            let quantity = quantities.get(&(*player, sku.clone())).copied().unwrap_or(0);
            vec![
                Value::from(player.to_string()),
                sku.as_str().into(),
                quantity.into(),
                i64::from(quantity < 0).into(),
            ]
        })
        .collect();
    insert_rows(conn, "inventory", &["player_id", "sku", "quantity", "in_debt"], inventory_rows).await?;
    Ok(ids)
}
