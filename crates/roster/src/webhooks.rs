//! Webhook deliveries. Every roster process runs a deliverer; each claims one due subscription at
//! a time with a lease in the database, reads the changes after its cursor, and POSTs them in
//! order, up to the subscription's `batch_size` per request (`{"changes": [...]}`; a `scim`
//! subscription gets one RFC 8935 security event per request). The cursor moves after each
//! acknowledged delivery (2xx), so a change is delivered at least once and receivers de-duplicate
//! by each change's `cursor`. A failed delivery is tried again at once, then after 10, 100 and
//! 500 ms; when those fail too, the next attempt waits with exponential backoff and jitter, and
//! the subscription pauses after `pause_after` such failures in a row. No database transaction
//! is open while a request is on the wire.
//!
//! Each body is signed: `Roster-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
//! with the subscription's secret. `scim` deliveries follow RFC 8935: the body is the security
//! event as a JWT (HS256, the same secret), `Content-Type: application/secevent+jwt`.
//!
//! Unless `allow_private_networks` is set, deliveries go only to public addresses (see
//! [`crate::egress`]), checked on the addresses roster connects to. Of a refusal's body roster
//! reads at most [`ERROR_BODY_CAP`] bytes and keeps a short excerpt without control characters.

use crate::domain::feed::{Cursor, Format, StoredChange};
use crate::domain::subscription::Subscription;
use crate::egress;
use crate::render::render;
use crate::store::{Store, StoreError};
use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

/// How deliveries are paced.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// How often an idle deliverer looks for due subscriptions.
    pub poll: Duration,
    /// How long a claim lasts.
    pub lease: Duration,
    /// The wait after the first failure; it doubles with each failure in a row.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Failures in a row after which a subscription pauses.
    pub pause_after: i32,
    /// Longest a receiver may take to answer.
    pub timeout: Duration,
    /// Changes read from the log at a time (delivered in batches of each subscription's
    /// `batch_size`).
    pub batch: u32,
    /// Subscriptions served at once by this process (one slow receiver holds up only its own).
    pub workers: usize,
    /// How soon a subscription with nothing to deliver is looked at again.
    pub idle: Duration,
    /// Deliver to loopback, private, link-local and other non-public addresses too. Off by
    /// default: a subscription must not make roster probe the network it runs in.
    pub allow_private_networks: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(250),
            lease: Duration::from_secs(60),
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(600),
            pause_after: 10,
            timeout: Duration::from_secs(10),
            batch: 1000,
            workers: 4,
            idle: Duration::from_secs(1),
            allow_private_networks: false,
        }
    }
}

/// Why a delivery round ended early.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Receiver(String),
}

/// The deliverer of one process.
pub struct Deliverer {
    store: Arc<Store>,
    config: WebhookConfig,
    node: String,
    http: reqwest::Client,
}

impl Deliverer {
    pub fn new(
        store: Arc<Store>,
        config: WebhookConfig,
        node: String,
    ) -> Result<Arc<Self>, reqwest::Error> {
        let mut http = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if !config.allow_private_networks {
            // Through a proxy, the proxy would resolve the receiver's name and the deny-list
            // could not see the address: connect directly.
            http = http
                .no_proxy()
                .dns_resolver(Arc::new(egress::PublicResolver));
        }
        let http = http.build()?;
        Ok(Arc::new(Self {
            store,
            config,
            node,
            http,
        }))
    }

    /// Delivers until the process ends, with `workers` loops.
    pub fn start(self: &Arc<Self>) {
        for _ in 0..self.config.workers.max(1) {
            self.spawn_worker();
        }
    }

