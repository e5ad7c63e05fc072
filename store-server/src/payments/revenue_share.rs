//! Revenue share: an item's creators each earn an exact share of its real-money net revenue.
//!
//! Rounding rule (largest remainder): the creators together get `floor(net × Σshares / 10,000)`
//! micros; each first gets `floor(net × share / 10,000)`, and the micros left over go one each to
//! the creators with the largest fractional remainders (ties: creator id order). The studio keeps
//! the rest of net. So the creators' parts plus the studio's always equal net exactly, and no
//! creator's part is a micro or more from its exact value.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use axum::http::StatusCode;
use store_api::catalog::{CREATOR_SHARES_BPS_MAX, CreatorId, CreatorShare, Item};
use store_api::orders::{Creator, Payout};
use store_api::{ErrorCode, Money, MoneyCurrency};
use uuid::Uuid;

use crate::db::{from_micros, now_micros};
use crate::error::{ApiError, ApiResult};
use crate::ledger::{AccountId, NewEntry, Posting, SystemAccount, append_entry};

/// Splits `net_micros` among the shares: each creator's part, in the order given.
#[must_use]
pub fn split(net_micros: i64, shares: &[CreatorShare]) -> Vec<i64> {
    if net_micros <= 0 || shares.is_empty() {
        return vec![0; shares.len()];
    }
    let net = i128::from(net_micros);
    let scale = i128::from(CREATOR_SHARES_BPS_MAX);
    let total_bps: i128 = shares.iter().map(|share| i128::from(share.share_bps)).sum();
    let creators_total = net * total_bps / scale;
    let exact: Vec<(i128, i128)> = shares
        .iter()
        .map(|share| (net * i128::from(share.share_bps) / scale, net * i128::from(share.share_bps) % scale))
        .collect();
    let mut parts: Vec<i128> = exact.iter().map(|(floor, _)| *floor).collect();
    let mut leftover = creators_total - parts.iter().sum::<i128>();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by_key(|&index| (Reverse(exact[index].1), shares[index].creator.clone()));
    for index in order {
        if leftover == 0 {
            break;
        }
        parts[index] += 1;
        leftover -= 1;
    }
    parts.into_iter().map(|part| i64::try_from(part).unwrap_or(0)).collect()
}

/// The postings that move the creators' parts of a sale's net revenue from revenue to their
/// payable accounts.
#[must_use]
pub fn share_postings(item: &Item, currency: &str, net_micros: i64) -> Vec<Posting> {
    let mut postings = Vec::new();
    for (share, part) in item.creators.iter().zip(split(net_micros, &item.creators)) {
        if part > 0 {
            postings.push(Posting {
                account: AccountId::CreatorPayable(share.creator.as_str().to_owned(), currency.to_owned()),
                amount: part,
            });
            postings.push(Posting {
                account: AccountId::System(SystemAccount::Revenue, currency.to_owned()),
                amount: -part,
            });
        }
    }
    postings
}

/// Every creator with a payable account, with balances, earnings and sales.
///
/// # Errors
/// Fails when the database does.
pub async fn list_creators(conn: &mut sqlx::AnyConnection, only: Option<&str>) -> ApiResult<Vec<Creator>> {
    let rows: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
        "select a.id, a.currency, a.balance, \
         coalesce((select cast(sum(p.amount) as bigint) from posting p where p.account_id = a.id \
         and p.account_id not like 'w:%' and p.amount > 0), 0), \
         (select count(*) from posting p where p.account_id = a.id and p.account_id not like 'w:%' and p.amount > 0) \
         from account a where a.kind = 'creator_payable' order by a.id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut creators: BTreeMap<String, Creator> = BTreeMap::new();
    for (id, currency, balance, earned, sales) in rows {
        let creator = id
            .strip_prefix("c:")
            .and_then(|rest| rest.rsplit_once(':'))
            .map(|(creator, _)| creator.to_owned())
            .unwrap_or_default();
        if only.is_some_and(|only| only != creator) {
            continue;
        }
        let currency = MoneyCurrency::parse(&currency).map_err(|error| anyhow::anyhow!(error))?;
        let entry = match creators.entry(creator.clone()) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => entry.insert(Creator {
                id: CreatorId::parse(&creator).map_err(|error| anyhow::anyhow!(error))?,
                balances: Vec::new(),
                earned: Vec::new(),
                sales: 0,
            }),
        };
        entry.balances.push(Money::from_micros(currency, balance));
        entry.earned.push(Money::from_micros(currency, earned));
        entry.sales += sales;
    }
    Ok(creators.into_values().collect())
}

