//! The prices a player sees and pays: regional prices for the player's country first, else the
//! player's variant of a price experiment, else the offer's prices.
//!
//! Variant assignment is deterministic: SHA-256 of the player and offer ids picks a point in the
//! variants' total weight, so a player sees the same variant every time, on every instance,
//! with nothing stored; purchases and orders record the variant they were priced in.

use sha2::{Digest, Sha256};
use store_api::auth::Country;
use store_api::catalog::{Offer, Price};
use uuid::Uuid;

/// Who prices are chosen for.
#[derive(Debug, Clone)]
pub struct Buyer {
    /// The player.
    pub player_id: Uuid,
    /// The player's country, from login.
    pub country: Option<Country>,
}

impl Buyer {
    /// A player with no country and no experiment of note: the prices everyone sees while
    /// nothing varies.
    #[must_use]
    pub fn anyone() -> Self {
        Self { player_id: Uuid::nil(), country: None }
    }
}

/// The variant of `offer`'s experiment `player_id` is in, if it has one.
#[must_use]
pub fn assigned_variant(offer: &Offer, player_id: Uuid) -> Option<&store_api::catalog::PriceVariant> {
    let total: i64 = offer.variants.iter().map(|variant| variant.weight).sum();
    if total <= 0 {
        return None;
    }
    let digest =
        Sha256::new().chain_update(player_id.as_bytes()).chain_update(offer.id.uuid().as_bytes()).finalize();
    let mut bytes = [0_u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    let mut point = i64::try_from(u64::from_be_bytes(bytes) % u64::try_from(total).unwrap_or(1)).unwrap_or(0);
    offer.variants.iter().find(|variant| {
        if point < variant.weight {
            true
        } else {
            point -= variant.weight;
            false
        }
    })
}

/// The prices `buyer` sees for `offer`, and the variant they come from.
#[must_use]
pub fn effective_prices<'o>(offer: &'o Offer, buyer: &Buyer) -> (&'o [Price], Option<&'o str>) {
    if let Some(prices) = buyer.country.as_ref().and_then(|country| offer.regional_prices.get(country)) {
        return (prices, None);
    }
    match assigned_variant(offer, buyer.player_id) {
        Some(variant) => (&variant.prices, Some(variant.name.as_str())),
        None => (&offer.prices, None),
    }
}

/// The offer as `buyer` sees it: their prices only, and the variant they are in.
#[must_use]
pub fn personalize(offer: &Offer, buyer: &Buyer) -> Offer {
    let (prices, variant) = effective_prices(offer, buyer);
    Offer {
        id: offer.id,
        sku: offer.sku.clone(),
        prices: prices.to_vec(),
        sale_window: offer.sale_window,
        regional_prices: Default::default(),
        variants: Vec::new(),
        variant: variant.map(str::to_owned),
        platform_products: offer.platform_products.clone(),
    }
}

/// Whether any offer prices differ between players (so the catalog must be personalized).
#[must_use]
pub fn varies(offer: &Offer) -> bool {
    !offer.regional_prices.is_empty() || !offer.variants.is_empty()
}

/// The buyer for a player: their country, from the player row.
///
/// # Errors
/// Fails when the database does.
pub async fn buyer(conn: &mut sqlx::AnyConnection, player_id: Uuid) -> crate::error::ApiResult<Buyer> {
    let country: Option<Option<String>> = sqlx::query_scalar("select country from player where id = $1")
        .bind(player_id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(Buyer { player_id, country: country.flatten().and_then(|code| Country::parse(&code).ok()) })
}

/// The price a request picks from `prices`: `requested`, or the first that `default` accepts
/// (refused with `none()` when there is none).
///
/// # Errors
/// `invalid_request` for an index past the prices; `none()` when no price is the default.
pub fn pick_price(
    prices: &[Price],
    requested: Option<u32>,
    default: impl Fn(&Price) -> bool,
    none: impl FnOnce() -> crate::error::ApiError,
) -> crate::error::ApiResult<(u32, &Price)> {
    let price_index = match requested {
        Some(index) => index,
        None => {
            prices.iter().position(default).and_then(|index| u32::try_from(index).ok()).ok_or_else(none)?
        }
    };
    let price = usize::try_from(price_index).ok().and_then(|index| prices.get(index)).ok_or_else(|| {
        crate::error::ApiError::invalid(
            "price_index",
            format!("the offer has {} prices; price_index {price_index} is not one", prices.len()),
        )
    })?;
    Ok((price_index, price))
}
