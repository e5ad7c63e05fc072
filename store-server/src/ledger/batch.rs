//! The set path: the writer's batch of hot money operations (purchases, virtual or on the tab,
//! consumes, reward claims and operator grants) read, decided and written with a fixed number of
//! statements, whatever the batch's size.
//!
//! Per batch, on the writer's transaction (`group_commit`):
//! 1. **Keys**: read the stored answers of keys already taken. On PostgreSQL every key is first
//!    claimed with one multi-row insert (sorted, so two instances' batches wait on each other's
//!    keys in one order) and the claim is rewritten with the answer; on SQLite, whose writer
//!    holds the write lock from before the read to the commit, nothing is claimed and each
//!    answer is written once.
//! 2. **Read** what the batch touches, one keyed statement per table: the sessions of players'
//!    writes (before the claims: a revoked session's write claims nothing), the catalog stamp
//!    and the receipt key, the currencies, the players (locked `for no key update` in id order
//!    on PostgreSQL; SQLite's `begin immediate` already holds the write lock), all their
//!    accounts with the system accounts a purchase or a reward moves, all their items, the
//!    reward rules claimed under with the day's claims, the tabs, credit and spending of players
//!    buying on a tab, what each player bought of a limited item in its period, and the sold
//!    units of stocked items.
//! 3. **Decide** each request in arrival order, in Rust, against that state as the earlier
//!    requests of the batch left it ([`BatchLedger`]). A refusal or failure leaves the state as
//!    it was (every change a request makes is undone with it), so it costs its neighbours
//!    nothing. A request the set path does not cover (a catalog not yet rendered, an account or
//!    a tab, limit or stock it did not read) is deferred, with every later request of its
//!    player: they run afterwards on the per-request savepoint path, in the same transaction,
//!    seeing everything before them. Each player's requests thus keep their arrival order; the
//!    batch answers as if run one at a time with the set path's requests first, in arrival
//!    order, then the others in arrival order: a valid order, since every request of a batch is
//!    answered only after its commit, so none of them happened before another. (Requests of
//!    different players meet only over an item's stock.)
//! 4. **Finish** the successes' answers ([`Unfinished`]): the receipts are signed from the
//!    payloads in the entries' rows, spread over the cores on blocking threads, while the
//!    writer's connection writes what names no entry (new accounts, wallet balances, items,
//!    tabs, stock, audit); then the entries (each one row with its item changes, purchase and
//!    signed receipt) and the reward claims are written while the answers' JSON is, with those
//!    signatures; then the answers, the system accounts' balances and the postings.
//! 5. **Write** each table with one multi-row statement. Balances and item counts are changed
//!    once per account and item with the batch's net change, by guarded updates whose returned
//!    values are verified against what Rust computed: a mismatch is a bug or another instance's
//!    write, and fails the batch (the writer then runs it on the savepoint path with fresh
//!    reads; nothing was acknowledged). The hot system accounts are locked last, in id order,
//!    just before the commit; on PostgreSQL their value read in step 2 may be stale, so their
//!    postings' `balance_after` is corrected by what the guarded update returns.
//!
//! Parameters are JSON arrays of rows (`jsonb_each` on SQLite, `jsonb_array_elements` on
//! PostgreSQL), so every statement has one fixed text and stays in the driver's statement cache.

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::http::StatusCode;
use serde_json::{Value, json};
use sqlx::AnyConnection;
use store_api::admin::AgeBand;
use store_api::catalog::{Item, LimitPeriod, Sku};
use store_api::currency::CurrencyCode;
use store_api::ledger::{Balance, BalanceChange, InventoryItem, ItemChange, Wallet};
use store_api::receipt::SignedReceipt;
use store_api::{Money, MoneyCurrency};
use uuid::Uuid;

use super::events::EntryHeads;
use super::receipts::{ReceiptFacts, Signed, Signer, signer};
use super::{
    AccountId, AppendedEntry, NewEntry, SystemAccount, already_owned, balance_max_exceeded,
    insufficient_funds, insufficient_quantity, net_changes, stored_code, stored_sku,
};
use crate::db::{Backend, from_micros, now_micros, to_micros};
use crate::error::{ApiError, ApiResult};
use crate::ledger::group_commit::Done;
use crate::ledger::idempotency::{in_progress, key_reused};
use crate::payments::tabs::{TAB_COLUMNS, TabRow, TabTuple, check_charge, tab_from};
use crate::settings::Settings;

/// A request the set path can take: an idempotent operation of one player.
pub(crate) trait SetJob: Send + Sync {
    /// The key's scope (who may use it).
    fn scope(&self) -> &str;
    /// The idempotency key.
    fn key(&self) -> &str;
    /// The hash of the request the key was sent with.
    fn request_hash(&self) -> &str;
    /// The player whose state it reads and changes.
    fn player_id(&self) -> Uuid;
    /// The session a player's write was sent with: read with the batch, before the claims; a
    /// revoked or unknown one refuses the request and claims nothing.
    fn session_id(&self) -> Option<Uuid>;
    /// The reward rule it claims under, read with the batch (with the player's claims of the
    /// day), if any.
    fn reward_rule(&self) -> Option<&str> {
        None
    }
    /// The currencies of the tabs it may charge: the player's tabs, credit facts and spending
    /// are read with the batch, with the tab receivable and revenue accounts of these currencies.
    fn tab_currencies(&self) -> Vec<MoneyCurrency> {
        Vec::new()
    }
    /// The item it buys, when that has a purchase limit or stock the batch must read.
    fn item_reads(&self) -> Option<ItemReads> {
        None
    }
    /// Decides the request against the batch's state: a success is its status and answer (to
    /// be finished), an error its refusal (stored as the key's answer) or failure; `None`
    /// defers it to the per-request path, after the batch's set phase.
    fn decide(&self, ledger: &mut BatchLedger) -> ApiResult<Option<(StatusCode, Box<dyn Unfinished>)>>;
}

/// A device login the set path takes: its player found by device, or created with the initial
/// grant, and its session opened, all written with the batch.
pub(crate) trait LoginSetJob: Send + Sync {
    /// The device id as stored (hashed).
    fn device_key(&self) -> &str;
    /// The country the login names, if any (fixed at the first that names one).
    fn country(&self) -> Option<&str>;
    /// The new session: its id and when it expires (micros).
    fn session(&self) -> (Uuid, i64);
    /// The live catalog's cache (the initial grant's currencies and maxima).
    fn catalog(&self) -> &crate::store::catalog::CatalogCache;
}

/// A success decided on the set path whose answer is not finished yet: its receipts are
/// unsigned and its JSON not written. The batch signs the receipts of its entries' rows after
/// its decide phase, then finishes every such answer with those signatures, in parallel, off
/// the decide loop's serial path.
pub(crate) trait Unfinished: Send {
    /// Gives the answer's receipts their signatures (receipt id -> signature) and writes its
    /// JSON.
    ///
    /// # Errors
    /// A receipt of the answer that the batch did not sign, or an answer that cannot be
    /// serialized.
    fn finish(self: Box<Self>, signatures: &HashMap<String, Signed>) -> ApiResult<Finished>;
}

/// A finished answer: its JSON and how many receipts it carries.
#[derive(Debug)]
pub(crate) struct Finished {
    /// The answer's JSON.
    pub(crate) body: Vec<u8>,
    /// The JSON stored for replays: the answer without its receipts' JWS, which a replay makes
    /// again ([`crate::ledger::receipts::with_receipt_jws`]); a few hundred bytes less written
    /// per purchase.
    pub(crate) stored: Vec<u8>,
    /// How many receipts the answer carries.
    pub(crate) receipts: usize,
}

/// What a purchase's item needs the batch to read: what the player bought of it in its
/// purchase limit's period, and how much of its stock is sold.
#[derive(Debug, Clone)]
pub struct ItemReads {
    /// The item.
    pub sku: Sku,
    /// Its purchase limit's period, if it has a limit.
    pub limit_period: Option<LimitPeriod>,
    /// Whether it has a stock.
    pub stocked: bool,
}

/// What became of one request of the set phase.
#[derive(Debug)]
pub(crate) enum SetOutcome {
    /// Answered (stored, replayed or refused before any work).
    Answered(ApiResult<Done>),
    /// To run on the per-request path.
    Defer,
}

/// A player's row as the batch read it.
#[derive(Debug, Clone)]
pub struct PlayerRow {
    /// Blocked from the store.
    pub blocked: bool,
    /// The age band an operator put the player in.
    pub age_band: AgeBand,
    /// The country fixed at first login.
    pub country: Option<String>,
    /// Flagged for review (`Some`, with the flag's reason if any): no orders, no tabs.
    pub flag: Option<Option<String>>,
}

#[derive(Debug, Clone)]
struct AccountState {
    kind: String,
    player_id: Option<Uuid>,
    currency: String,
    /// The balance read, and the one after the batch's requests so far.
    read: i64,
    balance: i64,
    in_debt: bool,
    existed: bool,
    touched: bool,
    /// The wallet maximum the last change was checked against.
    balance_max: i64,
}

#[derive(Debug, Clone)]
struct ItemState {
    read: i64,
    quantity: i64,
    in_debt: bool,
    existed: bool,
    quantity_max: i64,
}

/// A tab of the batch's players, as read and as the batch's requests so far changed it.
#[derive(Debug, Clone)]
struct TabState {
    tab: TabRow,
    /// Its amount (micros) and units as read; a tab the batch opens: 0 and 0.
    read: (i64, i64),
    existed: bool,
}

/// What the tab rules need of a player whose tabs the batch read.
#[derive(Debug, Default)]
struct TabFacts {
    settled_before: bool,
    /// Currency -> what orders count against the spending limits (today, this month; micros).
    spent: HashMap<String, (i64, i64)>,
}

