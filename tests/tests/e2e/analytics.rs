//! Sales analytics over real purchases, orders, tabs and store views: each report's figures
//! against the answer worked out by hand, CSV exports, and who may read them.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{TestServer, assert_error, seed, send};

const REPORTS: [&str; 6] =
    ["revenue", "peak-times", "combinations", "price-sensitivity", "geography", "tabs"];

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Logs a player in from `country` and returns (player id, token).
async fn player_from(server: &TestServer, device: &str, country: &str) -> (String, String) {
    let body = json!({ "device_id": device, "country": country });
    let (status, session) = send(server.request(Method::POST, "/v1/auth/device").json(&body)).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    (
        session["player_id"].as_str().expect("id").to_owned(),
        session["session_token"].as_str().expect("token").to_owned(),
    )
}

async fn buy(server: &TestServer, token: &str, offer: &str, price_index: u32) {
    let body = json!({ "offer_id": offer, "price_index": price_index });
    let (status, answer) = send(server.purchase(token, &key(), &body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
}

async fn report(server: &TestServer, name: &str, query: &str) -> Value {
    let (status, body) =
        send(server.admin(Method::GET, &format!("/admin/v1/analytics/{name}?{query}"))).await;
    assert_eq!(status, StatusCode::OK, "{name}: {body}");
    body
}

on_both_backends! {
    async fn reports_over_real_sales_match_the_figures_worked_out_by_hand(server: TestServer) {
        // Three players: A (DE) and B (DE) buy a magnet and a shield; C (JP) buys a magnet only
        // and puts an extra life on the tab. A also views the turbo offer and buys it.
        let (a_id, a) = player_from(&server, "analytics-a", "DE").await;
        let (b_id, b) = player_from(&server, "analytics-b", "DE").await;
        let (_, c) = player_from(&server, "analytics-c", "JP").await;
        for (id, gold) in [(&a_id, 1_000), (&b_id, 1_000)] {
            server.grant(id, "gold", gold).await;
        }
        let (status, viewed) = send(
            server.player(&a, Method::POST, "/v1/events/store-viewed").json(&json!({ "offer_ids": [seed::TURBO, seed::MAGNET] })),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{viewed}");
        assert_eq!(viewed["recorded"], 2);
        for token in [&a, &b] {
            buy(&server, token, seed::MAGNET, 0).await;
            buy(&server, token, seed::SHIELD, 0).await;
        }
        buy(&server, &c, seed::MAGNET, 0).await;
        buy(&server, &c, seed::EXTRA_LIFE, 0).await;
        buy(&server, &a, seed::TURBO, 0).await;

        // Revenue today: magnets 3 × 100 gold, shields 2 × 150, and 0.05 USD on the tab.
        let revenue = report(&server, "revenue", "").await;
        let row = |currency: &str, sku: &str| {
            revenue["rows"].as_array().expect("rows").iter().find(|row| row["currency"] == currency && row["sku"] == sku).cloned()
        };
        let magnet = row("gold", "magnet").expect("magnet sales");
        assert_eq!((magnet["purchases"].as_i64(), magnet["gross"].as_str(), magnet["net"].as_str()), (Some(3), Some("300"), Some("300")));
        assert_eq!(row("gold", "shield").expect("shields")["gross"], "300");
        assert_eq!(row("USD", "extra_life").expect("the tab sale")["gross"], "0.05");
        let gold_only = report(&server, "revenue", "currency=gold").await;
        assert!(gold_only["rows"].as_array().expect("rows").iter().all(|row| row["currency"] == "gold"));

        // Pairs: 3 buyers; magnet (3) and shield (2) together for 2: support 2/3, confidence
        // magnet→shield 2/3, shield→magnet 1, lift (2/3) / (1 × 2/3) = 1.
        let pairs = report(&server, "combinations", "window_h=1").await;
        assert_eq!(pairs["buyers"], 3);
        let together = pairs["pairs"].as_array().expect("pairs").iter().find(|pair| pair["a"] == "magnet" && pair["b"] == "shield").cloned().expect("magnet and shield");
        assert_eq!(together["players"], 2);
        assert_eq!(together["support"], 0.6667);
        assert_eq!(together["confidence_a_to_b"], 0.6667);
        assert_eq!(together["confidence_b_to_a"], 1.0);
        assert_eq!(together["lift"], 1.0);

        // The heatmap holds all 7 purchases in 168 cells; in gold, the 6 paid in gold.
        let count = |report: &Value| report["cells"].as_array().expect("cells").iter().map(|cell| cell["purchases"].as_i64().expect("a count")).sum::<i64>();
        let all = report(&server, "peak-times", "tz=%2B09:00").await;
        assert_eq!(all["cells"].as_array().expect("cells").len(), 168);
        assert_eq!(count(&all), 7);
        assert_eq!(all["tz"], "+09:00");
        let gold = report(&server, "peak-times", "currency=gold").await;
        assert_eq!(count(&gold), 6);

        // Price sensitivity: A viewed turbo (in its variant) and bought it: 1 of 1.
        let sensitivity = report(&server, "price-sensitivity", "").await;
        let turbo = sensitivity["rows"].as_array().expect("rows").iter().find(|row| row["sku"] == "turbo" && row["by"] == "variant").cloned().expect("turbo by variant");
        assert_eq!((turbo["viewers"].as_i64(), turbo["buyers"].as_i64(), turbo["conversion"].as_f64()), (Some(1), Some(1), Some(1.0)));
        assert_eq!(turbo["ci_high"], 1.0);
        assert_eq!(turbo["ci_low"], 0.2065, "the 95% Wilson interval of 1 in 1");
        let magnet_views = sensitivity["rows"].as_array().expect("rows").iter().find(|row| row["sku"] == "magnet" && row["by"] == "price_point").cloned().expect("magnet by price");
        assert_eq!(magnet_views["value"], "100 gold");

        // Geography: DE has 2 buyers and 5 gold purchases (A's turbo included).
        let geography = report(&server, "geography", "granularity=week").await;
        let de = geography["rows"].as_array().expect("rows").iter().find(|row| row["country"] == "DE" && row["currency"] == "gold").cloned().expect("DE");
        assert_eq!((de["buyers"].as_i64(), de["purchases"].as_i64()), (Some(2), Some(5)));
        assert!(geography["rows"].as_array().expect("rows").iter().any(|row| row["country"] == "JP"));

        // Tabs: one open, owing 0.05; opened today, none settled yet.
        let tabs = report(&server, "tabs", "").await;
        let usd = tabs["rows"].as_array().expect("rows").iter().find(|row| row["currency"] == "USD").cloned().expect("USD tabs");
        assert_eq!((usd["open_tabs"].as_i64(), usd["outstanding"].as_str(), usd["opened"].as_i64(), usd["settled"].as_i64()), (Some(1), Some("0.05"), Some(1), Some(0)));

        // CSV: a header and one line per row.
        let response = server.admin(Method::GET, "/admin/v1/analytics/revenue?format=csv").send().await.expect("sent");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()["content-type"].to_str().expect("a type").starts_with("text/csv"));
        let csv = response.text().await.expect("a body");
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some("day,currency,sku,purchases,quantity,gross,fees,refunded,net"));
        assert_eq!(lines.count(), revenue["rows"].as_array().expect("rows").len());
        for name in REPORTS {
            let response = server.admin(Method::GET, &format!("/admin/v1/analytics/{name}?format=csv")).send().await.expect("sent");
            assert_eq!(response.status(), StatusCode::OK, "{name} as CSV");
        }
    }

    async fn analytics_need_the_analytics_scope_and_check_their_parameters(server: TestServer) {
        let catalog_key = server.key_with_scopes(&["catalog:read"]).await;
        let analyst = server.key_with_scopes(&["analytics:read"]).await;
        for name in REPORTS {
            let path = format!("/admin/v1/analytics/{name}");
            let nobody = send(server.request(Method::GET, &path)).await;
            assert_error(&format!("{name} without a key"), &nobody, StatusCode::UNAUTHORIZED, "unauthenticated");
            let wrong = send(server.request(Method::GET, &path).bearer_auth(&catalog_key)).await;
            assert_error(&format!("{name} with catalog:read"), &wrong, StatusCode::FORBIDDEN, "insufficient_scope");
            let (status, _) = send(server.request(Method::GET, &path).bearer_auth(&analyst)).await;
            assert_eq!(status, StatusCode::OK, "{name} with analytics:read");
        }
        for (case, query) in [
            ("a malformed date", "from=23-11-2026"),
            ("from after to", "from=2026-11-20&to=2026-11-01"),
            ("over a year", "from=2020-01-01&to=2026-01-01"),
            ("an unknown format", "format=xml"),
            ("an unknown parameter", "colour=blue"),
        ] {
            let answer = send(server.admin(Method::GET, &format!("/admin/v1/analytics/revenue?{query}"))).await;
            assert_error(case, &answer, StatusCode::BAD_REQUEST, "invalid_request");
        }
        let bad_tz = send(server.admin(Method::GET, "/admin/v1/analytics/peak-times?tz=Mars")).await;
        assert_error("a time zone that is not an offset", &bad_tz, StatusCode::BAD_REQUEST, "invalid_request");
        let bad_window = send(server.admin(Method::GET, "/admin/v1/analytics/combinations?window_h=0")).await;
        assert_error("a zero window", &bad_window, StatusCode::BAD_REQUEST, "invalid_request");
        let bad_granularity = send(server.admin(Method::GET, "/admin/v1/analytics/geography?granularity=year")).await;
        assert_error("a year granularity", &bad_granularity, StatusCode::BAD_REQUEST, "invalid_request");
    }

    async fn bad_store_views_are_refused_and_record_nothing(server: TestServer) {
        let token = server.login("views-bad").await;
        let before = server.count("select count(*) from store_view").await;
        let too_many: Vec<&str> = std::iter::repeat_n(seed::MAGNET, 101).collect();
        for (case, body) in [
            ("no offers", json!({ "offer_ids": [] })),
            ("too many offers", json!({ "offer_ids": too_many })),
            ("an offer not in the catalog", json!({ "offer_ids": [seed::MAGNET, "019a6b1e-00ff-7000-8000-0000000000ff"] })),
            ("not an offer id", json!({ "offer_ids": ["magnet"] })),
            ("an unknown field", json!({ "offer_ids": [seed::MAGNET], "extra": 1 })),
        ] {
            let (status, body) = send(server.player(&token, Method::POST, "/v1/events/store-viewed").json(&body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{case}: {body}");
        }
        let nobody = send(server.request(Method::POST, "/v1/events/store-viewed").json(&json!({ "offer_ids": [seed::MAGNET] }))).await;
        assert_error("no session", &nobody, StatusCode::UNAUTHORIZED, "unauthenticated");
        assert_eq!(server.count("select count(*) from store_view").await, before, "nothing recorded");
    }
}

/// The review's M11: a report reads a bounded number of rows; a range holding more is refused
/// with a typed error naming `from` (never silently cut), and a shorter range answers.
async fn a_report_over_more_rows_than_it_may_read_is_refused_not_cut(backend: tests::Backend) {
    let Some(server) = TestServer::start_with(backend, |settings| settings.analytics_rows_max = 3).await
    else {
        return;
    };
    let (player, token) = server.login_player("bounded-analyst").await;
    server.grant(&player, "gold", 1_000).await;
    for _ in 0..4 {
        buy(&server, &token, seed::MAGNET, 0).await;
    }
    for name in REPORTS.into_iter().filter(|name| *name != "tabs") {
        let refused = send(server.admin(Method::GET, &format!("/admin/v1/analytics/{name}"))).await;
        assert_error(name, &refused, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(refused.1["error"]["details"]["field"], "from", "{name}: {}", refused.1);
    }
    let tomorrow = (time::OffsetDateTime::now_utc() + time::Duration::days(1)).date();
    let empty = report(&server, "revenue", &format!("from={tomorrow}&to={tomorrow}")).await;
    assert!(empty["rows"].as_array().is_some_and(Vec::is_empty), "{empty}");
}

on_each_backend!(a_report_over_more_rows_than_it_may_read_is_refused_not_cut);
