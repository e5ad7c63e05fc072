//! Steam as a player identity (issue 19), end to end over real HTTP: `POST /v1/auth/steam`
//! verifies the game's session ticket with a local stand-in for Steam's
//! `ISteamUserAuth/AuthenticateUserTicket`, and a SteamID is one player.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use store_server::players::steam::TICKET_IDENTITY;
use tests::steam::{APP_ID, SteamStandIn};
use tests::{Backend, TestServer, assert_error, send};

const GABE: u64 = 76_561_197_960_287_930;
const OTHER: u64 = 76_561_197_960_265_728;

async fn steam_store(backend: Backend) -> Option<(TestServer, SteamStandIn)> {
    let steam = SteamStandIn::start().await;
    let settings = steam.settings();
    let server = TestServer::start_with(backend, |server| server.steam = Some(settings)).await?;
    Some((server, steam))
}

async fn login(server: &TestServer, ticket: &str) -> (StatusCode, Value) {
    send(server.request(Method::POST, "/v1/auth/steam").json(&json!({ "ticket": ticket }))).await
}

/// A ticket logs its SteamID in; the same SteamID is always the same player, another SteamID
/// another player; the session works like a device login's.
async fn a_steam_ticket_logs_in_one_player_per_steam_id(backend: Backend) {
    let Some((server, steam)) = steam_store(backend).await else { return };
    let (status, first) = login(&server, &steam.issue_ticket(GABE, APP_ID, TICKET_IDENTITY)).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, again) = login(&server, &steam.issue_ticket(GABE, APP_ID, TICKET_IDENTITY)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(first["player_id"], again["player_id"], "one player per SteamID");
    let (_, other) = login(&server, &steam.issue_ticket(OTHER, APP_ID, TICKET_IDENTITY)).await;
    assert_ne!(first["player_id"], other["player_id"]);
    let token = first["session_token"].as_str().expect("a token");
    let (status, wallet) = send(server.player(token, Method::GET, "/v1/wallet")).await;
    assert_eq!(status, StatusCode::OK, "{wallet}");
    assert_eq!(server.count("select count(*) from player").await, 2);
    assert_eq!(
        server.text("select device_id from player order by created_at limit 1").await,
        format!("steam:{APP_ID}:{GABE}"),
        "the SteamID is kept for Steam's purchase calls"
    );
}

/// Forged, foreign and banned tickets are refused with a typed error and create nothing; a
/// device id spelling a Steam player's key is a device, not that player.
async fn bad_tickets_are_refused_and_change_nothing(backend: Backend) {
    let Some((server, steam)) = steam_store(backend).await else { return };
    let (_, owner) = login(&server, &steam.issue_ticket(GABE, APP_ID, TICKET_IDENTITY)).await;
    let before = server.fingerprint().await;
    let cases = [
        ("forged", "14000000deadbeef".to_owned(), StatusCode::UNAUTHORIZED, "invalid_credentials"),
        (
            "another app's",
            steam.issue_ticket(OTHER, 730, TICKET_IDENTITY),
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        ),
        (
            "another identity's",
            steam.issue_ticket(OTHER, APP_ID, "someone-else"),
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        ),
        ("banned", steam.issue_banned_ticket(OTHER), StatusCode::UNAUTHORIZED, "invalid_credentials"),
        ("not hex", "not a ticket".to_owned(), StatusCode::BAD_REQUEST, "invalid_request"),
        ("empty", String::new(), StatusCode::BAD_REQUEST, "invalid_request"),
        ("too long", "ab".repeat(4_000), StatusCode::BAD_REQUEST, "invalid_request"),
    ];
    for (case, ticket, status, code) in cases {
        assert_error(case, &login(&server, &ticket).await, status, code);
    }
    let unknown_field = send(
        server
            .request(Method::POST, "/v1/auth/steam")
            .json(&json!({ "ticket": "ab", "steamid": GABE.to_string() })),
    )
    .await;
    assert_error("a SteamID the client names", &unknown_field, StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(server.fingerprint().await, before, "refused logins change nothing");
    let (status, device) = send(
        server
            .request(Method::POST, "/v1/auth/device")
            .json(&json!({ "device_id": format!("steam:{APP_ID}:{GABE}") })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(device["player_id"], owner["player_id"], "a device id never logs in as a Steam player");
}

/// Without Steam configured the route says so; with Steam unreachable or the key refused, the
/// player is told to retry, not that the ticket is bad.
async fn steam_not_configured_or_unreachable(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else { return };
    let refused = login(&server, "abcd").await;
    assert_error("not configured", &refused, StatusCode::SERVICE_UNAVAILABLE, "provider_unavailable");
    let steam = SteamStandIn::start().await;
    let mut settings = steam.settings();
    settings.web_api_key = "a revoked key".to_owned();
    let Some(server) = TestServer::start_with(backend, |server| server.steam = Some(settings)).await else {
        return;
    };
    let answer = login(&server, &steam.issue_ticket(GABE, APP_ID, TICKET_IDENTITY)).await;
    assert_error("key refused by Steam", &answer, StatusCode::BAD_GATEWAY, "provider_unavailable");
    assert_eq!(steam.calls(), 1);
    assert_eq!(server.count("select count(*) from player").await, 0);
}

on_each_backend!(
    a_steam_ticket_logs_in_one_player_per_steam_id,
    bad_tickets_are_refused_and_change_nothing,
    steam_not_configured_or_unreachable,
);
