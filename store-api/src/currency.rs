//! Virtual currencies: operator-defined, integer-counted, never money.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::limits::{BALANCE_MAX_LIMIT, NAME_CHARS_MAX};

/// A virtual currency code: `[a-z][a-z0-9_]{1,31}` (`gold`, `gems`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, pattern = "^[a-z][a-z0-9_]{1,31}$", example = "gold")]
pub struct CurrencyCode(String);

impl CurrencyCode {
    /// Parses a currency code.
    ///
    /// # Errors
    /// Returns a message when the text does not match `[a-z][a-z0-9_]{1,31}`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut chars = text.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if first_ok && rest_ok && (2..=32).contains(&text.len()) {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!("currency code `{text}` must match [a-z][a-z0-9_]{{1,31}}"))
        }
    }
}

string_newtype!(CurrencyCode);

/// A display name: 1 to 100 characters, not blank, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "Gold")]
pub struct Name(String);

impl Name {
    /// Parses a display name.
    ///
    /// # Errors
    /// Returns a message when the name is blank, too long or has control characters.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("name must not be blank".to_owned());
        }
        if text.chars().count() > NAME_CHARS_MAX {
            return Err(format!("name must be at most {NAME_CHARS_MAX} characters"));
        }
        if text.chars().any(char::is_control) {
            return Err("name must not contain control characters".to_owned());
        }
        Ok(Self(text.to_owned()))
    }
}

string_newtype!(Name);

/// Whether a currency is mostly earned (`soft`) or mostly bought (`hard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CurrencyKind {
    /// Earned in play.
    Soft,
    /// Mostly bought with money.
    Hard,
}

impl CurrencyKind {
    /// The kind as on the wire and in storage.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Soft => "soft",
            Self::Hard => "hard",
        }
    }

    /// Parses a stored kind.
    ///
    /// # Errors
    /// Returns a message for anything but `soft` or `hard`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "soft" => Ok(Self::Soft),
            "hard" => Ok(Self::Hard),
            other => Err(format!("currency kind `{other}` must be soft or hard")),
        }
    }
}

/// A virtual currency as operators define it and players see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "CurrencyFields")]
pub struct Currency {
    /// Unique code.
    pub code: CurrencyCode,
    /// Display name.
    pub name: Name,
    /// Soft or hard.
    pub kind: CurrencyKind,
    /// Granted to every new player's wallet; at least 0 and at most `balance_max`.
    pub initial_grant: i64,
    /// The most one wallet may hold; at least 1 and at most 2^53.
    pub balance_max: i64,
}

/// The unchecked fields of a [`Currency`], as they arrive.
#[derive(Debug, Deserialize)]
struct CurrencyFields {
    code: CurrencyCode,
    name: Name,
    kind: CurrencyKind,
    initial_grant: i64,
    balance_max: i64,
}

impl TryFrom<CurrencyFields> for Currency {
    type Error = String;
    fn try_from(fields: CurrencyFields) -> Result<Self, String> {
        if !(1..=BALANCE_MAX_LIMIT).contains(&fields.balance_max) {
            return Err(format!("balance_max must be between 1 and {BALANCE_MAX_LIMIT}"));
        }
        if !(0..=fields.balance_max).contains(&fields.initial_grant) {
            return Err("initial_grant must be between 0 and balance_max".to_owned());
        }
        Ok(Self {
            code: fields.code,
            name: fields.name,
            kind: fields.kind,
            initial_grant: fields.initial_grant,
            balance_max: fields.balance_max,
        })
    }
}

/// The currencies of an installation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CurrencyList {
    /// At most 64, sorted by code.
    pub currencies: Vec<Currency>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_codes_follow_the_pattern() {
        for good in ["gold", "g2", "gems_v2", "ab"] {
            assert!(CurrencyCode::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "g", "Gold", "2gold", "gold-coins", "a_very_long_currency_code_over_32c"] {
            assert!(CurrencyCode::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_currency_whose_initial_grant_exceeds_its_max_is_refused() {
        let json = r#"{"code":"gold","name":"Gold","kind":"soft","initial_grant":10,"balance_max":5}"#;
        let error = serde_json::from_str::<Currency>(json).unwrap_err().to_string();
        assert!(error.contains("initial_grant"), "{error}");
    }
}
