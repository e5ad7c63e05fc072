//! The draft and its versions: draft objects with `ETag`s, snapshots, the diff against the
//! live catalog, publishing immutable versions, export and import.

use super::*;

/// A stored draft object with its `ETag`.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    /// The object.
    pub value: T,
    /// Its `ETag`.
    pub etag: String,
}

/// A kind of object the draft holds: items (keyed by sku) and offers (keyed by id). What differs
/// between them (the table, the references to check) is here; reading, listing, writing and
/// deleting are the generic functions below.
pub trait DraftObject: Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static {
    /// The object's name in messages and the audit log (`item`, `offer`).
    const NAME: &'static str;
    /// The most a draft may hold.
    const COUNT_MAX: usize;
    /// `select body … where key = $1`.
    const SELECT_ONE: &'static str;
    /// `select body … where key > $1 order by key limit $2`.
    const SELECT_PAGE: &'static str;
    /// `select count(*) …`.
    const COUNT: &'static str;
    /// `delete … where key = $1`.
    const DELETE: &'static str;

    /// The key as text (sku or offer id).
    fn key(&self) -> String;

    /// Whether `text` could be a key (a malformed one names nothing, so it is `not_found`).
    fn is_key(text: &str) -> bool;

    /// Checks the references the object makes, against the draft and the currencies.
    fn check_references(
        &self,
        conn: &mut AnyConnection,
        rules: &CatalogRules,
    ) -> impl Future<Output = ApiResult<()>> + Send;

    /// Writes the object's row (and anything derived from it) with its canonical body.
    fn write(&self, conn: &mut AnyConnection, body: &str) -> impl Future<Output = ApiResult<()>> + Send;

    /// Checks that nothing else in the draft refers to the object with this key.
    fn check_unreferenced(conn: &mut AnyConnection, key: &str) -> impl Future<Output = ApiResult<()>> + Send;
}

/// One draft object.
///
/// # Errors
/// Fails when the database does.
pub async fn find_draft<T: DraftObject>(
    conn: &mut AnyConnection,
    key: &str,
) -> ApiResult<Option<Versioned<T>>> {
    let body: Option<String> = sqlx::query_scalar(T::SELECT_ONE).bind(key).fetch_optional(&mut *conn).await?;
    body.map(|body| Ok(Versioned { value: parse_stored(T::NAME, &body)?, etag: etag_of(body.as_bytes()) }))
        .transpose()
}

/// A page of draft objects, sorted by key.
///
/// # Errors
/// Fails when the database does.
pub async fn list_draft<T: DraftObject>(
    conn: &mut AnyConnection,
    page: &Page,
) -> ApiResult<(Vec<T>, Option<String>)> {
    let bodies: Vec<String> = sqlx::query_scalar(T::SELECT_PAGE)
        .bind(page.cursor.clone().unwrap_or_default())
        .bind(page.fetch_count())
        .fetch_all(&mut *conn)
        .await?;
    let objects = bodies.iter().map(|body| parse_stored(T::NAME, body)).collect::<ApiResult<Vec<T>>>()?;
    Ok(page.finish(objects, T::key))
}

/// Writes a draft object (creating or replacing it) after checking its references.
/// Returns the new `ETag`.
///
/// # Errors
/// `validation_failed` for a bad reference, `limit_exceeded` past the count limit.
pub async fn put_draft<T: DraftObject>(
    conn: &mut AnyConnection,
    object: &T,
    is_new: bool,
    rules: &CatalogRules,
) -> ApiResult<String> {
    if is_new {
        let count: i64 = sqlx::query_scalar(T::COUNT).fetch_one(&mut *conn).await?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= T::COUNT_MAX {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::LimitExceeded,
                format!("a catalog has at most {} {}s", T::COUNT_MAX, T::NAME),
            ));
        }
    }
    object.check_references(conn, rules).await?;
    let body = canonical(object)?;
    object.write(conn, &body).await?;
    Ok(etag_of(body.as_bytes()))
}

/// Deletes a draft object that nothing else refers to.
///
/// # Errors
/// `in_use` naming what still refers to it.
pub async fn delete_draft<T: DraftObject>(conn: &mut AnyConnection, key: &str) -> ApiResult<()> {
    T::check_unreferenced(conn, key).await?;
    sqlx::query(T::DELETE).bind(key).execute(&mut *conn).await?;
    Ok(())
}

pub(super) async fn draft_item_exists(conn: &mut AnyConnection, sku: &str) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = sqlx::query_scalar("select 1 from draft_item where sku = $1")
        .bind(sku)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(found.is_some())
}

pub(super) fn in_use(message: String, key: &str, value: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, ErrorCode::InUse, message).with_detail(key, value)
}

