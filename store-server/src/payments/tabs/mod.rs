//! Tabs: real-money micro-charges collected into one card charge.
//!
//! A tab-priced purchase is bought like a virtual one (`POST /v1/purchases`): in one
//! transaction the item is granted, the amount is added to the player's open tab, and the
//! ledger moves it from the tab receivable account to revenue. `POST /v1/tab/settle` opens one
//! order for the tab; when it is paid, the money clears the receivable.
//!
//! Rounding rule: a card is charged whole minor units, so a settlement charges the tab's amount
//! rounded **down** to the currency's minor unit, and the remainder (less than one cent) stays
//! owed: it is carried into the next tab, where it is charged with the next settlement. The tab
//! receivable account's balance always equals minus what open tabs hold, so nothing is lost.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use rust_decimal::{Decimal, RoundingStrategy};
use sqlx::AnyConnection;
use store_api::admin::AgeBand;
use store_api::catalog::Sku;
use store_api::ledger::EntryKind;
use store_api::orders::{AdminTab, Order, Tab, TabItem};
use store_api::{ErrorCode, Money, MoneyCurrency};
use uuid::Uuid;

use crate::db::{from_micros, now_micros};
use crate::error::{ApiError, ApiResult};
use crate::ledger::idempotency::MoneyOp;
use crate::ledger::{AccountId, NewEntry, Posting, SystemAccount, append_entry, lock_player};
use crate::payments::Payments;
use crate::payments::provider::Checkout;

pub mod settlement;

pub use settlement::*;

/// A stored tab.
#[derive(Debug, Clone)]
pub struct TabRow {
    /// The tab.
    pub id: Uuid,
    /// Its player.
    pub player_id: Uuid,
    /// Its currency.
    pub currency: MoneyCurrency,
    status: String,
    /// What the player owes on it, in micros.
    pub amount_micros: i64,
    carried_in_micros: i64,
    item_count: i64,
    opened_at: i64,
    settle_order_id: Option<String>,
    charged_micros: Option<i64>,
}

impl TabRow {
    /// A tab opened now (`now`, micros) with `carried_in_micros` owed from the one before.
    fn opened(player_id: Uuid, currency: MoneyCurrency, carried_in_micros: i64, now: i64) -> Self {
        Self {
            id: Uuid::now_v7(),
            player_id,
            currency,
            status: "open".to_owned(),
            amount_micros: carried_in_micros,
            carried_in_micros,
            item_count: 0,
            opened_at: now,
            settle_order_id: None,
            charged_micros: None,
        }
    }

    /// A new tab, as the set path opens one in memory (written with its batch).
    pub(crate) fn new_open(player_id: Uuid, currency: MoneyCurrency, now: i64) -> Self {
        Self::opened(player_id, currency, 0, now)
    }

    /// Units bought on the tab.
    pub(crate) fn item_count(&self) -> i64 {
        self.item_count
    }

    /// When it opened (micros).
    pub(crate) fn opened_at(&self) -> i64 {
        self.opened_at
    }

    /// Adds a purchase's charge and units, as [`add_to_tab`] does in the database.
    pub(crate) fn add(&mut self, charge_micros: i64, quantity: i64) {
        self.amount_micros += charge_micros;
        self.item_count += quantity;
    }
}

/// A tab's row as selected with [`TAB_COLUMNS`].
pub(crate) type TabTuple = (String, String, String, String, i64, i64, i64, i64, Option<String>, Option<i64>);

/// The columns of a tab's row, in [`TabTuple`]'s order.
pub(crate) const TAB_COLUMNS: &str = "id, player_id, currency, status, amount_micros, carried_in_micros, item_count, opened_at, settle_order_id, charged_micros";

