//! Purchases made in a platform's own store and redeemed here: the game buys through StoreKit
//! (the App Store) or the Play Billing Library (Google Play) and hands the platform's proof of
//! purchase to the server, which verifies it ([`apple`], [`google`]), grants the offer the
//! product is sold as, once per platform transaction (across players), and books the real money
//! the platform says was paid.
//!
//! A redemption is an order like any other, opened and paid in one transaction: its provider is
//! the platform (`app_store`, `google_play`), its session and payment the platform's transaction
//! (Google's order id), its amount what the player paid and its fee the platform's share. A Google
//! Play purchase must also be acknowledged or consumed: the redemption writes that work in the
//! same transaction ([`acknowledge_due`] does it, and retries it). So refunds and revocations
//! reported later claw back through the orders' own code, and analytics count it as revenue.
//! The platform charged the player before the store heard of it, so the store's own limits
//! (spending limits, velocity) do not refuse a redemption; a blocked player is refused.

pub mod apple;
pub mod google;

use axum::http::StatusCode;
use futures_util::future::BoxFuture;
use sqlx::AnyConnection;
use store_api::orders::Order;
use store_api::{ErrorCode, Money};
use uuid::Uuid;

use crate::db::now_micros;
use crate::error::{ApiError, ApiResult};
use crate::ledger::group_commit::{BatchJob, Done};
use crate::ledger::lock_player;
use crate::payments::Payments;
use crate::payments::orders::{NewOrder, find_order, insert_order, order_detail, payment_succeeded};
use crate::payments::provider::PaymentReport;

/// A platform's purchase, verified: what a redemption grants and books.
#[derive(Debug, Clone)]
pub struct PlatformPurchase {
    /// `app_store`, `google_play`.
    pub platform: &'static str,
    /// The platform's transaction id (Google's order id): redeemed once.
    pub transaction_id: String,
    /// The platform's product id, which names the offer.
    pub product_id: String,
    /// How many.
    pub quantity: i64,
    /// What the player paid.
    pub price: Money,
    /// What the platform keeps of it (its commission, and the tax it remits).
    pub fee: Money,
    /// The player the game bought it for (StoreKit's `appAccountToken`, Google's
    /// `obfuscatedExternalAccountId`), when it said.
    pub bought_for: Option<Uuid>,
    /// What the platform must still be told once the purchase is granted (Google Play).
    pub acknowledgement: Option<PendingAcknowledgement>,
}

/// A Google Play purchase not yet acknowledged or consumed.
#[derive(Debug, Clone)]
pub struct PendingAcknowledgement {
    /// The token that names the purchase.
    pub purchase_token: String,
    /// Whether Google says it is acknowledged already.
    pub acknowledged: bool,
    /// Whether Google says it is consumed already.
    pub consumed: bool,
}

/// 400 `platform_proof_invalid`, naming the check that failed.
pub(crate) fn proof_invalid(reason: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::PlatformProofInvalid, message)
        .with_detail("reason", reason)
}

/// Redeems a verified purchase for a player, in the writer's next batch: `201` with the order
/// fulfilled, or `200` with the same order when this player redeemed it before.
#[derive(Debug)]
pub struct RedeemJob {
    /// The catalog, the settings and the writer.
    pub payments: Payments,
    /// Who redeems it.
    pub player_id: Uuid,
    /// What was bought.
    pub purchase: PlatformPurchase,
}

