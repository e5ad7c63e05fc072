//! The named limits of DESIGN.md section 11 that both sides of the wire need to know.
//! Units come last in every name.

/// Largest request body the server reads.
pub const REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;
/// Longest accepted `Idempotency-Key`.
pub const IDEMPOTENCY_KEY_LENGTH_MAX: usize = 255;
/// Largest quantity in one purchase or order.
pub const PURCHASE_QUANTITY_MAX: u32 = 100;
/// Page size bounds for every list.
pub const PAGE_SIZE_MAX: u32 = 200;
/// Page size when the caller does not give one.
pub const PAGE_SIZE_DEFAULT: u32 = 50;
/// Items in one catalog.
pub const CATALOG_ITEMS_MAX: usize = 100_000;
/// Offers in one catalog.
pub const CATALOG_OFFERS_MAX: usize = 100_000;
/// Virtual currencies per installation.
pub const CURRENCIES_MAX: usize = 64;
/// Largest `balance_max` a currency may declare: 2^53, so every balance is exact in JSON numbers.
pub const BALANCE_MAX_LIMIT: i64 = 1 << 53;
/// Largest single real-money order, in whole units of any currency.
pub const ORDER_AMOUNT_UNITS_MAX: i64 = 1_000;
/// Longest display name of a currency, item or key, in characters.
pub const NAME_CHARS_MAX: usize = 100;
/// Longest item description, in characters.
pub const DESCRIPTION_CHARS_MAX: usize = 2_000;
/// Tags on one item.
pub const ITEM_TAGS_MAX: usize = 16;
/// Longest tag, in characters.
pub const TAG_CHARS_MAX: usize = 32;
/// Entries in one item's grants (item grants plus currency grants).
pub const ITEM_GRANTS_MAX: usize = 32;
/// Alternative prices on one offer.
pub const OFFER_PRICES_MAX: usize = 8;
/// Longest device id a player may log in with, in bytes.
pub const DEVICE_ID_BYTES_MAX: usize = 128;