/// Pays out every balance of a creator at or above the threshold: one entry and one record per
/// currency.
///
/// # Errors
/// `not_found` for a creator with no sales; `below_payout_threshold` when no balance is due.
pub async fn pay_out(
    conn: &mut sqlx::AnyConnection,
    creator: &str,
    multiple: u32,
    actor: &str,
) -> ApiResult<Vec<Payout>> {
    // Lock the creator's payable accounts before reading them, so two payouts at once (two
    // instances, or no group commit) pay a balance once: the second reads what the first left.
    let prefix = format!("c:{creator}:");
    sqlx::query(
        "update account set balance = balance where kind = 'creator_payable' and substr(id, 1, length($1)) = $1",
    )
    .bind(&prefix)
    .execute(&mut *conn)
    .await?;
    let creators = list_creators(conn, Some(creator)).await?;
    let found = creators.into_iter().next().ok_or_else(|| ApiError::not_found("creator", creator))?;
    let mut payouts = Vec::new();
    for balance in found.balances {
        let threshold = balance.currency.minimum_charge().amount * rust_decimal::Decimal::from(multiple);
        if balance.amount < threshold || balance.amount.is_zero() {
            continue;
        }
        let micros = balance.to_micros().map_err(|error| anyhow::anyhow!(error))?;
        let code = balance.currency.code().to_owned();
        let entry = append_entry(
            conn,
            &NewEntry {
                kind: store_api::ledger::EntryKind::Payout,
                player_id: None,
                actor: actor.to_owned(),
                reason: Some(format!("payout to creator {creator}")),
                postings: vec![
                    Posting {
                        account: AccountId::CreatorPayable(creator.to_owned(), code.clone()),
                        amount: -micros,
                    },
                    Posting {
                        account: AccountId::System(SystemAccount::Payouts, code.clone()),
                        amount: micros,
                    },
                ],
                items: Vec::new(),
                clawback: false,
            },
            &BTreeMap::new(),
        )
        .await?;
        let id = Uuid::now_v7();
        let now = now_micros();
        sqlx::query("insert into creator_payout (id, creator, currency, amount_micros, entry_id, actor, created_at) values ($1, $2, $3, $4, $5, $6, $7)")
            .bind(id.to_string())
            .bind(creator)
            .bind(&code)
            .bind(micros)
            .bind(entry.id.to_string())
            .bind(actor)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        payouts.push(Payout { id, creator: found.id.clone(), amount: balance, created_at: from_micros(now) });
    }
    if payouts.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::BelowPayoutThreshold,
            format!(
                "no balance of `{creator}` has reached {multiple} times its currency's minimum card charge"
            ),
        ));
    }
    Ok(payouts)
}

/// A creator's payouts, newest first.
///
/// # Errors
/// Fails when the database does.
pub async fn list_payouts(conn: &mut sqlx::AnyConnection, creator: &str) -> ApiResult<Vec<Payout>> {
    let rows: Vec<(String, String, i64, i64)> =
        sqlx::query_as("select id, currency, amount_micros, created_at from creator_payout where creator = $1 order by id desc limit 200")
            .bind(creator)
            .fetch_all(&mut *conn)
            .await?;
    rows.into_iter()
        .map(|(id, currency, amount, created_at)| {
            Ok(Payout {
                id: Uuid::parse_str(&id).map_err(|error| anyhow::anyhow!(error))?,
                creator: CreatorId::parse(creator).map_err(|error| anyhow::anyhow!(error))?,
                amount: Money::from_micros(
                    MoneyCurrency::parse(&currency).map_err(|error| anyhow::anyhow!(error))?,
                    amount,
                ),
                created_at: from_micros(created_at),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use store_api::catalog::CreatorId;

    use super::*;

    fn shares(bps: &[i64]) -> Vec<CreatorShare> {
        bps.iter()
            .enumerate()
            .map(|(index, bps)| CreatorShare {
                creator: CreatorId::parse(&format!("c{index}")).unwrap(),
                share_bps: *bps,
            })
            .collect()
    }

    #[test]
    fn a_three_way_split_of_a_cent_goes_by_largest_remainder() {
        // 10,000 micros at 1/3 each (3,333 bps): exact 3,333 each, creators' total 9,999.
        assert_eq!(split(10_000, &shares(&[3_333, 3_333, 3_333])), [3_333, 3_333, 3_333]);
        // 100 micros at 50% / 25% / 25%: 50 / 25 / 25 exactly.
        assert_eq!(split(100, &shares(&[5_000, 2_500, 2_500])), [50, 25, 25]);
        // 7 micros at 50% / 50%: creators get 7 together; one remainder micro goes to c0.
        assert_eq!(split(7, &shares(&[5_000, 5_000])), [4, 3]);
    }

    proptest! {
        #[test]
        fn shares_plus_the_studio_equal_net_and_each_share_is_within_a_micro(
            net in 0_i64..10_000_000_000,
            bps in proptest::collection::vec(1_i64..=2_500, 0..=4),
        ) {
            let shares = shares(&bps);
            let parts = split(net, &shares);
            let creators: i64 = parts.iter().sum();
            let total_bps: i64 = bps.iter().sum();
            prop_assert!(creators <= net);
            let studio = net - creators;
            prop_assert_eq!(creators + studio, net);
            prop_assert_eq!(i128::from(creators), i128::from(net) * i128::from(total_bps) / 10_000);
            for (part, share) in parts.iter().zip(&bps) {
                let exact_times_scale = i128::from(net) * i128::from(*share);
                let diff = (i128::from(*part) * 10_000 - exact_times_scale).abs();
                prop_assert!(diff < 10_000, "part {} vs exact {}/10000", part, exact_times_scale);
            }
        }
    }
}
