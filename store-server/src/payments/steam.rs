//! Steam in-game purchases (`ISteamMicroTxn`, Steam's partner Web API) behind the provider trait.
//!
//! An order names `"provider": "steam"` and its buyer is a player logged in with Steam
//! ([`crate::players::steam`]). The flow, as Steamworks' microtransaction guide lays it out:
//!
//! 1. `GetUserInfo` tells the wallet's currency (the order is priced in it, or refused) and
//!    whether the account may buy.
//! 2. `InitTxn` opens the transaction: our 64-bit `orderid` (made from the order id), one item
//!    (`itemid` from the SKU, `qty`, `amount` in hundredths, a description), the currency, the
//!    descriptions' language and `usersession=client`. Steam shows the purchase in the game's
//!    overlay.
//! 3. The game reports the overlay's `MicroTxnAuthorizationResponse_t` to the store, which asks
//!    Steam (`QueryTxn`): an `Approved` transaction is finalized (`FinalizeTxn`, the moment money
//!    moves) and read back, and what Steam says was paid is booked. The game's word decides
//!    nothing but a denial Steam has not recorded (the order fails; no money can move without
//!    `FinalizeTxn`, which the store never calls for it).
//! 4. Before an order expires the sweeper asks the same question, so an authorization whose
//!    report was lost is finalized and fulfilled all the same; a `FinalizeTxn` that failed is
//!    tried again there and at the game's next report.
//! 5. Refunds: `RefundTxn` (whole transactions only). Steam's refunds, chargebacks and fraud
//!    reversals are read from `GetReport` by reconciliation and booked like any provider's
//!    events: one event per transaction and status.
//!
//! Steam has no webhooks and reports no fee: the fee booked is the revenue share configured
//! ([`crate::players::steam::SteamSettings::revenue_share_percent`]) of what was paid. Tax Steam
//! adds or withholds (`vat`) is Steam's to remit and is not booked.

use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use store_api::{ErrorCode, Money, MoneyCurrency};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::payments::provider::{
    BoxFuture, Checkout, CheckoutRequest, EventPage, PaymentProvider, PaymentReport, ProviderEvent,
    RefundAccepted, RefundCall, Refunds, VerifiedEvent, not_confirmed, refused, unavailable,
};
use crate::players::steam::{STEAM_KEY_PREFIX, SteamSettings};

/// The provider's name, in orders and in `POST /v1/orders`.
pub const PROVIDER: &str = "steam";

/// Transactions per `GetReport` page (Steam's maximum).
const REPORT_PAGE: u32 = 1_000;

/// Where a report is first read from, when reconciliation has no cursor yet.
const REPORT_START: &str = "1970-01-01T00:00:00Z";

/// The longest item description `InitTxn` takes, in characters.
const DESCRIPTION_MAX: usize = 128;

/// The Steam microtransaction adapter.
#[derive(Debug, Clone)]
pub struct SteamProvider {
    settings: SteamSettings,
    http: reqwest::Client,
}

/// Steam's `{"response":{"result":"Failure","error":{"errorcode","errordesc"}}}`.
#[derive(Debug, Clone)]
struct Failure {
    code: i64,
    description: String,
}

impl Failure {
    /// Steam's internal error (3) and account temporarily unavailable (8) may pass; the rest
    /// (insufficient funds, a denied or expired transaction, a bad parameter) will not.
    fn error(&self, path: &str) -> ApiError {
        if matches!(self.code, 3 | 8) {
            unavailable(path, &format!("{} {}", self.code, self.description))
        } else {
            tracing::warn!(path, code = self.code, description = %self.description, "Steam refused a call");
            refused(&format!("Steam refused the request: {}", self.description))
        }
    }
}

/// Where a Steam transaction is, as `QueryTxn` reports it.
enum Settled {
    /// Paid (finalized), and possibly refunded or charged back since.
    Paid(PaymentReport),
    /// Opened and not authorized yet.
    Open,
    /// Failed or denied, or unknown to Steam: no money moved.
    Failed,
}

