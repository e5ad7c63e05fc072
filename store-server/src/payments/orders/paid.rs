//! Money in: a provider's payment checked against its order (amount, currency, reference,
//! state) and applied, or booked as received and returned; a failed payment.

use super::*;

/// The item an order bought, and the items it may grant, from the catalog version it was
/// priced from (so a later catalog change never changes what a paid order delivers).
pub(super) async fn order_snapshot(
    conn: &mut AnyConnection,
    state: &Payments,
    record: &OrderRecord,
) -> ApiResult<CatalogSnapshot> {
    let live = state.catalog_cache().get(conn).await?;
    if live.version == record.catalog_version {
        return Ok(live.snapshot());
    }
    crate::store::catalog::version_snapshot(conn, record.catalog_version).await?.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "order {} names missing catalog version {}",
            record.id,
            record.catalog_version
        ))
    })
}

pub(super) fn granted_by(snapshot: &CatalogSnapshot, record: &OrderRecord) -> ApiResult<Movement> {
    let items: BTreeMap<&str, &Item> = snapshot.items.iter().map(|item| (item.sku.as_str(), item)).collect();
    let item = items
        .get(record.sku.as_str())
        .ok_or_else(|| anyhow::anyhow!("order {} sells unknown sku {}", record.id, record.sku))?;
    let mut movement = Movement::default();
    movement.grant_bought(record.player_id, item, record.quantity, |sku| items.get(sku.as_str()).copied())?;
    Ok(movement)
}

/// A system account in real money (amounts in micros), named by the ISO code.
pub(super) fn money_account(kind: SystemAccount, currency: MoneyCurrency) -> ApiResult<AccountId> {
    Ok(AccountId::System(kind, currency.code().to_owned()))
}

/// Why a reported payment does not pay for its order, or `None` when every fact matches: the
/// amount, its currency (and the fee's), the reference the session was opened with, and an
/// order (and, for a settlement, a tab) still waiting for this payment.
pub(super) async fn payment_mismatch(
    conn: &mut AnyConnection,
    record: &OrderRecord,
    report: &PaymentReport,
    expected_reference: &str,
) -> ApiResult<Option<String>> {
    let order = record.money(record.gross_micros);
    let reason = if report.amount.currency != record.currency {
        format!("paid in {}, but the order is in {}", report.amount.currency, record.currency)
    } else if report.fee.currency != report.amount.currency {
        format!("the fee is in {}, but the payment is in {}", report.fee.currency, report.amount.currency)
    } else if report.amount.to_micros().ok() != Some(record.gross_micros) {
        format!("paid {}, but the order costs {order}", report.amount)
    } else if report.reference != expected_reference {
        format!("the payment names reference `{}`, not this order", report.reference)
    } else if record.status != OrderStatus::RequiresPayment {
        format!("the order is already {}", record.status.as_str())
    } else if let Some(tab_id) = record.tab_id
        && !crate::payments::tabs::is_settling_by(conn, tab_id, record.id).await?
    {
        "the tab was already settled or reopened".to_owned()
    } else {
        return Ok(None);
    };
    Ok(Some(reason))
}

