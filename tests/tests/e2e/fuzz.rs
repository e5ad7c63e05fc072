//! Fuzzing from the contract: schemathesis (from PyPI) generates requests for every route of
//! `/openapi.json` (its examples, boundary values, wrong types, malformed and huge inputs, and
//! stateful sequences), once with an operator key and once with a player token. No answer may
//! be a 5xx, the server stays up, and the ledger's audit holds. Bounded: 20 examples per
//! operation per phase, each request at most 5 s. Our own malformed inputs follow: a huge body,
//! broken JSON, a wrong content type, garbage credentials, each refused and changing nothing.

use std::process::Command;

use reqwest::StatusCode;
use tests::{Backend, ServerProcess, TestDb, store_server_command};

/// The schemathesis command, or `None` (outside CI) when it is not installed.
fn schemathesis() -> Option<String> {
    let program = std::env::var("COINSLOT_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".to_owned());
    let found = Command::new(&program).arg("--version").output().is_ok_and(|output| output.status.success());
    if found {
        return Some(program);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "schemathesis is not installed (pip install schemathesis), and CI must run the fuzzer"
    );
    eprintln!("schemathesis is not installed (pip install schemathesis): the contract fuzzer did not run");
    None
}

fn fuzz(program: &str, base: &str, bearer: &str, seed: u32) -> String {
    let output = Command::new(program)
        .args(["run", &format!("{base}/openapi.json")])
        .args(["--checks", "not_a_server_error", "--max-examples", "20", "--request-timeout", "5"])
        .args(["--seed", &seed.to_string(), "--no-color"])
        // The event stream never ends; it is exercised by the SDK's tests.
        .args(["--exclude-path", "/v1/events"])
        .args(["--header", &format!("Authorization: Bearer {bearer}")])
        .output()
        .expect("schemathesis runs");
    let report =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the fuzzer found failures:\n{report}");
    report
}

