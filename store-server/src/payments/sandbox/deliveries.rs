//! Webhook deliveries: signed, retried with exponential backoff up to the configured attempts,
//! then given up on, as a real provider does.

use super::*;

/// Delivers due webhooks until the task is dropped: every `tick`, each due delivery is sent
/// (concurrently), signed at the moment of sending; a non-2xx answer or a failure schedules a
/// retry with exponential backoff, up to [`DELIVERY_ATTEMPTS_MAX`] attempts.
pub async fn run_deliveries(sandbox: Sandbox, tick: Duration) {
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = deliver_due(&sandbox).await {
            tracing::warn!(%error, "sandbox webhook delivery failed to run");
        }
    }
}

pub(super) async fn deliver_due(sandbox: &Sandbox) -> ApiResult<()> {
    let due: Vec<(i64, String, i64)> = sqlx::query_as(
        "select d.id, e.payload, d.attempts from sandbox_delivery d join sandbox_event e on e.id = d.event_id \
         where d.delivered_at is null and d.attempts < $1 and d.due_at <= $2 order by d.due_at, d.id limit $3",
    )
    .bind(sandbox.0.delivery_attempts_max)
    .bind(now_micros())
    .bind(DELIVERY_BATCH_MAX)
    .fetch_all(sandbox.0.db.pool())
    .await?;
    if due.is_empty() {
        return Ok(());
    }
    let attempts = due.into_iter().map(|(id, payload, attempts)| async move {
        let dropped = {
            let mut controls = sandbox.0.controls.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let drop_this = controls.drop_first > 0;
            controls.drop_first = controls.drop_first.saturating_sub(1);
            drop_this
        };
        let outcome = if dropped {
            Err("dropped by the drop_first test control".to_owned())
        } else {
            send_webhook(sandbox, &payload).await
        };
        (id, attempts, outcome)
    });
    let outcomes = futures_util::future::join_all(attempts).await;
    let mut tx = sandbox.0.db.begin_write().await?;
    for (id, attempts, outcome) in outcomes {
        match outcome {
            Ok(()) => {
                sqlx::query(
                    "update sandbox_delivery set delivered_at = $2, attempts = attempts + 1 where id = $1",
                )
                .bind(id)
                .bind(now_micros())
                .execute(&mut *tx)
                .await?;
            }
            Err(error) => {
                let backoff_ms = (200_i64 << attempts.clamp(0, 20)).min(DELIVERY_BACKOFF_MAX_MS);
                sqlx::query("update sandbox_delivery set attempts = attempts + 1, due_at = $2, last_error = $3 where id = $1")
                    .bind(id)
                    .bind(now_micros() + backoff_ms * 1_000)
                    .bind(error)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn send_webhook(sandbox: &Sandbox, payload: &str) -> Result<(), String> {
    let signature = sign_webhook(&sandbox.0.webhook_secret, now_micros() / 1_000_000, payload.as_bytes());
    let response = sandbox
        .0
        .http
        .post(&sandbox.0.webhook_url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .body(payload.to_owned())
        .send()
        .await
        .map_err(|error| format!("not delivered: {error}"))?;
    if response.status().is_success() { Ok(()) } else { Err(format!("answered {}", response.status())) }
}
