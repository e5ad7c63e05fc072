//! Extractors that turn raw requests into domain types once, at the edge, and answer every
//! rejection with a typed error: JSON bodies, query strings, pagination and `If-Match`.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use store_api::ErrorCode;
use store_api::limits::{PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX};

use crate::error::ApiError;

/// A JSON body parsed strictly: `application/json` only, unknown fields refused, and every
/// failure naming the field path (`items[0].sku`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_json_body(request, state).await?;
        parse_json(&bytes).map(Self)
    }
}

/// Reads a request body that must be JSON: `application/json`, or no body and no content type
/// at all (read as `{}` by those that allow it).
///
/// # Errors
/// `unsupported_media_type`, `payload_too_large`.
pub async fn read_json_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
    let is_json = content_type
        .as_ref()
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            payload_too_large()
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, rejection.body_text())
        }
    })?;
    if is_json || (content_type.is_none() && bytes.is_empty()) {
        Ok(bytes)
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "the body must be JSON, sent with `Content-Type: application/json`",
        ))
    }
}

/// 413 `payload_too_large`.
#[must_use]
pub fn payload_too_large() -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge, "the request body is too large")
}

/// Parses JSON strictly, refusing unknown fields and naming the path of the first fault.
///
/// # Errors
/// `malformed_json` for bad syntax, `invalid_request` for wrong types, missing or unknown fields.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if has_escaped_nul(bytes) {
        return Err(ApiError::invalid("body", "strings may not contain the NUL character (\\u0000)"));
    }
    let mut unknown = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let mut note_unknown = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let ignoring = serde_ignored::Deserializer::new(&mut deserializer, &mut note_unknown);
    let value: T = serde_path_to_error::deserialize(ignoring).map_err(|error| {
        let field = error.path().to_string();
        let inner = error.into_inner();
        // serde_json reports some type mismatches (a number where an enum's string belongs) as
        // syntax: the body is malformed only when it is not JSON at all.
        let not_json = || serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err();
        if (inner.is_syntax() || inner.is_eof()) && not_json() {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::MalformedJson,
                format!("the body is not valid JSON: {inner}"),
            )
        } else {
            ApiError::invalid(&field, format!("{field}: {inner}"))
        }
    })?;
    deserializer.end().map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedJson,
            format!("the body is not valid JSON: {error}"),
        )
    })?;
    if let Some(field) = unknown.first() {
        return Err(ApiError::invalid(field, format!("unknown field `{field}`")));
    }
    Ok(value)
}

/// A query string parsed into `T`, answering failures with `invalid_request`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded_query(query).map(Self)
    }
}

fn serde_urlencoded_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(&format!("/?{query}").parse().map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, "the query string is malformed")
    })?)
    .map(|query| query.0)
    .map_err(|rejection| {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, rejection.body_text())
    })
}

/// `?limit=&cursor=`, the raw pagination parameters of every list.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 200; 50 when absent.
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Checked pagination: a bounded page size and an opaque cursor.
#[derive(Debug, Clone)]
pub struct Page {
    /// How many rows to return.
    pub limit: u32,
    /// Where the previous page ended: the list's own key of its last row, read back from the
    /// opaque cursor [`Page::finish`] gave out.
    pub cursor: Option<String>,
}

/// An opaque cursor for a list's key: the key in base64url and a check of it, so a cursor this
/// server did not give out (mistyped, cut short, made up) is refused instead of read as a key.
fn seal_cursor(key: &str) -> String {
    use base64::Engine as _;
    format!("{}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key), cursor_check(key))
}

fn cursor_check(key: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("coinslot-cursor\n{key}"));
    hex::encode(&digest[..6])
}

/// The key inside a cursor [`seal_cursor`] made, if it is one.
fn open_cursor(cursor: &str) -> Option<String> {
    use base64::Engine as _;
    let (encoded, check) = cursor.split_once('.')?;
    let key =
        String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).ok()?).ok()?;
    (cursor_check(&key) == check).then_some(key)
}

