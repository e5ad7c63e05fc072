//! Currencies: stored rows, lookups, creation and changes (a `balance_max` never below a balance
//! that exists).

use super::*;

pub(super) type CurrencyRow = (String, String, String, i64, i64);

pub(super) fn currency_from_row(
    (code, name, kind, initial_grant, balance_max): CurrencyRow,
) -> ApiResult<Currency> {
    let corrupt = |error: String| ApiError::Internal(anyhow::anyhow!("stored currency `{code}`: {error}"));
    Ok(Currency {
        code: CurrencyCode::parse(&code).map_err(corrupt)?,
        name: Name::parse(&name).map_err(corrupt)?,
        kind: CurrencyKind::parse(&kind).map_err(corrupt)?,
        initial_grant,
        balance_max,
    })
}

/// Every currency, sorted by code.
///
/// # Errors
/// Fails when the database does.
pub async fn list_currencies(conn: &mut AnyConnection) -> ApiResult<Vec<Currency>> {
    let rows: Vec<CurrencyRow> =
        sqlx::query_as("select code, name, kind, initial_grant, balance_max from currency order by code")
            .fetch_all(&mut *conn)
            .await?;
    rows.into_iter().map(currency_from_row).collect()
}

/// One currency.
///
/// # Errors
/// Fails when the database does.
pub async fn find_currency(conn: &mut AnyConnection, code: &CurrencyCode) -> ApiResult<Option<Currency>> {
    let row: Option<CurrencyRow> =
        sqlx::query_as("select code, name, kind, initial_grant, balance_max from currency where code = $1")
            .bind(code.as_str())
            .fetch_optional(&mut *conn)
            .await?;
    row.map(currency_from_row).transpose()
}

/// The `ETag` of a currency.
///
/// # Errors
/// Fails only if serialization does.
pub fn currency_etag(currency: &Currency) -> ApiResult<String> {
    Ok(etag_of(canonical(currency)?.as_bytes()))
}

/// Creates a currency.
///
/// # Errors
/// `already_exists` for a taken code, `limit_exceeded` past 64 currencies.
pub async fn create_currency(conn: &mut AnyConnection, currency: &Currency) -> ApiResult<()> {
    let count: i64 = sqlx::query_scalar("select count(*) from currency").fetch_one(&mut *conn).await?;
    if usize::try_from(count).unwrap_or(usize::MAX) >= CURRENCIES_MAX {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::LimitExceeded,
            format!("an installation has at most {CURRENCIES_MAX} currencies"),
        ));
    }
    let now = now_micros();
    let inserted = sqlx::query(
        "insert into currency (code, name, kind, initial_grant, balance_max, created_at, updated_at) \
         values ($1, $2, $3, $4, $5, $6, $6) on conflict (code) do nothing",
    )
    .bind(currency.code.as_str())
    .bind(currency.name.as_str())
    .bind(currency.kind.as_str())
    .bind(currency.initial_grant)
    .bind(currency.balance_max)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AlreadyExists,
            format!("currency `{}` already exists", currency.code),
        )
        .with_detail("field", "code"));
    }
    touch_live_catalog(conn).await?;
    Ok(())
}

/// Replaces a currency's fields.
///
/// # Errors
/// Fails when the database does.
pub async fn update_currency(conn: &mut AnyConnection, currency: &Currency) -> ApiResult<()> {
    // Guarded in the statement: a maximum below a balance some wallet holds would make that
    // wallet invalid (and the audit would report it).
    let updated = sqlx::query(
        "update currency set name = $2, kind = $3, initial_grant = $4, balance_max = $5, updated_at = $6 \
         where code = $1 and $5 >= coalesce((select max(balance) from account where kind = 'wallet' and currency = $1), 0)",
    )
    .bind(currency.code.as_str())
    .bind(currency.name.as_str())
    .bind(currency.kind.as_str())
    .bind(currency.initial_grant)
    .bind(currency.balance_max)
    .bind(now_micros())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated != 1 {
        let held: Option<i64> =
            sqlx::query_scalar("select max(balance) from account where kind = 'wallet' and currency = $1")
                .bind(currency.code.as_str())
                .fetch_one(&mut *conn)
                .await?;
        return Err(ApiError::validation(
            "balance_max",
            format!(
                "a wallet holds {} {}; balance_max cannot be lower than a balance that exists",
                held.unwrap_or(0),
                currency.code
            ),
        ));
    }
    touch_live_catalog(conn).await?;
    Ok(())
}
