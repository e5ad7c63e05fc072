//! A real browser (Debian's Chromium, driven over WebDriver by chromedriver) pays on the sandbox
//! checkout page, as a player would.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use serde_json::json;
use tests::seed;

/// A chromedriver process on a free loopback port, killed when dropped.
pub(crate) struct Chromedriver {
    child: Child,
    url: String,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_chromedriver() -> Option<String> {
    ["chromedriver", "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|candidate| {
            Command::new(candidate)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        })
        .map(str::to_owned)
}

pub(crate) async fn start_chromedriver() -> Option<Chromedriver> {
    let Some(binary) = find_chromedriver() else {
        assert!(
            !std::env::var("CI").is_ok_and(|ci| ci == "true"),
            "chromedriver is not installed, and CI must run the browser tests"
        );
        eprintln!(
            "browser test not run: install chromium and chromium-driver (the README's test setup does)"
        );
        return None;
    };
    let port = tests::free_port();
    let child = Command::new(binary)
        .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".to_owned()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Chromedriver { child, url: format!("http://127.0.0.1:{port}") };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{}/status", driver.url)).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "chromedriver did not answer in 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some(driver)
}

/// A headless Chromium session through `driver`, with a throwaway profile (kept alive by the
/// returned directory).
pub(crate) async fn open_browser(driver: &Chromedriver) -> (fantoccini::Client, tempfile::TempDir) {
    let profile = tempfile::tempdir().expect("a profile directory");
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".to_owned(), json!("chrome"));
    capabilities.insert("goog:chromeOptions".to_owned(), json!({
        "binary": "/usr/bin/chromium",
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1000",
                 format!("--user-data-dir={}", profile.path().display())],
    }));
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser = ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a browser session");
    (browser, profile)
}

on_both_backends! {
    async fn a_player_pays_on_the_checkout_page_in_a_real_browser(server: TestServer) {
        let Some(driver) = start_chromedriver().await else { return };
        let (browser, _profile) = open_browser(&driver).await;

        let (_, token) = server.login_player("browser-player").await;
        let order = server.order(&token, seed::STARTER_BUNDLE).await;
        let outcome = async {
            browser.goto(order["checkout_url"].as_str().expect("url")).await?;
            let amount = browser.find(Locator::Id("amount")).await?.text().await?;
            let description = browser.find(Locator::Id("description")).await?.text().await?;
            browser.find(Locator::Id("card_number")).await?.send_keys("4242 4242 4242 4242").await?;
            browser.find(Locator::Id("pay")).await?.click().await?;
            let status = browser.wait().at_most(Duration::from_secs(20)).for_element(Locator::Id("status")).await?.text().await?;
            let screenshot = browser.screenshot().await?;
            Ok::<_, fantoccini::error::CmdError>((amount, description, status, screenshot))
        }
        .await;
        let _ = browser.close().await;
        let (amount, description, status, screenshot) = outcome.expect("the checkout works in the browser");
        assert_eq!(amount, "1.99 USD");
        assert_eq!(description, "Starter bundle × 1");
        assert_eq!(status, "Payment succeeded. You can return to the game.");
        assert!(screenshot.starts_with(b"\x89PNG") && screenshot.len() > 1_000, "a real screenshot");
        let fulfilled = server.wait_for_order(&token, order["id"].as_str().expect("id"), |order| order["status"] == "fulfilled").await;
        assert_eq!(fulfilled["amount"], json!({ "currency": "USD", "amount": "1.99" }));
        assert_eq!(server.balance(&token, "gold").await, 600);
        drop(driver);
    }
}
