//! `POST /v1/purchases`: an offer bought with virtual currency, or put on the player's tab.

use super::*;
use store_api::MoneyCurrency;

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

/// The offer, item and price a purchase request names, checked against the catalog.
struct Chosen<'c> {
    offer: &'c Offer,
    item: &'c Item,
    price_index: u32,
    price: &'c Price,
    variant: Option<&'c str>,
    quantity: i64,
    /// The player consented to immediate delivery (a real-money price's EU withdrawal waiver).
    consented: bool,
}

/// Finds what `request` buys from `catalog`, at the price `buyer` pays at `now`; a price on the
/// tab (real money) needs the player's consent to immediate delivery where `settings` require
/// it.
fn choose<'c>(
    catalog: &'c RenderedCatalog,
    request: &PurchaseRequest,
    buyer: &Buyer,
    now: OffsetDateTime,
    settings: &crate::settings::Settings,
) -> ApiResult<Chosen<'c>> {
    let offer = catalog.offer(request.offer_id).ok_or_else(|| {
        offer_not_available("unknown", format!("offer `{}` is not in the live catalog", request.offer_id))
    })?;
    check_sale_window(offer, now)?;
    let item = catalog
        .item(&offer.sku)
        .ok_or_else(|| anyhow::anyhow!("live offer {} sells unknown sku {}", offer.id, offer.sku))?;
    let (prices, variant) = crate::store::pricing::effective_prices(offer, buyer);
    let (price_index, price) = crate::store::pricing::pick_price(
        prices,
        request.price_index,
        |price| matches!(price, Price::Virtual { .. } | Price::Real { settlement: Settlement::Tab, .. }),
        price_requires_order,
    )?;
    if matches!(price, Price::Real { .. }) {
        crate::payments::orders::check_delivery_consent(settings, request.immediate_delivery_consent)?;
    }
    Ok(Chosen {
        offer,
        item,
        price_index,
        price,
        variant,
        quantity: request.quantity.get(),
        consented: request.immediate_delivery_consent,
    })
}

/// The total of a virtual price, refused while the wallet (holding `balance`) owes.
fn virtual_total(currency: &CurrencyCode, amount: i64, quantity: i64, balance: i64) -> ApiResult<i64> {
    if balance < 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::OutstandingDebt,
            format!(
                "the wallet owes {currency} from a refunded order; earn or receive enough to repay it first"
            ),
        )
        .with_detail("currency", currency.as_str()));
    }
    amount.checked_mul(quantity).ok_or_else(|| ApiError::invalid("quantity", "the total price is too large"))
}

/// What a tab-priced purchase of `quantity` charges.
fn tab_charge(money: &Money, quantity: i64) -> Money {
    Money { currency: money.currency, amount: money.amount * rust_decimal::Decimal::from(quantity) }
}

/// The account a purchase is paid from: the wallet of a virtual price, or the tab receivable.
fn purchase_source(player_id: Uuid, price: &Price, on_tab: bool, unit: &str) -> AccountId {
    match price {
        Price::Virtual { currency, .. } if !on_tab => AccountId::Wallet(player_id, currency.clone()),
        _ => AccountId::System(SystemAccount::TabReceivable, unit.to_owned()),
    }
}

/// What a purchase of `total` at `price` was paid with: (virtual currency paid, money charged
/// to the tab).
fn paid_with(
    price: &Price,
    total: i64,
    charged_to_tab: Option<Money>,
) -> ApiResult<(Option<CurrencyAmount>, Option<Money>)> {
    match (charged_to_tab, price) {
        (Some(charge), _) => Ok((None, Some(charge))),
        (None, Price::Virtual { currency, .. }) => {
            Ok((Some(CurrencyAmount { currency: currency.clone(), amount: total }), None))
        }
        (None, Price::Real { .. }) => Err(ApiError::Internal(anyhow::anyhow!("a real price without a tab"))),
    }
}

