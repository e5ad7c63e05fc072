//! Money back: refunds an operator asks for, refunds and chargebacks a provider confirms, each
//! booked as its own entry, and the clawback of what the order granted.

use super::*;

/// Records a refund or chargeback of `amount_micros` as `pending`; the refund worker sends
/// refunds to the provider, chargebacks are already done.
pub(super) async fn create_refund(
    conn: &mut AnyConnection,
    record: &OrderRecord,
    amount: Money,
    returned_payment: Option<&str>,
    reason: &str,
    actor: &str,
    kind: RefundKind,
) -> ApiResult<Refund> {
    let amount_micros = amount.to_micros().map_err(|error| anyhow::anyhow!(error))?;
    let id = Uuid::now_v7();
    let now = now_micros();
    let kind_text = match kind {
        RefundKind::Refund => "refund",
        RefundKind::Chargeback => "chargeback",
    };
    sqlx::query(
        "insert into refund (id, order_id, kind, amount_micros, reason, actor, status, created_at, updated_at, payment_id) \
         values ($1, $2, $3, $4, $5, $6, 'pending', $7, $7, $8)",
    )
    .bind(id.to_string())
    .bind(record.id.to_string())
    .bind(kind_text)
    .bind(amount_micros)
    .bind(reason)
    .bind(actor)
    .bind(now)
    .bind(returned_payment)
    .execute(&mut *conn)
    .await?;
    Ok(Refund {
        id,
        order_id: record.id,
        kind,
        amount,
        reason: reason.to_owned(),
        status: RefundStatus::Pending,
        created_at: from_micros(now),
        last_error: None,
    })
}

/// `POST /admin/v1/orders/{id}/refunds`: records a refund to be sent to the provider.
#[derive(Debug, Clone)]
pub struct RefundOp {
    /// The order.
    pub order_id: Uuid,
    /// How much, in the order's currency; everything refundable when absent.
    pub amount: Option<String>,
    /// Why.
    pub reason: String,
    /// The operator.
    pub actor: String,
}

impl MoneyOp for RefundOp {
    type Output = Refund;
    const SUCCESS: StatusCode = StatusCode::ACCEPTED;

    async fn apply(self, conn: &mut AnyConnection) -> ApiResult<Refund> {
        let id = self.order_id.to_string();
        let record =
            lock_order(conn, "id = $1", &[&id]).await?.ok_or_else(|| ApiError::not_found("order", &id))?;
        if !matches!(record.status, OrderStatus::Fulfilled | OrderStatus::PartiallyRefunded) {
            return Err(state_conflict(&record, "refunded"));
        }
        let reserved: Option<i64> =
            sqlx::query_scalar("select cast(sum(amount_micros) as bigint) from refund where order_id = $1 and status in ('pending', 'submitted')")
                .bind(&id)
                .fetch_one(&mut *conn)
                .await?;
        let refundable = record.gross_micros - record.refunded_micros - reserved.unwrap_or(0);
        let amount = match &self.amount {
            None => refundable,
            Some(text) => {
                let amount = store_api::money::parse_amount(text)
                    .map_err(|error| ApiError::invalid("amount", error))?;
                let money = Money { currency: record.currency, amount };
                if amount.is_zero() || !money.is_whole_minor_units() {
                    return Err(ApiError::invalid(
                        "amount",
                        format!("a refund is a positive amount of whole {} minor units", record.currency),
                    ));
                }
                money.to_micros().map_err(|error| ApiError::invalid("amount", error))?
            }
        };
        if amount > refundable || refundable <= 0 {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::RefundExceedsPaid,
                format!("at most {} can still be refunded", record.money(refundable.max(0))),
            )
            .with_detail("refundable", record.money(refundable.max(0)).amount_text()));
        }
        let refund = create_refund(
            conn,
            &record,
            record.money(amount),
            None,
            &self.reason,
            &self.actor,
            RefundKind::Refund,
        )
        .await?;
        let after = serde_json::to_string(&refund).map_err(anyhow::Error::from)?;
        crate::store::catalog::append_audit(conn, &self.actor, "order.refund", &id, None, Some(&after))
            .await?;
        Ok(refund)
    }
}

