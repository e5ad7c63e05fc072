//! `store-server generate`: fills a database with many players and ledger entries through the
//! ledger's bulk path ([`crate::ledger::bulk::append_entries`]), for the scale benchmark. Each player
//! gets a device id `scale-<n>` (log in with it to read their wallet and history), an operator
//! grant, rewards, and purchases of a consumable sold for a virtual currency in the live catalog
//! (with their purchase rows and inventory), so `store-server audit` holds over the result.

use std::collections::HashMap;

use anyhow::Context as _;
use store_api::catalog::{ItemKind, Price};
use store_api::currency::CurrencyCode;
use store_api::ledger::EntryKind;
use uuid::Uuid;

use crate::db::{Db, now_micros};
use crate::ledger::bulk::{Value, append_entries, insert_rows, update_rows};
use crate::ledger::{AccountId, ItemDelta, NewEntry, Posting, SystemAccount};

/// Players written per transaction.
const PLAYERS_PER_TRANSACTION: u64 = 1_000;
/// Countries the players come from.
const COUNTRIES: [&str; 7] = ["US", "DE", "JP", "BR", "GB", "FR", "KR"];

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Players to add.
    pub players: u64,
    /// Ledger entries per player (at least 1: the opening grant).
    pub entries_per_player: u32,
}

/// What was generated.
#[derive(Debug, Clone, Copy, Default)]
pub struct Generated {
    /// Players added.
    pub players: u64,
    /// Entries appended.
    pub entries: u64,
    /// Purchases among them.
    pub purchases: u64,
}

/// The consumable the players buy: its offer, sku, currency and price.
struct Bought {
    offer_id: String,
    sku: store_api::catalog::Sku,
    currency: CurrencyCode,
    price: i64,
    version: i64,
}

async fn bought(db: &Db) -> anyhow::Result<Bought> {
    let mut conn = db.pool().acquire().await?;
    let (version, snapshot) = crate::store::catalog::live_snapshot(&mut conn)
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?
        .context("publish a catalog first: the generator buys from the live catalog")?;
    snapshot
        .offers
        .iter()
        .find_map(|offer| {
            let item = snapshot.items.iter().find(|item| item.sku == offer.sku)?;
            let Some(Price::Virtual { currency, amount, .. }) = offer.prices.first() else { return None };
            (item.kind == ItemKind::Consumable
                && item.grants.items.is_empty()
                && item.grants.currencies.is_empty())
            .then(|| Bought {
                offer_id: offer.id.to_string(),
                sku: item.sku.clone(),
                currency: currency.clone(),
                price: *amount,
                version,
            })
        })
        .context("the live catalog sells no plain consumable for a virtual currency")
}

/// The entries of player number `n`: an opening grant of 20 prices' worth, then rewards of a
/// twentieth of the price, with every third entry a purchase.
fn player_entries(player: Uuid, bought: &Bought, count: u32) -> Vec<NewEntry> {
    let wallet = AccountId::Wallet(player, bought.currency.clone());
    let issuance = AccountId::System(SystemAccount::Issuance, bought.currency.as_str().to_owned());
    let revenue = AccountId::System(SystemAccount::Revenue, bought.currency.as_str().to_owned());
    let entry = |kind, reason: Option<&str>, postings: Vec<Posting>, items: Vec<ItemDelta>| NewEntry {
        kind,
        player_id: Some(player),
        actor: "generator".to_owned(),
        reason: reason.map(str::to_owned),
        postings,
        items,
        clawback: false,
    };
    let credit = |amount: i64| {
        vec![
            Posting { account: issuance.clone(), amount: -amount },
            Posting { account: wallet.clone(), amount },
        ]
    };
    (0..count)
        .map(|index| match index {
            0 => entry(
                EntryKind::OperatorGrant,
                Some("scale generator"),
                credit(bought.price * 20),
                Vec::new(),
            ),
            index if index % 3 == 0 => entry(
                EntryKind::Purchase,
                None,
                vec![
                    Posting { account: wallet.clone(), amount: -bought.price },
                    Posting { account: revenue.clone(), amount: bought.price },
                ],
                vec![ItemDelta { sku: bought.sku.clone(), delta: 1, quantity_max: i64::MAX }],
            ),
            _ => entry(EntryKind::Reward, None, credit((bought.price / 20).max(1)), Vec::new()),
        })
        .collect()
}

/// Adds `plan.players` players with their entries, a thousand players per transaction;
/// `progress(done, total)` after each.
///
/// # Errors
/// Fails when there is no live catalog to buy from, or the database fails.
pub async fn generate(db: &Db, plan: Plan, progress: impl Fn(u64, u64)) -> anyhow::Result<Generated> {
    let bought = bought(db).await?;
    let balance_max: HashMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("select code, balance_max from currency")
            .fetch_all(db.pool())
            .await?
            .into_iter()
            .collect();
    let first: i64 = sqlx::query_scalar("select count(*) from player").fetch_one(db.pool()).await?;
    let first = u64::try_from(first).unwrap_or(0);
    let mut generated = Generated::default();
    let mut start = 0;
    while start < plan.players {
        let end = (start + PLAYERS_PER_TRANSACTION).min(plan.players);
        let now = now_micros();
        let players: Vec<(u64, Uuid)> = (start..end).map(|n| (first + n, Uuid::now_v7())).collect();
        let mut tx = db.begin_write().await?;
        let player_rows = players
            .iter()
            .map(|(n, id)| {
                let country = COUNTRIES[usize::try_from(n % 7).unwrap_or(0)];
                let device = crate::players::auth::device_key(&format!("scale-{n}"));
                vec![Value::from(id.to_string()), device.into(), country.into(), now.into()]
            })
            .collect();
        insert_rows(&mut tx, "player", &["id", "device_id", "country", "created_at"], player_rows).await?;
        let entries: Vec<NewEntry> = players
            .iter()
            .flat_map(|(_, id)| player_entries(*id, &bought, plan.entries_per_player.max(1)))
            .collect();
        let ids = append_entries(&mut tx, &entries, &balance_max)
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        // Each purchase's facts in its entry's row (as the ledger records a purchase).
        let purchase_rows: Vec<Vec<Value>> = entries
            .iter()
            .zip(&ids)
            .filter(|(entry, _)| entry.kind == EntryKind::Purchase)
            .map(|(_, id)| {
                vec![
                    Value::from(id.to_string()),
                    Uuid::now_v7().to_string().into(),
                    bought.offer_id.as_str().into(),
                    bought.sku.as_str().into(),
                    1_i64.into(),
                    0_i64.into(),
                    bought.currency.as_str().into(),
                    bought.price.into(),
                    bought.version.into(),
                ]
            })
            .collect();
        generated.purchases += u64::try_from(purchase_rows.len()).unwrap_or(0);
        update_rows(
            &mut tx,
            "entry",
            "id",
            &[
                "purchase_id",
                "purchase_offer",
                "purchase_sku",
                "purchase_quantity",
                "purchase_price_index",
                "purchase_currency",
                "purchase_amount",
                "purchase_catalog_version",
            ],
            purchase_rows,
        )
        .await?;
        tx.commit().await?;
        generated.players += end - start;
        generated.entries += u64::try_from(entries.len()).unwrap_or(0);
        start = end;
        progress(generated.players, plan.players);
    }
    Ok(generated)
}
