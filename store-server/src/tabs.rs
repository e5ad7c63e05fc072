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
use store_api::catalog::Sku;
use store_api::ledger::EntryKind;
use store_api::orders::{AdminTab, Order, Tab, TabItem};
use store_api::{ErrorCode, Money, MoneyCurrency};
use uuid::Uuid;

use crate::app::AppState;
use crate::db::{from_micros, now_micros};
use crate::error::{ApiError, ApiResult};
use crate::idempotency::MoneyOp;
use crate::ledger::{AccountId, NewEntry, Posting, SystemAccount, append_entry, lock_player};
use crate::payments::Checkout;

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

type TabTuple = (String, String, String, String, i64, i64, i64, i64, Option<String>, Option<i64>);

const TAB_COLUMNS: &str = "id, player_id, currency, status, amount_micros, carried_in_micros, item_count, opened_at, settle_order_id, charged_micros";

fn tab_from(row: TabTuple) -> ApiResult<TabRow> {
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
    let id = Uuid::now_v7();
    let now = now_micros();
    sqlx::query(
        "insert into tab (id, player_id, currency, status, amount_micros, carried_in_micros, opened_at) \
         values ($1, $2, $3, 'open', $4, $4, $5)",
    )
    .bind(id.to_string())
    .bind(player_id.to_string())
    .bind(currency.code())
    .bind(carried_in_micros)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(TabRow {
        id,
        player_id,
        currency,
        status: "open".to_owned(),
        amount_micros: carried_in_micros,
        carried_in_micros,
        item_count: 0,
        opened_at: now,
        settle_order_id: None,
        charged_micros: None,
    })
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
    state: &AppState,
    player_id: Uuid,
    minor: bool,
    charge: Money,
) -> ApiResult<TabRow> {
    crate::orders::refuse_if_flagged(conn, player_id).await?;
    let tab = match current_tab(conn, player_id, charge.currency).await? {
        Some(tab) => tab,
        None => open_tab(conn, player_id, charge.currency, 0).await?,
    };
    let settings = &state.settings().tabs;
    if tab.status == "settling" {
        return Err(settlement_required(
            "settling",
            "the tab's settlement is waiting for payment".to_owned(),
        ));
    }
    let threshold =
        settings.threshold(charge.currency).to_micros().map_err(|error| anyhow::anyhow!(error))?;
    if tab.amount_micros >= threshold {
        return Err(settlement_required(
            "threshold",
            format!("the tab has reached {}; settle it first", settings.threshold(charge.currency)),
        ));
    }
    let age_micros = now_micros() - tab.opened_at;
    if age_micros > i64::try_from(settings.time_limit.as_micros()).unwrap_or(i64::MAX) && tab.item_count > 0 {
        return Err(settlement_required("age", "the tab is past its time limit; settle it first".to_owned()));
    }
    let limit = settings.credit_limit(charge.currency, minor, settled_before(conn, player_id).await?);
    let charge_micros = charge.to_micros().map_err(|error| anyhow::anyhow!(error))?;
    let owed = Money::from_micros(charge.currency, tab.amount_micros + charge_micros);
    crate::orders::check_spending(conn, state, player_id, minor, owed).await?;
    if tab.amount_micros + charge_micros > limit.to_micros().map_err(|error| anyhow::anyhow!(error))? {
        return Err(settlement_required(
            "credit_limit",
            format!("this would take the tab past the credit limit of {limit}"),
        )
        .with_detail("credit_limit", limit.amount.normalize().to_string()));
    }
    Ok(tab)
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
    state: &AppState,
    tab: &TabRow,
    minor: bool,
) -> ApiResult<Tab> {
    let settings = &state.settings().tabs;
    let threshold = settings.threshold(tab.currency);
    let credit_limit = settings.credit_limit(tab.currency, minor, settled_before(conn, tab.player_id).await?);
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

/// Finds the tab a settlement is for: the one in `currency`, or the player's only open tab.
///
/// # Errors
/// `nothing_to_settle` when there is none or it owes less than a minor unit;
/// `amount_below_minimum` when it owes less than the minimum card charge and is not yet due.
pub async fn tab_to_settle(
    conn: &mut AnyConnection,
    state: &AppState,
    player_id: Uuid,
    currency: Option<MoneyCurrency>,
) -> ApiResult<(TabRow, Money)> {
    let nothing = || {
        ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::NothingToSettle,
            "there is no tab with anything to settle",
        )
    };
    let tab = match currency {
        Some(currency) => current_tab(conn, player_id, currency).await?,
        None => {
            let rows: Vec<TabTuple> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "select {TAB_COLUMNS} from tab where player_id = $1 and status in ('open', 'settling') order by opened_at"
            )))
            .bind(player_id.to_string())
            .fetch_all(&mut *conn)
            .await?;
            rows.into_iter().map(tab_from).next().transpose()?
        }
    }
    .ok_or_else(nothing)?;
    if tab.status == "settling" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::OrderStateConflict,
            "the tab's settlement order is already waiting for payment",
        )
        .with_detail("order_id", tab.settle_order_id.clone().unwrap_or_default()));
    }
    let charge = settle_amount(tab.currency, tab.amount_micros);
    if charge.amount.is_zero() {
        return Err(nothing());
    }
    let minimum = tab.currency.minimum_charge();
    let view = tab_view(conn, state, &tab, false).await?;
    if charge.amount < minimum.amount && !view.settlement_required {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AmountBelowMinimum,
            format!("the tab owes {charge}, below the minimum card charge of {minimum}; keep playing or wait until {}", view.settle_by),
        )
        .with_detail("minimum", minimum.amount.normalize().to_string()));
    }
    Ok((tab, charge))
}

