//! Steam as a player identity: a session ticket the game gets from the Steam client
//! (`ISteamUser::GetAuthTicketForWebApi` with the identity [`TICKET_IDENTITY`]) is verified with
//! the Steam Web API (`ISteamUserAuth/AuthenticateUserTicket`), and the SteamID it names is the
//! player: one player per SteamID per app.
//!
//! A Steam player's identity key (the player row's `device_id` column) is
//! `steam:<app id>:<SteamID>`. A device login's key is always `sha256:<hash of the device id>`,
//! so no device id, whatever it says, logs in as a Steam player; and the SteamID stays readable
//! for the Steam purchase calls that name the buyer.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;
use store_api::ErrorCode;

use crate::error::{ApiError, ApiResult};
use crate::payments::provider::{unavailable, urlencode};

/// The identity the game passes to `GetAuthTicketForWebApi`: Steam accepts a ticket only for
/// the identity it was created for, so a ticket made for another web service is refused here.
pub const TICKET_IDENTITY: &str = "coinslot";

/// The longest ticket accepted, in hex characters (Steam's tickets are a few hundred bytes).
pub const TICKET_HEX_MAX: usize = 4_096;

/// The prefix of a Steam player's identity key.
pub const STEAM_KEY_PREFIX: &str = "steam:";

/// How a server reaches Steam.
#[derive(Clone, PartialEq, Eq)]
pub struct SteamSettings {
    /// `https://partner.steam-api.com` (a local stand-in in tests).
    pub api_url: String,
    /// The publisher Web API key.
    pub web_api_key: String,
    /// The game's App ID.
    pub app_id: u32,
    /// Purchases go to `ISteamMicroTxnSandbox` (Steam's test interface: nothing is charged)
    /// instead of `ISteamMicroTxn`.
    pub microtxn_sandbox: bool,
    /// Steam's share of each purchase, in percent (30 under the Steam Distribution Agreement;
    /// lower past a game's revenue thresholds): booked as the payment's fee.
    pub revenue_share_percent: u8,
    /// The ISO 639-1 language the catalog's item names are written in (`InitTxn`'s `language`:
    /// the language of the item descriptions the overlay shows).
    pub language: String,
}

impl SteamSettings {
    /// Settings for Steam at `api_url` with Steam's defaults: the live interface, a 30% share,
    /// descriptions in English.
    #[must_use]
    pub fn new(api_url: String, web_api_key: String, app_id: u32) -> Self {
        Self {
            api_url,
            web_api_key,
            app_id,
            microtxn_sandbox: false,
            revenue_share_percent: 30,
            language: "en".to_owned(),
        }
    }
}

impl std::fmt::Debug for SteamSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SteamSettings")
            .field("api_url", &self.api_url)
            .field("web_api_key", &"<redacted>")
            .field("app_id", &self.app_id)
            .field("microtxn_sandbox", &self.microtxn_sandbox)
            .field("revenue_share_percent", &self.revenue_share_percent)
            .field("language", &self.language)
            .finish()
    }
}

/// The Steam Web API client.
#[derive(Debug, Clone)]
pub struct Steam {
    settings: SteamSettings,
    http: reqwest::Client,
}

/// A SteamID (64-bit) that Steam vouched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SteamId(pub u64);

impl Steam {
    /// A client with these settings.
    #[must_use]
    pub fn new(settings: SteamSettings) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap_or_default();
        Self { settings, http }
    }

    /// The game's App ID.
    #[must_use]
    pub fn app_id(&self) -> u32 {
        self.settings.app_id
    }

    /// The identity key of a Steam player of this app.
    #[must_use]
    pub fn player_key(&self, steam_id: SteamId) -> String {
        format!("{STEAM_KEY_PREFIX}{}:{}", self.settings.app_id, steam_id.0)
    }

    /// Verifies a session ticket (hex, as the game sends it) and returns whose it is.
    ///
    /// # Errors
    /// `invalid_request` for a ticket that is not hex; `invalid_credentials` (401) when Steam
    /// does not accept it (forged, expired, for another app or identity), or the player is
    /// banned by the publisher; `provider_unavailable` when Steam cannot be reached.
    pub async fn authenticate_ticket(&self, ticket: &str) -> ApiResult<SteamId> {
        if ticket.is_empty()
            || ticket.len() > TICKET_HEX_MAX
            || !ticket.bytes().all(|byte| byte.is_ascii_hexdigit())
        {
            return Err(ApiError::invalid(
                "ticket",
                format!("a Steam session ticket is 1 to {TICKET_HEX_MAX} hexadecimal characters"),
            ));
        }
        let path = "/ISteamUserAuth/AuthenticateUserTicket/v1/";
        let url = format!(
            "{}{path}?key={}&appid={}&ticket={ticket}&identity={TICKET_IDENTITY}",
            self.settings.api_url.trim_end_matches('/'),
            urlencode(&self.settings.web_api_key),
            self.settings.app_id,
        );
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|error| unavailable(path, &format!("unreachable: {error}")))?;
        let status = response.status();
        if !status.is_success() {
            // Steam answers 403 to a wrong key and 5xx on its side: neither is the player's fault.
            return Err(unavailable(path, &format!("answered {status}")));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|error| unavailable(path, &format!("unreadable answer: {error}")))?;
        let refused = |why: &str| {
            tracing::info!(%why, "Steam did not accept a session ticket");
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidCredentials,
                "Steam did not accept the session ticket; get a new one from the Steam client",
            )
        };
        let params = &body["response"]["params"];
        if params["result"].as_str() != Some("OK") {
            let error = &body["response"]["error"];
            return Err(refused(&format!("{} {}", error["errorcode"], error["errordesc"])));
        }
        if params["publisherbanned"].as_bool() == Some(true) {
            return Err(refused("banned by the publisher"));
        }
        params["steamid"]
            .as_str()
            .and_then(|id| id.parse::<u64>().ok())
            .map(SteamId)
            .ok_or_else(|| unavailable(path, "an OK answer without a steamid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steam_player_key_is_outside_every_device_key() {
        let steam = Steam::new(SteamSettings::new(String::new(), String::new(), 480));
        let key = steam.player_key(SteamId(76_561_197_960_287_930));
        assert_eq!(key, "steam:480:76561197960287930");
        // A device id that spells the key logs in as a device: its key is a hash.
        assert!(crate::players::auth::device_key(&key).starts_with(crate::players::auth::DEVICE_KEY_PREFIX));
        assert_ne!(crate::players::auth::device_key(&key), key);
    }
}