/// A player's tab in one currency.
type TabKey = (Uuid, &'static str);

#[derive(Debug)]
enum Undo {
    Account(String, AccountState),
    Item(Uuid, String, Option<ItemState>),
    RewardClaim(Uuid, String),
    Tab(TabKey, Option<TabState>),
    Bought((Uuid, String), i64),
    Sold(String, Option<StockState>),
}

/// An item's sold units, as read (0 when never sold) and as the batch's requests so far took
/// them, with the stock the last one was checked against.
#[derive(Debug, Clone)]
struct StockState {
    read: i64,
    sold: i64,
    stock: i64,
}

/// One posting row, whose `balance_after` may still be corrected (a system account on
/// PostgreSQL).
#[derive(Debug, Clone)]
struct PostingRow {
    entry_id: String,
    account: String,
    currency: String,
    amount: i64,
    balance_after: i64,
}

/// The columns of an entry's row as the batch writes it: the entry, its item changes, the
/// purchase it books and its receipt (one record per money movement).
const ENTRY_COLUMNS: &[(&str, bool)] = &[
    ("id", TEXT),
    ("kind", TEXT),
    ("player_id", TEXT),
    ("actor", TEXT),
    ("reason", TEXT),
    ("created_at", INT),
    ("items", TEXT),
    ("purchase_id", TEXT),
    ("purchase_offer", TEXT),
    ("purchase_sku", TEXT),
    ("purchase_quantity", INT),
    ("purchase_price_index", INT),
    ("purchase_price_variant", TEXT),
    ("purchase_currency", TEXT),
    ("purchase_amount", INT),
    ("purchase_catalog_version", INT),
    ("receipt_id", TEXT),
    ("receipt_key", TEXT),
    ("receipt_payload", TEXT),
    ("receipt_signature", TEXT),
];
/// Where the purchase's columns start in an entry's row.
const ENTRY_PURCHASE: usize = 7;
/// Where the receipt's columns start in an entry's row.
const ENTRY_RECEIPT: usize = 16;

/// The rows the batch writes, per table, in request order.
#[derive(Debug, Default)]
struct Rows {
    entries: Vec<Value>,
    postings: Vec<PostingRow>,
    reward_claims: Vec<Value>,
    audit: Vec<Value>,
    tab_items: Vec<Value>,
}

impl Rows {
    fn lengths(&self) -> [usize; 5] {
        [
            self.entries.len(),
            self.postings.len(),
            self.reward_claims.len(),
            self.audit.len(),
            self.tab_items.len(),
        ]
    }

    fn truncate(&mut self, lengths: [usize; 5]) {
        self.entries.truncate(lengths[0]);
        self.postings.truncate(lengths[1]);
        self.reward_claims.truncate(lengths[2]);
        self.audit.truncate(lengths[3]);
        self.tab_items.truncate(lengths[4]);
    }

    /// The row of entry `entry_id`, one of the batch's (the newest are searched first: a
    /// purchase or receipt names the entry its request just appended).
    fn entry_mut(&mut self, entry_id: Uuid) -> ApiResult<&mut Vec<Value>> {
        let id = entry_id.to_string();
        self.entries
            .iter_mut()
            .rev()
            .find(|row| row.get(0).and_then(Value::as_str) == Some(id.as_str()))
            .and_then(Value::as_array_mut)
            .ok_or_else(|| batch_failed("a record of an entry the batch did not append"))
    }

    /// The batch's receipts to sign, in row order: (receipt id, payload).
    fn unsigned_receipts(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .filter_map(|row| {
                let id = row.get(ENTRY_RECEIPT).and_then(Value::as_str)?;
                let payload = row.get(ENTRY_RECEIPT + 2).and_then(Value::as_str)?;
                Some((id.to_owned(), payload.to_owned()))
            })
            .collect()
    }

    /// Gives every receipt of the batch its signature (receipt id -> signature).
    ///
    /// # Errors
    /// A receipt without a signature: the batch fails rather than store it.
    fn sign_receipts(&mut self, signatures: &HashMap<String, Signed>) -> ApiResult<()> {
        for row in &mut self.entries {
            let Some(id) = row.get(ENTRY_RECEIPT).and_then(Value::as_str) else { continue };
            let signed = signatures.get(id).ok_or_else(|| batch_failed("receipt signatures"))?;
            row[ENTRY_RECEIPT + 3] = Value::String(signed.signature.clone());
        }
        Ok(())
    }
}

/// A reward rule's row: code, currency, amount, caps per minute, hour and day.
pub type RewardRuleRow = (String, String, i64, Option<i64>, Option<i64>, Option<i64>);

/// The batch's state: what it read, as its requests so far changed it, and the rows to write.
#[derive(Debug)]
pub struct BatchLedger {
    now: i64,
    stamp: String,
    currencies: Vec<CurrencyCode>,
    signer: Signer,
    players: HashMap<Uuid, PlayerRow>,
    accounts: HashMap<String, AccountState>,
    items: HashMap<Uuid, BTreeMap<String, ItemState>>,
    rows: Rows,
    /// Each player's newest entry id: the next entry's id is after it (see `EntryHeads`).
    entry_heads: EntryHeads,
    undo: Vec<Undo>,
    mark: [usize; 5],
    reward_rules: HashMap<String, RewardRuleRow>,
    /// (player, rule) -> (when, amount) of the claims since the start of the day.
    reward_claims: HashMap<(Uuid, String), Vec<(i64, i64)>>,
    /// The open or settling tabs of the players whose tabs the batch read.
    tabs: HashMap<TabKey, TabState>,
    /// The players whose tabs the batch read.
    tab_facts: HashMap<Uuid, TabFacts>,
    /// (player, sku) -> (the start of the limit's period read, units bought since then).
    bought: HashMap<(Uuid, String), (i64, i64)>,
    /// Stocked items the batch read, by sku.
    sold: HashMap<String, StockState>,
}

impl BatchLedger {
    /// Now, for every request of the batch (micros).
    #[must_use]
    pub fn now(&self) -> i64 {
        self.now
    }

    /// The live catalog's stamp as the batch read it.
    #[must_use]
    pub fn catalog_stamp(&self) -> &str {
        &self.stamp
    }

    /// A player of the batch; `None` when there is no such player.
    #[must_use]
    pub fn player(&self, player_id: Uuid) -> Option<&PlayerRow> {
        self.players.get(&player_id)
    }

    /// A player of the batch, blocked or not (operators may grant to a blocked player).
    ///
    /// # Errors
    /// `not_found` for no such player.
    pub fn existing_player(&self, player_id: Uuid) -> ApiResult<&PlayerRow> {
        self.player(player_id).ok_or_else(|| ApiError::not_found("player", &player_id.to_string()))
    }

    /// A player of the batch who may use the store.
    ///
    /// # Errors
    /// `not_found` for no such player, `player_blocked` for a blocked one.
    pub fn unblocked_player(&self, player_id: Uuid) -> ApiResult<&PlayerRow> {
        let player = self.existing_player(player_id)?;
        super::PlayerLock::new(player.blocked, player.age_band).refuse_if_blocked()?;
        Ok(player)
    }

    /// A wallet's balance (0 when never used); `None` when the batch did not read it.
    #[must_use]
    pub fn wallet_balance(&self, player_id: Uuid, currency: &CurrencyCode) -> Option<i64> {
        self.accounts
            .get(&AccountId::Wallet(player_id, currency.clone()).key())
            .map(|account| account.balance)
    }

    /// How many of an item a player of the batch holds.
    #[must_use]
    pub fn item_quantity(&self, player_id: Uuid, sku: &Sku) -> i64 {
        self.items.get(&player_id).and_then(|items| items.get(sku.as_str())).map_or(0, |item| item.quantity)
    }

    /// A player's wallet as `read_wallet` answers it: every currency, sorted by code.
    #[must_use]
    pub fn wallet(&self, player_id: Uuid) -> Wallet {
        let balances = self
            .currencies
            .iter()
            .map(|currency| Balance {
                currency: currency.clone(),
                balance: self.wallet_balance(player_id, currency).unwrap_or(0),
            })
            .collect();
        Wallet { balances }
    }

    /// A player's items as `read_inventory` answers them: those held (or owed), sorted by sku.
    ///
    /// # Errors
    /// When a stored sku does not parse.
    pub fn inventory(&self, player_id: Uuid) -> ApiResult<Vec<InventoryItem>> {
        let Some(items) = self.items.get(&player_id) else { return Ok(Vec::new()) };
        items
            .iter()
            .filter(|(_, item)| item.quantity != 0)
            .map(|(sku, item)| Ok(InventoryItem { sku: stored_sku(sku)?, quantity: item.quantity }))
            .collect()
    }

    /// Appends an entry to the batch, as [`super::append_entry`] does in the database: the same
    /// netting, guards and refusals, the same rows and events. `None` (defer) when it is a
    /// clawback or touches an account the batch did not read.
    ///
    /// # Errors
    /// The guards' refusals, as `append_entry` gives them.
    pub fn append(
        &mut self,
        entry: &NewEntry,
        balance_max: &BTreeMap<String, i64>,
    ) -> ApiResult<Option<AppendedEntry>> {
        if entry.clawback {
            return Ok(None);
        }
        let net = net_changes(entry)?;
        let player_id = entry.player_id.unwrap_or_default();
        // Every guard first, so a refusal changes nothing.
        let mut balances = Vec::with_capacity(net.accounts.len());
        for (key, account, amount) in &net.accounts {
            let Some(state) = self.accounts.get(key) else { return Ok(None) };
            let max = balance_max.get(account.currency()).copied().unwrap_or(i64::MAX);
            let after = state
                .balance
                .checked_add(*amount)
                .ok_or_else(|| anyhow::anyhow!("balance overflow on {key}"))?;
            if let AccountId::Wallet(_, currency) = account {
                if *amount < 0 && after < 0 {
                    return Err(insufficient_funds(currency, -amount, state.balance));
                }
                if *amount > 0 && after > max {
                    return Err(balance_max_exceeded(currency, state.balance, *amount, max));
                }
            }
            balances.push((after, max));
        }
        let mut quantities = Vec::with_capacity(net.items.len());
        for change in &net.items {
            let held = self.item_quantity(player_id, &change.sku);
            let after = held + change.delta;
            if change.delta < 0 && after < 0 {
                return Err(insufficient_quantity(&change.sku, -change.delta, held));
            }
            if change.delta > 0 && after > change.quantity_max {
                return Err(already_owned(&change.sku));
            }
            quantities.push(after);
        }

        let id = self.entry_heads.next(entry.player_id);
        let entry_id = id.to_string();
        let mut changes = Vec::new();
        for ((key, account, amount), (after, max)) in net.accounts.into_iter().zip(balances) {
            let Some(state) = self.accounts.get_mut(&key) else { return Ok(None) };
            self.undo.push(Undo::Account(key.clone(), state.clone()));
            state.balance = after;
            state.in_debt = state.kind == "wallet" && after < 0 && state.in_debt;
            state.touched = true;
            state.balance_max = max;
            self.rows.postings.push(PostingRow {
                entry_id: entry_id.clone(),
                account: key,
                currency: account.currency().to_owned(),
                amount,
                balance_after: after,
            });
            if let AccountId::Wallet(_, code) = account {
                changes.push(BalanceChange { currency: code, amount, balance_after: after });
            }
        }
        let mut items = Vec::new();
        let player_items = self.items.entry(player_id).or_default();
        for (change, after) in net.items.into_iter().zip(quantities) {
            let previous = player_items.get(change.sku.as_str()).cloned();
            self.undo.push(Undo::Item(player_id, change.sku.as_str().to_owned(), previous.clone()));
            let mut state = previous.unwrap_or(ItemState {
                read: 0,
                quantity: 0,
                in_debt: false,
                existed: false,
                quantity_max: i64::MAX,
            });
            state.quantity = after;
            state.in_debt = after < 0 && state.in_debt;
            state.quantity_max = state.quantity_max.min(change.quantity_max);
            player_items.insert(change.sku.as_str().to_owned(), state);
            items.push(ItemChange { sku: change.sku, delta: change.delta, quantity_after: after });
        }
        self.rows.entries.push(json!([
            entry_id,
            entry.kind.as_str(),
            entry.player_id.map(|player| player.to_string()),
            entry.actor,
            entry.reason,
            self.now,
            super::items_json(&items)?
        ]));
        if let Some(Value::Array(row)) = self.rows.entries.last_mut() {
            row.resize(ENTRY_COLUMNS.len(), Value::Null);
        }
        Ok(Some(AppendedEntry { id, changes, items }))
    }

    /// Issues a receipt for an entry of the batch with the batch's key, to be stored in the
    /// entry's row. It is signed after the decide phase, from the row (its answer, which must
    /// list it in `MoneyOp::receipts`, takes the same signature): until then its signature is
    /// empty.
    ///
    /// # Errors
    /// Fails if the payload cannot be serialized or the entry is not one of the batch's.
    pub fn issue_receipt(
        &mut self,
        player_id: Uuid,
        entry_id: Uuid,
        facts: ReceiptFacts,
    ) -> ApiResult<SignedReceipt> {
        let receipt = self.signer.unsigned(player_id, entry_id, facts, self.now)?;
        let row = self.rows.entry_mut(entry_id)?;
        row[ENTRY_RECEIPT] = json!(receipt.id.to_string());
        row[ENTRY_RECEIPT + 1] = json!(receipt.key_id);
        row[ENTRY_RECEIPT + 2] = json!(receipt.payload);
        Ok(receipt)
    }

    /// Records a purchase's facts in its entry's row.
    ///
    /// # Errors
    /// Fails if the entry is not one of the batch's.
    pub fn push_purchase(&mut self, purchase: &super::PurchaseRecord<'_>) -> ApiResult<()> {
        let row = self.rows.entry_mut(purchase.entry_id)?;
        row.splice(ENTRY_PURCHASE..ENTRY_RECEIPT, purchase.columns());
        Ok(())
    }

    /// A reward rule the batch read; `None` when there is no such rule.
    #[must_use]
    pub fn reward_rule(&self, code: &str) -> Option<&RewardRuleRow> {
        self.reward_rules.get(code)
    }

    /// What a player earned under a rule since `since` (micros, at most a day ago), this
    /// batch's claims included.
    #[must_use]
    pub fn reward_earned(&self, player_id: Uuid, rule: &str, since: i64) -> i64 {
        self.reward_claims
            .get(&(player_id, rule.to_owned()))
            .map_or(0, |claims| claims.iter().filter(|(at, _)| *at >= since).map(|(_, amount)| amount).sum())
    }

    /// Records a reward claim's row.
    pub fn push_reward_claim(&mut self, player_id: Uuid, rule: &str, amount: i64, entry_id: Uuid) {
        self.reward_claims.entry((player_id, rule.to_owned())).or_default().push((self.now, amount));
        self.undo.push(Undo::RewardClaim(player_id, rule.to_owned()));
        self.rows.reward_claims.push(json!([
            Uuid::now_v7().to_string(),
            player_id.to_string(),
            rule,
            amount,
            entry_id.to_string(),
            self.now
        ]));
    }

    /// The tab `charge` goes on, checked as [`crate::payments::tabs::tab_for_charge`] checks it (a tab opened in memory
    /// when the player has none in its currency); `None` when the batch did not read the
    /// player's tabs.
    ///
    /// # Errors
    /// As [`crate::payments::tabs::tab_for_charge`]'s.
    pub fn tab_for_charge(
        &mut self,
        settings: &Settings,
        player_id: Uuid,
        charge: Money,
    ) -> ApiResult<Option<()>> {
        let Some(facts) = self.tab_facts.get(&player_id) else { return Ok(None) };
        let player = self.existing_player(player_id)?;
        if let Some(reason) = &player.flag {
            return Err(crate::payments::orders::player_flagged(reason.clone()));
        }
        let key = (player_id, charge.currency.code());
        let (tab, opened) = match self.tabs.get(&key) {
            Some(state) => (state.tab.clone(), false),
            None => (TabRow::new_open(player_id, charge.currency, self.now), true),
        };
        let spent = facts.spent.get(charge.currency.code()).copied().unwrap_or((0, 0));
        check_charge(
            settings,
            &tab,
            player.age_band,
            facts.settled_before,
            charge,
            from_micros(self.now),
            spent,
        )?;
        if opened {
            self.undo.push(Undo::Tab(key, None));
            self.tabs.insert(key, TabState { tab, read: (0, 0), existed: false });
        }
        Ok(Some(()))
    }

    /// Adds a purchase to the player's tab in `currency` (after [`BatchLedger::tab_for_charge`]
    /// approved it), as [`crate::payments::tabs::add_to_tab`] does.
    ///
    /// # Errors
    /// When no such tab was approved: a bug.
    pub fn add_to_tab(
        &mut self,
        player_id: Uuid,
        currency: MoneyCurrency,
        purchase_id: Uuid,
        sku: &Sku,
        quantity: i64,
        charge_micros: i64,
    ) -> ApiResult<()> {
        let key = (player_id, currency.code());
        let state = self
            .tabs
            .get_mut(&key)
            .ok_or_else(|| anyhow::anyhow!("a charge on a tab the batch did not approve"))?;
        self.undo.push(Undo::Tab(key, Some(state.clone())));
        state.tab.add(charge_micros, quantity);
        self.rows.tab_items.push(json!([
            Uuid::now_v7().to_string(),
            state.tab.id.to_string(),
            purchase_id.to_string(),
            sku.as_str(),
            quantity,
            charge_micros,
            self.now
        ]));
        Ok(())
    }

    /// Checks `quantity` more of `item` against its purchase limit, as `check_purchase_limit`
    /// does, and counts them; `None` when the batch did not read what the player bought of it.
    ///
    /// # Errors
    /// `purchase_limit_reached`.
    pub fn check_purchase_limit(
        &mut self,
        player_id: Uuid,
        item: &Item,
        quantity: i64,
    ) -> ApiResult<Option<()>> {
        let Some(limit) = item.purchase_limit else { return Ok(Some(())) };
        let now = from_micros(self.now);
        let start = to_micros(crate::store::operations::period_window(limit.period, now).0);
        let key = (player_id, item.sku.as_str().to_owned());
        let Some(&(read_from, bought)) = self.bought.get(&key) else { return Ok(None) };
        if read_from != start {
            return Ok(None);
        }
        crate::store::operations::limit_check(item, quantity, bought, now)?;
        self.undo.push(Undo::Bought(key.clone(), bought));
        self.bought.insert(key, (start, bought + quantity));
        Ok(Some(()))
    }

    /// Takes `quantity` units of a stocked item, as `take_stock` does; `None` when the batch
    /// did not read its stock.
    ///
    /// # Errors
    /// `out_of_stock`.
    pub fn take_stock(&mut self, sku: &Sku, quantity: i64, stock: i64) -> ApiResult<Option<()>> {
        let Some(state) = self.sold.get(sku.as_str()) else { return Ok(None) };
        if state.sold + quantity > stock {
            return Err(crate::store::operations::out_of_stock(sku));
        }
        let previous = state.clone();
        self.undo.push(Undo::Sold(sku.as_str().to_owned(), Some(previous.clone())));
        self.sold.insert(
            sku.as_str().to_owned(),
            StockState { sold: previous.sold + quantity, stock, ..previous },
        );
        Ok(Some(()))
    }

    /// Records an operator action in the audit log, as `append_audit` does.
    pub fn push_audit(&mut self, actor: &str, action: &str, target: &str, after: Option<&str>) {
        self.rows.audit.push(json!([
            Uuid::now_v7().to_string(),
            actor,
            action,
            target,
            Value::Null,
            after,
            self.now
        ]));
    }

    /// Starts a request: what it changes can be undone until the next `begin`.
    fn begin(&mut self) {
        self.undo.clear();
        self.mark = self.rows.lengths();
    }

    /// Undoes everything the current request changed.
    fn abort(&mut self) {
        while let Some(undo) = self.undo.pop() {
            match undo {
                Undo::Account(key, state) => {
                    self.accounts.insert(key, state);
                }
                Undo::Item(player, sku, state) => {
                    let items = self.items.entry(player).or_default();
                    match state {
                        Some(state) => items.insert(sku, state),
                        None => items.remove(&sku),
                    };
                }
                Undo::RewardClaim(player, rule) => {
                    if let Some(claims) = self.reward_claims.get_mut(&(player, rule)) {
                        claims.pop();
                    }
                }
                Undo::Bought(key, bought) => {
                    if let Some(entry) = self.bought.get_mut(&key) {
                        entry.1 = bought;
                    }
                }
                Undo::Sold(sku, state) => {
                    match state {
                        Some(state) => self.sold.insert(sku, state),
                        None => self.sold.remove(&sku),
                    };
                }
                Undo::Tab(key, state) => {
                    match state {
                        Some(state) => self.tabs.insert(key, state),
                        None => self.tabs.remove(&key),
                    };
                }
            }
        }
        self.rows.truncate(self.mark);
    }
}

/// The SQL of one backend: the table of a JSON array parameter, the order of its elements, row
/// locks and byte-order collation.
#[derive(Debug, Clone, Copy)]
struct Sql(Backend);

impl Sql {
    /// `template` with `{j}` / `{k}` (the rows of parameters `$1` / `$2`, aliased `j` / `k`),
    /// `{order}` (`j`'s element order), `{lock}` and `{c}` filled in for the backend.
    fn text(self, template: &str) -> sqlx::AssertSqlSafe<String> {
        let (j, k, order, lock, c) = match self.0 {
            // The binary JSON forms: each row is parsed once, and `->>` finds a column without
            // parsing the row's text again (with `json_each`, every `->>` re-parsed it).
            Backend::Sqlite => ("jsonb_each($1) as j", "jsonb_each($2) as k", "j.key", "", ""),
            Backend::Postgres => (
                "jsonb_array_elements(cast($1 as jsonb)) with ordinality as j(value, ord)",
                "jsonb_array_elements(cast($2 as jsonb)) with ordinality as k(value, ord)",
                "j.ord",
                " for no key update",
                " collate \"C\"",
            ),
        };
        sqlx::AssertSqlSafe(
            template
                .replace("{j}", j)
                .replace("{k}", k)
                .replace("{order}", order)
                .replace("{lock}", lock)
                .replace("{c}", c),
        )
    }
}

fn rows_json(rows: &[Value]) -> ApiResult<String> {
    serde_json::to_string(rows).map_err(|error| anyhow::Error::from(error).into())
}

/// A key of the batch, as its requests so far left it.
#[derive(Debug, Clone)]
enum KeyState {
    /// Taken before this batch: its stored hash, status (0 while unanswered) and answer.
    Stored(String, i64, axum::body::Bytes),
    /// Claimed by this batch and not answered yet (no request, or one that failed).
    Open,
    /// Answered in this batch, for this request hash: the answer's slot in the batch's bodies.
    Answered(String, StatusCode, usize),
    /// Its first request was deferred: every request with it runs on the per-request path.
    Deferred,
}

/// A request's outcome in the decide loop: final, or a success whose answer is finished after
/// the loop (slot `slot` of the batch's bodies).
enum Decided {
    Now(SetOutcome),
    Answer { status: StatusCode, slot: usize, replayed: bool },
}

/// Below this many receipts or answers, one blocking thread does them all: a thread costs more.
const PARALLEL_FINISH_MIN: usize = 16;

/// Does `work` on every item (signing the receipts, finishing the answers), on up to as many
/// threads as the machine has cores, the calling one among them; the results in no particular
/// order.
fn spread<T: Send, R: Send>(items: Vec<T>, work: impl Fn(T) -> ApiResult<R> + Sync) -> ApiResult<Vec<R>> {
    let do_all = |chunk: Vec<T>| -> ApiResult<Vec<R>> { chunk.into_iter().map(&work).collect() };
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get).min(4);
    if threads < 2 || items.len() < PARALLEL_FINISH_MIN {
        return do_all(items);
    }
    let per_thread = items.len().div_ceil(threads);
    let mut chunks: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut rest = items;
    while rest.len() > per_thread {
        let tail = rest.split_off(per_thread);
        chunks.push(rest);
        rest = tail;
    }
    std::thread::scope(|scope| {
        let others: Vec<_> = chunks.into_iter().map(|chunk| scope.spawn(|| do_all(chunk))).collect();
        let mut done = do_all(rest)?;
        for other in others {
            let chunk =
                other.join().map_err(|_| anyhow::anyhow!("a thread finishing a batch panicked"))??;
            done.extend(chunk);
        }
        Ok(done)
    })
}

