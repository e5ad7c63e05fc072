//! `POST /v1/purchases`: an offer bought with virtual currency, or put on the player's tab.

use super::*;

/// `POST /v1/purchases`: buy an offer with virtual currency.
#[derive(Debug, Clone)]
pub struct PurchaseOp {
    /// The catalog, and the tab a money price goes on.
    pub payments: Payments,
    /// The buyer.
    pub player_id: Uuid,
    /// What they asked for.
    pub request: PurchaseRequest,
}

impl MoneyOp for PurchaseOp {
    type Output = PurchaseResult;
    const SUCCESS: StatusCode = StatusCode::CREATED;

    async fn apply(self, conn: &mut AnyConnection) -> ApiResult<PurchaseResult> {
        let Self { payments: state, player_id, request } = self;
        let state = &state;
        let lock = lock_player(conn, player_id).await?;
        lock.refuse_if_blocked()?;
        let catalog = state.catalog_cache().get(conn).await?;
        let now = crate::db::now();
        let offer = catalog.offer(request.offer_id).ok_or_else(|| {
            offer_not_available("unknown", format!("offer `{}` is not in the live catalog", request.offer_id))
        })?;
        check_sale_window(offer, now)?;
        let item = catalog
            .item(&offer.sku)
            .ok_or_else(|| anyhow::anyhow!("live offer {} sells unknown sku {}", offer.id, offer.sku))?;
        let buyer = crate::store::pricing::buyer(conn, player_id).await?;
        let (prices, variant) = crate::store::pricing::effective_prices(offer, &buyer);
        let price_index = match request.price_index {
            Some(index) => index,
            None => prices
                .iter()
                .position(|price| {
                    matches!(price, Price::Virtual { .. } | Price::Real { settlement: Settlement::Tab, .. })
                })
                .and_then(|index| u32::try_from(index).ok())
                .ok_or_else(price_requires_order)?,
        };
        let price =
            usize::try_from(price_index).ok().and_then(|index| prices.get(index)).ok_or_else(|| {
                ApiError::invalid(
                    "price_index",
                    format!("the offer has {} prices; price_index {price_index} is not one", prices.len()),
                )
            })?;
        let quantity = request.quantity.get();
        // What the purchase is paid with: a wallet, or the player's tab.
        let (unit, total, tab) = match price {
            Price::Virtual { currency, amount } => {
                if wallet_balance(conn, player_id, currency).await? < 0 {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        ErrorCode::OutstandingDebt,
                        format!("the wallet owes {currency} from a refunded order; earn or receive enough to repay it first"),
                    )
                    .with_detail("currency", currency.as_str()));
                }
                let total = amount
                    .checked_mul(quantity)
                    .ok_or_else(|| ApiError::invalid("quantity", "the total price is too large"))?;
                (currency.as_str().to_owned(), total, None)
            }
            Price::Real { money, settlement: Settlement::Tab } => {
                let charge = Money {
                    currency: money.currency,
                    amount: money.amount * rust_decimal::Decimal::from(quantity),
                };
                let tab =
                    crate::payments::tabs::tab_for_charge(conn, state, player_id, lock.is_minor(), charge)
                        .await?;
                let total = charge.to_micros().map_err(|error| ApiError::invalid("quantity", error))?;
                (money.currency.code().to_owned(), total, Some((tab, charge)))
            }
            Price::Real { settlement: Settlement::Immediate, .. } => return Err(price_requires_order()),
        };
        if item.kind == ItemKind::Durable && quantity > 1 {
            return Err(ApiError::invalid("quantity", "a durable item is bought one at a time"));
        }
        check_purchase_limit(conn, player_id, item, quantity, now, None).await?;
        let mut movement = Movement::default();
        let source = match (&tab, price) {
            (None, Price::Virtual { currency, .. }) => AccountId::Wallet(player_id, currency.clone()),
            _ => AccountId::System(SystemAccount::TabReceivable, unit.clone()),
        };
        movement.postings.push(Posting { account: source, amount: -total });
        movement.postings.push(Posting {
            account: AccountId::System(SystemAccount::Revenue, unit.clone()),
            amount: total,
        });
        // Creators of tab sales are credited when the tab is settled, on what was collected.
        movement.grant_bought(player_id, item, quantity, |sku| catalog.item(sku))?;
        movement.check(conn, player_id, &catalog).await?;
        if let Some(stock) = item.stock {
            take_stock(conn, &item.sku, quantity, stock).await?;
        }

        let entry = append_entry(
            conn,
            &NewEntry {
                kind: EntryKind::Purchase,
                player_id: Some(player_id),
                actor: player_actor(player_id),
                reason: None,
                postings: movement.postings,
                items: movement.items,
                clawback: false,
            },
            &catalog.balance_maxima(),
        )
        .await?;
        let purchase_id = Uuid::now_v7();
        let created_at = now_micros();
        sqlx::query(
            "insert into purchase (id, player_id, offer_id, sku, quantity, price_index, currency, amount, catalog_version, entry_id, created_at, price_variant) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(purchase_id.to_string())
        .bind(player_id.to_string())
        .bind(offer.id.to_string())
        .bind(item.sku.as_str())
        .bind(quantity)
        .bind(i64::from(price_index))
        .bind(&unit)
        .bind(total)
        .bind(catalog.version)
        .bind(entry.id.to_string())
        .bind(created_at)
        .bind(variant.map(str::to_owned))
        .execute(&mut *conn)
        .await?;
        let (paid, charged_to_tab) = match (&tab, price) {
            (Some((tab, charge)), _) => {
                crate::payments::tabs::add_to_tab(conn, tab, purchase_id, &item.sku, quantity, total).await?;
                (None, Some(*charge))
            }
            (None, Price::Virtual { currency, .. }) => {
                (Some(CurrencyAmount { currency: currency.clone(), amount: total }), None)
            }
            (None, Price::Real { .. }) => {
                return Err(ApiError::Internal(anyhow::anyhow!("a real price without a tab")));
            }
        };
        let receipt = issue_receipt(
            conn,
            player_id,
            entry.id,
            ReceiptFacts {
                kind: EntryKind::Purchase,
                purchase_id: Some(purchase_id),
                offer_id: Some(offer.id),
                paid: paid.clone(),
                paid_money: charged_to_tab,
                order_id: None,
                granted: movement.granted.clone(),
            },
        )
        .await?;
        Ok(PurchaseResult {
            purchase: Purchase {
                id: purchase_id,
                offer_id: offer.id,
                sku: item.sku.clone(),
                quantity,
                price_index,
                paid,
                charged_to_tab,
                catalog_version: catalog.version,
                created_at: from_micros(created_at),
            },
            granted: movement.granted,
            wallet: read_wallet(conn, player_id).await?,
            inventory: Inventory { items: read_inventory(conn, player_id).await? },
            receipt,
        })
    }
}
