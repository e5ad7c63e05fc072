//! The player's live event stream (`GET /v1/events`, server-sent events) read into typed
//! [`StoreEvent`]s.

use bytes_buffer::LineBuffer;
use futures_util::StreamExt as _;
use store_api::orders::{InventoryUpdated, Order, WalletUpdated};

use crate::client::{StoreError, StoreResult};

/// Longest event the stream accepts, in bytes: a bound on what one event may buffer.
pub const EVENT_BYTES_MAX: usize = 256 * 1024;

/// One event from the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreEvent {
    /// Balances changed; `balance_after` in each change is the new balance.
    WalletUpdated(WalletUpdated),
    /// Item quantities changed; `quantity_after` is the new quantity.
    InventoryUpdated(InventoryUpdated),
    /// An order moved to a new state.
    OrderUpdated(Box<Order>),
    /// An event type this client does not know; skipped.
    Unknown(String),
}

/// An event with the id to resume after.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamedEvent {
    /// Send it back as `Last-Event-ID` to resume after this event.
    pub id: Option<String>,
    /// The event.
    pub event: StoreEvent,
}

/// An open event stream.
pub struct EventStream {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    lines: LineBuffer,
    id: Option<String>,
    event_type: Option<String>,
    data: String,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").field("id", &self.id).finish_non_exhaustive()
    }
}

impl EventStream {
    pub(crate) fn new(response: reqwest::Response) -> Self {
        Self::from_body(response.bytes_stream().boxed())
    }

    fn from_body(body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>) -> Self {
        Self { body, lines: LineBuffer::default(), id: None, event_type: None, data: String::new() }
    }

    /// The next event; `None` when the server closed the stream.
    ///
    /// # Errors
    /// A transport failure mid-stream, an event over [`EVENT_BYTES_MAX`], or an event whose
    /// data does not parse.
    pub async fn next(&mut self) -> StoreResult<Option<StreamedEvent>> {
        loop {
            while let Some(line) = self.lines.next_line()? {
                if let Some(event) = self.accept_line(&line)? {
                    return Ok(Some(event));
                }
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.lines.push(&chunk)?,
                Some(Err(error)) => return Err(StoreError::Transport(error.to_string())),
                None => return Ok(None),
            }
        }
    }

    /// Applies one line of the SSE format; a blank line ends an event.
    fn accept_line(&mut self, line: &str) -> StoreResult<Option<StreamedEvent>> {
        if line.is_empty() {
            if self.data.is_empty() && self.event_type.is_none() {
                return Ok(None);
            }
            let event_type = self.event_type.take().unwrap_or_else(|| "message".to_owned());
            let data = std::mem::take(&mut self.data);
            let event = parse_event(&event_type, &data)?;
            return Ok(Some(StreamedEvent { id: self.id.clone(), event }));
        }
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => self.id = Some(value.to_owned()),
            "event" => self.event_type = Some(value.to_owned()),
            "data" => {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                if self.data.len() > EVENT_BYTES_MAX {
                    return Err(StoreError::Decode(format!("an event is over {EVENT_BYTES_MAX} bytes")));
                }
            }
            _ => {}
        }
        Ok(None)
    }
}

fn parse_event(event_type: &str, data: &str) -> StoreResult<StoreEvent> {
    let decode = |error: serde_json::Error| StoreError::Decode(format!("{event_type}: {error}"));
    Ok(match event_type {
        "wallet.updated" => StoreEvent::WalletUpdated(serde_json::from_str(data).map_err(decode)?),
        "inventory.updated" => StoreEvent::InventoryUpdated(serde_json::from_str(data).map_err(decode)?),
        "order.updated" => StoreEvent::OrderUpdated(Box::new(serde_json::from_str(data).map_err(decode)?)),
        other => StoreEvent::Unknown(other.to_owned()),
    })
}

mod bytes_buffer {
    //! Splits a byte stream into lines without holding more than one event's worth.

    use super::EVENT_BYTES_MAX;
    use crate::client::{StoreError, StoreResult};

    #[derive(Debug, Default)]
    pub struct LineBuffer {
        pending: Vec<u8>,
    }

    impl LineBuffer {
        pub fn push(&mut self, chunk: &[u8]) -> StoreResult<()> {
            self.pending.extend_from_slice(chunk);
            if self.pending.len() > EVENT_BYTES_MAX.saturating_mul(2) {
                return Err(StoreError::Decode(format!("a line is over {EVENT_BYTES_MAX} bytes")));
            }
            Ok(())
        }

        /// The next complete line, without its `\n` or `\r\n`.
        pub fn next_line(&mut self) -> StoreResult<Option<String>> {
            let Some(end) = self.pending.iter().position(|&byte| byte == b'\n') else { return Ok(None) };
            let mut line: Vec<u8> = self.pending.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            String::from_utf8(line)
                .map(Some)
                .map_err(|_| StoreError::Decode("an event is not UTF-8".to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads every event from a body delivered one byte per chunk, to show that chunking does not
    /// matter.
    async fn read_all(text: &'static str) -> StoreResult<Vec<StreamedEvent>> {
        let chunks: Vec<reqwest::Result<bytes::Bytes>> =
            text.as_bytes().chunks(1).map(|byte| Ok(bytes::Bytes::copy_from_slice(byte))).collect();
        let mut stream = EventStream::from_body(futures_util::stream::iter(chunks).boxed());
        let mut events = Vec::new();
        while let Some(event) = stream.next().await? {
            events.push(event);
        }
        Ok(events)
    }

    #[tokio::test]
    async fn events_are_read_whatever_the_chunking_and_unknown_types_are_kept_as_unknown() {
        let text = ": keep-alive\n\nid: 7\nevent: wallet.updated\ndata: {\"entry_id\":\"019a6b1e-0001-7000-8000-000000000001\",\"changes\":[{\"currency\":\"gold\",\"amount\":-50,\"balance_after\":50}]}\n\nid: 8\r\nevent: future.thing\r\ndata: {}\r\n\r\n";
        let events = read_all(text).await.expect("read");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id.as_deref(), Some("7"));
        let StoreEvent::WalletUpdated(update) = &events[0].event else {
            panic!("a wallet update: {events:?}")
        };
        assert_eq!(update.changes[0].balance_after, 50);
        assert_eq!(events[1].event, StoreEvent::Unknown("future.thing".to_owned()));
        assert_eq!(events[1].id.as_deref(), Some("8"));
    }

    #[tokio::test]
    async fn an_event_with_unreadable_data_is_an_error_not_a_silent_skip() {
        let outcome = read_all("event: wallet.updated\ndata: {not json\n\n").await;
        assert!(matches!(outcome, Err(StoreError::Decode(_))), "{outcome:?}");
    }
}