/// Runs the set phase of a batch on `conn` (inside the batch's transaction): one outcome per
/// job, in order.
///
/// # Errors
/// A database failure or a guard that did not verify: the transaction must be rolled back and
/// nothing answered.
pub(crate) async fn run(
    conn: &mut AnyConnection,
    backend: Backend,
    jobs: &[&dyn SetJob],
) -> ApiResult<Vec<SetOutcome>> {
    let sql = Sql(backend);
    let now = now_micros();
    let started = std::time::Instant::now();

    // 1. Refuse the writes of revoked sessions; claim the other keys and read the answers of
    //    those already taken.
    let mut refused = refuse_revoked_sessions(conn, sql, jobs).await?;
    let mut first_hash: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for (job, _) in jobs.iter().zip(&refused).filter(|(_, refusal)| refusal.is_none()) {
        first_hash.entry((job.scope(), job.key())).or_insert(job.request_hash());
    }
    // On SQLite the writer holds the database's write lock (`begin immediate`) from before this
    // read to its commit, so a key read as absent stays absent: nothing is claimed, and each
    // answer is written once, with the batch. On PostgreSQL another instance's writer may take
    // the same key meanwhile, so every key is claimed first (its row lock makes the other wait)
    // and the claim is rewritten with the answer.
    let mut claimed: HashSet<(String, String)> = match backend {
        Backend::Sqlite => {
            first_hash.keys().map(|(scope, key)| ((*scope).to_owned(), (*key).to_owned())).collect()
        }
        Backend::Postgres => {
            let claims: Vec<Value> =
                first_hash.iter().map(|((scope, key), hash)| json!([scope, key, hash, now])).collect();
            let claimed: Vec<(String, String)> = sqlx::query_as(sql.text(
                "insert into idempotency (scope, key, request_hash, status_code, response_body, created_at) \
                 select j.value ->> 0, j.value ->> 1, j.value ->> 2, 0, '', cast(j.value ->> 3 as bigint) from {j} \
                 where true order by (j.value ->> 0){c}, (j.value ->> 1){c} \
                 on conflict (scope, key) do nothing returning scope, key",
            ))
            .bind(rows_json(&claims)?)
            .fetch_all(&mut *conn)
            .await?;
            claimed.into_iter().collect()
        }
    };
    let mut keys: HashMap<(String, String), KeyState> = HashMap::with_capacity(first_hash.len());
    // SQLite reads every key; PostgreSQL those it could not claim.
    let taken: Vec<Value> = first_hash
        .keys()
        .filter(|(scope, key)| {
            backend == Backend::Sqlite || !claimed.contains(&((*scope).to_owned(), (*key).to_owned()))
        })
        .map(|(scope, key)| json!([scope, key]))
        .collect();
    if !taken.is_empty() {
        let stored: Vec<(String, String, String, i64, String)> = sqlx::query_as(sql.text(
            "select scope, key, request_hash, status_code, response_body from idempotency \
             where (scope, key) in (select j.value ->> 0, j.value ->> 1 from {j})",
        ))
        .bind(rows_json(&taken)?)
        .fetch_all(&mut *conn)
        .await?;
        for (scope, key, hash, status, body) in stored {
            claimed.remove(&(scope.clone(), key.clone()));
            keys.insert((scope, key), KeyState::Stored(hash, status, body.into()));
        }
    }
    for (scope, key) in claimed {
        keys.insert((scope, key), KeyState::Open);
    }

    // 2. Read what the claimed requests touch.
    let open: Vec<&dyn SetJob> = jobs
        .iter()
        .zip(&refused)
        .filter(|(job, refusal)| {
            refusal.is_none()
                && matches!(keys.get(&(job.scope().to_owned(), job.key().to_owned())), Some(KeyState::Open))
        })
        .map(|(job, _)| *job)
        .collect();
    let mut players: Vec<Uuid> = open.iter().map(|job| job.player_id()).collect();
    players.sort_unstable();
    players.dedup();
    let mut tab_players: Vec<Uuid> = Vec::new();
    let mut tab_currencies: Vec<MoneyCurrency> = Vec::new();
    for job in &open {
        let currencies = job.tab_currencies();
        if !currencies.is_empty() {
            tab_players.push(job.player_id());
            tab_currencies.extend(currencies);
        }
    }
    tab_players.sort_unstable();
    tab_players.dedup();
    tab_currencies.sort_unstable_by_key(|currency| currency.code());
    tab_currencies.dedup();
    let mut limits: Vec<Value> = Vec::new();
    let mut stocked: Vec<String> = Vec::new();
    for job in &open {
        let Some(reads) = job.item_reads() else { continue };
        if let Some(period) = reads.limit_period {
            let start = crate::store::operations::period_window(period, from_micros(now)).0;
            limits.push(json!([
                job.player_id().to_string(),
                reads.sku.as_str(),
                to_micros(start),
                super::entry_id_floor(to_micros(start))
            ]));
        }
        if reads.stocked {
            stocked.push(reads.sku.as_str().to_owned());
        }
    }
    stocked.sort_unstable();
    stocked.dedup();
    let mut ledger = read_state(conn, sql, now, &players, &tab_currencies, false).await?;
    if !tab_players.is_empty() {
        read_tabs(conn, sql, &mut ledger, &tab_players).await?;
    }
    read_items_sold(conn, sql, &mut ledger, &limits, &stocked).await?;
    let rules: Vec<(Uuid, &str)> =
        open.iter().filter_map(|job| job.reward_rule().map(|rule| (job.player_id(), rule))).collect();
    if !rules.is_empty() {
        read_rewards(conn, sql, &mut ledger, &rules).await?;
    }

    let read = started.elapsed();
    // 3. Decide, in arrival order. A success's answer is finished (receipts signed, JSON
    //    written) after the loop, so each answer is a slot of `bodies`.
    let mut bodies: Vec<Option<axum::body::Bytes>> = Vec::new();
    let mut unfinished: Vec<(usize, Box<dyn Unfinished>)> = Vec::new();
    let mut decided_outcomes: Vec<Decided> = Vec::with_capacity(jobs.len());
    let mut deferred_players: HashSet<Uuid> = HashSet::new();
    for (job, refusal) in jobs.iter().zip(&mut refused) {
        if let Some(error) = refusal.take() {
            decided_outcomes.push(Decided::Now(SetOutcome::Answered(Err(error))));
            continue;
        }
        let id = (job.scope().to_owned(), job.key().to_owned());
        let state = keys.get(&id).cloned();
        let outcome = match state {
            None => Decided::Now(SetOutcome::Answered(Err(anyhow::anyhow!(
                "key {} of {} neither claimed nor stored",
                id.1,
                id.0
            )
            .into()))),
            Some(KeyState::Stored(hash, status, body)) => {
                Decided::Now(SetOutcome::Answered(if hash != job.request_hash() {
                    Err(key_reused())
                } else {
                    match u16::try_from(status)
                        .ok()
                        .filter(|status| *status != 0)
                        .and_then(|status| StatusCode::from_u16(status).ok())
                    {
                        Some(status) => Ok(Done { status, body, replayed: true }),
                        None => Err(in_progress()),
                    }
                }))
            }
            Some(KeyState::Answered(hash, status, slot)) => {
                if hash == job.request_hash() {
                    Decided::Answer { status, slot, replayed: true }
                } else {
                    Decided::Now(SetOutcome::Answered(Err(key_reused())))
                }
            }
            Some(KeyState::Deferred) => Decided::Now(SetOutcome::Defer),
            Some(KeyState::Open) if deferred_players.contains(&job.player_id()) => {
                keys.insert(id, KeyState::Deferred);
                Decided::Now(SetOutcome::Defer)
            }
            Some(KeyState::Open) => {
                ledger.begin();
                let slot = bodies.len();
                let answer = match job.decide(&mut ledger) {
                    Ok(None) => None,
                    Ok(Some((status, answer))) => {
                        bodies.push(None);
                        unfinished.push((slot, answer));
                        Some(Ok(status))
                    }
                    Err(error) => match error.refusal_body() {
                        Some((status, body)) => {
                            bodies.push(Some(body.into()));
                            Some(Ok(status))
                        }
                        None => Some(Err(error)),
                    },
                };
                match answer {
                    None => {
                        ledger.abort();
                        // The player's later requests follow it, so each player's requests
                        // still run in arrival order.
                        deferred_players.insert(job.player_id());
                        keys.insert(id, KeyState::Deferred);
                        Decided::Now(SetOutcome::Defer)
                    }
                    Some(Ok(status)) => {
                        if !status.is_success() {
                            ledger.abort();
                        }
                        keys.insert(id, KeyState::Answered(job.request_hash().to_owned(), status, slot));
                        Decided::Answer { status, slot, replayed: false }
                    }
                    Some(Err(error)) => {
                        ledger.abort();
                        Decided::Now(SetOutcome::Answered(Err(error)))
                    }
                }
            }
        };
        decided_outcomes.push(outcome);
    }

    let decided = started.elapsed();
    // 4. Write what names no entry while the receipts are signed on other threads; then the
    //    entries (with their signatures) while the answers' JSON is written; then the answers.
    let signer = ledger.signer.clone();
    let mut rows = std::mem::take(&mut ledger.rows);
    let unsigned = rows.unsigned_receipts();
    let signing = tokio::task::spawn_blocking(move || {
        spread(unsigned, |(id, payload)| {
            let signed = signer.sign_payload(&payload);
            Ok((id, signed))
        })
    });
    write_records(conn, sql, &ledger, &rows).await?;
    let recorded = started.elapsed();
    let signatures: HashMap<String, Signed> = signing
        .await
        .map_err(|error| anyhow::anyhow!("signing a batch's receipts failed: {error}"))??
        .into_iter()
        .collect();
    rows.sign_receipts(&signatures)?;
    let signed = started.elapsed();
    let receipts = signatures.len();
    let finishing = tokio::task::spawn_blocking(move || {
        spread(unfinished, |(slot, answer): (usize, Box<dyn Unfinished>)| {
            Ok((slot, answer.finish(&signatures)?))
        })
    });
    write_entries(conn, sql, &rows).await?;
    let entered = started.elapsed();
    let finished_answers =
        finishing.await.map_err(|error| anyhow::anyhow!("finishing a batch's answers failed: {error}"))??;
    // Every receipt the batch stores is in exactly one answer (`MoneyOp::receipts` lists an
    // answer's receipts): one missing from its answer fails the batch.
    if finished_answers.iter().map(|(_, finished)| finished.receipts).sum::<usize>() != receipts {
        return Err(batch_failed("receipts in answers"));
    }
    let mut stored_bodies: Vec<Option<Vec<u8>>> = vec![None; bodies.len()];
    for (slot, finished) in finished_answers {
        bodies[slot] = Some(finished.body.into());
        if let Some(stored) = stored_bodies.get_mut(slot) {
            *stored = Some(finished.stored);
        }
    }
    let body_of = |slot: usize| {
        bodies
            .get(slot)
            .cloned()
            .flatten()
            .ok_or_else(|| ApiError::from(anyhow::anyhow!("an answer was not finished")))
    };
    let mut outcomes = Vec::with_capacity(decided_outcomes.len());
    for outcome in decided_outcomes {
        outcomes.push(match outcome {
            Decided::Now(outcome) => outcome,
            Decided::Answer { status, slot, replayed } => {
                SetOutcome::Answered(Ok(Done { status, body: body_of(slot)?, replayed }))
            }
        });
    }
    let finished = started.elapsed();
    // 5. Write the answers and the system accounts' balances, with their postings.
    let mut answers = Vec::new();
    let mut released = Vec::new();
    for ((scope, key), state) in &keys {
        match state {
            KeyState::Answered(hash, status, slot) => {
                let stored = match stored_bodies.get(*slot).and_then(Option::as_deref) {
                    Some(stored) => std::str::from_utf8(stored).map_err(anyhow::Error::from)?.to_owned(),
                    None => String::from_utf8(body_of(*slot)?.to_vec()).map_err(anyhow::Error::from)?,
                };
                answers.push(json!([scope, key, hash, status.as_u16(), stored, ledger.now]));
            }
            KeyState::Open | KeyState::Deferred => released.push(json!([scope, key])),
            KeyState::Stored(..) => {}
        }
    }
    write_answers_and_balances(conn, sql, &ledger, &rows, &answers, &released).await?;
    let written = started.elapsed();
    // Where the writer's time goes, per batch: what limits the rate is this serial path.
    metrics::histogram!("coinslot_writer_phase_seconds", "phase" => "set_read").record(read.as_secs_f64());
    metrics::histogram!("coinslot_writer_phase_seconds", "phase" => "set_decide")
        .record((decided - read).as_secs_f64());
    // The signing and finishing the writes did not hide, and the writes.
    metrics::histogram!("coinslot_writer_phase_seconds", "phase" => "set_finish")
        .record((signed - recorded + finished - entered).as_secs_f64());
    metrics::histogram!("coinslot_writer_phase_seconds", "phase" => "set_write")
        .record((recorded - decided + entered - signed + written - finished).as_secs_f64());
    Ok(outcomes)
}

