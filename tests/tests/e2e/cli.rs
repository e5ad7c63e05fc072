//! The `store-server` binary itself: first start, SIGTERM, restart, `admin create-key`,
//! `migrate` and `catalog export` / `import`.

use std::process::Output;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{Backend, ServerProcess, TestDb, assert_error, send, store_server_command};

async fn get_json(client: &reqwest::Client, url: String, token: &str) -> (StatusCode, Value) {
    send(client.get(url).bearer_auth(token)).await
}

fn run(command: &mut std::process::Command) -> Output {
    command.output().expect("store-server runs")
}

async fn first_start_prints_a_key_and_a_restart_keeps_everything(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    // Started from an unrelated directory: the assets are still found.
    let cwd = tempfile::tempdir().expect("a directory");
    let client = reqwest::Client::new();

    let server = ServerProcess::start(cwd.path(), db.url());
    let key = server.printed_key().expect("the first start prints an operator key");
    let (status, currencies) =
        get_json(&client, format!("{}/admin/v1/currencies", server.base_url), &key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(currencies["currencies"].as_array().expect("seeded").len(), 2, "seeded from assets/catalog");
    let ruby =
        json!({ "code": "ruby", "name": "Rubies", "kind": "hard", "initial_grant": 0, "balance_max": 100 });
    let (status, _) =
        send(client.post(format!("{}/admin/v1/currencies", server.base_url)).bearer_auth(&key).json(&ruby))
            .await;
    assert_eq!(status, StatusCode::CREATED);
    let status = server.terminate();
    assert!(status.success(), "SIGTERM is a clean shutdown: {status}");

    let server = ServerProcess::start(cwd.path(), db.url());
    assert_eq!(server.printed_key(), None, "a key is printed only on the first start");
    let (status, ruby_again) =
        get_json(&client, format!("{}/admin/v1/currencies/ruby", server.base_url), &key).await;
    assert_eq!(status, StatusCode::OK, "the key and the currency survived the restart");
    assert_eq!(ruby_again, ruby);
    let (_, versions) =
        get_json(&client, format!("{}/admin/v1/catalog/versions", server.base_url), &key).await;
    assert_eq!(
        versions["versions"].as_array().expect("versions").len(),
        1,
        "the seed is not published twice"
    );
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_prints_a_key_and_a_restart_keeps_everything_on_sqlite() {
    first_start_prints_a_key_and_a_restart_keeps_everything(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_prints_a_key_and_a_restart_keeps_everything_on_postgres() {
    first_start_prints_a_key_and_a_restart_keeps_everything(Backend::Postgres).await;
}

#[test]
fn with_no_settings_the_database_is_a_sqlite_file_in_the_working_directory() {
    let cwd = tempfile::tempdir().expect("a directory");
    let output = run(store_server_command(cwd.path(), None).arg("migrate"));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(cwd.path().join("coinslot.db").exists(), "coinslot.db is created in the working directory");
}

#[test]
fn a_bad_scope_is_refused_by_the_command_line() {
    let cwd = tempfile::tempdir().expect("a directory");
    let output = run(store_server_command(cwd.path(), None).args([
        "admin",
        "create-key",
        "--scopes",
        "catalog:read,root",
    ]));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown scope `root`"));
    assert!(output.stdout.is_empty());
}

/// A server that takes real money refuses to start with the sandbox mounted unless told it is
/// a staging server (`--test-mode`); in test mode its start-up output, `/readyz` and its
/// checkout pages say TEST MODE; with the sandbox off it is live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_money_beside_the_sandbox_needs_test_mode() {
    let stripe = tests::stripe::StripeStandIn::start().await;
    let cwd = tempfile::tempdir().expect("a directory");
    let with_stripe = || {
        let mut command = store_server_command(cwd.path(), None);
        command
            .env("COINSLOT_LISTEN", "127.0.0.1:0")
            .env("COINSLOT_STRIPE_API_URL", stripe.api_url())
            .env("COINSLOT_STRIPE_SECRET_KEY", tests::stripe::SECRET_KEY)
            .env("COINSLOT_STRIPE_WEBHOOK_SECRET", tests::stripe::WEBHOOK_SECRET);
        command
    };
    let mut refused = with_stripe()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("store-server starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while refused.try_wait().expect("a status").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = refused.kill();
            panic!("a server with Stripe and the sandbox started without --test-mode");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = refused.wait_with_output().expect("its output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("Stripe take real money") && stderr.contains("--test-mode"), "{stderr}");

    let mut staging = with_stripe();
    staging.env("COINSLOT_TEST_MODE", "true");
    let staging = tests::ServerProcess::spawn(staging);
    assert!(staging.stdout.iter().any(|line| line.starts_with("TEST MODE")), "{:?}", staging.stdout);
    let http = reqwest::Client::new();
    let readyz = |base: String| {
        let http = http.clone();
        async move {
            let answer = http.get(format!("{base}/readyz")).send().await.expect("readyz");
            answer.json::<serde_json::Value>().await.expect("JSON")
        }
    };
    let ready = readyz(staging.base_url.clone()).await;
    assert_eq!(ready["mode"], "test", "{ready}");
    assert!(ready["notice"].as_str().is_some_and(|notice| notice.starts_with("TEST MODE")), "{ready}");
    let checkout =
        http.get(format!("{}/sandbox/checkout/cs_nothing", staging.base_url)).send().await.expect("a page");
    assert!(checkout.text().await.expect("HTML").contains("TEST MODE"), "the sandbox's pages say so");
    drop(staging);

    let mut live = with_stripe();
    live.env("COINSLOT_NO_SANDBOX", "true");
    let live = tests::ServerProcess::spawn(live);
    assert!(!live.stdout.iter().any(|line| line.contains("TEST MODE")), "{:?}", live.stdout);
    let ready = readyz(live.base_url.clone()).await;
    assert_eq!((ready["mode"].as_str(), ready.get("notice")), (Some("live"), None), "{ready}");
}

/// `store-server --help` describes every setting under its own name (the spending limits were
/// once described under `--player-rate-limit`, and `--spending-limits` had no text).
#[test]
fn every_setting_has_its_own_help() {
    let cwd = tempfile::tempdir().expect("a directory");
    let output = run(store_server_command(cwd.path(), None).arg("--help"));
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut options: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("--") || (trimmed.starts_with('-') && trimmed.contains(", --")) {
            let name = trimmed.split([' ', ',', '=']).find(|word| word.starts_with("--")).unwrap_or(trimmed);
            options.push((name.to_owned(), String::new()));
        } else if let Some((_, text)) = options.last_mut()
            && !trimmed.starts_with('[')
        {
            text.push_str(trimmed);
            text.push(' ');
        }
    }
    assert!(options.len() > 40, "the settings are listed: {help}");
    for (name, text) in &options {
        assert!(!text.trim().is_empty(), "`{name}` has no help text:\n{help}");
    }
    let text_of =
        |name: &str| options.iter().find(|(option, _)| option == name).map(|(_, text)| text.clone());
    assert!(text_of("--spending-limits").is_some_and(|text| text.contains("spending caps")), "{help}");
    assert!(text_of("--age-band-limits").is_some_and(|text| text.contains("age band")), "{help}");
    assert!(text_of("--player-rate-limit").is_some_and(|text| !text.contains("spending")), "{help}");
}

on_both_backends! {
    async fn admin_create_key_prints_only_the_key(server: TestServer) {
        let cwd = tempfile::tempdir().expect("a directory");
        let output = run(store_server_command(cwd.path(), Some(server.db().url())).args(["admin", "create-key", "--scopes", "catalog:read"]));
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let stdout = String::from_utf8(output.stdout).expect("utf-8");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "only the key: {stdout:?}");
        let key = lines[0];
        assert!(key.starts_with("csk_"));
        let (status, _) = send(server.player(key, Method::GET, "/admin/v1/currencies")).await;
        assert_eq!(status, StatusCode::OK, "the new key reads");
        let body = json!({ "code": "ruby", "name": "Rubies", "kind": "hard", "initial_grant": 0, "balance_max": 100 });
        let response = send(server.player(key, Method::POST, "/admin/v1/currencies").json(&body)).await;
        assert_error("write with a read-only key", &response, StatusCode::FORBIDDEN, "insufficient_scope");
    }

    async fn catalog_export_and_import_round_trip_the_whole_catalog(server: TestServer) {
        let cwd = tempfile::tempdir().expect("a directory");
        let exported = cwd.path().join("catalog.json");
        let output = run(store_server_command(cwd.path(), Some(server.db().url())).args(["catalog", "export", "--output"]).arg(&exported));
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let file: Value = serde_json::from_slice(&std::fs::read(&exported).expect("exported")).expect("json");
        assert_eq!(file["items"].as_array().expect("items").len(), 9);
        assert_eq!(file["currencies"].as_array().expect("currencies").len(), 2);

        // Into a fresh installation, published, then exported again: the same file.
        let fresh = TestDb::new(server.db().backend()).await.expect("the same backend as the server");
        let output = run(store_server_command(cwd.path(), Some(fresh.url())).args(["catalog", "import", "--publish"]).arg(&exported));
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let output = run(store_server_command(cwd.path(), Some(fresh.url())).args(["catalog", "export"]));
        assert!(output.status.success());
        let again: Value = serde_json::from_slice(&output.stdout).expect("export prints JSON on stdout");
        assert_eq!(again, file);

        // A broken file is refused, naming the field, and changes nothing.
        let mut broken = file.clone();
        let duplicate = broken["items"][0].clone();
        broken["items"].as_array_mut().expect("items").push(duplicate);
        let broken_path = cwd.path().join("broken.json");
        std::fs::write(&broken_path, broken.to_string()).expect("written");
        let before = server.fingerprint().await;
        let output = run(store_server_command(cwd.path(), Some(server.db().url())).args(["catalog", "import"]).arg(&broken_path));
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("items[9].sku"), "the error names the field: {stderr}");
        assert_eq!(server.fingerprint().await, before);
    }
}

on_both_backends! {
    async fn the_audit_command_reports_clean_books_and_catches_a_tampered_balance(server: TestServer) {
        let (player, token) = server.login_player("audited").await;
        server.grant(&player, "gold", 1_000).await;
        let (status, _) = send(server.purchase(&token, "audit-1", &json!({ "offer_id": tests::seed::MAGNET }))).await;
        assert_eq!(status, StatusCode::CREATED);
        let cwd = tempfile::tempdir().expect("a directory");
        let output = run(store_server_command(cwd.path(), Some(server.db().url())).arg("audit"));
        let report = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{report}");
        assert!(report.contains("audit clean"), "{report}");
        assert!(!report.contains("FAIL"), "{report}");

        // Change a balance behind the ledger's back: the audit must notice and fail.
        server.execute("update account set balance = balance + 7 where id = $1", &[format!("w:{player}:gold").into()]).await;
        let output = run(store_server_command(cwd.path(), Some(server.db().url())).arg("audit"));
        let report = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(!output.status.success(), "a broken invariant fails the command: {report}");
        assert!(report.contains("FAIL  every account's balance equals the sum of its postings"), "{report}");
        assert!(report.contains(&format!("w:{player}:gold")), "the report names the account: {report}");

        // An item count no entry's item changes account for (they are in the entries' rows).
        server.execute("update inventory set quantity = quantity + 2 where player_id = $1 and sku = 'magnet'", &[player.clone().into()]).await;
        let output = run(store_server_command(cwd.path(), Some(server.db().url())).arg("audit"));
        let report = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(report.contains("FAIL  every inventory count equals the sum of its changes"), "{report}");
        assert!(report.contains(&format!("player {player} holds 3 magnet but its changes sum to 1")), "{report}");

        // A receipt whose signed payload names another entry than the one it is stored with.
        server
            .execute(
                "update entry set receipt_payload = replace(receipt_payload, '\"entry_id\":\"' || id, \
                 '\"entry_id\":\"f' || substr(id, 2)) where player_id = $1 and kind = 'purchase'",
                &[player.clone().into()],
            )
            .await;
        // And a purchase entry whose purchase was taken out of its row.
        server
            .execute("update entry set purchase_id = null where player_id = $1 and kind = 'purchase'", &[player.clone().into()])
            .await;
        let output = run(store_server_command(cwd.path(), Some(server.db().url())).arg("audit"));
        let report = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(report.contains("FAIL  every receipt's signed payload names its own entry and player"), "{report}");
        assert!(report.contains(" is stored with entry ") && report.contains(&format!(" of {player}")), "{report}");
        assert!(report.contains("FAIL  every purchase entry records one purchase"), "{report}");
        assert!(report.contains("(purchase) records no purchase"), "{report}");
    }
}