/// The currencies an offer can be put on a tab in, over all its prices (regional and variants).
fn tab_currencies(offer: &Offer) -> Vec<MoneyCurrency> {
    let lists = std::iter::once(&offer.prices)
        .chain(offer.regional_prices.values())
        .chain(offer.variants.iter().map(|variant| &variant.prices));
    let mut currencies: Vec<MoneyCurrency> = lists
        .flatten()
        .filter_map(|price| match price {
            Price::Real { money, settlement: Settlement::Tab } => Some(money.currency),
            _ => None,
        })
        .collect();
    currencies.sort_unstable_by_key(|currency| currency.code());
    currencies.dedup();
    currencies
}

pub(crate) fn refuse_durable_quantity(item: &Item, quantity: i64) -> ApiResult<()> {
    if item.kind == ItemKind::Durable && quantity > 1 {
        return Err(ApiError::invalid("quantity", "a durable item is bought one at a time"));
    }
    Ok(())
}

/// The facts of purchase `id` of `chosen`, paid `total` of `unit`, kept in the row of its entry.
fn purchase_record<'a>(
    id: Uuid,
    chosen: &Chosen<'a>,
    unit: &'a str,
    total: i64,
    catalog_version: i64,
    entry_id: Uuid,
) -> PurchaseRecord<'a> {
    PurchaseRecord {
        id,
        offer_id: chosen.offer.id.to_string(),
        sku: chosen.item.sku.as_str(),
        quantity: chosen.quantity,
        price_index: chosen.price_index,
        currency: unit,
        amount: total,
        catalog_version,
        entry_id,
        price_variant: chosen.variant,
    }
}

/// What a purchase of `chosen`, paid `total` of `unit` from `source`, moves.
fn purchase_movement(
    player_id: Uuid,
    catalog: &RenderedCatalog,
    chosen: &Chosen<'_>,
    source: AccountId,
    unit: &str,
    total: i64,
) -> ApiResult<Movement> {
    let mut movement = Movement::default();
    movement.postings.push(Posting { account: source, amount: -total });
    movement
        .postings
        .push(Posting { account: AccountId::System(SystemAccount::Revenue, unit.to_owned()), amount: total });
    // Creators of tab sales are credited when the tab is settled, on what was collected.
    movement.grant_bought(player_id, chosen.item, chosen.quantity, |sku| catalog.item(sku))?;
    Ok(movement)
}

fn purchase_entry(player_id: Uuid, movement: &Movement) -> NewEntry {
    NewEntry {
        kind: EntryKind::Purchase,
        player_id: Some(player_id),
        actor: player_actor(player_id),
        reason: None,
        postings: movement.postings.clone(),
        items: movement.items.clone(),
        clawback: false,
    }
}

fn purchase_facts(
    purchase_id: Uuid,
    chosen: &Chosen<'_>,
    paid: Option<CurrencyAmount>,
    paid_money: Option<Money>,
    movement: &Movement,
) -> ReceiptFacts {
    ReceiptFacts {
        kind: EntryKind::Purchase,
        purchase_id: Some(purchase_id),
        offer_id: Some(chosen.offer.id),
        immediate_delivery_consent: paid_money.is_some() && chosen.consented,
        paid,
        paid_money,
        order_id: None,
        granted: movement.granted.clone(),
    }
}

fn purchase_of(
    purchase_id: Uuid,
    chosen: &Chosen<'_>,
    paid: Option<CurrencyAmount>,
    charged_to_tab: Option<Money>,
    catalog_version: i64,
    created_at: i64,
) -> Purchase {
    Purchase {
        id: purchase_id,
        offer_id: chosen.offer.id,
        sku: chosen.item.sku.clone(),
        quantity: chosen.quantity,
        price_index: chosen.price_index,
        paid,
        charged_to_tab,
        catalog_version,
        created_at: from_micros(created_at),
    }
}