/// `payment.succeeded`: applies a payment to its order, once per payment id. A payment that
/// matches its order exactly marks it paid and fulfils it in the same transaction; an order that
/// cannot be fulfilled any more (the wallet would pass its maximum, a durable item is already
/// owned) stays `paid` and is refunded in full. Any other payment (a wrong amount, currency or
/// reference, a second payment, a payment of a failed, canceled or expired order or of a tab
/// already settled) grants nothing: the money received is booked and returned by a refund of
/// its own.
///
/// # Errors
/// `not_found` for an unknown session.
pub async fn payment_succeeded(
    conn: &mut AnyConnection,
    state: &Payments,
    provider: &str,
    report: &PaymentReport,
    cause: &str,
) -> ApiResult<()> {
    let mut record =
        lock_order(conn, "provider = $1 and provider_session = $2", &[provider, &report.session_id])
            .await?
            .ok_or_else(|| ApiError::not_found("checkout session", &report.session_id))?;
    let amount_micros = report.amount.to_micros().map_err(|error| ApiError::invalid("data.amount", error))?;
    let fee_micros = report.fee.to_micros().map_err(|error| ApiError::invalid("data.fee", error))?;
    if amount_micros <= 0 || !(0..=amount_micros).contains(&fee_micros) {
        return Err(ApiError::invalid(
            "data.amount",
            "a payment is positive and its fee at most the payment",
        ));
    }
    let expected_reference = state
        .provider(provider)
        .map_or_else(|| record.id.to_string(), |adapter| adapter.reference_for(record.id));
    let mismatch = payment_mismatch(conn, &record, report, &expected_reference).await?;
    let fresh = sqlx::query(
        "insert into provider_payment (provider, payment_id, order_id, currency, amount_micros, fee_micros, outcome, \
         reason, created_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9) on conflict (provider, payment_id) do nothing",
    )
    .bind(provider)
    .bind(&report.payment_id)
    .bind(record.id.to_string())
    .bind(report.amount.currency.code())
    .bind(amount_micros)
    .bind(fee_micros)
    .bind(if mismatch.is_some() { "returned" } else { "applied" })
    .bind(mismatch.as_deref())
    .bind(now_micros())
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !fresh {
        return Ok(()); // This payment was booked already: a replay under another event id.
    }
    if let Some(reason) = mismatch {
        return return_payment(conn, &record, provider, report, &reason).await;
    }
    let net_micros = record.gross_micros - fee_micros;
    sqlx::query(
        "update payment_order set provider_payment = $2, fee_micros = $3, net_micros = $4 where id = $1",
    )
    .bind(record.id.to_string())
    .bind(&report.payment_id)
    .bind(fee_micros)
    .bind(net_micros)
    .execute(&mut *conn)
    .await?;
    record.provider_payment = Some(report.payment_id.clone());
    record.fee_micros = Some(fee_micros);
    record.net_micros = Some(net_micros);
    transition(conn, &mut record, OrderStatus::Paid, cause).await?;

    if let Some(tab_id) = record.tab_id {
        let entry_id = {
            let catalog = state.catalog_cache().get(conn).await?;
            crate::payments::tabs::settlement_paid(
                conn,
                &catalog,
                tab_id,
                record.id,
                record.gross_micros,
                fee_micros,
                provider,
            )
            .await?
        };
        sqlx::query("update payment_order set entry_id = $2 where id = $1")
            .bind(record.id.to_string())
            .bind(entry_id.to_string())
            .execute(&mut *conn)
            .await?;
        record.entry_id = Some(entry_id.to_string());
        let facts = ReceiptFacts {
            kind: EntryKind::TabSettlement,
            purchase_id: None,
            offer_id: None,
            paid: None,
            paid_money: Some(record.money(record.gross_micros)),
            order_id: Some(record.id),
            immediate_delivery_consent: false,
            granted: store_api::ledger::Granted::default(),
        };
        issue_receipt(conn, record.player_id, entry_id, facts).await?;
        return transition(conn, &mut record, OrderStatus::Fulfilled, "the tab is settled").await;
    }

    let snapshot = order_snapshot(conn, state, &record).await?;
    let mut movement = granted_by(&snapshot, &record)?;
    let catalog = state.catalog_cache().get(conn).await?;
    let limit_check = match snapshot.items.iter().find(|item| item.sku.as_str() == record.sku) {
        Some(item) => {
            crate::store::operations::check_purchase_limit(
                conn,
                record.player_id,
                item,
                record.quantity,
                crate::db::now(),
                Some(record.id),
            )
            .await
        }
        None => Ok(()),
    };
    let check = match limit_check {
        Ok(()) => movement.check(conn, record.player_id, &catalog).await,
        refused => refused,
    };
    // Only a business refusal means "cannot be fulfilled"; a database failure fails the event.
    if let Err(error @ ApiError::Client { .. }) = check {
        let reason = format!("could not be fulfilled: {error}");
        sqlx::query("update payment_order set failure_reason = $2 where id = $1")
            .bind(record.id.to_string())
            .bind(&reason)
            .execute(&mut *conn)
            .await?;
        record_money_received(conn, &record).await?;
        create_refund(
            conn,
            &record,
            record.money(record.gross_micros),
            None,
            &reason,
            "system",
            RefundKind::Refund,
        )
        .await?;
        return announce(conn, &record).await;
    }
    check?;
    movement.postings.extend(money_received(record.currency, record.gross_micros, fee_micros)?);
    if let Some(item) = snapshot.items.iter().find(|item| item.sku.as_str() == record.sku) {
        movement.postings.extend(crate::payments::revenue_share::share_postings(
            item,
            record.currency.code(),
            net_micros,
        ));
    }
    let entry = append_entry(
        conn,
        &NewEntry {
            kind: EntryKind::OrderFulfillment,
            player_id: Some(record.player_id),
            actor: format!("provider:{provider}"),
            reason: Some(format!("order {}", record.id)),
            postings: movement.postings,
            items: movement.items,
            clawback: false,
        },
        catalog.balance_maxima(),
    )
    .await?;
    sqlx::query("update payment_order set entry_id = $2 where id = $1")
        .bind(record.id.to_string())
        .bind(entry.id.to_string())
        .execute(&mut *conn)
        .await?;
    record.entry_id = Some(entry.id.to_string());
    let facts = ReceiptFacts {
        kind: EntryKind::OrderFulfillment,
        purchase_id: None,
        offer_id: store_api::catalog::OfferId::parse(&record.offer_id).ok(),
        paid: None,
        paid_money: Some(record.money(record.gross_micros)),
        order_id: Some(record.id),
        immediate_delivery_consent: record.delivery_consent,
        granted: movement.granted,
    };
    issue_receipt(conn, record.player_id, entry.id, facts).await?;
    transition(conn, &mut record, OrderStatus::Fulfilled, "granted in the payment's transaction").await
}