/// A stored tab from its row.
pub(crate) fn tab_from(row: TabTuple) -> ApiResult<TabRow> {
    let (
        id,
        player_id,
        currency,
        status,
        amount_micros,
        carried_in_micros,
        item_count,
        opened_at,
        settle_order_id,
        charged_micros,
    ) = row;
    let corrupt = |error: String| ApiError::Internal(anyhow::anyhow!("stored tab: {error}"));
    Ok(TabRow {
        id: Uuid::parse_str(&id).map_err(|error| corrupt(error.to_string()))?,
        player_id: Uuid::parse_str(&player_id).map_err(|error| corrupt(error.to_string()))?,
        currency: MoneyCurrency::parse(&currency).map_err(corrupt)?,
        status,
        amount_micros,
        carried_in_micros,
        item_count,
        opened_at,
        settle_order_id,
        charged_micros,
    })
}

/// The player's open or settling tab in `currency`, if any.
///
/// # Errors
/// Fails when the database does.
pub async fn current_tab(
    conn: &mut AnyConnection,
    player_id: Uuid,
    currency: MoneyCurrency,
) -> ApiResult<Option<TabRow>> {
    let row: Option<TabTuple> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {TAB_COLUMNS} from tab where player_id = $1 and currency = $2 and status in ('open', 'settling')"
    )))
    .bind(player_id.to_string())
    .bind(currency.code())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(tab_from).transpose()
}

async fn open_tab(
    conn: &mut AnyConnection,
    player_id: Uuid,
    currency: MoneyCurrency,
    carried_in_micros: i64,
) -> ApiResult<TabRow> {
    let tab = TabRow::opened(player_id, currency, carried_in_micros, now_micros());
    sqlx::query(
        "insert into tab (id, player_id, currency, status, amount_micros, carried_in_micros, opened_at) \
         values ($1, $2, $3, 'open', $4, $4, $5)",
    )
    .bind(tab.id.to_string())
    .bind(player_id.to_string())
    .bind(currency.code())
    .bind(carried_in_micros)
    .bind(tab.opened_at)
    .execute(&mut *conn)
    .await?;
    Ok(tab)
}

/// What a card would be charged to settle `amount_micros`: rounded down to whole minor units.
#[must_use]
pub fn settle_amount(currency: MoneyCurrency, amount_micros: i64) -> Money {
    let exact = Money::from_micros(currency, amount_micros);
    Money {
        currency,
        amount: exact
            .amount
            .round_dp_with_strategy(currency.minor_units(), RoundingStrategy::ToZero)
            .normalize(),
    }
}

/// Whether the player settled a tab before (the larger credit limit).
async fn settled_before(conn: &mut AnyConnection, player_id: Uuid) -> ApiResult<bool> {
    // A settlement charged back earns nothing: the player never gets the larger limit again.
    let settled: Option<i64> = sqlx::query_scalar(
        "select 1 from tab where player_id = $1 and status = 'settled' \
         and not exists (select 1 from payment_order o where o.player_id = $1 and o.tab_id is not null \
         and o.status in ('disputed', 'charged_back')) limit 1",
    )
    .bind(player_id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(settled.is_some())
}

fn settlement_required(reason: &str, message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, ErrorCode::TabSettlementRequired, message)
        .with_detail("reason", reason)
}

/// Checks that `charge` may be added to the player's tab and returns the tab to add it to
/// (opening one if needed).
///
/// A tab is real money spent on credit: a flagged player gets none, and what the tab owes
/// counts against the player's spending limits like an order.
///
/// # Errors
/// `player_flagged`; `spending_limit_exceeded`; `tab_settlement_required` when the tab is
/// settling, at its threshold, past its time limit, or would pass the player's credit limit.
pub async fn tab_for_charge(
    conn: &mut AnyConnection,
    state: &Payments,
    player_id: Uuid,
    age_band: AgeBand,
    charge: Money,
) -> ApiResult<TabRow> {
    crate::payments::orders::refuse_if_flagged(conn, player_id).await?;
    let tab = match current_tab(conn, player_id, charge.currency).await? {
        Some(tab) => tab,
        None => open_tab(conn, player_id, charge.currency, 0).await?,
    };
    let settled_before = settled_before(conn, player_id).await?;
    let now = crate::db::now();
    let spent = crate::payments::orders::spent_since(conn, player_id, charge.currency, now).await?;
    check_charge(state.settings(), &tab, age_band, settled_before, charge, now, spent)?;
    Ok(tab)
}