impl MoneyOp for PurchaseOp {
    type Output = PurchaseResult;
    const SUCCESS: StatusCode = StatusCode::CREATED;

    fn receipts(output: &mut PurchaseResult) -> Vec<&mut SignedReceipt> {
        vec![&mut output.receipt]
    }

    async fn apply(self, conn: &mut AnyConnection) -> ApiResult<PurchaseResult> {
        let Self { payments: state, player_id, request } = self;
        let state = &state;
        let lock = lock_player(conn, player_id).await?;
        lock.refuse_if_blocked()?;
        let catalog = state.catalog_cache().get(conn).await?;
        let now = crate::db::now();
        let buyer = crate::store::pricing::buyer(conn, player_id).await?;
        let chosen = choose(&catalog, &request, &buyer, now, state.settings())?;
        let (item, quantity, price) = (chosen.item, chosen.quantity, chosen.price);
        // What the purchase is paid with: a wallet, or the player's tab.
        let (unit, total, tab) = match price {
            Price::Virtual { currency, amount, .. } => {
                let balance = wallet_balance(conn, player_id, currency).await?;
                (currency.as_str().to_owned(), virtual_total(currency, *amount, quantity, balance)?, None)
            }
            Price::Real { money, settlement: Settlement::Tab } => {
                let charge = tab_charge(money, quantity);
                let tab =
                    crate::payments::tabs::tab_for_charge(conn, state, player_id, lock.age_band(), charge)
                        .await?;
                let total = charge.to_micros().map_err(|error| ApiError::invalid("quantity", error))?;
                (money.currency.code().to_owned(), total, Some((tab, charge)))
            }
            Price::Real { settlement: Settlement::Immediate, .. } => return Err(price_requires_order()),
        };
        refuse_durable_quantity(item, quantity)?;
        check_purchase_limit(conn, player_id, item, quantity, now, None).await?;
        let source = purchase_source(player_id, price, tab.is_some(), &unit);
        let movement = purchase_movement(player_id, &catalog, &chosen, source, &unit, total)?;
        movement.check(conn, player_id, &catalog).await?;
        if let Some(stock) = item.stock {
            take_stock(conn, &item.sku, quantity, stock).await?;
        }

        let entry =
            append_entry(conn, &purchase_entry(player_id, &movement), catalog.balance_maxima()).await?;
        let purchase_id = Uuid::now_v7();
        let created_at = record_purchase(
            conn,
            &purchase_record(purchase_id, &chosen, &unit, total, catalog.version, entry.id),
        )
        .await?;
        if let Some((tab, _)) = &tab {
            crate::payments::tabs::add_to_tab(conn, tab, purchase_id, &item.sku, quantity, total).await?;
        }
        let (paid, charged_to_tab) = paid_with(price, total, tab.map(|(_, charge)| charge))?;
        let facts = purchase_facts(purchase_id, &chosen, paid.clone(), charged_to_tab, &movement);
        let receipt = issue_receipt(conn, player_id, entry.id, facts).await?;
        Ok(PurchaseResult {
            purchase: purchase_of(purchase_id, &chosen, paid, charged_to_tab, catalog.version, created_at),
            granted: movement.granted,
            wallet: read_wallet(conn, player_id).await?,
            inventory: Inventory { items: read_inventory(conn, player_id).await? },
            receipt,
        })
    }

    fn batch_player(&self) -> Option<Uuid> {
        Some(self.player_id)
    }

    /// The offer's tab currencies in the catalog last rendered (a hint: the price is chosen in
    /// `decide`, which defers when the player's tabs were not read).
    fn batch_tab_currencies(&self) -> Vec<MoneyCurrency> {
        let Some(catalog) = self.payments.catalog_cache().latest() else { return Vec::new() };
        catalog.offer(self.request.offer_id).map(tab_currencies).unwrap_or_default()
    }

