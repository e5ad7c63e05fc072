//! A player's data: everything held about them (`export`), and erasure of their personal fields
//! while the ledger keeps its entries and sums under their random id (`erase`).
//!
//! Personal fields are the device id (the link to a person's device) and the country. Erasure
//! replaces the device id with `erased:<player id>`, clears the country, revokes every session,
//! and redacts the old device id from earlier audit entries about the player: the one change the
//! audit log ever takes, itself recorded as a `player.erase` entry.

use std::collections::BTreeMap;

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Column as _, Row as _};
use store_api::admin::{ErasedPlayer, PlayerExport};
use uuid::Uuid;

use crate::db::{from_micros, now_micros};
use crate::error::{ApiError, ApiResult};
use crate::store::catalog::append_audit;

/// The rows of `table` (which names its entry and its player) of the player's entries: reached
/// through `entry_player_idx`, since these tables have no index by player.
macro_rules! through_entries {
    ($table:literal) => {
        concat!(
            "select x.* from ",
            $table,
            " x join entry e on e.id = x.entry_id where e.player_id = $1 and x.player_id = $1 order by x.id"
        )
    };
}

/// Each table's rows about a player (`$1` is the player id, `$2` their idempotency scope).
const EXPORTED: &[(&str, &str)] = &[
    ("player", "select * from player where id = $1"),
    ("session", "select * from session where player_id = $1 order by created_at"),
    ("account", "select * from account where player_id = $1 order by id"),
    ("entry", "select * from entry where player_id = $1 order by id"),
    (
        "posting",
        "select p.* from posting p join entry e on e.id = p.entry_id where e.player_id = $1 order by p.id",
    ),
    ("inventory", "select * from inventory where player_id = $1 order by sku"),
    ("purchase", through_entries!("purchase")),
    ("reward_claim", through_entries!("reward_claim")),
    ("receipt", through_entries!("receipt")),
    ("payment_order", "select * from payment_order where player_id = $1 order by id"),
    (
        "order_transition",
        "select t.* from order_transition t join payment_order o on o.id = t.order_id \
         where o.player_id = $1 order by t.id",
    ),
    (
        "refund",
        "select r.* from refund r join payment_order o on o.id = r.order_id where o.player_id = $1 order by r.id",
    ),
    ("tab", "select * from tab where player_id = $1 order by opened_at"),
    (
        "tab_item",
        "select i.* from tab_item i join tab t on t.id = i.tab_id where t.player_id = $1 order by i.id",
    ),
    ("store_view", "select * from store_view where player_id = $1 order by id"),
    ("player_event", "select * from player_event where player_id = $1 order by id"),
    ("ledger_event_start", "select * from ledger_event_start where player_id = $1"),
    ("idempotency", "select * from idempotency where scope = $2 order by created_at"),
    ("audit_log", "select * from audit_log where target = $1 order by id"),
];

/// A row as a JSON object: integers as numbers, text as strings, nulls as null.
fn row_json(row: &AnyRow) -> Value {
    let mut object = serde_json::Map::new();
    for (index, column) in row.columns().iter().enumerate() {
        let value = match row.try_get::<Option<i64>, _>(index) {
            Ok(number) => number.map_or(Value::Null, Value::from),
            Err(_) => match row.try_get::<Option<String>, _>(index) {
                Ok(text) => text.map_or(Value::Null, Value::from),
                Err(_) => {
                    row.try_get::<Option<f64>, _>(index).ok().flatten().map_or(Value::Null, Value::from)
                }
            },
        };
        // A device id (even hashed) is a login credential's fingerprint, not the player's data
        // to hand out: the export leaves it out.
        if column.name() != "device_id" {
            object.insert(column.name().to_owned(), value);
        }
    }
    Value::Object(object)
}

/// Rows of one table in one export answer at most: an export is bounded however long a
/// player has played; the rest is paged with `offset`.
pub const EXPORT_ROWS_PER_PAGE: i64 = 1_000;

