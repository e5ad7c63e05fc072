//! The players' event outbox and `GET /v1/events`, a server-sent event stream.
//!
//! Events are rows written in the same transaction as the change they announce, so a stream
//! never announces what did not commit, and any instance can serve any player's stream (it
//! reads the rows). The stream polls its player's new rows; `Last-Event-ID` resumes it.

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
use crate::db::now_micros;
use crate::error::ApiResult;

/// Events read per poll.
const EVENTS_PER_POLL_MAX: i64 = 100;
/// How often a stream looks for new events.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

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
    let start = match resume_after {
        Some(id) => id,
        None => {
            let latest: Option<i64> =
                sqlx::query_scalar("select max(id) from player_event where player_id = $1")
                    .bind(player.player_id.to_string())
                    .fetch_one(state.db().pool())
                    .await?;
            latest.unwrap_or(0)
        }
    };
    let player_id = player.player_id.to_string();
    let stream = futures_util::stream::unfold(
        (state, player_id, start, Vec::<Event>::new()),
        |(state, player_id, mut last, mut pending)| async move {
            loop {
                if let Some(event) = pending.pop() {
                    return Some((Ok(event), (state, player_id, last, pending)));
                }
                let rows: Result<Vec<(i64, String, String)>, sqlx::Error> = sqlx::query_as(
                "select id, event_type, data from player_event where player_id = $1 and id > $2 order by id limit $3",
            )
            .bind(&player_id)
            .bind(last)
            .bind(EVENTS_PER_POLL_MAX)
            .fetch_all(state.db().pool())
            .await;
                match rows {
                    Ok(rows) if !rows.is_empty() => {
                        last = rows.last().map_or(last, |(id, ..)| *id);
                        pending = rows
                            .into_iter()
                            .rev()
                            .map(|(id, event_type, data)| {
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
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
