//! Request rate limits per player and per operator key: a token bucket each (a sustained rate
//! and a burst), kept in this instance's memory. A request over the limit is answered `429
//! rate_limited` with `Retry-After` (whole seconds) and does nothing. With several instances
//! each keeps its own buckets, so the effective limit is the sum over the instances a client
//! reaches.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use store_api::ErrorCode;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// One request's worth of a bucket, in micro-tokens (integers keep the arithmetic exact).
const TOKEN: u64 = 1_000_000;
/// Buckets kept before idle ones (full again) are dropped.
const BUCKETS_SWEEP_AT: usize = 100_000;

/// A limit: `per_second` requests sustained, `burst` at once; `per_second = 0` means none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Requests per second, sustained.
    pub per_second: u32,
    /// Requests at once after a quiet spell.
    pub burst: u32,
}

impl Limit {
    /// No limit.
    pub const OFF: Self = Self { per_second: 0, burst: 0 };

    /// Parses `RATE/BURST` (`50/100`), or `off`.
    ///
    /// # Errors
    /// Says what the text should look like.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim() == "off" {
            return Ok(Self::OFF);
        }
        let bad = || format!("a rate limit looks like 50/100 (per second / burst) or off, not `{text}`");
        let (rate, burst) = text.split_once('/').ok_or_else(bad)?;
        let per_second: u32 = rate.trim().parse().map_err(|_| bad())?;
        let burst: u32 = burst.trim().parse().map_err(|_| bad())?;
        if per_second == 0 || burst == 0 {
            return Err(bad());
        }
        Ok(Self { per_second, burst })
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u64,
    updated: Instant,
}

/// The buckets of one kind of caller.
#[derive(Debug)]
pub struct RateLimiter {
    limit: Limit,
    what: &'static str,
    buckets: Mutex<HashMap<Uuid, Bucket>>,
}

impl RateLimiter {
    /// Buckets for callers of one kind (`what` names them in the error: "player", "API key").
    #[must_use]
    pub fn new(limit: Limit, what: &'static str) -> Self {
        Self { limit, what, buckets: Mutex::default() }
    }

    /// Takes one request from `caller`'s bucket at `now`.
    ///
    /// # Errors
    /// 429 `rate_limited` with `details.retry_after_s` when the bucket is empty.
    pub fn check_at(&self, caller: Uuid, now: Instant) -> ApiResult<()> {
        let Limit { per_second, burst } = self.limit;
        if per_second == 0 {
            return Ok(());
        }
        let (rate, capacity) = (u64::from(per_second), u64::from(burst) * TOKEN);
        let mut buckets = self.buckets.lock().map_err(|_| anyhow::anyhow!("rate limiter poisoned"))?;
        if buckets.len() >= BUCKETS_SWEEP_AT {
            // A bucket idle long enough to be full again is the same as no bucket.
            let refill = Duration::from_micros(capacity / rate.max(1));
            buckets.retain(|_, bucket| now.saturating_duration_since(bucket.updated) < refill);
        }
        let bucket = buckets.entry(caller).or_insert(Bucket { tokens: capacity, updated: now });
        let elapsed =
            u64::try_from(now.saturating_duration_since(bucket.updated).as_micros()).unwrap_or(u64::MAX);
        // `rate` tokens per second is `rate` micro-tokens per microsecond.
        bucket.tokens = bucket.tokens.saturating_add(elapsed.saturating_mul(rate)).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= TOKEN {
            bucket.tokens -= TOKEN;
            return Ok(());
        }
        let wait_us = (TOKEN - bucket.tokens).div_ceil(rate);
        let retry_after_s = wait_us.div_ceil(1_000_000).max(1);
        Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            format!(
                "this {} sent more than {per_second} requests a second (bursts of {burst}); retry in {retry_after_s} s",
                self.what
            ),
        )
        .with_detail("retry_after_s", retry_after_s))
    }

    /// Takes one request from `caller`'s bucket now.
    ///
    /// # Errors
    /// As [`RateLimiter::check_at`].
    pub fn check(&self, caller: Uuid) -> ApiResult<()> {
        self.check_at(caller, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds_and_the_wait_is_told() {
        let limiter = RateLimiter::new(Limit { per_second: 2, burst: 3 }, "player");
        let (caller, other, start) = (Uuid::now_v7(), Uuid::now_v7(), Instant::now());
        for _ in 0..3 {
            limiter.check_at(caller, start).expect("within the burst");
        }
        let refused = limiter.check_at(caller, start).expect_err("the burst is spent");
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(format!("{refused}").starts_with("rate_limited"), "{refused}");
        // Another caller has their own bucket.
        limiter.check_at(other, start).expect("another caller");
        // Half a second later one token (2 per second) is back, and only one.
        let later = start + Duration::from_millis(500);
        limiter.check_at(caller, later).expect("refilled");
        assert!(limiter.check_at(caller, later).is_err());
        let ApiError::Client { details, .. } = limiter.check_at(caller, later).expect_err("empty") else {
            panic!("a client error")
        };
        assert_eq!(details["retry_after_s"], 1);
    }

    #[test]
    fn off_never_limits_and_limits_parse() {
        let limiter = RateLimiter::new(Limit::OFF, "player");
        let caller = Uuid::now_v7();
        for _ in 0..10_000 {
            limiter.check(caller).expect("no limit");
        }
        assert_eq!(Limit::parse("50/100"), Ok(Limit { per_second: 50, burst: 100 }));
        assert_eq!(Limit::parse("off"), Ok(Limit::OFF));
        for bad in ["50", "0/10", "10/0", "a/b", ""] {
            assert!(Limit::parse(bad).is_err(), "{bad}");
        }
    }
}
