//! What virtual prices cost in real money, and the catalog's warnings for players' sake
//! (consumer-protection guidance for in-game currencies): each currency's reference pack (an
//! item marked `reference_pack`) prices its currency, so a player sees "120 gems ≈ USD 1.19"; and
//! a virtual price that no combination of its currency's packs buys exactly (a player must
//! buy more than they need) is a warning to the operator.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rust_decimal::RoundingStrategy;
use store_api::Money;
use store_api::catalog::{CatalogWarning, ItemKind, ReferencePack};

use super::*;
use crate::store::pricing::{Buyer, effective_prices};

/// The largest smallest-pack size the leftover check works through (one step per unit of it);
/// a currency whose packs are all larger is not checked.
const SMALLEST_PACK_CHECKED_MAX: i64 = 1_000_000;

/// A currency's pack: the one currency it grants, and how much.
fn pack_of(item: &Item) -> Option<(&CurrencyCode, i64)> {
    match (&item.kind, item.grants.currencies.as_slice(), item.grants.items.is_empty()) {
        (ItemKind::CurrencyPack, [grant], true) => Some((&grant.currency, grant.amount)),
        _ => None,
    }
}

/// Each currency's reference pack: its sku and how much it grants.
#[must_use]
pub fn reference_packs<'i>(items: impl IntoIterator<Item = &'i Item>) -> BTreeMap<CurrencyCode, (Sku, i64)> {
    items
        .into_iter()
        .filter(|item| item.reference_pack)
        .filter_map(|item| {
            pack_of(item).map(|(currency, amount)| (currency.clone(), (item.sku.clone(), amount)))
        })
        .collect()
}

/// What `buyer` pays for `sku` in real money: the first real price, among their prices, of the
/// first offer (by id) that sells it for real money.
fn pack_price<'o>(offers: impl IntoIterator<Item = &'o Offer>, sku: &Sku, buyer: &Buyer) -> Option<Money> {
    let mut selling: Vec<&Offer> = offers.into_iter().filter(|offer| &offer.sku == sku).collect();
    selling.sort_by_key(|offer| offer.id);
    selling.into_iter().find_map(|offer| {
        effective_prices(offer, buyer).0.iter().find_map(|price| match price {
            Price::Real { money, .. } => Some(*money),
            Price::Virtual { .. } => None,
        })
    })
}

/// For each currency with a reference pack sold for real money: the pack's price for `buyer`
/// and how much it grants.
#[must_use]
pub fn rates_for<'o>(
    references: &BTreeMap<CurrencyCode, (Sku, i64)>,
    offers: impl IntoIterator<Item = &'o Offer> + Clone,
    buyer: &Buyer,
) -> BTreeMap<CurrencyCode, (Money, i64)> {
    references
        .iter()
        .filter_map(|(currency, (sku, amount))| {
            pack_price(offers.clone(), sku, buyer).map(|price| (currency.clone(), (price, *amount)))
        })
        .collect()
}

/// `amount` of a currency whose reference pack grants `pack` for `price`: exact, then rounded
/// half away from zero to the money's minor units.
#[must_use]
pub fn equivalent(amount: i64, price: Money, pack: i64) -> Money {
    let exact = price.amount * Decimal::from(amount) / Decimal::from(pack.max(1));
    let rounded =
        exact.round_dp_with_strategy(price.currency.minor_units(), RoundingStrategy::MidpointAwayFromZero);
    Money { currency: price.currency, amount: rounded }
}

/// Sets every virtual price's equivalent of `offer` at `rates` (none where its currency has no
/// rate).
pub fn set_equivalents(offer: &mut Offer, rates: &BTreeMap<CurrencyCode, (Money, i64)>) {
    for prices in offer.price_lists_mut() {
        for price in prices.iter_mut() {
            if let Price::Virtual { currency, amount, equivalent: slot } = price {
                *slot = rates.get(currency).map(|(price, pack)| equivalent(*amount, *price, *pack));
            }
        }
    }
}

/// Whether some combination of packs of these sizes adds up to exactly `amount`, or `None` when
/// the smallest pack is too large to check. Works through the remainders modulo the smallest
/// pack: the least total reaching each remainder (a shortest path), so the check costs the
/// smallest pack's size, not the amount.
fn buys_exactly(amount: i64, sizes: &[i64]) -> Option<bool> {
    let smallest = sizes.iter().copied().filter(|size| *size > 0).min()?;
    if smallest > SMALLEST_PACK_CHECKED_MAX {
        return None;
    }
    let modulus = usize::try_from(smallest).ok()?;
    let mut least = vec![i64::MAX; modulus];
    least[0] = 0;
    let mut queue = BinaryHeap::from([Reverse((0_i64, 0_usize))]);
    while let Some(Reverse((total, remainder))) = queue.pop() {
        if total > least[remainder] {
            continue;
        }
        for &size in sizes.iter().filter(|size| **size > 0) {
            let next_total = total.saturating_add(size);
            let step = usize::try_from(size % smallest).ok()?;
            let next = (remainder + step) % modulus;
            if next_total < least[next] {
                least[next] = next_total;
                queue.push(Reverse((next_total, next)));
            }
        }
    }
    let remainder = usize::try_from(amount % smallest).ok()?;
    Some(least[remainder] <= amount)
}

