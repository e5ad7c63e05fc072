//! The live catalog players read, parsed for purchases and rendered per player, cached by the
//! stamp that every live change moves.

use super::*;

/// The live catalog, parsed for purchases and rendered for players.
#[derive(Debug)]
pub struct RenderedCatalog {
    stamp: String,
    /// The `ETag` players send back in `If-None-Match`.
    pub etag: String,
    /// The JSON body.
    pub body: axum::body::Bytes,
    /// The published version (0 before any).
    pub version: i64,
    offers: HashMap<OfferId, Offer>,
    items: HashMap<Sku, Item>,
    currencies: HashMap<CurrencyCode, Currency>,
    /// The most a wallet may hold, per currency code (built once per rendering, read by every
    /// money movement).
    balance_maxima: BTreeMap<String, i64>,
    /// The offers whose prices differ between players, in id order.
    varying: Vec<OfferId>,
    /// Each currency's reference pack (sku, amount), which prices its real-money equivalents.
    references: BTreeMap<CurrencyCode, (Sku, i64)>,
    /// Personalized renderings by what makes them differ (each varying offer's prices), so a
    /// player's catalog is serialized once per distinct view, not once per request.
    personalized: std::sync::Mutex<HashMap<String, (String, axum::body::Bytes)>>,
}

/// Personalized renderings kept per live catalog at most; past that, views are rendered each time.
pub(super) const PERSONALIZED_MAX: usize = 1_024;

impl RenderedCatalog {
    /// The live offer sold under `product` in `platform`'s store (`app_store`, `google_play`).
    #[must_use]
    pub fn platform_offer(&self, platform: &str, product: &str) -> Option<&Offer> {
        self.offers
            .values()
            .find(|offer| offer.platform_products.named().any(|named| named == (platform, product)))
    }

    /// A live offer.
    #[must_use]
    pub fn offer(&self, id: OfferId) -> Option<&Offer> {
        self.offers.get(&id)
    }

    /// A live item.
    #[must_use]
    pub fn item(&self, sku: &Sku) -> Option<&Item> {
        self.items.get(sku)
    }

    /// A currency.
    #[must_use]
    pub fn currency(&self, code: &CurrencyCode) -> Option<&Currency> {
        self.currencies.get(code)
    }

    /// Whether some offer's prices differ between players (regional prices, experiments).
    #[must_use]
    pub fn varies(&self) -> bool {
        !self.varying.is_empty()
    }

    /// The catalog as `buyer` sees it (their prices only), rendered, with its `ETag`.
    ///
    /// # Errors
    /// Fails only if serialization does.
    pub fn render_for(&self, buyer: &crate::store::pricing::Buyer) -> ApiResult<(String, axum::body::Bytes)> {
        // What this buyer's view depends on: each varying offer's prices (a region or a variant).
        let view: String = self
            .varying
            .iter()
            .filter_map(|id| self.offers.get(id))
            .map(|offer| {
                let regional =
                    buyer.country.as_ref().filter(|country| offer.regional_prices.contains_key(*country));
                match (regional, crate::store::pricing::effective_prices(offer, buyer).1) {
                    (Some(country), _) => format!("r:{country:?};"),
                    (None, Some(variant)) => format!("v:{variant};"),
                    (None, None) => "-;".to_owned(),
                }
            })
            .collect();
        let cached = self.personalized.lock().ok().and_then(|views| views.get(&view).cloned());
        if let Some(rendered) = cached {
            return Ok(rendered);
        }
        let rendered = self.render_uncached(buyer)?;
        if let Ok(mut views) = self.personalized.lock()
            && views.len() < PERSONALIZED_MAX
        {
            views.insert(view, rendered.clone());
        }
        Ok(rendered)
    }

    fn render_uncached(
        &self,
        buyer: &crate::store::pricing::Buyer,
    ) -> ApiResult<(String, axum::body::Bytes)> {
        let snapshot = self.snapshot();
        let mut currencies: Vec<Currency> = self.currencies.values().cloned().collect();
        currencies.sort_by(|a, b| a.code.cmp(&b.code));
        let rates = equivalents::rates_for(&self.references, self.offers.values(), buyer);
        let catalog = Catalog {
            version: self.version,
            currencies,
            items: snapshot.items,
            offers: snapshot
                .offers
                .iter()
                .map(|offer| {
                    let mut offer = crate::store::pricing::personalize(offer, buyer);
                    equivalents::set_equivalents(&mut offer, &rates);
                    offer
                })
                .collect(),
        };
        let body = canonical(&catalog)?;
        Ok((etag_of(body.as_bytes()), body.into()))
    }