/// A player a batch's logins create.
struct NewPlayer {
    id: Uuid,
    device_key: String,
    country: Option<String>,
}

/// Runs a batch's device logins on `conn` (inside the batch's transaction, before its other
/// set jobs): one read of the players by device, new players created with their initial grant
/// (appended as `append_entry` would, against wallets known to be empty), one update of the
/// countries of known players (the first a player names stays), the sessions in one insert. The
/// answer of each is its player's id. A catalog not yet rendered defers them all.
///
/// # Errors
/// A database failure, or a device another instance created meanwhile (the insert's guard):
/// the transaction must be rolled back and nothing answered.
pub(crate) async fn run_logins(
    conn: &mut AnyConnection,
    backend: Backend,
    logins: &[&dyn LoginSetJob],
) -> ApiResult<Vec<SetOutcome>> {
    if logins.is_empty() {
        return Ok(Vec::new());
    }
    let sql = Sql(backend);
    let now = now_micros();
    let mut ledger = read_state(conn, sql, now, &[], &[], true).await?;
    let Some(catalog) = logins[0].catalog().cached(&ledger.stamp) else {
        return Ok(logins.iter().map(|_| SetOutcome::Defer).collect());
    };
    let devices: Vec<Value> = logins.iter().map(|login| json!([login.device_key()])).collect();
    let found: Vec<(String, String)> = sqlx::query_as(
        sql.text("select device_id, id from player where device_id in (select j.value ->> 0 from {j})"),
    )
    .bind(rows_json(&devices)?)
    .fetch_all(&mut *conn)
    .await?;
    let mut players: HashMap<String, Uuid> = HashMap::with_capacity(logins.len());
    for (device, id) in found {
        players.insert(device, super::stored_uuid(&id)?);
    }
    let mut created: Vec<NewPlayer> = Vec::new();
    let mut countries: Vec<Value> = Vec::new();
    let mut sessions: Vec<Value> = Vec::with_capacity(logins.len());
    let mut outcomes = Vec::with_capacity(logins.len());
    for login in logins {
        let device = login.device_key();
        let player_id = match players.get(device) {
            Some(id) => {
                if let Some(country) = login.country() {
                    match created.iter_mut().find(|player| player.id == *id) {
                        Some(new) => {
                            new.country.get_or_insert_with(|| country.to_owned());
                        }
                        // The first country a known player's logins name is the one kept.
                        None if !countries.iter().any(|row| row[0] == device) => {
                            countries.push(json!([device, country]));
                        }
                        None => {}
                    }
                }
                *id
            }
            None => {
                let id = Uuid::now_v7();
                players.insert(device.to_owned(), id);
                created.push(NewPlayer {
                    id,
                    device_key: device.to_owned(),
                    country: login.country().map(str::to_owned),
                });
                for currency in &ledger.currencies {
                    let account = AccountId::Wallet(id, currency.clone());
                    ledger.accounts.insert(account.key(), absent("wallet", Some(id), currency.as_str()));
                }
                ledger.items.entry(id).or_default();
                if let Some(entry) = crate::store::operations::initial_grant_entry(&catalog, id)
                    && ledger.append(&entry, catalog.balance_maxima())?.is_none()
                {
                    return Err(anyhow::anyhow!(
                        "an initial grant touched an account the batch did not read"
                    )
                    .into());
                }
                id
            }
        };
        let (session_id, expires_at) = login.session();
        sessions.push(json!([session_id.to_string(), player_id.to_string(), now, expires_at]));
        outcomes.push(SetOutcome::Answered(Ok(Done {
            status: StatusCode::OK,
            body: player_id.to_string().into_bytes().into(),
            replayed: false,
        })));
    }

    // Players first: the accounts, entries and sessions name them.
    if !created.is_empty() {
        let rows: Vec<Value> = created
            .iter()
            .map(|player| json!([player.id.to_string(), player.device_key, player.country, now]))
            .collect();
        let inserted: Vec<String> = sqlx::query_scalar(sql.text(
            "insert into player (id, device_id, country, created_at) \
             select j.value ->> 0, j.value ->> 1, j.value ->> 2, cast(j.value ->> 3 as bigint) from {j} \
             where true order by {order} on conflict (device_id) do nothing returning id",
        ))
        .bind(rows_json(&rows)?)
        .fetch_all(&mut *conn)
        .await?;
        if inserted.len() != created.len() {
            return Err(batch_failed("new players"));
        }
    }
    if !countries.is_empty() {
        sqlx::query(sql.text(
            "update player set country = coalesce(country, j.value ->> 1) from {j} \
             where player.device_id = j.value ->> 0",
        ))
        .bind(rows_json(&countries)?)
        .execute(&mut *conn)
        .await?;
    }
    let rows = std::mem::take(&mut ledger.rows);
    // An initial grant has no receipt: the session is the answer.
    if !rows.unsigned_receipts().is_empty() {
        return Err(batch_failed("a login's receipt"));
    }
    write_records(conn, sql, &ledger, &rows).await?;
    write_entries(conn, sql, &rows).await?;
    write_answers_and_balances(conn, sql, &ledger, &rows, &[], &[]).await?;
    insert_rows(
        conn,
        sql,
        "session",
        &[("id", TEXT), ("player_id", TEXT), ("created_at", INT), ("expires_at", INT)],
        &sessions,
    )
    .await?;
    Ok(outcomes)
}