/// `POST /v1/tab/settle`, once the checkout is open: records the settlement order and marks the
/// tab settling.
#[derive(Debug, Clone)]
pub struct SettleTabOp {
    /// The order's id.
    pub order_id: Uuid,
    /// The player.
    pub player_id: Uuid,
    /// The tab.
    pub tab_id: Uuid,
    /// What the checkout charges.
    pub charge: Money,
    /// The provider.
    pub provider: &'static str,
    /// The checkout.
    pub checkout: Checkout,
    /// When the order expires, microseconds.
    pub expires_at: i64,
}

impl MoneyOp for SettleTabOp {
    type Output = Order;
    const SUCCESS: StatusCode = StatusCode::CREATED;

    async fn apply(self, state: &AppState, conn: &mut AnyConnection) -> ApiResult<Order> {
        lock_player(conn, self.player_id).await?.refuse_if_blocked()?;
        crate::orders::refuse_if_flagged(conn, self.player_id).await?;
        let (tab, charge) = tab_to_settle(conn, state, self.player_id, Some(self.charge.currency)).await?;
        if tab.id != self.tab_id || charge != self.charge {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::OrderStateConflict,
                "the tab changed while settling; settle again",
            ));
        }
        let now = now_micros();
        let version = state.catalog_cache().get(conn).await?.version;
        sqlx::query(
            "insert into payment_order (id, player_id, offer_id, sku, quantity, price_index, currency, gross_micros, status, \
             provider, provider_session, checkout_url, catalog_version, expires_at, created_at, updated_at, tab_id) \
             values ($1, $2, '', '', 1, 0, $3, $4, 'requires_payment', $5, $6, $7, $8, $9, $10, $10, $11)",
        )
        .bind(self.order_id.to_string())
        .bind(self.player_id.to_string())
        .bind(charge.currency.code())
        .bind(charge.to_micros().map_err(|error| anyhow::anyhow!(error))?)
        .bind(self.provider)
        .bind(&self.checkout.id)
        .bind(&self.checkout.checkout_url)
        .bind(version)
        .bind(self.expires_at)
        .bind(now)
        .bind(tab.id.to_string())
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "update tab set status = 'settling', settle_order_id = $2 where id = $1 and status = 'open'",
        )
        .bind(tab.id.to_string())
        .bind(self.order_id.to_string())
        .execute(&mut *conn)
        .await?;
        let record = crate::orders::find_order(conn, self.order_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("order vanished"))?;
        crate::events::push_event(conn, self.player_id, "order.updated", &record.to_wire(None, Vec::new())?)
            .await?;
        record.to_wire(None, Vec::new())
    }
}

