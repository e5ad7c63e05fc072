//! The authorization matrix: every route of `/openapi.json` × every kind of credential (none,
//! player A, player B, a key with each single operator scope, a revoked key, an expired session
//! token). Exactly the allowed ones get past authorization; the refused ones get the right
//! 401/403 code; a player never reads another's data; and the whole matrix changes nothing.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{seed, send};

/// The operator scopes.
const SCOPES: [&str; 8] = [
    "catalog:read",
    "catalog:write",
    "players:read",
    "players:write",
    "refunds:write",
    "analytics:read",
    "rewards:write",
    "keys:admin",
];

#[derive(Debug, Clone)]
enum Credential {
    Nothing,
    Player(&'static str, String),
    Key(&'static str, String),
    RevokedKey(String),
    ExpiredToken(String),
}

impl Credential {
    fn name(&self) -> String {
        match self {
            Self::Nothing => "no credential".to_owned(),
            Self::Player(name, _) => format!("player {name}"),
            Self::Key(scope, _) => format!("a key with only {scope}"),
            Self::RevokedKey(_) => "a revoked key".to_owned(),
            Self::ExpiredToken(_) => "an expired session token".to_owned(),
        }
    }

    fn bearer(&self) -> Option<&str> {
        match self {
            Self::Nothing => None,
            Self::Player(_, token) | Self::ExpiredToken(token) => Some(token),
            Self::Key(_, key) | Self::RevokedKey(key) => Some(key),
        }
    }
}

/// Who a route admits, from its OpenAPI `security`.
#[derive(Debug)]
enum Admits {
    Anyone,
    /// Routes with their own authentication (the sandbox's API key, webhook signatures): none of
    /// the store's credentials opens them.
    OwnAuthentication,
    Players,
    Scopes(BTreeSet<String>),
}

fn admits(path: &str, security: Option<&Value>) -> Admits {
    let Some(requirements) = security.and_then(Value::as_array) else {
        return if path.starts_with("/sandbox/v1/") || path.starts_with("/v1/webhooks/") {
            Admits::OwnAuthentication
        } else {
            Admits::Anyone
        };
    };
    let mut scopes = BTreeSet::new();
    for requirement in requirements {
        if requirement.get("player").is_some() {
            return Admits::Players;
        }
        for scope in requirement["operator"].as_array().expect("operator scopes") {
            scopes.insert(scope.as_str().expect("a scope").to_owned());
        }
    }
    Admits::Scopes(scopes)
}

on_both_backends! {
    async fn every_route_admits_exactly_its_credentials(server: TestServer) {
        let (player_a, token_a) = server.login_player("matrix-a").await;
        let (_, token_b) = server.login_player("matrix-b").await;
        let (status, bought) = send(server.purchase(&token_a, "matrix-buy", &json!({ "offer_id": seed::MAGNET }))).await;
        assert_eq!(status, StatusCode::CREATED, "{bought}");
        let receipt_a = bought["receipt"]["id"].as_str().expect("a receipt").to_owned();
        let order_a = server.order(&token_a, seed::GEMS_SMALL).await["id"].as_str().expect("an order").to_owned();

        let mut credentials = vec![
            Credential::Nothing,
            Credential::Player("A", token_a.clone()),
            Credential::Player("B", token_b.clone()),
        ];
        for scope in SCOPES {
            credentials.push(Credential::Key(scope, server.key_with_scopes(&[scope]).await));
        }
        let body = json!({ "name": "to revoke", "scopes": SCOPES });
        let (_, created) = send(server.admin(Method::POST, "/admin/v1/api-keys").json(&body)).await;
        let revoked_id = created["api_key"]["id"].as_str().expect("a key id");
        let (status, _) = send(server.admin(Method::DELETE, &format!("/admin/v1/api-keys/{revoked_id}"))).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        credentials.push(Credential::RevokedKey(created["key"].as_str().expect("a key").to_owned()));
        // A token signed with the installation's own secret, for A's live session, expired.
        let secret = hex::decode(server.text("select value from meta where key = 'session_key_1'").await).expect("hex");
        let session_id: String = server.text("select max(id) from session").await;
        let expired = store_server::players::auth::SessionSigner::new(secret).sign(store_server::players::auth::SessionClaims {
            session_id: session_id.parse().expect("a session id"),
            player_id: player_a.parse().expect("a player id"),
            expires_at: store_server::db::now_micros() - 1_000_000,
        });
        credentials.push(Credential::ExpiredToken(expired));

        let (_, openapi) = send(server.request(Method::GET, "/openapi.json")).await;
        let before = server.fingerprint().await;
        let mut checked = 0;
        for (template, operations) in openapi["paths"].as_object().expect("paths") {
            let path = template
                .replace("/players/{id}", &format!("/players/{player_a}"))
                .replace("/orders/{id}", &format!("/orders/{order_a}"))
                .replace("/receipts/{id}", &format!("/receipts/{receipt_a}"))
                .replace("{id}", &uuid::Uuid::now_v7().to_string())
                .replace("{code}", "gold")
                .replace("{sku}", "matrix-none")
                .replace("{rule}", "matrix-none")
                .replace("{provider}", "sandbox")
                .replace("{session}", "matrix-none");
            for (method, operation) in operations.as_object().expect("operations") {
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
                let rule = admits(template, operation.get("security"));
                for credential in &credentials {
                    let mut request = server.request(method.clone(), &path);
                    if let Some(bearer) = credential.bearer() {
                        request = request.bearer_auth(bearer);
                    }
                    if method != Method::GET && method != Method::DELETE {
                        request = request.json(&json!({}));
                    }
                    let response = request.send().await.expect("an answer");
                    let status = response.status();
                    let code = if status.is_client_error() {
                        response.json::<Value>().await.ok().and_then(|body| body["error"]["code"].as_str().map(str::to_owned))
                    } else {
                        None
                    };
                    let at = format!("{method} {template} with {}: {status} {code:?}", credential.name());
                    let refused = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
                    let allowed = match (&rule, credential) {
                        (Admits::Anyone, _) => true,
                        (Admits::OwnAuthentication, _) => false,
                        (Admits::Players, Credential::Player(..)) => true,
                        (Admits::Scopes(scopes), Credential::Key(scope, _)) => scopes.contains(*scope),
                        _ => false,
                    };
                    if allowed {
                        assert!(!refused && status != StatusCode::INTERNAL_SERVER_ERROR, "allowed, but {at}");
                    } else if matches!(rule, Admits::OwnAuthentication) {
                        assert!(status.is_client_error(), "its own authentication must refuse {at}");
                    } else {
                        assert!(refused, "must be refused: {at}");
                        let expected = match (&rule, credential) {
                            (_, Credential::Nothing) => "unauthenticated",
                            (Admits::Players, Credential::ExpiredToken(_)) => "token_expired",
                            (Admits::Scopes(_), Credential::RevokedKey(_)) => "api_key_revoked",
                            (Admits::Scopes(_), Credential::Key(..)) => "insufficient_scope",
                            _ => "wrong_credential_kind",
                        };
                        assert_eq!(code.as_deref(), Some(expected), "{at}");
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 70 * credentials.len(), "{checked} checks");
        assert_eq!(server.fingerprint().await, before, "the matrix changed nothing");

        // A player never reads or changes another's data.
        for path in [format!("/v1/orders/{order_a}"), format!("/v1/receipts/{receipt_a}")] {
            let (status, body) = send(server.player(&token_b, Method::GET, &path)).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "B reading {path}: {body}");
            let (status, _) = send(server.player(&token_a, Method::GET, &path)).await;
            assert_eq!(status, StatusCode::OK, "A reading {path}");
        }
        let (_, orders_b) = send(server.player(&token_b, Method::GET, "/v1/orders")).await;
        assert!(!orders_b.to_string().contains(&order_a), "{orders_b}");
        let (_, history_b) = send(server.player(&token_b, Method::GET, "/v1/wallet/history")).await;
        assert!(!history_b.to_string().contains(&player_a), "{history_b}");
        let (_, inventory_b) = send(server.player(&token_b, Method::GET, "/v1/inventory")).await;
        assert!(inventory_b["items"].as_array().expect("items").is_empty(), "B holds nothing of A's: {inventory_b}");
        let consume = server
            .player(&token_b, Method::POST, "/v1/inventory/magnet/consume")
            .header("idempotency-key", "matrix-consume")
            .json(&json!({ "quantity": 1 }));
        let (status, _) = send(consume).await;
        assert_eq!(status, StatusCode::CONFLICT, "B cannot use A's magnet");
        let (_, inventory_a) = send(server.player(&token_a, Method::GET, "/v1/inventory")).await;
        assert_eq!(inventory_a["items"][0]["quantity"], 1);
    }
}