/// Reads the sessions the batch's player writes were sent with, in one statement: a write whose
/// session is revoked or unknown gets its refusal (and claims nothing); the others `None`.
async fn refuse_revoked_sessions(
    conn: &mut AnyConnection,
    sql: Sql,
    jobs: &[&dyn SetJob],
) -> ApiResult<Vec<Option<ApiError>>> {
    let sessions: Vec<Value> =
        jobs.iter().filter_map(|job| job.session_id()).map(|id| json!([id.to_string()])).collect();
    if sessions.is_empty() {
        return Ok(jobs.iter().map(|_| None).collect());
    }
    let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
        sql.text("select id, revoked_at from session where id in (select j.value ->> 0 from {j})"),
    )
    .bind(rows_json(&sessions)?)
    .fetch_all(&mut *conn)
    .await?;
    let found: HashMap<String, Option<i64>> = rows.into_iter().collect();
    Ok(jobs
        .iter()
        .map(|job| {
            let session = job.session_id()?;
            crate::players::auth::live_session(found.get(&session.to_string()).copied()).err()
        })
        .collect())
}

/// A player's row as the batch selects it: id, blocked, age band, country, flagged at, flag reason,
/// and the id of the player's newest entry.
type PlayerTuple = (String, i64, i64, Option<String>, Option<i64>, Option<String>, Option<String>);

