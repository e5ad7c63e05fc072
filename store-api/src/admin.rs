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
    /// The age band an operator put the player in (`adult` unless told otherwise): it sets
    /// their spending caps and tab credit.
    #[serde(default)]
    pub age_band: AgeBand,
}

/// A player's age band, set by an operator (from the game's own age check or a parent's
/// request). Each band has its own per-order, daily and monthly spending caps and tab credit;
/// the defaults are in the README.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgeBand {
    /// 18 and over, or not known to be younger.
    #[default]
    Adult,
    /// 13 to 17.
    Minor,
    /// Under 13.
    Child,
}

impl AgeBand {
    /// Every band, adult first.
    pub const ALL: [Self; 3] = [Self::Adult, Self::Minor, Self::Child];

    /// The band as on the wire.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Adult => "adult",
            Self::Minor => "minor",
            Self::Child => "child",
        }
    }

    /// The band's number in storage (`player.age_band`): 0 adult, 1 minor, 2 child.
    #[must_use]
    pub fn code(self) -> i64 {
        match self {
            Self::Adult => 0,
            Self::Minor => 1,
            Self::Child => 2,
        }
    }

    /// The band of a stored number; an unknown number is the strictest band.
    #[must_use]
    pub fn from_code(code: i64) -> Self {
        match code {
            0 => Self::Adult,
            1 => Self::Minor,
            _ => Self::Child,
        }
    }
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
    /// Put the player in another age band (`adult`, `minor`, `child`); absent leaves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_band: Option<AgeBand>,
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
