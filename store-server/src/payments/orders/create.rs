//! Pricing an order and opening it: the price quoted once, the checks on the player (flagged,
//! velocity, spending limits, purchase limits and stock) and the operation that records it.

use super::*;

/// The offer, item, price index and total of an order request, priced from the live catalog.
#[derive(Debug)]
pub struct Priced<'c> {
    /// The offer.
    pub offer: &'c Offer,
    /// The item.
    pub item: &'c Item,
    /// Which price.
    pub price_index: u32,
    /// Price x quantity.
    pub total: Money,
    /// The experiment variant the price comes from.
    pub variant: Option<String>,
}

/// Prices an order request and checks the amount against the minimum charge and the order limit.
/// With a `currency` (the one the provider charges this player in), only a price in it will do.
///
/// # Errors
/// `offer_not_available`, `price_requires_purchase`, `invalid_request`, `amount_below_minimum`,
/// `amount_above_maximum`.
pub fn price_order<'c>(
    catalog: &'c RenderedCatalog,
    request: &CreateOrderRequest,
    buyer: &crate::store::pricing::Buyer,
    currency: Option<MoneyCurrency>,
) -> ApiResult<Priced<'c>> {
    let offer = catalog.offer(request.offer_id).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::OfferNotAvailable,
            format!("offer `{}` is not in the live catalog", request.offer_id),
        )
        .with_detail("reason", "unknown")
    })?;
    crate::store::operations::check_sale_window(offer, crate::db::now())?;
    let item = catalog
        .item(&offer.sku)
        .ok_or_else(|| anyhow::anyhow!("live offer {} sells unknown sku {}", offer.id, offer.sku))?;
    let requires_purchase = || {
        ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::PriceRequiresPurchase,
            "this price is virtual currency or settles on a tab; buy it with POST /v1/purchases",
        )
    };
    let (prices, variant) = crate::store::pricing::effective_prices(offer, buyer);
    let in_currency = |money: &Money| currency.is_none_or(|currency| money.currency == currency);
    let not_in_currency = || {
        let currency = currency.map(|currency| currency.code().to_owned()).unwrap_or_default();
        ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::OfferNotAvailable,
            format!(
                "offer `{}` has no price in {currency}, the currency the provider charges this player in",
                request.offer_id
            ),
        )
        .with_detail("reason", "currency")
    };
    let immediate = |price: &Price| matches!(price, Price::Real { settlement: Settlement::Immediate, .. });
    let (price_index, price) = crate::store::pricing::pick_price(
        prices,
        request.price_index,
        |price| immediate(price) && matches!(price, Price::Real { money, .. } if in_currency(money)),
        || {
            if currency.is_some() && prices.iter().any(immediate) {
                not_in_currency()
            } else {
                requires_purchase()
            }
        },
    )?;
    let Price::Real { money, settlement: Settlement::Immediate } = price else {
        return Err(requires_purchase());
    };
    if !in_currency(money) {
        return Err(not_in_currency());
    }
    crate::store::operations::refuse_durable_quantity(item, request.quantity.get())?;
    let total =
        Money { currency: money.currency, amount: money.amount * Decimal::from(request.quantity.get()) };
    let minimum = money.currency.minimum_charge();
    if total.amount < minimum.amount {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AmountBelowMinimum,
            format!("{total} is below the minimum card charge of {minimum}"),
        )
        .with_detail("minimum", minimum.amount_text()));
    }
    let maximum = Decimal::from(store_api::limits::ORDER_AMOUNT_UNITS_MAX);
    if total.amount > maximum {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AmountAboveMaximum,
            format!("{total} is above the largest single order"),
        )
        .with_detail("maximum", maximum.to_string()));
    }
    Ok(Priced { offer, item, price_index, total, variant: variant.map(str::to_owned) })
}

/// An order priced once, before its checkout session opens: the session charges `total`, and
/// the order records the same total, price and catalog version.
#[derive(Debug, Clone)]
pub struct OrderQuote {
    offer_id: String,
    sku: String,
    quantity: i64,
    price_index: u32,
    /// What the checkout charges.
    pub total: Money,
    catalog_version: i64,
    variant: Option<String>,
    delivery_consent: bool,
    /// For the checkout page.
    pub description: String,
}

impl OrderQuote {
    /// The item sold.
    #[must_use]
    pub fn sku(&self) -> &str {
        &self.sku
    }

    /// How many.
    #[must_use]
    pub fn quantity(&self) -> i64 {
        self.quantity
    }
}