impl DraftObject for Item {
    const NAME: &'static str = "item";
    const COUNT_MAX: usize = CATALOG_ITEMS_MAX;
    const SELECT_ONE: &'static str = "select body from draft_item where sku = $1";
    const SELECT_PAGE: &'static str = "select body from draft_item where sku > $1 order by sku limit $2";
    const COUNT: &'static str = "select count(*) from draft_item";
    const DELETE: &'static str = "delete from draft_item where sku = $1";

    fn key(&self) -> String {
        self.sku.as_str().to_owned()
    }

    fn is_key(text: &str) -> bool {
        Sku::parse(text).is_ok()
    }

    async fn check_references(&self, conn: &mut AnyConnection, _rules: &CatalogRules) -> ApiResult<()> {
        let balance_maxima: HashMap<String, i64> = list_currencies(conn)
            .await?
            .into_iter()
            .map(|currency| (currency.code.as_str().to_owned(), currency.balance_max))
            .collect();
        let mut existing = HashSet::new();
        for grant in &self.grants.items {
            if draft_item_exists(conn, grant.sku.as_str()).await? {
                existing.insert(grant.sku.as_str().to_owned());
            }
        }
        let edge_rows: Vec<(String, String)> =
            sqlx::query_as("select sku, granted_sku from draft_item_grant").fetch_all(&mut *conn).await?;
        let mut edges: HashMap<String, Vec<String>> = HashMap::new();
        for (sku, granted) in edge_rows {
            edges.entry(sku).or_default().push(granted);
        }
        edges.remove(self.sku.as_str());
        check_item_references(self, "", &balance_maxima, |sku| existing.contains(sku), &edges)
    }

    async fn write(&self, conn: &mut AnyConnection, body: &str) -> ApiResult<()> {
        sqlx::query(
            "insert into draft_item (sku, body) values ($1, $2) on conflict (sku) do update set body = $2",
        )
        .bind(self.sku.as_str())
        .bind(body)
        .execute(&mut *conn)
        .await?;
        sqlx::query("delete from draft_item_grant where sku = $1")
            .bind(self.sku.as_str())
            .execute(&mut *conn)
            .await?;
        write_grant_edges(conn, self).await
    }

    async fn check_unreferenced(conn: &mut AnyConnection, sku: &str) -> ApiResult<()> {
        let offer: Option<String> = sqlx::query_scalar("select id from draft_offer where sku = $1 limit 1")
            .bind(sku)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(offer) = offer {
            return Err(in_use(format!("offer `{offer}` sells item `{sku}`"), "offer_id", offer));
        }
        let granting: Option<String> = sqlx::query_scalar(
            "select sku from draft_item_grant where granted_sku = $1 and sku <> $1 limit 1",
        )
        .bind(sku)
        .fetch_optional(&mut *conn)
        .await?;
        match granting {
            Some(granting) => Err(in_use(format!("item `{granting}` grants `{sku}`"), "sku", granting)),
            None => Ok(()),
        }
    }
}

