//! A player's event stream, which `GET /v1/events` (server-sent events, in `http::events`)
//! serves, read from two sources:
//!
//! - **The player's entries.** `wallet.updated` and `inventory.updated` are not stored: they are
//!   built from the entry's wallet postings and item changes ([`AppendedEntry::events`]), read
//!   through `entry_player_idx`. A purchase writes no row for its events.
//! - **`player_event` rows** for everything else (`order.updated`, tab events), written in the
//!   transaction of the change they announce.
//!
//! Either way a stream never announces what did not commit, any instance can serve any player's
//! stream, and nothing is skipped:
//!
//! - A player's entry ids increase in commit order. Every entry naming a player is written
//!   holding the player's lock (PostgreSQL: the player row, `for no key update`; SQLite: the
//!   database's single writer), and its id is after the player's newest entry ([`EntryHeads`]),
//!   whatever the clocks of the instances say. So once a stream has read a player's entry, no
//!   entry of that player can commit behind it, and the stream's entry cursor is the last id read.
//! - Rows are read in commit order too: their cursor is (transaction, id), and a stream reads only
//!   rows whose transaction is older than every transaction still running (on PostgreSQL,
//!   `pg_snapshot_xmin` of the current snapshot), so nothing can later commit behind the cursor.
//!   An identity id alone is taken at insert, not at commit: two writers can commit ids out of
//!   order, and `id > last` would skip the slower one. SQLite has one writer at a time, so there
//!   every transaction column is 0 and the order is the id's. A row waits at most as long as the
//!   longest write transaction running when it commits.
//!
//! Within one read the two sources are merged by time. An event's SSE id is the stream's
//! position in both, which `Last-Event-ID` resumes exactly ([`Cursor`]).
//!
//! Before migration 0015 the ledger's events were rows too. `ledger_event_start` keeps, per
//! player, the newest entry at that migration: the stream reads that player's entries only after
//! it (the older ones were announced by their rows), and an event id of those days (a row's
//! integer id) still resumes where it was.

use std::collections::{BTreeMap, HashMap, VecDeque};

use sqlx::AnyConnection;
use store_api::ledger::BalanceChange;
use uuid::Uuid;

use super::reads::{stored_code, stored_uuid};
use super::{AppendedEntry, stored_items};
use crate::db::{Backend, Db, now_micros};
use crate::error::ApiResult;

/// The newest entry id of each player a transaction holds locked, so the entries it appends for
/// them get later ids: an entry's id is a fresh UUIDv7 unless that is not after the player's
/// newest entry (a clock behind another instance's, or stepped back), then the next id after it.
#[derive(Debug, Default)]
pub(crate) struct EntryHeads(HashMap<Uuid, Uuid>);

impl EntryHeads {
    /// Records a player's newest entry id as read (`None`: the player has none).
    ///
    /// # Errors
    /// A stored id that is not a UUID.
    pub(crate) fn read(&mut self, player: Uuid, newest: Option<&str>) -> ApiResult<()> {
        if let Some(newest) = newest {
            self.0.insert(player, stored_uuid(newest)?);
        }
        Ok(())
    }

    /// Locks the players (PostgreSQL: their rows, `for no key update`, in id order; SQLite's
    /// writer holds the database) and reads their newest entry ids.
    ///
    /// # Errors
    /// Fails when the database does.
    pub(crate) async fn lock(conn: &mut AnyConnection, players: &[Uuid]) -> ApiResult<Self> {
        let mut heads = Self::default();
        if players.is_empty() {
            return Ok(heads);
        }
        let ids: Vec<String> = players.iter().map(Uuid::to_string).collect();
        let ids = serde_json::to_string(&ids).map_err(anyhow::Error::from)?;
        let sql = if conn.backend_name().starts_with("Postgre") {
            "select id, (select max(e.id) from entry e where e.player_id = p.id) from player p \
             where id in (select jsonb_array_elements_text(cast($1 as jsonb))) order by id collate \"C\" \
             for no key update"
        } else {
            "select id, (select max(e.id) from entry e where e.player_id = p.id) from player p \
             where id in (select value from json_each($1))"
        };
        let found: Vec<(String, Option<String>)> =
            sqlx::query_as(sql).bind(ids).fetch_all(&mut *conn).await?;
        for (player, newest) in found {
            heads.read(stored_uuid(&player)?, newest.as_deref())?;
        }
        Ok(heads)
    }

