//! A property test: random sequences of rewards, grants, purchases, consumption and retries run
//! against the real server and against a small in-memory model of the store's rules; after every
//! step the answer, the wallet and the inventory must agree, and at the end the audit is clean.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{Backend, TestServer, seed, send};

const PLAYERS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Reward {
        player: usize,
        amount: i64,
    },
    Grant {
        player: usize,
        gems: bool,
        amount: i64,
    },
    Buy {
        player: usize,
        offer: usize,
        quantity: i64,
    },
    Consume {
        player: usize,
        sku: usize,
        quantity: i64,
    },
    /// Sends the previous money-moving request again with its key.
    Retry,
}

/// (offer id, sku, price currency, price, durable)
const OFFERS: [(&str, &str, &str, i64, bool); 5] = [
    (seed::MAGNET, "magnet", "gold", 100, false),
    (seed::SHIELD, "shield", "gold", 150, false),
    (seed::SKIN_RED, "skin.red", "gold", 500, true),
    (seed::SKIN_BLUE, "skin.blue", "gems", 80, true),
    (seed::EXTRA_LIFE, "extra_life", "gold", 300, false),
];
const SKUS: [&str; 3] = ["magnet", "shield", "skin.red"];

fn op() -> impl Strategy<Value = Op> {
    let player = 0..PLAYERS;
    prop_oneof![
        (player.clone(), 1..=10_i64).prop_map(|(player, amount)| Op::Reward { player, amount }),
        (player.clone(), any::<bool>(), 1..=400_i64).prop_map(|(player, gems, amount)| Op::Grant {
            player,
            gems,
            amount
        }),
        (player.clone(), 0..OFFERS.len(), 1..=3_i64).prop_map(|(player, offer, quantity)| Op::Buy {
            player,
            offer,
            quantity
        }),
        (player, 0..SKUS.len(), 1..=3_i64).prop_map(|(player, sku, quantity)| Op::Consume {
            player,
            sku,
            quantity
        }),
        Just(Op::Retry),
    ]
}

#[derive(Debug, Clone, Default)]
struct PlayerModel {
    balances: BTreeMap<&'static str, i64>,
    items: BTreeMap<&'static str, i64>,
    bought: BTreeMap<&'static str, i64>,
}

/// What the model says a step answers: `Ok(())` or the error code.
fn apply(model: &mut PlayerModel, op: &Op) -> Result<(), &'static str> {
    match *op {
        Op::Reward { amount, .. } => {
            *model.balances.entry("gold").or_default() += amount;
            Ok(())
        }
        Op::Grant { gems, amount, .. } => {
            *model.balances.entry(if gems { "gems" } else { "gold" }).or_default() += amount;
            Ok(())
        }
        Op::Buy { offer, quantity, .. } => {
            let (_, sku, currency, price, durable) = OFFERS[offer];
            if durable && quantity > 1 {
                return Err("invalid_request");
            }
            if durable && model.bought.get(sku).copied().unwrap_or(0) >= 1 {
                return Err("purchase_limit_reached");
            }
            let balance = model.balances.entry(currency).or_default();
            if *balance < price * quantity {
                return Err("insufficient_funds");
            }
            *balance -= price * quantity;
            *model.items.entry(sku).or_default() += quantity;
            *model.bought.entry(sku).or_default() += quantity;
            Ok(())
        }
        Op::Consume { sku, quantity, .. } => {
            let sku = SKUS[sku];
            if sku == "skin.red" {
                return Err("not_consumable");
            }
            let held = model.items.entry(sku).or_default();
            if *held < quantity {
                return Err("insufficient_quantity");
            }
            *held -= quantity;
            Ok(())
        }
        Op::Retry => unreachable!("retries are not applied to the model"),
    }
}

struct Player {
    id: String,
    token: String,
}

fn request_for(server: &TestServer, players: &[Player], op: &Op, key: &str) -> reqwest::RequestBuilder {
    match *op {
        Op::Reward { player, amount } => server
            .player(&players[player].token, Method::POST, "/v1/rewards/coin")
            .header("idempotency-key", key)
            .json(&json!({ "amount": amount })),
        Op::Grant { player, gems, amount } => server
            .admin(Method::POST, &format!("/admin/v1/players/{}/grants", players[player].id))
            .header("idempotency-key", key)
            .json(&json!({ "currency": if gems { "gems" } else { "gold" }, "amount": amount, "reason": "model" })),
        Op::Buy { player, offer, quantity } => {
            server.purchase(&players[player].token, key, &json!({ "offer_id": OFFERS[offer].0, "quantity": quantity, "price_index": if offer == 4 { 1 } else { 0 } }))
        }
        Op::Consume { player, sku, quantity } => server
            .player(&players[player].token, Method::POST, &format!("/v1/inventory/{}/consume", SKUS[sku]))
            .header("idempotency-key", key)
            .json(&json!({ "quantity": quantity })),
        Op::Retry => unreachable!("a retry resends an earlier request"),
    }
}

