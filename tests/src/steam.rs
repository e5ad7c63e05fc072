//! A local stand-in for the Steam partner Web API, so the store's Steam code runs its real
//! requests without the internet: `ISteamUserAuth/AuthenticateUserTicket/v1` as Steamworks
//! documents it (a `GET` with `key`, `appid`, `ticket` in hex and `identity`; `403 Forbidden`
//! for a wrong publisher key; `{"response":{"params":{"result":"OK","steamid",…}}}` for a good
//! ticket and `{"response":{"error":{"errorcode","errordesc"}}}` for a bad one).
//!
//! Tickets are what the Steam client would issue: [`SteamStandIn::issue_ticket`] makes one for a
//! SteamID, an app and an identity.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// The publisher Web API key the stand-in accepts.
pub const WEB_API_KEY: &str = "steam-standin-publisher-key";
/// The game's App ID in tests (Spacewar, Valve's test app).
pub const APP_ID: u32 = 480;

#[derive(Debug, Clone)]
struct Ticket {
    steam_id: u64,
    app_id: u32,
    identity: String,
    publisher_banned: bool,
}

#[derive(Debug, Default)]
struct Inner {
    tickets: HashMap<String, Ticket>,
    next: u64,
    calls: u64,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(inner: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The stand-in, serving on a loopback port until dropped.
#[derive(Debug)]
pub struct SteamStandIn {
    base_url: String,
    inner: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SteamStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn query<'q>(params: &'q [(String, String)], name: &str) -> Option<&'q str> {
    params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
}

async fn authenticate_user_ticket(
    State(inner): State<Shared>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let mut inner = lock(&inner);
    inner.calls += 1;
    if query(&params, "key") != Some(WEB_API_KEY) {
        return (StatusCode::FORBIDDEN, "<html><head><title>Forbidden</title></head><body><h1>Forbidden</h1>Access is denied. Retrying will not help. Please verify your <pre>key=</pre> parameter.</body></html>").into_response();
    }
    let error = |code: u32, description: &str| {
        Json(json!({"response": {"error": {"errorcode": code, "errordesc": description}}})).into_response()
    };
    let (Some(app_id), Some(ticket)) = (query(&params, "appid"), query(&params, "ticket")) else {
        return error(3, "Invalid parameter");
    };
    let Some(issued) = inner.tickets.get(&ticket.to_ascii_lowercase()).cloned() else {
        return error(101, "Invalid ticket");
    };
    if app_id != issued.app_id.to_string() {
        return error(102, "Ticket for other app");
    }
    if query(&params, "identity").unwrap_or_default() != issued.identity {
        return error(101, "Invalid ticket");
    }
    Json(json!({"response": {"params": {
        "result": "OK", "steamid": issued.steam_id.to_string(), "ownersteamid": issued.steam_id.to_string(),
        "vacbanned": false, "publisherbanned": issued.publisher_banned,
    }}}))
    .into_response()
}

impl SteamStandIn {
    /// Starts the stand-in on a free loopback port.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start() -> Self {
        let inner = Shared::default();
        let router = Router::new()
            .route("/ISteamUserAuth/AuthenticateUserTicket/v1/", get(authenticate_user_ticket))
            .with_state(inner.clone());
        let (base_url, task) = crate::serve_on_loopback(router).await;
        Self { base_url, inner, task }
    }

    /// Where the API is (`--steam-api-url`).
    #[must_use]
    pub fn api_url(&self) -> &str {
        &self.base_url
    }

    /// The store's settings for this stand-in.
    #[must_use]
    pub fn settings(&self) -> store_server::players::steam::SteamSettings {
        store_server::players::steam::SteamSettings {
            api_url: self.base_url.clone(),
            web_api_key: WEB_API_KEY.to_owned(),
            app_id: APP_ID,
        }
    }

    /// A ticket the Steam client would give the game for `steam_id`, made for `app_id` and
    /// `identity`, hex-encoded as the game sends it.
    pub fn issue_ticket(&self, steam_id: u64, app_id: u32, identity: &str) -> String {
        self.issue(steam_id, app_id, identity, false)
    }

    /// A valid ticket of a player the publisher banned.
    pub fn issue_banned_ticket(&self, steam_id: u64) -> String {
        self.issue(steam_id, APP_ID, store_server::players::steam::TICKET_IDENTITY, true)
    }

    fn issue(&self, steam_id: u64, app_id: u32, identity: &str, publisher_banned: bool) -> String {
        let mut inner = lock(&self.inner);
        inner.next += 1;
        let ticket = format!("14000000{:016x}{:016x}{:08x}", inner.next, steam_id, app_id);
        inner.tickets.insert(
            ticket.clone(),
            Ticket { steam_id, app_id, identity: identity.to_owned(), publisher_banned },
        );
        ticket
    }

    /// How many times the store called Steam.
    #[must_use]
    pub fn calls(&self) -> u64 {
        lock(&self.inner).calls
    }
}
