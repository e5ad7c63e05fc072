//! Receipts: signed on every purchase and grant, verifiable offline with the public keys, and
//! still verifiable after the signing key rotates.

use reqwest::{Method, StatusCode};
use serde_json::json;
use store_api::ledger::EntryKind;
use store_api::receipt::{ReceiptError, ReceiptKeys, SignedReceipt, verify_receipt};
use tests::{TestServer, assert_error, seed, send, store_server_command};

/// `python3` with PyJWT (`pip install "pyjwt[crypto]"`), an independent JOSE implementation;
/// CI must have it.
fn pyjwt() -> bool {
    let found = std::process::Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found || std::env::var("CI").as_deref() != Ok("true"),
        "PyJWT is not installed (pip install \"pyjwt[crypto]\"), and CI must verify receipts with it"
    );
    if !found {
        eprintln!("PyJWT is not installed: receipts were not verified with an independent JOSE library");
    }
    found
}

/// Runs `tests/scripts/verify_receipt.py`: the payload PyJWT verified, or its error.
fn verify_with_pyjwt(jwks_url: &str, jws: &str) -> Result<serde_json::Value, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/verify_receipt.py");
    let output =
        std::process::Command::new("python3").args([script, jwks_url, jws]).output().expect("python3 runs");
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).expect("the payload's JSON"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

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

    async fn receipts_are_jws_an_independent_jose_library_verifies(server: TestServer) {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let (player, token) = server.login_player("jose").await;
        server.grant(&player, "gold", 500).await;
        let (status, purchase) = send(server.purchase(&token, "jose-1", &json!({ "offer_id": seed::MAGNET }))).await;
        assert_eq!(status, StatusCode::CREATED);
        let receipt: SignedReceipt = serde_json::from_value(purchase["receipt"].clone()).expect("a receipt");
        let parts: Vec<&str> = receipt.jws.split('.').collect();
        assert_eq!(parts.len(), 3, "a compact JWS: {}", receipt.jws);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("base64url")).expect("JSON");
        assert_eq!(header, json!({ "alg": "EdDSA", "kid": receipt.key_id, "typ": "coinslot-receipt+jwt" }));
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url"), receipt.payload.as_bytes(), "the same payload");

        // The key set is a JWK Set (RFC 8037), at both places, with the original fields beside.
        let (_, set) = send(server.request(Method::GET, "/.well-known/jwks.json")).await;
        let (_, keys) = send(server.request(Method::GET, "/v1/receipt-keys")).await;
        assert_eq!(set, keys);
        let key = &keys["keys"][0];
        assert_eq!(
            (&key["kty"], &key["crv"], &key["kid"], &key["use"], &key["alg"]),
            (&json!("OKP"), &json!("Ed25519"), &json!(receipt.key_id), &json!("sig"), &json!("EdDSA"))
        );
        let x = URL_SAFE_NO_PAD.decode(key["x"].as_str().expect("x")).expect("base64url");
        assert_eq!(x, STANDARD.decode(key["public_key"].as_str().expect("public_key")).expect("base64"));

        // The SDK's own check covers the JWS: one stating something else is refused.
        let keys: ReceiptKeys = serde_json::from_value(keys).expect("keys");
        verify_receipt(&receipt, &keys.keys).expect("verifies");
        let mut swapped = receipt.clone();
        let (_, other) = send(server.purchase(&token, "jose-2", &json!({ "offer_id": seed::MAGNET }))).await;
        swapped.jws = other["receipt"]["jws"].as_str().expect("a jws").to_owned();
        assert!(matches!(verify_receipt(&swapped, &keys.keys), Err(ReceiptError::MalformedJws(_))));
        let (_, fetched) = send(server.player(&token, Method::GET, &format!("/v1/receipts/{}", receipt.id))).await;
        assert_eq!(fetched["jws"].as_str(), Some(receipt.jws.as_str()), "made again on read, the same");

        if !pyjwt() {
            return;
        }
        for jwks in ["/.well-known/jwks.json", "/v1/receipt-keys"] {
            let url = format!("{}{jwks}", server.base_url());
            let verified = verify_with_pyjwt(&url, &receipt.jws).expect("PyJWT verifies the receipt");
            assert_eq!(verified, serde_json::from_str::<serde_json::Value>(&receipt.payload).expect("JSON"));
        }
        let url = format!("{}/.well-known/jwks.json", server.base_url());
        let cheaper = {
            let mut payload: serde_json::Value = serde_json::from_str(&receipt.payload).expect("JSON");
            payload["paid"]["amount"] = json!(1);
            format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(payload.to_string()), parts[2])
        };
        let refused = verify_with_pyjwt(&url, &cheaper).expect_err("a tampered receipt is refused");
        assert!(refused.contains("InvalidSignatureError"), "{refused}");
        let foreign = format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","kid":"rk_nobody","typ":"coinslot-receipt+jwt"}"#), parts[1], parts[2]);
        let refused = verify_with_pyjwt(&url, &foreign).expect_err("an unknown key is refused");
        assert!(refused.contains("PyJWKClientError"), "{refused}");
    }
}