/// Books `amount_micros` the provider returned for an order (a refund or a chargeback), all of
/// it, and claws back the grant in proportion: currency grants by the share refunded so far
/// (rounded down, so the total clawed never passes the grant), items once the order is refunded
/// in full. What the player spent or used up becomes a debt: the wallet goes below zero through
/// this entry alone and is flagged `in_debt`. Money returned beyond the order's price (a refund
/// and a chargeback that overlap) is booked too, counted as over-reversed, and the order is
/// marked for an operator's review; it is never an error the provider retries forever.
pub(super) async fn reverse(
    conn: &mut AnyConnection,
    state: &Payments,
    record: &mut OrderRecord,
    refund_id: Uuid,
    amount_micros: i64,
    chargeback: bool,
    cause: &str,
) -> ApiResult<()> {
    let before = record.refunded_micros;
    let returned =
        before.checked_add(amount_micros).ok_or_else(|| anyhow::anyhow!("refund total overflows"))?;
    let after = returned.min(record.gross_micros);
    let over = returned - after;
    let mut postings = vec![
        Posting { account: money_account(SystemAccount::Clearing, record.currency)?, amount: amount_micros },
        Posting { account: money_account(SystemAccount::Revenue, record.currency)?, amount: -amount_micros },
    ];
    let mut items = Vec::new();
    // Creators give back what the sale credited them (an order's fulfilment or a tab's
    // settlement), in the same proportion as the money returned.
    if after > before
        && let Some(entry_id) = &record.entry_id
    {
        let credited: Vec<(String, i64)> = sqlx::query_as(
            "select account_id, cast(sum(amount) as bigint) from posting where entry_id = $1 \
             and account_id like 'c:%' group by account_id order by account_id",
        )
        .bind(entry_id)
        .fetch_all(&mut *conn)
        .await?;
        for (account, part) in credited {
            let owed = |refunded: i64| {
                i64::try_from(i128::from(part) * i128::from(refunded) / i128::from(record.gross_micros))
                    .unwrap_or(0)
            };
            let back = owed(after) - owed(before);
            let creator = account
                .strip_prefix("c:")
                .and_then(|rest| rest.rsplit_once(':'))
                .map(|(creator, _)| creator.to_owned())
                .ok_or_else(|| corrupt("creator account", &account))?;
            if back > 0 {
                let code = record.currency.code().to_owned();
                postings.push(Posting {
                    account: AccountId::CreatorPayable(creator, code.clone()),
                    amount: -back,
                });
                postings
                    .push(Posting { account: AccountId::System(SystemAccount::Revenue, code), amount: back });
            }
        }
    }
    // What the player got back is clawed back in the share of the price returned so far
    // (rounded down, so the total never passes the grant): currency and items of a fulfilled
    // order, the items of a settled tab. What they spent or used up becomes a debt.
    let share = |quantity: i64, refunded: i64| {
        i64::try_from(i128::from(quantity) * i128::from(refunded) / i128::from(record.gross_micros))
            .unwrap_or(0)
    };
    let fulfilled = record.entry_id.is_some() && record.failure_reason.is_none() && record.tab_id.is_none();
    if fulfilled && after > before {
        let snapshot = order_snapshot(conn, state, record).await?;
        let granted = granted_by(&snapshot, record)?.granted;
        for grant in &granted.currencies {
            let claw = share(grant.amount, after) - share(grant.amount, before);
            if claw > 0 {
                postings.push(Posting {
                    account: AccountId::Wallet(record.player_id, grant.currency.clone()),
                    amount: -claw,
                });
                postings.push(Posting {
                    account: AccountId::System(SystemAccount::Issuance, grant.currency.as_str().to_owned()),
                    amount: claw,
                });
            }
        }
        for grant in &granted.items {
            claw_back_item(
                &grant.sku,
                share(grant.quantity, after) - share(grant.quantity, before),
                &mut items,
            );
        }
    }
    if let Some(tab_id) = record.tab_id
        && record.entry_id.is_some()
        && after > before
    {
        let bought: Vec<(String, i64)> = sqlx::query_as(
            "select sku, cast(sum(quantity) as bigint) from tab_item where tab_id = $1 group by sku order by sku",
        )
        .bind(tab_id.to_string())
        .fetch_all(&mut *conn)
        .await?;
        for (sku, quantity) in bought {
            let sku = store_api::catalog::Sku::parse(&sku).map_err(|error| corrupt("tab item", error))?;
            claw_back_item(&sku, share(quantity, after) - share(quantity, before), &mut items);
        }
    }
    let entry = append_entry(
        conn,
        &NewEntry {
            kind: EntryKind::Reversal,
            player_id: Some(record.player_id),
            actor: format!("provider:{}", record.provider),
            reason: Some(cause.to_owned()),
            postings,
            items,
            clawback: true,
        },
        &BTreeMap::new(),
    )
    .await?;
    refund_booked(conn, refund_id, entry.id).await?;
    // DESIGN 5.5: a clawback that leaves a debt flags the player (orders and tabs wait for an
    // operator), besides refusing purchases in that currency until it is repaid.
    let debts: i64 = sqlx::query_scalar(
        "select (select count(*) from account where player_id = $1 and in_debt = 1) \
         + (select count(*) from inventory where player_id = $1 and in_debt = 1)",
    )
    .bind(record.player_id.to_string())
    .fetch_one(&mut *conn)
    .await?;
    if debts > 0 {
        flag_player(
            conn,
            record.player_id,
            &format!("a reversal of order {} left a debt", record.id),
            "system:clawback",
        )
        .await?;
    }
    if over > 0 {
        let reason = format!(
            "the provider returned {} more than the order's price (overlapping refunds and chargebacks)",
            record.money(record.over_reversed_micros + over)
        );
        tracing::warn!(order = %record.id, %reason, "an order was over-reversed");
        metrics::counter!("coinslot_orders_over_reversed_total").increment(1);
        record.over_reversed_micros += over;
        record.review_reason = Some(reason);
    }
    sqlx::query("update payment_order set refunded_micros = $2, over_reversed_micros = $3, review_reason = $4 where id = $1")
        .bind(record.id.to_string())
        .bind(after)
        .bind(record.over_reversed_micros)
        .bind(record.review_reason.as_deref())
        .execute(&mut *conn)
        .await?;
    record.refunded_micros = after;
    let next = if chargeback {
        OrderStatus::ChargedBack
    } else if matches!(record.status, OrderStatus::ChargedBack | OrderStatus::Disputed) {
        // A refund that was in flight when the dispute landed: booked, the status stays.
        return announce(conn, record).await;
    } else if after == record.gross_micros {
        OrderStatus::Refunded
    } else {
        OrderStatus::PartiallyRefunded
    };
    if next == record.status {
        return announce(conn, record).await;
    }
    transition(conn, record, next, cause).await
}

