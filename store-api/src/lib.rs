//! Coinslot's wire contract: the serde types that travel between the store server, the game SDK
//! and operators' tools, with money, ids, error codes and the named limits they share.
//!
//! This crate has no axum, sqlx, tokio or bevy in it: both sides of the wire depend on it, so it
//! stays plain data plus the parsing that turns raw input into domain types once, at the edge.

/// The conversions every string newtype shares: `as_str`, `Display`, and serde's
/// `try_from = "String"` / `into = "String"` through the type's own `parse`.
macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            /// The value as text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> Result<Self, String> {
                Self::parse(&text)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

pub mod admin;
pub mod analytics;
pub mod auth;
pub mod catalog;
pub mod currency;
pub mod error;
pub mod ledger;
pub mod limits;
pub mod money;
pub mod orders;
pub mod receipt;
pub mod sandbox;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use money::{Money, MoneyCurrency};

/// Parses a UUID that must be version 7 (time-ordered), the only kind of id Coinslot issues.
///
/// # Errors
/// Returns a message naming the problem when the text is not a UUID v7.
pub fn parse_uuid_v7(text: &str) -> Result<uuid::Uuid, String> {
    let id = uuid::Uuid::parse_str(text).map_err(|_| format!("`{text}` is not a UUID"))?;
    if id.get_version_num() != 7 {
        return Err(format!("`{text}` is not a UUID v7"));
    }
    Ok(id)
}
