//! Real money: an ISO 4217 currency and an exact decimal amount.
//!
//! Money is `rust_decimal::Decimal` in code, a decimal string on the wire (`"0.05"`) and an
//! integer number of micros (1 unit = 1,000,000 micros) in storage. There is no float anywhere
//! on this path.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;

/// Micros in one unit of any currency.
pub const MICROS_PER_UNIT: i64 = 1_000_000;
/// Decimal places a micro amount can carry.
pub const MICRO_DECIMAL_PLACES: u32 = 6;

/// An ISO 4217 currency Coinslot can charge in, with its minor unit and its default minimum card
/// charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ToSchema)]
#[schema(value_type = String, example = "USD")]
pub struct MoneyCurrency(&'static MoneyCurrencyInfo);

/// What Coinslot knows of one ISO 4217 currency.
#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MoneyCurrencyInfo {
    /// The three-letter code.
    pub code: &'static str,
    /// Digits after the decimal point in the smallest coin (USD 2, JPY 0).
    pub minor_units: u32,
    /// The smallest card charge worth making, in minor units (USD 50 = $0.50).
    pub minimum_charge_minor: i64,
}

/// Currencies Coinslot accepts, sorted by code. Minimum charges follow DESIGN.md section 5.4;
/// the rest follow the same "about half a dollar" rule.
static MONEY_CURRENCIES: &[MoneyCurrencyInfo] = &[
    MoneyCurrencyInfo { code: "AUD", minor_units: 2, minimum_charge_minor: 50 },
    MoneyCurrencyInfo { code: "BRL", minor_units: 2, minimum_charge_minor: 50 },
    MoneyCurrencyInfo { code: "CAD", minor_units: 2, minimum_charge_minor: 50 },
    MoneyCurrencyInfo { code: "CHF", minor_units: 2, minimum_charge_minor: 50 },
    MoneyCurrencyInfo { code: "CNY", minor_units: 2, minimum_charge_minor: 400 },
    MoneyCurrencyInfo { code: "DKK", minor_units: 2, minimum_charge_minor: 250 },
    MoneyCurrencyInfo { code: "EUR", minor_units: 2, minimum_charge_minor: 50 },
    MoneyCurrencyInfo { code: "GBP", minor_units: 2, minimum_charge_minor: 30 },
    MoneyCurrencyInfo { code: "INR", minor_units: 2, minimum_charge_minor: 5_000 },
    MoneyCurrencyInfo { code: "JPY", minor_units: 0, minimum_charge_minor: 50 },
    MoneyCurrencyInfo { code: "KRW", minor_units: 0, minimum_charge_minor: 500 },
    MoneyCurrencyInfo { code: "MXN", minor_units: 2, minimum_charge_minor: 1_000 },
    MoneyCurrencyInfo { code: "NOK", minor_units: 2, minimum_charge_minor: 300 },
    MoneyCurrencyInfo { code: "PLN", minor_units: 2, minimum_charge_minor: 200 },
    MoneyCurrencyInfo { code: "SEK", minor_units: 2, minimum_charge_minor: 300 },
    MoneyCurrencyInfo { code: "USD", minor_units: 2, minimum_charge_minor: 50 },
];

impl MoneyCurrency {
    /// Looks up an ISO 4217 code (upper case, as on the wire).
    ///
    /// # Errors
    /// Returns a message when the code is not one Coinslot accepts.
    pub fn parse(code: &str) -> Result<Self, String> {
        MONEY_CURRENCIES
            .binary_search_by(|info| info.code.cmp(code))
            .map(|index| Self(&MONEY_CURRENCIES[index]))
            .map_err(|_| format!("`{code}` is not a supported ISO 4217 currency code"))
    }

    /// The three-letter code.
    #[must_use]
    pub fn code(self) -> &'static str {
        self.0.code
    }

    /// Digits after the decimal point in the smallest coin.
    #[must_use]
    pub fn minor_units(self) -> u32 {
        self.0.minor_units
    }

    /// The default smallest card charge in this currency.
    #[must_use]
    pub fn minimum_charge(self) -> Money {
        Money { currency: self, amount: Decimal::new(self.0.minimum_charge_minor, self.0.minor_units) }
    }
}