/// `refund.succeeded`: the provider returned the money; the ledger follows.
///
/// # Errors
/// `not_found` for an unknown refund.
pub async fn refund_succeeded(
    conn: &mut AnyConnection,
    state: &Payments,
    refund_id: Uuid,
    provider_refund: &str,
    cause: &str,
) -> ApiResult<()> {
    let order_id: String = sqlx::query_scalar("select order_id from refund where id = $1")
        .bind(refund_id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApiError::not_found("refund", &refund_id.to_string()))?;
    let mut record = lock_order(conn, "id = $1", &[&order_id])
        .await?
        .ok_or_else(|| ApiError::not_found("order", &order_id))?;
    // Read under the order's lock: two events for one refund (on two instances) book it once.
    let (amount_micros, status, returned_payment): (i64, String, Option<String>) =
        sqlx::query_as("select amount_micros, status, payment_id from refund where id = $1")
            .bind(refund_id.to_string())
            .fetch_one(&mut *conn)
            .await?;
    if status == "succeeded" {
        return Ok(());
    }
    sqlx::query("update refund set provider_refund = $2 where id = $1")
        .bind(refund_id.to_string())
        .bind(provider_refund)
        .execute(&mut *conn)
        .await?;
    if let Some(payment_id) = returned_payment {
        return payment_returned(conn, &record, refund_id, &payment_id, amount_micros, cause).await;
    }
    reverse(conn, state, &mut record, refund_id, amount_micros, false, cause).await
}

/// Takes back `quantity` of an item; what the player no longer holds becomes an item debt.
pub(super) fn claw_back_item(sku: &store_api::catalog::Sku, quantity: i64, items: &mut Vec<ItemDelta>) {
    if quantity > 0 {
        items.push(ItemDelta { sku: sku.clone(), delta: -quantity, quantity_max: i64::MAX });
    }
}