/// Records which items an item grants, for reference checks without reading every document.
pub(super) async fn write_grant_edges(conn: &mut AnyConnection, item: &Item) -> ApiResult<()> {
    let granted: BTreeSet<&str> = item.grants.items.iter().map(|grant| grant.sku.as_str()).collect();
    for granted_sku in granted {
        sqlx::query("insert into draft_item_grant (sku, granted_sku) values ($1, $2)")
            .bind(item.sku.as_str())
            .bind(granted_sku)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

impl DraftObject for Offer {
    const NAME: &'static str = "offer";
    const COUNT_MAX: usize = CATALOG_OFFERS_MAX;
    const SELECT_ONE: &'static str = "select body from draft_offer where id = $1";
    const SELECT_PAGE: &'static str = "select body from draft_offer where id > $1 order by id limit $2";
    const COUNT: &'static str = "select count(*) from draft_offer";
    const DELETE: &'static str = "delete from draft_offer where id = $1";

    fn key(&self) -> String {
        self.id.to_string()
    }

    fn is_key(text: &str) -> bool {
        OfferId::parse(text).is_ok()
    }

    async fn check_references(&self, conn: &mut AnyConnection, rules: &CatalogRules) -> ApiResult<()> {
        let currencies: HashMap<String, Currency> = list_currencies(conn)
            .await?
            .into_iter()
            .map(|currency| (currency.code.as_str().to_owned(), currency))
            .collect();
        let sku_exists = draft_item_exists(conn, self.sku.as_str()).await?;
        check_offer_references(self, "", rules, &currencies, |_| sku_exists)
    }

    async fn write(&self, conn: &mut AnyConnection, body: &str) -> ApiResult<()> {
        sqlx::query(
            "insert into draft_offer (id, sku, body) values ($1, $2, $3) \
             on conflict (id) do update set sku = $2, body = $3",
        )
        .bind(self.id.to_string())
        .bind(self.sku.as_str())
        .bind(body)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn check_unreferenced(_conn: &mut AnyConnection, _id: &str) -> ApiResult<()> {
        // Nothing in the draft refers to an offer.
        Ok(())
    }
}

/// The whole draft, sorted, as stored bodies keyed by sku and offer id.
pub(super) async fn draft_bodies(
    conn: &mut AnyConnection,
) -> Result<(BTreeMap<String, String>, BTreeMap<String, String>), sqlx::Error> {
    let items: Vec<(String, String)> =
        sqlx::query_as("select sku, body from draft_item").fetch_all(&mut *conn).await?;
    let offers: Vec<(String, String)> =
        sqlx::query_as("select id, body from draft_offer").fetch_all(&mut *conn).await?;
    Ok((items.into_iter().collect(), offers.into_iter().collect()))
}

/// The draft as a snapshot.
///
/// # Errors
/// Fails when the database does.
pub async fn draft_snapshot(conn: &mut AnyConnection) -> ApiResult<CatalogSnapshot> {
    let (items, offers) = draft_bodies(conn).await?;
    Ok(CatalogSnapshot {
        items: items.values().map(|body| parse_stored("item", body)).collect::<ApiResult<_>>()?,
        offers: offers.values().map(|body| parse_stored("offer", body)).collect::<ApiResult<_>>()?,
    })
}

/// The newest published version and its snapshot, if any version exists.
///
/// # Errors
/// Fails when the database does.
pub async fn live_snapshot(conn: &mut AnyConnection) -> ApiResult<Option<(i64, CatalogSnapshot)>> {
    let row: Option<(i64, String)> =
        sqlx::query_as("select version, body from catalog_version order by version desc limit 1")
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|(version, body)| Ok((version, parse_stored("catalog version", &body)?))).transpose()
}

/// A published version's items and offers.
///
/// # Errors
/// Fails when the database does.
pub async fn version_snapshot(conn: &mut AnyConnection, version: i64) -> ApiResult<Option<CatalogSnapshot>> {
    let body: Option<String> = sqlx::query_scalar("select body from catalog_version where version = $1")
        .bind(version)
        .fetch_optional(&mut *conn)
        .await?;
    body.map(|body| parse_stored("catalog version", &body)).transpose()
}

/// What publishing would change.
///
/// # Errors
/// Fails when the database does.
pub async fn diff_draft(conn: &mut AnyConnection) -> ApiResult<CatalogDiff> {
    let (draft_items, draft_offers) = draft_bodies(conn).await?;
    let (base_version, live) = live_snapshot(conn).await?.unwrap_or_default();
    let live_items: BTreeMap<String, String> = live
        .items
        .iter()
        .map(|item| Ok((item.sku.as_str().to_owned(), canonical(item)?)))
        .collect::<ApiResult<_>>()?;
    let live_offers: BTreeMap<String, String> = live
        .offers
        .iter()
        .map(|offer| Ok((offer.id.to_string(), canonical(offer)?)))
        .collect::<ApiResult<_>>()?;
    Ok(CatalogDiff {
        base_version,
        items: diff_keys(&draft_items, &live_items),
        offers: diff_keys(&draft_offers, &live_offers),
    })
}

pub(super) fn diff_keys(draft: &BTreeMap<String, String>, live: &BTreeMap<String, String>) -> DiffKeys {
    DiffKeys {
        added: draft.keys().filter(|key| !live.contains_key(*key)).cloned().collect(),
        removed: live.keys().filter(|key| !draft.contains_key(*key)).cloned().collect(),
        changed: draft
            .iter()
            .filter(|(key, body)| live.get(*key).is_some_and(|live_body| live_body != *body))
            .map(|(key, _)| key.clone())
            .collect(),
    }
}

/// Whether the diff changes anything.
#[must_use]
pub fn diff_has_changes(diff: &CatalogDiff) -> bool {
    diff.base_version == 0 || !diff.items.is_empty() || !diff.offers.is_empty()
}

/// Publishes the draft as the next immutable version after validating all of it.
///
/// # Errors
/// `validation_failed` when the draft breaks a rule; `nothing_to_publish` when it equals the
/// live version.
pub async fn publish(
    conn: &mut AnyConnection,
    published_by: Option<&str>,
    rules: &CatalogRules,
) -> ApiResult<CatalogVersion> {
    let diff = diff_draft(conn).await?;
    if !diff_has_changes(&diff) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::NothingToPublish,
            format!("the draft is the same as live version {}", diff.base_version),
        ));
    }
    let snapshot = draft_snapshot(conn).await?;
    let currencies = list_currencies(conn).await?;
    validate_catalog(
        &CatalogFile { currencies, items: snapshot.items.clone(), offers: snapshot.offers.clone() },
        rules,
    )?;
    let version = diff.base_version + 1;
    let published_at = now_micros();
    let item_count = i64::try_from(snapshot.items.len()).unwrap_or(i64::MAX);
    let offer_count = i64::try_from(snapshot.offers.len()).unwrap_or(i64::MAX);
    sqlx::query(
        "insert into catalog_version (version, body, item_count, offer_count, published_at, published_by) \
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(version)
    .bind(canonical(&snapshot)?)
    .bind(item_count)
    .bind(offer_count)
    .bind(published_at)
    .bind(published_by)
    .execute(&mut *conn)
    .await?;
    touch_live_catalog(conn).await?;
    Ok(CatalogVersion {
        version,
        published_at: from_micros(published_at),
        published_by: published_by.map(str::to_owned),
        item_count,
        offer_count,
    })
}

