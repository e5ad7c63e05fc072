//! `store-server demo-data` fills a database through the real write paths, spread over past
//! days; the dashboard's analytics page, in a real browser, draws it (the README's screenshot).

use std::time::Duration;

use fantoccini::Locator;
use tests::{ServerProcess, store_server_command};

use super::browser::{open_browser, start_chromedriver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_data_spreads_weeks_of_activity_and_the_dashboard_charts_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let url = format!("sqlite://{}", dir.path().join("demo.db").display());
    let output = store_server_command(dir.path(), Some(&url))
        .args(["demo-data", "--players", "60", "--days", "21", "--seed", "3"])
        .output()
        .expect("demo-data runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo-data failed: {stdout}\n{stderr}");
    assert!(stderr.contains("day 21/21"), "a progress bar: {stderr}");
    assert!(stdout.starts_with("demo data: "), "{stdout}");

    let db = store_server::db::Db::connect(&url, 2, Duration::from_secs(30)).await.expect("the database");
    let scalar =
        async |sql: &'static str| -> i64 { sqlx::query_scalar(sql).fetch_one(db.pool()).await.expect(sql) };
    assert!(
        scalar("select count(distinct created_at / 86400000000) from purchase").await >= 15,
        "purchases on most days"
    );
    assert!(
        scalar("select count(distinct country) from player").await >= 4,
        "players from several countries"
    );
    assert!(
        scalar("select count(*) from payment_order where status = 'fulfilled'").await > 0,
        "card orders fulfilled"
    );
    assert!(scalar("select count(*) from payment_order where status = 'refunded'").await > 0, "refunds");
    assert!(scalar("select count(*) from store_view").await > 0, "store views");
    assert!(scalar("select count(*) from tab_item").await > 0, "tab purchases");
    // Which variant a player sees follows their (random) id: with 60 players both are shown,
    // while the few turbo buyers may all have drawn the same one.
    let viewed: Vec<(Option<String>, i64)> = sqlx::query_as(
        "select price_variant, count(*) from store_view where sku = 'turbo' group by price_variant order by price_variant",
    )
    .fetch_all(db.pool())
    .await
    .expect("turbo views");
    assert_eq!(
        viewed.iter().filter(|(variant, _)| variant.is_some()).count(),
        2,
        "both turbo variants shown: {viewed:?}"
    );
    assert!(
        scalar("select count(*) from purchase where sku = 'turbo' and price_variant is not null").await > 0,
        "turbo sold in a variant"
    );
    let newest: i64 = scalar("select max(created_at) from purchase").await;
    assert!(newest < store_server::db::now_micros(), "nothing in the future");
    let report = store_server::ledger::audit::audit(&db).await.expect("the audit runs");
    assert!(report.is_clean(), "{report}");
    db.close().await;

    // The dashboard draws it; the screenshot is the README's.
    let Some(driver) = start_chromedriver().await else { return };
    let key_output = store_server_command(dir.path(), Some(&url))
        .args(["admin", "create-key", "--scopes", "analytics:read"])
        .output()
        .expect("create-key runs");
    let key = String::from_utf8_lossy(&key_output.stdout).trim().to_owned();
    let server = ServerProcess::start(dir.path(), &url);
    let (browser, _profile) = open_browser(&driver).await;
    let outcome = async {
        browser.goto(&format!("{}/dashboard", server.base_url)).await?;
        browser.find(Locator::Id("key")).await?.send_keys(&key).await?;
        browser.find(Locator::Id("login-button")).await?.click().await?;
        // Six analytics reports over three weeks, drawn by a debug build on a machine busy with
        // the other tests: generous, and a failure says what the page said.
        let wait = Duration::from_secs(90);
        browser.wait().at_most(wait).for_element(Locator::Css("#chart-revenue svg polyline")).await?;
        browser.wait().at_most(wait).for_element(Locator::Css("#chart-tabs table")).await?;
        let points = browser.find_all(Locator::Css("#chart-revenue svg circle")).await?.len();
        let busy_cells = browser.execute("return document.querySelectorAll('#chart-peak-times rect.cell:not([fill=\"#1d2230\"])').length;", vec![]).await?;
        browser.set_window_size(1400, 1150).await?;
        let screenshot = browser.screenshot().await?;
        Ok::<_, fantoccini::error::CmdError>((points, busy_cells, screenshot))
    }
    .await;
    let page_said = match &outcome {
        Ok(_) => String::new(),
        Err(_) => match browser.find(Locator::Id("analytics-error")).await {
            Ok(alert) => alert.text().await.unwrap_or_default(),
            Err(error) => format!("no analytics page: {error}"),
        },
    };
    let _ = browser.close().await;
    let (points, busy_cells, screenshot) = outcome.unwrap_or_else(|error| {
        panic!("the analytics page draws the demo data: {error}; the page said {page_said:?}")
    });
    assert!(points >= 10, "a revenue point for most days: {points}");
    assert!(busy_cells.as_u64().unwrap_or(0) >= 20, "purchases spread over many hours: {busy_cells}");
    let path =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-analytics-demo-data.png");
    std::fs::write(&path, &screenshot).expect("saved");
    let variance = tests::luminance_variance(&path);
    assert!(variance > 100, "{} is blank (variance {variance})", path.display());
    assert!(server.terminate().success());
    drop(driver);
}
