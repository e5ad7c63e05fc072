//! Earning: reward rules and their caps, and operator grants with reasons and scopes.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{TestServer, assert_error, send};

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn coin_rule() -> Value {
    json!({ "code": "coin", "currency": "gold", "amount": 10, "cap_per_minute": 25, "cap_per_day": 1000 })
}

async fn create_rule(server: &TestServer, rule: &Value) {
    let (status, body) = send(server.admin(Method::POST, "/admin/v1/reward-rules").json(rule)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

fn claim(server: &TestServer, token: &str, rule: &str, body: Option<Value>) -> reqwest::RequestBuilder {
    let request =
        server.player(token, Method::POST, &format!("/v1/rewards/{rule}")).header("idempotency-key", key());
    match body {
        Some(body) => request.json(&body),
        None => request,
    }
}

on_both_backends! {
    async fn rewards_are_earned_up_to_their_caps(server: TestServer) {
        create_rule(&server, &coin_rule()).await;
        let (_, token) = server.login_player("earner").await;
        let (status, first) = send(claim(&server, &token, "coin", None)).await;
        assert_eq!(status, StatusCode::CREATED, "no body claims the rule's amount: {first}");
        assert_eq!(first["earned"], json!({ "currency": "gold", "amount": 10 }));
        let (status, second) = send(claim(&server, &token, "coin", Some(json!({ "amount": 7 })))).await;
        assert_eq!(status, StatusCode::CREATED, "{second}");
        assert_eq!(server.balance(&token, "gold").await, 117);

        let before = server.fingerprint().await;
        // 17 earned this minute; 10 more would pass the cap of 25 (unless the minute just turned,
        // in which case the claim is allowed and the test checks the cap on the next one).
        let capped = send(claim(&server, &token, "coin", None)).await;
        if capped.0 == StatusCode::CREATED {
            let again = send(claim(&server, &token, "coin", None)).await;
            let third = send(claim(&server, &token, "coin", None)).await;
            assert!(again.0 == StatusCode::TOO_MANY_REQUESTS || third.0 == StatusCode::TOO_MANY_REQUESTS, "the cap holds");
        } else {
            assert_error("over the minute cap", &capped, StatusCode::TOO_MANY_REQUESTS, "reward_cap_reached");
            let details = &capped.1["error"]["details"];
            assert_eq!(details["window"], "minute");
            assert_eq!(details["cap"], 25);
            assert!(details["resets_at"].as_str().is_some_and(|at| at.ends_with(":00Z")), "{details}");
            assert_eq!(server.fingerprint().await, before, "a capped claim changes nothing");
        }

        let cases = [
            ("more than the rule pays", claim(&server, &token, "coin", Some(json!({ "amount": 11 }))), StatusCode::BAD_REQUEST, "invalid_request"),
            ("zero", claim(&server, &token, "coin", Some(json!({ "amount": 0 }))), StatusCode::BAD_REQUEST, "invalid_request"),
            ("unknown rule", claim(&server, &token, "treasure", None), StatusCode::NOT_FOUND, "not_found"),
            ("rule code malformed", claim(&server, &token, "No-Rule", None), StatusCode::NOT_FOUND, "not_found"),
            ("no idempotency key", server.player(&token, Method::POST, "/v1/rewards/coin"), StatusCode::BAD_REQUEST, "idempotency_key_required"),
        ];
        let before = server.fingerprint().await;
        for (case, request, status, code) in cases {
            assert_error(case, &send(request).await, status, code);
        }
        assert_eq!(server.fingerprint().await, before);
        server.assert_audit_clean().await;
    }

    async fn operators_manage_reward_rules_with_etags_and_validation(server: TestServer) {
        let response = server.admin(Method::POST, "/admin/v1/reward-rules").json(&coin_rule()).send().await.expect("sent");
        assert_eq!(response.status(), StatusCode::CREATED);
        let etag = response.headers()["etag"].to_str().expect("etag").to_owned();
        let mut richer = coin_rule();
        richer["amount"] = json!(20);
        let (status, _) = send(server.admin(Method::PUT, "/admin/v1/reward-rules/coin").header("if-match", &etag).json(&richer)).await;
        assert_eq!(status, StatusCode::OK);
        let stale = send(server.admin(Method::PUT, "/admin/v1/reward-rules/coin").header("if-match", &etag).json(&coin_rule())).await;
        assert_error("stale rule edit", &stale, StatusCode::PRECONDITION_FAILED, "precondition_failed");
        let (_, list) = send(server.admin(Method::GET, "/admin/v1/reward-rules")).await;
        assert_eq!(list["reward_rules"][0]["amount"], 20);

        let with = |field: &str, value: Value| {
            let mut rule = coin_rule();
            rule["code"] = json!("other");
            rule[field] = value;
            rule
        };
        let before = server.fingerprint().await;
        let cases = [
            ("unknown currency", with("currency", json!("ruby")), StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            ("zero amount", with("amount", json!(0)), StatusCode::BAD_REQUEST, "invalid_request"),
            ("cap below the amount", with("cap_per_hour", json!(5)), StatusCode::BAD_REQUEST, "invalid_request"),
            ("bad code", with("code", json!("Other Rule")), StatusCode::BAD_REQUEST, "invalid_request"),
            ("duplicate code", coin_rule(), StatusCode::CONFLICT, "already_exists"),
        ];
        for (case, body, status, code) in cases {
            assert_error(case, &send(server.admin(Method::POST, "/admin/v1/reward-rules").json(&body)).await, status, code);
        }
        assert_eq!(server.fingerprint().await, before);
    }

    async fn operator_grants_need_a_reason_and_the_right_scope(server: TestServer) {
        let (player, token) = server.login_player("granted").await;
        let rewards_key = server.key_with_scopes(&["rewards:write"]).await;
        let read_key = server.key_with_scopes(&["players:read"]).await;
        let grant = |key: &str, body: Value| {
            server.player(key, Method::POST, &format!("/admin/v1/players/{player}/grants")).header("idempotency-key", self::key()).json(&body)
        };
        let body = json!({ "currency": "gems", "amount": 40, "items": [{ "sku": "magnet", "quantity": 2 }], "reason": "tournament prize" });
        let (status, result) = send(grant(&rewards_key, body)).await;
        assert_eq!(status, StatusCode::CREATED, "a game server's rewards:write key may grant: {result}");
        assert_eq!(result["granted"], json!({ "items": [{ "sku": "magnet", "quantity": 2 }], "currencies": [{ "currency": "gems", "amount": 40 }] }));
        assert_eq!(server.balance(&token, "gems").await, 40);
        let (_, history) = send(server.player(&token, Method::GET, "/v1/wallet/history?limit=1")).await;
        assert_eq!(history["entries"][0]["kind"], "operator_grant");
        assert_eq!(history["entries"][0]["reason"], "tournament prize");
        assert_eq!(server.count("select count(*) from audit_log where action = 'player.grant'").await, 1);
        let (status, _) = send(grant(server.operator_key(), json!({ "items": [{ "sku": "skin.red", "quantity": 1 }], "reason": "gift" }))).await;
        assert_eq!(status, StatusCode::CREATED);

        let before = server.fingerprint().await;
        let unknown_player = server
            .admin(Method::POST, "/admin/v1/players/019a6b1e-0000-7000-8000-000000000000/grants")
            .header("idempotency-key", key())
            .json(&json!({ "currency": "gold", "amount": 1, "reason": "x" }));
        let cases = [
            ("no reason", grant(server.operator_key(), json!({ "currency": "gold", "amount": 5 })), StatusCode::BAD_REQUEST, "invalid_request"),
            ("blank reason", grant(server.operator_key(), json!({ "currency": "gold", "amount": 5, "reason": " " })), StatusCode::BAD_REQUEST, "invalid_request"),
            ("nothing granted", grant(server.operator_key(), json!({ "reason": "x" })), StatusCode::BAD_REQUEST, "invalid_request"),
            ("negative amount", grant(server.operator_key(), json!({ "currency": "gold", "amount": -5, "reason": "x" })), StatusCode::BAD_REQUEST, "invalid_request"),
            ("unknown currency", grant(server.operator_key(), json!({ "currency": "ruby", "amount": 5, "reason": "x" })), StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            ("unknown item", grant(server.operator_key(), json!({ "items": [{ "sku": "nothing", "quantity": 1 }], "reason": "x" })), StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            ("over balance_max", grant(server.operator_key(), json!({ "currency": "gems", "amount": 10_000_000, "reason": "x" })), StatusCode::CONFLICT, "balance_max_exceeded"),
            ("a read-only key", grant(&read_key, json!({ "currency": "gold", "amount": 5, "reason": "x" })), StatusCode::FORBIDDEN, "insufficient_scope"),
            ("a player's token", grant(&token, json!({ "currency": "gold", "amount": 5, "reason": "x" })), StatusCode::FORBIDDEN, "wrong_credential_kind"),
            ("unknown player", unknown_player, StatusCode::NOT_FOUND, "not_found"),
            ("a durable item already owned", grant(server.operator_key(), json!({ "items": [{ "sku": "skin.red", "quantity": 1 }], "reason": "again" })), StatusCode::CONFLICT, "already_owned"),
            ("two of a durable item", grant(server.operator_key(), json!({ "items": [{ "sku": "skin.blue", "quantity": 2 }], "reason": "x" })), StatusCode::CONFLICT, "already_owned"),
        ];
        for (case, request, status, code) in cases {
            assert_error(case, &send(request).await, status, code);
        }
        assert_eq!(server.fingerprint().await, before, "refused grants changed nothing");
        server.assert_audit_clean().await;
    }
}

/// A claim of 10 under `daily` made at `at`, entered as the ledger records one.
async fn claimed_at(server: &TestServer, player: &str, at: time::OffsetDateTime) {
    let micros = i64::try_from(at.unix_timestamp_nanos() / 1_000).expect("a time");
    let entry = server.backdated_entry(player, "reward", micros).await;
    server
        .execute(
            "insert into reward_claim (id, player_id, rule, amount, entry_id, created_at) \
             values ($1, $2, 'daily', 10, $3, $4)",
            &[uuid::Uuid::now_v7().to_string().into(), player.into(), entry.into(), micros.into()],
        )
        .await;
}

/// Reward caps count a player's claims by when they were made, read through the player's
/// time-ordered entries: a claim at the first second of today counts toward the daily cap, one
/// two days ago does not.
async fn caps_count_claims_by_their_time(backend: tests::Backend, batching: bool) {
    let Some(server) = TestServer::start_with(backend, |settings| settings.group_commit = batching).await
    else {
        return;
    };
    create_rule(&server, &json!({ "code": "daily", "currency": "gold", "amount": 10, "cap_per_day": 10 }))
        .await;
    let now = time::OffsetDateTime::now_utc();
    let (earlier, earlier_token) = server.login_player("claimed-two-days-ago").await;
    claimed_at(&server, &earlier, now - time::Duration::days(2)).await;
    let (status, body) = send(claim(&server, &earlier_token, "daily", None)).await;
    assert_eq!(status, StatusCode::CREATED, "a claim two days ago leaves today's cap: {body}");
    let (today, today_token) = server.login_player("claimed-this-morning").await;
    claimed_at(&server, &today, now.replace_time(time::Time::MIDNIGHT) + time::Duration::SECOND).await;
    let refused = send(claim(&server, &today_token, "daily", None)).await;
    assert_error(
        "a claim at the first second of today counts",
        &refused,
        StatusCode::TOO_MANY_REQUESTS,
        "reward_cap_reached",
    );
}

in_every_mode!(caps_count_claims_by_their_time);