    /// The id of a new entry for `player` (none: any fresh id), remembered as the player's newest.
    pub(crate) fn next(&mut self, player: Option<Uuid>) -> Uuid {
        let fresh = Uuid::now_v7();
        let Some(player) = player else { return fresh };
        let id = match self.0.get(&player) {
            Some(newest) if fresh <= *newest => after(*newest),
            _ => fresh,
        };
        self.0.insert(player, id);
        id
    }
}

/// The UUIDv7 right after `id`: its random bits plus one (they are a counter here), carried into
/// the millisecond when they overflow. Version and variant bits stay as they are.
fn after(id: Uuid) -> Uuid {
    const RAND_B: u128 = (1 << 62) - 1;
    const RAND_A_SHIFT: u32 = 64;
    const RAND_A: u128 = 0xfff << RAND_A_SHIFT;
    const MILLIS_SHIFT: u32 = 80;
    let bits = id.as_u128();
    let (rand_b, rand_a) = (bits & RAND_B, (bits & RAND_A) >> RAND_A_SHIFT);
    let (millis, rand_a, rand_b) = if rand_b < RAND_B {
        (bits >> MILLIS_SHIFT, rand_a, rand_b + 1)
    } else if rand_a < 0xfff {
        (bits >> MILLIS_SHIFT, rand_a + 1, 0)
    } else {
        ((bits >> MILLIS_SHIFT) + 1, 0, 0)
    };
    let fixed = bits & !(RAND_B | RAND_A | (u128::MAX << MILLIS_SHIFT));
    Uuid::from_u128((millis << MILLIS_SHIFT) | (rand_a << RAND_A_SHIFT) | fixed | rand_b)
}

/// A stream's position in both of its sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// (transaction id, event id) of the last row read.
    rows: (i64, i64),
    /// The last entry read (none: none yet).
    entry: Option<Uuid>,
    /// How many of that entry's events were sent when the stream stopped inside it (0: all).
    sent_of_entry: usize,
}

/// One event to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its id: the stream's position after it, which `Last-Event-ID` resumes.
    pub id: String,
    /// `order.updated`, `wallet.updated`, `inventory.updated`, ...
    pub event_type: String,
    /// Its JSON.
    pub data: String,
}

/// One player's stream: where it is, and where that player's entries start to be read (the
/// newest entry at migration 0015, whose events are rows).
#[derive(Debug, Clone)]
pub struct EventStream {
    player_id: Uuid,
    first_entry_after: Option<Uuid>,
    cursor: Cursor,
}

/// The SQL for the oldest transaction that may still commit: rows of older transactions are
/// final. SQLite's single writer commits in id order (every transaction id is 0).
fn horizon_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "1",
        Backend::Postgres => "pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
    }
}

