//! Validation: the rules that involve more than one object (references, grant cycles, prices
//! against fees and limits).

use super::*;

/// Checks one item's references: granted currencies exist, granted items exist, and no chain of
/// grants leads back to the item (a bundle that contains itself).
///
/// `grant_edges` maps each other item's sku to the skus it grants.
pub(super) fn check_item_references(
    item: &Item,
    field: &str,
    balance_maxima: &HashMap<String, i64>,
    item_exists: impl Fn(&str) -> bool,
    grant_edges: &HashMap<String, Vec<String>>,
) -> ApiResult<()> {
    for (index, grant) in item.grants.currencies.iter().enumerate() {
        let Some(&balance_max) = balance_maxima.get(grant.currency.as_str()) else {
            return Err(ApiError::validation(
                &format!("{field}grants.currencies[{index}].currency"),
                format!("currency `{}` does not exist", grant.currency),
            ));
        };
        // Bounded, so no grant times a quantity can overflow, and no grant is one no wallet holds.
        if grant.amount > balance_max {
            return Err(ApiError::validation(
                &format!("{field}grants.currencies[{index}].amount"),
                format!(
                    "a grant of {} {} is more than a wallet can hold (balance_max {balance_max})",
                    grant.amount, grant.currency
                ),
            ));
        }
    }
    for (index, grant) in item.grants.items.iter().enumerate() {
        let granted = grant.sku.as_str();
        if granted == item.sku.as_str() {
            return Err(ApiError::validation(
                &format!("{field}grants.items[{index}].sku"),
                format!("item `{}` cannot grant itself", item.sku),
            ));
        }
        if !item_exists(granted) {
            return Err(ApiError::validation(
                &format!("{field}grants.items[{index}].sku"),
                format!("item `{granted}` does not exist"),
            ));
        }
    }
    // Walk the grant graph from this item's grants; reaching the item again is a cycle.
    let mut stack: Vec<&str> = item.grants.items.iter().map(|grant| grant.sku.as_str()).collect();
    let mut seen: HashSet<&str> = HashSet::new();
    while let Some(sku) = stack.pop() {
        if sku == item.sku.as_str() {
            return Err(ApiError::validation(
                &format!("{field}grants.items"),
                format!("item `{}` would contain itself through its grants", item.sku),
            ));
        }
        if seen.insert(sku) {
            stack.extend(grant_edges.get(sku).into_iter().flatten().map(String::as_str));
        }
    }
    Ok(())
}

/// Checks one offer against the currencies and items it names and the order limits.
pub(super) fn check_offer_references(
    offer: &Offer,
    field: &str,
    rules: &CatalogRules,
    currencies: &HashMap<String, Currency>,
    item_exists: impl Fn(&str) -> bool,
) -> ApiResult<()> {
    if !item_exists(offer.sku.as_str()) {
        return Err(ApiError::validation(
            &format!("{field}sku"),
            format!("item `{}` does not exist", offer.sku),
        ));
    }
    for (list, prices) in offer.price_lists() {
        check_prices(&format!("{field}{list}"), prices, rules, currencies)?;
    }
    Ok(())
}

