//! Velocity checks on orders: too many orders, or too many declined payments, in a short time
//! flag the player; new orders then wait (403 `player_flagged`) until an operator clears the
//! flag. The flag is in the audit log; nothing else changes.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tests::{Backend, TestServer, assert_error, seed, send};

const CARD_DECLINED: &str = "4000000000000002";

fn new_order(server: &TestServer, token: &str) -> reqwest::RequestBuilder {
    server
        .player(token, Method::POST, "/v1/orders")
        .header("idempotency-key", uuid::Uuid::now_v7().to_string())
        .json(&json!({ "offer_id": seed::GEMS_SMALL }))
}

async fn case(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |settings| {
        settings.velocity_orders_max = 3;
        settings.velocity_declines_max = 2;
    })
    .await
    else {
        return;
    };
    // Many orders: the fourth in ten minutes flags the player.
    let (fast_id, fast) = server.login_player("velocity-orders").await;
    for _ in 0..3 {
        let (status, order) = send(new_order(&server, &fast)).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
    }
    let orders_before = server.count("select count(*) from payment_order").await;
    let refused = send(new_order(&server, &fast)).await;
    assert_error("a fourth order in ten minutes", &refused, StatusCode::FORBIDDEN, "player_flagged");
    assert_eq!(refused.1["error"]["details"]["reason"], "3 orders in 10 minutes");
    assert_eq!(server.count("select count(*) from payment_order").await, orders_before, "no order was made");
    let (_, detail) = send(server.admin(Method::GET, &format!("/admin/v1/players/{fast_id}"))).await;
    assert_eq!(detail["player"]["flag_reason"], "3 orders in 10 minutes");
    assert!(detail["player"]["flagged_at"].is_string());
    let (_, audit) = send(server.admin(Method::GET, "/admin/v1/audit-log")).await;
    assert_eq!(audit["entries"][0]["action"], "player.flag");
    assert_eq!(audit["entries"][0]["actor"], "system:velocity");
    // Virtual purchases are not orders: they go on.
    let (status, bought) =
        send(server.purchase(&fast, "velocity-virtual", &json!({ "offer_id": seed::MAGNET }))).await;
    assert_eq!(status, StatusCode::CREATED, "{bought}");

    // An operator clears the flag, with a reason; orders are taken again (the window still
    // counts the earlier orders, so the next one flags again: the rule, not a bug).
    let clear = json!({ "flagged": false, "reason": "a collector, not a fraudster" });
    let (status, cleared) =
        send(server.admin(Method::PATCH, &format!("/admin/v1/players/{fast_id}")).json(&clear)).await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert!(cleared.get("flagged_at").is_none(), "{cleared}");
    let (_, audit) = send(server.admin(Method::GET, "/admin/v1/audit-log")).await;
    assert_eq!(audit["entries"][0]["action"], "player.unflag");
    let nothing = send(
        server.admin(Method::PATCH, &format!("/admin/v1/players/{fast_id}")).json(&json!({ "reason": "?" })),
    )
    .await;
    assert_error("a change naming nothing", &nothing, StatusCode::BAD_REQUEST, "invalid_request");

    // Declines: the second declined payment in an hour flags the player at their next order.
    let (declined_id, declined) = server.login_player("velocity-declines").await;
    for _ in 0..2 {
        let (status, order) = send(new_order(&server, &declined)).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        server.pay(order["checkout_url"].as_str().expect("a checkout"), CARD_DECLINED).await;
        server
            .wait_for_order(&declined, order["id"].as_str().expect("an id"), |order| {
                order["status"] == "failed"
            })
            .await;
    }
    let refused = send(new_order(&server, &declined)).await;
    assert_error("an order after two declines", &refused, StatusCode::FORBIDDEN, "player_flagged");
    assert_eq!(refused.1["error"]["details"]["reason"], "2 declined payments in an hour");
    let (_, detail) = send(server.admin(Method::GET, &format!("/admin/v1/players/{declined_id}"))).await;
    assert!(detail["player"]["flagged_at"].is_string());
    server.assert_audit_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_orders_and_declines_flag_the_player_on_sqlite() {
    case(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_orders_and_declines_flag_the_player_on_postgres() {
    case(Backend::Postgres).await;
}
