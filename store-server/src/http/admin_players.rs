//! Operators' player routes (find a player, see everything about them, block or unblock) and
//! the audit log of every operator action.

use axum::extract::{Path, State};
use store_api::admin::{
    AgeBand, AuditEntry, AuditPage, ErasePlayerRequest, ErasedPlayer, PlayerDetail, PlayerExport, PlayerPage,
    PlayerSummary, UpdatePlayerRequest,
};
use store_api::ledger::{HistoryPage, Inventory};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::db::from_micros;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, Page, PageQuery};
use crate::ledger::{read_history, read_inventory, read_wallet};
use crate::players::auth::Operator;
use crate::players::auth::scopes::{KeysAdmin, PlayersRead, PlayersWrite};
use crate::store::catalog::append_audit;

/// Orders shown on a player's page.
const PLAYER_ORDERS_MAX: u32 = 50;
/// Longest search text.
const SEARCH_CHARS_MAX: usize = 128;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_players))
        .routes(routes!(get_player, update_player))
        .routes(routes!(get_player_history))
        .routes(routes!(export_player))
        .routes(routes!(erase_player))
        .routes(routes!(list_audit_log))
}

/// `?query=` plus the page.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct PlayerSearch {
    /// A player id, or a whole device id.
    query: Option<String>,
    /// 1 to 200; 50 when absent.
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

type PlayerRow = (String, Option<String>, i64, i64, Option<i64>, Option<i64>, Option<String>, i64);
/// id, actor, action, target, before, after, created_at.
type AuditRow = (String, String, String, String, Option<String>, Option<String>, i64);
const PLAYER_COLUMNS: &str = "id, country, created_at, blocked, erased_at, flagged_at, flag_reason, age_band";

fn summary(
    (id, country, created_at, blocked, erased_at, flagged_at, flag_reason, age_band): PlayerRow,
) -> ApiResult<PlayerSummary> {
    Ok(PlayerSummary {
        id: Uuid::parse_str(&id).map_err(anyhow::Error::from)?,
        country,
        created_at: from_micros(created_at),
        blocked: blocked != 0,
        erased_at: erased_at.map(from_micros),
        flagged_at: flagged_at.map(from_micros),
        flag_reason,
        age_band: AgeBand::from_code(age_band),
    })
}

/// Players, newest first; `query` finds one by id or by its whole device id.
#[utoipa::path(
    get, path = "/admin/v1/players", tag = "operators",
    security(("operator" = ["players:read"])),
    params(PlayerSearch),
    responses((status = 200, body = PlayerPage), (status = 400, body = store_api::ErrorBody))
)]
async fn list_players(
    State(state): State<AppState>,
    _operator: Operator<PlayersRead>,
    ApiQuery(search): ApiQuery<PlayerSearch>,
) -> ApiResult<axum::Json<PlayerPage>> {
    let page = PageQuery { limit: search.limit, cursor: search.cursor }.parse()?;
    let text = search.query.unwrap_or_default();
    if text.chars().count() > SEARCH_CHARS_MAX {
        return Err(ApiError::invalid("query", format!("at most {SEARCH_CHARS_MAX} characters")));
    }
    // A device id is stored only as its hash, so it is found whole, never by a prefix.
    let device = crate::players::auth::device_key(&text);
    let before = page.cursor.clone().unwrap_or_else(|| "~".to_owned());
    let mut conn = state.db().pool().acquire().await?;
    let rows: Vec<PlayerRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {PLAYER_COLUMNS} from player where id < $1 and ($2 = '' or id = $2 or device_id = $3) \
         order by id desc limit $4"
    )))
    .bind(before)
    .bind(&text)
    .bind(device)
    .bind(page.fetch_count())
    .fetch_all(&mut *conn)
    .await?;
    let (rows, next_cursor) = page.finish(rows, |row| row.0.clone());
    let players = rows.into_iter().map(summary).collect::<ApiResult<_>>()?;
    Ok(axum::Json(PlayerPage { players, next_cursor }))
}

async fn find_player(conn: &mut sqlx::AnyConnection, id: &str) -> ApiResult<PlayerSummary> {
    let row: Option<PlayerRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("select {PLAYER_COLUMNS} from player where id = $1")))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    summary(row.ok_or_else(|| ApiError::not_found("player", id))?)
}

fn player_id(id: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found("player", id))
}

