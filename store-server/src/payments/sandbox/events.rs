//! Events: what the sandbox emits for each payment, refund and dispute, and its events API
//! (`GET /sandbox/v1/events?after=`), which reconciliation reads.

use super::*;

/// Records an event and schedules its deliveries, as the test controls say.
pub(super) async fn emit(
    sandbox: &Sandbox,
    conn: &mut sqlx::AnyConnection,
    event_type: &str,
    data: serde_json::Value,
    delay: Duration,
) -> ApiResult<()> {
    let id = random_id("evt");
    let controls = {
        let mut controls = sandbox.0.controls.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = *controls;
        controls.lose_next = controls.lose_next.saturating_sub(1);
        current
    };
    // An event happens when its first delivery is due (a dispute comes later than its payment);
    // the events API lists it from then on.
    let happens_at = now_micros()
        + i64::try_from(delay.as_micros()).unwrap_or(i64::MAX / 2)
        + i64::try_from(controls.delay_ms).unwrap_or(0) * 1_000;
    let envelope = EventEnvelope {
        id: id.clone(),
        event_type: event_type.to_owned(),
        created: happens_at / 1_000_000,
        data,
    };
    let payload = serde_json::to_string(&envelope).map_err(anyhow::Error::from)?;
    sqlx::query("insert into sandbox_event (id, event_type, payload, created_at) values ($1, $2, $3, $4)")
        .bind(&id)
        .bind(event_type)
        .bind(&payload)
        .bind(happens_at)
        .execute(&mut *conn)
        .await?;
    let base_due = happens_at;
    let deliveries = if controls.lose_next > 0 { 0 } else { controls.duplicates + 1 };
    for _ in 0..deliveries {
        let jitter =
            if controls.reorder_ms > 0 { rand::rng().random_range(0..=controls.reorder_ms) } else { 0 };
        sqlx::query("insert into sandbox_delivery (event_id, due_at) values ($1, $2)")
            .bind(&id)
            .bind(base_due + i64::try_from(jitter).unwrap_or(0) * 1_000)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// `{idempotency_key, payment_id, amount}`: refunds part or all of a payment.
#[utoipa::path(
    post, path = "/sandbox/v1/refunds", tag = "sandbox",
    request_body = Object,
    responses((status = 200, description = "The refund: {id}", body = Object), (status = 409, body = store_api::ErrorBody))
)]
pub(super) async fn create_refund(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<axum::Json<RefundAccepted>> {
    sandbox.check_api_key(&headers)?;
    let call: RefundCall = parse_json(&body)?;
    let amount_micros = call.amount.to_micros().map_err(|error| ApiError::invalid("amount", error))?;
    let mut tx = sandbox.0.db.begin_write().await?;
    let existing: Option<String> =
        sqlx::query_scalar("select id from sandbox_refund where idempotency_key = $1")
            .bind(&call.idempotency_key)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(id) = existing {
        return Ok(axum::Json(RefundAccepted { id }));
    }
    let refundable: Option<i64> = sqlx::query_scalar(
        "update sandbox_payment set refunded_micros = refunded_micros + $2 \
         where id = $1 and refunded_micros + $2 <= amount_micros returning amount_micros - refunded_micros",
    )
    .bind(&call.payment_id)
    .bind(amount_micros)
    .fetch_optional(&mut *tx)
    .await?;
    if refundable.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::RefundExceedsPaid,
            "the payment is unknown or has less left to refund",
        ));
    }
    let id = random_id("re");
    sqlx::query("insert into sandbox_refund (id, payment_id, idempotency_key, amount_micros, created_at) values ($1, $2, $3, $4, $5)")
        .bind(&id)
        .bind(&call.payment_id)
        .bind(&call.idempotency_key)
        .bind(amount_micros)
        .bind(now_micros())
        .execute(&mut *tx)
        .await?;
    let data = serde_json::json!({ "refund_id": id, "payment_id": call.payment_id, "idempotency_key": call.idempotency_key, "amount": call.amount });
    emit(&sandbox, &mut tx, "refund.succeeded", data, Duration::ZERO).await?;
    tx.commit().await?;
    Ok(axum::Json(RefundAccepted { id }))
}

/// A page of the events API.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    /// Events in the order they happened, as their webhooks carry them.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<EventEnvelope>,
    /// Pass as `after` for the next page; absent when there is none yet.
    pub next_cursor: Option<String>,
}

/// The `after` query of the events API.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    /// The `next_cursor` of the page before; from the first event when absent.
    after: Option<String>,
}

/// Events per page of the events API.
pub(super) const EVENTS_PAGE_MAX: i64 = 100;

/// Every event that has happened, oldest first, a page at a time, as Stripe's `GET /v1/events`
/// lists them: a store that missed a webhook (an outage longer than the retry window) finds it
/// here.
#[utoipa::path(
    get, path = "/sandbox/v1/events", tag = "sandbox",
    params(EventsQuery),
    responses((status = 200, body = EventPage), (status = 401, body = store_api::ErrorBody))
)]
pub(super) async fn list_events(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<EventsQuery>,
) -> ApiResult<axum::Json<EventPage>> {
    sandbox.check_api_key(&headers)?;
    let (after_at, after_id) = match query.after.as_deref().map(|cursor| cursor.split_once(':')) {
        None => (i64::MIN, String::new()),
        Some(Some((at, id))) => {
            (at.parse().map_err(|_| ApiError::invalid("after", "not a cursor of this API"))?, id.to_owned())
        }
        Some(None) => return Err(ApiError::invalid("after", "not a cursor of this API")),
    };
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "select id, payload, created_at from sandbox_event where created_at <= $1 \
         and (created_at > $2 or (created_at = $2 and id > $3)) order by created_at, id limit $4",
    )
    .bind(now_micros())
    .bind(after_at)
    .bind(&after_id)
    .bind(EVENTS_PAGE_MAX)
    .fetch_all(sandbox.0.db.pool())
    .await?;
    let next_cursor = rows.last().map(|(id, _, at)| format!("{at}:{id}"));
    let events = rows
        .iter()
        .map(|(_, payload, _)| serde_json::from_str(payload).map_err(|error| anyhow::anyhow!(error).into()))
        .collect::<ApiResult<Vec<EventEnvelope>>>()?;
    Ok(axum::Json(EventPage { events, next_cursor: next_cursor.or(query.after) }))
}
