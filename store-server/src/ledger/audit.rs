//! `store-server audit`: checks every ledger invariant straight from the tables, so any operator
//! can prove the books are sound. Each check is a query for violations; a clean database
//! returns no rows for any of them.

use std::fmt;

use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::db::{Backend, Db};

/// Violations shown per check; the count is always complete.
const SAMPLES_MAX: i64 = 20;

/// One invariant and what breaks it.
#[derive(Debug, Clone)]
pub struct Check {
    /// What must hold.
    pub invariant: &'static str,
    /// How many rows break it.
    pub violations: i64,
    /// Up to twenty of them, described.
    pub samples: Vec<String>,
}

/// The result of an audit.
#[derive(Debug, Clone)]
pub struct AuditReport {
    /// Every check, in order.
    pub checks: Vec<Check>,
}

impl AuditReport {
    /// Whether every invariant holds.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.checks.iter().all(|check| check.violations == 0)
    }
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for check in &self.checks {
            if check.violations == 0 {
                writeln!(f, "ok    {}", check.invariant)?;
            } else {
                writeln!(f, "FAIL  {} ({} violations)", check.invariant, check.violations)?;
                for sample in &check.samples {
                    writeln!(f, "        {sample}")?;
                }
            }
        }
        if self.is_clean() {
            writeln!(f, "audit clean: every invariant holds")
        } else {
            writeln!(f, "audit FAILED")
        }
    }
}

/// Each invariant with the query that lists its violations, as `(description)` rows.
const CHECKS: &[(&str, &str)] = &[
    (
        "every entry's postings sum to zero per currency",
        "select 'entry ' || entry_id || ' ' || currency || ' sums to ' || sum(amount) from posting \
         group by entry_id, currency having sum(amount) <> 0",
    ),
    (
        "every account's balance equals the sum of its postings",
        "select 'account ' || a.id || ' holds ' || a.balance || ' but its postings sum to ' || coalesce(p.total, 0) \
         from account a left join (select account_id, sum(amount) as total from posting group by account_id) p \
         on p.account_id = a.id where a.balance <> coalesce(p.total, 0)",
    ),
    (
        "every posting's balance_after is the balance before it plus its amount",
        "select 'posting ' || id || ' of ' || account_id || ' records ' || balance_after from \
         (select id, account_id, amount, balance_after, \
          lag(balance_after) over (partition by account_id order by id) as balance_before from posting) t \
         where balance_after <> coalesce(balance_before, 0) + amount",
    ),
    (
        "no wallet is below zero without a recorded debt",
        "select 'wallet ' || id || ' holds ' || balance from account where kind = 'wallet' and balance < 0 and in_debt = 0",
    ),
    (
        "every inventory count equals the sum of its changes and is below zero only with a recorded debt",
        "select 'player ' || i.player_id || ' holds ' || i.quantity || ' ' || i.sku || ' but its changes sum to ' || \
         coalesce(c.total, 0) from inventory i left join \
         (select player_id, sku, sum(delta) as total from {item_changes} changes group by player_id, sku) c \
         on c.player_id = i.player_id and c.sku = i.sku where i.quantity <> coalesce(c.total, 0) \
         or (i.quantity < 0 and i.in_debt = 0)",
    ),
    (
        "every purchase entry records one purchase, which no other entry records",
        "select 'entry ' || e.id || ' (' || e.kind || ') records ' || coalesce(e.purchase_id, 'no purchase') from entry e \
         where (e.kind = 'purchase') <> (e.purchase_id is not null) \
         union all \
         select 'purchase ' || e.purchase_id || ' is recorded by ' || count(*) || ' entries' from entry e \
         where e.purchase_id is not null group by e.purchase_id having count(*) > 1 \
         union all \
         select 'tab item ' || i.id || ' names purchase ' || i.purchase_id || ', which no entry records' from tab_item i \
         left join entry e on e.purchase_id = i.purchase_id and e.purchase_sku = i.sku where e.id is null",
    ),
    (
        "every purchase was paid and granted by its own entry, once",
        "select 'purchase ' || p.id || ' has no matching revenue postings' from purchase p \
         where coalesce((select sum(r.amount) from posting r where r.entry_id = p.entry_id \
                and (r.account_id = 's:revenue:' || p.currency \
                     or substr(r.account_id, 1, length(p.currency) + 11) = 's:revenue:' || p.currency || '#' \
                     or r.account_id like 'c:%:' || p.currency)), 0) <> p.amount \
            or (select count(*) from entry e where e.id = p.entry_id and e.kind = 'purchase') <> 1",
    ),
    (
        "every open tab holds what was carried in plus its items, and the tab receivable owes exactly that",
        "select 'tab ' || t.id || ' holds ' || t.amount_micros from tab t where t.status in ('open', 'settling') \
         and t.amount_micros <> t.carried_in_micros + coalesce((select sum(i.amount_micros) from tab_item i where i.tab_id = t.id), 0) \
         union all \
         select 'tab receivable ' || a.currency || ' holds ' || sum(a.balance) from account a where a.kind = 'tab_receivable' \
         group by a.currency having sum(a.balance) <> -coalesce((select sum(t.amount_micros) from tab t \
         where t.status in ('open', 'settling') and t.currency = a.currency), 0)",
    ),
    (
        "no wallet holds more than its currency's balance_max",
        "select 'wallet ' || a.id || ' holds ' || a.balance || ', over balance_max ' || c.balance_max \
         from account a join currency c on c.code = a.currency where a.kind = 'wallet' and a.balance > c.balance_max",
    ),
    (
        "every payment a provider confirmed is booked by an entry, and every returned one has its refund",
        "select 'payment ' || p.provider || ' ' || p.payment_id || ' is not booked' from provider_payment p \
         where p.entry_id is null and p.outcome = 'returned' \
         union all \
         select 'payment ' || p.provider || ' ' || p.payment_id || ' was returned without a refund' from provider_payment p \
         where p.outcome = 'returned' and not exists (select 1 from refund r where r.payment_id = p.payment_id) \
         union all \
         select 'order ' || o.id || ' was paid without a booked payment' from payment_order o \
         where o.provider_payment is not null and not exists (select 1 from provider_payment p \
         where p.provider = o.provider and p.payment_id = o.provider_payment and p.outcome = 'applied')",
    ),
    (
        "every order's refunded (and over-reversed) total is the sum of its booked refunds and chargebacks",
        "select 'order ' || o.id || ' records ' || o.refunded_micros || ' refunded' from payment_order o \
         where o.refunded_micros + o.over_reversed_micros <> coalesce((select sum(r.amount_micros) from refund r where r.order_id = o.id \
         and r.status = 'succeeded' and r.payment_id is null and r.entry_id is not null), 0)",
    ),
    (
        "every receipt's signed payload names its own entry and player",
        "select 'receipt ' || e.receipt_id || ' is stored with entry ' || e.id || ' of ' || coalesce(e.player_id, 'no player') \
         from entry e where e.receipt_id is not null and (e.player_id is null \
         or {receipt_payload} ->> 'receipt_id' is distinct from e.receipt_id \
         or {receipt_payload} ->> 'entry_id' is distinct from e.id \
         or {receipt_payload} ->> 'player_id' is distinct from e.player_id)",
    ),
];