/// Steam's 64-bit `orderid` for an order: the low 62 bits of its (random) last eight bytes, so it
/// is positive in every signed 64-bit column too. Made again from the order id whenever needed.
#[must_use]
pub fn order_id_of(order: Uuid) -> u64 {
    let bytes = order.as_bytes();
    let mut low = [0; 8];
    low.copy_from_slice(&bytes[8..]);
    (u64::from_be_bytes(low) & 0x3FFF_FFFF_FFFF_FFFF).max(1)
}

/// A SKU's `itemid` (a 32-bit number of the game's choosing that Steam's reports group by).
fn item_id_of(sku: &str) -> u32 {
    let digest = Sha256::digest(sku.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// An amount as Steam writes it: hundredths of the currency's unit, for every currency.
fn hundredths(money: Money) -> Option<i64> {
    let scaled = money.amount.checked_mul(Decimal::from(100))?;
    if scaled.fract().is_zero() { scaled.to_i64() } else { None }
}

fn money_of(currency: MoneyCurrency, hundredths: i64) -> Money {
    Money { currency, amount: Decimal::new(hundredths, 2) }
}

/// The SteamID in a Steam player's identity key `steam:<app>:<SteamID>`, for this app.
fn steam_id_of(payer: Option<&str>, app_id: u32) -> ApiResult<u64> {
    payer
        .and_then(|key| key.strip_prefix(STEAM_KEY_PREFIX))
        .and_then(|rest| rest.split_once(':'))
        .filter(|(app, _)| app.parse::<u32>().ok() == Some(app_id))
        .and_then(|(_, steam_id)| steam_id.parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::WrongCredentialKind,
                "a Steam order is for a player logged in with Steam (POST /v1/auth/steam) in this game",
            )
        })
}