impl fmt::Display for MoneyCurrency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for MoneyCurrency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for MoneyCurrency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Self::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// An exact amount of real money: `{"currency":"USD","amount":"0.05"}`.
///
/// The amount is written with at least the currency's minor units (`"5.00"`, `"0.60"`, `"0.99"`;
/// yen `"50"`) and more digits only when it has them (`"0.005"`, at most six); reading accepts
/// any number of places up to six (`"5"`, `"0.6"`). The amount is never negative on the wire and never has more than six decimal places (one
/// micro); whether it must also be whole minor units depends on its use (a card charge must,
/// a tab price need not), so that check is [`Money::is_whole_minor_units`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, ToSchema)]
pub struct Money {
    /// ISO 4217 code.
    pub currency: MoneyCurrency,
    /// Decimal string with at least the currency's minor units and at most six decimal places.
    #[serde(deserialize_with = "deserialize_amount")]
    #[schema(value_type = String, example = "0.05")]
    pub amount: Decimal,
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut money = serializer.serialize_struct("Money", 2)?;
        money.serialize_field("currency", &self.currency)?;
        money.serialize_field("amount", &self.amount_text())?;
        money.end()
    }
}

impl Money {
    /// Money from an integer count of micros.
    #[must_use]
    pub fn from_micros(currency: MoneyCurrency, micros: i64) -> Self {
        Self { currency, amount: Decimal::new(micros, MICRO_DECIMAL_PLACES).normalize() }
    }

    /// The amount as an integer count of micros, for storage.
    ///
    /// # Errors
    /// Fails when the amount has more than six decimal places or does not fit in an `i64`.
    pub fn to_micros(&self) -> Result<i64, String> {
        decimal_to_micros(self.amount)
    }

    /// Whether the amount is a whole number of the currency's minor units (what a card can be
    /// charged).
    #[must_use]
    pub fn is_whole_minor_units(&self) -> bool {
        self.amount.normalize().scale() <= self.currency.minor_units()
    }

    /// The amount as written on the wire and to people: the currency's minor units at least
    /// (`"5.00"`, `"0.60"`; yen `"50"`), more only where the amount has them (`"0.005"`).
    #[must_use]
    pub fn amount_text(&self) -> String {
        let mut amount = self.amount.normalize();
        if amount.scale() < self.currency.minor_units() {
            amount.rescale(self.currency.minor_units());
        }
        amount.to_string()
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount_text(), self.currency)
    }
}

/// Converts a decimal amount to integer micros.
///
/// # Errors
/// Fails when the amount has more than six decimal places or does not fit in an `i64`.
pub fn decimal_to_micros(amount: Decimal) -> Result<i64, String> {
    let normalized = amount.normalize();
    if normalized.scale() > MICRO_DECIMAL_PLACES {
        return Err(format!("{normalized} has more than {MICRO_DECIMAL_PLACES} decimal places"));
    }
    let micros = normalized
        .checked_mul(Decimal::from(MICROS_PER_UNIT))
        .ok_or_else(|| format!("{normalized} is too large"))?;
    i64::try_from(micros).map_err(|_| format!("{normalized} is too large"))
}

/// Accepts only a plain decimal string (`"0.05"`): never a JSON number, which a client may have
/// computed in floating point, and never exponent notation.
fn deserialize_amount<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_amount(&text).map_err(serde::de::Error::custom)
}

