//! `GET /v1/events`: a player's event outbox as a server-sent event stream.
//!
//! The stream polls its player's new events ([`crate::ledger::events::EventStream`]: read from
//! the player's entries and event rows, in commit order, never skipping one); `Last-Event-ID`
//! resumes it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use store_api::ErrorCode;
use uuid::Uuid;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::ledger::events::{EventStream, StoredEvent};
use crate::players::auth::PlayerAuth;

/// Event streams one player may hold open at once on an instance (a game, a second device, a
/// reconnect overlapping the old stream): each polls the database, so they are bounded.
pub const STREAMS_PER_PLAYER_MAX: usize = 4;

/// The event streams open on this instance, per player.
#[derive(Debug, Default, Clone)]
pub struct OpenStreams(Arc<Mutex<HashMap<Uuid, usize>>>);

/// One open stream's place, given back when the stream ends (the client goes away).
struct StreamSlot {
    streams: OpenStreams,
    player_id: Uuid,
}

impl OpenStreams {
    fn open(&self, player_id: Uuid) -> ApiResult<StreamSlot> {
        let mut open = self.0.lock().map_err(|_| anyhow::anyhow!("the stream registry is poisoned"))?;
        let count = open.entry(player_id).or_insert(0);
        if *count >= STREAMS_PER_PLAYER_MAX {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                format!("this player has {STREAMS_PER_PLAYER_MAX} event streams open; close one first"),
            )
            .with_detail("retry_after_s", 1));
        }
        *count += 1;
        Ok(StreamSlot { streams: self.clone(), player_id })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.streams.0.lock()
            && let Some(count) = open.get_mut(&self.player_id)
        {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.player_id);
            }
        }
    }
}

/// Events read per poll.
const EVENTS_PER_POLL_MAX: i64 = 100;
/// How often a stream looks for new events.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream_events))
}

/// The logged-in player's events as they happen: `order.updated`, `wallet.updated`,
/// `inventory.updated`. Each event's `id` (opaque text) can be sent back as `Last-Event-ID` to
/// resume right after it.
#[utoipa::path(
    get, path = "/v1/events", tag = "players",
    security(("player" = [])),
    params(("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    responses(
        (status = 200, content_type = "text/event-stream", description = "Server-sent events", body = String),
        (status = 429, body = store_api::ErrorBody, description = "rate_limited: this player has 4 streams open"),
    )
)]
pub async fn stream_events(
    State(state): State<AppState>,
    player: PlayerAuth,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let last_event_id = headers.get("last-event-id").and_then(|value| value.to_str().ok());
    let slot = state.event_streams().open(player.player_id)?;
    let db = state.db().clone();
    let events = EventStream::start(&db, player.player_id, last_event_id).await?;
    // The slot lives in the stream's state: it is given back when the stream is dropped.
    let stream = futures_util::stream::unfold(
        (db, slot, events, Vec::<StoredEvent>::new()),
        |(db, slot, mut events, mut pending)| async move {
            loop {
                if let Some(event) = pending.pop() {
                    let sent = Event::default().id(event.id).event(event.event_type).data(event.data);
                    return Some((Ok(sent), (db, slot, events, pending)));
                }
                match events.read(&db, EVENTS_PER_POLL_MAX).await {
                    Ok(read) if !read.is_empty() => pending = read.into_iter().rev().collect(),
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
