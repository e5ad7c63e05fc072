//! A loopback TCP proxy between a game and the store server, to make faults happen on cue:
//! hold the server's answers (a crash between sending and hearing back), alter receipts in
//! flight (a forged answer), or take the server away and bring it back on the same address.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy does with the server's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Passes everything.
    Pass,
    /// Passes requests to the server but keeps its answers from the game.
    HoldResponses,
    /// Changes one character of every receipt signature in the server's answers.
    TamperSignatures,
}

#[derive(Debug)]
struct State {
    upstream: Option<SocketAddr>,
    mode: Mode,
    connections: Vec<JoinHandle<()>>,
}

/// A running proxy; dropping it closes every connection.
#[derive(Debug)]
pub struct Proxy {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy on a free loopback port in front of `upstream_base_url`
    /// (`http://127.0.0.1:PORT`).
    ///
    /// # Panics
    /// When no port can be bound or the URL is not `http://host:port`.
    pub async fn start(upstream_base_url: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let address = listener.local_addr().expect("an address");
        let state = Arc::new(Mutex::new(State {
            upstream: Some(parse_base_url(upstream_base_url)),
            mode: Mode::Pass,
            connections: Vec::new(),
        }));
        let accept_state = Arc::clone(&state);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = accept_state.lock().unwrap_or_else(PoisonError::into_inner).upstream;
                let Some(upstream) = upstream else {
                    drop(client);
                    continue;
                };
                let connection = tokio::spawn(relay(client, upstream, Arc::clone(&accept_state)));
                accept_state.lock().unwrap_or_else(PoisonError::into_inner).connections.push(connection);
            }
        });
        Self { address, state, accept }
    }

    /// The address a game should use.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Changes what happens to the server's answers from now on.
    pub fn set_mode(&self, mode: Mode) {
        self.lock().mode = mode;
    }

    /// Points the proxy at another server (`None`: nobody answers), closing every connection.
    pub fn set_upstream(&self, upstream_base_url: Option<&str>) {
        let mut state = self.lock();
        state.upstream = upstream_base_url.map(parse_base_url);
        for connection in state.connections.drain(..) {
            connection.abort();
        }
    }

    /// Closes every open connection.
    pub fn drop_connections(&self) {
        for connection in self.lock().connections.drain(..) {
            connection.abort();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.drop_connections();
    }
}

fn parse_base_url(base_url: &str) -> SocketAddr {
    base_url.trim_start_matches("http://").trim_end_matches('/').parse().expect("http://host:port")
}

async fn relay(client: TcpStream, upstream: SocketAddr, state: Arc<Mutex<State>>) {
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    };
    let answers = async {
        let mut buffer = vec![0_u8; 64 * 1024];
        loop {
            let read = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            let mode = state.lock().unwrap_or_else(PoisonError::into_inner).mode;
            let chunk = &mut buffer[..read];
            match mode {
                Mode::Pass => {}
                Mode::HoldResponses => continue,
                Mode::TamperSignatures => tamper_signatures(chunk),
            }
            if client_write.write_all(chunk).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(requests, answers);
}

/// Swaps the first character of every `"signature":"…"` value for another base64 character, so
/// the length (and the HTTP framing) stays the same.
fn tamper_signatures(chunk: &mut [u8]) {
    const NEEDLE: &[u8] = b"\"signature\":\"";
    let mut start = 0;
    while let Some(found) = chunk[start..].windows(NEEDLE.len()).position(|window| window == NEEDLE) {
        let at = start + found + NEEDLE.len();
        if let Some(byte) = chunk.get_mut(at) {
            *byte = if *byte == b'A' { b'B' } else { b'A' };
        }
        start = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tampering_changes_one_character_per_signature_and_keeps_the_length() {
        let mut body = br#"{"receipt":{"signature":"Qk1","x":1},"r2":{"signature":"AAA"}}"#.to_vec();
        let before = body.len();
        tamper_signatures(&mut body);
        assert_eq!(body.len(), before);
        assert_eq!(body, br#"{"receipt":{"signature":"Ak1","x":1},"r2":{"signature":"BAA"}}"#.to_vec());
    }
}
