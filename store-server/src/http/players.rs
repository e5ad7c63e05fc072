//! Player routes: device and Steam logins, and the live catalog.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use sqlx::AnyConnection;
use store_api::auth::{Country, DeviceLoginRequest, Session, SteamLoginRequest};
use store_api::catalog::Catalog;
use store_api::ledger::{GrantRequest, GrantResult};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::db::{from_micros, now_micros};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::ledger::batch::LoginSetJob;
use crate::ledger::group_commit::{BatchJob, Done};
use crate::ledger::idempotency::{IdempotentJson, run_once};
use crate::players::auth::scopes::GrantWriters;
use crate::players::auth::{Operator, PlayerAuth, SessionClaims};
use crate::store::operations::{GrantOp, grant_initial_balances};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login_device))
        .routes(routes!(login_steam))
        .routes(routes!(get_catalog))
        .routes(routes!(grant_to_player))
}

/// Finds the player with this identity key (a device's, or a SteamID's), creating it (with its
/// initial balances) on first sight.
async fn find_or_create_player(
    state: &AppState,
    tx: &mut AnyConnection,
    identity_key: &str,
    country: Option<&Country>,
    now: i64,
) -> ApiResult<Uuid> {
    let country = country.map(|country| country.as_str().to_owned());
    let created = sqlx::query(
        "insert into player (id, device_id, country, created_at) values ($1, $2, $3, $4) \
         on conflict (device_id) do nothing",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(identity_key)
    .bind(country.clone())
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    // The first country a player names fixes their price region; later logins cannot move it
    // (only an operator can), so a player cannot pick the cheapest region before each purchase.
    let id: String = sqlx::query_scalar(
        "update player set country = coalesce(country, $2) where device_id = $1 returning id",
    )
    .bind(identity_key)
    .bind(country)
    .fetch_one(&mut *tx)
    .await?;
    let player_id =
        Uuid::parse_str(&id).map_err(|error| anyhow::anyhow!("stored player id `{id}`: {error}"))?;
    if created {
        grant_initial_balances(tx, state.catalog_cache(), player_id).await?;
    }
    Ok(player_id)
}

/// A login (by device or by Steam) as a job of the group-commit writer: a first login's new
/// player, initial grant and session commit with the writer's batch (on SQLite no second writer
/// waits for the write lock). Answers the player's id.
struct LoginJob {
    state: AppState,
    country: Option<Country>,
    /// The identity as stored: a device id's key, or a Steam player's key.
    device_key: String,
    session_id: Uuid,
    now: i64,
    expires_at: i64,
}

impl BatchJob for LoginJob {
    fn login_job(&self) -> Option<&dyn LoginSetJob> {
        Some(self)
    }

    fn run<'a>(&'a self, conn: &'a mut AnyConnection) -> BoxFuture<'a, ApiResult<Done>> {
        Box::pin(async move {
            let player_id =
                find_or_create_player(&self.state, conn, &self.device_key, self.country.as_ref(), self.now)
                    .await?;
            sqlx::query(
                "insert into session (id, player_id, created_at, expires_at) values ($1, $2, $3, $4)",
            )
            .bind(self.session_id.to_string())
            .bind(player_id.to_string())
            .bind(self.now)
            .bind(self.expires_at)
            .execute(&mut *conn)
            .await?;
            Ok(Done {
                status: StatusCode::OK,
                body: player_id.to_string().into_bytes().into(),
                replayed: false,
            })
        })
    }
}

impl LoginSetJob for LoginJob {
    fn device_key(&self) -> &str {
        &self.device_key
    }

    fn country(&self) -> Option<&str> {
        self.country.as_ref().map(|country| country.as_str())
    }

    fn session(&self) -> (Uuid, i64) {
        (self.session_id, self.expires_at)
    }

    fn catalog(&self) -> &crate::store::catalog::CatalogCache {
        self.state.catalog_cache()
    }
}

/// Logs a player in by device id, creating the player on first sight, and returns a signed
/// session token.
#[utoipa::path(
    post, path = "/v1/auth/device", tag = "players",
    request_body = DeviceLoginRequest,
    responses(
        (status = 200, body = Session),
        (status = 400, body = store_api::ErrorBody, description = "malformed body or device id"),
        (status = 429, body = store_api::ErrorBody, description = "rate_limited: this device logs in too often"),
    )
)]
async fn login_device(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<DeviceLoginRequest>,
) -> ApiResult<axum::Json<Session>> {
    state.player_limits().check(crate::players::auth::device_login_caller(request.device_id.as_str()))?;
    let device_key = crate::players::auth::device_key(request.device_id.as_str());
    log_in(&state, device_key, request.country).await
}

