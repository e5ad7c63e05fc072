//! Every paginated list pages with the cursors it gives out, and answers any other cursor
//! (garbage, empty, too long, tampered) with `400 invalid_cursor` (issue 21: some lists used to
//! answer 200 with an empty page).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{assert_error, seed, send};

on_both_backends! {
    async fn every_list_refuses_a_cursor_it_did_not_give_out(server: TestServer) {
        let (player_id, token) = server.login_player("paged").await;
        server.grant(&player_id, "gold", 1_000).await;
        for key in ["paged-1", "paged-2"] {
            let (status, _) = send(server.purchase(&token, key, &json!({ "offer_id": seed::MAGNET }))).await;
            assert_eq!(status, StatusCode::CREATED);
        }
        // A real cursor pages on; the same cursor altered by one character is refused.
        let (_, first) = send(server.player(&token, Method::GET, "/v1/wallet/history?limit=1")).await;
        let cursor = first["next_cursor"].as_str().expect("a next page").to_owned();
        let (status, second) = send(server.player(&token, Method::GET, &format!("/v1/wallet/history?limit=1&cursor={cursor}"))).await;
        assert_eq!(status, StatusCode::OK, "{second}");
        assert_ne!(second["entries"][0]["id"], first["entries"][0]["id"], "the next page");
        let tampered = {
            let mut chars: Vec<char> = cursor.chars().collect();
            chars[0] = if chars[0] == 'A' { 'B' } else { 'A' };
            chars.into_iter().collect::<String>()
        };

        let (_, document) = send(server.request(Method::GET, "/openapi.json")).await;
        let mut lists = 0;
        for (path, operations) in document["paths"].as_object().expect("paths") {
            let Some(get) = operations.get("get") else { continue };
            let pages = get["parameters"].as_array().is_some_and(|parameters| parameters.iter().any(|parameter| parameter["name"] == "cursor"));
            if !pages {
                continue;
            }
            lists += 1;
            let path = path.replace("{id}", &player_id);
            let as_player = get["security"].as_array().is_some_and(|schemes| schemes.iter().any(|scheme| scheme.get("player").is_some()));
            let long = "A".repeat(600);
            for cursor in ["garbage", "", "bm90LWEta2V5.000000000000", long.as_str(), tampered.as_str()] {
                let url = format!("{path}?cursor={cursor}");
                let request = if as_player { server.player(&token, Method::GET, &url) } else { server.admin(Method::GET, &url) };
                let answer: (StatusCode, Value) = send(request).await;
                assert_error(&url, &answer, StatusCode::BAD_REQUEST, "invalid_cursor");
            }
        }
        assert!(lists >= 10, "every list was tried: {lists}");
    }
}