/// The postings of `amount` received through the provider: clearing gives it, the provider's
/// fee and the rest (revenue) take it. A refund later returns it from revenue to clearing.
pub(super) fn money_received(currency: MoneyCurrency, amount: i64, fee: i64) -> ApiResult<Vec<Posting>> {
    let mut postings =
        vec![Posting { account: money_account(SystemAccount::Clearing, currency)?, amount: -amount }];
    if fee > 0 {
        postings.push(Posting { account: money_account(SystemAccount::Fees, currency)?, amount: fee });
    }
    if amount > fee {
        postings.push(Posting {
            account: money_account(SystemAccount::Revenue, currency)?,
            amount: amount - fee,
        });
    }
    Ok(postings)
}

/// Appends an entry of money alone (no items, no wallet), by the order's provider, for its player.
pub(super) async fn append_money_entry(
    conn: &mut AnyConnection,
    record: &OrderRecord,
    kind: EntryKind,
    reason: String,
    postings: Vec<Posting>,
) -> ApiResult<crate::ledger::AppendedEntry> {
    let entry = NewEntry {
        kind,
        player_id: Some(record.player_id),
        actor: format!("provider:{}", record.provider),
        reason: Some(reason),
        postings,
        items: Vec::new(),
        clawback: false,
    };
    append_entry(conn, &entry, &BTreeMap::new()).await
}

/// Books money received for an order that is not fulfilled (to be refunded): clearing gives the
/// gross, fees and revenue take fee and net, so the refund can reverse it like any other.
pub(super) async fn record_money_received(conn: &mut AnyConnection, record: &OrderRecord) -> ApiResult<()> {
    let postings = money_received(record.currency, record.gross_micros, record.fee_micros.unwrap_or(0))?;
    let reason = format!("order {} paid but not fulfilled", record.id);
    let entry = append_money_entry(conn, record, EntryKind::OrderFulfillment, reason, postings).await?;
    sqlx::query("update payment_order set entry_id = $2 where id = $1")
        .bind(record.id.to_string())
        .bind(entry.id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Books a payment that pays for nothing (see [`payment_mismatch`]) as money received, and
/// records a refund of all of it, which the refund worker sends back to the provider. The order
/// itself does not change.
pub(super) async fn return_payment(
    conn: &mut AnyConnection,
    record: &OrderRecord,
    provider: &str,
    report: &PaymentReport,
    reason: &str,
) -> ApiResult<()> {
    let currency = report.amount.currency;
    let amount = report.amount.to_micros().map_err(|error| ApiError::invalid("data.amount", error))?;
    let fee = report.fee.to_micros().map_err(|error| ApiError::invalid("data.fee", error))?;
    tracing::warn!(order = %record.id, payment = %report.payment_id, %reason, "a payment does not pay for its order; it is returned");
    metrics::counter!("coinslot_payments_returned_total", "provider" => provider.to_owned()).increment(1);
    let postings = money_received(currency, amount, fee)?;
    let why_entry = format!("payment {} of order {} returned: {reason}", report.payment_id, record.id);
    let entry = append_money_entry(conn, record, EntryKind::UnappliedPayment, why_entry, postings).await?;
    sqlx::query("update provider_payment set entry_id = $3 where provider = $1 and payment_id = $2")
        .bind(provider)
        .bind(&report.payment_id)
        .bind(entry.id.to_string())
        .execute(&mut *conn)
        .await?;
    let why = format!("returned: {reason}");
    create_refund(conn, record, report.amount, Some(&report.payment_id), &why, "system", RefundKind::Refund)
        .await?;
    Ok(())
}

/// `payment.failed`: the order fails with the provider's reason.
///
/// # Errors
/// `not_found` for an unknown session. A failure of an order past payment changes nothing.
pub async fn payment_failed(
    conn: &mut AnyConnection,
    provider: &str,
    session_id: &str,
    reason: &str,
    cause: &str,
) -> ApiResult<()> {
    let mut record = lock_order(conn, "provider = $1 and provider_session = $2", &[provider, session_id])
        .await?
        .ok_or_else(|| ApiError::not_found("checkout session", session_id))?;
    if record.status != OrderStatus::RequiresPayment {
        // Failed already, or paid after all (the player paid with another card, and that
        // payment's event arrived first): a stale failure changes nothing.
        return Ok(());
    }
    sqlx::query("update payment_order set failure_reason = $2 where id = $1")
        .bind(record.id.to_string())
        .bind(reason)
        .execute(&mut *conn)
        .await?;
    record.failure_reason = Some(reason.to_owned());
    if let Some(tab_id) = record.tab_id {
        crate::payments::tabs::settlement_abandoned(conn, tab_id).await?;
    }
    transition(conn, &mut record, OrderStatus::Failed, cause).await
}