fn text(params: &Value, field: &str) -> Option<String> {
    match &params[field] {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn number(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| value.as_str().and_then(|text| text.parse().ok()))
}

impl SteamProvider {
    /// An adapter with these settings.
    #[must_use]
    pub fn new(settings: SteamSettings) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap_or_default();
        Self { settings, http }
    }

    fn interface(&self) -> &'static str {
        if self.settings.microtxn_sandbox { "ISteamMicroTxnSandbox" } else { "ISteamMicroTxn" }
    }

    /// Calls `method` of the microtransaction interface with the publisher key and App ID: a
    /// `GET` with a query, a `POST` with a form. `Ok(Err(_))` is Steam's `Failure`.
    async fn call(
        &self,
        verb: Method,
        method: &str,
        mut params: Vec<(&str, String)>,
    ) -> ApiResult<Result<Value, Failure>> {
        let path = format!("/{}/{method}/", self.interface());
        params.push(("key", self.settings.web_api_key.clone()));
        params.push(("appid", self.settings.app_id.to_string()));
        let url = format!("{}{path}", self.settings.api_url.trim_end_matches('/'));
        let request = if verb == Method::GET {
            self.http.get(url).query(&params)
        } else {
            self.http.post(url).form(&params)
        };
        let response =
            request.send().await.map_err(|error| unavailable(&path, &format!("unreachable: {error}")))?;
        let status = response.status();
        if !status.is_success() {
            // Steam answers 403 to a wrong key and 5xx on its side: neither is the player's fault.
            return Err(unavailable(&path, &format!("answered {status}")));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|error| unavailable(&path, &format!("unreadable answer: {error}")))?;
        let answer = &body["response"];
        match answer["result"].as_str() {
            Some("OK") => Ok(Ok(answer["params"].clone())),
            Some("Failure") => Ok(Err(Failure {
                code: number(&answer["error"]["errorcode"]).unwrap_or(0),
                description: answer["error"]["errordesc"].as_str().unwrap_or("no description").to_owned(),
            })),
            _ => Err(unavailable(&path, "an answer without a result")),
        }
    }

    /// `QueryTxn` by our `orderid` or by Steam's `transid`; `None` when Steam knows no such
    /// transaction.
    async fn query(&self, by: (&str, String)) -> ApiResult<Option<Value>> {
        Ok(self.call(Method::GET, "QueryTxn/v3", vec![by]).await?.ok())
    }

    /// What a transaction (as `QueryTxn` or `GetReport` describes it) paid, with the fee.
    fn report(&self, txn: &Value) -> ApiResult<PaymentReport> {
        let path = "/QueryTxn/";
        let order_id =
            text(txn, "orderid").ok_or_else(|| unavailable(path, "a transaction without orderid"))?;
        let transid =
            text(txn, "transid").ok_or_else(|| unavailable(path, "a transaction without transid"))?;
        let currency = txn["currency"]
            .as_str()
            .and_then(|code| MoneyCurrency::parse(code).ok())
            .ok_or_else(|| unavailable(path, "a transaction in a currency this store does not know"))?;
        let mut paid: i64 = 0;
        for item in txn["items"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let amount =
                number(&item["amount"]).ok_or_else(|| unavailable(path, "an item without amount"))?;
            paid = paid.checked_add(amount).ok_or_else(|| unavailable(path, "an amount out of range"))?;
        }
        let amount = money_of(currency, paid);
        let fee = crate::payments::fees::share(amount, Decimal::from(self.settings.revenue_share_percent));
        Ok(PaymentReport {
            session_id: order_id.clone(),
            payment_id: transid,
            reference: order_id,
            amount,
            fee,
        })
    }

    /// Asks Steam where an order's transaction is, finalizing it first when the player
    /// authorized it: `FinalizeTxn` is where the money moves, so a transaction still `Approved`
    /// after it is an error, tried again later.
    async fn settle(&self, order_id: &str) -> ApiResult<Settled> {
        let Some(txn) = self.query(("orderid", order_id.to_owned())).await? else {
            return Ok(Settled::Failed);
        };
        let txn = if txn["status"].as_str() == Some("Approved") {
            let finalized =
                self.call(Method::POST, "FinalizeTxn/v2", vec![("orderid", order_id.to_owned())]).await;
            // Whatever FinalizeTxn answered (or if it was lost on the way), Steam's record decides.
            let read_back = self.query(("orderid", order_id.to_owned())).await?;
            match read_back {
                Some(txn) if txn["status"].as_str() != Some("Approved") => txn,
                _ => {
                    return Err(match finalized {
                        Ok(Err(failure)) => failure.error("/FinalizeTxn/"),
                        Err(error) => error,
                        Ok(Ok(_)) => unavailable("/FinalizeTxn/", "finalized, yet still approved"),
                    });
                }
            }
        } else {
            txn
        };
        match txn["status"].as_str() {
            Some(
                "Succeeded"
                | "Refunded"
                | "PartialRefund"
                | "Chargedback"
                | "RefundedSuspectedFraud"
                | "RefundedFriendlyFraud",
            ) => Ok(Settled::Paid(self.report(&txn)?)),
            Some("Init" | "Approved") => Ok(Settled::Open),
            _ => Ok(Settled::Failed),
        }
    }

    /// A `GetReport` transaction as the events it stands for: one per transaction and status.
    fn report_event(&self, txn: &Value) -> ApiResult<VerifiedEvent> {
        let path = "/GetReport/";
        let status = txn["status"].as_str().unwrap_or_default().to_owned();
        let order_id =
            text(txn, "orderid").ok_or_else(|| unavailable(path, "a transaction without orderid"))?;
        let transid =
            text(txn, "transid").ok_or_else(|| unavailable(path, "a transaction without transid"))?;
        let event = match status.as_str() {
            "Succeeded" => ProviderEvent::SessionPaid { session_id: order_id },
            "Failed" => {
                ProviderEvent::PaymentFailed { session_id: order_id, reason: "steam_failed".to_owned() }
            }
            "Refunded" | "PartialRefund" => {
                let paid = self.report(txn)?;
                let refunded: i64 = txn["items"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .filter(|item| status == "Refunded" || item["itemstatus"].as_str() == Some("Refunded"))
                    .filter_map(|item| number(&item["amount"]))
                    .sum();
                ProviderEvent::RefundedAtProvider {
                    provider_refund_id: refund_id_of(&transid),
                    payment_id: transid.clone(),
                    amount: money_of(paid.amount.currency, refunded),
                }
            }
            // A chargeback, and Steam's own reversals of fraud, take the money back: a lost dispute.
            "Chargedback" | "RefundedSuspectedFraud" | "RefundedFriendlyFraud" => {
                ProviderEvent::PaymentDisputed { payment_id: transid.clone(), amount: None }
            }
            _ => ProviderEvent::Ignored,
        };
        Ok(VerifiedEvent {
            id: format!("{transid}:{status}"),
            event_type: format!("GetReport {status}"),
            event,
        })
    }
}

