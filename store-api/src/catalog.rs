//! The catalog: items (what can be owned) and offers (ways to buy them), edited as a draft and
//! published as immutable numbered versions.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use std::collections::BTreeMap;

use crate::auth::Country;
use crate::currency::{Currency, CurrencyCode, Name};
use crate::limits::{DESCRIPTION_CHARS_MAX, ITEM_GRANTS_MAX, ITEM_TAGS_MAX, OFFER_PRICES_MAX, TAG_CHARS_MAX};
use crate::money::Money;

/// Countries one offer may have regional prices for.
pub const OFFER_REGIONS_MAX: usize = 64;
/// Variants in one price experiment.
pub const OFFER_VARIANTS_MAX: usize = 8;

/// Largest quantity of one item a single grant may give.
pub const GRANT_QUANTITY_MAX: i64 = 1_000_000;
/// Longest icon path, in bytes.
pub const ICON_BYTES_MAX: usize = 200;

/// An item's stock-keeping unit: `[a-z0-9][a-z0-9_.-]{0,63}` (`magnet`, `skin.red`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$", example = "magnet")]
pub struct Sku(String);

impl Sku {
    /// Parses a sku.
    ///
    /// # Errors
    /// Returns a message when the text does not match `[a-z0-9][a-z0-9_.-]{0,63}`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut chars = text.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok =
            chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
        if first_ok && rest_ok && text.len() <= 64 {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!("sku `{text}` must match [a-z0-9][a-z0-9_.-]{{0,63}}"))
        }
    }
}

string_newtype!(Sku);

/// A creator who earns a share of an item's sales: `[a-z0-9][a-z0-9_-]{0,63}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "pixel_studio")]
pub struct CreatorId(String);

impl CreatorId {
    /// Parses a creator id.
    ///
    /// # Errors
    /// Returns a message when the text does not match `[a-z0-9][a-z0-9_-]{0,63}`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut chars = text.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
        if first_ok && rest_ok && text.len() <= 64 {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!("creator `{text}` must match [a-z0-9][a-z0-9_-]{{0,63}}"))
        }
    }
}

string_newtype!(CreatorId);

/// A creator's share of an item's net revenue, in basis points (1 = 0.01%, 10,000 = 100%).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatorShare {
    /// Who.
    pub creator: CreatorId,
    /// How much, 1 to 10,000 basis points.
    pub share_bps: i64,
}

/// The most all of an item's creator shares may add up to: 100%.
pub const CREATOR_SHARES_BPS_MAX: i64 = 10_000;

/// An offer's id: a UUID v7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, format = Uuid)]
pub struct OfferId(Uuid);

impl OfferId {
    /// A fresh, time-ordered id.
    #[must_use]
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses an offer id.
    ///
    /// # Errors
    /// Returns a message when the text is not a UUID v7.
    pub fn parse(text: &str) -> Result<Self, String> {
        crate::parse_uuid_v7(text).map(Self)
    }

    /// The underlying UUID.
    #[must_use]
    pub fn uuid(self) -> Uuid {
        self.0
    }
}

impl TryFrom<String> for OfferId {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<OfferId> for String {
    fn from(id: OfferId) -> Self {
        id.0.to_string()
    }
}

impl std::fmt::Display for OfferId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What kind of thing an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// Used up when consumed (a power-up).
    Consumable,
    /// Owned once, kept forever (a skin).
    Durable,
    /// Grants virtual currency when bought.
    CurrencyPack,
    /// Grants several items and/or currency amounts.
    Bundle,
}

/// An item granted by another item (a bundle's contents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ItemGrant {
    /// The granted item.
    pub sku: Sku,
    /// How many, 1 to 1,000,000.
    pub quantity: i64,
}

/// A currency amount granted by an item (a currency pack or a bundle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CurrencyGrant {
    /// The granted currency.
    pub currency: CurrencyCode,
    /// How much, at least 1.
    pub amount: i64,
}

/// What buying an item gives besides the item itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Grants {
    /// Items given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemGrant>,
    /// Currency amounts given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub currencies: Vec<CurrencyGrant>,
}

impl Grants {
    /// Whether nothing is granted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.currencies.is_empty()
    }
}

/// The period a purchase limit counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitPeriod {
    /// A UTC calendar day.
    Day,
    /// An ISO week (UTC).
    Week,
    /// A UTC calendar month.
    Month,
    /// Forever.
    Lifetime,
}