/// A player's wallet, inventory, open tabs and newest orders.
#[utoipa::path(
    get, path = "/admin/v1/players/{id}", tag = "operators",
    security(("operator" = ["players:read"])),
    params(("id" = String, Path, description = "Player id")),
    responses((status = 200, body = PlayerDetail), (status = 404, body = store_api::ErrorBody))
)]
async fn get_player(
    State(state): State<AppState>,
    _operator: Operator<PlayersRead>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<PlayerDetail>> {
    let player_id = player_id(&id)?;
    let mut conn = state.db().pool().acquire().await?;
    let player = find_player(&mut conn, &player_id.to_string()).await?;
    let wallet = read_wallet(&mut conn, player_id).await?;
    let inventory = Inventory { items: read_inventory(&mut conn, player_id).await? };
    let tabs = crate::payments::tabs::player_tabs(&mut conn, state.payments(), player_id).await?;
    let page = Page { limit: PLAYER_ORDERS_MAX, cursor: None };
    let (orders, _) = crate::payments::orders::list_orders(&mut conn, Some(player_id), &page).await?;
    Ok(axum::Json(PlayerDetail { player, wallet, inventory, tabs, orders }))
}

/// Blocks or unblocks a player, flags them for review or clears the flag, moves them to another
/// price region or age band, with a reason; recorded in the audit log.
#[utoipa::path(
    patch, path = "/admin/v1/players/{id}", tag = "operators",
    security(("operator" = ["players:write"])),
    params(("id" = String, Path, description = "Player id")),
    request_body = UpdatePlayerRequest,
    responses((status = 200, body = PlayerSummary), (status = 400, body = store_api::ErrorBody), (status = 404, body = store_api::ErrorBody))
)]
async fn update_player(
    State(state): State<AppState>,
    operator: Operator<PlayersWrite>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<UpdatePlayerRequest>,
) -> ApiResult<axum::Json<PlayerSummary>> {
    let player_id = player_id(&id)?.to_string();
    if request.blocked.is_none()
        && request.flagged.is_none()
        && request.country.is_none()
        && request.age_band.is_none()
    {
        return Err(ApiError::invalid("blocked", "say `blocked`, `flagged`, `country` or `age_band`"));
    }
    let mut tx = state.db().begin_write().await?;
    let before = find_player(&mut tx, &player_id).await?;
    let now = crate::db::now_micros();
    if let Some(blocked) = request.blocked {
        sqlx::query("update player set blocked = $2 where id = $1")
            .bind(&player_id)
            .bind(i64::from(blocked))
            .execute(&mut *tx)
            .await?;
    }
    if let Some(flagged) = request.flagged {
        sqlx::query(
            "update player set flagged_at = case when $2 = 1 then coalesce(flagged_at, $3) end, \
             flag_reason = case when $2 = 1 then $4 end where id = $1",
        )
        .bind(&player_id)
        .bind(i64::from(flagged))
        .bind(now)
        .bind(request.reason.as_str())
        .execute(&mut *tx)
        .await?;
    }
    if let Some(country) = &request.country {
        sqlx::query("update player set country = $2 where id = $1")
            .bind(&player_id)
            .bind(country.as_str())
            .execute(&mut *tx)
            .await?;
    }
    if let Some(band) = request.age_band {
        sqlx::query("update player set age_band = $2 where id = $1")
            .bind(&player_id)
            .bind(band.code())
            .execute(&mut *tx)
            .await?;
    }
    let after = find_player(&mut tx, &player_id).await?;
    let before_json = serde_json::to_string(&before).map_err(anyhow::Error::from)?;
    let after_json = serde_json::json!({ "player": after, "reason": request.reason.as_str() }).to_string();
    let actions = [
        request.blocked.map(|blocked| if blocked { "player.block" } else { "player.unblock" }),
        request.flagged.map(|flagged| if flagged { "player.flag" } else { "player.unflag" }),
        request.country.as_ref().map(|_| "player.region"),
        request.age_band.map(|_| "player.age_band"),
    ];
    for action in actions.into_iter().flatten() {
        append_audit(&mut tx, &operator.actor(), action, &player_id, Some(&before_json), Some(&after_json))
            .await?;
    }
    tx.commit().await?;
    Ok(axum::Json(after))
}

