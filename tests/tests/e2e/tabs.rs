//! Tabs: micro-priced items bought at once and settled as one card charge, with sub-cent prices
//! carried exactly from one tab to the next.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use store_server::settings::TabSettings;
use tests::{Backend, TestServer, assert_error, seed, send};

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

async fn buy_on_tab(server: &TestServer, token: &str, offer: &str, quantity: i64) -> (StatusCode, Value) {
    send(server.purchase(
        token,
        &key(),
        &json!({ "offer_id": offer, "quantity": quantity, "price_index": 0 }),
    ))
    .await
}

async fn settle_and_pay(server: &TestServer, token: &str) -> Value {
    let (status, order) =
        send(server.player(token, Method::POST, "/v1/tab/settle").header("idempotency-key", key())).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let (status, _) = server.pay(order["checkout_url"].as_str().expect("url"), "4242424242424242").await;
    assert_eq!(status, StatusCode::OK);
    server
        .wait_for_order(token, order["id"].as_str().expect("id"), |order| order["status"] == "fulfilled")
        .await
}

on_both_backends! {
    async fn a_hundred_five_cent_items_settle_as_one_five_dollar_charge(server: TestServer) {
        let (_, token) = server.login_player("tab-player").await;
        for index in 0..100 {
            let (status, result) = buy_on_tab(&server, &token, seed::EXTRA_LIFE, 1).await;
            assert_eq!(status, StatusCode::CREATED, "purchase {index}: {result}");
            if index == 0 {
                assert_eq!(result["purchase"]["charged_to_tab"], json!({ "currency": "USD", "amount": "0.05" }));
                assert_eq!(result["inventory"]["items"], json!([{ "sku": "extra_life", "quantity": 1 }]), "the item arrives at once");
            }
        }
        let (_, tabs) = send(server.player(&token, Method::GET, "/v1/tab")).await;
        let tab = &tabs["tabs"][0];
        assert_eq!(tab["amount"], json!({ "currency": "USD", "amount": "5.00" }));
        assert_eq!(tab["item_count"], 100);
        assert_eq!(tab["settlement_required"], true);
        let before = server.fingerprint().await;
        let refused = buy_on_tab(&server, &token, seed::EXTRA_LIFE, 1).await;
        assert_error("a purchase past the threshold", &refused, StatusCode::CONFLICT, "tab_settlement_required");
        assert_eq!(refused.1["error"]["details"]["reason"], "threshold");
        assert_eq!(server.fingerprint().await, before);

        let order = settle_and_pay(&server, &token).await;
        assert_eq!(order["amount"], json!({ "currency": "USD", "amount": "5.00" }));
        assert_eq!(order["fee"], json!({ "currency": "USD", "amount": "0.45" }), "one charge: 0.30 + 2.9% of 5.00");
        assert!(order["tab_id"].is_string() && order["offer_id"].is_null());
        assert_eq!(server.count("select count(*) from payment_order").await, 1, "exactly one settlement order");

        let (_, tabs) = send(server.admin(Method::GET, "/admin/v1/tabs")).await;
        let settled = &tabs["tabs"][0];
        assert_eq!(settled["status"], "settled");
        assert_eq!(settled["items"].as_array().expect("items").len(), 100);
        assert_eq!(settled["charged"], json!({ "currency": "USD", "amount": "5.00" }));
        assert_eq!(settled["fee_saved"], json!({ "currency": "USD", "amount": "29.55" }), "100 × 0.30 − 0.45");
        let (_, tabs) = send(server.player(&token, Method::GET, "/v1/tab")).await;
        assert_eq!(tabs["tabs"], json!([]), "nothing owed, no remainder: no open tab");
        let (status, _) = buy_on_tab(&server, &token, seed::EXTRA_LIFE, 1).await;
        assert_eq!(status, StatusCode::CREATED, "a settled player buys on a new tab");
        server.assert_audit_clean().await;
    }

    async fn tab_mistakes_are_refused_and_change_nothing(server: TestServer) {
        let (player, token) = server.login_player("tab-mistakes").await;
        let before = server.fingerprint().await;
        let nothing = send(server.player(&token, Method::POST, "/v1/tab/settle").header("idempotency-key", key())).await;
        assert_error("settling with nothing owed", &nothing, StatusCode::CONFLICT, "nothing_to_settle");
        assert_eq!(server.fingerprint().await, before);
        let (status, _) = buy_on_tab(&server, &token, seed::EXTRA_LIFE, 2).await;
        assert_eq!(status, StatusCode::CREATED);
        let small = send(server.player(&token, Method::POST, "/v1/tab/settle").header("idempotency-key", key())).await;
        assert_error("settling 0.10 before it is due", &small, StatusCode::CONFLICT, "amount_below_minimum");

        let offer = |prices: Value| json!({ "sku": "extra_life", "prices": prices });
        let cases = [
            ("a zero tab price", offer(json!([{ "money": { "currency": "USD", "amount": "0" }, "settlement": "tab" }])), StatusCode::BAD_REQUEST, "invalid_request"),
            ("a negative tab price", offer(json!([{ "money": { "currency": "USD", "amount": "-0.05" }, "settlement": "tab" }])), StatusCode::BAD_REQUEST, "invalid_request"),
            ("a currency with no minimum charge", offer(json!([{ "money": { "currency": "XAU", "amount": "0.05" }, "settlement": "tab" }])), StatusCode::BAD_REQUEST, "invalid_request"),
            ("finer than a micro", offer(json!([{ "money": { "currency": "USD", "amount": "0.0000005" }, "settlement": "tab" }])), StatusCode::BAD_REQUEST, "invalid_request"),
        ];
        let before = server.fingerprint().await;
        for (case, body, status, code) in cases {
            assert_error(case, &send(server.admin(Method::POST, "/admin/v1/catalog/draft/offers").json(&body)).await, status, code);
        }
        assert_eq!(server.fingerprint().await, before);

        // A minor's tab holds at most 2 × the minimum charge (USD 1.00): 18 more lives fit, the 19th does not.
        let band = json!({ "age_band": "minor", "reason": "age check in the game" });
        let (status, body) = send(server.admin(Method::PATCH, &format!("/admin/v1/players/{player}")).json(&band)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = buy_on_tab(&server, &token, seed::EXTRA_LIFE, 18).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let over = buy_on_tab(&server, &token, seed::EXTRA_LIFE, 1).await;
        assert_error("a minor past their credit limit", &over, StatusCode::CONFLICT, "tab_settlement_required");
        assert_eq!(over.1["error"]["details"]["reason"], "credit_limit");
        server.assert_audit_clean().await;
    }
}

async fn sub_cent_prices_settle_exactly_and_carry_the_remainder(backend: Backend) {
    // A threshold of 11 × the minimum charge (USD 5.50) lets 2,501 items of USD 0.002 reach 5.002.
    let tabs = TabSettings { threshold_multiple: 11, credit_new_multiple: 11, ..TabSettings::default() };
    let Some(server) = TestServer::start_with(backend, |settings| settings.tabs = tabs).await else { return };
    let (status, item) = send(
        server
            .admin(Method::POST, "/admin/v1/catalog/draft/items")
            .json(&json!({ "sku": "spark", "kind": "consumable", "name": "Spark" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{item}");
    let price = json!({ "sku": "spark", "prices": [{ "money": { "currency": "USD", "amount": "0.002" }, "settlement": "tab" }] });
    let (status, offer) =
        send(server.admin(Method::POST, "/admin/v1/catalog/draft/offers").json(&price)).await;
    assert_eq!(status, StatusCode::CREATED, "{offer}");
    assert_eq!(send(server.admin(Method::POST, "/admin/v1/catalog/publish")).await.0, StatusCode::CREATED);
    let offer = offer["id"].as_str().expect("id").to_owned();

    let (_, token) = server.login_player("sparks").await;
    for _ in 0..25 {
        let (status, body) = buy_on_tab(&server, &token, &offer, 100).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, _) = buy_on_tab(&server, &token, &offer, 1).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, tabs) = send(server.player(&token, Method::GET, "/v1/tab")).await;
    assert_eq!(tabs["tabs"][0]["amount"], json!({ "currency": "USD", "amount": "5.002" }));
    assert_eq!(tabs["tabs"][0]["settle_amount"], json!({ "currency": "USD", "amount": "5.00" }));

    let order = settle_and_pay(&server, &token).await;
    assert_eq!(
        order["amount"],
        json!({ "currency": "USD", "amount": "5.00" }),
        "rounded down to whole cents"
    );
    let (_, tabs) = send(server.player(&token, Method::GET, "/v1/tab")).await;
    assert_eq!(
        tabs["tabs"][0]["carried_in"],
        json!({ "currency": "USD", "amount": "0.002" }),
        "the remainder is carried"
    );
    assert_eq!(tabs["tabs"][0]["amount"], json!({ "currency": "USD", "amount": "0.002" }));
    assert_eq!(
        server.count("select cast(sum(balance) as bigint) from account where kind = 'tab_receivable' and currency = 'USD'").await,
        -2_000,
        "exactly 0.002 still owed, in micros"
    );
    assert_eq!(server.count("select cast(sum(balance) as bigint) from account where kind = 'clearing' and currency = 'USD'").await, -5_000_000);
    assert_eq!(server.count("select quantity from inventory where sku = 'spark'").await, 2_501);
    server.assert_audit_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_cent_prices_settle_exactly_and_carry_the_remainder_on_sqlite() {
    sub_cent_prices_settle_exactly_and_carry_the_remainder(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_cent_prices_settle_exactly_and_carry_the_remainder_on_postgres() {
    sub_cent_prices_settle_exactly_and_carry_the_remainder(Backend::Postgres).await;
}

/// A tab run up before an operator moved the player to a younger band: the band's cap on one
/// payment (here 2% of USD 50, USD 1.00) holds for the settlement too, and no further charge fits
/// the band's credit.
async fn a_younger_band_caps_the_tab_and_its_settlement(backend: Backend) {
    let bands = store_server::settings::AgeBandShares::parse("child=2").expect("bands");
    let Some(server) = TestServer::start_with(backend, |settings| {
        settings.spending_limits = settings.spending_limits.clone().with_bands(bands);
    })
    .await
    else {
        return;
    };
    let (player, token) = server.login_player("grown-up-tab").await;
    let (status, body) = buy_on_tab(&server, &token, seed::EXTRA_LIFE, 30).await;
    assert_eq!(status, StatusCode::CREATED, "an adult's tab takes USD 1.50: {body}");
    let band = json!({ "age_band": "child", "reason": "a parent wrote in" });
    let (status, body) =
        send(server.admin(Method::PATCH, &format!("/admin/v1/players/{player}")).json(&band)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let before = server.fingerprint().await;
    let more = buy_on_tab(&server, &token, seed::EXTRA_LIFE, 1).await;
    assert_error("a child past the band's credit", &more, StatusCode::CONFLICT, "tab_settlement_required");
    assert_eq!(more.1["error"]["details"]["credit_limit"], "1.00", "{}", more.1);
    let settle =
        send(server.player(&token, Method::POST, "/v1/tab/settle").header("idempotency-key", key())).await;
    assert_error(
        "a settlement over the child's cap",
        &settle,
        StatusCode::CONFLICT,
        "spending_limit_exceeded",
    );
    let details = &settle.1["error"]["details"];
    assert_eq!(
        (details["period"].as_str(), details["limit"].as_str(), details["age_band"].as_str()),
        (Some("transaction"), Some("1.00"), Some("child")),
        "{details}"
    );
    assert_eq!(server.fingerprint().await, before, "refused: nothing changed");
    let (_, tabs) = send(server.player(&token, Method::GET, "/v1/tab")).await;
    assert_eq!(tabs["tabs"][0]["credit_limit"], json!({ "currency": "USD", "amount": "1.00" }), "{tabs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_younger_band_caps_the_tab_and_its_settlement_on_sqlite() {
    a_younger_band_caps_the_tab_and_its_settlement(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_younger_band_caps_the_tab_and_its_settlement_on_postgres() {
    a_younger_band_caps_the_tab_and_its_settlement(Backend::Postgres).await;
}
