//! Credentials: player device login and operator API keys with scopes.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::currency::Name;
use crate::limits::DEVICE_ID_BYTES_MAX;

/// A device id a player logs in with: 1 to 128 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "device-7f3a")]
pub struct DeviceId(String);

impl DeviceId {
    /// Parses a device id.
    ///
    /// # Errors
    /// Returns a message when the id is empty, too long or not printable ASCII.
    pub fn parse(text: &str) -> Result<Self, String> {
        let printable = text.bytes().all(|b| b.is_ascii_graphic());
        if !text.is_empty() && text.len() <= DEVICE_ID_BYTES_MAX && printable {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!("device_id must be 1 to {DEVICE_ID_BYTES_MAX} printable ASCII characters"))
        }
    }
}

string_newtype!(DeviceId);

/// An ISO 3166-1 alpha-2 country code (`DE`, `KR`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, pattern = "^[A-Z]{2}$", example = "DE")]
pub struct Country(String);

impl Country {
    /// Parses a country code.
    ///
    /// # Errors
    /// Returns a message unless the text is two upper-case ASCII letters.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() == 2 && text.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!("country `{text}` must be an ISO 3166-1 alpha-2 code such as \"DE\""))
        }
    }
}

string_newtype!(Country);

/// `POST /v1/auth/device`: log in (creating the player on first sight) with a device id.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceLoginRequest {
    /// A stable id of the device or installation.
    pub device_id: DeviceId,
    /// The player's country, if the game knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<Country>,
}

/// `POST /v1/auth/steam`: log in (creating the player on first sight) with a Steam session
/// ticket from `ISteamUser::GetAuthTicketForWebApi("coinslot")`, hex-encoded.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SteamLoginRequest {
    /// The ticket's bytes as hexadecimal.
    pub ticket: String,
    /// The player's country, if the game knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<Country>,
}

/// A player session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Session {
    /// The player.
    pub player_id: Uuid,
    /// Send as `Authorization: Bearer <session_token>`.
    pub session_token: String,
    /// When the token stops working.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// What an operator API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub enum Scope {
    /// Read currencies, the draft and versions.
    #[serde(rename = "catalog:read")]
    CatalogRead,
    /// Edit currencies and the draft; publish.
    #[serde(rename = "catalog:write")]
    CatalogWrite,
    /// Read players.
    #[serde(rename = "players:read")]
    PlayersRead,
    /// Change players (grants, flags).
    #[serde(rename = "players:write")]
    PlayersWrite,
    /// Refund orders.
    #[serde(rename = "refunds:write")]
    RefundsWrite,
    /// Read analytics.
    #[serde(rename = "analytics:read")]
    AnalyticsRead,
    /// Grant rewards from a game server.
    #[serde(rename = "rewards:write")]
    RewardsWrite,
    /// Create, list and revoke API keys.
    #[serde(rename = "keys:admin")]
    KeysAdmin,
}

impl Scope {
    /// Every scope, for the first-start key.
    pub const ALL: [Self; 8] = [
        Self::CatalogRead,
        Self::CatalogWrite,
        Self::PlayersRead,
        Self::PlayersWrite,
        Self::RefundsWrite,
        Self::AnalyticsRead,
        Self::RewardsWrite,
        Self::KeysAdmin,
    ];

    /// The scope as on the wire (`catalog:write`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CatalogRead => "catalog:read",
            Self::CatalogWrite => "catalog:write",
            Self::PlayersRead => "players:read",
            Self::PlayersWrite => "players:write",
            Self::RefundsWrite => "refunds:write",
            Self::AnalyticsRead => "analytics:read",
            Self::RewardsWrite => "rewards:write",
            Self::KeysAdmin => "keys:admin",
        }
    }

    /// Parses a scope name.
    ///
    /// # Errors
    /// Returns a message listing the known scopes.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == text).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|scope| scope.as_str()).collect();
            format!("unknown scope `{text}`; known scopes: {}", known.join(", "))
        })
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /admin/v1/api-keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateApiKeyRequest {
    /// What the key is for.
    pub name: Name,
    /// One or more scopes.
    pub scopes: Vec<Scope>,
}

/// An operator API key as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    /// UUID v7.
    pub id: Uuid,
    /// What the key is for.
    pub name: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was revoked, if it was.
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// A newly created API key: the only time its secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    /// Send as `Authorization: Bearer <key>`. Shown once.
    pub key: String,
    /// The key's record.
    pub api_key: ApiKey,
}

/// A page of API keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyPage {
    /// Keys, oldest first.
    pub api_keys: Vec<ApiKey>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
