//! The operators' dashboard in a real browser (headless Chromium over WebDriver): it refuses a
//! wrong or under-scoped key, logs in with an analytics key, and draws every analytics chart.

use std::time::Duration;

use fantoccini::Locator;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tests::{seed, send};

use super::browser::{open_browser, start_chromedriver};

const CHARTS: [&str; 7] =
    ["revenue", "virtual", "peak-times", "combinations", "price-sensitivity", "geography", "tabs"];

on_both_backends! {
    async fn the_dashboard_refuses_bad_keys_draws_the_charts_edits_and_publishes_and_refunds(server: TestServer) {
        let Some(driver) = start_chromedriver().await else { return };
        // Some sales, views and a paid order, so every page has something to show.
        let (player, token) = server.login_player("dashboard-buyer").await;
        server.grant(&player, "gold", 1_000).await;
        let (status, _) = send(server.player(&token, Method::POST, "/v1/events/store-viewed").json(&json!({ "offer_ids": [seed::MAGNET, seed::SHIELD] }))).await;
        assert!(status.is_success());
        for (offer, key) in [(seed::MAGNET, "d1"), (seed::SHIELD, "d2"), (seed::EXTRA_LIFE, "d3")] {
            let body = json!({ "offer_id": offer, "price_index": 0 });
            let (status, answer) = send(server.purchase(&token, key, &body)).await;
            assert!(status.is_success(), "{answer}");
        }
        let order = server.order(&token, seed::GEMS_SMALL).await;
        let order_id = order["id"].as_str().expect("an order id").to_owned();
        let (status, _) = server.pay(order["checkout_url"].as_str().expect("a checkout"), "4242424242424242").await;
        assert!(status.is_success());
        server.wait_for_order(&token, &order_id, |order| order["status"] == "fulfilled").await;
        // Flagged for review: the player page shows it and clears it.
        let flag = json!({ "flagged": true, "reason": "manual review" });
        let (status, _) = send(server.admin(Method::PATCH, &format!("/admin/v1/players/{player}")).json(&flag)).await;
        assert_eq!(status, StatusCode::OK);
        let catalog_only = server.key_with_scopes(&["catalog:read"]).await;
        let page = format!("{}/dashboard", server.base_url());
        let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("dashboard-{:?}", server.db().backend()));
        std::fs::create_dir_all(&shots).expect("a screenshot folder");

        let (browser, _profile) = open_browser(&driver).await;
        let wait = Duration::from_secs(20);
        // The stages passed, for a failure to say where it stopped.
        let passed = std::sync::Mutex::new(Vec::<&str>::new());
        let mark = |stage| passed.lock().expect("the stage list").push(stage);
        let outcome = async {
            let log_in = |key: String| {
                let browser = browser.clone();
                let page = page.clone();
                async move {
                    browser.goto(&page).await?;
                    browser.find(Locator::Id("key")).await?.send_keys(&key).await?;
                    browser.find(Locator::Id("login-button")).await?.click().await?;
                    Ok::<_, fantoccini::error::CmdError>(())
                }
            };
            // A wrong key is refused at the door; a key without analytics:read is refused by the page.
            log_in("csk_not_a_real_key".to_owned()).await?;
            let wrong = browser.wait().at_most(wait).for_element(Locator::Css("#login-error:not(:empty)")).await?.text().await?;
            mark("wrong key");
            // The test server's sandbox is mounted: the dashboard says TEST MODE on every page.
            let banner = browser.wait().at_most(wait).for_element(Locator::Css("#test-mode:not([hidden])")).await?;
            assert_eq!(banner.text().await?, "TEST MODE");
            assert!(banner.is_displayed().await?, "the banner shows");
            mark("test mode banner");
            log_in(catalog_only.clone()).await?;
            let under_scoped = browser.wait().at_most(wait).for_element(Locator::Css("#analytics-error:not(:empty)")).await?.text().await?;
            mark("under-scoped key");
            browser.find(Locator::Id("logout")).await?.click().await?;

            log_in(server.operator_key().to_owned()).await?;
            for chart in CHARTS {
                let selector = format!("#chart-{chart} svg, #chart-{chart} table");
                browser.wait().at_most(wait).for_element(Locator::Css(&selector)).await?;
            }
            let cells = browser.find_all(Locator::Css("#chart-peak-times rect.cell")).await?.len();
            // Readable at 1280 px: every chart's text inside its chart, values on the axes, real
            // revenue in the reporting currency beside the virtual spend.
            let overflowing = browser
                .execute(
                    "return [...document.querySelectorAll('#page-analytics svg')].flatMap((svg) => { const w = svg.viewBox.baseVal.width; \
                     return [...svg.querySelectorAll('text')].filter((t) => { const b = t.getBBox(); return b.x < -1 || b.x + b.width > w + 1; }).map((t) => t.textContent); });",
                    vec![],
                )
                .await?;
            let revenue_chart = browser.find(Locator::Id("chart-revenue")).await?.text().await?;
            let virtual_chart = browser.find(Locator::Id("chart-virtual")).await?.text().await?;
            let axis_values = browser.find_all(Locator::Css("#chart-revenue text.axis, #chart-geography text.axis")).await?.len();
            let mut pictures = vec![("analytics", browser.screenshot().await?)];
            mark("charts");

            // Catalog: edit the magnet's name in the draft, see the diff, publish.
            browser.find(Locator::Css("nav button[data-page=catalog]")).await?.click().await?;
            let edit_magnet = browser.wait().at_most(wait).for_element(Locator::Css("button[data-edit=magnet]")).await?;
            // Prices players see: virtual prices with their real-money equivalent, and the
            // leftover warnings of the seed's 50- and 80-gem prices.
            let offer_prices = browser.find(Locator::Id("offer-prices")).await?.text().await?;
            let leftovers = browser.find_all(Locator::Css("#catalog-warnings li[data-warning=leftover]")).await?.len();
            edit_magnet.click().await?;
            let editor = browser.wait().at_most(wait).for_element(Locator::Id("item-json")).await?;
            let item: serde_json::Value = serde_json::from_str(&editor.prop("value").await?.unwrap_or_default()).expect("the item as JSON");
            let mut edited = item.clone();
            edited["name"] = json!("Mega magnet");
            browser.execute("document.getElementById('item-json').value = arguments[0];", vec![json!(serde_json::to_string_pretty(&edited).expect("json"))]).await?;
            browser.find(Locator::Id("save-item")).await?.click().await?;
            // The page re-renders after a save; its notice comes last, so wait for that first.
            browser.wait().at_most(wait).for_element(Locator::Css("#page-catalog p.ok")).await?;
            mark("edited");
            let diff = browser.find(Locator::Css("#diff li")).await?.text().await?;
            mark("diff");
            pictures.push(("catalog", browser.screenshot().await?));
            browser.find(Locator::Id("publish")).await?.click().await?;
            let published = browser
                .wait()
                .at_most(wait)
                .for_element(Locator::XPath("//section[@id='page-catalog']//p[@role='status' and starts-with(., 'Published')]"))
                .await?
                .text()
                .await?;
            mark("published");

            // Players: find the buyer, open them, refund the gem order.
            browser.find(Locator::Css("nav button[data-page=players]")).await?.click().await?;
            browser.wait().at_most(wait).for_element(Locator::Id("player-search")).await?.send_keys("dashboard-buyer").await?;
            browser.find(Locator::Id("player-find")).await?.click().await?;
            browser.wait().at_most(wait).for_element(Locator::Css("button[data-open]")).await?.click().await?;
            let reason = browser.wait().at_most(wait).for_element(Locator::Css(&format!("input[data-refund-reason='{order_id}']"))).await?;
            reason.send_keys("goodwill").await?;
            browser.find(Locator::Css(&format!("button[data-refund='{order_id}']"))).await?.click().await?;
            mark("player opened");
            let refunded = browser.wait().at_most(wait).for_element(Locator::Css("#player-detail span.ok")).await?.text().await?;
            mark("refunded");
            let flagged = browser.find(Locator::Id("player-status")).await?.text().await?;
            browser.find(Locator::Id("block-reason")).await?.send_keys("reviewed, fine").await?;
            browser.find(Locator::Id("clear-flag")).await?.click().await?;
            browser.wait().at_most(wait).for_element(Locator::XPath("//p[@id='player-status' and not(contains(., 'flagged'))]")).await?;
            mark("flag cleared");
            browser.find(Locator::Css("#age-band option[value=minor]")).await?.click().await?;
            browser.find(Locator::Id("block-reason")).await?.send_keys("age check").await?;
            browser.find(Locator::Id("set-age-band")).await?.click().await?;
            browser.wait().at_most(wait).for_element(Locator::XPath("//p[@id='player-status' and contains(., 'age band minor')]")).await?;
            mark("age band set");
            pictures.push(("player", browser.screenshot().await?));
            for other in ["orders", "tabs", "creators", "currencies", "rewards", "audit"] {
                browser.find(Locator::Css(&format!("nav button[data-page={other}]"))).await?.click().await?;
                browser.wait().at_most(wait).for_element(Locator::Css(&format!("#page-{other} .card"))).await?;
            }
            pictures.push(("audit", browser.screenshot().await?));
            // Currencies: rename gold through the JSON editor.
            browser.find(Locator::Css("nav button[data-page=currencies]")).await?.click().await?;
            browser.wait().at_most(wait).for_element(Locator::XPath("//section[@id='page-currencies']//tr[td[1]='gold']//button")).await?.click().await?;
            let editor = browser.wait().at_most(wait).for_element(Locator::Id("item-json")).await?;
            let mut gold: serde_json::Value = serde_json::from_str(&editor.prop("value").await?.unwrap_or_default()).expect("the currency as JSON");
            gold["name"] = json!("Gold coins");
            browser.execute("document.getElementById('item-json').value = arguments[0];", vec![json!(gold.to_string())]).await?;
            browser.find(Locator::Id("save-item")).await?.click().await?;
            browser.wait().at_most(wait).for_element(Locator::XPath("//section[@id='page-currencies']//p[@role='status' and .='Saved gold.']")).await?;
            mark("currency edited");
            mark("every page");
            Ok::<_, fantoccini::error::CmdError>((wrong, under_scoped, cells, diff, published, refunded, flagged, pictures, offer_prices, leftovers, (overflowing, revenue_chart, virtual_chart, axis_values)))
        }
        .await;
        let _ = browser.close().await;
        let (wrong, under_scoped, cells, diff, published, refunded, flagged, pictures, offer_prices, leftovers, (overflowing, revenue_chart, virtual_chart, axis_values)) = outcome
            .unwrap_or_else(|error| panic!("the dashboard failed after {:?}: {error}", passed.lock().expect("stages")));
        assert_eq!(wrong, "That key is not valid.");
        assert_eq!(under_scoped, "This key may not do this (it needs analytics:read).");
        assert_eq!(cells, 168, "the heatmap has a cell per weekday and hour");
        assert_eq!(overflowing, json!([]), "chart text cut off at 1280 px");
        for word in ["USD", "gross", "fees", "net", "2026-"] {
            assert!(revenue_chart.contains(word), "real revenue in the reporting currency: {revenue_chart}");
        }
        assert!(virtual_chart.contains("gold"), "virtual spend per currency: {virtual_chart}");
        assert!(axis_values >= 6, "values on the axes: {axis_values}");
        assert_eq!(diff, "changed item magnet");
        assert_eq!(published, "Published version 2.");
        assert_eq!(refunded, "Refund requested");
        assert!(offer_prices.contains("80 gems ≈ 0.79 USD"), "{offer_prices}");
        assert_eq!(leftovers, 2, "50 and 80 gems are no combination of 100 and 550");
        assert!(flagged.contains("flagged (manual review): card orders paused"), "{flagged}");
        let (_, detail) = send(server.admin(Method::GET, &format!("/admin/v1/players/{player}"))).await;
        assert!(detail["player"].get("flagged_at").is_none(), "the flag was cleared: {detail}");
        assert_eq!(detail["player"]["age_band"], "minor", "the band set in the dashboard: {detail}");
        for (name, png) in &pictures {
            let path = shots.join(format!("{name}.png"));
            std::fs::write(&path, png).expect("the screenshot is saved");
            let variance = tests::luminance_variance(&path);
            assert!(variance > 100, "the screenshot {} is blank (variance {variance})", path.display());
        }
        // What the browser did, the server shows.
        let (_, catalog) = send(server.player(&token, Method::GET, "/v1/catalog")).await;
        let magnet = catalog["items"].as_array().expect("items").iter().find(|item| item["sku"] == "magnet").cloned().expect("the magnet");
        assert_eq!(magnet["name"], "Mega magnet");
        let (_, gold) = send(server.admin(Method::GET, "/admin/v1/currencies/gold")).await;
        assert_eq!(gold["name"], "Gold coins");
        let refunded = server.wait_for_order(&token, &order_id, |order| order["status"] == "refunded").await;
        assert_eq!(refunded["refunded"], json!({ "currency": "USD", "amount": "0.99" }));
        let (_, audit) = send(server.admin(Method::GET, "/admin/v1/audit-log")).await;
        let refund = audit["entries"].as_array().expect("entries").iter().find(|entry| entry["action"] == "order.refund").cloned().expect("the refund is audited");
        assert!(refund["after"].to_string().contains("goodwill"), "with its reason: {refund}");
        drop(driver);
    }
}

