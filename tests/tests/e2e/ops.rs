//! Operations: health, readiness, metrics, the OpenAPI document, and typed errors for requests
//! no route can take.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use tests::{assert_error, send};

/// Every route of the contract so far, as `METHOD path`.
const ROUTES: &[&str] = &[
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /openapi.json",
    "POST /v1/auth/device",
    "POST /v1/auth/steam",
    "GET /v1/catalog",
    "GET /admin/v1/api-keys",
    "POST /admin/v1/api-keys",
    "DELETE /admin/v1/api-keys/{id}",
    "GET /admin/v1/currencies",
    "POST /admin/v1/currencies",
    "GET /admin/v1/currencies/{code}",
    "PUT /admin/v1/currencies/{code}",
    "GET /admin/v1/catalog/draft",
    "GET /admin/v1/catalog/draft/items",
    "POST /admin/v1/catalog/draft/items",
    "GET /admin/v1/catalog/draft/items/{sku}",
    "PUT /admin/v1/catalog/draft/items/{sku}",
    "DELETE /admin/v1/catalog/draft/items/{sku}",
    "GET /admin/v1/catalog/draft/offers",
    "POST /admin/v1/catalog/draft/offers",
    "GET /admin/v1/catalog/draft/offers/{id}",
    "PUT /admin/v1/catalog/draft/offers/{id}",
    "DELETE /admin/v1/catalog/draft/offers/{id}",
    "POST /admin/v1/catalog/publish",
    "GET /admin/v1/catalog/versions",
    "GET /admin/v1/catalog/diff",
    "GET /v1/wallet",
    "GET /v1/wallet/history",
    "GET /v1/inventory",
    "POST /v1/inventory/{sku}/consume",
    "POST /v1/purchases",
    "POST /v1/rewards/{rule}",
    "GET /v1/receipts/{id}",
    "GET /v1/receipt-keys",
    "GET /.well-known/jwks.json",
    "GET /admin/v1/reward-rules",
    "POST /admin/v1/reward-rules",
    "GET /admin/v1/reward-rules/{rule}",
    "PUT /admin/v1/reward-rules/{rule}",
    "POST /admin/v1/players/{id}/grants",
    "POST /v1/orders",
    "GET /v1/orders",
    "GET /v1/orders/{id}",
    "POST /v1/orders/{id}/steam-authorization",
    "POST /v1/platform-purchases/apple",
    "POST /v1/platform-purchases/google",
    "GET /admin/v1/orders",
    "GET /admin/v1/orders/{id}",
    "POST /admin/v1/orders/{id}/refunds",
    "POST /v1/webhooks/{provider}",
    "GET /v1/events",
    "POST /sandbox/v1/checkout-sessions",
    "GET /sandbox/checkout/{session}",
    "POST /sandbox/checkout/{session}/pay",
    "POST /sandbox/v1/refunds",
    "POST /sandbox/v1/controls",
    "POST /sandbox/v1/test/payments",
    "GET /sandbox/v1/events",
    "GET /sandbox/v1/checkout-sessions/{session}",
    "GET /v1/tab",
    "POST /v1/tab/settle",
    "GET /admin/v1/tabs",
    "GET /admin/v1/creators",
    "GET /admin/v1/creators/{id}",
    "GET /admin/v1/creators/{id}/payouts",
    "POST /admin/v1/creators/{id}/payouts",
    "POST /v1/events/store-viewed",
    "GET /admin/v1/players",
    "GET /admin/v1/players/{id}",
    "PATCH /admin/v1/players/{id}",
    "GET /admin/v1/players/{id}/history",
    "GET /admin/v1/players/{id}/export",
    "POST /admin/v1/players/{id}/erase",
    "GET /admin/v1/audit-log",
    "GET /dashboard",
    "GET /checkout/complete",
    "GET /checkout/canceled",
    "GET /admin/v1/analytics/revenue",
    "GET /admin/v1/analytics/peak-times",
    "GET /admin/v1/analytics/combinations",
    "GET /admin/v1/analytics/price-sensitivity",
    "GET /admin/v1/analytics/geography",
    "GET /admin/v1/analytics/tabs",
];