/// Whether `charge` may go on `tab` at `now`, for a player who has (or has not) settled a tab
/// before and whose orders count `spent` (today, this month, micros) against the spending
/// limits: the rules themselves, shared by the per-request and the set path.
///
/// # Errors
/// As [`tab_for_charge`], but `player_flagged`.
pub(crate) fn check_charge(
    settings: &crate::settings::Settings,
    tab: &TabRow,
    age_band: AgeBand,
    settled_before: bool,
    charge: Money,
    now: time::OffsetDateTime,
    spent: (i64, i64),
) -> ApiResult<()> {
    let tabs = &settings.tabs;
    if tab.status == "settling" {
        return Err(settlement_required(
            "settling",
            "the tab's settlement is waiting for payment".to_owned(),
        ));
    }
    let threshold = tabs.threshold(charge.currency).to_micros().map_err(|error| anyhow::anyhow!(error))?;
    if tab.amount_micros >= threshold {
        return Err(settlement_required(
            "threshold",
            format!("the tab has reached {}; settle it first", tabs.threshold(charge.currency)),
        ));
    }
    let age_micros = crate::db::to_micros(now) - tab.opened_at;
    if age_micros > i64::try_from(tabs.time_limit.as_micros()).unwrap_or(i64::MAX) && tab.item_count > 0 {
        return Err(settlement_required("age", "the tab is past its time limit; settle it first".to_owned()));
    }
    let limit = settings.credit_limit(charge.currency, age_band, settled_before);
    let charge_micros = charge.to_micros().map_err(|error| anyhow::anyhow!(error))?;
    let owed = Money::from_micros(charge.currency, tab.amount_micros + charge_micros);
    crate::payments::orders::spending_check(settings, age_band, charge, owed, now, spent)?;
    if tab.amount_micros + charge_micros > limit.to_micros().map_err(|error| anyhow::anyhow!(error))? {
        return Err(settlement_required(
            "credit_limit",
            format!("this would take the tab past the credit limit of {limit}"),
        )
        .with_detail("credit_limit", limit.amount_text()));
    }
    Ok(())
}

/// Adds a purchase to a tab (after [`tab_for_charge`] approved it).
///
/// # Errors
/// Fails when the database does.
pub async fn add_to_tab(
    conn: &mut AnyConnection,
    tab: &TabRow,
    purchase_id: Uuid,
    sku: &Sku,
    quantity: i64,
    charge_micros: i64,
) -> ApiResult<()> {
    sqlx::query(
        "update tab set amount_micros = amount_micros + $2, item_count = item_count + $3 where id = $1",
    )
    .bind(tab.id.to_string())
    .bind(charge_micros)
    .bind(quantity)
    .execute(&mut *conn)
    .await?;
    sqlx::query("insert into tab_item (id, tab_id, purchase_id, sku, quantity, amount_micros, created_at) values ($1, $2, $3, $4, $5, $6, $7)")
        .bind(Uuid::now_v7().to_string())
        .bind(tab.id.to_string())
        .bind(purchase_id.to_string())
        .bind(sku.as_str())
        .bind(quantity)
        .bind(charge_micros)
        .bind(now_micros())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The tab as a player sees it.
///
/// # Errors
/// Fails when the database does.
pub async fn tab_view(
    conn: &mut AnyConnection,
    state: &Payments,
    tab: &TabRow,
    age_band: AgeBand,
) -> ApiResult<Tab> {
    let settings = &state.settings().tabs;
    let threshold = settings.threshold(tab.currency);
    let credit_limit =
        state.settings().credit_limit(tab.currency, age_band, settled_before(conn, tab.player_id).await?);
    let settle_by_micros =
        tab.opened_at.saturating_add(i64::try_from(settings.time_limit.as_micros()).unwrap_or(i64::MAX / 2));
    let amount = Money::from_micros(tab.currency, tab.amount_micros);
    let required = tab.status == "settling"
        || amount.amount >= threshold.amount
        || (now_micros() > settle_by_micros && tab.item_count > 0);
    Ok(Tab {
        id: tab.id,
        status: tab.status.clone(),
        amount,
        carried_in: Money::from_micros(tab.currency, tab.carried_in_micros),
        item_count: tab.item_count,
        opened_at: from_micros(tab.opened_at),
        threshold,
        credit_limit,
        settle_by: from_micros(settle_by_micros),
        settlement_required: required,
        settle_amount: settle_amount(tab.currency, tab.amount_micros),
        settle_order_id: tab.settle_order_id.as_deref().and_then(|id| Uuid::parse_str(id).ok()),
    })
}

/// The player's open and settling tabs.
///
/// # Errors
/// Fails when the database does.
pub async fn player_tabs(conn: &mut AnyConnection, state: &Payments, player_id: Uuid) -> ApiResult<Vec<Tab>> {
    let rows: Vec<TabTuple> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {TAB_COLUMNS} from tab where player_id = $1 and status in ('open', 'settling') order by currency"
    )))
    .bind(player_id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    let age_band = crate::ledger::age_band_of(conn, player_id).await?;
    let mut tabs = Vec::new();
    for row in rows {
        tabs.push(tab_view(conn, state, &tab_from(row)?, age_band).await?);
    }
    Ok(tabs)
}