/// Checks one list of an offer's prices against the currencies, the order limits, the minimum
/// charge and the fee floor.
pub(super) fn check_prices(
    list_field: &str,
    prices: &[Price],
    rules: &CatalogRules,
    currencies: &HashMap<String, Currency>,
) -> ApiResult<()> {
    for (index, price) in prices.iter().enumerate() {
        let at = format!("{list_field}[{index}]");
        match price {
            Price::Virtual { currency, amount, .. } => {
                let Some(known) = currencies.get(currency.as_str()) else {
                    return Err(ApiError::validation(
                        &format!("{at}.currency"),
                        format!("currency `{currency}` does not exist"),
                    ));
                };
                if *amount > known.balance_max {
                    return Err(ApiError::validation(
                        &format!("{at}.amount"),
                        format!(
                            "price {amount} is more than a wallet of `{currency}` can hold ({})",
                            known.balance_max
                        ),
                    ));
                }
            }
            Price::Real { money, settlement } => {
                let field = format!("{at}.money.amount");
                if money.amount > Decimal::from(ORDER_AMOUNT_UNITS_MAX) {
                    return Err(ApiError::validation(
                        &field,
                        format!("a real price is at most {ORDER_AMOUNT_UNITS_MAX} {}", money.currency),
                    ));
                }
                if *settlement == Settlement::Immediate {
                    if !money.is_whole_minor_units() {
                        return Err(ApiError::validation(
                            &field,
                            format!(
                                "{money} has more precision than {} allows ({} decimal places); \
                                 finer prices must settle on a tab",
                                money.currency,
                                money.currency.minor_units()
                            ),
                        ));
                    }
                    let minimum = money.currency.minimum_charge();
                    if money.amount < minimum.amount {
                        return Err(ApiError::validation(
                            &field,
                            format!("{money} is below the minimum card charge of {minimum}; use settlement \"tab\""),
                        )
                        .with_detail("minimum", minimum.amount_text()));
                    }
                    let floor = rules.net_floor(money.currency);
                    if rules.net(*money) < floor.amount {
                        let mut error = ApiError::validation(
                            &field,
                            format!(
                                "{money} nets {} after the provider's fee, below the floor of {floor}; raise the price or use settlement \"tab\"",
                                store_api::Money { currency: money.currency, amount: rules.net(*money) },
                            ),
                        )
                        .with_detail("net_floor", floor.amount_text());
                        if let Some(smallest) = rules.smallest_viable_price(money.currency) {
                            error = error.with_detail("smallest_price", smallest.amount_text());
                        }
                        return Err(error);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Checks a whole catalog: limits, unique keys and every reference. Used on publish and import,
/// as the second line behind the per-object checks of draft edits.
///
/// # Errors
/// `validation_failed` naming the first field at fault (`items[3].grants.items[0].sku`).
pub fn validate_catalog(file: &CatalogFile, rules: &CatalogRules) -> ApiResult<()> {
    if file.currencies.len() > CURRENCIES_MAX {
        return Err(ApiError::validation("currencies", format!("at most {CURRENCIES_MAX} currencies")));
    }
    if file.items.len() > CATALOG_ITEMS_MAX {
        return Err(ApiError::validation("items", format!("at most {CATALOG_ITEMS_MAX} items")));
    }
    if file.offers.len() > CATALOG_OFFERS_MAX {
        return Err(ApiError::validation("offers", format!("at most {CATALOG_OFFERS_MAX} offers")));
    }
    let mut currencies = HashMap::new();
    for (index, currency) in file.currencies.iter().enumerate() {
        if currencies.insert(currency.code.as_str().to_owned(), currency.clone()).is_some() {
            return Err(ApiError::validation(
                &format!("currencies[{index}].code"),
                format!("currency `{}` appears twice", currency.code),
            ));
        }
    }
    let mut skus = HashSet::new();
    for (index, item) in file.items.iter().enumerate() {
        if !skus.insert(item.sku.as_str()) {
            return Err(ApiError::validation(
                &format!("items[{index}].sku"),
                format!("sku `{}` appears twice", item.sku),
            ));
        }
    }
    // One reference pack per currency, or its equivalents would depend on which one won.
    let mut referenced = HashSet::new();
    for (index, item) in file.items.iter().enumerate().filter(|(_, item)| item.reference_pack) {
        for grant in &item.grants.currencies {
            if !referenced.insert(grant.currency.as_str()) {
                return Err(ApiError::validation(
                    &format!("items[{index}].reference_pack"),
                    format!("{} has another reference pack already", grant.currency),
                ));
            }
        }
    }
    let edges = grant_edges_of(&file.items);
    let balance_maxima: HashMap<String, i64> =
        currencies.iter().map(|(code, currency)| (code.clone(), currency.balance_max)).collect();
    for (index, item) in file.items.iter().enumerate() {
        check_item_references(
            item,
            &format!("items[{index}]."),
            &balance_maxima,
            |sku| skus.contains(sku),
            &edges,
        )?;
    }
    let mut offer_ids = HashSet::new();
    let mut platform_products = HashSet::new();
    for (index, offer) in file.offers.iter().enumerate() {
        if !offer_ids.insert(offer.id) {
            return Err(ApiError::validation(
                &format!("offers[{index}].id"),
                format!("offer `{}` appears twice", offer.id),
            ));
        }
        // A platform's purchase must name one offer, or redeeming it could grant either.
        for (platform, product) in offer.platform_products.named() {
            if !platform_products.insert((platform, product)) {
                return Err(ApiError::validation(
                    &format!("offers[{index}].platform_products.{platform}"),
                    format!("{platform} product `{product}` is sold by another offer too"),
                ));
            }
        }
        check_offer_references(offer, &format!("offers[{index}]."), rules, &currencies, |sku| {
            skus.contains(sku)
        })?;
    }
    Ok(())
}

pub(super) fn grant_edges_of(items: &[Item]) -> HashMap<String, Vec<String>> {
    items
        .iter()
        .map(|item| {
            (
                item.sku.as_str().to_owned(),
                item.grants.items.iter().map(|grant| grant.sku.as_str().to_owned()).collect(),
            )
        })
        .collect()
}