impl RedeemJob {
    async fn apply(&self, conn: &mut AnyConnection) -> ApiResult<(StatusCode, Order)> {
        let Self { payments, player_id, purchase } = self;
        lock_player(conn, *player_id).await?.refuse_if_blocked()?;
        if purchase.bought_for.is_some_and(|player| player != *player_id) {
            return Err(proof_invalid("account", "the purchase was made for another player"));
        }
        // Once per transaction, whoever asks: the first redemption holds it.
        if let Some(redeemed) = self.redeemed(conn).await? {
            return Ok((StatusCode::OK, redeemed));
        }
        let catalog = payments.catalog_cache().get(conn).await?;
        let offer = catalog.platform_offer(purchase.platform, &purchase.product_id).ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::OfferNotAvailable,
                format!("no live offer is sold as {} product `{}`", purchase.platform, purchase.product_id),
            )
            .with_detail("reason", "platform_product")
        })?;
        let offer_id = offer.id.to_string();
        let order_id = Uuid::now_v7();
        let record = insert_order(
            conn,
            &NewOrder {
                id: order_id,
                player_id: *player_id,
                offer_id: &offer_id,
                sku: offer.sku.as_str(),
                quantity: purchase.quantity,
                price_index: 0,
                total: purchase.price,
                provider: purchase.platform,
                session: &purchase.transaction_id,
                checkout_url: "",
                catalog_version: catalog.version,
                expires_at: now_micros(),
                variant: None,
                stock_taken: 0,
                delivery_consent: false,
            },
        )
        .await
        .map_err(|error| self.raced(error))?;
        let fee = purchase.fee;
        let report = PaymentReport {
            session_id: purchase.transaction_id.clone(),
            payment_id: purchase.transaction_id.clone(),
            reference: record.id.to_string(),
            amount: purchase.price,
            fee,
        };
        let cause = format!("{} transaction {}", purchase.platform, purchase.transaction_id);
        payment_succeeded(conn, payments, purchase.platform, &report, &cause).await?;
        // A redemption on another writer may have booked the transaction first (the payment's
        // key lets one in): this one then grants nothing, and is undone (its savepoint) with a
        // 409 that says to ask again, which answers the order that holds it.
        if self.holder(conn).await? != Some(order_id) {
            return Err(raced());
        }
        if let Some(work) = &purchase.acknowledgement {
            // A durable item stays owned on the platform too (acknowledged); anything else is
            // consumed, so the player can buy it again.
            let durable = catalog
                .item(&offer.sku)
                .is_some_and(|item| item.kind == store_api::catalog::ItemKind::Durable);
            let done = if durable { work.acknowledged } else { work.consumed };
            if !done {
                sqlx::query(
                    "insert into platform_acknowledgement (order_id, provider, product_id, purchase_token, action, next_attempt_at) \
                     values ($1, $2, $3, $4, $5, $6)",
                )
                .bind(order_id.to_string())
                .bind(purchase.platform)
                .bind(&purchase.product_id)
                .bind(&work.purchase_token)
                .bind(if durable { "acknowledge" } else { "consume" })
                .bind(now_micros())
                .execute(&mut *conn)
                .await?;
            }
        }
        let record = find_order(conn, order_id).await?.ok_or_else(|| anyhow::anyhow!("order vanished"))?;
        Ok((StatusCode::CREATED, order_detail(conn, &record).await?))
    }

    /// A redemption of the same transaction committed first on another writer (its order holds
    /// the transaction as its session): `409 request_in_progress`.
    fn raced(&self, error: ApiError) -> ApiError {
        match &error {
            ApiError::Database(sqlx::Error::Database(database)) if database.is_unique_violation() => raced(),
            _ => error,
        }
    }

    /// The order the transaction's payment was booked for, if it was.
    async fn holder(&self, conn: &mut AnyConnection) -> ApiResult<Option<Uuid>> {
        let order_id: Option<String> = sqlx::query_scalar(
            "select order_id from provider_payment where provider = $1 and payment_id = $2",
        )
        .bind(self.purchase.platform)
        .bind(&self.purchase.transaction_id)
        .fetch_optional(&mut *conn)
        .await?;
        order_id.map(|id| Uuid::parse_str(&id).map_err(|error| anyhow::anyhow!(error).into())).transpose()
    }

    /// The order that redeemed this transaction, if one did: for this player, that order again;
    /// for another player, `409 already_exists`.
    async fn redeemed(&self, conn: &mut AnyConnection) -> ApiResult<Option<Order>> {
        let Some(order_id) = self.holder(conn).await? else { return Ok(None) };
        let record = find_order(conn, order_id).await?.ok_or_else(|| anyhow::anyhow!("order vanished"))?;
        if record.player_id != self.player_id {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::AlreadyExists,
                "this purchase was redeemed by another player",
            ));
        }
        Ok(Some(order_detail(conn, &record).await?))
    }
}

/// Another redemption of the same transaction won: this one is undone (its savepoint), and the
/// game asks again for the order that holds the transaction.
fn raced() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::RequestInProgress,
        "this purchase was being redeemed at the same moment; send it again for the order that holds it",
    )
}

impl BatchJob for RedeemJob {
    fn run<'a>(&'a self, conn: &'a mut AnyConnection) -> BoxFuture<'a, ApiResult<Done>> {
        Box::pin(async move {
            let (status, order) = self.apply(conn).await?;
            let body = serde_json::to_vec(&order).map_err(anyhow::Error::from)?;
            Ok(Done { status, body: body.into(), replayed: false })
        })
    }
}

/// How many acknowledgements one pass sends at most.
const ACKNOWLEDGEMENTS_PER_PASS: i64 = 50;

/// How long a claimed acknowledgement is left to the one sending it (Google answers in seconds).
const ACKNOWLEDGEMENT_LEASE_S: i64 = 60;

/// The longest wait between two attempts at one acknowledgement: Google refunds a purchase left
/// unacknowledged for three days, so it is tried at least hourly.
const ACKNOWLEDGEMENT_BACKOFF_MAX_S: i64 = 3_600;