    fn spawn_worker(self: &Arc<Self>) {
        let deliverer = self.clone();
        tokio::spawn(async move {
            loop {
                match deliverer
                    .store
                    .claim_delivery(&deliverer.node, deliverer.config.lease)
                    .await
                {
                    Ok(Some((subscription, secret))) => {
                        if let Err(e) = deliverer.round(&subscription, &secret).await {
                            tracing::warn!(subscription = %subscription.id, error = %e, "webhook round failed");
                        }
                    }
                    Ok(None) => tokio::time::sleep(deliverer.config.poll).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook claim failed");
                        tokio::time::sleep(deliverer.config.poll).await;
                    }
                }
            }
        });
    }

    /// One claimed round: the pending changes in order, in deliveries of up to the
    /// subscription's batch size, until one fails, the log is read to its end, or the round has
    /// run for [`ROUND_TIME`] (so that the other due subscriptions get their turn).
    async fn round(&self, subscription: &Subscription, secret: &str) -> Result<(), DeliveryError> {
        let id = subscription.id;
        let mut cursor = Cursor::decode(&subscription.cursor)
            .map_err(|e| DeliveryError::Receiver(e.to_string()))?;
        let size = usize::try_from(subscription.batch_size.max(1)).unwrap_or(1);
        let started = std::time::Instant::now();
        loop {
            let batch = match self
                .store
                .changes(&cursor, &subscription.filter(), self.config.batch)
                .await
            {
                Ok(batch) => batch,
                Err(StoreError::Gone(why)) => {
                    let never = Utc::now() + chrono::Duration::days(3650);
                    self.store
                        .record_failure(id, &self.node, &why, never, 1)
                        .await?;
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            for delivery in batch.items.chunks(size) {
                if let Err(e) = self.deliver(subscription, secret, delivery).await {
                    let failures = subscription.failures.saturating_add(1);
                    let next = Utc::now() + self.backoff(failures);
                    self.store
                        .record_failure(
                            id,
                            &self.node,
                            &excerpt(&e.to_string(), LAST_ERROR_CHARS),
                            next,
                            self.config.pause_after,
                        )
                        .await?;
                    return Ok(());
                }
                crate::telemetry::delivered(delivery.len() as u64);
                let Some(last) = delivery.last() else {
                    continue;
                };
                cursor = last.cursor;
                // Progress is stored per delivery: a crash repeats at most the one in flight.
                let held = self
                    .store
                    .record_delivery(id, &self.node, (&cursor, delivery.len()), self.config.lease)
                    .await?;
                if !held {
                    tracing::warn!(subscription = %id, "webhook lease lost to another process");
                    return Ok(());
                }
            }
            cursor = batch.next.max(cursor);
            let more = batch.items.len() >= self.config.batch as usize;
            if !more || started.elapsed() >= ROUND_TIME {
                let next = if batch.items.is_empty() {
                    Utc::now() + chrono::Duration::from_std(self.config.idle).unwrap_or_default()
                } else {
                    Utc::now()
                };
                self.store
                    .release_delivery(id, &self.node, &cursor, next)
                    .await?;
                return Ok(());
            }
        }
    }

    /// POSTs one delivery of `changes`, tried again after each of [`QUICK_RETRIES`] when the
    /// receiver answered other than 2xx or could not be reached (most such failures are
    /// passing: a restarting instance behind a load balancer, a dropped connection). A receiver
    /// that timed out is not tried again at once, nor is an address roster may not call.
    async fn deliver(
        &self,
        subscription: &Subscription,
        secret: &str,
        changes: &[StoredChange],
    ) -> Result<(), DeliveryError> {
        let url = url::Url::parse(&subscription.url).map_err(|e| {
            DeliveryError::Receiver(format!("the subscription's URL is not valid: {e}"))
        })?;
        if !self.config.allow_private_networks {
            // The client calls no resolver for an IP literal: its address is checked here.
            egress::check_url(&url).map_err(|e| DeliveryError::Receiver(e.to_string()))?;
        }
        let delivery = self.body(subscription, secret, changes).await?;
        let mut quick = QUICK_RETRIES.iter();
        loop {
            let failure = match self.post(&url, secret, &delivery).await {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            crate::telemetry::delivery_failed(subscription.id);
            match quick.next() {
                Some(wait) if failure.passing => tokio::time::sleep(jittered(*wait)).await,
                _ => return Err(DeliveryError::Receiver(failure.why)),
            }
        }
    }

    /// The body of one delivery: `{"changes": [...]}` in the JSON formats; in `scim`, the one
    /// change's security event as a signed JWT (RFC 8935).
    async fn body(
        &self,
        subscription: &Subscription,
        secret: &str,
        changes: &[StoredChange],
    ) -> Result<Delivery, DeliveryError> {
        let mut rendered = Vec::with_capacity(changes.len());
        for change in changes {
            rendered.push(render(self.store.as_ref(), change, subscription.format).await?);
        }
        Ok(match (subscription.format, rendered.as_slice(), changes) {
            (Format::Scim, [event], [change]) => Delivery {
                content_type: "application/secevent+jwt",
                body: security_event(event, &subscription.url, secret)?,
                event_id: Some(crate::relay::message_id(change)),
            },
            (Format::Scim, ..) => {
                return Err(DeliveryError::Receiver(format!(
                    "a scim delivery carries one security event, not {}",
                    changes.len()
                )))
            }
            (Format::Notice | Format::Full, ..) => Delivery {
                content_type: "application/json",
                body: serde_json::json!({ "changes": rendered }).to_string(),
                event_id: None,
            },
        })
    }

    /// POSTs a delivery once; an answer other than 2xx is a failure.
    async fn post(&self, url: &url::Url, secret: &str, delivery: &Delivery) -> Result<(), Failure> {
        let mut request = self
            .http
            .post(url.clone())
            .header("content-type", delivery.content_type)
            .header("accept", "application/json")
            .header(
                "roster-signature",
                signature(secret, Utc::now().timestamp(), &delivery.body),
            );
        if let Some(id) = &delivery.event_id {
            request = request.header("roster-event-id", id);
        }
        let answer = request
            .body(delivery.body.clone())
            .send()
            .await
            .map_err(|e| Failure {
                passing: !e.is_timeout() && refusal(&e).is_none(),
                why: self.request_failed(e),
            })?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let excerpt = error_excerpt(answer).await;
        Err(Failure {
            passing: true,
            why: if excerpt.is_empty() {
                format!("the receiver answered {status}")
            } else {
                format!("the receiver answered {status}: {excerpt}")
            },
        })
    }

    /// Why a request got no answer, in words: a refused address as the deny-list says it, a
    /// timeout as such, anything else with its causes (without the URL, which the subscription
    /// shows).
    fn request_failed(&self, e: reqwest::Error) -> String {
        if let Some(refused) = refusal(&e) {
            return refused.to_string();
        }
        if e.is_timeout() {
            return format!(
                "the receiver did not answer within {} s",
                self.config.timeout.as_secs_f64()
            );
        }
        let e = e.without_url();
        let mut text = format!("the request failed: {e}");
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
        text
    }

    /// The wait before the next attempt after `failures` in a row: doubling from the base, capped,
    /// with ±50% jitter so that receivers coming back are not hit by every retry at once.
    fn backoff(&self, failures: i32) -> chrono::Duration {
        let exponent = u32::try_from(failures.saturating_sub(1))
            .unwrap_or(0)
            .min(20);
        let wait = self
            .config
            .base_backoff
            .saturating_mul(2_u32.saturating_pow(exponent))
            .min(self.config.max_backoff);
        chrono::Duration::from_std(jittered(wait)).unwrap_or_default()
    }
}

/// The deny-list's refusal among the causes of `e`.
fn refusal(e: &reqwest::Error) -> Option<&egress::Refused> {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(refused) = c.downcast_ref::<egress::Refused>() {
            return Some(refused);
        }
        cause = c.source();
    }
    None
}

/// One delivery, ready to send (and to send again).
struct Delivery {
    content_type: &'static str,
    body: String,
    /// The change's position, for a delivery of one security event.
    event_id: Option<String>,
}

/// A failed attempt: why, and whether it is worth trying again at once.
struct Failure {
    passing: bool,
    why: String,
}

/// The waits before the quick retries of a failed delivery, within its round; after them the
/// round ends and the subscription backs off (`base_backoff`, doubling). The first is
/// immediate: a failure at random (a request that reached an instance going away behind a load
/// balancer, a dropped connection) is most often answered by the next request, and a pause
/// after each costs a fast receiver more than its failures do.
const QUICK_RETRIES: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_millis(10),
    Duration::from_millis(100),
    Duration::from_millis(500),
];

