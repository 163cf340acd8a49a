//! Per-token rate limiting of SCIM requests, so that one tenant connection (one token) cannot
//! starve the others: a GCRA limiter (the `governor` crate) keyed by a digest of the bearer
//! token. A request over the limit is answered 429 with `Retry-After`, before anything runs.

use super::ScimError;
use crate::app::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use std::num::NonZeroU32;
use std::time::Duration;

/// The rate each token may send SCIM requests at: bursts of `burst` requests, one more allowed
/// every `replenish`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScimRate {
    pub burst: NonZeroU32,
    pub replenish: Duration,
}

impl ScimRate {
    /// `n` requests a second, in bursts of as many; none for 0 (no limit).
    pub fn per_second(n: u32) -> Option<Self> {
        NonZeroU32::new(n).map(|burst| Self {
            burst,
            replenish: Duration::from_secs(1) / burst.get(),
        })
    }
}

/// The SCIM limiter: none when limiting is off.
pub struct ScimLimiter {
    limiter: Option<DefaultKeyedRateLimiter<[u8; 16]>>,
}

/// Keys (tokens seen lately) kept before the idle ones are dropped.
const MAX_KEYS: usize = 10_000;

impl ScimLimiter {
    pub fn new(rate: Option<ScimRate>) -> Self {
        let quota = |r: ScimRate| {
            Quota::with_period(r.replenish)
                .unwrap_or_else(|| Quota::per_second(r.burst))
                .allow_burst(r.burst)
        };
        Self {
            limiter: rate.map(|r| RateLimiter::keyed(quota(r))),
        }
    }

    /// How many whole seconds a request with this `Authorization` header must wait, if any.
    fn wait(&self, authorization: &[u8]) -> Option<u64> {
        let limiter = self.limiter.as_ref()?;
        if limiter.len() > MAX_KEYS {
            limiter.retain_recent();
        }
        let digest = Sha256::digest(authorization);
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        let refused = limiter.check_key(&key).err()?;
        let wait = refused.wait_time_from(DefaultClock::default().now());
        Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
    }
}

/// Middleware: refuses a SCIM request whose token is over its rate with 429 and `Retry-After`.
pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let wait = match request.headers().get(header::AUTHORIZATION) {
        Some(auth) if request.uri().path().starts_with("/scim/") => {
            state.scim_limiter.wait(auth.as_bytes())
        }
        _ => None,
    };
    let Some(seconds) = wait else {
        return next.run(request).await;
    };
    let mut response = ScimError::new(
        StatusCode::TOO_MANY_REQUESTS,
        None,
        format!("this token sent more SCIM requests than its rate allows; retry in {seconds} s"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}
