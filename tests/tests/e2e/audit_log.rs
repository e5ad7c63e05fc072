//! The audit log: every operator action, done through the API, is recorded with the acting key,
//! the object before and after; `GET /admin/v1/audit-log` reads it, and no route changes it.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::send;

/// The response's `ETag`, for an `If-Match`.
async fn etag_of(server: &tests::TestServer, path: &str) -> String {
    let response = server.admin(Method::GET, path).send().await.expect("sent");
    response.headers()["etag"].to_str().expect("an etag").to_owned()
}

on_both_backends! {
    async fn every_operator_action_is_recorded_with_its_actor_before_and_after(server: TestServer) {
        let ok = |status: StatusCode, body: &Value| assert!(status.is_success(), "{status} {body}");
        // Currencies.
        let ruby = json!({ "code": "ruby", "name": "Rubies", "kind": "hard", "initial_grant": 0, "balance_max": 1000 });
        let (status, body) = send(server.admin(Method::POST, "/admin/v1/currencies").json(&ruby)).await;
        ok(status, &body);
        let etag = etag_of(&server, "/admin/v1/currencies/ruby").await;
        let renamed = json!({ "code": "ruby", "name": "Red rubies", "kind": "hard", "initial_grant": 0, "balance_max": 1000 });
        let (status, body) = send(server.admin(Method::PUT, "/admin/v1/currencies/ruby").header("if-match", etag).json(&renamed)).await;
        ok(status, &body);
        // The catalog draft and a publish.
        let hat = json!({ "sku": "hat", "kind": "durable", "name": "Top hat", "description": "Very tall." });
        let (status, body) = send(server.admin(Method::POST, "/admin/v1/catalog/draft/items").json(&hat)).await;
        ok(status, &body);
        let (status, body) = send(server.admin(Method::POST, "/admin/v1/catalog/publish")).await;
        ok(status, &body);
        let etag = etag_of(&server, "/admin/v1/catalog/draft/items/hat").await;
        let response = server.admin(Method::DELETE, "/admin/v1/catalog/draft/items/hat").header("if-match", etag).send().await.expect("sent");
        assert!(response.status().is_success(), "{}", response.status());
        // Reward rules.
        let rule = json!({ "code": "coin", "currency": "gold", "amount": 10, "cap_per_day": 1000 });
        let (status, body) = send(server.admin(Method::POST, "/admin/v1/reward-rules").json(&rule)).await;
        ok(status, &body);
        let etag = etag_of(&server, "/admin/v1/reward-rules/coin").await;
        let richer = json!({ "code": "coin", "currency": "gold", "amount": 20, "cap_per_day": 1000 });
        let (status, body) = send(server.admin(Method::PUT, "/admin/v1/reward-rules/coin").header("if-match", etag).json(&richer)).await;
        ok(status, &body);
        // Keys.
        let (status, created) = send(server.admin(Method::POST, "/admin/v1/api-keys").json(&json!({ "name": "ci", "scopes": ["catalog:read"] }))).await;
        ok(status, &created);
        let key_id = created["api_key"]["id"].as_str().expect("an id").to_owned();
        let (status, body) = send(server.admin(Method::DELETE, &format!("/admin/v1/api-keys/{key_id}"))).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        // A grant and a block.
        let (player, _) = server.login_player("audited").await;
        server.grant(&player, "gold", 50).await;
        let block = json!({ "blocked": true, "reason": "testing the log" });
        let (status, body) = send(server.admin(Method::PATCH, &format!("/admin/v1/players/{player}")).json(&block)).await;
        ok(status, &body);

        let (status, log) = send(server.admin(Method::GET, "/admin/v1/audit-log?limit=100")).await;
        assert_eq!(status, StatusCode::OK, "{log}");
        let entries = log["entries"].as_array().expect("entries");
        // Which key acted: the operator key's id, from its own listing.
        let (_, keys) = send(server.admin(Method::GET, "/admin/v1/api-keys")).await;
        let actor = keys["api_keys"]
            .as_array()
            .expect("keys")
            .iter()
            .find(|key| server.operator_key().starts_with(key["prefix"].as_str().unwrap_or("-")))
            .map(|key| format!("api_key:{}", key["id"].as_str().expect("an id")))
            .expect("the operator key is listed");
        let find = |action: &str, target: &str| -> Value {
            entries
                .iter()
                .find(|entry| entry["action"] == action && entry["target"] == target)
                .unwrap_or_else(|| panic!("no {action} of {target} in {log}"))
                .clone()
        };
        for (action, target, before, after) in [
            ("currency.create", "ruby", false, true),
            ("currency.update", "ruby", true, true),
            ("draft_item.create", "hat", false, true),
            ("catalog.publish", "2", false, true),
            ("draft_item.delete", "hat", true, false),
            ("reward_rule.create", "coin", false, true),
            ("reward_rule.update", "coin", true, true),
            ("api_key.create", key_id.as_str(), false, true),
            ("api_key.revoke", key_id.as_str(), true, true),
            ("player.grant", player.as_str(), false, true),
            ("player.block", player.as_str(), true, true),
        ] {
            let entry = find(action, target);
            assert_eq!(entry["actor"], actor.as_str(), "{entry}");
            assert_eq!(entry.get("before").is_some(), before, "before of {action}: {entry}");
            assert_eq!(entry.get("after").is_some(), after, "after of {action}: {entry}");
        }
        assert_eq!(find("currency.update", "ruby")["after"]["name"], "Red rubies");
        assert_eq!(find("currency.update", "ruby")["before"]["name"], "Rubies");
        let revoked = find("api_key.revoke", &key_id);
        assert!(revoked["before"]["revoked_at"].is_null() && revoked["after"]["revoked_at"].is_string(), "{revoked}");
        // Nothing edits or deletes it.
        let count = server.count("select count(*) from audit_log").await;
        for method in [Method::DELETE, Method::PUT, Method::PATCH, Method::POST] {
            let (status, _) = send(server.admin(method.clone(), "/admin/v1/audit-log")).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        }
        assert_eq!(server.count("select count(*) from audit_log").await, count);
    }
}