/// Marks a refund succeeded with its entry; a refund is booked once.
pub(super) async fn refund_booked(
    conn: &mut AnyConnection,
    refund_id: Uuid,
    entry_id: Uuid,
) -> ApiResult<()> {
    let booked = sqlx::query(
        "update refund set status = 'succeeded', entry_id = $2, updated_at = $3 where id = $1 and status <> 'succeeded'",
    )
    .bind(refund_id.to_string())
    .bind(entry_id.to_string())
    .bind(now_micros())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if booked != 1 {
        return Err(ApiError::Internal(anyhow::anyhow!("refund {refund_id} was booked twice")));
    }
    Ok(())
}

/// A returned payment's refund went through: the money received goes back to the provider. The
/// order is not touched; the payment never paid for it.
pub(super) async fn payment_returned(
    conn: &mut AnyConnection,
    record: &OrderRecord,
    refund_id: Uuid,
    payment_id: &str,
    amount_micros: i64,
    cause: &str,
) -> ApiResult<()> {
    let currency: String =
        sqlx::query_scalar("select currency from provider_payment where provider = $1 and payment_id = $2")
            .bind(&record.provider)
            .bind(payment_id)
            .fetch_one(&mut *conn)
            .await?;
    let currency = MoneyCurrency::parse(&currency).map_err(|error| corrupt("payment currency", error))?;
    let postings = vec![
        Posting { account: money_account(SystemAccount::Clearing, currency)?, amount: amount_micros },
        Posting { account: money_account(SystemAccount::Revenue, currency)?, amount: -amount_micros },
    ];
    let entry = append_money_entry(conn, record, EntryKind::Reversal, cause.to_owned(), postings).await?;
    refund_booked(conn, refund_id, entry.id).await
}

/// `payment.disputed`: the dispute is lost; the provider took back `amount` (the whole payment
/// when it does not say). It is booked as it stands, whatever was refunded or is still being
/// refunded: refunds not yet sent are canceled, refunds in flight are booked when they land
/// (past the price, the order is marked for review). The player is flagged for review.
///
/// # Errors
/// `not_found` for an unknown payment; `order_state_conflict` when the order is not paid yet
/// (the provider retries, so a dispute that overtakes its payment waits for it).
pub async fn payment_disputed(
    conn: &mut AnyConnection,
    state: &Payments,
    provider: &str,
    payment_id: &str,
    amount: Option<Money>,
    cause: &str,
) -> ApiResult<()> {
    let mut record = lock_order_paid_by(conn, provider, payment_id).await?;
    if record.status == OrderStatus::ChargedBack {
        return Ok(());
    }
    if record.status != OrderStatus::Disputed && !record.status.can_become(OrderStatus::Disputed) {
        return Err(state_conflict(&record, "disputed"));
    }
    let disputed_micros = match amount {
        Some(amount) if amount.currency == record.currency => {
            amount.to_micros().map_err(|error| ApiError::invalid("data.amount", error))?
        }
        Some(amount) => {
            return Err(ApiError::invalid(
                "data.amount",
                format!("a dispute in {} of an order in {}", amount.currency, record.currency),
            ));
        }
        None => record.gross_micros,
    };
    if disputed_micros <= 0 {
        return Err(ApiError::invalid("data.amount", "a dispute takes back a positive amount"));
    }
    // The provider took the money back itself: refunds not yet sent would return it twice.
    sqlx::query(
        "update refund set status = 'failed', last_error = 'superseded by a chargeback', updated_at = $2 \
         where order_id = $1 and status = 'pending' and kind = 'refund' and payment_id is null",
    )
    .bind(record.id.to_string())
    .bind(now_micros())
    .execute(&mut *conn)
    .await?;
    if record.status != OrderStatus::Disputed {
        transition(conn, &mut record, OrderStatus::Disputed, cause).await?;
    }
    let chargeback = create_refund(
        conn,
        &record,
        record.money(disputed_micros),
        None,
        "chargeback: dispute lost",
        &format!("provider:{provider}"),
        RefundKind::Chargeback,
    )
    .await?;
    reverse(conn, state, &mut record, chargeback.id, disputed_micros, true, cause).await?;
    flag_player(conn, record.player_id, &format!("chargeback on order {}", record.id), "system:chargeback")
        .await
}