/// The one refund Steam makes of a transaction (it refunds whole transactions): booked once,
/// whether the store asked for it (`RefundTxn`) or Steam's support made it.
fn refund_id_of(transid: &str) -> String {
    format!("steam-refund:{transid}")
}

impl PaymentProvider for SteamProvider {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn reference_for(&self, order_id: Uuid) -> String {
        order_id_of(order_id).to_string()
    }

    fn needs_platform_login(&self) -> bool {
        true
    }

    fn refunds(&self) -> Refunds {
        Refunds::WholePayments
    }

    fn payer_currency<'a>(&'a self, payer: &'a str) -> BoxFuture<'a, ApiResult<Option<MoneyCurrency>>> {
        Box::pin(async move {
            let steam_id = steam_id_of(Some(payer), self.settings.app_id)?;
            let info = self
                .call(Method::GET, "GetUserInfo/v2", vec![("steamid", steam_id.to_string())])
                .await?
                .map_err(|failure| failure.error("/GetUserInfo/"))?;
            if info["status"].as_str() == Some("Locked") {
                return Err(refused("Steam does not let this account make purchases"));
            }
            let code = info["currency"].as_str().unwrap_or_default();
            MoneyCurrency::parse(code).map(Some).map_err(|_| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    ErrorCode::OfferNotAvailable,
                    format!("this store has no prices in {code}, the player's Steam wallet currency"),
                )
                .with_detail("reason", "currency")
            })
        })
    }

    fn create_checkout<'a>(&'a self, request: &'a CheckoutRequest) -> BoxFuture<'a, ApiResult<Checkout>> {
        Box::pin(async move {
            let steam_id = steam_id_of(request.payer.as_deref(), self.settings.app_id)?;
            let order = Uuid::parse_str(&request.reference).map_err(|_| {
                ApiError::Internal(anyhow::anyhow!("an order reference that is not an order id"))
            })?;
            let order_id = order_id_of(order).to_string();
            let amount = hundredths(request.amount).ok_or_else(|| {
                ApiError::invalid(
                    "amount",
                    format!("Steam charges whole hundredths; {} is not", request.amount),
                )
            })?;
            let description: String = request.description.chars().take(DESCRIPTION_MAX).collect();
            let params = vec![
                ("orderid", order_id.clone()),
                ("steamid", steam_id.to_string()),
                ("itemcount", "1".to_owned()),
                ("language", self.settings.language.clone()),
                ("currency", request.amount.currency.code().to_owned()),
                ("usersession", "client".to_owned()),
                ("itemid[0]", item_id_of(&request.sku).to_string()),
                ("qty[0]", request.quantity.to_string()),
                ("amount[0]", amount.to_string()),
                ("description[0]", description),
            ];
            match self.call(Method::POST, "InitTxn/v3", params).await? {
                Ok(_) => {}
                Err(failure) => {
                    // A retry of an order whose InitTxn went through (the answer was lost): the
                    // transaction Steam holds is this one if it charges this player this amount.
                    let opened = self.query(("orderid", order_id.clone())).await?.filter(|txn| {
                        text(txn, "steamid") == Some(steam_id.to_string())
                            && txn["currency"].as_str() == Some(request.amount.currency.code())
                            && self.report(txn).is_ok_and(|report| {
                                report.amount == money_of(request.amount.currency, amount)
                            })
                    });
                    if opened.is_none() {
                        return Err(failure.error("/InitTxn/"));
                    }
                }
            }
            Ok(Checkout { id: order_id, checkout_url: String::new() })
        })
    }

    fn refund<'a>(&'a self, call: &'a RefundCall) -> BoxFuture<'a, ApiResult<RefundAccepted>> {
        Box::pin(async move {
            let txn = self
                .query(("transid", call.payment_id.clone()))
                .await?
                .ok_or_else(|| refused("Steam knows no such transaction"))?;
            let paid = self.report(&txn)?;
            if paid.amount != call.amount {
                return Err(refused("Steam refunds whole transactions only"));
            }
            let accepted = RefundAccepted { id: refund_id_of(&call.payment_id) };
            if matches!(txn["status"].as_str(), Some("Refunded")) {
                return Ok(accepted); // Refunded already (a retry, or Steam's support was first).
            }
            self.call(Method::POST, "RefundTxn/v2", vec![("orderid", paid.session_id)])
                .await?
                .map_err(|failure| failure.error("/RefundTxn/"))?;
            Ok(accepted)
        })
    }

    fn verify_webhook(&self, _headers: &HeaderMap, _body: &[u8], _now_s: i64) -> ApiResult<VerifiedEvent> {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::RouteNotFound,
            "Steam sends no webhooks: its reports are read by reconciliation",
        ))
    }

    fn events_since<'a>(&'a self, cursor: Option<&'a str>) -> BoxFuture<'a, ApiResult<EventPage>> {
        Box::pin(async move {
            let params = vec![
                ("type", "GAMESALES".to_owned()),
                ("time", cursor.unwrap_or(REPORT_START).to_owned()),
                ("maxresults", REPORT_PAGE.to_string()),
            ];
            let report = self
                .call(Method::GET, "GetReport/v5", params)
                .await?
                .map_err(|failure| failure.error("/GetReport/"))?;
            let orders = report["orders"].as_array().cloned().unwrap_or_default();
            // `time` is when a transaction last changed; the next page starts at the latest seen
            // (inclusive: what is read twice is a duplicate by event id).
            let next_cursor = orders.iter().filter_map(|txn| txn["time"].as_str()).max().map(str::to_owned);
            Ok(EventPage { events: orders.iter().map(|txn| self.report_event(txn)).collect(), next_cursor })
        })
    }

    fn session_payment<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, ApiResult<Option<PaymentReport>>> {
        Box::pin(async move {
            Ok(match self.settle(session_id).await? {
                Settled::Paid(report) => Some(report),
                Settled::Open | Settled::Failed => None,
            })
        })
    }

    fn client_authorization<'a>(
        &'a self,
        session_id: &'a str,
        authorized: bool,
    ) -> BoxFuture<'a, ApiResult<Vec<ProviderEvent>>> {
        Box::pin(async move {
            let failed = |reason: &str| {
                vec![ProviderEvent::PaymentFailed {
                    session_id: session_id.to_owned(),
                    reason: reason.to_owned(),
                }]
            };
            match self.settle(session_id).await? {
                Settled::Paid(report) => Ok(vec![ProviderEvent::PaymentSucceeded(report)]),
                Settled::Open if authorized => Err(not_confirmed(&format!(
                    "Steam has not recorded the authorization of order {session_id}"
                ))),
                Settled::Open => Ok(failed("authorization_denied")),
                Settled::Failed => Ok(failed("steam_failed")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steam_amounts_are_hundredths_of_every_currency() {
        let money = |code: &str, amount: &str| Money {
            currency: MoneyCurrency::parse(code).unwrap(),
            amount: amount.parse().unwrap(),
        };
        assert_eq!(hundredths(money("USD", "0.99")), Some(99));
        assert_eq!(hundredths(money("USD", "5")), Some(500));
        assert_eq!(hundredths(money("JPY", "120")), Some(12_000));
        assert_eq!(hundredths(money("USD", "0.055")), None);
        assert_eq!(money_of(MoneyCurrency::parse("USD").unwrap(), 1_299), money("USD", "12.99"));
    }

    #[test]
    fn an_order_id_is_a_positive_63_bit_number_that_never_changes() {
        let order = Uuid::parse_str("01890a5d-ac96-774b-bcce-b302099a8057").unwrap();
        let id = order_id_of(order);
        assert_eq!(id, order_id_of(order));
        assert!(i64::try_from(id).is_ok());
        assert_ne!(id, order_id_of(Uuid::now_v7()));
    }

    #[test]
    fn only_this_app_s_steam_players_can_pay_with_steam() {
        assert_eq!(steam_id_of(Some("steam:480:76561197960287930"), 480).unwrap(), 76_561_197_960_287_930);
        for payer in [None, Some("steam:481:76561197960287930"), Some("sha256:abcd"), Some("steam:480:x")] {
            assert_eq!(steam_id_of(payer, 480).unwrap_err().code(), ErrorCode::WrongCredentialKind);
        }
    }
}