/// Prices an order request and checks the player's limits without writing anything, so a
/// request the store would refuse never opens a checkout session. The order's own transaction
/// checks the limits again, at this price.
///
/// # Errors
/// As [`price_order`], and `spending_limit_exceeded`, `player_flagged`.
pub async fn precheck_order(
    conn: &mut AnyConnection,
    state: &Payments,
    player_id: Uuid,
    request: &CreateOrderRequest,
    currency: Option<MoneyCurrency>,
) -> ApiResult<OrderQuote> {
    check_delivery_consent(state.settings(), request.immediate_delivery_consent)?;
    check_velocity(conn, state, player_id).await?;
    let catalog = state.catalog_cache().get(conn).await?;
    let priced =
        price_order(&catalog, request, &crate::store::pricing::buyer(conn, player_id).await?, currency)?;
    let age_band = crate::ledger::age_band_of(conn, player_id).await?;
    check_spending(conn, state, player_id, age_band, priced.total).await?;
    Ok(OrderQuote {
        offer_id: priced.offer.id.to_string(),
        sku: priced.item.sku.as_str().to_owned(),
        quantity: request.quantity.get(),
        price_index: priced.price_index,
        total: priced.total,
        catalog_version: catalog.version,
        variant: priced.variant,
        delivery_consent: request.immediate_delivery_consent,
        description: format!("{} × {}", priced.item.name.as_str(), request.quantity.get()),
    })
}

/// 403 `player_flagged`.
pub(crate) fn player_flagged(reason: Option<String>) -> ApiError {
    let reason = reason.unwrap_or_else(|| "flagged for review".to_owned());
    ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::PlayerFlagged,
        format!("orders are paused while this player is reviewed ({reason}); an operator can clear the flag"),
    )
    .with_detail("reason", reason)
}

/// Refuses a new order from a flagged player.
pub(crate) async fn refuse_if_flagged(conn: &mut AnyConnection, player_id: Uuid) -> ApiResult<()> {
    let flag: Option<(Option<i64>, Option<String>)> =
        sqlx::query_as("select flagged_at, flag_reason from player where id = $1")
            .bind(player_id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    match flag {
        Some((Some(_), reason)) => Err(player_flagged(reason)),
        _ => Ok(()),
    }
}

/// The velocity check before a new order: a flagged player waits for review; a player with too
/// many orders (in 10 minutes) or declined payments (in an hour) is flagged now, in a
/// transaction of its own (so the flag stays although the order is refused), and refused.
pub(crate) async fn check_velocity(
    conn: &mut AnyConnection,
    state: &Payments,
    player_id: Uuid,
) -> ApiResult<()> {
    refuse_if_flagged(conn, player_id).await?;
    let now = now_micros();
    let window = |span: std::time::Duration| now - i64::try_from(span.as_micros()).unwrap_or(i64::MAX);
    let orders: i64 =
        sqlx::query_scalar("select count(*) from payment_order where player_id = $1 and created_at >= $2")
            .bind(player_id.to_string())
            .bind(window(crate::settings::VELOCITY_ORDERS_WINDOW))
            .fetch_one(&mut *conn)
            .await?;
    let declines: i64 = sqlx::query_scalar(
        "select count(*) from order_transition t join payment_order o on o.id = t.order_id \
         where o.player_id = $1 and t.to_status = 'failed' and t.created_at >= $2",
    )
    .bind(player_id.to_string())
    .bind(window(crate::settings::VELOCITY_DECLINES_WINDOW))
    .fetch_one(&mut *conn)
    .await?;
    let settings = state.settings();
    let reason = if orders >= i64::from(settings.velocity_orders_max) {
        format!("{orders} orders in 10 minutes")
    } else if declines >= i64::from(settings.velocity_declines_max) {
        format!("{declines} declined payments in an hour")
    } else {
        return Ok(());
    };
    let mut tx = state.db().begin_write().await?;
    flag_player(&mut tx, player_id, &reason, "system:velocity").await?;
    tx.commit().await?;
    tracing::warn!(%player_id, %reason, "velocity check flagged a player");
    Err(player_flagged(Some(reason)))
}

/// Checks the player's spending caps for a new order of `total`.
pub(crate) async fn check_spending(
    conn: &mut AnyConnection,
    state: &Payments,
    player_id: Uuid,
    age_band: AgeBand,
    total: Money,
) -> ApiResult<()> {
    let now = crate::db::now();
    let spent = spent_since(conn, player_id, total.currency, now).await?;
    spending_check(state.settings(), age_band, total, total, now, spent)
}

/// What the player's orders in `currency` count against the spending limits: (today, this
/// month), in micros.
pub(crate) async fn spent_since(
    conn: &mut AnyConnection,
    player_id: Uuid,
    currency: MoneyCurrency,
    now: time::OffsetDateTime,
) -> ApiResult<(i64, i64)> {
    let mut spent = [0; 2];
    for (slot, period) in spent.iter_mut().zip(SPENDING_PERIODS) {
        let (start, _) = period_window(period, now);
        let sum: Option<i64> = sqlx::query_scalar(
            "select cast(sum(gross_micros) as bigint) from payment_order where player_id = $1 and currency = $2 \
             and created_at >= $3 and status not in ('failed', 'expired', 'canceled')",
        )
        .bind(player_id.to_string())
        .bind(currency.code())
        .bind(to_micros(start))
        .fetch_one(&mut *conn)
        .await?;
        *slot = sum.unwrap_or(0);
    }
    Ok((spent[0], spent[1]))
}

/// The periods a spending limit counts over: a day and a month.
pub(crate) const SPENDING_PERIODS: [store_api::catalog::LimitPeriod; 2] =
    [store_api::catalog::LimitPeriod::Day, store_api::catalog::LimitPeriod::Month];

/// Whether a `transaction` (an order, a tab charge or a settlement) fits the caps of the
/// player's age band at `now`: the transaction itself within the cap on one, and `total` (what
/// it adds to the day's and the month's spending) within theirs with `spent` (today, this
/// month, in micros) already counted. The check itself, shared by the per-request and the set
/// path.
///
/// # Errors
/// `spending_limit_exceeded`, naming the period (`transaction`, `day` or `month`), the limit,
/// what remains, when it resets and the age band.
pub(crate) fn spending_check(
    settings: &crate::settings::Settings,
    age_band: AgeBand,
    transaction: Money,
    total: Money,
    now: time::OffsetDateTime,
    (spent_day, spent_month): (i64, i64),
) -> ApiResult<()> {
    transaction_check(settings, age_band, transaction)?;
    let caps = settings.spending_limits.caps(total.currency, age_band);
    let (day_limit, month_limit) = (caps.day, caps.month);
    let total_micros = total.to_micros().map_err(|error| anyhow::anyhow!(error))?;
    let [day, month] = SPENDING_PERIODS;
    for (period, limit, name, spent) in
        [(day, day_limit, "day", spent_day), (month, month_limit, "month", spent_month)]
    {
        let (_, resets_at) = period_window(period, now);
        let limit = Money { currency: total.currency, amount: limit };
        let limit_micros = limit.to_micros().map_err(|error| anyhow::anyhow!(error))?;
        if spent + total_micros > limit_micros {
            let remaining = Money::from_micros(total.currency, (limit_micros - spent).max(0));
            let mut error = ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::SpendingLimitExceeded,
                format!(
                    "this order would pass the spending limit of {limit} per {name}; {remaining} remains"
                ),
            )
            .with_detail("period", name)
            .with_detail("limit", limit.amount_text())
            .with_detail("remaining", remaining.amount_text())
            .with_detail("age_band", age_band.as_str());
            if let Some(resets_at) = resets_at {
                error = error.with_detail("resets_at", crate::store::operations::rfc3339(resets_at));
            }
            return Err(error);
        }
    }
    Ok(())
}