/// Step 2: reads the batch's state (with `system_accounts`, the system accounts even when it has
/// no players: a batch of logins grants from issuance).
async fn read_state(
    conn: &mut AnyConnection,
    sql: Sql,
    now: i64,
    players: &[Uuid],
    tab_currencies: &[MoneyCurrency],
    system_accounts: bool,
) -> ApiResult<BatchLedger> {
    let (stamp, key_id): (String, String) = sqlx::query_as(
        "select (select value from meta where key = 'catalog_stamp'), \
         (select id from receipt_key where retired_at is null order by created_at desc, id desc limit 1)",
    )
    .fetch_one(&mut *conn)
    .await?;
    let signer = signer(conn, key_id).await?;
    let codes: Vec<String> = sqlx::query_scalar("select code from currency").fetch_all(&mut *conn).await?;
    let mut currencies = codes.iter().map(|code| stored_code(code)).collect::<ApiResult<Vec<_>>>()?;
    currencies.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    let mut ledger = BatchLedger {
        now,
        stamp,
        currencies,
        signer,
        players: HashMap::with_capacity(players.len()),
        accounts: HashMap::new(),
        items: HashMap::new(),
        rows: Rows::default(),
        entry_heads: EntryHeads::default(),
        undo: Vec::new(),
        mark: [0; 5],
        reward_rules: HashMap::new(),
        reward_claims: HashMap::new(),
        tabs: HashMap::new(),
        tab_facts: HashMap::new(),
        bought: HashMap::new(),
        sold: HashMap::new(),
    };
    if players.is_empty() && !system_accounts {
        return Ok(ledger);
    }
    let player_rows: Vec<Value> = players.iter().map(|player| json!([player.to_string()])).collect();
    let player_rows = rows_json(&player_rows)?;
    let found: Vec<PlayerTuple> = if players.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(sql.text(
            "select id, blocked, age_band, country, flagged_at, flag_reason, \
             (select max(e.id) from entry e where e.player_id = player.id) from player \
             where id in (select j.value ->> 0 from {j}) order by id{c}{lock}",
        ))
        .bind(&player_rows)
        .fetch_all(&mut *conn)
        .await?
    };
    for (id, blocked, age_band, country, flagged_at, flag_reason, newest_entry) in found {
        let id = super::stored_uuid(&id)?;
        ledger.entry_heads.read(id, newest_entry.as_deref())?;
        let flag = flagged_at.map(|_| flag_reason);
        ledger.players.insert(
            id,
            PlayerRow { blocked: blocked != 0, age_band: AgeBand::from_code(age_band), country, flag },
        );
    }
    // Every wallet of the batch's players and the system accounts a purchase credits, read or
    // known absent (balance 0): anything else defers the request that touches it.
    let mut candidates: HashMap<String, AccountState> = HashMap::new();
    for currency in &ledger.currencies {
        for player in ledger.players.keys() {
            let id = AccountId::Wallet(*player, currency.clone());
            candidates.insert(id.key(), absent("wallet", Some(*player), currency.as_str()));
        }
        for kind in [SystemAccount::Revenue, SystemAccount::Issuance] {
            let id = AccountId::System(kind, currency.as_str().to_owned());
            candidates.insert(id.key(), absent(kind.as_str(), None, currency.as_str()));
        }
    }
    // A tab purchase moves money from the tab receivable account to revenue.
    for currency in tab_currencies {
        for kind in [SystemAccount::Revenue, SystemAccount::TabReceivable] {
            let id = AccountId::System(kind, currency.code().to_owned());
            candidates.insert(id.key(), absent(kind.as_str(), None, currency.code()));
        }
    }
    let system: Vec<Value> = candidates
        .iter()
        .filter(|(_, account)| account.player_id.is_none())
        .map(|(id, _)| json!([id]))
        .collect();
    let accounts: Vec<(String, String, Option<String>, String, i64, i64)> = sqlx::query_as(sql.text(
        "select id, kind, player_id, currency, balance, in_debt from account \
         where player_id in (select j.value ->> 0 from {j}) \
         union all select id, kind, player_id, currency, balance, in_debt from account \
         where id in (select k.value ->> 0 from {k})",
    ))
    .bind(&player_rows)
    .bind(rows_json(&system)?)
    .fetch_all(&mut *conn)
    .await?;
    for (id, kind, player_id, currency, balance, in_debt) in accounts {
        let player_id = player_id.as_deref().map(super::stored_uuid).transpose()?;
        candidates.insert(
            id,
            AccountState {
                kind,
                player_id,
                currency,
                read: balance,
                balance,
                in_debt: in_debt != 0,
                existed: true,
                touched: false,
                balance_max: i64::MAX,
            },
        );
    }
    ledger.accounts = candidates;
    if players.is_empty() {
        return Ok(ledger);
    }
    let items: Vec<(String, String, i64, i64)> = sqlx::query_as(sql.text(
        "select player_id, sku, quantity, in_debt from inventory where player_id in (select j.value ->> 0 from {j})",
    ))
    .bind(&player_rows)
    .fetch_all(&mut *conn)
    .await?;
    for (player, sku, quantity, in_debt) in items {
        ledger.items.entry(super::stored_uuid(&player)?).or_default().insert(
            sku,
            ItemState {
                read: quantity,
                quantity,
                in_debt: in_debt != 0,
                existed: true,
                quantity_max: i64::MAX,
            },
        );
    }
    for player in ledger.players.keys() {
        ledger.items.entry(*player).or_default();
    }
    Ok(ledger)
}

/// Reads the open and settling tabs of the players whose purchases may go on a tab, whether
/// each settled one before, and what their orders count against the spending limits: three
/// statements, whatever the number of players.
async fn read_tabs(
    conn: &mut AnyConnection,
    sql: Sql,
    ledger: &mut BatchLedger,
    players: &[Uuid],
) -> ApiResult<()> {
    let rows: Vec<Value> = players.iter().map(|player| json!([player.to_string()])).collect();
    let rows = rows_json(&rows)?;
    let tabs: Vec<TabTuple> = sqlx::query_as(sql.text(&format!(
        "select {TAB_COLUMNS} from tab where player_id in (select j.value ->> 0 from {{j}}) \
         and status in ('open', 'settling')"
    )))
    .bind(&rows)
    .fetch_all(&mut *conn)
    .await?;
    for row in tabs {
        let tab = tab_from(row)?;
        let read = (tab.amount_micros, tab.item_count());
        ledger.tabs.insert((tab.player_id, tab.currency.code()), TabState { tab, read, existed: true });
    }
    for player in players {
        ledger.tab_facts.insert(*player, TabFacts::default());
    }
    // As `settled_before`: a settlement charged back earns nothing.
    let settled: Vec<String> = sqlx::query_scalar(sql.text(
        "select distinct t.player_id from tab t where t.player_id in (select j.value ->> 0 from {j}) \
         and t.status = 'settled' and not exists (select 1 from payment_order o where o.player_id = t.player_id \
         and o.tab_id is not null and o.status in ('disputed', 'charged_back'))",
    ))
    .bind(&rows)
    .fetch_all(&mut *conn)
    .await?;
    for player in settled {
        if let Some(facts) = ledger.tab_facts.get_mut(&super::stored_uuid(&player)?) {
            facts.settled_before = true;
        }
    }
    // As `spent_since`, for both periods at once.
    let now = from_micros(ledger.now);
    let [day, month] = crate::payments::orders::SPENDING_PERIODS
        .map(|period| to_micros(crate::store::operations::period_window(period, now).0));
    let spent: Vec<(String, String, Option<i64>, Option<i64>)> = sqlx::query_as(sql.text(
        "select player_id, currency, \
         cast(sum(case when created_at >= $2 then gross_micros else 0 end) as bigint), \
         cast(sum(case when created_at >= $3 then gross_micros else 0 end) as bigint) \
         from payment_order where player_id in (select j.value ->> 0 from {j}) and created_at >= $4 \
         and status not in ('failed', 'expired', 'canceled') group by player_id, currency",
    ))
    .bind(&rows)
    .bind(day)
    .bind(month)
    .bind(day.min(month))
    .fetch_all(&mut *conn)
    .await?;
    for (player, currency, day, month) in spent {
        if let Some(facts) = ledger.tab_facts.get_mut(&super::stored_uuid(&player)?) {
            facts.spent.insert(currency, (day.unwrap_or(0), month.unwrap_or(0)));
        }
    }
    Ok(())
}

