//! `serve --tls-cert --tls-key`: the store over HTTPS (rustls), with a certificate made for the
//! test; plain HTTP to the TLS port gets no answer; bad files stop the server with a message.

use std::time::Duration;

use serde_json::Value;
use tests::{ServerProcess, store_server_command};

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files in `dir`.
fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("a certificate");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let pem = certified.cert.pem();
    std::fs::write(&cert, &pem).expect("cert.pem");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("key.pem");
    (cert, key, pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_serves_https_with_the_given_certificate() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (cert, key, pem) = certificate(dir.path());
    let url = format!("sqlite://{}", dir.path().join("tls.db").display());
    let mut command = store_server_command(dir.path(), Some(&url));
    command
        .env("COINSLOT_LISTEN", "127.0.0.1:0")
        .arg("serve")
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key);
    let server = ServerProcess::spawn(command);
    let base = server.base_url.clone();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");

    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("the certificate"))
        .timeout(Duration::from_secs(20))
        .build()
        .expect("a client");
    let health = http.get(format!("{base}/healthz")).send().await.expect("HTTPS answers");
    assert_eq!(health.status(), 200);
    // A whole purchase over HTTPS: log in, earn nothing, buy with the initial grant.
    let (_, token) = tests::login_at(&http, &base, "tls-player").await;
    let wallet: Value = http
        .get(format!("{base}/v1/wallet"))
        .bearer_auth(token)
        .send()
        .await
        .expect("wallet")
        .json()
        .await
        .expect("JSON");
    assert!(wallet["balances"].as_array().is_some_and(|balances| !balances.is_empty()), "{wallet}");

    // A client that does not trust the certificate is refused by its own TLS check.
    let untrusting = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("a client");
    assert!(
        untrusting.get(format!("{base}/healthz")).send().await.is_err(),
        "an untrusted certificate must fail"
    );
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = base.replacen("https://", "http://", 1);
    let answered = untrusting.get(format!("{plain}/healthz")).send().await;
    assert!(answered.is_err() || !answered.is_ok_and(|response| response.status().is_success()));
    assert!(server.terminate().success());
}

#[test]
fn serve_stops_with_a_message_when_the_tls_files_are_bad() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (cert, _, _) = certificate(dir.path());
    let url = format!("sqlite://{}", dir.path().join("bad.db").display());
    let not_a_key = dir.path().join("not-a-key.pem");
    std::fs::write(&not_a_key, "hello").expect("a file");
    for (cert, key, said) in [
        (cert.clone(), dir.path().join("missing.pem"), "missing.pem"),
        (cert.clone(), not_a_key.clone(), "not-a-key.pem"),
        (not_a_key.clone(), cert.clone(), "certificate"),
    ] {
        let output = store_server_command(dir.path(), Some(&url))
            .env("COINSLOT_LISTEN", "127.0.0.1:0")
            .arg("serve")
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .output()
            .expect("store-server runs");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(said), "{said}: {stderr}");
    }
    let output = store_server_command(dir.path(), Some(&url))
        .arg("serve")
        .arg("--tls-cert")
        .arg(&cert)
        .output()
        .expect("store-server runs");
    assert!(!output.status.success(), "--tls-cert needs --tls-key");
}
