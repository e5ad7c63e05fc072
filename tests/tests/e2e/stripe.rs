//! Stripe as the store's payment provider (issue 19), end to end over real HTTP: the store's
//! Stripe adapter against a local stand-in for Stripe's API (`tests::stripe`), which answers
//! as Stripe documents and sends real signed webhooks. Pay, decline and expiry, bank debits
//! settling later, refunds (the store's and the dashboard's), disputes won and lost, forged,
//! stale, duplicated and reordered webhooks, a lost webhook repaired by reconciliation, and a
//! payment that does not match its order.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use store_server::Settings;
use tests::stripe::{Delivery, StripeStandIn, WEBHOOK_SECRET};
use tests::{Backend, TestServer, assert_error, seed, send, status_is};

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A store paying through a fresh Stripe stand-in; reconciliation off unless `adjust` turns it
/// on, so every event in a test comes by webhook.
async fn stripe_store(
    backend: Backend,
    adjust: impl FnOnce(&mut Settings),
) -> Option<(TestServer, StripeStandIn)> {
    let stripe = StripeStandIn::start().await;
    let stripe_settings = stripe.settings();
    let server = TestServer::start_with(backend, |settings| {
        settings.stripe = Some(stripe_settings);
        settings.reconcile_interval = Duration::from_secs(3_600);
        adjust(settings);
    })
    .await?;
    stripe.set_webhook_url(&format!("{}/v1/webhooks/stripe", server.base_url()));
    Some((server, stripe))
}

/// The only answer of a delivery that was made.
fn answer(answers: &[(StatusCode, Value)]) -> (StatusCode, Value) {
    assert_eq!(answers.len(), 1, "one webhook: {answers:?}");
    answers[0].clone()
}