/// Tabs for operators, newest first, with their items, age and the fee saved.
///
/// # Errors
/// Fails when the database does.
pub async fn admin_tabs(
    conn: &mut AnyConnection,
    state: &Payments,
    page: &crate::extract::Page,
) -> ApiResult<(Vec<AdminTab>, Option<String>)> {
    let rows: Vec<TabTuple> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {TAB_COLUMNS} from tab where id < $1 order by id desc limit $2"
    )))
    .bind(page.cursor.clone().unwrap_or_else(|| "~".to_owned()))
    .bind(page.fetch_count())
    .fetch_all(&mut *conn)
    .await?;
    let tabs = rows.into_iter().map(tab_from).collect::<ApiResult<Vec<_>>>()?;
    let (tabs, next) = page.finish(tabs, |tab| tab.id.to_string());
    let fees = &state.settings().sandbox_fees;
    let mut out = Vec::new();
    for tab in tabs {
        let items: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "select sku, quantity, amount_micros, created_at from tab_item where tab_id = $1 order by id",
        )
        .bind(tab.id.to_string())
        .fetch_all(&mut *conn)
        .await?;
        let items = items
            .into_iter()
            .map(|(sku, quantity, amount, created_at)| {
                Ok(TabItem {
                    sku: Sku::parse(&sku).map_err(|error| anyhow::anyhow!(error))?,
                    quantity,
                    amount: Money::from_micros(tab.currency, amount),
                    created_at: from_micros(created_at),
                })
            })
            .collect::<ApiResult<Vec<_>>>()?;
        let separately: Decimal = items.iter().map(|item| fees.fee_uncapped(item.amount).amount).sum();
        let charged = tab.charged_micros.map(|micros| Money::from_micros(tab.currency, micros));
        let together =
            fees.fee(charged.unwrap_or_else(|| settle_amount(tab.currency, tab.amount_micros))).amount;
        let fee_saved =
            Money { currency: tab.currency, amount: (separately - together).max(Decimal::ZERO).normalize() };
        let age_band = crate::ledger::age_band_of(conn, tab.player_id).await?;
        let view = tab_view(conn, state, &tab, age_band).await?;
        out.push(AdminTab {
            tab: view,
            player_id: tab.player_id,
            age_s: (now_micros() - tab.opened_at) / 1_000_000,
            items,
            charged,
            fee_saved,
        });
    }
    Ok((out, next))
}

/// A request for settling, as an order-shaped request for the shared pricing code.
#[must_use]
pub fn describe(tab: &TabRow) -> String {
    format!("Tab: {} items", tab.item_count)
}