/// The rates a player with no regional price or experiment sees (what the live catalog serves
/// everyone while no price varies, and the dashboard shows).
#[must_use]
pub fn anyones_rates(items: &[Item], offers: &[Offer]) -> BTreeMap<CurrencyCode, (Money, i64)> {
    rates_for(&reference_packs(items), offers, &Buyer::anyone())
}

/// Each currency's reference pack and its price for a player with no regional price or
/// experiment.
#[must_use]
pub fn reference_pack_list(items: &[Item], offers: &[Offer]) -> Vec<ReferencePack> {
    reference_packs(items)
        .into_iter()
        .map(|(currency, (sku, amount))| {
            let price = pack_price(offers, &sku, &Buyer::anyone());
            ReferencePack { currency, sku, amount, price }
        })
        .collect()
}

/// What an operator should look at before publishing: virtual prices no combination of packs
/// buys without leftovers, currencies sold in packs without a reference pack, reference packs
/// nothing sells.
#[must_use]
pub fn catalog_warnings(items: &[Item], offers: &[Offer]) -> Vec<CatalogWarning> {
    let sold_for_money: HashSet<&Sku> = offers
        .iter()
        .filter(|offer| {
            offer
                .price_lists()
                .any(|(_, prices)| prices.iter().any(|price| matches!(price, Price::Real { .. })))
        })
        .map(|offer| &offer.sku)
        .collect();
    let mut packs: BTreeMap<&CurrencyCode, Vec<i64>> = BTreeMap::new();
    for item in items.iter().filter(|item| sold_for_money.contains(&item.sku)) {
        if let Some((currency, amount)) = pack_of(item) {
            packs.entry(currency).or_default().push(amount);
        }
    }
    let references = reference_packs(items);
    let mut warnings = Vec::new();
    for currency in packs.keys() {
        if !references.contains_key(*currency) {
            warnings.push(CatalogWarning {
                code: "no_reference_pack".to_owned(),
                field: format!("currencies[{currency}]"),
                message: format!(
                    "{currency} is sold in packs but none is its reference_pack: its prices show players no real-money equivalent"
                ),
            });
        }
    }
    for (currency, (sku, _)) in &references {
        if !sold_for_money.contains(sku) {
            warnings.push(CatalogWarning {
                code: "reference_pack_not_sold".to_owned(),
                field: format!("items[{sku}]"),
                message: format!(
                    "{sku}, the reference pack of {currency}, is not sold for real money: {currency} prices show no real-money equivalent"
                ),
            });
        }
    }
    for offer in offers {
        for (list, prices) in offer.price_lists() {
            for (index, price) in prices.iter().enumerate() {
                let Price::Virtual { currency, amount, .. } = price else { continue };
                let Some(sizes) = packs.get(currency) else { continue };
                if buys_exactly(*amount, sizes) == Some(false) {
                    let mut sorted = sizes.clone();
                    sorted.sort_unstable();
                    let sizes: Vec<String> = sorted.iter().map(ToString::to_string).collect();
                    warnings.push(CatalogWarning {
                        code: "leftover".to_owned(),
                        field: format!("offers[{}].{list}[{index}]", offer.id),
                        message: format!(
                            "{} costs {amount} {currency}, which no combination of {currency} packs ({}) buys without leftovers",
                            offer.sku,
                            sizes.join(", ")
                        ),
                    });
                }
            }
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::{buys_exactly, equivalent};
    use store_api::{Money, MoneyCurrency};

    #[test]
    fn exact_pack_combinations_are_found_and_leftovers_are_not() {
        assert_eq!(buys_exactly(150, &[100, 50]), Some(true));
        assert_eq!(buys_exactly(120, &[100, 550]), Some(false));
        assert_eq!(buys_exactly(650, &[100, 550]), Some(true));
        assert_eq!(buys_exactly(0, &[100]), Some(true), "nothing needs no pack");
        assert_eq!(buys_exactly(7, &[3, 5]), Some(false), "7 is the largest amount 3 and 5 cannot make");
        assert_eq!(buys_exactly(8, &[3, 5]), Some(true));
        assert_eq!(
            buys_exactly(1_000_000_007, &[3, 5]),
            Some(true),
            "large amounts cost the smallest pack, not the amount"
        );
        assert_eq!(buys_exactly(10, &[2_000_000]), None, "too large a smallest pack is not checked");
    }

    #[test]
    fn equivalents_are_exact_then_rounded_to_minor_units() {
        let usd = |text: &str| Money {
            currency: MoneyCurrency::parse("USD").unwrap(),
            amount: text.parse().unwrap(),
        };
        assert_eq!(equivalent(120, usd("0.99"), 100).amount_text(), "1.19", "1.188");
        assert_eq!(equivalent(50, usd("0.99"), 100).amount_text(), "0.50", "0.495 rounds half up");
        let yen = Money { currency: MoneyCurrency::parse("JPY").unwrap(), amount: 160.into() };
        assert_eq!(equivalent(30, yen, 100).amount_text(), "48");
    }
}