/// Everything held about `player_id`: a page of every table, or (`only`) one table from an
/// offset.
///
/// # Errors
/// `not_found` for an unknown player; `invalid_request` for an unknown table; database failures.
pub async fn export(
    conn: &mut AnyConnection,
    player_id: Uuid,
    only: Option<(&str, i64)>,
) -> ApiResult<PlayerExport> {
    let id = player_id.to_string();
    let scope = format!("player:{id}");
    let exists: Option<i64> =
        sqlx::query_scalar("select 1 from player where id = $1").bind(&id).fetch_optional(&mut *conn).await?;
    if exists.is_none() {
        return Err(ApiError::not_found("player", &id));
    }
    if let Some((table, _)) = only
        && !EXPORTED.iter().any(|(name, _)| *name == table)
    {
        return Err(ApiError::invalid("table", format!("`{table}` is not a table of the export")));
    }
    let mut tables = BTreeMap::new();
    let mut more = BTreeMap::new();
    for (table, sql) in EXPORTED {
        let offset = match only {
            Some((wanted, offset)) if wanted == *table => offset.max(0),
            Some(_) => continue,
            None => 0,
        };
        let paged = format!("{sql} limit $3 offset $4");
        let rows: Vec<AnyRow> = sqlx::query(sqlx::AssertSqlSafe(paged))
            .bind(&id)
            .bind(&scope)
            .bind(EXPORT_ROWS_PER_PAGE + 1)
            .bind(offset)
            .fetch_all(&mut *conn)
            .await?;
        let page = usize::try_from(EXPORT_ROWS_PER_PAGE).unwrap_or(usize::MAX);
        if rows.len() > page {
            more.insert((*table).to_owned(), offset + EXPORT_ROWS_PER_PAGE);
        }
        tables.insert((*table).to_owned(), rows.iter().take(page).map(row_json).collect::<Vec<_>>());
    }
    Ok(PlayerExport { player_id, exported_at: from_micros(now_micros()), tables, more })
}

/// Erases `player_id`'s personal fields (once; again answers the same), in `conn`'s
/// transaction, recorded in the audit log as `actor`'s with `reason`.
///
/// # Errors
/// `not_found` for an unknown player; database failures.
pub async fn erase(
    conn: &mut AnyConnection,
    player_id: Uuid,
    actor: &str,
    reason: &str,
) -> ApiResult<ErasedPlayer> {
    let id = player_id.to_string();
    // The player's row lock orders this after any money-moving request of theirs.
    let row: Option<(String, Option<i64>)> = sqlx::query_as(
        "update player set lock_version = lock_version + 1 where id = $1 returning device_id, erased_at",
    )
    .bind(&id)
    .fetch_optional(&mut *conn)
    .await?;
    let (device_id, erased_at) = row.ok_or_else(|| ApiError::not_found("player", &id))?;
    if let Some(erased_at) = erased_at {
        return Ok(ErasedPlayer {
            player_id,
            erased_at: from_micros(erased_at),
            sessions_revoked: 0,
            audit_entries_redacted: 0,
        });
    }
    let now = now_micros();
    sqlx::query("update player set device_id = $2, country = null, erased_at = $3 where id = $1")
        .bind(&id)
        .bind(format!("erased:{id}"))
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let revoked =
        sqlx::query("update session set revoked_at = $2 where player_id = $1 and revoked_at is null")
            .bind(&id)
            .bind(now)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    // Earlier entries (a block, say) may have recorded the device id: redact it, as JSON text.
    let quoted = serde_json::to_string(&device_id).map_err(anyhow::Error::from)?;
    let redacted = sqlx::query(
        "update audit_log set before_value = replace(before_value, $2, '\"(erased)\"'), \
         after_value = replace(after_value, $2, '\"(erased)\"') \
         where target = $1 and (replace(coalesce(before_value, ''), $2, '') <> coalesce(before_value, '') \
         or replace(coalesce(after_value, ''), $2, '') <> coalesce(after_value, ''))",
    )
    .bind(&id)
    .bind(&quoted)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let erased = ErasedPlayer {
        player_id,
        erased_at: from_micros(now),
        sessions_revoked: i64::try_from(revoked).unwrap_or(i64::MAX),
        audit_entries_redacted: i64::try_from(redacted).unwrap_or(i64::MAX),
    };
    let before = serde_json::json!({ "personal_fields": ["device_id", "country"] }).to_string();
    let after = serde_json::json!({ "reason": reason, "erased": erased }).to_string();
    append_audit(conn, actor, "player.erase", &id, Some(&before), Some(&after)).await?;
    Ok(erased)
}