/// Announces a change other than an entry's to a player's stream, in the transaction that
/// makes it.
///
/// # Errors
/// Fails when the database does.
pub async fn push_event<T: serde::Serialize>(
    conn: &mut AnyConnection,
    player_id: Uuid,
    event_type: &str,
    data: &T,
) -> ApiResult<()> {
    let data = serde_json::to_string(data).map_err(anyhow::Error::from)?;
    sqlx::query("insert into player_event (player_id, event_type, data, created_at) values ($1, $2, $3, $4)")
        .bind(player_id.to_string())
        .bind(event_type)
        .bind(data)
        .bind(now_micros())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A row read: (transaction id, id, type, data, time).
type EventRow = (i64, i64, String, String, i64);

/// One step through an entry's events: the event (none for an entry that changed no wallet or
/// item), and how many of the entry's events are sent after it (0: all).
struct EntryStep {
    entry: Uuid,
    created_at: i64,
    sent: usize,
    event: Option<(&'static str, String)>,
}

/// An entry's part of a read: its events (none for an entry that changed no wallet or item).
struct EntryEvents {
    id: Uuid,
    created_at: i64,
    events: Vec<(&'static str, String)>,
}

impl EventStream {
    /// Where a player's stream starts: after `last_event_id` when it is one of this stream's ids,
    /// otherwise after the newest event it could have read, so everything committed from now on
    /// is announced.
    ///
    /// # Errors
    /// Fails when the database does.
    pub async fn start(db: &Db, player_id: Uuid, last_event_id: Option<&str>) -> ApiResult<Self> {
        let player = player_id.to_string();
        let first_entry_after: Option<String> =
            sqlx::query_scalar("select entry_id from ledger_event_start where player_id = $1")
                .bind(&player)
                .fetch_optional(db.pool())
                .await?;
        let first_entry_after = first_entry_after.as_deref().map(stored_uuid).transpose()?;
        let mut stream = Self {
            player_id,
            first_entry_after,
            cursor: Cursor { rows: (-1, 0), entry: first_entry_after, sent_of_entry: 0 },
        };
        if let Some(cursor) = stream.resumed(db, last_event_id).await? {
            stream.cursor = cursor;
            return Ok(stream);
        }
        let horizon = horizon_sql(db.backend());
        // Only the two fixed horizon expressions are ever formatted into the SQL.
        let newest: Option<(i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select tx_id, id from player_event where player_id = $1 and tx_id < {horizon} \
             order by tx_id desc, id desc limit 1"
        )))
        .bind(&player)
        .fetch_optional(db.pool())
        .await?;
        let newest_entry: Option<String> =
            sqlx::query_scalar("select max(id) from entry where player_id = $1")
                .bind(&player)
                .fetch_one(db.pool())
                .await?;
        let newest_entry = newest_entry.as_deref().map(stored_uuid).transpose()?;
        stream.cursor.rows = newest.unwrap_or((-1, 0));
        stream.cursor.entry = newest_entry.max(first_entry_after);
        Ok(stream)
    }

    /// The cursor a `Last-Event-ID` names, if it is one: a row's id (an id sent before any of
    /// the player's entries was read from the entries), or `tx.id.entry[.sent]`.
    async fn resumed(&self, db: &Db, last_event_id: Option<&str>) -> ApiResult<Option<Cursor>> {
        let Some(text) = last_event_id else { return Ok(None) };
        if let Ok(id) = text.parse::<i64>() {
            let row: Option<(i64, i64)> =
                sqlx::query_as("select tx_id, id from player_event where player_id = $1 and id = $2")
                    .bind(self.player_id.to_string())
                    .bind(id)
                    .fetch_optional(db.pool())
                    .await?;
            return Ok(row.map(|rows| Cursor { rows, entry: self.first_entry_after, sent_of_entry: 0 }));
        }
        let parts: Vec<&str> = text.split('.').collect();
        let parsed = match parts.as_slice() {
            [tx, id, entry] => (tx.parse().ok(), id.parse().ok(), Uuid::try_parse(entry).ok(), Some(0)),
            [tx, id, entry, sent] => {
                (tx.parse().ok(), id.parse().ok(), Uuid::try_parse(entry).ok(), sent.parse().ok())
            }
            _ => return Ok(None),
        };
        let (Some(tx), Some(id), Some(entry), Some(sent_of_entry)) = parsed else { return Ok(None) };
        // Never before the player's first entry read from the entries: those were rows.
        let cursor = if Some(entry) < self.first_entry_after {
            Cursor { rows: (tx, id), entry: self.first_entry_after, sent_of_entry: 0 }
        } else {
            Cursor { rows: (tx, id), entry: Some(entry), sent_of_entry }
        };
        Ok(Some(cursor))
    }

    /// The SSE id of a position: a row's id while the stream has read no entry (so the ids of
    /// the days when every event was a row stay what they were), `tx.id.entry` after that, with
    /// `.sent` when it stopped inside an entry's events.
    fn id_of(&self, cursor: Cursor) -> String {
        match cursor.entry {
            entry if entry == self.first_entry_after && cursor.sent_of_entry == 0 => {
                cursor.rows.1.to_string()
            }
            None => cursor.rows.1.to_string(),
            Some(entry) if cursor.sent_of_entry == 0 => {
                format!("{}.{}.{}", cursor.rows.0, cursor.rows.1, entry.simple())
            }
            Some(entry) => {
                format!("{}.{}.{}.{}", cursor.rows.0, cursor.rows.1, entry.simple(), cursor.sent_of_entry)
            }
        }
    }

    /// The player's next events, in commit order within each source and by time between them,
    /// at most `limit` rows and `limit` entries; the stream moves past them.
    ///
    /// # Errors
    /// Fails when the database does.
    pub async fn read(&mut self, db: &Db, limit: i64) -> ApiResult<Vec<StoredEvent>> {
        let rows = self.read_rows(db, limit).await?;
        let entries = self.read_entries(db, limit).await?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let (rows_cut, entries_cut) = (rows.len() >= limit, entries.len() >= limit);
        let mut rows: VecDeque<EventRow> = rows.into();
        // Each entry's events in order, with the entry's position after each; an entry without
        // events is one step that sends nothing (it moves the cursor).
        let mut steps: VecDeque<EntryStep> = VecDeque::new();
        for entry in entries {
            let skip = if Some(entry.id) == self.cursor.entry { self.cursor.sent_of_entry } else { 0 };
            let total = entry.events.len();
            if total <= skip {
                steps.push_back(EntryStep {
                    entry: entry.id,
                    created_at: entry.created_at,
                    sent: 0,
                    event: None,
                });
            }
            for (k, event) in entry.events.into_iter().enumerate().skip(skip) {
                let sent = if k + 1 == total { 0 } else { k + 1 };
                steps.push_back(EntryStep {
                    entry: entry.id,
                    created_at: entry.created_at,
                    sent,
                    event: Some(event),
                });
            }
        }
        // Merged by time, each source in its own order. Entries before rows at the same
        // microsecond: the money moved, then the order says so. A source read to its limit may
        // have more: the merge stops when it runs out, since what it has not read could come
        // before the other's next item.
        let mut events = Vec::new();
        loop {
            let entry_first = match (rows.front(), steps.front()) {
                (None, None) => break,
                (None, Some(_)) if rows_cut => break,
                (Some(_), None) if entries_cut => break,
                (Some(row), Some(step)) => step.created_at <= row.4,
                (_, step) => step.is_some(),
            };
            let sent = if entry_first {
                let Some(step) = steps.pop_front() else { break };
                self.cursor.entry = Some(step.entry);
                self.cursor.sent_of_entry = step.sent;
                step.event.map(|(event_type, data)| (event_type.to_owned(), data))
            } else {
                let Some((tx, id, event_type, data, _)) = rows.pop_front() else { break };
                self.cursor.rows = (tx, id);
                Some((event_type, data))
            };
            if let Some((event_type, data)) = sent {
                events.push(StoredEvent { id: self.id_of(self.cursor), event_type, data });
            }
        }
        Ok(events)
    }

    async fn read_rows(&self, db: &Db, limit: i64) -> ApiResult<Vec<EventRow>> {
        let horizon = horizon_sql(db.backend());
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select tx_id, id, event_type, data, created_at from player_event \
             where player_id = $1 and (tx_id, id) > ($2, $3) and tx_id < {horizon} order by tx_id, id limit $4"
        )))
        .bind(self.player_id.to_string())
        .bind(self.cursor.rows.0)
        .bind(self.cursor.rows.1)
        .bind(limit)
        .fetch_all(db.pool())
        .await?)
    }

    /// The player's entries after the cursor (from the one it stopped inside), with their events.
    async fn read_entries(&self, db: &Db, limit: i64) -> ApiResult<Vec<EntryEvents>> {
        let player = self.player_id.to_string();
        let from = self.cursor.entry.map(|entry| entry.to_string()).unwrap_or_default();
        let sql = if self.cursor.sent_of_entry > 0 {
            "select id, created_at, items from entry where player_id = $1 and id >= $2 order by id limit $3"
        } else {
            "select id, created_at, items from entry where player_id = $1 and id > $2 order by id limit $3"
        };
        let entries: Vec<(String, i64, Option<String>)> =
            sqlx::query_as(sql).bind(&player).bind(&from).bind(limit).fetch_all(db.pool()).await?;
        let (Some((first, ..)), Some((last, ..))) = (entries.first(), entries.last()) else {
            return Ok(Vec::new());
        };
        // Every wallet the entry moved, as `append_entry` announced them; its item changes are in
        // its row.
        let postings: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
            "select p.entry_id, p.account_id, p.currency, p.amount, p.balance_after \
             from posting p join entry e on e.id = p.entry_id \
             where e.player_id = $1 and e.id >= $2 and e.id <= $3 and p.account_id like 'w:%'",
        )
        .bind(&player)
        .bind(first)
        .bind(last)
        .fetch_all(db.pool())
        .await?;
        // Per entry, wallets in account id order (byte order), as netted.
        let mut wallets: HashMap<&str, BTreeMap<&str, BalanceChange>> = HashMap::new();
        for (entry, account, currency, amount, after) in &postings {
            let change =
                BalanceChange { currency: stored_code(currency)?, amount: *amount, balance_after: *after };
            wallets.entry(entry).or_default().insert(account, change);
        }
        entries
            .iter()
            .map(|(id, created_at, items)| {
                let appended = AppendedEntry {
                    id: stored_uuid(id)?,
                    changes: wallets
                        .remove(id.as_str())
                        .map(|c| c.into_values().collect())
                        .unwrap_or_default(),
                    items: stored_items(items.as_deref())?,
                };
                Ok(EntryEvents { id: appended.id, created_at: *created_at, events: appended.events()? })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::{EntryHeads, after};

    #[test]
    fn an_id_after_another_stays_a_v7_id_and_sorts_after_it() {
        let id = Uuid::now_v7();
        let next = after(id);
        assert!(next > id && next.to_string() > id.to_string());
        assert_eq!((next.get_version_num(), next.get_variant()), (7, uuid::Variant::RFC4122));
        assert_eq!(next.get_timestamp(), id.get_timestamp());
        // The random bits full: the millisecond moves on.
        let full = Uuid::from_u128(id.as_u128() | 0x0fff_3fff_ffff_ffff_ffff);
        let carried = after(full);
        assert!(carried > full);
        assert_eq!(carried.get_version_num(), 7);
        assert_eq!(carried.as_u128() >> 80, (full.as_u128() >> 80) + 1);
    }

    #[test]
    fn a_players_next_id_follows_the_newest_even_when_the_clock_is_behind() {
        let mut heads = EntryHeads::default();
        let player = Uuid::now_v7();
        // An entry another instance wrote with its clock an hour ahead.
        let ahead = Uuid::from_u128(Uuid::now_v7().as_u128() + (3_600_000u128 << 80));
        heads.read(player, Some(&ahead.to_string())).expect("an id");
        let first = heads.next(Some(player));
        let second = heads.next(Some(player));
        assert!(ahead < first && first < second, "{ahead} {first} {second}");
        // Another player's ids are not held back.
        assert!(heads.next(Some(Uuid::now_v7())) < ahead);
    }
}