/// Runs every check.
///
/// # Errors
/// Fails when the database cannot be queried.
pub async fn audit(db: &Db) -> Result<AuditReport, sqlx::Error> {
    let mut checks = Vec::new();
    // Every entry's item changes as rows (player_id, sku, delta), from the JSON in its row.
    let item_changes = match db.backend() {
        Backend::Sqlite => {
            "(select e.player_id, j.value ->> 0 as sku, cast(j.value ->> 1 as bigint) as delta \
             from entry e, json_each(e.items) j where e.items is not null)"
        }
        Backend::Postgres => {
            "(select e.player_id, j.value ->> 0 as sku, cast(j.value ->> 1 as bigint) as delta \
             from entry e, jsonb_array_elements(cast(e.items as jsonb)) as j(value) where e.items is not null)"
        }
    };
    // A receipt's payload, as JSON.
    let receipt_payload = match db.backend() {
        Backend::Sqlite => "e.receipt_payload",
        Backend::Postgres => "cast(e.receipt_payload as jsonb)",
    };
    for (invariant, violations_sql) in CHECKS {
        // Only the fixed expressions above are ever formatted into a check.
        let violations_sql = violations_sql
            .replace("{item_changes}", item_changes)
            .replace("{receipt_payload}", receipt_payload);
        let count_sql = format!("select count(*) from ({violations_sql}) violations");
        let violations: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql)).fetch_one(db.pool()).await?;
        let samples = if violations == 0 {
            Vec::new()
        } else {
            let sample_sql = format!("{violations_sql} limit {SAMPLES_MAX}");
            let rows: Vec<AnyRow> = sqlx::query(sqlx::AssertSqlSafe(sample_sql)).fetch_all(db.pool()).await?;
            rows.iter()
                .map(|row| {
                    row.try_get::<String, _>(0).unwrap_or_else(|error| format!("(unreadable: {error})"))
                })
                .collect()
        };
        checks.push(Check { invariant, violations, samples });
    }
    Ok(AuditReport { checks })
}
