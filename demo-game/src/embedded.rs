//! The store server inside the game, for when none answers: SQLite in the game's data folder,
//! seeded from the repository's `assets/catalog/`, on a free loopback port, with the `coin`
//! reward rule the game earns through.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use store_server::{Application, Settings};

/// How long a probe waits for a server to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the embedded server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The reward rule the demo's coins are credited through: 10 gold a coin, at most 600 gold a
/// minute.
#[must_use]
pub fn coin_rule() -> serde_json::Value {
    serde_json::json!({ "code": "coin", "currency": "gold", "amount": 10, "cap_per_minute": 600 })
}

/// Whether a Coinslot server answers `GET /healthz` at `base_url` (`http://host:port`).
#[must_use]
pub fn answers(base_url: &str) -> bool {
    let Some(host) = base_url.strip_prefix("http://").map(|rest| rest.trim_end_matches('/')) else {
        return false;
    };
    let Some(address) = host.to_socket_addrs().ok().and_then(|mut addresses| addresses.next()) else {
        return false;
    };
    probe(address, host).unwrap_or(false)
}

fn probe(address: SocketAddr, host: &str) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect_timeout(&address, PROBE_TIMEOUT)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    stream.write_all(
        format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut head = [0_u8; 12];
    stream.read_exact(&mut head)?;
    Ok(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
}

/// A running embedded server; dropping it shuts the server down.
#[derive(Debug)]
pub struct EmbeddedServer {
    base_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedServer {
    /// Starts a server on SQLite in `data_dir`, seeding from `assets` on its first start.
    ///
    /// # Errors
    /// When the folder cannot be made or the server does not start.
    pub fn start(data_dir: &Path, assets: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(data_dir).map_err(|error| format!("{}: {error}", data_dir.display()))?;
        let settings = Settings {
            database_url: format!("sqlite://{}", data_dir.join("coinslot.db").display()),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            assets_dir: assets.to_owned(),
            ..Settings::default()
        };
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("coinslot-embedded-server".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error.to_string()));
                        return;
                    }
                };
                runtime.block_on(serve(settings, ready_tx, stop_rx));
            })
            .map_err(|error| error.to_string())?;
        let base_url = ready_rx
            .recv_timeout(START_TIMEOUT)
            .map_err(|_| "the embedded server did not start in time".to_owned())??;
        Ok(Self { base_url, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// Where it listens.
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base_url
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    settings: Settings,
    ready: mpsc::Sender<Result<String, String>>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let application = match Application::build(settings).await {
        Ok(application) => application,
        Err(error) => {
            let _ = ready.send(Err(format!("{error:#}")));
            return;
        }
    };
    let base_url = format!("http://127.0.0.1:{}", application.port());
    // Only a first start prints an operator key; that is when the coin rule is made.
    if let Some(key) = application.first_operator_key().map(str::to_owned) {
        let server = tokio::spawn(application.run_until_stopped(async {
            let _ = stop.await;
        }));
        let made = reqwest::Client::new()
            .post(format!("{base_url}/admin/v1/reward-rules"))
            .bearer_auth(key)
            .json(&coin_rule())
            .send()
            .await;
        match made {
            Ok(response) if response.status().is_success() => {
                let _ = ready.send(Ok(base_url));
            }
            Ok(response) => {
                let _ = ready.send(Err(format!("making the coin rule: HTTP {}", response.status())));
            }
            Err(error) => {
                let _ = ready.send(Err(format!("making the coin rule: {error}")));
            }
        }
        if let Ok(Err(error)) = server.await {
            tracing::error!(error = %format!("{error:#}"), "the embedded server stopped with an error");
        }
        return;
    }
    let _ = ready.send(Ok(base_url));
    if let Err(error) = application
        .run_until_stopped(async {
            let _ = stop.await;
        })
        .await
    {
        tracing::error!(error = %format!("{error:#}"), "the embedded server stopped with an error");
    }
}
