//! Operators' views of players and of the audit log.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::ledger::{Inventory, Reason, Wallet};
use crate::orders::{Order, Tab};

/// A player as operators see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PlayerSummary {
    /// The player's id. (Their device id is a credential: it is stored only as a hash, and
    /// never shown.)
    pub id: Uuid,
    /// Their country at login, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// When they first logged in.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Blocked players cannot buy, earn or consume.
    pub blocked: bool,
    /// When the player's personal fields were erased; their device id and country are gone.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub erased_at: Option<OffsetDateTime>,
    /// When the velocity checks (or an operator) flagged the player; new orders wait until an
    /// operator clears it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub flagged_at: Option<OffsetDateTime>,
    /// Why the player is flagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag_reason: Option<String>,
}

/// `GET /admin/v1/players`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PlayerPage {
    /// Newest first.
    pub players: Vec<PlayerSummary>,
    /// Pass as `cursor` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `GET /admin/v1/players/{id}`: everything an operator needs to help a player.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PlayerDetail {
    /// Who.
    pub player: PlayerSummary,
    /// Balances.
    pub wallet: Wallet,
    /// Items held.
    pub inventory: Inventory,
    /// Open tabs.
    pub tabs: Vec<Tab>,
    /// The newest orders (up to 50).
    pub orders: Vec<Order>,
}

/// `PATCH /admin/v1/players/{id}`: block or unblock, flag or clear the flag, always with a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePlayerRequest {
    /// Block (`true`) or unblock (`false`) the player; absent leaves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<bool>,
    /// Flag the player for review (`true`) or clear the flag (`false`); absent leaves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flagged: Option<bool>,
    /// Move the player to another price region (a country): only an operator may, since a
    /// player's first login fixes it; absent leaves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<crate::auth::Country>,
    /// Why, for the audit log.
    pub reason: Reason,
}

/// One operator action in the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// The entry's id.
    pub id: Uuid,
    /// Who: `api_key:<id>` for an operator key, or the system.
    pub actor: String,
    /// What (`catalog.publish`, `player.block`, `order.refund`…).
    pub action: String,
    /// On what.
    pub target: String,
    /// The object before, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    /// The object after, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// `GET /admin/v1/audit-log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub entries: Vec<AuditEntry>,
    /// Pass as `cursor` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST /admin/v1/players/{id}/erase`: remove a player's personal fields, always with a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasePlayerRequest {
    /// Why (the request that asked for it), for the audit log.
    pub reason: Reason,
}

/// What erasing a player did. Erasing again answers the same, with nothing more revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErasedPlayer {
    /// The player's id: random, so once the device id is gone it names no one; the ledger keeps
    /// its entries and sums under it.
    pub player_id: Uuid,
    /// When the personal fields were removed.
    #[serde(with = "time::serde::rfc3339")]
    pub erased_at: OffsetDateTime,
    /// Sessions this request revoked.
    pub sessions_revoked: i64,
    /// Earlier audit entries about the player from which their device id was redacted.
    pub audit_entries_redacted: i64,
}

/// `GET /admin/v1/players/{id}/export`: everything the store holds about a player, table by
/// table, each row as an object of its columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PlayerExport {
    /// The player.
    pub player_id: Uuid,
    /// When this export was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub exported_at: OffsetDateTime,
    /// Table name to rows: at most a page of each (1,000 rows).
    #[schema(value_type = Object)]
    pub tables: std::collections::BTreeMap<String, Vec<serde_json::Value>>,
    /// For each table with more rows than this page holds: the `offset` of its next page
    /// (`GET …/export?table=<name>&offset=<n>`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub more: std::collections::BTreeMap<String, i64>,
}
