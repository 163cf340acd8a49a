//! Per-token rate limiting of SCIM requests, so that one tenant connection (one token) cannot
//! starve the others: a GCRA limiter (the `governor` crate) keyed by a digest of the bearer
//! token. A request over the limit is answered 429 with `Retry-After`, before anything runs.
//! Lists and searches, whose filters can make the database scan a source's rows, are also
//! bounded in how many of one token's run at once ([`ReadGate`]), so that one token cannot hold
//! the whole connection pool.

use super::ScimError;
use crate::server::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// When idle keys were last dropped.
    swept: Mutex<Instant>,
}

/// Keys (tokens seen lately) kept before the idle ones are dropped.
const MAX_KEYS: usize = 10_000;
/// Idle keys are dropped at most this often, so many keys cannot make every request sweep.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The limiter's key for an `Authorization` header: a digest of the bearer token itself, so
/// `Bearer` and `bearer` (both accepted) share one rate.
fn key(authorization: &[u8]) -> [u8; 16] {
    let text = String::from_utf8_lossy(authorization);
    let token = match text.trim().split_once(char::is_whitespace) {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => text.trim(),
    };
    let digest = Sha256::digest(token.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

impl ScimLimiter {
    pub fn new(rate: Option<ScimRate>) -> Self {
        let quota = |r: ScimRate| {
            Quota::with_period(r.replenish)
                .unwrap_or_else(|| Quota::per_second(r.burst))
                .allow_burst(r.burst)
        };
        Self {
            limiter: rate.map(|r| RateLimiter::keyed(quota(r))),
            swept: Mutex::new(Instant::now()),
        }
    }

    /// Charges `n` more requests (a bulk request's operations beyond the first) to the token;
    /// how many whole seconds to wait when its rate does not allow them.
    pub fn charge(&self, authorization: &[u8], n: u32) -> Option<u64> {
        let limiter = self.limiter.as_ref()?;
        let n = NonZeroU32::new(n)?;
        match limiter.check_key_n(&key(authorization), n) {
            Ok(Ok(())) => None,
            Ok(Err(refused)) => Some(seconds(
                refused.wait_time_from(DefaultClock::default().now()),
            )),
            // More than a whole burst: never allowed at once.
            Err(_) => Some(1),
        }
    }

    /// How many whole seconds a request with this `Authorization` header must wait, if any.
    fn wait(&self, authorization: &[u8]) -> Option<u64> {
        let limiter = self.limiter.as_ref()?;
        if limiter.len() > MAX_KEYS {
            if let Ok(mut swept) = self.swept.try_lock() {
                if swept.elapsed() >= SWEEP_EVERY {
                    limiter.retain_recent();
                    *swept = Instant::now();
                }
            }
        }
        let refused = limiter.check_key(&key(authorization)).err()?;
        Some(seconds(
            refused.wait_time_from(DefaultClock::default().now()),
        ))
    }
}

/// A wait in whole seconds, rounded up, at least 1.
fn seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The 429 answer.
pub fn too_many(seconds: u64) -> Response {
    crate::telemetry::scim_refused("rate");
    let mut response = ScimError::new(
        StatusCode::TOO_MANY_REQUESTS,
        None,
        format!("this token sent more SCIM requests than its rate allows; retry in {seconds} s"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// Middleware: refuses a SCIM request whose token is over its rate with 429 and `Retry-After`.
pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let wait = match request.headers().get(header::AUTHORIZATION) {
        Some(auth) if request.uri().path().starts_with("/scim/") => {
            state.scim_limiter.wait(auth.as_bytes())
        }
        _ => None,
    };
    match wait {
        Some(seconds) => too_many(seconds),
        None => next.run(request).await,
    }
}

/// Lists and searches each token may run at once, by default.
pub const DEFAULT_READS_PER_TOKEN: usize = 4;

/// Bounds how many lists and searches of one token run at once.
pub struct ReadGate {
    per_token: usize,
    running: Mutex<HashMap<uuid::Uuid, usize>>,
}

/// One running list or search; it leaves the gate when dropped (answered or abandoned).
pub struct ReadPermit {
    gate: Arc<ReadGate>,
    token: uuid::Uuid,
}

impl ReadGate {
    pub fn new(per_token: usize) -> Arc<Self> {
        Arc::new(Self {
            per_token: per_token.max(1),
            running: Mutex::new(HashMap::new()),
        })
    }

    /// Lets one more list or search of `token` run, or refuses it with 429 when the token
    /// already runs as many as it may.
    pub fn enter(self: &Arc<Self>, token: uuid::Uuid) -> Result<ReadPermit, ScimError> {
        let mut running = self
            .running
            .lock()
            .map_err(|_| ScimError::new(StatusCode::SERVICE_UNAVAILABLE, None, "retry later"))?;
        let count = running.entry(token).or_default();
        if *count >= self.per_token {
            crate::telemetry::scim_refused("concurrent_reads");
            return Err(ScimError::new(
                StatusCode::TOO_MANY_REQUESTS,
                None,
                format!(
                    "this token already runs {} SCIM lists or searches, as many as one token may \
                     run at once; retry when one has been answered",
                    self.per_token
                ),
            ));
        }
        *count += 1;
        Ok(ReadPermit {
            gate: self.clone(),
            token,
        })
    }
}

impl Drop for ReadPermit {
    fn drop(&mut self) {
        if let Ok(mut running) = self.gate.running.lock() {
            if let Some(count) = running.get_mut(&self.token) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    running.remove(&self.token);
                }
            }
        }
    }
}