fn player_of(op: &Op) -> usize {
    match *op {
        Op::Reward { player, .. }
        | Op::Grant { player, .. }
        | Op::Buy { player, .. }
        | Op::Consume { player, .. } => player,
        Op::Retry => unreachable!(),
    }
}

async fn check_state(server: &TestServer, player: &Player, model: &PlayerModel) -> Result<(), TestCaseError> {
    let (_, wallet) = send(server.player(&player.token, Method::GET, "/v1/wallet")).await;
    for currency in ["gold", "gems"] {
        let actual = wallet["balances"]
            .as_array()
            .and_then(|all| all.iter().find(|b| b["currency"] == currency))
            .and_then(|b| b["balance"].as_i64());
        prop_assert_eq!(
            actual,
            Some(model.balances.get(currency).copied().unwrap_or(0)),
            "{} of {}",
            currency,
            wallet
        );
    }
    let (_, inventory) = send(server.player(&player.token, Method::GET, "/v1/inventory")).await;
    let actual: BTreeMap<String, i64> = inventory["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| {
            (
                item["sku"].as_str().unwrap_or_default().to_owned(),
                item["quantity"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    let expected: BTreeMap<String, i64> =
        model.items.iter().filter(|(_, q)| **q > 0).map(|(sku, q)| ((*sku).to_owned(), *q)).collect();
    prop_assert_eq!(actual, expected);
    Ok(())
}

async fn run_case(server: &TestServer, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let case = uuid::Uuid::now_v7();
    let mut players = Vec::new();
    let mut models = Vec::new();
    for index in 0..PLAYERS {
        let (id, token) = server.login_player(&format!("model-{case}-{index}")).await;
        players.push(Player { id, token });
        models.push(PlayerModel {
            balances: BTreeMap::from([("gold", 100), ("gems", 0)]),
            ..PlayerModel::default()
        });
    }
    let mut last: Option<(Op, String, StatusCode, Value)> = None;
    for (step, op) in ops.iter().enumerate() {
        if let Op::Retry = op {
            let Some((previous, key, status, body)) = &last else { continue };
            let (again_status, again_body) = send(request_for(server, &players, previous, key)).await;
            if status.is_success() {
                prop_assert_eq!(again_status, *status, "a retry replays the status");
                prop_assert_eq!(&again_body, body, "a retry replays the body");
            } else {
                // A refusal left no trace, so the retry runs again: the model decides again.
                let player = player_of(previous);
                let expected = apply(&mut models[player], previous);
                prop_assert_eq!(
                    again_status.is_success(),
                    expected.is_ok(),
                    "step {} retry: {}",
                    step,
                    again_body
                );
            }
            let player = player_of(previous);
            check_state(server, &players[player], &models[player]).await?;
            continue;
        }
        let player = player_of(op);
        let key = format!("{case}-{step}");
        let expected = apply(&mut models[player], op);
        let (status, body) = send(request_for(server, &players, op, &key)).await;
        match expected {
            Ok(()) => prop_assert!(
                status.is_success(),
                "step {} {:?}: expected success, got {} {}",
                step,
                op,
                status,
                body
            ),
            Err(code) => prop_assert_eq!(
                body["error"]["code"].as_str(),
                Some(code),
                "step {} {:?}: {}",
                step,
                op,
                body
            ),
        }
        check_state(server, &players[player], &models[player]).await?;
        last = Some((op.clone(), key, status, body));
    }
    Ok(())
}

fn run_model(backend: Backend, batching: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let Some(server) =
        runtime.block_on(TestServer::start_with(backend, |settings| settings.group_commit = batching))
    else {
        return;
    };
    runtime.block_on(async {
        let rule = json!({ "code": "coin", "currency": "gold", "amount": 10 });
        let (status, body) = send(server.admin(Method::POST, "/admin/v1/reward-rules").json(&rule)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    });
    let mut runner = TestRunner::new(Config {
        cases: 12,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..Config::default()
    });
    let result =
        runner.run(&proptest::collection::vec(op(), 1..40), |ops| runtime.block_on(run_case(&server, ops)));
    if let Err(error) = result {
        panic!("{error}");
    }
    runtime.block_on(server.assert_audit_clean());
    drop(server);
}

#[test]
fn random_sequences_agree_with_the_model_on_sqlite() {
    run_model(Backend::Sqlite, true);
}

#[test]
fn random_sequences_agree_with_the_model_on_sqlite_without_batching() {
    run_model(Backend::Sqlite, false);
}

#[test]
fn random_sequences_agree_with_the_model_on_postgres_without_batching() {
    run_model(Backend::Postgres, false);
}

#[test]
fn random_sequences_agree_with_the_model_on_postgres() {
    run_model(Backend::Postgres, true);
}
