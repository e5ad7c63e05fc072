//! Players and operators as callers: who is asking and how often.
//!
//! Owns credentials (device logins, Steam session tickets ([`steam`]), signed session tokens, operator API keys and their scopes:
//! [`auth`]), per-caller rate limits ([`rate_limit`]) and a player's data export and erasure
//! ([`privacy`]).
//!
//! Uses only the database; never moves money.

pub mod auth;
pub mod privacy;
pub mod rate_limit;
pub mod steam;
