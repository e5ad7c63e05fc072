//! Provider events applied once, however they arrive: pushed as a webhook, or pulled back from
//! the provider's events API by reconciliation, which repairs whatever a lost webhook (a store
//! outage longer than the provider's retry window) left behind.
//!
//! Both paths run the same job: deduplicate by event id (the `webhook_event` row commits with
//! the work), then apply the event. Payments are also booked once per payment id, so the same
//! payment reported by two events (a webhook and the session lookup before expiry) counts once.

use axum::http::StatusCode;
use futures_util::future::BoxFuture;
use sqlx::AnyConnection;

use crate::db::now_micros;
use crate::error::{ApiError, ApiResult};
use crate::ledger::group_commit::{BatchJob, Done};
use crate::payments::Payments;
use crate::payments::orders::{
    dispute_opened, dispute_won, payment_disputed, payment_failed, payment_succeeded, refund_failed,
    refund_succeeded, refunded_at_provider,
};
use crate::payments::provider::{PaymentReport, ProviderEvent, VerifiedEvent};

/// What applying an event came to: `processed`, `duplicate` or `ignored`.
pub type EventOutcome = &'static str;

/// Applies a provider's event once per event id, in the group-commit writer's next batch like a
/// purchase (fulfilment moves money). What the event only names (the payment that paid a
/// session, the refunds of a payment) is read from the provider first
/// ([`crate::payments::provider::PaymentProvider::resolve`]), unless the event was applied
/// already.
///
/// # Errors
/// `not_found` for an unknown session, payment or refund; `order_state_conflict` for an event
/// that arrived before what it depends on, or that the provider does not confirm yet (retry
/// later); the provider cannot be reached; database failures.
pub async fn apply_event(
    state: &Payments,
    provider: &'static str,
    verified: VerifiedEvent,
) -> ApiResult<EventOutcome> {
    let seen: Option<i64> =
        sqlx::query_scalar("select 1 from webhook_event where provider = $1 and event_id = $2")
            .bind(provider)
            .bind(&verified.id)
            .fetch_optional(state.db().pool())
            .await?;
    if seen.is_some() {
        return Ok("duplicate");
    }
    let VerifiedEvent { id, event_type, event } = verified;
    let events = match state.provider(provider) {
        Some(adapter) => adapter.resolve(event).await?,
        None => vec![event],
    };
    let job = EventJob { payments: state.clone(), provider, id, event_type, events };
    let done = state.writer().run(Box::new(job)).await?;
    match done.body.as_ref() {
        b"processed" => Ok("processed"),
        b"duplicate" => Ok("duplicate"),
        b"ignored" => Ok("ignored"),
        other => Err(anyhow::anyhow!("unexpected event outcome {:?}", String::from_utf8_lossy(other)).into()),
    }
}

/// A verified event's effect (what it came to once resolved: a charge refunded twice is two
/// refunds), run once per event id inside a (possibly shared) transaction.
struct EventJob {
    payments: Payments,
    provider: &'static str,
    id: String,
    event_type: String,
    events: Vec<ProviderEvent>,
}

impl EventJob {
    async fn apply(&self, conn: &mut AnyConnection) -> ApiResult<EventOutcome> {
        let Self { payments: state, provider, id, event_type, events } = self;
        let provider = *provider;
        let fresh = sqlx::query(
            "insert into webhook_event (provider, event_id, event_type, received_at) values ($1, $2, $3, $4) \
             on conflict (provider, event_id) do nothing",
        )
        .bind(provider)
        .bind(id)
        .bind(event_type)
        .bind(now_micros())
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            return Ok("duplicate");
        }
        let cause = format!("webhook {event_type} {id}");
        let mut outcome = "ignored";
        for event in events {
            match event {
                ProviderEvent::PaymentSucceeded(report) => {
                    payment_succeeded(conn, state, provider, report, &cause).await?;
                }
                ProviderEvent::PaymentFailed { session_id, reason } => {
                    payment_failed(conn, provider, session_id, reason, &cause).await?;
                }
                ProviderEvent::RefundSucceeded { refund_id, provider_refund_id } => {
                    refund_succeeded(conn, state, *refund_id, provider_refund_id, &cause).await?;
                }
                ProviderEvent::RefundedAtProvider { payment_id, provider_refund_id, amount } => {
                    refunded_at_provider(
                        conn,
                        state,
                        provider,
                        payment_id,
                        provider_refund_id,
                        *amount,
                        &cause,
                    )
                    .await?;
                }
                ProviderEvent::RefundFailed { refund_id, reason } => {
                    refund_failed(conn, *refund_id, reason).await?;
                }
                ProviderEvent::DisputeOpened { payment_id } => {
                    dispute_opened(conn, provider, payment_id, &cause).await?;
                }
                ProviderEvent::DisputeWon { payment_id } => {
                    dispute_won(conn, provider, payment_id, &cause).await?;
                }
                ProviderEvent::PaymentDisputed { payment_id, amount } => {
                    payment_disputed(conn, state, provider, payment_id, *amount, &cause).await?;
                }
                // Resolved before the job runs; one that was not names nothing booked yet.
                ProviderEvent::SessionPaid { session_id } => {
                    return Err(crate::payments::provider::not_confirmed(&format!(
                        "checkout session {session_id} was not read back from the provider"
                    )));
                }
                // Answered through the provider's API before the job ran.
                ProviderEvent::ConsumptionRequested { .. } => {}
                ProviderEvent::PaymentRefunded { .. } | ProviderEvent::Ignored => continue,
            }
            outcome = "processed";
        }
        Ok(outcome)
    }
}