/// The settlement order is paid: the money clears the tab receivable (fee out of revenue), the
/// tab is settled, and the remainder below a minor unit opens the next tab.
///
/// # Errors
/// Fails when the database does.
pub async fn settlement_paid(
    conn: &mut AnyConnection,
    catalog: &crate::catalog::RenderedCatalog,
    tab_id: Uuid,
    order_id: Uuid,
    charged_micros: i64,
    fee_micros: i64,
    provider: &str,
) -> ApiResult<Uuid> {
    let row: TabTuple =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("select {TAB_COLUMNS} from tab where id = $1")))
            .bind(tab_id.to_string())
            .fetch_one(&mut *conn)
            .await?;
    let tab = tab_from(row)?;
    let code = tab.currency.code().to_owned();
    let mut postings = vec![
        Posting {
            account: AccountId::System(SystemAccount::Clearing, code.clone()),
            amount: -charged_micros,
        },
        Posting {
            account: AccountId::System(SystemAccount::TabReceivable, code.clone()),
            amount: charged_micros,
        },
    ];
    if fee_micros > 0 {
        postings.push(Posting {
            account: AccountId::System(SystemAccount::Fees, code.clone()),
            amount: fee_micros,
        });
        postings
            .push(Posting { account: AccountId::System(SystemAccount::Revenue, code), amount: -fee_micros });
    }
    postings.extend(creator_shares(conn, catalog, &tab, charged_micros - fee_micros).await?);
    let entry = append_entry(
        conn,
        &NewEntry {
            kind: EntryKind::TabSettlement,
            player_id: Some(tab.player_id),
            actor: format!("provider:{provider}"),
            reason: Some(format!("tab {} settled by order {order_id}", tab.id)),
            postings,
            items: Vec::new(),
            clawback: false,
        },
        &BTreeMap::new(),
    )
    .await?;
    let carried = tab.amount_micros - charged_micros;
    // Guarded: only the tab's current settlement order settles it, once.
    let settled = sqlx::query(
        "update tab set status = 'settled', charged_micros = $2, carried_out_micros = $3, settled_at = $4 \
         where id = $1 and status = 'settling' and settle_order_id = $5",
    )
    .bind(tab.id.to_string())
    .bind(charged_micros)
    .bind(carried)
    .bind(now_micros())
    .bind(order_id.to_string())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if settled != 1 {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "tab {} is not settling by order {order_id}",
            tab.id
        )));
    }
    if carried > 0 {
        open_tab(conn, tab.player_id, tab.currency, carried).await?;
    }
    Ok(entry.id)
}

/// Creators' shares of a settled tab: the net collected (charge − fee) split over the tab's items
/// in proportion to their prices (rounded down), each item's part shared as its creators say.
/// Nothing is credited for a tab until it is paid: an unpaid tab pays no creator.
async fn creator_shares(
    conn: &mut AnyConnection,
    catalog: &crate::catalog::RenderedCatalog,
    tab: &TabRow,
    net_micros: i64,
) -> ApiResult<Vec<Posting>> {
    let items: Vec<(String, i64)> =
        sqlx::query_as("select sku, amount_micros from tab_item where tab_id = $1 order by id")
            .bind(tab.id.to_string())
            .fetch_all(&mut *conn)
            .await?;
    let total: i128 = items.iter().map(|(_, amount)| i128::from(*amount)).sum();
    let mut postings = Vec::new();
    if total <= 0 || net_micros <= 0 {
        return Ok(postings);
    }
    for (sku, amount) in items {
        let Some(item) = Sku::parse(&sku).ok().and_then(|sku| catalog.item(&sku)) else { continue };
        if item.creators.is_empty() {
            continue;
        }
        let part = i64::try_from(i128::from(net_micros) * i128::from(amount) / total)
            .map_err(|error| anyhow::anyhow!("a tab item's part of the net: {error}"))?;
        postings.extend(crate::revenue_share::share_postings(item, tab.currency.code(), part));
    }
    Ok(postings)
}

/// Whether `order_id` is the tab's current settlement order, waiting for its payment.
///
/// # Errors
/// Fails when the database does.
pub async fn is_settling_by(conn: &mut AnyConnection, tab_id: Uuid, order_id: Uuid) -> ApiResult<bool> {
    let settling: Option<i64> = sqlx::query_scalar(
        "select 1 from tab where id = $1 and status = 'settling' and settle_order_id = $2",
    )
    .bind(tab_id.to_string())
    .bind(order_id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(settling.is_some())
}

/// The settlement order failed or expired: the tab is open again (and still due).
///
/// # Errors
/// Fails when the database does.
pub async fn settlement_abandoned(conn: &mut AnyConnection, tab_id: Uuid) -> ApiResult<()> {
    sqlx::query(
        "update tab set status = 'open', settle_order_id = null where id = $1 and status = 'settling'",
    )
    .bind(tab_id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The player's open and settling tabs.
///
/// # Errors
/// Fails when the database does.
pub async fn player_tabs(conn: &mut AnyConnection, state: &AppState, player_id: Uuid) -> ApiResult<Vec<Tab>> {
    let rows: Vec<TabTuple> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {TAB_COLUMNS} from tab where player_id = $1 and status in ('open', 'settling') order by currency"
    )))
    .bind(player_id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    let minor: Option<i64> = sqlx::query_scalar("select minor from player where id = $1")
        .bind(player_id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    let mut tabs = Vec::new();
    for row in rows {
        tabs.push(tab_view(conn, state, &tab_from(row)?, minor.unwrap_or(0) != 0).await?);
    }
    Ok(tabs)
}

/// Tabs for operators, newest first, with their items, age and the fee saved.
///
/// # Errors
/// Fails when the database does.
pub async fn admin_tabs(
    conn: &mut AnyConnection,
    state: &AppState,
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
        let view = tab_view(conn, state, &tab, false).await?;
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