/// Parses a non-negative decimal amount string with at most six decimal places.
///
/// # Errors
/// Returns a message naming what is wrong with the text.
pub fn parse_amount(text: &str) -> Result<Decimal, String> {
    let plain = !text.is_empty()
        && text.chars().all(|c| c.is_ascii_digit() || c == '.')
        && text.chars().filter(|&c| c == '.').count() <= 1
        && !text.starts_with('.')
        && !text.ends_with('.');
    if !plain {
        return Err(format!("amount `{text}` must be a plain decimal string such as \"0.05\""));
    }
    let amount = Decimal::from_str(text).map_err(|error| format!("amount `{text}`: {error}"))?;
    decimal_to_micros(amount).map(|_| amount)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(text: &str) -> Money {
        Money { currency: MoneyCurrency::parse("USD").unwrap(), amount: parse_amount(text).unwrap() }
    }

    #[test]
    fn money_round_trips_through_micros_exactly() {
        for text in ["0.05", "0.000001", "999.99", "1000", "0"] {
            let money = usd(text);
            let micros = money.to_micros().unwrap();
            assert_eq!(Money::from_micros(money.currency, micros), money, "{text}");
        }
        assert_eq!(usd("0.05").to_micros().unwrap(), 50_000);
        assert_eq!(usd("0.002").to_micros().unwrap(), 2_000);
    }

    #[test]
    fn amounts_that_are_not_plain_decimal_strings_are_refused() {
        for (text, why) in [
            ("", "empty"),
            ("-1", "negative"),
            ("1e3", "exponent"),
            ("0.0000001", "finer than a micro"),
            (".5", "no leading digit"),
            ("5.", "dangling point"),
            ("1.2.3", "two points"),
            (" 1", "space"),
            ("99999999999999999999", "too large for micros"),
        ] {
            assert!(parse_amount(text).is_err(), "{why}: `{text}` should be refused");
        }
    }

    #[test]
    fn a_json_number_is_not_money() {
        let result = serde_json::from_str::<Money>(r#"{"currency":"USD","amount":0.05}"#);
        assert!(result.is_err());
    }

    #[test]
    fn money_serializes_as_a_decimal_string() {
        let json = serde_json::to_string(&usd("0.050")).unwrap();
        assert_eq!(json, r#"{"currency":"USD","amount":"0.05"}"#);
    }

    #[test]
    fn amounts_are_written_with_the_currency_minor_units_and_read_either_way() {
        for (text, written) in [
            ("5", "5.00"),
            ("0.6", "0.60"),
            ("0.99", "0.99"),
            ("0.990000", "0.99"),
            ("0.005", "0.005"),
            ("0.000001", "0.000001"),
            ("0", "0.00"),
            ("1000", "1000.00"),
        ] {
            let money = usd(text);
            let json = serde_json::to_string(&money).unwrap();
            assert_eq!(json, format!(r#"{{"currency":"USD","amount":"{written}"}}"#), "{text}");
            assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), money, "{text} reads back");
            assert_eq!(money.to_string(), format!("{written} USD"));
        }
        let yen = |text| Money {
            currency: MoneyCurrency::parse("JPY").unwrap(),
            amount: parse_amount(text).unwrap(),
        };
        assert_eq!(yen("50").amount_text(), "50");
        assert_eq!(yen("50.0").amount_text(), "50");
        assert_eq!(yen("0.5").amount_text(), "0.5");
    }

    #[test]
    fn whole_minor_units_follow_the_currency() {
        assert!(usd("0.05").is_whole_minor_units());
        assert!(!usd("0.005").is_whole_minor_units());
        let yen =
            Money { currency: MoneyCurrency::parse("JPY").unwrap(), amount: parse_amount("50").unwrap() };
        assert!(yen.is_whole_minor_units());
        let fractional_yen = Money { amount: parse_amount("50.5").unwrap(), ..yen };
        assert!(!fractional_yen.is_whole_minor_units());
    }

    #[test]
    fn currency_codes_are_checked_against_iso_4217() {
        assert_eq!(MoneyCurrency::parse("KRW").unwrap().minor_units(), 0);
        assert_eq!(
            MoneyCurrency::parse("USD").unwrap().minimum_charge().amount,
            parse_amount("0.5").unwrap()
        );
        assert!(MoneyCurrency::parse("usd").is_err());
        assert!(MoneyCurrency::parse("XXX").is_err());
        let sorted = MONEY_CURRENCIES.windows(2).all(|pair| pair[0].code < pair[1].code);
        assert!(sorted, "the table must stay sorted for binary search");
    }
}