/// Reads what each (player, item, period start) of `limits` bought (purchases and live orders,
/// as `check_purchase_limit` counts them) and the sold units of the `stocked` items: one
/// statement each, whatever the batch's size.
async fn read_items_sold(
    conn: &mut AnyConnection,
    sql: Sql,
    ledger: &mut BatchLedger,
    limits: &[Value],
    stocked: &[String],
) -> ApiResult<()> {
    if !limits.is_empty() {
        let bought: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(sql.text(
            "select j.value ->> 0, j.value ->> 1, cast(j.value ->> 2 as bigint), cast(\
             coalesce((select sum(e.purchase_quantity) from entry e \
             where e.player_id = j.value ->> 0 and e.id >= j.value ->> 3 \
             and e.purchase_sku = j.value ->> 1 and e.created_at >= cast(j.value ->> 2 as bigint)), 0) \
             + coalesce((select sum(quantity) from payment_order o where o.player_id = j.value ->> 0 \
             and o.sku = j.value ->> 1 and o.created_at >= cast(j.value ->> 2 as bigint) \
             and o.status not in ('failed', 'expired', 'canceled')), 0) as bigint) from {j}",
        ))
        .bind(rows_json(limits)?)
        .fetch_all(&mut *conn)
        .await?;
        for (player, sku, start, bought) in bought {
            ledger.bought.insert((super::stored_uuid(&player)?, sku), (start, bought.unwrap_or(0)));
        }
    }
    if !stocked.is_empty() {
        let skus: Vec<Value> = stocked.iter().map(|sku| json!([sku])).collect();
        let sold: Vec<(String, i64)> = sqlx::query_as(
            sql.text("select sku, sold from item_sold where sku in (select j.value ->> 0 from {j})"),
        )
        .bind(rows_json(&skus)?)
        .fetch_all(&mut *conn)
        .await?;
        let sold: HashMap<String, i64> = sold.into_iter().collect();
        for sku in stocked {
            let read = sold.get(sku).copied().unwrap_or(0);
            ledger.sold.insert(sku.clone(), StockState { read, sold: read, stock: i64::MAX });
        }
    }
    Ok(())
}

/// Reads the reward rules the batch claims under and its players' claims of the day under them.
async fn read_rewards(
    conn: &mut AnyConnection,
    sql: Sql,
    ledger: &mut BatchLedger,
    claims: &[(Uuid, &str)],
) -> ApiResult<()> {
    let codes: Vec<Value> = claims.iter().map(|(_, rule)| json!([rule])).collect();
    let rules: Vec<RewardRuleRow> = sqlx::query_as(sql.text(
        "select code, currency, amount, cap_per_minute, cap_per_hour, cap_per_day from reward_rule \
         where code in (select j.value ->> 0 from {j})",
    ))
    .bind(rows_json(&codes)?)
    .fetch_all(&mut *conn)
    .await?;
    for rule in rules {
        ledger.reward_rules.insert(rule.0.clone(), rule);
    }
    // The day's claims, only under rules with a cap, read through the players' entries of the
    // day (entry ids are time-ordered: `entry_id_floor`).
    let day = crate::db::to_micros(crate::db::from_micros(ledger.now).replace_time(time::Time::MIDNIGHT));
    let capped = |rule: &str| {
        ledger.reward_rules.get(rule).is_some_and(|row| row.3.is_some() || row.4.is_some() || row.5.is_some())
    };
    let pairs: Vec<Value> = claims
        .iter()
        .filter(|(_, rule)| capped(rule))
        .map(|(player, rule)| json!([player.to_string(), rule]))
        .collect();
    if pairs.is_empty() {
        return Ok(());
    }
    let earned: Vec<(String, String, i64, i64)> = sqlx::query_as(sql.text(
        "select e.player_id, c.rule, c.created_at, c.amount from {j} \
         join entry e on e.player_id = j.value ->> 0 and e.id >= $3 \
         join reward_claim c on c.entry_id = e.id and c.rule = j.value ->> 1 where c.created_at >= $2",
    ))
    .bind(rows_json(&pairs)?)
    .bind(day)
    .bind(super::entry_id_floor(day))
    .fetch_all(&mut *conn)
    .await?;
    for (player, rule, at, amount) in earned {
        ledger.reward_claims.entry((super::stored_uuid(&player)?, rule)).or_default().push((at, amount));
    }
    Ok(())
}

fn absent(kind: &str, player_id: Option<Uuid>, currency: &str) -> AccountState {
    AccountState {
        kind: kind.to_owned(),
        player_id,
        currency: currency.to_owned(),
        read: 0,
        balance: 0,
        in_debt: false,
        existed: false,
        touched: false,
        balance_max: i64::MAX,
    }
}

/// A text column of [`insert_rows`].
const TEXT: bool = false;
/// An integer column of [`insert_rows`].
const INT: bool = true;

/// Inserts `rows` (JSON arrays, in their order) into `table`, one statement: `columns` names
/// each element's column and whether it is an integer.
async fn insert_rows(
    conn: &mut AnyConnection,
    sql: Sql,
    table: &str,
    columns: &[(&str, bool)],
    rows: &[Value],
) -> ApiResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let values: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(index, (_, integer))| {
            if *integer {
                format!("cast(j.value ->> {index} as bigint)")
            } else {
                format!("j.value ->> {index}")
            }
        })
        .collect();
    // Only this module's table and column names are formatted into the SQL.
    let template = format!(
        "insert into {table} ({}) select {} from {{j}} order by {{order}}",
        names.join(", "),
        values.join(", ")
    );
    sqlx::query(sql.text(&template)).bind(rows_json(rows)?).execute(&mut *conn).await?;
    Ok(())
}

/// Opens the batch's new tabs, adds its charges to the tabs with one guarded, verified update
/// (a tab must still be open, and hold what the batch read), and writes the tab items.
async fn write_tabs(
    conn: &mut AnyConnection,
    sql: Sql,
    ledger: &BatchLedger,
    items: &[Value],
) -> ApiResult<()> {
    let mut opened = Vec::new();
    let mut changes = Vec::new();
    let mut expected: HashMap<String, (i64, i64)> = HashMap::new();
    for state in ledger.tabs.values() {
        let tab = &state.tab;
        let now = (tab.amount_micros, tab.item_count());
        if state.existed && now == state.read {
            continue;
        }
        if !state.existed {
            opened.push(json!([
                tab.id.to_string(),
                tab.player_id.to_string(),
                tab.currency.code(),
                "open",
                0,
                0,
                tab.opened_at()
            ]));
        }
        changes.push(json!([tab.id.to_string(), now.0 - state.read.0, now.1 - state.read.1]));
        expected.insert(tab.id.to_string(), now);
    }
    insert_rows(
        conn,
        sql,
        "tab",
        &[
            ("id", TEXT),
            ("player_id", TEXT),
            ("currency", TEXT),
            ("status", TEXT),
            ("amount_micros", INT),
            ("carried_in_micros", INT),
            ("opened_at", INT),
        ],
        &opened,
    )
    .await?;
    if !changes.is_empty() {
        let updated: Vec<(String, i64, i64)> = sqlx::query_as(sql.text(
            "update tab set amount_micros = amount_micros + cast(j.value ->> 1 as bigint), \
             item_count = item_count + cast(j.value ->> 2 as bigint) \
             from {j} where tab.id = j.value ->> 0 and tab.status = 'open' \
             returning id, amount_micros, item_count",
        ))
        .bind(rows_json(&changes)?)
        .fetch_all(&mut *conn)
        .await?;
        if updated.len() != expected.len()
            || updated.iter().any(|(id, amount, count)| expected.get(id) != Some(&(*amount, *count)))
        {
            return Err(batch_failed("tabs"));
        }
    }
    insert_rows(
        conn,
        sql,
        "tab_item",
        &[
            ("id", TEXT),
            ("tab_id", TEXT),
            ("purchase_id", TEXT),
            ("sku", TEXT),
            ("quantity", INT),
            ("amount_micros", INT),
            ("created_at", INT),
        ],
        items,
    )
    .await
}

/// Takes the batch's stock: one guarded update (never past an item's stock) for every item it
/// sold, which must update each. Another instance may have sold some since the read; the guard
/// still holds the stock, so that is no failure.
async fn write_stock(conn: &mut AnyConnection, sql: Sql, ledger: &BatchLedger) -> ApiResult<()> {
    let taken: Vec<Value> = ledger
        .sold
        .iter()
        .filter(|(_, state)| state.sold != state.read)
        .map(|(sku, state)| json!([sku, state.sold - state.read, state.stock]))
        .collect();
    if taken.is_empty() {
        return Ok(());
    }
    sqlx::query(sql.text(
        "insert into item_sold (sku, sold) select j.value ->> 0, 0 from {j} where true on conflict (sku) do nothing",
    ))
    .bind(rows_json(&taken)?)
    .execute(&mut *conn)
    .await?;
    let updated: Vec<String> = sqlx::query_scalar(sql.text(
        "update item_sold set sold = sold + cast(j.value ->> 1 as bigint) from {j} \
         where item_sold.sku = j.value ->> 0 and sold + cast(j.value ->> 1 as bigint) <= cast(j.value ->> 2 as bigint) \
         returning sku",
    ))
    .bind(rows_json(&taken)?)
    .fetch_all(&mut *conn)
    .await?;
    if updated.len() != taken.len() {
        return Err(batch_failed("stock"));
    }
    Ok(())
}