/// Locks and reads the order a provider's payment paid.
///
/// # Errors
/// `not_found` when no order of this store was paid by it (yet).
async fn lock_order_paid_by(
    conn: &mut AnyConnection,
    provider: &str,
    payment_id: &str,
) -> ApiResult<OrderRecord> {
    lock_order(conn, "provider = $1 and provider_payment = $2", &[provider, payment_id])
        .await?
        .ok_or_else(|| ApiError::not_found("payment", payment_id))
}

/// `charge.dispute.created`: the payment is disputed and its outcome is not known. The order
/// waits in `disputed` (refunds are not sent meanwhile: the provider refuses to refund a
/// disputed payment) and the player is flagged for review. The money moves when the dispute
/// closes: booked as a chargeback when lost ([`payment_disputed`]); nothing moves when won
/// ([`dispute_won`]).
///
/// # Errors
/// `not_found` for an unknown payment; `order_state_conflict` when the order is not paid yet.
pub async fn dispute_opened(
    conn: &mut AnyConnection,
    provider: &str,
    payment_id: &str,
    cause: &str,
) -> ApiResult<()> {
    let mut record = lock_order_paid_by(conn, provider, payment_id).await?;
    if matches!(record.status, OrderStatus::Disputed | OrderStatus::ChargedBack) {
        return Ok(()); // Already decided, or this is a replay.
    }
    if !record.status.can_become(OrderStatus::Disputed) {
        return Err(state_conflict(&record, "disputed"));
    }
    transition(conn, &mut record, OrderStatus::Disputed, cause).await?;
    flag_player(conn, record.player_id, &format!("dispute on order {}", record.id), "system:dispute").await
}