/// At most `count` purchases per player per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PurchaseLimit {
    /// At least 1.
    pub count: i64,
    /// The counting period.
    pub period: LimitPeriod,
}

/// A catalog item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "ItemFields")]
pub struct Item {
    /// Unique sku.
    pub sku: Sku,
    /// What kind of thing it is.
    pub kind: ItemKind,
    /// Display name.
    pub name: Name,
    /// Up to 2,000 characters.
    #[serde(default)]
    pub description: String,
    /// Up to 16 tags of up to 32 characters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// An asset path for the icon (`icons/magnet.png`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    /// What buying it gives besides the item itself.
    #[serde(default, skip_serializing_if = "Grants::is_empty")]
    pub grants: Grants,
    /// Optional per-player purchase limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchase_limit: Option<PurchaseLimit>,
    /// Optional total stock; absent means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock: Option<i64>,
    /// Creators who earn a share of the item's real-money net revenue.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub creators: Vec<CreatorShare>,
    /// This currency pack is its currency's reference: every virtual price in that currency is
    /// shown to players with its real-money equivalent at this pack's price (one pack per
    /// currency; a `currency_pack` granting one currency and nothing else).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reference_pack: bool,
}

/// The unchecked fields of an [`Item`], as they arrive.
#[derive(Debug, Deserialize)]
struct ItemFields {
    sku: Sku,
    kind: ItemKind,
    name: Name,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    icon: Option<String>,
    #[serde(default)]
    grants: Grants,
    #[serde(default)]
    purchase_limit: Option<PurchaseLimit>,
    #[serde(default)]
    stock: Option<i64>,
    #[serde(default)]
    creators: Vec<CreatorShare>,
    #[serde(default)]
    reference_pack: bool,
}

impl TryFrom<ItemFields> for Item {
    type Error = String;
    fn try_from(fields: ItemFields) -> Result<Self, String> {
        if fields.description.chars().count() > DESCRIPTION_CHARS_MAX {
            return Err(format!("description must be at most {DESCRIPTION_CHARS_MAX} characters"));
        }
        if fields.tags.len() > ITEM_TAGS_MAX {
            return Err(format!("an item has at most {ITEM_TAGS_MAX} tags"));
        }
        if let Some(tag) = fields.tags.iter().find(|tag| {
            tag.is_empty() || tag.chars().count() > TAG_CHARS_MAX || tag.chars().any(char::is_control)
        }) {
            return Err(format!("tag `{tag}` must be 1 to {TAG_CHARS_MAX} printable characters"));
        }
        if let Some(icon) = &fields.icon
            && (icon.is_empty() || icon.len() > ICON_BYTES_MAX || icon.chars().any(char::is_control))
        {
            return Err(format!("icon must be a path of 1 to {ICON_BYTES_MAX} bytes"));
        }
        let grant_count = fields.grants.items.len() + fields.grants.currencies.len();
        if grant_count > ITEM_GRANTS_MAX {
            return Err(format!("an item grants at most {ITEM_GRANTS_MAX} things"));
        }
        if let Some(grant) =
            fields.grants.items.iter().find(|g| !(1..=GRANT_QUANTITY_MAX).contains(&g.quantity))
        {
            return Err(format!(
                "grant of `{}` must have a quantity from 1 to {GRANT_QUANTITY_MAX}",
                grant.sku
            ));
        }
        if let Some(grant) = fields.grants.currencies.iter().find(|g| g.amount < 1) {
            return Err(format!("grant of `{}` must have an amount of at least 1", grant.currency));
        }
        match fields.kind {
            ItemKind::CurrencyPack if fields.grants.currencies.is_empty() => {
                return Err("a currency_pack must grant at least one currency".to_owned());
            }
            ItemKind::Bundle if fields.grants.is_empty() => {
                return Err("a bundle must grant at least one item or currency".to_owned());
            }
            _ => {}
        }
        if fields.reference_pack
            && !(fields.kind == ItemKind::CurrencyPack
                && fields.grants.currencies.len() == 1
                && fields.grants.items.is_empty())
        {
            return Err(
                "a reference_pack is a currency_pack granting one currency and nothing else".to_owned()
            );
        }
        if fields.purchase_limit.is_some_and(|limit| limit.count < 1) {
            return Err("purchase_limit.count must be at least 1".to_owned());
        }
        if fields.stock.is_some_and(|stock| stock < 0) {
            return Err("stock must not be negative".to_owned());
        }
        if fields.creators.iter().any(|share| !(1..=CREATOR_SHARES_BPS_MAX).contains(&share.share_bps)) {
            return Err(format!("a creator's share_bps must be from 1 to {CREATOR_SHARES_BPS_MAX}"));
        }
        let total: i64 = fields.creators.iter().map(|share| share.share_bps).sum();
        if total > CREATOR_SHARES_BPS_MAX {
            return Err(format!(
                "creator shares add up to {total} basis points, more than 100% ({CREATOR_SHARES_BPS_MAX})"
            ));
        }
        let mut creators: Vec<&CreatorId> = fields.creators.iter().map(|share| &share.creator).collect();
        creators.sort();
        if creators.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err("a creator is named twice".to_owned());
        }
        Ok(Self {
            sku: fields.sku,
            kind: fields.kind,
            name: fields.name,
            description: fields.description,
            tags: fields.tags,
            icon: fields.icon,
            grants: fields.grants,
            purchase_limit: fields.purchase_limit,
            stock: fields.stock,
            creators: fields.creators,
            reference_pack: fields.reference_pack,
        })
    }
}