/// Refuses a real-money purchase without the player's consent to immediate delivery when the
/// store requires it (`--require-delivery-consent`).
///
/// # Errors
/// `delivery_consent_required`.
pub(crate) fn check_delivery_consent(settings: &crate::settings::Settings, consented: bool) -> ApiResult<()> {
    if consented || !settings.require_delivery_consent {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::DeliveryConsentRequired,
        "the player must consent to immediate delivery, giving up the right of withdrawal for digital content, before paying: send immediate_delivery_consent: true once they have",
    )
    .with_detail("field", "immediate_delivery_consent"))
}

/// Whether one payment of `transaction` (an order, a tab charge, a settlement) fits the cap on
/// one payment of the player's age band.
///
/// # Errors
/// `spending_limit_exceeded` with period `transaction`, the limit and the band.
pub(crate) fn transaction_check(
    settings: &crate::settings::Settings,
    age_band: AgeBand,
    transaction: Money,
) -> ApiResult<()> {
    let cap = settings.spending_limits.caps(transaction.currency, age_band).transaction;
    if transaction.amount <= cap {
        return Ok(());
    }
    let limit = Money { currency: transaction.currency, amount: cap };
    Err(ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::SpendingLimitExceeded,
        format!("{transaction} is over the cap of {limit} on one payment for this player's age band"),
    )
    .with_detail("period", "transaction")
    .with_detail("limit", limit.amount_text())
    .with_detail("age_band", age_band.as_str()))
}

/// `POST /v1/orders`, once the provider's checkout session is open: checks the player and the
/// limits again inside the transaction and records the order at the quoted price, the price
/// the session charges.
#[derive(Debug, Clone)]
pub struct CreateOrderOp {
    /// The catalog, the settings and the writer.
    pub payments: Payments,
    /// The new order's id (reserved with the request's key).
    pub order_id: Uuid,
    /// The buyer.
    pub player_id: Uuid,
    /// What it costs, priced once.
    pub quote: OrderQuote,
    /// The provider.
    pub provider: &'static str,
    /// The session opened for it.
    pub checkout: Checkout,
    /// When it expires, microseconds.
    pub expires_at: i64,
}