/// `charge.dispute.closed` in the merchant's favour: the payment stands, and the order goes
/// back to where the dispute found it (less what was refunded meanwhile). The player stays
/// flagged until an operator clears the flag. A dispute closing on an order that is not
/// disputed (its opening was never received) changes nothing.
///
/// # Errors
/// `not_found` for an unknown payment.
pub async fn dispute_won(
    conn: &mut AnyConnection,
    provider: &str,
    payment_id: &str,
    cause: &str,
) -> ApiResult<()> {
    let mut record = lock_order_paid_by(conn, provider, payment_id).await?;
    if record.status != OrderStatus::Disputed {
        return Ok(());
    }
    let before: Option<String> = sqlx::query_scalar(
        "select from_status from order_transition where order_id = $1 and to_status = 'disputed' order by id desc limit 1",
    )
    .bind(record.id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    let next = if record.refunded_micros >= record.gross_micros {
        OrderStatus::Refunded
    } else if record.refunded_micros > 0 {
        OrderStatus::PartiallyRefunded
    } else {
        match before.as_deref().map(OrderStatus::parse) {
            Some(Ok(OrderStatus::Paid)) => OrderStatus::Paid,
            _ => OrderStatus::Fulfilled,
        }
    };
    transition(conn, &mut record, next, cause).await
}

/// `refund.created` / `refund.updated` for a refund the store did not ask for (made in the
/// provider's dashboard): booked once per provider refund id, like a refund of ours, with the
/// clawback. A refund of a payment that was being returned books that return.
///
/// # Errors
/// `not_found` for a payment the store does not know; `invalid_request` for a refund in
/// another currency than its payment.
pub async fn refunded_at_provider(
    conn: &mut AnyConnection,
    state: &Payments,
    provider: &str,
    payment_id: &str,
    provider_refund_id: &str,
    amount: Money,
    cause: &str,
) -> ApiResult<()> {
    // The order the payment was for (applied to it, or being returned) is locked first, so two
    // events naming one refund (`refund.created`, `charge.refunded`) book it once, whichever
    // transaction commits first.
    let order_id: String =
        sqlx::query_scalar("select order_id from provider_payment where provider = $1 and payment_id = $2")
            .bind(provider)
            .bind(payment_id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| ApiError::not_found("payment", payment_id))?;
    let mut record = lock_order(conn, "id = $1", &[&order_id])
        .await?
        .ok_or_else(|| ApiError::not_found("order", &order_id))?;
    let known: Option<(String, String)> =
        sqlx::query_as("select id, status from refund where provider_refund = $1")
            .bind(provider_refund_id)
            .fetch_optional(&mut *conn)
            .await?;
    if let Some((refund_id, status)) = known {
        if status == "succeeded" {
            return Ok(());
        }
        let refund_id = Uuid::parse_str(&refund_id).map_err(|error| corrupt("refund id", error))?;
        return refund_succeeded(conn, state, refund_id, provider_refund_id, cause).await;
    }
    // A payment that paid for nothing is being returned: this refund is that return.
    let returned: Option<String> = sqlx::query_scalar(
        "select id from refund where order_id = $1 and payment_id = $2 and status in ('pending', 'submitted') limit 1",
    )
    .bind(&order_id)
    .bind(payment_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(refund_id) = returned {
        let refund_id = Uuid::parse_str(&refund_id).map_err(|error| corrupt("refund id", error))?;
        return refund_succeeded(conn, state, refund_id, provider_refund_id, cause).await;
    }
    if record.provider_payment.as_deref() != Some(payment_id) {
        return Err(ApiError::not_found("payment", payment_id));
    }
    // A provider that refunds whole payments only (Steam) refunds a payment once: a refund of
    // ours still in flight is this one, though its answer never reached us. (One that refunds
    // only at the player's request has none in flight.)
    if state
        .provider(provider)
        .is_some_and(|adapter| adapter.refunds() != crate::payments::provider::Refunds::Any)
    {
        let in_flight: Option<String> = sqlx::query_scalar(
            "select id from refund where order_id = $1 and kind = 'refund' and payment_id is null \
             and status in ('pending', 'submitted') order by created_at limit 1",
        )
        .bind(&order_id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(refund_id) = in_flight {
            let refund_id = Uuid::parse_str(&refund_id).map_err(|error| corrupt("refund id", error))?;
            return refund_succeeded(conn, state, refund_id, provider_refund_id, cause).await;
        }
    }
    let amount_micros = amount.to_micros().map_err(|error| ApiError::invalid("data.amount", error))?;
    if amount_micros <= 0 || amount.currency != record.currency {
        return Err(ApiError::invalid(
            "data.amount",
            format!("a refund of {amount} does not fit an order in {}", record.currency),
        ));
    }
    let refund = create_refund(
        conn,
        &record,
        amount,
        None,
        "refunded at the provider",
        &format!("provider:{provider}"),
        RefundKind::Refund,
    )
    .await?;
    sqlx::query("update refund set provider_refund = $2 where id = $1")
        .bind(refund.id.to_string())
        .bind(provider_refund_id)
        .execute(&mut *conn)
        .await?;
    reverse(conn, state, &mut record, refund.id, amount_micros, false, cause).await
}

/// `refund.failed`: a refund the store sent did not go through; it is `failed` for an operator
/// to look at, and nothing was booked for it. A refund booked already is left alone.
///
/// # Errors
/// Fails when the database does.
pub async fn refund_failed(conn: &mut AnyConnection, refund_id: Uuid, reason: &str) -> ApiResult<()> {
    let failed = sqlx::query(
        "update refund set status = 'failed', last_error = $2, updated_at = $3 where id = $1 and status in ('pending', 'submitted')",
    )
    .bind(refund_id.to_string())
    .bind(format!("the provider failed the refund: {reason}"))
    .bind(now_micros())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if failed == 1 {
        metrics::counter!("coinslot_refunds_failed_total").increment(1);
        tracing::warn!(refund = %refund_id, %reason, "the provider failed a refund");
    }
    Ok(())
}

/// Flags a player for review (if not flagged yet), in the caller's transaction, audited.
pub(super) async fn flag_player(
    conn: &mut AnyConnection,
    player_id: Uuid,
    reason: &str,
    actor: &str,
) -> ApiResult<()> {
    let flagged = sqlx::query(
        "update player set flagged_at = $2, flag_reason = $3 where id = $1 and flagged_at is null",
    )
    .bind(player_id.to_string())
    .bind(now_micros())
    .bind(reason)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if flagged == 1 {
        let after = serde_json::json!({ "flagged": true, "reason": reason }).to_string();
        crate::store::catalog::append_audit(
            conn,
            actor,
            "player.flag",
            &player_id.to_string(),
            None,
            Some(&after),
        )
        .await?;
    }
    Ok(())
}