fn id(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

async fn refund(server: &TestServer, order_id: &str, amount: Option<&str>) -> Value {
    let mut body = json!({ "reason": "asked by the player" });
    if let Some(amount) = amount {
        body["amount"] = json!(amount);
    }
    let (status, refund) = send(
        server
            .admin(Method::POST, &format!("/admin/v1/orders/{order_id}/refunds"))
            .header("idempotency-key", key())
            .json(&body),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{refund}");
    refund
}

/// An order paid by card through Stripe Checkout: the session as Stripe documents it, the
/// order fulfilled once, the real fee from the balance transaction.
async fn checkout_pays_and_fulfils_with_the_real_fee(backend: Backend) {
    let Some((server, stripe)) = stripe_store(backend, |_| {}).await else { return };
    let (_, token) = server.login_player("stripe-buyer").await;
    let order_key = key();
    let create = || {
        server
            .player(&token, Method::POST, "/v1/orders")
            .header("idempotency-key", &order_key)
            .json(&json!({ "offer_id": seed::GEMS_SMALL }))
    };
    let (status, order) = send(create()).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let checkout_url = order["checkout_url"].as_str().expect("a checkout url");
    assert!(checkout_url.starts_with("https://checkout.stripe.com/c/pay/cs_test_"), "{checkout_url}");
    let (status, again) = send(create()).await;
    assert_eq!((status, &again["id"]), (StatusCode::CREATED, &order["id"]), "a retry answers the same order");

    let sessions: Vec<_> = stripe
        .requests()
        .into_iter()
        .filter(|(method, path, ..)| method == "POST" && path == "/v1/checkout/sessions")
        .collect();
    assert_eq!(sessions.len(), 1, "a retry opens no second session");
    let (_, _, form, headers) = &sessions[0];
    let field = |name: &str| form.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
    assert_eq!(field("line_items[0][price_data][unit_amount]"), Some("99"), "minor units");
    assert_eq!(field("line_items[0][price_data][currency]"), Some("usd"));
    assert_eq!(field("client_reference_id"), order["id"].as_str());
    assert_eq!(field("metadata[coinslot_order]"), order["id"].as_str());
    let success = field("success_url").expect("a success url");
    assert_eq!(success, format!("{}/checkout/complete?order={}", server.base_url(), id(&order)));
    let expires_at: i64 = field("expires_at").expect("an expiry").parse().expect("seconds");
    let now = store_server::db::now_micros() / 1_000_000;
    assert!(expires_at >= now + 30 * 60, "Stripe needs at least 30 minutes");
    let idempotency =
        headers.get("idempotency-key").and_then(|value| value.to_str().ok()).expect("an idempotency key");
    assert_ne!(idempotency, order_key, "derived from the player's key and the request, not the key itself");
    assert_eq!(
        headers.get("stripe-version").and_then(|value| value.to_str().ok()),
        Some(store_server::payments::stripe::API_VERSION)
    );

    // The page Stripe sends the player back to.
    let page = reqwest::get(success).await.expect("the return page");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("html").contains("Return to the game"));

    let session = stripe.session_of_url(checkout_url);
    let (status, ack) = answer(&stripe.pay(&session).await);
    assert_eq!((status, ack["status"].as_str()), (StatusCode::OK, Some("processed")), "{ack}");
    let order = server.wait_for_order(&token, &id(&order), status_is("fulfilled")).await;
    // 2.9% of 0.99 (0.03) + 0.30, as the balance transaction says.
    assert_eq!(
        (order["amount"]["amount"].as_str(), order["fee"]["amount"].as_str()),
        (Some("0.99"), Some("0.33")),
        "{order}"
    );
    assert_eq!(order["net"]["amount"], "0.66");
    assert!(order["receipt"].is_object(), "{order}");
    assert_eq!(server.balance(&token, "gems").await, 100);

    // The same event again, and an event Stripe sends that the store does not act on.
    let completed = stripe
        .events()
        .into_iter()
        .find(|event| event["type"] == "checkout.session.completed")
        .expect("the event");
    let (status, ack) = stripe.deliver(&completed).await.expect("delivered");
    assert_eq!((status, ack["status"].as_str()), (StatusCode::OK, Some("duplicate")));
    let mut other = completed.clone();
    other["id"] = json!("evt_standin_other");
    other["type"] = json!("customer.created");
    let (status, ack) = stripe.deliver(&other).await.expect("delivered");
    assert_eq!((status, ack["status"].as_str()), (StatusCode::OK, Some("ignored")));
    assert_eq!(server.count("select count(*) from entry where kind = 'order_fulfillment'").await, 1);
    server.assert_audit_clean().await;
}

/// A declined card leaves the session open (the player may try another card); when the order
/// expires, its session is expired at Stripe first, so it can no longer be paid.
async fn an_unpaid_order_expires_and_its_session_with_it(backend: Backend) {
    let Some((server, stripe)) =
        stripe_store(backend, |settings| settings.order_ttl = Duration::from_secs(1)).await
    else {
        return;
    };
    let (_, token) = server.login_player("stripe-undecided").await;
    let order = server.order(&token, seed::GEMS_SMALL).await;
    let session = stripe.session_of_url(order["checkout_url"].as_str().expect("url"));
    let expired = server.wait_for_order(&token, &id(&order), status_is("expired")).await;
    assert_eq!(stripe.session(&session)["status"], "expired", "closed at Stripe before the order expired");
    assert!(
        stripe
            .requests()
            .iter()
            .any(|(method, path, ..)| method == "GET" && *path == format!("/v1/checkout/sessions/{session}")),
        "the session was read back before the order expired"
    );
    assert_eq!(expired["fee"], Value::Null);
    assert_eq!(server.balance(&token, "gems").await, 0);
    server.assert_audit_clean().await;
}

/// A bank debit: the session completes unpaid (nothing is granted), then the payment succeeds
/// or fails days later.
async fn a_bank_debit_fulfils_when_it_settles_and_fails_when_it_bounces(backend: Backend) {
    let Some((server, stripe)) = stripe_store(backend, |_| {}).await else { return };
    let (_, token) = server.login_player("stripe-debit").await;
    let paid = server.order(&token, seed::GEMS_SMALL).await;
    let paid_session = stripe.session_of_url(paid["checkout_url"].as_str().expect("url"));
    let (status, ack) = answer(&stripe.pay_later(&paid_session).await);
    assert_eq!((status, ack["status"].as_str()), (StatusCode::OK, Some("ignored")), "unpaid yet: {ack}");
    let (_, waiting) = send(server.player(&token, Method::GET, &format!("/v1/orders/{}", id(&paid)))).await;
    assert_eq!(waiting["status"], "requires_payment");
    let (status, ack) = answer(&stripe.settle_later(&paid_session, true).await);
    assert_eq!((status, ack["status"].as_str()), (StatusCode::OK, Some("processed")), "{ack}");
    server.wait_for_order(&token, &id(&paid), status_is("fulfilled")).await;

    let bounced = server.order(&token, seed::GEMS_SMALL).await;
    let bounced_session = stripe.session_of_url(bounced["checkout_url"].as_str().expect("url"));
    stripe.pay_later(&bounced_session).await;
    let (status, _) = answer(&stripe.settle_later(&bounced_session, false).await);
    assert_eq!(status, StatusCode::OK);
    let failed = server.wait_for_order(&token, &id(&bounced), status_is("failed")).await;
    assert_eq!(failed["failure_reason"], "async_payment_failed");
    assert_eq!(server.balance(&token, "gems").await, 100, "one pack");
    server.assert_audit_clean().await;
}

/// The store's refunds go through Stripe's Refunds API and are booked when Stripe confirms
/// them; a refund made in Stripe's dashboard is booked too, once, with the clawback.
async fn refunds_from_the_store_and_from_the_dashboard_are_each_booked_once(backend: Backend) {
    let Some((server, stripe)) = stripe_store(backend, |_| {}).await else { return };
    let (_, token) = server.login_player("stripe-refunded").await;
    let order = server.order(&token, seed::GEMS_LARGE).await;
    let session = stripe.session_of_url(order["checkout_url"].as_str().expect("url"));
    stripe.pay(&session).await;
    let order_id = id(&order);
    server.wait_for_order(&token, &order_id, status_is("fulfilled")).await;
    let payment = stripe.payment_of(&session);

    let first = refund(&server, &order_id, Some("1.99")).await;
    let partly = server.wait_for_order(&token, &order_id, status_is("partially_refunded")).await;
    assert_eq!(partly["refunded"]["amount"], "1.99", "{partly}");
    let (_, _, form, headers) = stripe
        .requests()
        .into_iter()
        .find(|(method, path, ..)| method == "POST" && path == "/v1/refunds")
        .expect("a refund sent to Stripe");
    let field = |name: &str| form.iter().find(|(key, _)| key == name).map(|(_, value)| value.to_owned());
    assert_eq!(field("payment_intent"), Some(payment.clone()));
    assert_eq!(field("amount").as_deref(), Some("199"));
    assert_eq!(field("metadata[coinslot_refund]"), first["id"].as_str().map(str::to_owned));
    assert!(headers.get("idempotency-key").is_some());

    // The rest, refunded by someone in Stripe's dashboard.
    let answers = stripe.refund_in_dashboard(&payment, None).await;
    assert!(answers.iter().all(|(status, _)| *status == StatusCode::OK), "{answers:?}");
    let refunded = server.wait_for_order(&token, &order_id, status_is("refunded")).await;
    assert_eq!(refunded["refunded"]["amount"], "4.99");
    let refunds = refunded["refunds"].as_array().expect("refunds");
    assert_eq!(refunds.len(), 2, "{refunded}");
    assert_eq!(refunds[1]["reason"], "refunded at the provider");
    assert_eq!(
        server.count("select count(*) from entry where kind = 'reversal'").await,
        2,
        "each booked once"
    );
    // Both `refund.created` and `charge.refunded` came for each refund; replaying them all changes nothing.
    for event in stripe.events() {
        if let Some((status, _)) = stripe.deliver(&event).await {
            assert_eq!(status, StatusCode::OK);
        }
    }
    assert_eq!(server.count("select count(*) from entry where kind = 'reversal'").await, 2);
    assert_eq!(server.balance(&token, "gems").await, 0, "the pack is clawed back");
    server.assert_audit_clean().await;
}

/// A refund Stripe fails (the card expired) is `failed` with Stripe's reason, and nothing is booked.
async fn a_refund_stripe_fails_is_failed_and_books_nothing(backend: Backend) {
    let Some((server, stripe)) = stripe_store(backend, |_| {}).await else { return };
    let (_, token) = server.login_player("stripe-refund-fails").await;
    let order = server.order(&token, seed::GEMS_SMALL).await;
    stripe.pay(&stripe.session_of_url(order["checkout_url"].as_str().expect("url"))).await;
    let order_id = id(&order);
    server.wait_for_order(&token, &order_id, status_is("fulfilled")).await;
    stripe.set_refunds_fail(true);
    refund(&server, &order_id, None).await;
    server.wait_for_count("select count(*) from refund where status = 'failed'", 1).await;
    let (_, failed) = send(server.admin(Method::GET, &format!("/admin/v1/orders/{order_id}"))).await;
    assert_eq!(failed["status"], "fulfilled");
    assert!(
        failed["refunds"][0]["last_error"].as_str().expect("why").contains("expired_or_canceled_card"),
        "{failed}"
    );
    assert_eq!(server.count("select count(*) from entry where kind = 'reversal'").await, 0);
    server.assert_audit_clean().await;
}

/// A dispute holds the order and flags the player; lost, the money and the grant go back; won,
/// the order returns to where it was.
async fn disputes_lost_claw_back_and_disputes_won_restore(backend: Backend) {
    let Some((server, stripe)) = stripe_store(backend, |_| {}).await else { return };
    let (player, token) = server.login_player("stripe-disputed").await;
    let mut payments = Vec::new();
    let mut orders = Vec::new();
    for _ in 0..2 {
        let order = server.order(&token, seed::GEMS_SMALL).await;
        let session = stripe.session_of_url(order["checkout_url"].as_str().expect("url"));
        stripe.pay(&session).await;
        server.wait_for_order(&token, &id(&order), status_is("fulfilled")).await;
        payments.push(stripe.payment_of(&session));
        orders.push(id(&order));
    }
    let (status, _) = answer(&stripe.open_dispute(&payments[0]).await);
    assert_eq!(status, StatusCode::OK);
    server.wait_for_order(&token, &orders[0], status_is("disputed")).await;
    let (_, profile) = send(server.admin(Method::GET, &format!("/admin/v1/players/{player}"))).await;
    assert!(
        profile["player"]["flag_reason"].as_str().is_some_and(|reason| reason.contains("dispute")),
        "{profile}"
    );
    assert_eq!(server.balance(&token, "gems").await, 200, "nothing moves until the dispute is decided");
    answer(&stripe.close_dispute(&payments[0], false).await);
    let lost = server.wait_for_order(&token, &orders[0], status_is("charged_back")).await;
    assert_eq!(lost["refunds"][0]["kind"], "chargeback", "{lost}");
    assert_eq!(server.balance(&token, "gems").await, 100);

    answer(&stripe.open_dispute(&payments[1]).await);
    server.wait_for_order(&token, &orders[1], status_is("disputed")).await;
    answer(&stripe.close_dispute(&payments[1], true).await);
    let won = server.wait_for_order(&token, &orders[1], status_is("fulfilled")).await;
    let last = won["transitions"].as_array().expect("transitions").last().cloned().expect("one");
    assert_eq!((last["from"].as_str(), last["to"].as_str()), (Some("disputed"), Some("fulfilled")), "{won}");
    assert_eq!(server.balance(&token, "gems").await, 100, "a won dispute takes nothing");
    assert_eq!(server.count("select count(*) from entry where kind = 'reversal'").await, 1);
    server.assert_audit_clean().await;
}

/// Forged and stale webhooks are refused and change nothing; during a secret rotation both
/// secrets verify; an event that overtakes the one it depends on is refused until that one is in.
async fn forged_stale_rotated_and_reordered_webhooks(backend: Backend) {
    let Some((server, stripe)) = stripe_store(backend, |settings| {
        if let Some(stripe) = &mut settings.stripe {
            stripe.webhook_secrets = vec!["whsec_next".to_owned(), WEBHOOK_SECRET.to_owned()];
        }
    })
    .await
    else {
        return;
    };
    let (_, token) = server.login_player("stripe-webhooks").await;
    let order = server.order(&token, seed::GEMS_SMALL).await;
    let session = stripe.session_of_url(order["checkout_url"].as_str().expect("url"));
    stripe.set_delivering(false);
    stripe.pay(&session).await;
    let paid = stripe
        .events()
        .into_iter()
        .find(|event| event["type"] == "checkout.session.completed")
        .expect("paid");
    let before = server.fingerprint().await;

    let forged = stripe
        .deliver_with(&paid, &Delivery { clock_offset_s: 0, secrets: vec!["whsec_forged".into()] })
        .await;
    assert_error("forged", &forged, StatusCode::BAD_REQUEST, "webhook_signature_invalid");
    let mut altered = paid.clone();
    altered["data"]["object"]["id"] = json!("cs_test_someone_else");
    let signed_other = stripe
        .deliver_with(&altered, &Delivery { clock_offset_s: 0, secrets: vec!["whsec_forged".into()] })
        .await;
    assert_error("altered", &signed_other, StatusCode::BAD_REQUEST, "webhook_signature_invalid");
    let stale = stripe
        .deliver_with(&paid, &Delivery { clock_offset_s: -301, secrets: vec![WEBHOOK_SECRET.into()] })
        .await;
    assert_error("stale", &stale, StatusCode::BAD_REQUEST, "webhook_timestamp_out_of_tolerance");
    // No credential of the store's opens the route: only Stripe's signature does.
    for request in [
        server.request(Method::POST, "/v1/webhooks/stripe"),
        server.player(&token, Method::POST, "/v1/webhooks/stripe"),
        server.admin(Method::POST, "/v1/webhooks/stripe"),
    ] {
        let refused = send(request.json(&paid)).await;
        assert_error("unsigned", &refused, StatusCode::BAD_REQUEST, "webhook_signature_invalid");
    }
    assert_eq!(server.fingerprint().await, before, "refused webhooks change nothing");

    // The dispute arrives before the payment it disputes: refused, so Stripe retries it.
    let payment = stripe.payment_of(&session);
    stripe.open_dispute(&payment).await;
    let dispute =
        stripe.events().into_iter().find(|event| event["type"] == "charge.dispute.created").expect("dispute");
    stripe.set_delivering(true);
    let (status, early) = stripe.deliver(&dispute).await.expect("delivered");
    assert!(status.is_client_error(), "{status} {early}");
    assert_eq!(server.fingerprint().await, before, "an early dispute changes nothing");

    // Signed with the old secret, and with the new and the old (Stripe's rotation): both verify.
    let (status, ack) = stripe
        .deliver_with(
            &paid,
            &Delivery { clock_offset_s: -299, secrets: vec!["whsec_next".into(), WEBHOOK_SECRET.into()] },
        )
        .await;
    assert_eq!((status, ack["status"].as_str()), (StatusCode::OK, Some("processed")), "{ack}");
    let (status, ack) = stripe.deliver(&dispute).await.expect("delivered");
    assert_eq!((status, ack["status"].as_str()), (StatusCode::OK, Some("processed")), "{ack}");
    server.wait_for_order(&token, &id(&order), status_is("disputed")).await;
    server.assert_audit_clean().await;
}

/// Webhooks lost (the store was down longer than Stripe retries): reconciliation reads Stripe's
/// events and applies each once.
async fn lost_webhooks_are_repaired_from_stripe_s_events(backend: Backend) {
    let Some((server, stripe)) =
        stripe_store(backend, |settings| settings.reconcile_interval = Duration::from_millis(300)).await
    else {
        return;
    };
    let (_, token) = server.login_player("stripe-outage").await;
    stripe.set_delivering(false);
    let order = server.order(&token, seed::GEMS_SMALL).await;
    let session = stripe.session_of_url(order["checkout_url"].as_str().expect("url"));
    stripe.pay(&session).await;
    let order_id = id(&order);
    let fulfilled = server.wait_for_order(&token, &order_id, status_is("fulfilled")).await;
    assert!(
        fulfilled["transitions"][0]["cause"]
            .as_str()
            .expect("a cause")
            .starts_with("webhook checkout.session.completed evt_"),
        "{fulfilled}"
    );
    refund(&server, &order_id, None).await;
    server.wait_for_order(&token, &order_id, status_is("refunded")).await;
    assert!(
        stripe.requests().iter().any(|(method, path, form, _)| method == "GET"
            && path == "/v1/events"
            && form.iter().any(|(key, value)| key == "ending_before" && value.starts_with("evt_"))),
        "reconciliation reads on from its cursor"
    );
    assert_eq!(server.count("select count(*) from entry where kind = 'order_fulfillment'").await, 1);
    assert_eq!(server.count("select count(*) from entry where kind = 'reversal'").await, 1);
    server.assert_audit_clean().await;
}

/// A payment that does not match its order (the session's amount, currency or reference changed
/// before the player paid) grants nothing; the money is booked and refunded through Stripe, in
/// what was paid, and that refund booked.
async fn a_payment_that_does_not_match_its_order_is_refunded(backend: Backend) {
    let Some((server, stripe)) = stripe_store(backend, |_| {}).await else { return };
    let (_, token) = server.login_player("stripe-mismatch").await;
    let mut orders = Vec::new();
    for _ in 0..3 {
        let order = server.order(&token, seed::GEMS_SMALL).await;
        let session = stripe.session_of_url(order["checkout_url"].as_str().expect("url"));
        orders.push((id(&order), session));
    }
    stripe.set_session_field(&orders[0].1, "amount_total", json!(50));
    stripe.set_session_field(&orders[1].1, "currency", json!("eur"));
    stripe.set_session_field(&orders[2].1, "client_reference_id", json!(orders[0].0));
    for (_, session) in &orders {
        let (status, _) = answer(&stripe.pay(session).await);
        assert_eq!(status, StatusCode::OK);
    }
    server
        .wait_for_count(
            "select count(*) from refund where payment_id is not null and status = 'succeeded'",
            3,
        )
        .await;
    for (order_id, _) in &orders {
        let (_, unpaid) = send(server.player(&token, Method::GET, &format!("/v1/orders/{order_id}"))).await;
        assert_eq!(unpaid["status"], "requires_payment", "{unpaid}");
    }
    assert_eq!(server.balance(&token, "gems").await, 0);
    let refunds: Vec<_> = stripe
        .requests()
        .into_iter()
        .filter(|(method, path, ..)| method == "POST" && path == "/v1/refunds")
        .map(|(_, _, form, _)| form)
        .collect();
    assert_eq!(refunds.len(), 3, "{refunds:?}");
    assert!(
        refunds.iter().any(|form| form.contains(&("amount".to_owned(), "50".to_owned()))),
        "what was paid goes back: {refunds:?}"
    );
    assert_eq!(
        server.text("select reason from provider_payment where amount_micros = 500000").await,
        "paid 0.50 USD, but the order costs 0.99 USD"
    );
    assert_eq!(
        server.text("select reason from provider_payment where currency = 'EUR'").await,
        "paid in EUR, but the order is in USD"
    );
    assert_eq!(
        server
            .count("select count(*) from provider_payment where reason like 'the payment names reference%'")
            .await,
        1
    );
    server.assert_audit_clean().await;
}

/// Charged in one currency, settled in another: the fee is the balance transaction's,
/// converted back at its exchange rate.
async fn a_fee_settled_in_another_currency_is_converted_back(backend: Backend) {
    let Some((server, stripe)) = stripe_store(backend, |_| {}).await else { return };
    stripe
        .set_settlement(tests::stripe::Settlement { currency: Some("eur".into()), rate_millionths: 900_000 });
    let (_, token) = server.login_player("stripe-eur").await;
    let order = server.order(&token, seed::GEMS_LARGE).await;
    stripe.pay(&stripe.session_of_url(order["checkout_url"].as_str().expect("url"))).await;
    let order = server.wait_for_order(&token, &id(&order), status_is("fulfilled")).await;
    // 4.99 USD = 4.49 EUR; fee 2.9% (0.13) + 0.30 = 0.43 EUR = 0.48 USD at 0.9.
    assert_eq!(order["fee"]["amount"], "0.48", "{order}");
    server.assert_audit_clean().await;
}

/// A tab settlement opens a Stripe Checkout Session for what the tab owes, and the tab is
/// settled when Stripe confirms the payment, with Stripe's fee on the one charge.
async fn a_tab_settles_through_stripe_checkout(backend: Backend) {
    let Some((server, stripe)) = stripe_store(backend, |_| {}).await else { return };
    let (_, token) = server.login_player("stripe-tab").await;
    for _ in 0..20 {
        let body = json!({ "offer_id": seed::EXTRA_LIFE, "quantity": 1, "price_index": 0 });
        let (status, bought) = send(server.purchase(&token, &key(), &body)).await;
        assert_eq!(status, StatusCode::CREATED, "{bought}");
    }
    let (status, order) =
        send(server.player(&token, Method::POST, "/v1/tab/settle").header("idempotency-key", key())).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let session = stripe.session_of_url(order["checkout_url"].as_str().expect("url"));
    assert_eq!(stripe.session(&session)["amount_total"], 100, "20 x USD 0.05, in cents");
    assert_eq!(stripe.session(&session)["client_reference_id"], order["id"]);
    let (status, ack) = answer(&stripe.pay(&session).await);
    assert_eq!((status, ack["status"].as_str()), (StatusCode::OK, Some("processed")), "{ack}");
    let settled = server.wait_for_order(&token, &id(&order), status_is("fulfilled")).await;
    assert_eq!(settled["fee"]["amount"], "0.33", "2.9% of 1.00 + 0.30, from the balance transaction");
    let (_, tabs) = send(server.player(&token, Method::GET, "/v1/tab")).await;
    assert_eq!(tabs["tabs"], json!([]), "nothing owed: {tabs}");
    server.assert_audit_clean().await;
}

on_each_backend!(
    a_tab_settles_through_stripe_checkout,
    checkout_pays_and_fulfils_with_the_real_fee,
    an_unpaid_order_expires_and_its_session_with_it,
    a_bank_debit_fulfils_when_it_settles_and_fails_when_it_bounces,
    refunds_from_the_store_and_from_the_dashboard_are_each_booked_once,
    a_refund_stripe_fails_is_failed_and_books_nothing,
    disputes_lost_claw_back_and_disputes_won_restore,
    forged_stale_rotated_and_reordered_webhooks,
    lost_webhooks_are_repaired_from_stripe_s_events,
    a_payment_that_does_not_match_its_order_is_refunded,
    a_fee_settled_in_another_currency_is_converted_back,
);