/// How long one round may deliver before the subscription is released for the others due.
const ROUND_TIME: Duration = Duration::from_secs(10);

/// `wait`, ±50% at random, so that receivers coming back are not hit by every retry at once.
fn jittered(wait: Duration) -> Duration {
    let mut byte = [0u8; 1];
    match getrandom::fill(&mut byte) {
        Ok(()) => wait.mul_f64(0.5 + f64::from(byte[0]) / 255.0),
        Err(_) => wait,
    }
}

/// The most of a refusal's body roster reads; the rest is never received (the connection is
/// closed instead).
pub const ERROR_BODY_CAP: usize = 1024;
/// The most characters of a refusal's body that `last_error` shows.
const EXCERPT_CHARS: usize = 100;
/// The longest `last_error`, in characters.
const LAST_ERROR_CHARS: usize = 500;

/// The start of a refusal's body as a short excerpt: at most [`ERROR_BODY_CAP`] bytes are read,
/// chunk by chunk, then the response is dropped, which closes the connection.
async fn error_excerpt(mut answer: reqwest::Response) -> String {
    let mut head: Vec<u8> = Vec::new();
    let mut more = false;
    // The end, or a body that broke off or timed out, ends the reading: what came is enough.
    while let Ok(Some(chunk)) = answer.chunk().await {
        let room = ERROR_BODY_CAP - head.len();
        head.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if head.len() >= ERROR_BODY_CAP {
            more = true;
            break;
        }
    }
    drop(answer);
    let mut text = excerpt(&String::from_utf8_lossy(&head), EXCERPT_CHARS);
    if more && !text.is_empty() && !text.ends_with('…') {
        text.push('…');
    }
    text
}