/// A player's ledger history, newest first.
#[utoipa::path(
    get, path = "/admin/v1/players/{id}/history", tag = "operators",
    security(("operator" = ["players:read"])),
    params(("id" = String, Path, description = "Player id"), PageQuery),
    responses((status = 200, body = HistoryPage), (status = 404, body = store_api::ErrorBody))
)]
async fn get_player_history(
    State(state): State<AppState>,
    _operator: Operator<PlayersRead>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<HistoryPage>> {
    let player_id = player_id(&id)?;
    let page = query.parse()?;
    let mut conn = state.db().pool().acquire().await?;
    find_player(&mut conn, &player_id.to_string()).await?;
    let (entries, next_cursor) = read_history(&mut conn, player_id, &page).await?;
    Ok(axum::Json(HistoryPage { entries, next_cursor }))
}

/// `?table=&offset=`: one table of an export from an offset.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    /// Only this table (with `offset`, its next page).
    table: Option<String>,
    /// Rows of `table` to skip; 0 when absent.
    offset: Option<i64>,
}

/// Everything the store holds about a player, table by table (for a data-access request): a
/// page of each table (1,000 rows), and in `more` the offset of the next page of a longer one.
#[utoipa::path(
    get, path = "/admin/v1/players/{id}/export", tag = "operators",
    security(("operator" = ["players:read"])),
    params(("id" = String, Path, description = "Player id"), ExportQuery),
    responses((status = 200, body = PlayerExport), (status = 404, body = store_api::ErrorBody))
)]
async fn export_player(
    State(state): State<AppState>,
    _operator: Operator<PlayersRead>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> ApiResult<axum::Json<PlayerExport>> {
    let player_id = player_id(&id)?;
    let only = match (&query.table, query.offset) {
        (Some(table), offset) => Some((table.as_str(), offset.unwrap_or(0))),
        (None, None) => None,
        (None, Some(_)) => return Err(ApiError::invalid("offset", "an offset pages one `table`")),
    };
    let mut conn = state.db().pool().acquire().await?;
    Ok(axum::Json(crate::players::privacy::export(&mut conn, player_id, only).await?))
}

/// Erases a player's personal fields (device id, country) and revokes their sessions; the ledger
/// keeps its entries and sums under the player's random id. Recorded in the audit log; erasing
/// again answers the same.
#[utoipa::path(
    post, path = "/admin/v1/players/{id}/erase", tag = "operators",
    security(("operator" = ["players:write"])),
    params(("id" = String, Path, description = "Player id")),
    request_body = ErasePlayerRequest,
    responses((status = 200, body = ErasedPlayer), (status = 400, body = store_api::ErrorBody), (status = 404, body = store_api::ErrorBody))
)]
async fn erase_player(
    State(state): State<AppState>,
    operator: Operator<PlayersWrite>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ErasePlayerRequest>,
) -> ApiResult<axum::Json<ErasedPlayer>> {
    let player_id = player_id(&id)?;
    let mut tx = state.db().begin_write().await?;
    let erased =
        crate::players::privacy::erase(&mut tx, player_id, &operator.actor(), request.reason.as_str())
            .await?;
    tx.commit().await?;
    Ok(axum::Json(erased))
}

/// Every operator action, newest first: who did what to what, with the object before and
/// after. Nothing deletes it.
#[utoipa::path(
    get, path = "/admin/v1/audit-log", tag = "operators",
    security(("operator" = ["keys:admin"])),
    params(PageQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = store_api::ErrorBody))
)]
async fn list_audit_log(
    State(state): State<AppState>,
    _operator: Operator<KeysAdmin>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<AuditPage>> {
    let page = query.parse()?;
    let before = page.cursor.clone().unwrap_or_else(|| "~".to_owned());
    let mut conn = state.db().pool().acquire().await?;
    let rows: Vec<AuditRow> = sqlx::query_as(
        "select id, actor, action, target, before_value, after_value, created_at from audit_log \
         where id < $1 order by id desc limit $2",
    )
    .bind(before)
    .bind(page.fetch_count())
    .fetch_all(&mut *conn)
    .await?;
    let (rows, next_cursor) = page.finish(rows, |row| row.0.clone());
    let parse = |text: Option<String>| text.and_then(|text| serde_json::from_str(&text).ok());
    let entries = rows
        .into_iter()
        .map(|(id, actor, action, target, before, after, created_at)| {
            Ok(AuditEntry {
                id: Uuid::parse_str(&id).map_err(anyhow::Error::from)?,
                actor,
                action,
                target,
                before: parse(before),
                after: parse(after),
                created_at: from_micros(created_at),
            })
        })
        .collect::<ApiResult<_>>()?;
    Ok(axum::Json(AuditPage { entries, next_cursor }))
}