/// `400 invalid_cursor`: the cursor is not a `next_cursor` this list gave out.
#[must_use]
pub fn invalid_cursor() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidCursor,
        "cursor must be the next_cursor of a previous page of this list",
    )
    .with_detail("field", "cursor")
}

impl PageQuery {
    /// Checks the page size.
    ///
    /// # Errors
    /// `invalid_request` naming `limit` when it is outside 1 to 200.
    pub fn parse(self) -> Result<Page, ApiError> {
        let limit = self.limit.unwrap_or(PAGE_SIZE_DEFAULT);
        if !(1..=PAGE_SIZE_MAX).contains(&limit) {
            return Err(ApiError::invalid("limit", format!("limit must be from 1 to {PAGE_SIZE_MAX}")));
        }
        let cursor = match self.cursor {
            None => None,
            Some(cursor) if cursor.len() <= 512 => Some(open_cursor(&cursor).ok_or_else(invalid_cursor)?),
            Some(_) => return Err(invalid_cursor()),
        };
        Ok(Page { limit, cursor })
    }
}

impl Page {
    /// Turns a fetched window of `limit + 1` rows into a page and its next cursor.
    pub fn finish<T>(&self, mut rows: Vec<T>, cursor_of: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        if rows.len() > limit {
            rows.truncate(limit);
            let next = rows.last().map(|row| seal_cursor(&cursor_of(row)));
            (rows, next)
        } else {
            (rows, None)
        }
    }

    /// The number of rows to fetch: one more than the page, to know whether another follows.
    #[must_use]
    pub fn fetch_count(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

/// The optional `If-Match` header of an edit: the `ETag` the operator last read.
#[derive(Debug, Clone, Default)]
pub struct IfMatch(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get(header::IF_MATCH) {
            None => Ok(Self(None)),
            Some(value) => value
                .to_str()
                .map(|text| Self(Some(text.trim().to_owned())))
                .map_err(|_| ApiError::invalid("If-Match", "If-Match must be an ETag")),
        }
    }
}

impl IfMatch {
    /// Checks the header against the object's current `ETag` (`None` when it does not exist).
    ///
    /// # Errors
    /// 412 `precondition_failed` when the header names another version.
    pub fn check(&self, current: Option<&str>) -> Result<(), ApiError> {
        let Some(expected) = &self.0 else { return Ok(()) };
        let matches = match current {
            Some(current) => expected == "*" || expected.split(',').any(|tag| tag.trim() == current),
            None => false,
        };
        if matches {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                ErrorCode::PreconditionFailed,
                "the object changed since you read it; read it again and retry",
            )
            .with_detail("current_etag", current.map_or(serde_json::Value::Null, Into::into)))
        }
    }
}

/// A strong `ETag` for a canonical JSON body: the first 128 bits of its SHA-256, quoted.
#[must_use]
pub fn etag_of(body: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(body);
    format!("\"{}\"", hex::encode(&digest[..16]))
}

/// Whether a JSON text holds the escape `\u0000` (a NUL character, which no text column can
/// store): a `\u0000` preceded by an even number of backslashes (an odd run ending in this one).
#[must_use]
pub fn has_escaped_nul(bytes: &[u8]) -> bool {
    bytes.windows(6).enumerate().any(|(at, window)| {
        window.eq_ignore_ascii_case(b"\\u0000")
            && bytes[..at].iter().rev().take_while(|byte| **byte == b'\\').count() % 2 == 0
    })
}

#[cfg(test)]
mod nul_tests {
    use super::has_escaped_nul;

    #[test]
    fn an_escaped_nul_is_found_and_an_escaped_backslash_is_not_one() {
        assert!(has_escaped_nul(br#"{"name": "a\u0000b"}"#));
        assert!(has_escaped_nul(br#"{"name": "\u0000"}"#));
        assert!(has_escaped_nul(br#"{"name": "\\\U0000"}"#));
        assert!(!has_escaped_nul(br#"{"name": "\\u0000"}"#), "an escaped backslash, then text");
        assert!(!has_escaped_nul(br#"{"name": "u0000"}"#));
    }
}
