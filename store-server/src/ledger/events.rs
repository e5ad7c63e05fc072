//! The players' event outbox, which `GET /v1/events` (a server-sent event stream, in
//! `http::events`) reads.
//!
//! Events are rows written in the same transaction as the change they announce, so a stream
//! never announces what did not commit, and any instance can serve any player's stream (it
//! reads the rows). The stream polls its player's new rows; `Last-Event-ID` resumes it.
//!
//! A stream reads in commit order, never skipping an event: its cursor is (transaction, id),
//! and it reads only events whose transaction is older than every transaction still running
//! (on PostgreSQL, `pg_snapshot_xmin` of the current snapshot), so nothing can later commit
//! behind the cursor. An identity id alone is taken at insert, not at commit: two writers can
//! commit ids out of order, and `id > last` would skip the slower one. SQLite has one writer at
//! a time, so there every transaction column is 0 and the order is the id's. An event waits at
//! most as long as the longest write transaction running when it commits.

use sqlx::AnyConnection;
use uuid::Uuid;

use crate::db::{Backend, Db, now_micros};
use crate::error::ApiResult;

/// A stream's position: (transaction id, event id) of the last event it read.
pub type Cursor = (i64, i64);

/// One stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its id, which a stream sends back as `Last-Event-ID` to resume.
    pub id: i64,
    /// `order.updated`, `wallet.updated`, `inventory.updated`.
    pub event_type: String,
    /// Its JSON.
    pub data: String,
}

/// The SQL for the oldest transaction that may still commit: events of older transactions
/// are final. SQLite's single writer commits in id order (every transaction id is 0).
fn horizon_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "1",
        Backend::Postgres => "pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
    }
}

/// Announces a change to a player's stream, in the transaction that makes it.
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
    push_event_json(conn, player_id, event_type, &data).await
}

/// [`push_event`] with the event's JSON already made.
///
/// # Errors
/// Fails when the database does.
pub async fn push_event_json(
    conn: &mut AnyConnection,
    player_id: Uuid,
    event_type: &str,
    data: &str,
) -> ApiResult<()> {
    sqlx::query("insert into player_event (player_id, event_type, data, created_at) values ($1, $2, $3, $4)")
        .bind(player_id.to_string())
        .bind(event_type)
        .bind(data)
        .bind(now_micros())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Where a player's stream starts: after `resume_after` (a `Last-Event-ID`) when the player has
/// that event, otherwise after the newest event it could have read, so everything committed
/// from now on is announced.
///
/// # Errors
/// Fails when the database does.
pub async fn start_cursor(db: &Db, player_id: Uuid, resume_after: Option<i64>) -> ApiResult<Cursor> {
    let player_id = player_id.to_string();
    if let Some(id) = resume_after {
        let resumed: Option<Cursor> =
            sqlx::query_as("select tx_id, id from player_event where player_id = $1 and id = $2")
                .bind(&player_id)
                .bind(id)
                .fetch_optional(db.pool())
                .await?;
        if let Some(cursor) = resumed {
            return Ok(cursor);
        }
    }
    let horizon = horizon_sql(db.backend());
    // Only the two fixed horizon expressions are ever formatted into the SQL.
    let newest: Option<Cursor> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select tx_id, id from player_event where player_id = $1 and tx_id < {horizon} \
         order by tx_id desc, id desc limit 1"
    )))
    .bind(&player_id)
    .fetch_optional(db.pool())
    .await?;
    Ok(newest.unwrap_or((-1, 0)))
}

/// A player's events after `after`, in commit order, at most `limit`, with the cursor after the
/// last one read.
///
/// # Errors
/// Fails when the database does.
pub async fn read_after(
    db: &Db,
    player_id: Uuid,
    after: Cursor,
    limit: i64,
) -> Result<(Vec<StoredEvent>, Cursor), sqlx::Error> {
    let horizon = horizon_sql(db.backend());
    let rows: Vec<(i64, i64, String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select tx_id, id, event_type, data from player_event \
         where player_id = $1 and (tx_id, id) > ($2, $3) and tx_id < {horizon} order by tx_id, id limit $4"
    )))
    .bind(player_id.to_string())
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    let last = rows.last().map_or(after, |(tx_id, id, ..)| (*tx_id, *id));
    let events =
        rows.into_iter().map(|(_, id, event_type, data)| StoredEvent { id, event_type, data }).collect();
    Ok((events, last))
}
