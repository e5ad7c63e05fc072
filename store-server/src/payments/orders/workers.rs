//! The sweepers: orders that expire unpaid (after asking the provider) and refunds submitted
//! to the provider, with backoff per refund.

use super::*;

/// Expires unpaid orders past their time, each once its provider says its session was not paid
/// (a payment found then is applied instead); returns how many expired.
///
/// # Errors
/// Fails when the database does.
pub async fn expire_due_orders(state: &Payments) -> ApiResult<u64> {
    let due: Vec<String> = sqlx::query_scalar(
        "select id from payment_order where status = 'requires_payment' and expires_at <= $1 limit 100",
    )
    .bind(now_micros())
    .fetch_all(state.db().pool())
    .await?;
    let mut expired = 0;
    for id in due {
        // Ask the provider first: a payment whose webhook was lost pays the order now.
        let Some(unpaid) = find_order(
            &mut *state.db().pool().acquire().await?,
            Uuid::parse_str(&id).map_err(|error| corrupt("id", error))?,
        )
        .await?
        else {
            continue;
        };
        let provider = state.provider(&unpaid.provider).map(|provider| provider.name());
        if let Some(provider) = provider {
            match crate::payments::reconcile::apply_session_payment(state, provider, &unpaid.provider_session)
                .await
            {
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, order = %id, "could not ask the provider whether the order was paid; it expires later");
                    continue;
                }
            }
        }
        let mut tx = state.db().begin_write().await?;
        if let Some(mut record) = lock_order(&mut tx, "id = $1", &[&id]).await?
            && record.status == OrderStatus::RequiresPayment
            && record.expires_at <= now_micros()
        {
            if let Some(tab_id) = record.tab_id {
                crate::payments::tabs::settlement_abandoned(&mut tx, tab_id).await?;
            }
            transition(&mut tx, &mut record, OrderStatus::Expired, "not paid in time (expiry sweeper)")
                .await?;
            expired += 1;
        }
        tx.commit().await?;
    }
    Ok(expired)
}

/// Submissions of one refund at most; then it is `failed` for an operator to look at.
pub const REFUND_ATTEMPTS_MAX: i64 = 20;
/// The longest wait between two submissions of one refund.
pub(super) const REFUND_BACKOFF_MAX_S: i64 = 3_600;

/// Sends due refunds to their provider; the outcome arrives by webhook. Each refund backs off on
/// its own (1 s, 2 s, 4 s … up to an hour), so refunds that keep failing never hold up newer
/// ones; a refund the provider refuses, or one with no payment to refund, is `failed` at once,
/// and one still unsent after [`REFUND_ATTEMPTS_MAX`] tries too.
///
/// # Errors
/// Fails when the database does.
pub async fn submit_pending_refunds(state: &Payments) -> ApiResult<u64> {
    // A returned payment is refunded from that payment, in its own currency.
    let due: Vec<(String, i64, String, Option<String>, String, i64)> = sqlx::query_as(
        "select r.id, r.amount_micros, coalesce(p.currency, o.currency), coalesce(r.payment_id, o.provider_payment), \
         o.provider, r.attempts from refund r join payment_order o on o.id = r.order_id \
         left join provider_payment p on p.provider = o.provider and p.payment_id = r.payment_id \
         where r.status = 'pending' and r.kind = 'refund' and r.next_attempt_at <= $1 and o.status <> 'disputed' \
         order by r.next_attempt_at, r.id limit 20",
    )
    .bind(now_micros())
    .fetch_all(state.db().pool())
    .await?;
    let mut submitted = 0;
    for (refund_id, amount_micros, currency, payment_id, provider_name, attempts) in due {
        let outcome = match (payment_id, state.provider(&provider_name)) {
            (None, _) => {
                Err(crate::payments::provider::refused("the order has no provider payment to refund"))
            }
            (_, None) => Err(crate::payments::provider::refused(&format!(
                "provider `{provider_name}` is not configured"
            ))),
            (Some(payment_id), Some(provider)) => {
                let currency = MoneyCurrency::parse(&currency).map_err(|error| corrupt("currency", error))?;
                let call = RefundCall {
                    idempotency_key: refund_id.clone(),
                    payment_id,
                    amount: Money::from_micros(currency, amount_micros),
                };
                provider.refund(&call).await
            }
        };
        let now = now_micros();
        let mut tx = state.db().begin_write().await?;
        match outcome {
            Ok(accepted) => {
                sqlx::query("update refund set status = 'submitted', provider_refund = $2, updated_at = $3, attempts = attempts + 1 \
                             where id = $1 and status = 'pending'")
                    .bind(&refund_id)
                    .bind(&accepted.id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                submitted += 1;
            }
            Err(error) => {
                let attempts = attempts + 1;
                let final_refusal = error.status().is_client_error() || attempts >= REFUND_ATTEMPTS_MAX;
                let message = error.to_string();
                tracing::warn!(%message, refund = %refund_id, attempts, final_refusal, "a refund was not sent to the provider");
                let backoff_s = 1_i64
                    .checked_shl(u32::try_from(attempts).unwrap_or(31).min(31))
                    .unwrap_or(i64::MAX)
                    .min(REFUND_BACKOFF_MAX_S);
                sqlx::query(
                    "update refund set status = $2, attempts = $3, next_attempt_at = $4, last_error = $5, updated_at = $6 \
                     where id = $1 and status = 'pending'",
                )
                .bind(&refund_id)
                .bind(if final_refusal { "failed" } else { "pending" })
                .bind(attempts)
                .bind(now + backoff_s * 1_000_000)
                .bind(&message)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if final_refusal {
                    metrics::counter!("coinslot_refunds_failed_total").increment(1);
                }
            }
        }
        tx.commit().await?;
    }
    Ok(submitted)
}
