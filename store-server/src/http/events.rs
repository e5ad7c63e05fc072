//! `GET /v1/events`: a player's event outbox as a server-sent event stream.
//!
//! The stream polls its player's new events ([`crate::ledger::events::read_after`], in commit
//! order, never skipping one); `Last-Event-ID` resumes it.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::ApiResult;
use crate::ledger::events::{StoredEvent, read_after, start_cursor};
use crate::players::auth::PlayerAuth;

/// Events read per poll.
const EVENTS_PER_POLL_MAX: i64 = 100;
/// How often a stream looks for new events.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream_events))
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
    let db = state.db().clone();
    let start = start_cursor(&db, player.player_id, resume_after).await?;
    let stream = futures_util::stream::unfold(
        (db, player.player_id, start, Vec::<StoredEvent>::new()),
        |(db, player_id, mut last, mut pending)| async move {
            loop {
                if let Some(event) = pending.pop() {
                    let sent =
                        Event::default().id(event.id.to_string()).event(event.event_type).data(event.data);
                    return Some((Ok(sent), (db, player_id, last, pending)));
                }
                match read_after(&db, player_id, last, EVENTS_PER_POLL_MAX).await {
                    Ok((events, after)) if !events.is_empty() => {
                        last = after;
                        pending = events.into_iter().rev().collect();
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
