//! Reward rules: operator-defined earning with server-side caps.

use axum::http::StatusCode;
use sqlx::AnyConnection;
use store_api::ErrorCode;
use store_api::currency::CurrencyCode;
use store_api::ledger::{RewardRule, RuleCode};

use crate::db::now_micros;
use crate::error::{ApiError, ApiResult};
use crate::extract::etag_of;

type RuleRow = crate::ledger::batch::RewardRuleRow;

/// A stored rule's row as a rule.
///
/// # Errors
/// When the stored code or currency does not parse.
pub(crate) fn rule_from_row(
    (code, currency, amount, cap_per_minute, cap_per_hour, cap_per_day): RuleRow,
) -> ApiResult<RewardRule> {
    let corrupt = |error: String| ApiError::Internal(anyhow::anyhow!("stored reward rule: {error}"));
    Ok(RewardRule {
        code: RuleCode::parse(&code).map_err(corrupt)?,
        currency: CurrencyCode::parse(&currency).map_err(corrupt)?,
        amount,
        cap_per_minute,
        cap_per_hour,
        cap_per_day,
    })
}

const RULE_COLUMNS: &str = "code, currency, amount, cap_per_minute, cap_per_hour, cap_per_day";

/// One rule.
///
/// # Errors
/// Fails when the database does.
pub async fn find_rule(conn: &mut AnyConnection, code: &RuleCode) -> ApiResult<Option<RewardRule>> {
    let row: Option<RuleRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {RULE_COLUMNS} from reward_rule where code = $1"
    )))
    .bind(code.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(rule_from_row).transpose()
}

/// Every rule, sorted by code.
///
/// # Errors
/// Fails when the database does.
pub async fn list_rules(conn: &mut AnyConnection) -> ApiResult<Vec<RewardRule>> {
    let rows: Vec<RuleRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("select {RULE_COLUMNS} from reward_rule order by code")))
            .fetch_all(&mut *conn)
            .await?;
    rows.into_iter().map(rule_from_row).collect()
}

/// The `ETag` of a rule.
///
/// # Errors
/// Fails only if serialization does.
pub fn rule_etag(rule: &RewardRule) -> ApiResult<String> {
    Ok(etag_of(serde_json::to_string(rule).map_err(anyhow::Error::from)?.as_bytes()))
}

async fn check_currency(conn: &mut AnyConnection, rule: &RewardRule) -> ApiResult<()> {
    let known: Option<i64> = sqlx::query_scalar("select 1 from currency where code = $1")
        .bind(rule.currency.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    if known.is_none() {
        return Err(ApiError::validation("currency", format!("currency `{}` does not exist", rule.currency)));
    }
    Ok(())
}

/// Creates a rule.
///
/// # Errors
/// `already_exists` for a taken code, `validation_failed` for an unknown currency.
pub async fn create_rule(conn: &mut AnyConnection, rule: &RewardRule) -> ApiResult<()> {
    check_currency(conn, rule).await?;
    let inserted = sqlx::query(
        "insert into reward_rule (code, currency, amount, cap_per_minute, cap_per_hour, cap_per_day, created_at, updated_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $7) on conflict (code) do nothing",
    )
    .bind(rule.code.as_str())
    .bind(rule.currency.as_str())
    .bind(rule.amount)
    .bind(rule.cap_per_minute)
    .bind(rule.cap_per_hour)
    .bind(rule.cap_per_day)
    .bind(now_micros())
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AlreadyExists,
            format!("reward rule `{}` already exists", rule.code),
        )
        .with_detail("field", "code"));
    }
    Ok(())
}

/// Replaces a rule's fields.
///
/// # Errors
/// `validation_failed` for an unknown currency.
pub async fn update_rule(conn: &mut AnyConnection, rule: &RewardRule) -> ApiResult<()> {
    check_currency(conn, rule).await?;
    sqlx::query(
        "update reward_rule set currency = $2, amount = $3, cap_per_minute = $4, cap_per_hour = $5, cap_per_day = $6, \
         updated_at = $7 where code = $1",
    )
    .bind(rule.code.as_str())
    .bind(rule.currency.as_str())
    .bind(rule.amount)
    .bind(rule.cap_per_minute)
    .bind(rule.cap_per_hour)
    .bind(rule.cap_per_day)
    .bind(now_micros())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
