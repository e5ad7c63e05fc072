//! Receipts: signed on every purchase and grant, verifiable offline with the public keys, and
//! still verifiable after the signing key rotates.

use reqwest::{Method, StatusCode};
use serde_json::json;
use store_api::ledger::EntryKind;
use store_api::receipt::{ReceiptError, ReceiptKeys, SignedReceipt, verify_receipt};
use tests::{TestServer, assert_error, seed, send, store_server_command};

async fn receipt_keys(server: &TestServer) -> ReceiptKeys {
    let (status, keys) = send(server.request(Method::GET, "/v1/receipt-keys")).await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_value(keys).expect("receipt keys")
}

on_both_backends! {
    async fn receipts_verify_until_tampered_and_survive_key_rotation(server: TestServer) {
        let (player, token) = server.login_player("receipts").await;
        let grant = server.grant(&player, "gold", 500).await;
        let (status, purchase) = send(server.purchase(&token, "receipt-1", &json!({ "offer_id": seed::MAGNET }))).await;
        assert_eq!(status, StatusCode::CREATED);
        let receipt: SignedReceipt = serde_json::from_value(purchase["receipt"].clone()).expect("a receipt");
        let keys = receipt_keys(&server).await;
        let payload = verify_receipt(&receipt, &keys.keys).expect("the receipt verifies");
        assert_eq!(payload.kind, EntryKind::Purchase);
        assert_eq!(payload.player_id.to_string(), player);
        assert_eq!(payload.paid.expect("paid").amount, 100);
        assert_eq!(payload.granted.items[0].sku.as_str(), "magnet");
        let grant_receipt: SignedReceipt = serde_json::from_value(grant["receipt"].clone()).expect("a grant receipt");
        assert_eq!(verify_receipt(&grant_receipt, &keys.keys).expect("verifies").kind, EntryKind::OperatorGrant);

        let mut tampered = receipt.clone();
        tampered.payload = tampered.payload.replace("\"quantity\":1", "\"quantity\":9");
        assert_ne!(tampered.payload, receipt.payload);
        assert_eq!(verify_receipt(&tampered, &keys.keys), Err(ReceiptError::BadSignature));
        let mut other_key = receipt.clone();
        other_key.key_id = "rk_unknown".to_owned();
        assert!(matches!(verify_receipt(&other_key, &keys.keys), Err(ReceiptError::UnknownKey(_))));
        let mut swapped = grant_receipt.clone();
        swapped.signature = receipt.signature.clone();
        assert_eq!(verify_receipt(&swapped, &keys.keys), Err(ReceiptError::BadSignature));

        let (status, fetched) = send(server.player(&token, Method::GET, &format!("/v1/receipts/{}", receipt.id))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(serde_json::from_value::<SignedReceipt>(fetched).expect("receipt"), receipt);
        let other = server.login("receipts-other").await;
        let foreign = send(server.player(&other, Method::GET, &format!("/v1/receipts/{}", receipt.id))).await;
        assert_error("another player's receipt", &foreign, StatusCode::NOT_FOUND, "not_found");

        // Rotate with the command line, as an operator would.
        let cwd = tempfile::tempdir().expect("a directory");
        let output = store_server_command(cwd.path(), Some(server.db().url())).args(["admin", "rotate-receipt-key"]).output().expect("runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let new_key_id = String::from_utf8(output.stdout).expect("utf-8").trim().to_owned();
        let (_, later) = send(server.purchase(&token, "receipt-2", &json!({ "offer_id": seed::MAGNET }))).await;
        let later: SignedReceipt = serde_json::from_value(later["receipt"].clone()).expect("a receipt");
        assert_eq!(later.key_id, new_key_id, "new receipts use the new key");
        let keys = receipt_keys(&server).await;
        assert_eq!(keys.keys.len(), 2);
        assert!(keys.keys.iter().any(|key| key.id == receipt.key_id && key.retired_at.is_some()));
        verify_receipt(&receipt, &keys.keys).expect("a receipt from the retired key still verifies");
        verify_receipt(&later, &keys.keys).expect("the new receipt verifies");
        server.assert_audit_clean().await;
    }
}