/// How a real-money price is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Settlement {
    /// One card charge per order.
    Immediate,
    /// Added to the player's running tab, settled later as one charge.
    Tab,
}

/// One way to pay for an offer: virtual currency or real money.
///
/// On the wire a virtual price is `{"currency":"gold","amount":100}` and a real one is
/// `{"money":{"currency":"USD","amount":"0.05"},"settlement":"tab"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PriceFields", into = "PriceFields")]
pub enum Price {
    /// Paid from a wallet.
    Virtual {
        /// The currency debited.
        currency: CurrencyCode,
        /// How much, at least 1.
        amount: i64,
        /// In a player's catalog: what this much of the currency costs in real money at the
        /// currency's reference pack, in the player's money. Computed by the store; ignored on
        /// input.
        equivalent: Option<Money>,
    },
    /// Paid with real money.
    Real {
        /// The price.
        money: Money,
        /// Charged at once or added to a tab.
        settlement: Settlement,
    },
}

/// The wire fields of a [`Price`]: either `currency` + `amount`, or `money` + `settlement`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PriceFields {
    /// Virtual currency code (virtual prices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<CurrencyCode>,
    /// Integer amount of the virtual currency (virtual prices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    /// Real-money amount (real prices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub money: Option<Money>,
    /// `immediate` or `tab` (real prices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement: Option<Settlement>,
    /// A virtual price's real-money equivalent in the player's catalog (at the currency's
    /// reference pack, rounded to the money's minor units); computed, ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equivalent: Option<Money>,
}

impl TryFrom<PriceFields> for Price {
    type Error = String;
    fn try_from(fields: PriceFields) -> Result<Self, String> {
        match fields {
            PriceFields {
                currency: Some(currency),
                amount: Some(amount),
                money: None,
                settlement: None,
                equivalent,
            } => {
                if amount < 1 {
                    return Err(format!("price amount must be at least 1, not {amount}"));
                }
                Ok(Self::Virtual { currency, amount, equivalent })
            }
            PriceFields {
                currency: None,
                amount: None,
                money: Some(money),
                settlement: Some(settlement),
                equivalent: None,
            } => {
                if money.amount.is_zero() {
                    return Err("price money must be more than zero".to_owned());
                }
                Ok(Self::Real { money, settlement })
            }
            _ => Err("a price is either {currency, amount} or {money, settlement}".to_owned()),
        }
    }
}

impl From<Price> for PriceFields {
    fn from(price: Price) -> Self {
        match price {
            Price::Virtual { currency, amount, equivalent } => Self {
                currency: Some(currency),
                amount: Some(amount),
                money: None,
                settlement: None,
                equivalent,
            },
            Price::Real { money, settlement } => Self {
                currency: None,
                amount: None,
                money: Some(money),
                settlement: Some(settlement),
                equivalent: None,
            },
        }
    }
}

/// When an offer is on sale. Both ends are optional; `starts_at` is inclusive, `ends_at`
/// exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SaleWindow {
    /// First moment the offer is live.
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<OffsetDateTime>,
    /// First moment it is no longer live.
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<OffsetDateTime>,
}

