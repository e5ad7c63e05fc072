//! The store: what is for sale and what a player holds.
//!
//! Owns the catalog (items, offers, currencies, drafts and published versions, the cached live
//! catalog and each player's view of it), prices (regions and experiments), the hot money
//! operations on virtual currency (purchases, consumes, reward claims, operator and initial
//! grants) and reward rules.
//!
//! Uses [`crate::ledger`] to move balances and items, and [`crate::payments::tabs`] for purchases
//! put on a tab. Knows nothing about HTTP; real-money orders are [`crate::payments`]'s.

pub mod catalog;
pub mod operations;
pub mod pricing;
pub mod rewards;