    /// The item's purchase limit and stock in the catalog last rendered (a hint: `decide`
    /// defers when what it needs was not read).
    fn batch_item_reads(&self) -> Option<ItemReads> {
        let catalog = self.payments.catalog_cache().latest()?;
        let item = catalog.item(&catalog.offer(self.request.offer_id)?.sku)?;
        let limit_period = item.purchase_limit.map(|limit| limit.period);
        (limit_period.is_some() || item.stock.is_some()).then(|| ItemReads {
            sku: item.sku.clone(),
            limit_period,
            stocked: item.stock.is_some(),
        })
    }

    /// The set path takes purchases at a virtual price or on the tab, purchase limits and
    /// stock included.
    fn decide(&self, ledger: &mut BatchLedger) -> ApiResult<Option<PurchaseResult>> {
        let player_id = self.player_id;
        let Some(catalog) = self.payments.catalog_cache().cached(ledger.catalog_stamp()) else {
            return Ok(None);
        };
        let player = ledger.unblocked_player(player_id)?;
        let country = player.country.as_deref().and_then(|code| store_api::auth::Country::parse(code).ok());
        let buyer = Buyer { player_id, country };
        let chosen =
            choose(&catalog, &self.request, &buyer, from_micros(ledger.now()), self.payments.settings())?;
        let (item, quantity, price) = (chosen.item, chosen.quantity, chosen.price);
        let (unit, total, charge) = match price {
            Price::Virtual { currency, amount, .. } => {
                let Some(balance) = ledger.wallet_balance(player_id, currency) else { return Ok(None) };
                (currency.as_str().to_owned(), virtual_total(currency, *amount, quantity, balance)?, None)
            }
            Price::Real { money, settlement: Settlement::Tab } => {
                let charge = tab_charge(money, quantity);
                if ledger.tab_for_charge(self.payments.settings(), player_id, charge)?.is_none() {
                    return Ok(None);
                }
                let total = charge.to_micros().map_err(|error| ApiError::invalid("quantity", error))?;
                (money.currency.code().to_owned(), total, Some(charge))
            }
            Price::Real { settlement: Settlement::Immediate, .. } => return Err(price_requires_order()),
        };
        refuse_durable_quantity(item, quantity)?;
        if ledger.check_purchase_limit(player_id, item, quantity)?.is_none() {
            return Ok(None);
        }
        let source = purchase_source(player_id, price, charge.is_some(), &unit);
        let movement = purchase_movement(player_id, &catalog, &chosen, source, &unit, total)?;
        movement.check_against(
            &catalog,
            |code| ledger.wallet_balance(player_id, code).unwrap_or(0),
            |sku| ledger.item_quantity(player_id, sku),
        )?;
        if let Some(stock) = item.stock
            && ledger.take_stock(&item.sku, quantity, stock)?.is_none()
        {
            return Ok(None);
        }
        let Some(entry) = ledger.append(&purchase_entry(player_id, &movement), catalog.balance_maxima())?
        else {
            return Ok(None);
        };
        let purchase_id = Uuid::now_v7();
        let created_at = ledger.now();
        ledger.push_purchase(&purchase_record(
            purchase_id,
            &chosen,
            &unit,
            total,
            catalog.version,
            entry.id,
        ))?;
        if let Some(charge) = charge {
            ledger.add_to_tab(player_id, charge.currency, purchase_id, &item.sku, quantity, total)?;
        }
        let (paid, charged_to_tab) = paid_with(price, total, charge)?;
        let facts = purchase_facts(purchase_id, &chosen, paid.clone(), charged_to_tab, &movement);
        let receipt = ledger.issue_receipt(player_id, entry.id, facts)?;
        Ok(Some(PurchaseResult {
            purchase: purchase_of(purchase_id, &chosen, paid, charged_to_tab, catalog.version, created_at),
            granted: movement.granted,
            wallet: ledger.wallet(player_id),
            inventory: Inventory { items: ledger.inventory(player_id)? },
            receipt,
        }))
    }
}