/// A way to buy an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "OfferFields")]
pub struct Offer {
    /// UUID v7.
    pub id: OfferId,
    /// The item bought.
    pub sku: Sku,
    /// One to eight alternative prices; a buyer names one by index.
    #[schema(value_type = Vec<PriceFields>)]
    pub prices: Vec<Price>,
    /// Optional sale window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sale_window: Option<SaleWindow>,
    /// Prices for players in these countries instead of `prices` (and of any variant).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub regional_prices: BTreeMap<Country, Vec<Price>>,
    /// An A/B price experiment: each player is assigned one variant (by weight, the same one
    /// every time) and sees its prices instead of `prices`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<PriceVariant>,
    /// In a player's catalog: the variant the player is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The product ids this offer is sold under in the platforms' own stores: a purchase made
    /// there and redeemed here (`POST /v1/platform-purchases/…`) grants this offer.
    #[serde(default, skip_serializing_if = "PlatformProducts::is_empty")]
    pub platform_products: PlatformProducts,
}

/// An offer's product ids in the platforms' stores, each `[A-Za-z0-9._-]{1,150}` and sold by one
/// offer at most.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlatformProducts {
    /// The App Store product id (App Store Connect → In-App Purchases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_store: Option<String>,
    /// The Google Play product id (Play Console → In-app products).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_play: Option<String>,
}

impl PlatformProducts {
    /// Whether the offer is sold on no platform's store.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.app_store.is_none() && self.google_play.is_none()
    }

    /// Each platform's product id, named: `("app_store", id)`, `("google_play", id)`.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [("app_store", self.app_store.as_deref()), ("google_play", self.google_play.as_deref())]
            .into_iter()
            .filter_map(|(platform, id)| id.map(|id| (platform, id)))
    }

    /// Checks every product id's form.
    ///
    /// # Errors
    /// The first id that is not `[A-Za-z0-9._-]{1,150}`.
    pub fn check(&self) -> Result<(), String> {
        for (platform, id) in self.named() {
            let ok = (1..=150).contains(&id.len())
                && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
            if !ok {
                return Err(format!("platform_products.{platform} must match [A-Za-z0-9._-]{{1,150}}"));
            }
        }
        Ok(())
    }
}

/// One arm of a price experiment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PriceVariant {
    /// `[a-z0-9_-]{1,32}`, unique within the offer.
    pub name: String,
    /// Relative weight, 1 to 1,000.
    pub weight: i64,
    /// The variant's prices (1 to 8).
    #[schema(value_type = Vec<PriceFields>)]
    pub prices: Vec<Price>,
}

/// The unchecked fields of an [`Offer`], as they arrive.
#[derive(Debug, Deserialize)]
struct OfferFields {
    id: OfferId,
    sku: Sku,
    prices: Vec<Price>,
    #[serde(default)]
    sale_window: Option<SaleWindow>,
    #[serde(default)]
    regional_prices: BTreeMap<Country, Vec<Price>>,
    #[serde(default)]
    variants: Vec<PriceVariant>,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    platform_products: PlatformProducts,
}

/// The rules every offer keeps on its own: one to eight prices, a sale window that starts before
/// it ends.
fn check_offer_terms(
    prices: &[Price],
    sale_window: Option<&SaleWindow>,
    regional_prices: &BTreeMap<Country, Vec<Price>>,
    variants: &[PriceVariant],
) -> Result<(), String> {
    if !(1..=OFFER_PRICES_MAX).contains(&prices.len()) {
        return Err(format!("an offer has 1 to {OFFER_PRICES_MAX} prices"));
    }
    if regional_prices.len() > OFFER_REGIONS_MAX {
        return Err(format!("an offer has regional prices for at most {OFFER_REGIONS_MAX} countries"));
    }
    if let Some((country, _)) =
        regional_prices.iter().find(|(_, prices)| !(1..=OFFER_PRICES_MAX).contains(&prices.len()))
    {
        return Err(format!("regional_prices.{country} has 1 to {OFFER_PRICES_MAX} prices"));
    }
    if variants.len() == 1 || variants.len() > OFFER_VARIANTS_MAX {
        return Err(format!("an experiment has 2 to {OFFER_VARIANTS_MAX} variants"));
    }
    let mut names = std::collections::BTreeSet::new();
    for variant in variants {
        let name_ok = !variant.name.is_empty()
            && variant.name.len() <= 32
            && variant
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !name_ok || !names.insert(variant.name.as_str()) {
            return Err(format!(
                "variant name `{}` must be unique and match [a-z0-9_-]{{1,32}}",
                variant.name
            ));
        }
        if !(1..=1_000).contains(&variant.weight) {
            return Err(format!("variant `{}` needs a weight from 1 to 1000", variant.name));
        }
        if !(1..=OFFER_PRICES_MAX).contains(&variant.prices.len()) {
            return Err(format!("variant `{}` has 1 to {OFFER_PRICES_MAX} prices", variant.name));
        }
    }
    if let Some(SaleWindow { starts_at: Some(starts), ends_at: Some(ends) }) = sale_window.copied()
        && starts >= ends
    {
        return Err("sale_window.starts_at must be before sale_window.ends_at".to_owned());
    }
    Ok(())
}