fn batch_failed(what: &str) -> ApiError {
    ApiError::Internal(anyhow::anyhow!("the set path's {what} did not verify"))
}

/// The accounts a batch changed, in id order (the lock order).
fn touched_accounts(ledger: &BatchLedger) -> Vec<(&String, &AccountState)> {
    let mut touched: Vec<(&String, &AccountState)> =
        ledger.accounts.iter().filter(|(_, account)| account.touched).collect();
    touched.sort_unstable_by(|a, b| a.0.cmp(b.0));
    touched
}

/// Step 5, first half: the records that name no entry, one statement per table (the entries
/// carry their receipts, so they, what names them, the answers, the balances and the postings
/// follow the answers being finished).
async fn write_records(
    conn: &mut AnyConnection,
    sql: Sql,
    ledger: &BatchLedger,
    rows: &Rows,
) -> ApiResult<()> {
    // Every statement is driven by its JSON rows (an upsert, or `in (select ...)`), so each row
    // is one index lookup: an `update ... from` may scan the whole table instead.
    if rows.entries.is_empty() {
        return Ok(());
    }
    let now = ledger.now;
    let touched = touched_accounts(ledger);
    let created: Vec<Value> = touched
        .iter()
        .filter(|(_, account)| !account.existed)
        .map(|(id, account)| {
            json!([id, account.kind, account.player_id.map(|p| p.to_string()), account.currency, now])
        })
        .collect();
    if !created.is_empty() {
        sqlx::query(sql.text(
            "insert into account (id, kind, player_id, currency, balance, created_at) \
             select j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, 0, cast(j.value ->> 4 as bigint) \
             from {j} where true on conflict (id) do nothing",
        ))
        .bind(rows_json(&created)?)
        .execute(&mut *conn)
        .await?;
    }
    // The wallets' balances (the players are locked already; the system accounts come last).
    let wallets: Vec<(&String, &AccountState)> =
        touched.into_iter().filter(|(_, account)| account.kind == "wallet").collect();
    update_balances(conn, sql, ledger, &wallets).await?;
    // Items: create the rows never held, then one guarded, verified update per item.
    let mut item_deltas = Vec::new();
    let mut item_created = Vec::new();
    let mut expected_items: HashMap<(String, String), i64> = HashMap::new();
    for (player, items) in &ledger.items {
        for (sku, item) in items {
            if item.quantity == item.read && item.existed {
                continue;
            }
            if !item.existed {
                item_created.push(json!([player.to_string(), sku]));
            }
            item_deltas.push(json!([player.to_string(), sku, item.quantity - item.read, item.quantity_max]));
            expected_items.insert((player.to_string(), sku.clone()), item.quantity);
        }
    }
    if !item_created.is_empty() {
        sqlx::query(sql.text(
            "insert into inventory (player_id, sku, quantity) select j.value ->> 0, j.value ->> 1, 0 from {j} \
             where true on conflict (player_id, sku) do nothing",
        ))
        .bind(rows_json(&item_created)?)
        .execute(&mut *conn)
        .await?;
    }
    if !item_deltas.is_empty() {
        let updated: Vec<(String, String, i64)> = sqlx::query_as(sql.text(
            "update inventory set quantity = quantity + cast(j.value ->> 2 as bigint), \
             in_debt = case when quantity + cast(j.value ->> 2 as bigint) >= 0 then 0 else in_debt end \
             from {j} where inventory.player_id = j.value ->> 0 and inventory.sku = j.value ->> 1 \
             and (cast(j.value ->> 2 as bigint) >= 0 or quantity + cast(j.value ->> 2 as bigint) >= 0) \
             and (cast(j.value ->> 2 as bigint) <= 0 or quantity + cast(j.value ->> 2 as bigint) <= cast(j.value ->> 3 as bigint)) \
             returning player_id, sku, quantity",
        ))
        .bind(rows_json(&item_deltas)?)
        .fetch_all(&mut *conn)
        .await?;
        if updated.len() != expected_items.len()
            || updated.iter().any(|(player, sku, quantity)| {
                expected_items.get(&(player.clone(), sku.clone())) != Some(quantity)
            })
        {
            return Err(batch_failed("item counts"));
        }
    }
    write_tabs(conn, sql, ledger, &rows.tab_items).await?;
    write_stock(conn, sql, ledger).await?;
    insert_rows(
        conn,
        sql,
        "audit_log",
        &[
            ("id", TEXT),
            ("actor", TEXT),
            ("action", TEXT),
            ("target", TEXT),
            ("before_value", TEXT),
            ("after_value", TEXT),
            ("created_at", INT),
        ],
        &rows.audit,
    )
    .await?;
    Ok(())
}

/// Step 5, middle: the entries, whole (with their purchases and signed receipts), and the
/// reward claims naming them.
async fn write_entries(conn: &mut AnyConnection, sql: Sql, rows: &Rows) -> ApiResult<()> {
    insert_rows(conn, sql, "entry", ENTRY_COLUMNS, &rows.entries).await?;
    insert_rows(
        conn,
        sql,
        "reward_claim",
        &[
            ("id", TEXT),
            ("player_id", TEXT),
            ("rule", TEXT),
            ("amount", INT),
            ("entry_id", TEXT),
            ("created_at", INT),
        ],
        &rows.reward_claims,
    )
    .await
}

/// Step 5, second half: the answers (claimed keys released), then the system accounts'
/// balances and every posting.
async fn write_answers_and_balances(
    conn: &mut AnyConnection,
    sql: Sql,
    ledger: &BatchLedger,
    rows: &Rows,
    answers: &[Value],
    released: &[Value],
) -> ApiResult<()> {
    if !answers.is_empty() {
        sqlx::query(sql.text(
            "insert into idempotency (scope, key, request_hash, status_code, response_body, created_at) \
             select j.value ->> 0, j.value ->> 1, j.value ->> 2, cast(j.value ->> 3 as bigint), j.value ->> 4, \
             cast(j.value ->> 5 as bigint) from {j} where true \
             on conflict (scope, key) do update set request_hash = excluded.request_hash, \
             status_code = excluded.status_code, response_body = excluded.response_body",
        ))
        .bind(rows_json(answers)?)
        .execute(&mut *conn)
        .await?;
    }
    // Only PostgreSQL claimed keys before answering them.
    if !released.is_empty() && sql.0 == Backend::Postgres {
        sqlx::query(sql.text(
            "delete from idempotency where status_code = 0 and (scope, key) in \
             (select j.value ->> 0, j.value ->> 1 from {j})",
        ))
        .bind(rows_json(released)?)
        .execute(&mut *conn)
        .await?;
    }
    if rows.entries.is_empty() {
        return Ok(());
    }
    let touched = touched_accounts(ledger);

    // The system accounts last: their hot rows are held only from here to the commit.
    let system: Vec<(&String, &AccountState)> =
        touched.into_iter().filter(|(_, account)| account.kind != "wallet").collect();
    let drift = update_balances(conn, sql, ledger, &system).await?;
    let postings: Vec<Value> = rows
        .postings
        .iter()
        .map(|posting| {
            let balance_after = posting.balance_after + drift.get(&posting.account).copied().unwrap_or(0);
            json!([posting.entry_id, posting.account, posting.currency, posting.amount, balance_after])
        })
        .collect();
    insert_rows(
        conn,
        sql,
        "posting",
        &[
            ("entry_id", TEXT),
            ("account_id", TEXT),
            ("currency", TEXT),
            ("amount", INT),
            ("balance_after", INT),
        ],
        &postings,
    )
    .await?;
    Ok(())
}

/// Applies the batch's net change to `accounts` (sorted by id) with one guarded update, and
/// returns what other writers moved each by since the batch read it: only a system account on
/// PostgreSQL can have moved (another instance's batch); a wallet must be exactly as computed.
/// System accounts are locked in id order first on PostgreSQL.
async fn update_balances(
    conn: &mut AnyConnection,
    sql: Sql,
    ledger: &BatchLedger,
    accounts: &[(&String, &AccountState)],
) -> ApiResult<HashMap<String, i64>> {
    let mut drift: HashMap<String, i64> = HashMap::new();
    if accounts.is_empty() {
        return Ok(drift);
    }
    let system: Vec<Value> =
        accounts.iter().filter(|(_, account)| account.kind != "wallet").map(|(id, _)| json!([id])).collect();
    if sql.0 == Backend::Postgres && !system.is_empty() {
        sqlx::query(
            sql.text(
                "select id from account where id in (select j.value ->> 0 from {j}) order by id{c}{lock}",
            ),
        )
        .bind(rows_json(&system)?)
        .fetch_all(&mut *conn)
        .await?;
    }
    let deltas: Vec<Value> = accounts
        .iter()
        .map(|(id, account)| json!([id, account.balance - account.read, account.balance_max]))
        .collect();
    let updated: Vec<(String, i64)> = sqlx::query_as(sql.text(
        "update account set balance = balance + cast(j.value ->> 1 as bigint), \
         in_debt = case when kind <> 'wallet' then 0 when balance + cast(j.value ->> 1 as bigint) >= 0 then 0 else in_debt end \
         from {j} where account.id = j.value ->> 0 and (kind <> 'wallet' or \
         ((cast(j.value ->> 1 as bigint) >= 0 or balance + cast(j.value ->> 1 as bigint) >= 0) \
         and (cast(j.value ->> 1 as bigint) <= 0 or balance + cast(j.value ->> 1 as bigint) <= cast(j.value ->> 2 as bigint)))) \
         returning id, balance",
    ))
    .bind(rows_json(&deltas)?)
    .fetch_all(&mut *conn)
    .await?;
    if updated.len() != accounts.len() {
        return Err(batch_failed("balances"));
    }
    for (id, balance) in updated {
        let Some(account) = ledger.accounts.get(&id) else { return Err(batch_failed("balances")) };
        let moved = balance - account.balance;
        if moved != 0 && (account.kind == "wallet" || sql.0 == Backend::Sqlite) {
            return Err(batch_failed("balances"));
        }
        if moved != 0 {
            drift.insert(id, moved);
        }
    }
    Ok(drift)
}