impl MoneyOp for CreateOrderOp {
    type Output = Order;
    const SUCCESS: StatusCode = StatusCode::CREATED;

    async fn apply(self, conn: &mut AnyConnection) -> ApiResult<Order> {
        let state = &self.payments;
        let lock = lock_player(conn, self.player_id).await?;
        lock.refuse_if_blocked()?;
        refuse_if_flagged(conn, self.player_id).await?;
        let quote = &self.quote;
        check_spending(conn, state, self.player_id, lock.age_band(), quote.total).await?;
        // An order obeys its item's purchase limit and stock like a purchase: it reserves both
        // now (a failed, expired or canceled order gives them back) and is checked again when paid.
        let catalog = state.catalog_cache().get(conn).await?;
        let sku = store_api::catalog::Sku::parse(&quote.sku).map_err(|error| anyhow::anyhow!(error))?;
        let mut stock_taken = 0;
        if let Some(item) = catalog.item(&sku) {
            crate::store::operations::check_purchase_limit(
                conn,
                self.player_id,
                item,
                quote.quantity,
                crate::db::now(),
                None,
            )
            .await?;
            if let Some(stock) = item.stock {
                crate::store::operations::take_stock(conn, &sku, quote.quantity, stock).await?;
                stock_taken = quote.quantity;
            }
        }
        let record = insert_order(
            conn,
            &NewOrder {
                id: self.order_id,
                player_id: self.player_id,
                offer_id: &quote.offer_id,
                sku: &quote.sku,
                quantity: quote.quantity,
                price_index: quote.price_index,
                total: quote.total,
                provider: self.provider,
                session: &self.checkout.id,
                checkout_url: &self.checkout.checkout_url,
                catalog_version: quote.catalog_version,
                expires_at: self.expires_at,
                variant: quote.variant.as_deref(),
                stock_taken,
                delivery_consent: quote.delivery_consent,
            },
        )
        .await?;
        record.to_wire(None, Vec::new())
    }
}

/// An order about to be recorded, waiting for its payment.
#[derive(Debug)]
pub(crate) struct NewOrder<'a> {
    /// Its id.
    pub id: Uuid,
    /// The buyer.
    pub player_id: Uuid,
    /// The offer.
    pub offer_id: &'a str,
    /// The item.
    pub sku: &'a str,
    /// How many.
    pub quantity: i64,
    /// Which price.
    pub price_index: u32,
    /// What it costs.
    pub total: Money,
    /// Who takes the payment.
    pub provider: &'a str,
    /// The provider's session (its transaction, for a platform purchase).
    pub session: &'a str,
    /// Where the player pays (empty when not on a page).
    pub checkout_url: &'a str,
    /// The catalog version it was priced from.
    pub catalog_version: i64,
    /// When it expires unpaid, microseconds.
    pub expires_at: i64,
    /// The price experiment's variant.
    pub variant: Option<&'a str>,
    /// Stock it reserved.
    pub stock_taken: i64,
    /// The buyer consented to immediate delivery.
    pub delivery_consent: bool,
}

/// Records an order as `requires_payment` and announces it to the player.
pub(crate) async fn insert_order(conn: &mut AnyConnection, order: &NewOrder<'_>) -> ApiResult<OrderRecord> {
    let gross_micros = order.total.to_micros().map_err(|error| anyhow::anyhow!(error))?;
    let now = now_micros();
    sqlx::query(
        "insert into payment_order (id, player_id, offer_id, sku, quantity, price_index, currency, gross_micros, status, \
         provider, provider_session, checkout_url, catalog_version, expires_at, created_at, updated_at, price_variant, \
         stock_taken, delivery_consent) values ($1, $2, $3, $4, $5, $6, $7, $8, 'requires_payment', $9, $10, $11, $12, $13, \
         $14, $14, $15, $16, $17)",
    )
    .bind(order.id.to_string())
    .bind(order.player_id.to_string())
    .bind(order.offer_id)
    .bind(order.sku)
    .bind(order.quantity)
    .bind(i64::from(order.price_index))
    .bind(order.total.currency.code())
    .bind(gross_micros)
    .bind(order.provider)
    .bind(order.session)
    .bind(order.checkout_url)
    .bind(order.catalog_version)
    .bind(order.expires_at)
    .bind(now)
    .bind(order.variant)
    .bind(order.stock_taken)
    .bind(i64::from(order.delivery_consent))
    .execute(&mut *conn)
    .await?;
    let record = find_order(conn, order.id).await?.ok_or_else(|| anyhow::anyhow!("order vanished"))?;
    announce(conn, &record).await?;
    Ok(record)
}
