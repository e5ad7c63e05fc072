//! Settling a tab: the settlement order, the tab settled when it is paid (with creators' shares of
//! what was collected), and a settlement abandoned.

use super::*;

/// Finds the tab a settlement is for: the one in `currency`, or the player's only open tab.
///
/// # Errors
/// `nothing_to_settle` when there is none or it owes less than a minor unit;
/// `amount_below_minimum` when it owes less than the minimum card charge and is not yet due.
pub async fn tab_to_settle(
    conn: &mut AnyConnection,
    state: &Payments,
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
    let age_band = crate::ledger::age_band_of(conn, player_id).await?;
    // A settlement is one payment like an order: within the cap on one payment of the player's
    // band (a tab's credit never passes it, so this refuses only a tab run up before an
    // operator moved the player to a younger band; its debt stays for the operator to settle).
    crate::payments::orders::transaction_check(state.settings(), age_band, charge)?;
    let view = tab_view(conn, state, &tab, age_band).await?;
    if charge.amount < minimum.amount && !view.settlement_required {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AmountBelowMinimum,
            format!("the tab owes {charge}, below the minimum card charge of {minimum}; keep playing or wait until {}", view.settle_by),
        )
        .with_detail("minimum", minimum.amount_text()));
    }
    Ok((tab, charge))
}

/// `POST /v1/tab/settle`, once the checkout is open: records the settlement order and marks the
/// tab settling.
#[derive(Debug, Clone)]
pub struct SettleTabOp {
    /// The catalog, the settings and the writer.
    pub payments: Payments,
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

    async fn apply(self, conn: &mut AnyConnection) -> ApiResult<Order> {
        let state = &self.payments;
        lock_player(conn, self.player_id).await?.refuse_if_blocked()?;
        crate::payments::orders::refuse_if_flagged(conn, self.player_id).await?;
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
        let record = crate::payments::orders::find_order(conn, self.order_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("order vanished"))?;
        crate::ledger::events::push_event(
            conn,
            self.player_id,
            "order.updated",
            &record.to_wire(None, Vec::new())?,
        )
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
    catalog: &crate::store::catalog::RenderedCatalog,
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
pub(super) async fn creator_shares(
    conn: &mut AnyConnection,
    catalog: &crate::store::catalog::RenderedCatalog,
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
        postings.extend(crate::payments::revenue_share::share_postings(item, tab.currency.code(), part));
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