/// A range holding more sales than a report may read (`analytics_rows_max`) is refused report by
/// report: each such card says so, and the reports that can be made still draw.
async fn a_report_too_large_says_so_in_its_card_and_the_others_draw(backend: tests::Backend) {
    let Some(server) =
        tests::TestServer::start_with(backend, |settings| settings.analytics_rows_max = 2).await
    else {
        return;
    };
    let Some(driver) = start_chromedriver().await else { return };
    let (player, token) = server.login_player("bounded-buyer").await;
    server.grant(&player, "gold", 1_000).await;
    for (offer, key) in [(seed::MAGNET, "b1"), (seed::SHIELD, "b2"), (seed::EXTRA_LIFE, "b3")] {
        let body = json!({ "offer_id": offer, "price_index": 0 });
        let (status, answer) = send(server.purchase(&token, key, &body)).await;
        assert!(status.is_success(), "{answer}");
    }
    let key = server.key_with_scopes(&["analytics:read"]).await;
    let (browser, _profile) = open_browser(&driver).await;
    let wait = Duration::from_secs(60);
    let outcome = async {
        browser.goto(&format!("{}/dashboard", server.base_url())).await?;
        browser.find(Locator::Id("key")).await?.send_keys(&key).await?;
        browser.find(Locator::Id("login-button")).await?.click().await?;
        let tabs =
            browser.wait().at_most(wait).for_element(Locator::Css("#chart-tabs table")).await?.text().await?;
        let revenue = browser
            .wait()
            .at_most(wait)
            .for_element(Locator::Css("#chart-revenue p.empty"))
            .await?
            .text()
            .await?;
        let banner = browser.find(Locator::Id("analytics-error")).await?.text().await?;
        Ok::<_, fantoccini::error::CmdError>((tabs, revenue, banner))
    }
    .await;
    let _ = browser.close().await;
    let (tabs, revenue, banner) = outcome.expect("the analytics page draws what it can");
    assert!(tabs.contains("USD"), "the tabs report draws: {tabs}");
    assert!(revenue.contains("more than 2 sales") && revenue.contains("shorter range"), "{revenue}");
    assert_eq!(banner, "", "no page-wide error when some reports draw");
    drop(driver);
}

on_each_backend!(a_report_too_large_says_so_in_its_card_and_the_others_draw);