async fn case(backend: Backend) {
    let Some(program) = schemathesis() else { return };
    let Some(db) = TestDb::new(backend).await else { return };
    let dir = tempfile::tempdir().expect("a temp dir");
    // Orders are paid through Stripe, players may log in with Steam (local stand-ins) and
    // redeem App Store and Google Play purchases, so their routes are live.
    let stripe = tests::stripe::StripeStandIn::start().await;
    let steam = tests::steam::SteamStandIn::start().await;
    // App Store purchases are redeemed against a test root (a file, as an operator gives it).
    let apple_root = dir.path().join("apple-root.cer");
    std::fs::write(&apple_root, tests::apple::AppleSigner::new().root_der()).expect("the root file");
    // Google Play purchases are checked with a stand-in, as a service account key file.
    let play = tests::google::GooglePlayStandIn::start().await;
    let google_key = dir.path().join("google-service-account.json");
    std::fs::write(&google_key, play.service_account_json()).expect("the key file");
    let mut command = store_server_command(dir.path(), Some(db.url()));
    command
        .env("COINSLOT_LISTEN", "127.0.0.1:0")
        // The sandbox stays beside the real providers' stand-ins: a staging server.
        .env("COINSLOT_TEST_MODE", "true")
        .env("COINSLOT_STRIPE_API_URL", stripe.api_url())
        .env("COINSLOT_STRIPE_SECRET_KEY", tests::stripe::SECRET_KEY)
        .env("COINSLOT_STRIPE_WEBHOOK_SECRET", tests::stripe::WEBHOOK_SECRET)
        .env("COINSLOT_STEAM_API_URL", steam.api_url())
        .env("COINSLOT_STEAM_APP_ID", tests::steam::APP_ID.to_string())
        .env("COINSLOT_STEAM_WEB_API_KEY", tests::steam::WEB_API_KEY)
        .env("COINSLOT_APPLE_BUNDLE_ID", tests::apple::BUNDLE_ID)
        .env("COINSLOT_APPLE_ROOT_CERTIFICATES", &apple_root)
        .env("COINSLOT_GOOGLE_PACKAGE_NAME", tests::google::PACKAGE_NAME)
        .env("COINSLOT_GOOGLE_SERVICE_ACCOUNT_KEY", &google_key)
        .env("COINSLOT_GOOGLE_API_URL", play.api_url())
        .env("COINSLOT_GOOGLE_PUSH_AUDIENCE", tests::google::PUSH_AUDIENCE)
        .env("COINSLOT_GOOGLE_PUSH_SERVICE_ACCOUNT", tests::google::PUSH_SERVICE_ACCOUNT)
        .env("COINSLOT_GOOGLE_CERTS_URL", format!("{}/oauth2/v3/certs", play.api_url()))
        // The fuzzer is one very fast client; limits would only hide routes behind 429s.
        .env("COINSLOT_PLAYER_RATE_LIMIT", "off")
        .env("COINSLOT_KEY_RATE_LIMIT", "off");
    let server = ServerProcess::spawn(command);
    let base = server.base_url.clone();
    let key = server.printed_key().expect("a first key");
    let http = reqwest::Client::new();
    let (_, token) = tests::login_at(&http, &base, "fuzzed-player").await;

    let (program_a, base_a, key_a) = (program.clone(), base.clone(), key.clone());
    let operator =
        tokio::task::spawn_blocking(move || fuzz(&program_a, &base_a, &key_a, 1)).await.expect("a run");
    let (program_b, base_b, token_b) = (program.clone(), base.clone(), token.clone());
    let player =
        tokio::task::spawn_blocking(move || fuzz(&program_b, &base_b, &token_b, 2)).await.expect("a run");
    for report in [&operator, &player] {
        let cases = report.lines().find(|line| line.contains(" generated, ")).unwrap_or("(no count)");
        println!("contract fuzzer ({backend:?}): {}", cases.trim());
    }

    // Our own hostile inputs: refused with a typed 4xx, nothing changed. (A fresh player: the
    // operator's fuzzing may have erased the first one, through the list and erase routes.)
    let (_, token) = tests::login_at(&http, &base, "hostile-player").await;
    // Likewise a fresh key: the fuzzer may have revoked the first through the list and delete routes.
    let created = store_server_command(dir.path(), Some(db.url()))
        .args(["admin", "create-key", "--scopes", "catalog:write"])
        .output()
        .expect("create-key runs");
    let key = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    let reader =
        store_server::db::Db::connect(db.url(), 1, std::time::Duration::from_secs(30)).await.expect("db");
    let entries = |pool: sqlx::AnyPool| async move {
        sqlx::query_scalar::<_, i64>("select count(*) from entry").fetch_one(&pool).await.expect("a count")
    };
    let before = entries(reader.pool().clone()).await;
    let huge = "x".repeat(20 * 1024 * 1024);
    let cases = [
        (
            http.post(format!("{base}/v1/purchases"))
                .bearer_auth(&token)
                .header("idempotency-key", "huge")
                .header("content-type", "application/json")
                .body(huge),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            http.post(format!("{base}/admin/v1/currencies"))
                .bearer_auth(&key)
                .header("content-type", "application/json")
                .body("{\"code\": "),
            StatusCode::BAD_REQUEST,
        ),
        (
            http.post(format!("{base}/admin/v1/currencies"))
                .bearer_auth(&key)
                .header("content-type", "text/plain")
                .body("code=gold"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            http.get(format!("{base}/v1/wallet")).header("authorization", "Bearer \u{7f}\u{1}garbage"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            http.get(format!("{base}/v1/wallet")).header("authorization", "Basic Zm9vOmJhcg=="),
            StatusCode::UNAUTHORIZED,
        ),
    ];
    // Stripe's webhook route: unsigned, forged, and signed but malformed events.
    let now = store_server::db::now_micros() / 1_000_000;
    let webhook = |signature: Option<String>, body: &'static str| {
        let mut request = http
            .post(format!("{base}/v1/webhooks/stripe"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("stripe-signature", signature);
        }
        (request, StatusCode::BAD_REQUEST)
    };
    let signed = |body: &str| Some(tests::stripe::signature_header(tests::stripe::WEBHOOK_SECRET, now, body));
    let cases = cases.into_iter().chain([
        webhook(None, "{}"),
        webhook(Some(format!("t={now},v1=00")), "{}"),
        webhook(Some(format!("t={now}")), "{}"),
        webhook(signed("{\"id\": 5}"), "{\"id\": 5}"),
        webhook(signed("not json"), "not json"),
        webhook(
            signed(r#"{"id":"evt_x","type":"charge.dispute.created","data":{"object":{}}}"#),
            r#"{"id":"evt_x","type":"charge.dispute.created","data":{"object":{}}}"#,
        ),
    ]);
    for (index, (request, expected)) in cases.enumerate() {
        // A client may see the connection closed on the huge body instead of the 413.
        if let Ok(response) = request.send().await {
            assert_eq!(response.status(), expected, "hostile case {index}");
        }
    }
    assert_eq!(entries(reader.pool().clone()).await, before, "hostile input changed the ledger");
    let health = http.get(format!("{base}/healthz")).send().await.expect("the server is up");
    assert_eq!(health.status(), StatusCode::OK);
    let report = store_server::ledger::audit::audit(&reader).await.expect("the audit runs");
    assert!(report.is_clean(), "{report}");
    reader.close().await;
    drop(server);
    drop(stripe);
    drop(steam);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_fuzzer_finds_no_server_error_on_sqlite() {
    case(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_fuzzer_finds_no_server_error_on_postgres() {
    case(Backend::Postgres).await;
}
