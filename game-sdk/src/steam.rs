//! The Steam purchase flow wired to the Steamworks SDK (feature `steam`, through the
//! `steamworks` crate). It needs the Steam client running beside the game; the flow it wires
//! is the plugin's own and is tested without Steam (`StoreRequests::start_steam_order`,
//! `StoreRequests::report_steam_authorization`, [`crate::DeviceIdSource::Steam`]).
//!
//! ```no_run
//! use bevy::prelude::*;
//! use game_sdk::steam::{SteamPurchasesPlugin, ticket_source};
//! use game_sdk::{DeviceIdSource, StorePlugin};
//!
//! let steam = steamworks::Client::init_app(480).expect("the Steam client is running");
//! App::new()
//!     .add_plugins(MinimalPlugins)
//!     .add_plugins(StorePlugin {
//!         device_id: DeviceIdSource::Steam(ticket_source(steam.clone())),
//!         ..default()
//!     })
//!     .add_plugins(SteamPurchasesPlugin { client: steam })
//!     .run();
//! ```

use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bevy::prelude::*;
use steamworks::{CallbackHandle, Client, MicroTxnAuthorizationResponse, TicketForWebApiResponse};

use crate::StoreRequests;
use crate::worker::SteamTickets;

/// The identity the store verifies tickets for (`GetAuthTicketForWebApi`'s argument).
pub const TICKET_IDENTITY: &str = "coinslot";

/// How long a login waits for the Steam client's ticket.
const TICKET_WAIT: Duration = Duration::from_secs(10);

/// Steam tickets for [`crate::DeviceIdSource::Steam`]: at each login, asks the Steam client for
/// a Web API ticket for [`TICKET_IDENTITY`] and waits for its `GetTicketForWebApiResponse_t`
/// (delivered when the game runs Steam's callbacks, as [`SteamPurchasesPlugin`] does each frame).
#[must_use]
pub fn ticket_source(client: Client) -> SteamTickets {
    SteamTickets::new(move || {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let sender = Mutex::new(Some(sender));
        let handle = client.register_callback(move |response: TicketForWebApiResponse| {
            let taken = sender.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(sender) = taken {
                let ticket = match response.result {
                    Ok(()) => Ok(hex(&response.ticket[..usize::try_from(response.ticket_len).unwrap_or(0)])),
                    Err(error) => Err(format!("{error:?}")),
                };
                let _ = sender.send(ticket);
            }
        });
        client.user().authentication_session_ticket_for_webapi(TICKET_IDENTITY);
        Box::pin(async move {
            let _keep_registered = handle;
            match tokio::time::timeout(TICKET_WAIT, receiver).await {
                Ok(Ok(ticket)) => ticket,
                Ok(Err(_)) => Err("the ticket callback was dropped".to_owned()),
                Err(_) => {
                    Err("the Steam client sent no ticket in time (are Steam callbacks run?)".to_owned())
                }
            }
        })
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Runs Steam's callbacks each frame and reports every `MicroTxnAuthorizationResponse_t` of this
/// app to the store ([`StoreRequests::report_steam_authorization`]), which finalizes the order.
/// An authorization the store is too busy to take waits for the next frame.
#[derive(Clone)]
pub struct SteamPurchasesPlugin {
    /// The initialized Steam client.
    pub client: Client,
}

impl std::fmt::Debug for SteamPurchasesPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SteamPurchasesPlugin")
    }
}

/// An overlay's answer: Steam's `orderid` and whether the player authorized.
type Answer = (u64, bool);

/// The overlay's answers not yet reported, and what keeps the callback registered.
#[derive(Resource)]
struct SteamBridge {
    client: Client,
    answers: Mutex<Receiver<Answer>>,
    waiting: Vec<Answer>,
    _callback: Arc<Mutex<CallbackHandle>>,
}

impl Plugin for SteamPurchasesPlugin {
    fn build(&self, app: &mut App) {
        let (sender, receiver) = channel::<Answer>();
        let app_id = self.client.utils().app_id();
        let sender = Mutex::new(sender);
        let callback = self.client.register_callback(move |response: MicroTxnAuthorizationResponse| {
            if response.app_id == app_id {
                let _ = sender
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .send((response.order_id, response.authorized));
            }
        });
        app.insert_resource(SteamBridge {
            client: self.client.clone(),
            answers: Mutex::new(receiver),
            waiting: Vec::new(),
            _callback: Arc::new(Mutex::new(callback)),
        })
        .add_systems(PreUpdate, report_authorizations);
    }
}

fn report_authorizations(mut bridge: ResMut<SteamBridge>, store: StoreRequests) {
    bridge.client.run_callbacks();
    let arrived: Vec<Answer> =
        bridge.answers.lock().unwrap_or_else(PoisonError::into_inner).try_iter().collect();
    bridge.waiting.extend(arrived);
    let waiting = std::mem::take(&mut bridge.waiting);
    for (order_id, authorized) in waiting {
        if store.report_steam_authorization(order_id, authorized).is_err() {
            bridge.waiting.push((order_id, authorized));
        }
    }
}