/// Tells the platforms the purchases redeemed here were delivered (acknowledged or consumed):
/// those due, or the one purchase `token` names (a redemption's own request tries at once). A
/// failure waits twice as long as the one before (1 s, 2 s, … an hour at most), until the
/// platform confirms. Returns how many were done.
///
/// # Errors
/// Fails when the database does; a platform that fails leaves its work for the next attempt.
pub async fn acknowledge_due(state: &Payments, token: Option<&str>) -> ApiResult<u64> {
    let now = now_micros();
    let rows: Vec<(String, String, String, String, String, i64)> = sqlx::query_as(
        "select order_id, provider, product_id, purchase_token, action, attempts from platform_acknowledgement \
         where done_at is null and next_attempt_at <= $1 and ($2 = '' or purchase_token = $2) \
         order by next_attempt_at limit $3",
    )
    .bind(now)
    .bind(token.unwrap_or_default())
    .bind(ACKNOWLEDGEMENTS_PER_PASS)
    .fetch_all(state.db().pool())
    .await?;
    let mut done = 0;
    for (order_id, provider, product_id, purchase_token, action, attempts) in rows {
        let Some(adapter) = state.provider(&provider) else { continue };
        // Claimed first (its next attempt moved past the call's time), so the request and the
        // workers, or two instances, never send the same acknowledgement at once.
        let mut tx = state.db().begin_write().await?;
        let claimed = sqlx::query(
            "update platform_acknowledgement set next_attempt_at = $3 \
             where order_id = $1 and done_at is null and next_attempt_at <= $2",
        )
        .bind(&order_id)
        .bind(now)
        .bind(now_micros() + ACKNOWLEDGEMENT_LEASE_S * 1_000_000)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        tx.commit().await?;
        if !claimed {
            continue;
        }
        let outcome = adapter.acknowledge_purchase(&product_id, &purchase_token, action == "consume").await;
        let mut tx = state.db().begin_write().await?;
        match outcome {
            Ok(()) => {
                done += 1;
                sqlx::query(
                    "update platform_acknowledgement set done_at = $2, attempts = attempts + 1, last_error = null \
                     where order_id = $1",
                )
                .bind(&order_id)
                .bind(now_micros())
                .execute(&mut *tx)
                .await?;
            }
            Err(error) => {
                let wait_s =
                    1_i64.checked_shl(u32::try_from(attempts.clamp(0, 12)).unwrap_or(12)).unwrap_or(1);
                tracing::warn!(%error, order_id, action, "a platform purchase could not be acknowledged; retrying");
                sqlx::query(
                    "update platform_acknowledgement set attempts = attempts + 1, next_attempt_at = $2, last_error = $3 \
                     where order_id = $1",
                )
                .bind(&order_id)
                .bind(now_micros() + wait_s.min(ACKNOWLEDGEMENT_BACKOFF_MAX_S) * 1_000_000)
                .bind(error.to_string())
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
    }
    Ok(done)
}

/// Where a platform's history (Google's voided purchases, Apple's notification history) is read
/// from next: `<start ms>` for a fresh read, `<start ms>:<end ms>:<page token>` to continue one
/// (a continued read repeats its first request's window, as both APIs ask).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HistoryCursor {
    /// The window's start, Unix milliseconds; `None` before the first read.
    pub start_ms: Option<i64>,
    /// The page to continue, and its window's end.
    pub page: Option<(i64, String)>,
}

/// How much of the last window the next read covers again (the platform may record an event a
/// little late; events read twice are applied once).
const HISTORY_OVERLAP_MS: i64 = 3_600 * 1_000;

impl HistoryCursor {
    /// Reads a stored cursor; anything unreadable starts afresh.
    pub fn parse(cursor: Option<&str>) -> Self {
        let mut parts = cursor.unwrap_or_default().splitn(3, ':');
        let start_ms = parts.next().and_then(|start| start.parse().ok());
        let page = match (parts.next().and_then(|end| end.parse().ok()), parts.next()) {
            (Some(end), Some(token)) if !token.is_empty() => Some((end, token.to_owned())),
            _ => None,
        };
        Self { start_ms, page }
    }

    /// The cursor that continues this window at `token`.
    pub fn continued(start_ms: i64, end_ms: i64, token: &str) -> String {
        format!("{start_ms}:{end_ms}:{token}")
    }

    /// The cursor after a window read to its end (`latest_ms`, the newest event seen, or the
    /// window's end): an hour before it, in whole minutes, so reading the same window twice in
    /// a pass gives the same cursor (and the pass stops).
    pub fn after(start_ms: i64, latest_ms: i64) -> String {
        let next = (latest_ms - HISTORY_OVERLAP_MS).max(start_ms);
        (next - next.rem_euclid(60_000)).to_string()
    }
}

/// Reads a platform's history at most once per interval (its API's quota), unless continuing a
/// page.
#[derive(Debug)]
pub(crate) struct PollThrottle {
    every: std::time::Duration,
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

impl PollThrottle {
    pub fn new(every: std::time::Duration) -> Self {
        Self { every, last: std::sync::Mutex::new(None) }
    }

    /// Whether a fresh read may start now (and, if so, it counts as started).
    pub fn due(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < self.every) {
            return false;
        }
        *last = Some(std::time::Instant::now());
        true
    }
}
