//! What the ledger answers players with: wallets, inventories and the history of entries.

use super::*;

/// A player's wallet: every currency in code order (bytes), with 0 for those never used.
///
/// # Errors
/// Fails when the database does.
pub async fn read_wallet(conn: &mut AnyConnection, player_id: Uuid) -> ApiResult<Wallet> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "select c.code, coalesce(a.balance, 0) from currency c \
         left join account a on a.id = 'w:' || $1 || ':' || c.code order by c.code",
    )
    .bind(player_id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    let mut balances = rows
        .into_iter()
        .map(|(code, balance)| Ok(Balance { currency: stored_code(&code)?, balance }))
        .collect::<ApiResult<Vec<_>>>()?;
    // Byte order, as the batch path answers, whatever the database's collation.
    balances.sort_by(|a, b| a.currency.as_str().cmp(b.currency.as_str()));
    Ok(Wallet { balances })
}

/// A player's items held at least once, sorted by sku (bytes).
///
/// # Errors
/// Fails when the database does.
pub async fn read_inventory(conn: &mut AnyConnection, player_id: Uuid) -> ApiResult<Vec<InventoryItem>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "select sku, quantity from inventory where player_id = $1 and quantity <> 0 order by sku",
    )
    .bind(player_id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    let mut items = rows
        .into_iter()
        .map(|(sku, quantity)| Ok(InventoryItem { sku: stored_sku(&sku)?, quantity }))
        .collect::<ApiResult<Vec<_>>>()?;
    // Byte order, as the batch path answers, whatever the database's collation.
    items.sort_by(|a, b| a.sku.as_str().cmp(b.sku.as_str()));
    Ok(items)
}

pub(super) fn stored_code(code: &str) -> ApiResult<CurrencyCode> {
    CurrencyCode::parse(code).map_err(|error| anyhow::anyhow!("stored currency code: {error}").into())
}

pub(super) fn stored_sku(sku: &str) -> ApiResult<Sku> {
    Sku::parse(sku).map_err(|error| anyhow::anyhow!("stored sku: {error}").into())
}

pub(super) fn stored_uuid(id: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(id).map_err(|error| anyhow::anyhow!("stored id `{id}`: {error}").into())
}

/// An entry as a history page reads it: id, kind, reason, time, item changes.
type EntryRow = (String, String, Option<String>, i64, Option<String>);

/// A page of a player's history, newest first: each entry with the changes to the player's
/// balances and items.
///
/// # Errors
/// Fails when the database does; `invalid_request` for a cursor not from this list.
pub async fn read_history(
    conn: &mut AnyConnection,
    player_id: Uuid,
    page: &Page,
) -> ApiResult<(Vec<HistoryEntry>, Option<String>)> {
    let before = match &page.cursor {
        None => "~".to_owned(), // sorts after every UUID
        Some(cursor) => stored_uuid(cursor).map_err(|_| crate::extract::invalid_cursor())?.to_string(),
    };
    let player = player_id.to_string();
    let entries: Vec<EntryRow> = sqlx::query_as(
        "select id, kind, reason, created_at, items from entry where player_id = $1 and id < $2 order by id desc limit $3",
    )
    .bind(&player)
    .bind(&before)
    .bind(page.fetch_count())
    .fetch_all(&mut *conn)
    .await?;
    let (entries, next_cursor) = page.finish(entries, |(id, ..)| id.clone());
    let Some(oldest) = entries.last().map(|(id, ..)| id.clone()) else { return Ok((Vec::new(), None)) };
    let newest = entries.first().map(|(id, ..)| id.clone()).unwrap_or_default();
    let postings: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "select p.entry_id, p.currency, p.amount, p.balance_after from posting p join entry e on e.id = p.entry_id \
         where e.player_id = $1 and e.id >= $2 and e.id <= $3 and p.account_id = 'w:' || $1 || ':' || p.currency \
         order by p.id",
    )
    .bind(&player)
    .bind(&oldest)
    .bind(&newest)
    .fetch_all(&mut *conn)
    .await?;
    let mut history: Vec<HistoryEntry> = entries
        .into_iter()
        .map(|(id, kind, reason, created_at, items)| {
            Ok(HistoryEntry {
                id: stored_uuid(&id)?,
                kind: EntryKind::parse(&kind),
                reason,
                created_at: from_micros(created_at),
                changes: Vec::new(),
                items: super::stored_items(items.as_deref())?,
            })
        })
        .collect::<ApiResult<_>>()?;
    let index: BTreeMap<String, usize> =
        history.iter().enumerate().map(|(i, entry)| (entry.id.to_string(), i)).collect();
    for (entry_id, currency, amount, balance_after) in postings {
        if let Some(&i) = index.get(&entry_id) {
            history[i].changes.push(BalanceChange {
                currency: stored_code(&currency)?,
                amount,
                balance_after,
            });
        }
    }
    Ok((history, next_cursor))
}