fn documented_routes(openapi: &serde_json::Value) -> BTreeSet<String> {
    let mut routes = BTreeSet::new();
    for (path, item) in openapi["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                routes.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    routes
}

on_both_backends! {
    async fn health_and_readiness_answer_ok(server: TestServer) {
        for path in ["/healthz", "/readyz"] {
            let (status, body) = send(server.request(Method::GET, path)).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(body["status"], "ok", "{path}");
        }
    }

    async fn the_openapi_document_lists_exactly_the_routes_the_server_answers(server: TestServer) {
        let (status, openapi) = send(server.request(Method::GET, "/openapi.json")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(openapi["openapi"].as_str().is_some_and(|version| version.starts_with("3.1")), "OpenAPI 3.1");
        let expected: BTreeSet<String> = ROUTES.iter().map(|route| (*route).to_owned()).collect();
        assert_eq!(documented_routes(&openapi), expected);
        // Every documented operation is answered by a route (never the not-found or
        // wrong-method fallback), whatever else it says about the request.
        for route in ROUTES {
            let (method, path) = route.split_once(' ').expect("METHOD path");
            let path = path
                .replace("{id}", "019a6b1e-0001-7000-8000-000000000001")
                .replace("{code}", "gold")
                .replace("{sku}", "magnet")
                .replace("{rule}", "coin")
                .replace("{provider}", "sandbox")
                .replace("{session}", "cs_unknown");
            let method = Method::from_bytes(method.as_bytes()).expect("a method");
            let (status, body) = send(server.request(method, &path)).await;
            assert_ne!(body["error"]["code"], "route_not_found", "{route} is documented but not served");
            assert_ne!(body["error"]["code"], "method_not_allowed", "{route} is documented but not served");
            assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{route}: {body}");
        }
    }

    async fn requests_no_route_takes_get_typed_errors(server: TestServer) {
        let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
            ("unknown route", server.request(Method::GET, "/v1/nowhere"), StatusCode::NOT_FOUND, "route_not_found"),
            ("wrong method", server.request(Method::DELETE, "/v1/catalog"), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            (
                "wrong content type",
                server.request(Method::POST, "/v1/auth/device").header("content-type", "text/plain").body("device_id=x"),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
            (
                "no content type",
                server.request(Method::POST, "/v1/auth/device").body(r#"{"device_id":"x"}"#),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
            (
                "malformed JSON",
                server.request(Method::POST, "/v1/auth/device").header("content-type", "application/json").body("{\"device_id\":"),
                StatusCode::BAD_REQUEST,
                "malformed_json",
            ),
            (
                "trailing garbage after JSON",
                server.request(Method::POST, "/v1/auth/device").header("content-type", "application/json").body(r#"{"device_id":"x"} x"#),
                StatusCode::BAD_REQUEST,
                "malformed_json",
            ),
            (
                "oversized body",
                server
                    .admin(Method::POST, "/admin/v1/catalog/draft/items")
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"sku":"big","kind":"durable","name":"Big","description":"{}"}}"#, "x".repeat(70_000))),
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
            ),
            (
                "bad page size",
                server.admin(Method::GET, "/admin/v1/catalog/draft/items?limit=0"),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                "page size over the limit",
                server.admin(Method::GET, "/admin/v1/catalog/draft/items?limit=201"),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                "page size not a number",
                server.admin(Method::GET, "/admin/v1/catalog/versions?limit=ten"),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
        ];
        let before = server.fingerprint().await;
        for (case, request, status, code) in cases {
            assert_error(case, &send(request).await, status, code);
        }
        assert_eq!(server.fingerprint().await, before, "refused requests changed nothing");
    }

    async fn metrics_count_requests_by_route_and_status(server: TestServer) {
        send(server.request(Method::GET, "/healthz")).await;
        let response = server.request(Method::GET, "/metrics").send().await.expect("metrics");
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.expect("text");
        assert!(
            text.lines().any(|line| line.starts_with("coinslot_http_requests_total")
                && line.contains(r#"route="/healthz""#)
                && line.contains(r#"status="200""#)),
            "a request counter for /healthz: {text}"
        );
        assert!(text.contains("coinslot_http_request_duration_seconds"), "a latency histogram");
        assert!(text.contains("coinslot_db_pool_connections"), "pool use");
    }
}
