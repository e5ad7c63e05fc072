//! The players' event outbox and `GET /v1/events`, a server-sent event stream.
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

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use sqlx::AnyConnection;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::PlayerAuth;
use crate::db::{Backend, now_micros};
use crate::error::ApiResult;

/// Events read per poll.
const EVENTS_PER_POLL_MAX: i64 = 100;
/// How often a stream looks for new events.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A stream's position: (transaction id, event id) of the last event it read.
type Cursor = (i64, i64);

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
    sqlx::query("insert into player_event (player_id, event_type, data, created_at) values ($1, $2, $3, $4)")
        .bind(player_id.to_string())
        .bind(event_type)
        .bind(serde_json::to_string(data).map_err(anyhow::Error::from)?)
        .bind(now_micros())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The logged-in player's events as they happen: `order.updated`, `wallet.updated`,
/// `inventory.updated`. Each event's `id` can be sent back as `Last-Event-ID` to resume.
#[utoipa::path(
    get, path = "/v1/events", tag = "players",
    security(("player" = [])),
    params(("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    responses((status = 200, content_type = "text/event-stream", description = "Server-sent events", body = String))
)]
pub async fn stream_events(
    State(state): State<AppState>,
    player: PlayerAuth,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let resume_after = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i64>().ok());
    let player_id = player.player_id.to_string();
    let horizon = horizon_sql(state.db().backend());
    let resumed: Option<Cursor> = match resume_after {
        Some(id) => {
            sqlx::query_as("select tx_id, id from player_event where player_id = $1 and id = $2")
                .bind(&player_id)
                .bind(id)
                .fetch_optional(state.db().pool())
                .await?
        }
        None => None,
    };
    // A new stream (or one resuming from an event it no longer has) starts after the newest
    // event it could have read: everything committed from now on is announced.
    let start = match resumed {
        Some(cursor) => cursor,
        None => sqlx::query_as::<_, Cursor>(sqlx::AssertSqlSafe(format!(
            "select tx_id, id from player_event where player_id = $1 and tx_id < {horizon} \
             order by tx_id desc, id desc limit 1"
        )))
        .bind(&player_id)
        .fetch_optional(state.db().pool())
        .await?
        .unwrap_or((-1, 0)),
    };
    let query: std::sync::Arc<str> = format!(
        "select tx_id, id, event_type, data from player_event \
         where player_id = $1 and (tx_id, id) > ($2, $3) and tx_id < {horizon} order by tx_id, id limit $4"
    )
    .into();
    let stream = futures_util::stream::unfold(
        (state, player_id, start, Vec::<Event>::new()),
        move |(state, player_id, mut last, mut pending)| {
            // Only the two fixed horizon expressions are ever formatted into it.
            let query = query.clone();
            async move {
                loop {
                    if let Some(event) = pending.pop() {
                        return Some((Ok(event), (state, player_id, last, pending)));
                    }
                    let rows: Result<Vec<(i64, i64, String, String)>, sqlx::Error> =
                        sqlx::query_as(sqlx::AssertSqlSafe(query.clone()))
                            .bind(&player_id)
                            .bind(last.0)
                            .bind(last.1)
                            .bind(EVENTS_PER_POLL_MAX)
                            .fetch_all(state.db().pool())
                            .await;
                    match rows {
                        Ok(rows) if !rows.is_empty() => {
                            last = rows.last().map_or(last, |(tx_id, id, ..)| (*tx_id, *id));
                            pending = rows
                                .into_iter()
                                .rev()
                                .map(|(_, id, event_type, data)| {
                                    Event::default().id(id.to_string()).event(event_type).data(data)
                                })
                                .collect();
                        }
                        Ok(_) => tokio::time::sleep(POLL_INTERVAL).await,
                        Err(error) => {
                            tracing::warn!(%error, "event stream could not read events; retrying");
                            tokio::time::sleep(POLL_INTERVAL * 5).await;
                        }
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
