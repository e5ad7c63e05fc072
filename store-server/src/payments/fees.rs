//! Payment fees: a fixed part plus a percentage, per currency, rounded to the currency's minor
//! units (half away from zero, as card networks do).

use std::collections::BTreeMap;

use rust_decimal::{Decimal, RoundingStrategy};
use store_api::{Money, MoneyCurrency};

/// A fee schedule: per currency a fixed part and a percentage; currencies without an entry pay
/// the default percentage and a fixed part of 60% of their minimum card charge (USD 0.30).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeeSchedule {
    per_currency: BTreeMap<&'static str, (Decimal, Decimal)>,
    default_percent: Decimal,
}

impl Default for FeeSchedule {
    fn default() -> Self {
        Self { per_currency: BTreeMap::new(), default_percent: Decimal::new(29, 1) }
    }
}

impl FeeSchedule {
    /// Parses `USD=0.30+2.9%,EUR=0.25+1.4%`.
    ///
    /// # Errors
    /// Returns a message naming the entry that is not `CODE=FIXED+PERCENT%`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut schedule = Self::default();
        for entry in text.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
            let bad = || format!("fee `{entry}` must look like USD=0.30+2.9%");
            let (code, terms) = entry.split_once('=').ok_or_else(bad)?;
            let (fixed, percent) = terms.split_once('+').ok_or_else(bad)?;
            let currency = MoneyCurrency::parse(code.trim())?;
            let fixed = store_api::money::parse_amount(fixed.trim()).map_err(|_| bad())?;
            let percent =
                store_api::money::parse_amount(percent.trim().trim_end_matches('%')).map_err(|_| bad())?;
            schedule.per_currency.insert(currency.code(), (fixed, percent));
        }
        Ok(schedule)
    }

    /// The fee on a charge of `amount`, never more than the charge itself.
    #[must_use]
    pub fn fee(&self, amount: Money) -> Money {
        let fee = self.fee_uncapped(amount);
        Money { currency: amount.currency, amount: fee.amount.min(amount.amount).normalize() }
    }

    /// What the schedule would take from a charge of `amount` on its own, even more than the
    /// charge: the cost of charging a micro-price to a card, which tabs save.
    #[must_use]
    pub fn fee_uncapped(&self, amount: Money) -> Money {
        let currency = amount.currency;
        let (fixed, percent) = self.per_currency.get(currency.code()).copied().unwrap_or_else(|| {
            let fixed = (currency.minimum_charge().amount * Decimal::new(6, 1))
                .round_dp_with_strategy(currency.minor_units(), RoundingStrategy::MidpointAwayFromZero);
            (fixed, self.default_percent)
        });
        let variable = share(amount, percent).amount;
        Money { currency, amount: (fixed + variable).normalize() }
    }
}

/// `percent` of `amount`, rounded to the currency's minor units (half away from zero): a card
/// fee's variable part, a platform's revenue share (Steam, the App Store, Google Play).
#[must_use]
pub fn share(amount: Money, percent: Decimal) -> Money {
    let part = (amount.amount * percent / Decimal::ONE_HUNDRED)
        .round_dp_with_strategy(amount.currency.minor_units(), RoundingStrategy::MidpointAwayFromZero);
    Money { currency: amount.currency, amount: part.normalize() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(code: &str, amount: &str) -> Money {
        Money {
            currency: MoneyCurrency::parse(code).unwrap(),
            amount: store_api::money::parse_amount(amount).unwrap(),
        }
    }

    #[test]
    fn the_default_fee_is_thirty_cents_plus_2_9_percent_rounded_to_cents() {
        let fees = FeeSchedule::default();
        assert_eq!(fees.fee(money("USD", "0.99")), money("USD", "0.33")); // 0.30 + 0.02871
        assert_eq!(fees.fee(money("USD", "5.00")), money("USD", "0.45")); // 0.30 + 0.145 → 0.15
        assert_eq!(fees.fee(money("JPY", "500")), money("JPY", "45")); // 30 + 14.5 → 15
        assert_eq!(fees.fee(money("USD", "0.10")), money("USD", "0.10"), "never more than the charge");
    }

    #[test]
    fn a_platform_s_share_is_rounded_to_the_currency_s_minor_unit() {
        let thirty = Decimal::from(30);
        assert_eq!(share(money("USD", "0.99"), thirty), money("USD", "0.30"), "0.297");
        assert_eq!(share(money("USD", "4.99"), thirty), money("USD", "1.50"), "1.497");
        assert_eq!(share(money("JPY", "125"), thirty), money("JPY", "38"), "37.5");
        assert_eq!(share(money("USD", "1.00"), Decimal::from(15)), money("USD", "0.15"));
        assert_eq!(share(money("USD", "0.99"), Decimal::ZERO), money("USD", "0"));
    }

    #[test]
    fn a_schedule_parses_per_currency_terms() {
        let fees = FeeSchedule::parse("EUR=0.25+1.4%").unwrap();
        assert_eq!(fees.fee(money("EUR", "10.00")), money("EUR", "0.39"));
        assert!(FeeSchedule::parse("EUR=0.25").is_err());
        assert!(FeeSchedule::parse("XXX=0.25+1%").is_err());
    }
}