impl TryFrom<OfferFields> for Offer {
    type Error = String;
    fn try_from(fields: OfferFields) -> Result<Self, String> {
        check_offer_terms(
            &fields.prices,
            fields.sale_window.as_ref(),
            &fields.regional_prices,
            &fields.variants,
        )?;
        fields.platform_products.check()?;
        Ok(Self {
            id: fields.id,
            sku: fields.sku,
            prices: fields.prices,
            sale_window: fields.sale_window,
            regional_prices: fields.regional_prices,
            variants: fields.variants,
            variant: fields.variant,
            platform_products: fields.platform_products,
        })
    }
}

/// An offer as an operator creates it: like [`Offer`], but the server assigns the id when none
/// is given.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NewOffer {
    /// Optional UUID v7; the server makes one when absent.
    #[serde(default)]
    pub id: Option<OfferId>,
    /// The item bought.
    pub sku: Sku,
    /// One to eight alternative prices.
    #[schema(value_type = Vec<PriceFields>)]
    pub prices: Vec<Price>,
    /// Optional sale window.
    #[serde(default)]
    pub sale_window: Option<SaleWindow>,
    /// Prices per country.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub regional_prices: BTreeMap<Country, Vec<Price>>,
    /// An A/B price experiment.
    #[serde(default)]
    pub variants: Vec<PriceVariant>,
    /// Product ids in the platforms' stores.
    #[serde(default)]
    pub platform_products: PlatformProducts,
}

impl Offer {
    /// Every price list of the offer with its path in the offer: `prices`,
    /// `regional_prices.JP`, `variants[0].prices`.
    pub fn price_lists(&self) -> impl Iterator<Item = (String, &Vec<Price>)> {
        std::iter::once(("prices".to_owned(), &self.prices))
            .chain(
                self.regional_prices
                    .iter()
                    .map(|(country, prices)| (format!("regional_prices.{country}"), prices)),
            )
            .chain(
                self.variants
                    .iter()
                    .enumerate()
                    .map(|(index, variant)| (format!("variants[{index}].prices"), &variant.prices)),
            )
    }

    /// Every price list of the offer: its prices, its regional prices, its variants' prices.
    pub fn price_lists_mut(&mut self) -> impl Iterator<Item = &mut Vec<Price>> {
        std::iter::once(&mut self.prices)
            .chain(self.regional_prices.values_mut())
            .chain(self.variants.iter_mut().map(|variant| &mut variant.prices))
    }

    /// The offer without the real-money equivalents a player's catalog shows (what an operator
    /// sends back is stored without them: they are computed).
    #[must_use]
    pub fn without_equivalents(mut self) -> Self {
        for prices in self.price_lists_mut() {
            for price in prices.iter_mut() {
                if let Price::Virtual { equivalent, .. } = price {
                    *equivalent = None;
                }
            }
        }
        self
    }
}

impl NewOffer {
    /// The offer, with `id` when the operator gave none.
    ///
    /// # Errors
    /// Returns a message when the offer breaks a rule of its own (price count, sale window).
    pub fn into_offer(self, id: OfferId) -> Result<Offer, String> {
        check_offer_terms(&self.prices, self.sale_window.as_ref(), &self.regional_prices, &self.variants)?;
        self.platform_products.check()?;
        Ok(Offer {
            id: self.id.unwrap_or(id),
            sku: self.sku,
            prices: self.prices,
            regional_prices: self.regional_prices,
            variants: self.variants,
            variant: None,
            sale_window: self.sale_window,
            platform_products: self.platform_products,
        })
    }
}

/// The live catalog as players read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Catalog {
    /// The published version; 0 before anything is published.
    pub version: i64,
    /// The installation's virtual currencies.
    pub currencies: Vec<Currency>,
    /// Items, sorted by sku.
    pub items: Vec<Item>,
    /// Offers, sorted by id.
    pub offers: Vec<Offer>,
}

/// The whole editable catalog as a file: what `catalog export` writes and `catalog import`
/// reads, so a studio can keep its catalog in version control.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CatalogFile {
    /// Virtual currencies.
    #[serde(default)]
    pub currencies: Vec<Currency>,
    /// Items.
    #[serde(default)]
    pub items: Vec<Item>,
    /// Offers.
    #[serde(default)]
    pub offers: Vec<Offer>,
}

