//! A local stand-in for the Steam partner Web API, so the store's Steam code runs its real
//! requests without the internet: `ISteamUserAuth/AuthenticateUserTicket/v1` as Steamworks
//! documents it (a `GET` with `key`, `appid`, `ticket` in hex and `identity`; `403 Forbidden`
//! for a wrong publisher key; `{"response":{"params":{"result":"OK","steamid",…}}}` for a good
//! ticket and `{"response":{"error":{"errorcode","errordesc"}}}` for a bad one).
//!
//! Tickets are what the Steam client would issue: [`SteamStandIn::issue_ticket`] makes one for a
//! SteamID, an app and an identity.
//!
//! It also serves the microtransaction interfaces `ISteamMicroTxn` and `ISteamMicroTxnSandbox`
//! (kept apart, as Steam keeps them) as Steamworks documents them: `GetUserInfo/v2`,
//! `QueryTxn/v3`, `GetReport/v5` (`GET`, query parameters) and `InitTxn/v3`, `FinalizeTxn/v2`,
//! `RefundTxn/v2` (`POST`, form bodies), each with `key` and `appid`, answering
//! `{"response":{"result":"OK","params":{…}}}` or `{"response":{"result":"Failure","error":
//! {"errorcode","errordesc"}}}` with Steam's error codes. What the player does in the overlay,
//! and what Steam's support and the card networks do later, are the test's to play:
//! [`SteamStandIn::authorize`], [`SteamStandIn::refund_by_support`],
//! [`SteamStandIn::charge_back`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// The publisher Web API key the stand-in accepts.
pub const WEB_API_KEY: &str = "steam-standin-publisher-key";
/// The game's App ID in tests (Spacewar, Valve's test app).
pub const APP_ID: u32 = 480;

#[derive(Debug, Clone)]
struct Ticket {
    steam_id: u64,
    app_id: u32,
    identity: String,
    publisher_banned: bool,
}

/// A Steam wallet, as `GetUserInfo` describes it.
#[derive(Debug, Clone)]
struct Wallet {
    currency: String,
    status: String,
}

/// A microtransaction.
#[derive(Debug, Clone)]
struct Txn {
    interface: String,
    order_id: u64,
    trans_id: u64,
    steam_id: u64,
    currency: String,
    status: String,
    items: Vec<serde_json::Value>,
    created: u64,
    changed: u64,
}

/// What the next calls of a method do wrong ([`SteamStandIn::fail_next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Steam fails on its side (`500`) and does nothing.
    Unavailable,
    /// Steam does the work, and the answer is lost on the way (`500`).
    AnswerLost,
}

