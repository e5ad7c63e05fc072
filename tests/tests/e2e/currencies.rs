//! Currencies: create, read, list and replace, with `ETag` / `If-Match`, validation, and the
//! player catalog following at once.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{assert_error, send};

fn ruby() -> Value {
    json!({ "code": "ruby", "name": "Rubies", "kind": "hard", "initial_grant": 5, "balance_max": 1000 })
}

on_both_backends! {
    async fn an_operator_creates_reads_and_replaces_a_currency(server: TestServer) {
        let response = server.admin(Method::POST, "/admin/v1/currencies").json(&ruby()).send().await.expect("sent");
        assert_eq!(response.status(), StatusCode::CREATED);
        let etag = response.headers()["etag"].to_str().expect("etag").to_owned();
        assert_eq!(response.json::<Value>().await.expect("json"), ruby());

        let response = server.admin(Method::GET, "/admin/v1/currencies/ruby").send().await.expect("sent");
        assert_eq!(response.headers()["etag"].to_str().expect("etag"), etag);
        let (_, list) = send(server.admin(Method::GET, "/admin/v1/currencies")).await;
        let codes: Vec<&str> = list["currencies"].as_array().expect("list").iter().map(|c| c["code"].as_str().expect("code")).collect();
        assert_eq!(codes, ["gems", "gold", "ruby"], "sorted, with the seeded currencies");

        let mut renamed = ruby();
        renamed["name"] = json!("Red rubies");
        let response = server.admin(Method::PUT, "/admin/v1/currencies/ruby").header("if-match", &etag).json(&renamed).send().await.expect("sent");
        assert_eq!(response.status(), StatusCode::OK);
        let new_etag = response.headers()["etag"].to_str().expect("etag").to_owned();
        assert_ne!(new_etag, etag);

        let before = server.fingerprint().await;
        let mut stale = ruby();
        stale["name"] = json!("Stale write");
        let response = send(server.admin(Method::PUT, "/admin/v1/currencies/ruby").header("if-match", &etag).json(&stale)).await;
        assert_error("stale If-Match", &response, StatusCode::PRECONDITION_FAILED, "precondition_failed");
        assert_eq!(response.1["error"]["details"]["current_etag"], new_etag.as_str());
        assert_eq!(server.fingerprint().await, before, "a stale write changes nothing");
        let audit = server.count("select count(*) from audit_log where action like 'currency.%'").await;
        assert_eq!(audit, 2, "create and update are audited");
    }

    async fn a_new_currency_is_in_the_player_catalog_at_once(server: TestServer) {
        let token = server.login("device-d").await;
        let first = server.player(&token, Method::GET, "/v1/catalog").send().await.expect("sent");
        let etag = first.headers()["etag"].to_str().expect("etag").to_owned();
        let (status, _) = send(server.admin(Method::POST, "/admin/v1/currencies").json(&ruby())).await;
        assert_eq!(status, StatusCode::CREATED);
        let response = server.player(&token, Method::GET, "/v1/catalog").header("if-none-match", &etag).send().await.expect("sent");
        assert_eq!(response.status(), StatusCode::OK, "the old ETag no longer matches");
        let catalog: Value = response.json().await.expect("json");
        assert!(catalog["currencies"].as_array().expect("currencies").iter().any(|c| c["code"] == "ruby"));
    }

    async fn bad_currencies_are_refused_and_change_nothing(server: TestServer) {
        let with = |field: &str, value: Value| {
            let mut body = ruby();
            body[field] = value;
            body
        };
        let without = |field: &str| {
            let mut body = ruby();
            body.as_object_mut().expect("object").remove(field);
            body
        };
        let cases = [
            ("one-letter code", with("code", json!("r")), "code"),
            ("upper-case code", with("code", json!("Ruby")), "code"),
            ("code starting with a digit", with("code", json!("1ruby")), "code"),
            ("code with a dash", with("code", json!("red-ruby")), "code"),
            ("code too long", with("code", json!("r".repeat(33))), "code"),
            ("unknown kind", with("kind", json!("medium")), "kind"),
            ("negative initial grant", with("initial_grant", json!(-1)), ""),
            ("zero balance max", with("balance_max", json!(0)), ""),
            ("balance max over 2^53", with("balance_max", json!(9_007_199_254_740_993_i64)), ""),
            ("initial grant over balance max", with("initial_grant", json!(1001)), ""),
            ("fractional amount", with("initial_grant", json!(1.5)), "initial_grant"),
            ("amount as a string", with("balance_max", json!("1000")), "balance_max"),
            ("blank name", with("name", json!("  ")), "name"),
            ("name too long", with("name", json!("n".repeat(101))), "name"),
            ("missing kind", without("kind"), ""),
            ("unknown field", with("colour", json!("red")), "colour"),
        ];
        let before = server.fingerprint().await;
        for (case, body, field) in cases {
            let response = send(server.admin(Method::POST, "/admin/v1/currencies").json(&body)).await;
            assert_error(case, &response, StatusCode::BAD_REQUEST, "invalid_request");
            if !field.is_empty() {
                assert_eq!(response.1["error"]["details"]["field"], field, "{case}: {}", response.1);
            }
        }
        let duplicate = send(server.admin(Method::POST, "/admin/v1/currencies").json(&with("code", json!("gold")))).await;
        assert_error("duplicate code", &duplicate, StatusCode::CONFLICT, "already_exists");
        let mismatch = send(server.admin(Method::PUT, "/admin/v1/currencies/gold").json(&ruby())).await;
        assert_error("body code differs from path", &mismatch, StatusCode::BAD_REQUEST, "invalid_request");
        let missing = send(server.admin(Method::PUT, "/admin/v1/currencies/ruby").json(&ruby())).await;
        assert_error("replace a missing currency", &missing, StatusCode::NOT_FOUND, "not_found");
        let unknown = send(server.admin(Method::GET, "/admin/v1/currencies/nothing")).await;
        assert_error("read a missing currency", &unknown, StatusCode::NOT_FOUND, "not_found");
        assert_eq!(server.fingerprint().await, before, "refused requests changed nothing");
    }

    async fn an_installation_holds_at_most_64_currencies(server: TestServer) {
        // Two are seeded; 62 more reach the limit.
        for index in 0..62 {
            let body = json!({ "code": format!("c{index}"), "name": "Coin", "kind": "soft", "initial_grant": 0, "balance_max": 10 });
            let (status, body) = send(server.admin(Method::POST, "/admin/v1/currencies").json(&body)).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        let response = send(server.admin(Method::POST, "/admin/v1/currencies").json(&ruby())).await;
        assert_error("the 65th currency", &response, StatusCode::CONFLICT, "limit_exceeded");
        assert_eq!(server.count("select count(*) from currency").await, 64);
    }
}
