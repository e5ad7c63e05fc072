//! The operators' dashboard in a real browser (headless Chromium over WebDriver): it refuses a
//! wrong or under-scoped key, logs in with an analytics key, and draws every analytics chart.

use std::time::Duration;

use fantoccini::Locator;
use reqwest::Method;
use serde_json::json;
use tests::{seed, send};

use super::browser::{open_browser, start_chromedriver};

const CHARTS: [&str; 6] = ["revenue", "peak-times", "combinations", "price-sensitivity", "geography", "tabs"];

on_both_backends! {
    async fn the_dashboard_refuses_bad_keys_and_draws_every_analytics_chart(server: TestServer) {
        let Some(driver) = start_chromedriver().await else { return };
        // Some sales and views, so the charts have something to draw.
        let (player, token) = server.login_player("dashboard-buyer").await;
        server.grant(&player, "gold", 1_000).await;
        let (status, _) = send(server.player(&token, Method::POST, "/v1/events/store-viewed").json(&json!({ "offer_ids": [seed::MAGNET, seed::SHIELD] }))).await;
        assert!(status.is_success());
        for (offer, key) in [(seed::MAGNET, "d1"), (seed::SHIELD, "d2"), (seed::EXTRA_LIFE, "d3")] {
            let body = json!({ "offer_id": offer, "price_index": 0 });
            let (status, answer) = send(server.purchase(&token, key, &body)).await;
            assert!(status.is_success(), "{answer}");
        }
        let catalog_only = server.key_with_scopes(&["catalog:read"]).await;
        let analyst = server.key_with_scopes(&["analytics:read"]).await;
        let page = format!("{}/dashboard", server.base_url());

        let (browser, _profile) = open_browser(&driver).await;
        let outcome = async {
            let mut refusals = Vec::new();
            for key in ["csk_not_a_real_key", catalog_only.as_str()] {
                browser.goto(&page).await?;
                browser.find(Locator::Id("key")).await?.send_keys(key).await?;
                browser.find(Locator::Id("login-button")).await?.click().await?;
                let error = browser.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("#login-error:not(:empty)")).await?;
                refusals.push(error.text().await?);
            }
            browser.goto(&page).await?;
            browser.find(Locator::Id("key")).await?.send_keys(&analyst).await?;
            browser.find(Locator::Id("login-button")).await?.click().await?;
            let mut drawn = Vec::new();
            for chart in CHARTS {
                let selector = format!("#chart-{chart} svg, #chart-{chart} table");
                browser.wait().at_most(Duration::from_secs(20)).for_element(Locator::Css(&selector)).await?;
                drawn.push(chart);
            }
            let cells = browser.find_all(Locator::Css("#chart-peak-times rect.cell")).await?.len();
            let screenshot = browser.screenshot().await?;
            Ok::<_, fantoccini::error::CmdError>((refusals, drawn, cells, screenshot))
        }
        .await;
        let _ = browser.close().await;
        let (refusals, drawn, cells, screenshot) = outcome.expect("the dashboard works in the browser");
        assert_eq!(refusals, ["That key is not valid.", "That key may not read analytics (it needs analytics:read)."]);
        assert_eq!(drawn, CHARTS);
        assert_eq!(cells, 168, "the heatmap has a cell per weekday and hour");
        let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("dashboard-analytics-{:?}.png", server.db().backend()));
        std::fs::write(&path, &screenshot).expect("the screenshot is saved");
        let variance = tests::luminance_variance(&path);
        assert!(variance > 100, "the screenshot {} is blank (variance {variance})", path.display());
        drop(driver);
    }
}