/// `text` made safe to store and show: control and invisible formatting characters become
/// spaces, runs of white space one space, and it is cut to `max` characters (ending in `…` when
/// cut).
pub fn excerpt(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut chars = 0;
    let mut space = false;
    for c in text.chars() {
        let c = if c.is_control() || invisible(c) {
            ' '
        } else {
            c
        };
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        let needed = if space { 2 } else { 1 };
        if chars + needed > max {
            out.push('…');
            return out;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
        chars += needed;
    }
    out
}

/// Characters that change how text is shown without showing themselves (bidirectional controls,
/// zero-width characters, the byte-order mark).
fn invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// `t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub fn signature(secret: &str, at: i64, body: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this branch cannot be reached.
        Err(_) => return String::new(),
    };
    mac.update(format!("{at}.{body}").as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={at},v1={hex}")
}

/// A SCIM security event's claim set as a JWT (HS256), its audience the receiver.
fn security_event(
    claims: &serde_json::Value,
    audience: &str,
    secret: &str,
) -> Result<String, DeliveryError> {
    let mut claims = claims.clone();
    claims["aud"] = serde_json::json!([audience]);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("secevent+jwt".to_owned());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| DeliveryError::Receiver(format!("the event could not be signed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_over_time_and_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = signature("Jefe", 0, "what do ya want for nothing?");
        assert_ne!(sig, signature("Jefe", 1, "what do ya want for nothing?"));
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").expect("key");
        mac.update(b"0.what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sig, format!("t=0,v1={hex}"));
    }

    #[test]
    fn excerpts_hold_no_control_characters_and_are_bounded() {
        assert_eq!(
            excerpt("  boom\x1b[31m\r\n\tfailed\u{202e}here\0 ", 100),
            "boom [31m failed here"
        );
        assert_eq!(excerpt("abcdef", 3), "abc…");
        assert_eq!(excerpt("ab cdef", 4), "ab c…");
        assert_eq!(excerpt("ab    cd", 5), "ab cd");
        assert_eq!(excerpt("\n\r\t", 10), "");
        let long = excerpt(&"é".repeat(10_000), 100);
        assert_eq!(long.chars().count(), 101);
        assert!(long.ends_with('…'));
    }
}