/// A summary of the draft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DraftSummary {
    /// The live version the draft would replace (0 if none).
    pub base_version: i64,
    /// Items in the draft.
    pub item_count: i64,
    /// Offers in the draft.
    pub offer_count: i64,
    /// Whether publishing would change the live catalog.
    pub has_changes: bool,
    /// Each currency's reference pack and its price (the price players without a regional
    /// price or experiment see), from which virtual prices' real-money equivalents are made.
    #[serde(default)]
    pub reference_packs: Vec<ReferencePack>,
    /// What publishing the draft would do that players may not want: a virtual price no
    /// combination of its currency's packs buys without leftovers, a currency sold in packs
    /// without a reference pack. Warnings never stop a publish.
    #[serde(default)]
    pub warnings: Vec<CatalogWarning>,
}

/// A currency's reference pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReferencePack {
    /// The currency.
    pub currency: CurrencyCode,
    /// The pack.
    pub sku: Sku,
    /// How much of the currency it grants.
    pub amount: i64,
    /// Its real-money price; absent when no offer sells it for real money.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Money>,
}

/// Something about a catalog worth an operator's look; it does not stop a publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CatalogWarning {
    /// `leftover` (no combination of packs buys a price exactly), `no_reference_pack` (a
    /// currency sold in packs has none, so its prices show no real-money equivalent) or
    /// `reference_pack_not_sold` (no offer sells the reference pack for real money).
    pub code: String,
    /// Where: `offers[<id>].prices[0]`, `currencies[gems]`.
    pub field: String,
    /// What is wrong, in words.
    pub message: String,
}

/// A page of draft items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ItemPage {
    /// Items sorted by sku.
    pub items: Vec<Item>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A page of draft offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OfferPage {
    /// Offers sorted by id.
    pub offers: Vec<Offer>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// One published catalog version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CatalogVersion {
    /// Version number, from 1.
    pub version: i64,
    /// When it was published.
    #[serde(with = "time::serde::rfc3339")]
    pub published_at: OffsetDateTime,
    /// The operator key that published it (absent for the first-start seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_by: Option<String>,
    /// Items in the version.
    pub item_count: i64,
    /// Offers in the version.
    pub offer_count: i64,
}

/// A page of catalog versions, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CatalogVersionPage {
    /// Versions, newest first.
    pub versions: Vec<CatalogVersion>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// What publishing the draft would change, by sku and by offer id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CatalogDiff {
    /// The live version compared against (0 if none).
    pub base_version: i64,
    /// Item changes.
    pub items: DiffKeys,
    /// Offer changes.
    pub offers: DiffKeys,
}

/// Keys added, removed and changed between two sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiffKeys {
    /// In the draft, not live.
    pub added: Vec<String>,
    /// Live, not in the draft.
    pub removed: Vec<String>,
    /// In both, different.
    pub changed: Vec<String>,
}

impl DiffKeys {
    /// Whether nothing was added, removed or changed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_keep_their_wire_shapes() {
        let virtual_price = r#"{"currency":"gold","amount":100}"#;
        let real_price = r#"{"money":{"currency":"USD","amount":"0.05"},"settlement":"tab"}"#;
        for json in [virtual_price, real_price] {
            let price: Price = serde_json::from_str(json).unwrap();
            assert_eq!(serde_json::to_string(&price).unwrap(), json);
        }
    }

    #[test]
    fn a_price_mixing_both_shapes_is_refused() {
        let json =
            r#"{"currency":"gold","amount":100,"money":{"currency":"USD","amount":"1"},"settlement":"tab"}"#;
        assert!(serde_json::from_str::<Price>(json).is_err());
        assert!(serde_json::from_str::<Price>(r#"{"currency":"gold","amount":0}"#).is_err());
    }

    #[test]
    fn skus_follow_the_pattern() {
        for good in ["magnet", "skin.red", "a", "0-1_x"] {
            assert!(Sku::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "Magnet", "-x", "a b", &"x".repeat(65)] {
            assert!(Sku::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_currency_pack_without_currency_is_refused() {
        let json = r#"{"sku":"pack","kind":"currency_pack","name":"Pack"}"#;
        let error = serde_json::from_str::<Item>(json).unwrap_err().to_string();
        assert!(error.contains("currency_pack"), "{error}");
    }
}