/// A page of published versions, newest first.
///
/// # Errors
/// Fails when the database does.
pub async fn list_versions(
    conn: &mut AnyConnection,
    page: &Page,
) -> ApiResult<(Vec<CatalogVersion>, Option<String>)> {
    let before = match &page.cursor {
        None => i64::MAX,
        Some(cursor) => cursor.parse().map_err(|_| crate::extract::invalid_cursor())?,
    };
    let rows: Vec<(i64, i64, i64, i64, Option<String>)> = sqlx::query_as(
        "select version, item_count, offer_count, published_at, published_by from catalog_version \
         where version < $1 order by version desc limit $2",
    )
    .bind(before)
    .bind(page.fetch_count())
    .fetch_all(&mut *conn)
    .await?;
    let versions = rows
        .into_iter()
        .map(|(version, item_count, offer_count, published_at, published_by)| CatalogVersion {
            version,
            published_at: from_micros(published_at),
            published_by,
            item_count,
            offer_count,
        })
        .collect();
    Ok(page.finish(versions, |version| version.version.to_string()))
}

/// The editable catalog as a file: currencies and the draft.
///
/// # Errors
/// Fails when the database does.
pub async fn export_catalog(conn: &mut AnyConnection) -> ApiResult<CatalogFile> {
    let snapshot = draft_snapshot(conn).await?;
    Ok(CatalogFile {
        currencies: list_currencies(conn).await?,
        items: snapshot.items,
        offers: snapshot.offers,
    })
}

/// Replaces the draft with a file's items and offers and creates or updates its currencies,
/// after validating the whole file. Currencies not in the file are kept (wallets may hold them).
///
/// # Errors
/// `validation_failed` naming the first field at fault; nothing is written then.
pub async fn import_catalog(
    conn: &mut AnyConnection,
    file: &CatalogFile,
    rules: &CatalogRules,
) -> ApiResult<()> {
    let mut codes = HashSet::new();
    for (index, currency) in file.currencies.iter().enumerate() {
        if !codes.insert(currency.code.as_str()) {
            return Err(ApiError::validation(
                &format!("currencies[{index}].code"),
                format!("currency `{}` appears twice", currency.code),
            ));
        }
    }
    let mut currencies: BTreeMap<String, Currency> = list_currencies(conn)
        .await?
        .into_iter()
        .map(|currency| (currency.code.as_str().to_owned(), currency))
        .collect();
    for currency in &file.currencies {
        currencies.insert(currency.code.as_str().to_owned(), currency.clone());
    }
    let merged = CatalogFile { currencies: currencies.into_values().collect(), ..file.clone() };
    validate_catalog(&merged, rules)?;
    for currency in &file.currencies {
        match find_currency(conn, &currency.code).await? {
            Some(existing) if existing == *currency => {}
            Some(_) => update_currency(conn, currency).await?,
            None => create_currency(conn, currency).await?,
        }
    }
    sqlx::query("delete from draft_offer").execute(&mut *conn).await?;
    sqlx::query("delete from draft_item_grant").execute(&mut *conn).await?;
    sqlx::query("delete from draft_item").execute(&mut *conn).await?;
    // Items first without their item grants, then the grants, so order in the file is free.
    for item in &file.items {
        sqlx::query("insert into draft_item (sku, body) values ($1, $2)")
            .bind(item.sku.as_str())
            .bind(canonical(item)?)
            .execute(&mut *conn)
            .await?;
    }
    for item in &file.items {
        write_grant_edges(conn, item).await?;
    }
    for offer in &file.offers {
        sqlx::query("insert into draft_offer (id, sku, body) values ($1, $2, $3)")
            .bind(offer.id.to_string())
            .bind(offer.sku.as_str())
            .bind(canonical(&offer.clone().without_equivalents())?)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