impl BatchJob for EventJob {
    fn run<'a>(&'a self, conn: &'a mut AnyConnection) -> BoxFuture<'a, ApiResult<Done>> {
        Box::pin(async move {
            let outcome = self.apply(conn).await?;
            Ok(Done { status: StatusCode::OK, body: outcome.as_bytes().to_vec().into(), replayed: false })
        })
    }
}

/// Whether an event that failed should be tried again later (it waits for another event, or
/// the store failed) rather than skipped (the provider's own event names nothing of ours).
fn try_later(error: &ApiError) -> bool {
    matches!(error.status(), StatusCode::CONFLICT) || error.status().is_server_error()
}

fn cursor_key(provider: &str) -> String {
    format!("reconcile_cursor:{provider}")
}

/// Pages of events read per provider in one pass at most, so a pass is bounded.
const PAGES_PER_PASS_MAX: usize = 20;

/// One reconciliation pass: for each provider, the events since the stored cursor, applied in
/// order (each once: a webhook may have applied it already). The cursor moves past every event
/// applied or skipped and stops at the first that must wait (a dispute before its payment, a
/// store failure), which the next pass tries again. Returns how many events were new.
///
/// # Errors
/// Fails when the database does; a provider that cannot be reached is skipped until next time.
pub async fn reconcile_events(state: &Payments) -> ApiResult<u64> {
    let mut applied = 0;
    for provider in state.providers() {
        let key = cursor_key(provider.name());
        let mut cursor: Option<String> = sqlx::query_scalar("select value from meta where key = $1")
            .bind(&key)
            .fetch_optional(state.db().pool())
            .await?;
        'pages: for _ in 0..PAGES_PER_PASS_MAX {
            let page = match provider.events_since(cursor.as_deref()).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%error, provider = provider.name(), "reconciliation could not list events");
                    break;
                }
            };
            let last_page = page.events.is_empty();
            for event in page.events {
                let outcome = match event {
                    Ok(verified) => apply_event(state, provider.name(), verified).await,
                    Err(error) => Err(error),
                };
                match outcome {
                    Ok("processed") => applied += 1,
                    Ok(_) => {}
                    // The cursor stays at the page's start: the next pass reads the page again
                    // (what was applied is a duplicate then) and tries this event once more.
                    Err(error) if try_later(&error) => {
                        tracing::info!(%error, provider = provider.name(), "reconciliation waits on an event");
                        break 'pages;
                    }
                    Err(error) => {
                        tracing::warn!(%error, provider = provider.name(), "reconciliation skips an event it cannot apply");
                    }
                }
            }
            let reached = page.next_cursor.or_else(|| cursor.clone());
            save_cursor(state, &key, reached.as_deref()).await?;
            if last_page || reached == cursor {
                break;
            }
            cursor = reached;
        }
    }
    Ok(applied)
}

async fn save_cursor(state: &Payments, key: &str, cursor: Option<&str>) -> ApiResult<()> {
    let Some(cursor) = cursor else { return Ok(()) };
    let mut tx = state.db().begin_write().await?;
    sqlx::query("insert into meta (key, value) values ($1, $2) on conflict (key) do update set value = $2")
        .bind(key)
        .bind(cursor)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Asks the provider whether an order's checkout session was paid, and applies that payment if
/// so: the expiry sweeper's question before it gives up on an order. `Ok(true)` when a payment
/// was found (and applied, or found applied already).
///
/// # Errors
/// The provider cannot be reached (the order then waits for the next sweep), or the payment
/// cannot be applied.
pub async fn apply_session_payment(
    state: &Payments,
    provider: &'static str,
    session_id: &str,
) -> ApiResult<bool> {
    let Some(adapter) = state.provider(provider) else { return Ok(false) };
    // Closed first, so it cannot be paid between the question and the order's expiry.
    adapter.close_checkout(session_id).await?;
    let Some(report) = adapter.session_payment(session_id).await? else { return Ok(false) };
    apply_event(state, provider, session_event(report)).await?;
    Ok(true)
}

/// The payment a session lookup found, as an event of its own: its id names the payment, so
/// looking it up twice applies it once (and the payment itself is booked once per payment id).
fn session_event(report: PaymentReport) -> VerifiedEvent {
    VerifiedEvent {
        id: format!("session-lookup:{}", report.payment_id),
        event_type: "payment.succeeded".to_owned(),
        event: ProviderEvent::PaymentSucceeded(report),
    }
}

/// What the game reports about the provider's purchase dialog (Steam's overlay), asked of the
/// provider and applied: the payment it finalized, or the order's failure. Each outcome is an
/// event of its own id, so reports repeated (or crossing the expiry sweeper's lookup) apply once.
///
/// # Errors
/// `409` while the provider has not recorded the outcome; the provider cannot be reached or
/// could not finalize (the game reports again, or the sweeper asks before the order expires).
pub async fn apply_client_authorization(
    state: &Payments,
    provider: &'static str,
    session_id: &str,
    authorized: bool,
) -> ApiResult<()> {
    let Some(adapter) = state.provider(provider) else { return Ok(()) };
    for event in adapter.client_authorization(session_id, authorized).await? {
        let verified = match event {
            ProviderEvent::PaymentSucceeded(report) => session_event(report),
            event => VerifiedEvent {
                id: format!("client-report:{session_id}"),
                event_type: "client.authorization".to_owned(),
                event,
            },
        };
        apply_event(state, provider, verified).await?;
    }
    Ok(())
}
