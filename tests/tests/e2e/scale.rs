//! `store-server generate` and the ledger's bulk path it writes through: players and entries
//! that the audit accepts and the API serves and trades on like any other; a bulk entry that
//! breaks a rule refuses the whole bulk.

use reqwest::Method;
use store_api::ledger::EntryKind;
use tests::{send, store_server_command};

on_both_backends! {
    async fn generated_players_are_audited_served_and_can_buy(server: TestServer) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let players_before = server.count("select count(*) from player").await;
        let output = store_server_command(dir.path(), Some(server.db().url()))
            .args(["generate", "--players", "1500", "--entries-per-player", "10"])
            .output()
            .expect("generate runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.starts_with("generated 1500 players, 15000 entries (4500 purchases)"), "{stdout}");
        assert_eq!(server.count("select count(*) from player").await, players_before + 1500);
        assert_eq!(server.count("select count(*) from entry where actor = 'generator'").await, 15_000);
        assert_eq!(server.count("select count(*) from purchase").await, 4_500);
        server.assert_audit_clean().await;

        // A generated player (of the second transaction) logs in and sees their history.
        let token = server.login("scale-1234").await;
        let (status, history) =
            send(server.player(&token, Method::GET, "/v1/wallet/history?limit=20")).await;
        assert_eq!(status, 200, "{history}");
        let kinds: Vec<&str> =
            history["entries"].as_array().expect("entries").iter().filter_map(|entry| entry["kind"].as_str()).collect();
        assert_eq!(kinds.len(), 10, "{history}");
        assert_eq!(kinds.iter().filter(|kind| **kind == "purchase").count(), 3);
        assert_eq!(kinds.iter().filter(|kind| **kind == "reward").count(), 6);
        assert_eq!(kinds.iter().filter(|kind| **kind == "operator_grant").count(), 1);
        let (_, inventory) = send(server.player(&token, Method::GET, "/v1/inventory")).await;
        let items = inventory["items"].as_array().expect("items");
        assert_eq!(items.len(), 1, "{inventory}");
        let sku = items[0]["sku"].as_str().expect("a sku").to_owned();
        assert_eq!(items[0]["quantity"], 3);
        // The wallet holds 20 prices, plus 6 rewards of a twentieth, less 3 purchases.
        let price = server.count("select max(amount) from purchase").await;
        let (_, wallet) = send(server.player(&token, Method::GET, "/v1/wallet")).await;
        let currency = server.text("select max(currency) from purchase").await;
        let balance = wallet["balances"]
            .as_array()
            .expect("balances")
            .iter()
            .find(|balance| balance["currency"] == currency.as_str())
            .and_then(|balance| balance["balance"].as_i64())
            .expect("a balance");
        assert_eq!(balance, 20 * price + 6 * (price / 20).max(1) - 3 * price, "{wallet}");

        // They trade like anyone: one more of the same through the API.
        let offer = server.text("select max(offer_id) from purchase").await;
        let (status, bought) = send(server.purchase(&token, "after-generate", &serde_json::json!({ "offer_id": offer }))).await;
        assert_eq!(status, 201, "{bought}");
        assert_eq!(server.balance(&token, &currency).await, balance - price);
        let (_, inventory) = send(server.player(&token, Method::GET, "/v1/inventory")).await;
        assert_eq!(inventory["items"][0], serde_json::json!({ "sku": sku, "quantity": 4 }), "{inventory}");
        server.assert_audit_clean().await;
    }

    async fn a_bulk_entry_that_breaks_a_rule_refuses_the_whole_bulk(server: TestServer) {
        let token = server.login("bulk-victim").await;
        let (_, wallet) = send(server.player(&token, Method::GET, "/v1/wallet")).await;
        let (_, found) = send(server.admin(Method::GET, "/admin/v1/players?query=bulk-victim")).await;
        let player: uuid::Uuid = found["players"][0]["id"].as_str().expect("the victim").parse().expect("an id");
        let before = server.fingerprint().await;
        let db = store_server::db::Db::connect(server.db().url(), 2, std::time::Duration::from_secs(30)).await.expect("db");
        let mut tx = db.begin_write().await.expect("a transaction");
        let wallet_account = store_server::ledger::AccountId::Wallet(player, store_api::currency::CurrencyCode::parse("gold").expect("gold"));
        let issuance = store_server::ledger::AccountId::System(store_server::ledger::SystemAccount::Issuance, "gold".to_owned());
        let entry = |amount: i64| store_server::ledger::NewEntry {
            kind: EntryKind::OperatorGrant,
            player_id: Some(player),
            actor: "test".to_owned(),
            reason: Some("bulk".to_owned()),
            postings: vec![
                store_server::ledger::Posting { account: issuance.clone(), amount: -amount },
                store_server::ledger::Posting { account: wallet_account.clone(), amount },
            ],
            items: Vec::new(),
            clawback: false,
        };
        // A credit, then a debit of more than the wallet will hold.
        let refused = store_server::ledger::bulk::append_entries(&mut tx, &[entry(10), entry(-1_000_000_000)], &Default::default()).await;
        let error = refused.expect_err("an overdraft is refused");
        assert!(format!("{error}").contains("wallet holds"), "{error}");
        drop(tx);
        db.close().await;
        assert_eq!(server.fingerprint().await, before, "nothing was written");
        let (_, after) = send(server.player(&token, Method::GET, "/v1/wallet")).await;
        assert_eq!(after, wallet);
        server.assert_audit_clean().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_refuses_a_database_without_a_live_catalog() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let url = format!("sqlite://{}", dir.path().join("empty.db").display());
    let output = store_server_command(dir.path(), Some(&url))
        .args(["generate", "--players", "10"])
        .output()
        .expect("generate runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("publish a catalog first"), "{stderr}");
}