/// Opens a session for the player with this identity key, creating the player on first sight.
async fn log_in(
    state: &AppState,
    device_key: String,
    country: Option<Country>,
) -> ApiResult<axum::Json<Session>> {
    let now = now_micros();
    let expires_at =
        now.saturating_add(i64::try_from(state.settings().session_ttl.as_micros()).unwrap_or(i64::MAX));
    let session_id = Uuid::now_v7();
    let job = LoginJob { state: state.clone(), country, device_key, session_id, now, expires_at };
    let done = state.batcher().run(Box::new(job)).await?;
    let player_id = std::str::from_utf8(&done.body)
        .ok()
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(|| anyhow::anyhow!("a login answered no player id"))?;
    let session_token = state.signer().sign(SessionClaims { session_id, player_id, expires_at });
    Ok(axum::Json(Session { player_id, session_token, expires_at: from_micros(expires_at) }))
}

/// Logs a Steam player in with a session ticket from the Steam client
/// (`GetAuthTicketForWebApi("coinslot")`, hex-encoded), verified with Steam's
/// `ISteamUserAuth/AuthenticateUserTicket`: one player per SteamID, created on first sight.
#[utoipa::path(
    post, path = "/v1/auth/steam", tag = "players",
    request_body = SteamLoginRequest,
    responses(
        (status = 200, body = Session),
        (status = 400, body = store_api::ErrorBody, description = "malformed body or ticket"),
        (status = 401, body = store_api::ErrorBody, description = "invalid_credentials: Steam did not accept the ticket"),
        (status = 429, body = store_api::ErrorBody, description = "rate_limited: this Steam account logs in too often"),
        (status = 503, body = store_api::ErrorBody, description = "provider_unavailable: Steam is not configured or cannot be reached"),
    )
)]
async fn login_steam(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<SteamLoginRequest>,
) -> ApiResult<axum::Json<Session>> {
    let steam = state.steam().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            store_api::ErrorCode::ProviderUnavailable,
            "Steam logins are not configured on this server",
        )
    })?;
    let steam_id = steam.authenticate_ticket(&request.ticket).await?;
    let key = steam.player_key(steam_id);
    state.player_limits().check(crate::players::auth::device_login_caller(&key))?;
    log_in(&state, key, request.country).await
}

/// The live catalog: currencies, items and offers of the newest published version.
/// Send the `ETag` back as `If-None-Match` to get `304` while nothing changed.
#[utoipa::path(
    get, path = "/v1/catalog", tag = "players",
    security(("player" = [])),
    responses(
        (status = 200, body = Catalog, headers(("ETag" = String))),
        (status = 304, description = "unchanged since the ETag in If-None-Match"),
        (status = 401, body = store_api::ErrorBody),
    )
)]
async fn get_catalog(
    State(state): State<AppState>,
    player: PlayerAuth,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let mut conn = state.db().pool().acquire().await?;
    let rendered = state.catalog_cache().get(&mut conn).await?;
    // Regional prices and experiments make the catalog differ per player; otherwise every
    // player gets the same cached bytes.
    let (etag, body) = if rendered.varies() {
        rendered.render_for(&crate::store::pricing::buyer(&mut conn, player.player_id).await?)?
    } else {
        (rendered.etag.clone(), rendered.body.clone())
    };
    let etag = etag.as_str();
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    let status = if unchanged { StatusCode::NOT_MODIFIED } else { StatusCode::OK };
    let mut response = if unchanged {
        status.into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    if let Ok(value) = etag.parse() {
        response.headers_mut().insert(header::ETAG, value);
    }
    Ok(response)
}

/// Gives a player currency and/or items, with a reason recorded in the entry and the audit log.
/// For operators (`players:write`) and game servers (`rewards:write`). Needs an
/// `Idempotency-Key`.
#[utoipa::path(
    post, path = "/admin/v1/players/{id}/grants", tag = "operators",
    security(("operator" = ["players:write"]), ("operator" = ["rewards:write"])),
    params(("id" = String, Path, description = "Player id"), ("Idempotency-Key" = String, Header, description = "1 to 255 printable ASCII characters")),
    request_body = GrantRequest,
    responses(
        (status = 201, body = GrantResult),
        (status = 404, body = store_api::ErrorBody),
        (status = 409, body = store_api::ErrorBody, description = "balance_max_exceeded, already_owned, idempotency_key_reused"),
        (status = 422, body = store_api::ErrorBody, description = "validation_failed"),
    )
)]
async fn grant_to_player(
    State(state): State<AppState>,
    operator: Operator<GrantWriters>,
    Path(id): Path<String>,
    request: IdempotentJson<GrantRequest>,
) -> ApiResult<Response> {
    let player_id = Uuid::parse_str(&id).map_err(|_| crate::error::ApiError::not_found("player", &id))?;
    let op = GrantOp {
        catalog: state.catalog_cache().clone(),
        player_id,
        actor: operator.actor(),
        request: request.body,
    };
    run_once(state.batcher(), &operator.actor(), request.idempotency, op).await
}