    /// The live items and offers, sorted.
    #[must_use]
    pub fn snapshot(&self) -> CatalogSnapshot {
        let mut items: Vec<Item> = self.items.values().cloned().collect();
        items.sort_by(|a, b| a.sku.cmp(&b.sku));
        let mut offers: Vec<Offer> = self.offers.values().cloned().collect();
        offers.sort_by_key(|offer| offer.id);
        CatalogSnapshot { items, offers }
    }

    /// Every currency.
    pub fn currencies(&self) -> impl Iterator<Item = &Currency> {
        self.currencies.values()
    }

    /// The most a wallet may hold, per currency code.
    #[must_use]
    pub fn balance_maxima(&self) -> &BTreeMap<String, i64> {
        &self.balance_maxima
    }
}

/// A read-through cache of the rendered live catalog. Each read checks the stored stamp (one
/// indexed row), so every instance serves a change as soon as it commits.
#[derive(Debug, Default)]
pub struct CatalogCache {
    current: RwLock<Option<Arc<RenderedCatalog>>>,
}

impl CatalogCache {
    /// The rendered catalog last cached, whatever its stamp (a hint of what a request will
    /// need; what it buys is decided against [`CatalogCache::cached`]).
    #[must_use]
    pub fn latest(&self) -> Option<Arc<RenderedCatalog>> {
        self.current.try_read().ok()?.as_ref().map(Arc::clone)
    }

    /// The rendered catalog when it is the one stamped `stamp` (the batch path reads the stamp
    /// itself); `None` when it is not rendered yet or the cache is being refreshed.
    #[must_use]
    pub fn cached(&self, stamp: &str) -> Option<Arc<RenderedCatalog>> {
        self.current.try_read().ok()?.as_ref().filter(|cached| cached.stamp == stamp).map(Arc::clone)
    }

    /// The live catalog, rendered at most once per change.
    ///
    /// # Errors
    /// Fails when the database does.
    pub async fn get(&self, conn: &mut AnyConnection) -> ApiResult<Arc<RenderedCatalog>> {
        let stamp: String = sqlx::query_scalar("select value from meta where key = 'catalog_stamp'")
            .fetch_one(&mut *conn)
            .await?;
        if let Some(cached) = self.current.read().await.as_ref().filter(|cached| cached.stamp == stamp) {
            return Ok(Arc::clone(cached));
        }
        let (version, snapshot) = live_snapshot(conn).await?.unwrap_or_default();
        let mut catalog = Catalog {
            version,
            currencies: list_currencies(conn).await?,
            items: snapshot.items,
            offers: snapshot.offers,
        };
        // The body everyone gets while no price varies: equivalents at the prices of a player
        // with no regional price or experiment (the same for every player then).
        let rates = equivalents::anyones_rates(&catalog.items, &catalog.offers);
        for offer in &mut catalog.offers {
            equivalents::set_equivalents(offer, &rates);
        }
        let body = canonical(&catalog)?;
        let mut varying: Vec<OfferId> = catalog
            .offers
            .iter()
            .filter(|offer| crate::store::pricing::varies(offer))
            .map(|offer| offer.id)
            .collect();
        varying.sort_unstable();
        let rendered = Arc::new(RenderedCatalog {
            stamp,
            etag: etag_of(body.as_bytes()),
            body: body.into(),
            version: catalog.version,
            offers: catalog.offers.into_iter().map(|offer| (offer.id, offer)).collect(),
            varying,
            references: equivalents::reference_packs(&catalog.items),
            personalized: std::sync::Mutex::default(),
            items: catalog.items.into_iter().map(|item| (item.sku.clone(), item)).collect(),
            balance_maxima: catalog
                .currencies
                .iter()
                .map(|currency| (currency.code.as_str().to_owned(), currency.balance_max))
                .collect(),
            currencies: catalog
                .currencies
                .into_iter()
                .map(|currency| (currency.code.clone(), currency))
                .collect(),
        });
        *self.current.write().await = Some(Arc::clone(&rendered));
        Ok(rendered)
    }
}