#[derive(Debug, Default)]
struct Inner {
    tickets: HashMap<String, Ticket>,
    next: u64,
    calls: u64,
    wallets: HashMap<u64, Wallet>,
    txns: Vec<Txn>,
    /// Seconds after the report epoch; every change moves it on.
    clock: u64,
    faults: HashMap<String, Vec<Fault>>,
    microtxn_calls: Vec<(String, Vec<(String, String)>)>,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(inner: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The stand-in, serving on a loopback port until dropped.
#[derive(Debug)]
pub struct SteamStandIn {
    base_url: String,
    inner: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SteamStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn query<'q>(params: &'q [(String, String)], name: &str) -> Option<&'q str> {
    params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
}

async fn authenticate_user_ticket(
    State(inner): State<Shared>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let mut inner = lock(&inner);
    inner.calls += 1;
    if query(&params, "key") != Some(WEB_API_KEY) {
        return (StatusCode::FORBIDDEN, "<html><head><title>Forbidden</title></head><body><h1>Forbidden</h1>Access is denied. Retrying will not help. Please verify your <pre>key=</pre> parameter.</body></html>").into_response();
    }
    let error = |code: u32, description: &str| {
        Json(json!({"response": {"error": {"errorcode": code, "errordesc": description}}})).into_response()
    };
    let (Some(app_id), Some(ticket)) = (query(&params, "appid"), query(&params, "ticket")) else {
        return error(3, "Invalid parameter");
    };
    let Some(issued) = inner.tickets.get(&ticket.to_ascii_lowercase()).cloned() else {
        return error(101, "Invalid ticket");
    };
    if app_id != issued.app_id.to_string() {
        return error(102, "Ticket for other app");
    }
    if query(&params, "identity").unwrap_or_default() != issued.identity {
        return error(101, "Invalid ticket");
    }
    Json(json!({"response": {"params": {
        "result": "OK", "steamid": issued.steam_id.to_string(), "ownersteamid": issued.steam_id.to_string(),
        "vacbanned": false, "publisherbanned": issued.publisher_banned,
    }}}))
    .into_response()
}

/// When report times start (the stand-in's clock counts seconds from here).
const REPORT_EPOCH_S: i64 = 1_796_083_200; // 2026-12-01T00:00:00Z

fn report_time(clock: u64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(REPORT_EPOCH_S + i64::try_from(clock).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn ok(params: serde_json::Value) -> Response {
    Json(json!({"response": {"result": "OK", "params": params}})).into_response()
}

fn failure(code: u32, description: &str) -> Response {
    Json(json!({"response": {"result": "Failure", "error": {"errorcode": code, "errordesc": description}}}))
        .into_response()
}

impl Txn {
    fn describe(&self) -> serde_json::Value {
        json!({
            "orderid": self.order_id.to_string(), "transid": self.trans_id.to_string(),
            "steamid": self.steam_id.to_string(), "status": self.status, "currency": self.currency,
            "time": report_time(self.changed), "country": "US", "usstate": "WA",
            "timecreated": report_time(self.created), "items": self.items,
        })
    }
}

impl Inner {
    fn next_fault(&mut self, method: &str) -> Option<Fault> {
        let faults = self.faults.get_mut(method)?;
        (!faults.is_empty()).then(|| faults.remove(0))
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn txn(&mut self, interface: &str, by: &str, id: u64) -> Option<&mut Txn> {
        self.txns.iter_mut().find(|txn| {
            txn.interface == interface
                && if by == "transid" { txn.trans_id == id } else { txn.order_id == id }
        })
    }

    fn set_status(&mut self, order_id: u64, status: &str, item_status: &str) {
        let now = self.tick();
        if let Some(txn) = self.txns.iter_mut().find(|txn| txn.order_id == order_id) {
            txn.status = status.to_owned();
            txn.changed = now;
            for item in &mut txn.items {
                item["itemstatus"] = json!(item_status);
            }
        }
    }
}

async fn microtxn_get(
    State(inner): State<Shared>,
    Path((interface, method, version)): Path<(String, String, String)>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    microtxn(&inner, "GET", &interface, &format!("{method}/{version}"), &params)
}

async fn microtxn_post(
    State(inner): State<Shared>,
    Path((interface, method, version)): Path<(String, String, String)>,
    axum::Form(params): axum::Form<Vec<(String, String)>>,
) -> Response {
    microtxn(&inner, "POST", &interface, &format!("{method}/{version}"), &params)
}

fn microtxn(
    inner: &Shared,
    verb: &str,
    interface: &str,
    method: &str,
    params: &[(String, String)],
) -> Response {
    let mut inner = lock(inner);
    inner.microtxn_calls.push((method.to_owned(), params.to_vec()));
    if !matches!(interface, "ISteamMicroTxn" | "ISteamMicroTxnSandbox") {
        return StatusCode::NOT_FOUND.into_response();
    }
    if query(params, "key") != Some(WEB_API_KEY) {
        return (StatusCode::FORBIDDEN, "<html><head><title>Forbidden</title></head><body><h1>Forbidden</h1>Access is denied. Retrying will not help. Please verify your <pre>key=</pre> parameter.</body></html>").into_response();
    }
    if query(params, "appid") != Some(&APP_ID.to_string()) {
        return failure(2, "Invalid parameter: appid");
    }
    let number = |name: &str| query(params, name).and_then(|value| value.parse::<u64>().ok());
    match (verb, method) {
        ("GET", "GetUserInfo/v2") => {
            let Some(steam_id) = number("steamid") else { return failure(2, "Invalid parameter: steamid") };
            let wallet = inner
                .wallets
                .get(&steam_id)
                .cloned()
                .unwrap_or(Wallet { currency: "USD".to_owned(), status: "Active".to_owned() });
            ok(json!({"state": "WA", "country": "US", "currency": wallet.currency, "status": wallet.status}))
        }
        ("POST", "InitTxn/v3") => {
            let fault = inner.next_fault(method);
            if fault == Some(Fault::Unavailable) {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            let (Some(order_id), Some(steam_id), Some(count)) =
                (number("orderid"), number("steamid"), number("itemcount"))
            else {
                return failure(2, "Invalid parameter");
            };
            let currency = query(params, "currency").unwrap_or_default().to_owned();
            let wallet =
                inner.wallets.get(&steam_id).map_or("USD".to_owned(), |wallet| wallet.currency.clone());
            if currency != wallet {
                return failure(7, "Currency does not match user's Steam Account currency");
            }
            if query(params, "language").is_none_or(str::is_empty) {
                return failure(2, "Invalid parameter: language");
            }
            if inner.txns.iter().any(|txn| txn.interface == interface && txn.order_id == order_id) {
                return failure(1, "Operation failed: duplicate orderid");
            }
            let mut items = Vec::new();
            for index in 0..count {
                let field = |name: &str| query(params, &format!("{name}[{index}]")).map(str::to_owned);
                let (Some(item_id), Some(qty), Some(amount), Some(description)) =
                    (field("itemid"), field("qty"), field("amount"), field("description"))
                else {
                    return failure(2, "Invalid parameter: item");
                };
                let (Ok(item_id), Ok(qty), Ok(amount)) =
                    (item_id.parse::<u32>(), qty.parse::<u32>(), amount.parse::<i64>())
                else {
                    return failure(2, "Invalid parameter: item");
                };
                if description.chars().count() > 128 || amount <= 0 || qty == 0 {
                    return failure(2, "Invalid parameter: item");
                }
                items.push(json!({"itemid": item_id, "qty": qty, "amount": amount, "vat": amount / 10, "itemstatus": "Init"}));
            }
            inner.next += 1;
            let trans_id = 5_405_998_248_779_000_000 + inner.next;
            let now = inner.tick();
            inner.txns.push(Txn {
                interface: interface.to_owned(),
                order_id,
                trans_id,
                steam_id,
                currency,
                status: "Init".to_owned(),
                items,
                created: now,
                changed: now,
            });
            if fault == Some(Fault::AnswerLost) {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            ok(json!({"orderid": order_id.to_string(), "transid": trans_id.to_string()}))
        }
        ("GET", "QueryTxn/v3") => {
            let by = if query(params, "orderid").is_some() { "orderid" } else { "transid" };
            let Some(id) = number(by) else { return failure(2, "Invalid parameter") };
            match inner.txn(interface, by, id) {
                Some(txn) => ok(txn.describe()),
                None => failure(1, "Transaction not found"),
            }
        }
        ("POST", "FinalizeTxn/v2") => {
            let Some(order_id) = number("orderid") else { return failure(2, "Invalid parameter") };
            let fault = inner.next_fault(method);
            if fault == Some(Fault::Unavailable) {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            let Some(txn) = inner.txn(interface, "orderid", order_id) else {
                return failure(1, "Transaction not found");
            };
            match txn.status.as_str() {
                "Approved" => {}
                "Init" => return failure(4, "User has not approved transaction"),
                _ => return failure(5, "Transaction has already been committed"),
            }
            let trans_id = txn.trans_id;
            inner.set_status(order_id, "Succeeded", "Succeeded");
            if fault == Some(Fault::AnswerLost) {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            ok(json!({"orderid": order_id.to_string(), "transid": trans_id.to_string()}))
        }
        ("POST", "RefundTxn/v2") => {
            let fault = inner.next_fault(method);
            if fault == Some(Fault::Unavailable) {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            let Some(order_id) = number("orderid") else { return failure(2, "Invalid parameter") };
            let Some(txn) = inner.txn(interface, "orderid", order_id) else {
                return failure(1, "Transaction not found");
            };
            if txn.status != "Succeeded" {
                return failure(1, "Operation failed: the transaction cannot be refunded");
            }
            let trans_id = txn.trans_id;
            inner.set_status(order_id, "Refunded", "Refunded");
            if fault == Some(Fault::AnswerLost) {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            ok(json!({"orderid": order_id.to_string(), "transid": trans_id.to_string()}))
        }
        ("GET", "GetReport/v5") => {
            let Some(since) = query(params, "time").and_then(|text| {
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
            }) else {
                return failure(2, "Invalid parameter: time");
            };
            let max = number("maxresults").unwrap_or(1_000).min(1_000);
            let since = (since.unix_timestamp() - REPORT_EPOCH_S).max(0);
            let since = u64::try_from(since).unwrap_or(0);
            let mut changed: Vec<&Txn> =
                inner.txns.iter().filter(|txn| txn.interface == interface && txn.changed >= since).collect();
            changed.sort_by_key(|txn| txn.changed);
            let orders: Vec<serde_json::Value> = changed
                .iter()
                .take(usize::try_from(max).unwrap_or(1_000))
                .map(|txn| txn.describe())
                .collect();
            ok(json!({"count": orders.len(), "orders": orders}))
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

impl SteamStandIn {
    /// Starts the stand-in on a free loopback port.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start() -> Self {
        let inner = Shared::default();
        let router = Router::new()
            .route("/ISteamUserAuth/AuthenticateUserTicket/v1/", get(authenticate_user_ticket))
            .route("/{interface}/{method}/{version}/", get(microtxn_get).post(microtxn_post))
            .with_state(inner.clone());
        let (base_url, task) = crate::serve_on_loopback(router).await;
        Self { base_url, inner, task }
    }

    /// Where the API is (`--steam-api-url`).
    #[must_use]
    pub fn api_url(&self) -> &str {
        &self.base_url
    }

    /// The store's settings for this stand-in.
    #[must_use]
    pub fn settings(&self) -> store_server::players::steam::SteamSettings {
        store_server::players::steam::SteamSettings::new(
            self.base_url.clone(),
            WEB_API_KEY.to_owned(),
            APP_ID,
        )
    }

    /// A ticket the Steam client would give the game for `steam_id`, made for `app_id` and
    /// `identity`, hex-encoded as the game sends it.
    pub fn issue_ticket(&self, steam_id: u64, app_id: u32, identity: &str) -> String {
        self.issue(steam_id, app_id, identity, false)
    }

    /// A valid ticket of a player the publisher banned.
    pub fn issue_banned_ticket(&self, steam_id: u64) -> String {
        self.issue(steam_id, APP_ID, store_server::players::steam::TICKET_IDENTITY, true)
    }

    fn issue(&self, steam_id: u64, app_id: u32, identity: &str, publisher_banned: bool) -> String {
        let mut inner = lock(&self.inner);
        inner.next += 1;
        let ticket = format!("14000000{:016x}{:016x}{:08x}", inner.next, steam_id, app_id);
        inner.tickets.insert(
            ticket.clone(),
            Ticket { steam_id, app_id, identity: identity.to_owned(), publisher_banned },
        );
        ticket
    }

    /// How many times the store called Steam.
    #[must_use]
    pub fn calls(&self) -> u64 {
        lock(&self.inner).calls
    }

    /// Sets a player's Steam wallet: its currency and status (`Active`, `Trusted`, `Locked`).
    /// Unknown players have an active wallet in USD.
    pub fn set_wallet(&self, steam_id: u64, currency: &str, status: &str) {
        lock(&self.inner)
            .wallets
            .insert(steam_id, Wallet { currency: currency.to_owned(), status: status.to_owned() });
    }

    /// The player approves the purchase in the overlay (`Init` becomes `Approved`).
    ///
    /// # Panics
    /// When Steam holds no such transaction waiting for approval.
    pub fn authorize(&self, order_id: &str) {
        let mut inner = lock(&self.inner);
        let order_id: u64 = order_id.parse().expect("an orderid");
        let status = inner.txns.iter().find(|txn| txn.order_id == order_id).map(|txn| txn.status.clone());
        assert_eq!(status.as_deref(), Some("Init"), "only an opened transaction is authorized");
        inner.set_status(order_id, "Approved", "Approved");
    }

    /// Steam's support refunds a transaction (the player asked Steam, not the game).
    pub fn refund_by_support(&self, order_id: &str) {
        lock(&self.inner).set_status(order_id.parse().expect("an orderid"), "Refunded", "Refunded");
    }

    /// The card network takes a transaction's money back.
    pub fn charge_back(&self, order_id: &str) {
        lock(&self.inner).set_status(order_id.parse().expect("an orderid"), "Chargedback", "Chargedback");
    }

    /// Changes what Steam reports a transaction's item cost (in hundredths): a transaction that
    /// does not match its order.
    pub fn set_paid_amount(&self, order_id: &str, amount: i64) {
        let mut inner = lock(&self.inner);
        let order_id: u64 = order_id.parse().expect("an orderid");
        if let Some(txn) = inner.txns.iter_mut().find(|txn| txn.order_id == order_id) {
            txn.items[0]["amount"] = json!(amount);
        }
    }

    /// The next calls of `method` (`InitTxn/v3`, `FinalizeTxn/v2`, `RefundTxn/v2`) go wrong, in
    /// this order.
    pub fn fail_next(&self, method: &str, faults: &[Fault]) {
        lock(&self.inner).faults.entry(method.to_owned()).or_default().extend_from_slice(faults);
    }

    /// A transaction as `QueryTxn` describes it, from whichever interface holds it.
    #[must_use]
    pub fn txn(&self, order_id: &str) -> Option<serde_json::Value> {
        let order_id: u64 = order_id.parse().ok()?;
        lock(&self.inner).txns.iter().find(|txn| txn.order_id == order_id).map(Txn::describe)
    }

    /// The interface (`ISteamMicroTxn`, `ISteamMicroTxnSandbox`) that holds a transaction.
    #[must_use]
    pub fn interface_of(&self, order_id: &str) -> Option<String> {
        let order_id: u64 = order_id.parse().ok()?;
        lock(&self.inner).txns.iter().find(|txn| txn.order_id == order_id).map(|txn| txn.interface.clone())
    }

    /// The parameters of every microtransaction call to `method` (`InitTxn/v3`, …), oldest first.
    #[must_use]
    pub fn microtxn_calls(&self, method: &str) -> Vec<Vec<(String, String)>> {
        lock(&self.inner)
            .microtxn_calls
            .iter()
            .filter(|(name, _)| name == method)
            .map(|(_, params)| params.clone())
            .collect()
    }
}
