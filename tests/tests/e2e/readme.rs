//! The README's curl tour, run exactly as written, so the README stays true.

use std::process::Command;

/// The shell commands between the README's `tour:start` and `tour:end` markers.
fn readme_tour() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md");
    let start = readme.find("<!-- tour:start -->").expect("a tour:start marker");
    let end = readme.find("<!-- tour:end -->").expect("a tour:end marker");
    let block = &readme[start..end];
    let code_start = block.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let code_end = block.rfind("```").expect("the block ends");
    block[code_start..code_end].to_owned()
}

on_both_backends! {
    async fn the_readme_tour_works_as_written(server: TestServer) {
        let tour = readme_tour();
        let base_url = server.base_url().to_owned();
        let key = server.operator_key().to_owned();
        let output = tokio::task::spawn_blocking(move || {
            Command::new("bash")
                .args(["-euo", "pipefail", "-c", &tour])
                .env("URL", base_url)
                .env("KEY", key)
                .output()
                .expect("bash and curl run")
        })
        .await
        .expect("joined");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "the tour failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        let lines: Vec<&str> = stdout.lines().collect();
        for line in [r#""version":2"#, r#""sku":"top_hat""#, r#""code":"stars""#] {
            assert!(lines.contains(&line), "the player sees {line}: {stdout}");
        }
        assert!(stdout.contains(r#""added":["top_hat"]"#), "the diff shows the new item: {stdout}");
        assert!(stdout.contains(r#""earned":{"currency":"gold","amount":10}"#), "the reward: {stdout}");
        assert!(stdout.contains(r#""remaining":0"#), "the magnet is used: {stdout}");
        assert!(lines.contains(&r#""status":"fulfilled""#), "the gem pack order is fulfilled: {stdout}");
        assert!(lines.contains(&r#""fee":{"currency":"EUR","amount":"0.33"}"#), "the fee of the German price: {stdout}");
        assert_eq!(
            lines.last().copied(),
            Some(r#"{"balances":[{"currency":"gems","balance":100},{"currency":"gold","balance":10},{"currency":"stars","balance":0}]}"#),
            "100 + 10 - 100 gold, 100 gems bought: {stdout}"
        );
        server.assert_audit_clean().await;
    }
}
