//! Fan-out of the change log to NATS JetStream.
//!
//! One relay runs at a time across every roster process on a database: it holds the lease of the
//! `relay` row named `nats` (renewed as it works, taken over by another process once it expires).
//! It reads the feed after its stored position, publishes each change to
//! `<prefix>.<kind>.<source token>` (the source system encoded as one token, see
//! [`source_token`]) with `Nats-Msg-Id` set from the change's position and the source system as
//! it is in `Roster-Source-System`, one at a time, each acknowledged before the next, and then
//! stores its new position. A relay that starts
//! reads the newest message of the stream and does not publish again what it already holds, so a
//! relay that died between publishing and storing causes no repeats (and JetStream's duplicate
//! window drops any that race): every change is in the stream once, in feed order.

use crate::domain::feed::{ChangeFilter, ChangeItem, Cursor, StoredChange};
use crate::store::{Store, StoreError};
use async_nats::jetstream::{self, stream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The relay's row in `relay`.
const NAME: &str = "nats";
/// Changes per batch: published, acknowledged, then the position stored.
const BATCH: u32 = 500;
/// How often an idle relay looks for new changes.
const POLL: Duration = Duration::from_millis(200);
/// The header that carries a change's source system exactly (absent when it has none).
pub const SOURCE_HEADER: &str = "Roster-Source-System";

/// Where and how to relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The NATS server, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// The JetStream stream, created when missing.
    pub stream: String,
    /// The first subject token: subjects are `<prefix>.<kind>.<source token>`.
    pub subject_prefix: String,
    /// How long the stream keeps messages; none: forever.
    pub max_age: Option<Duration>,
    /// How long a relay's claim lasts without renewal.
    pub lease: Duration,
}

/// Why a relay session ended.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("NATS: {0}")]
    Nats(String),
}

fn nats(e: impl std::fmt::Display) -> RelayError {
    RelayError::Nats(e.to_string())
}

/// The relay of one process.
pub struct Relay {
    store: Arc<Store>,
    config: RelayConfig,
    node: String,
}

impl Relay {
    pub fn new(store: Arc<Store>, config: RelayConfig, node: String) -> Arc<Self> {
        Arc::new(Self {
            store,
            config,
            node,
        })
    }

    /// Runs the relay until the process ends: a lost connection is retried with backoff.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let relay = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                match relay.session().await {
                    Ok(()) => backoff = Duration::from_millis(500),
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "NATS relay stopped");
                        crate::telemetry::relay_failed();
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        })
    }

    /// Connects, makes sure the stream exists, then relays while it holds the lease.
    async fn session(&self) -> Result<(), RelayError> {
        let client = async_nats::connect(&self.config.url).await.map_err(nats)?;
        let js = jetstream::new(client);
        let mut stream = js
            .get_or_create_stream(stream::Config {
                name: self.config.stream.clone(),
                subjects: vec![format!("{}.>", self.config.subject_prefix)],
                max_age: self.config.max_age.unwrap_or_default(),
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(nats)?;
        // What the stream already holds is not published again, however long ago a relay died
        // between publishing and storing its position.
        let mut published = last_published(&mut stream).await?;
        tracing::info!(stream = %self.config.stream, "NATS relay connected");
        let mut held: Option<(Cursor, Instant)> = None;
        loop {
            let position = match held.take() {
                Some((position, renewed)) if renewed.elapsed() < self.config.lease / 3 => {
                    (position, renewed)
                }
                _ => match self
                    .store
                    .claim_relay(NAME, &self.node, self.config.lease)
                    .await?
                {
                    Some(position) => (position, Instant::now()),
                    None => {
                        tokio::time::sleep(self.config.lease / 3).await;
                        continue;
                    }
                },
            };
            let (position, renewed) = position;
            let batch = self
                .store
                .changes(&position, &ChangeFilter::default(), BATCH)
                .await?;
            let fresh: Vec<&StoredChange> = batch
                .items
                .iter()
                .filter(|c| published.as_ref().is_none_or(|p| c.cursor > *p))
                .collect();
            for change in &fresh {
                self.publish(&js, change).await?;
            }
            crate::telemetry::relayed(fresh.len() as u64);
            if let Some(last) = fresh.last() {
                published = Some(last.cursor);
            }
            if batch.next == position {
                held = Some((position, renewed));
                tokio::time::sleep(POLL).await;
                continue;
            }
            let kept = self
                .store
                .advance_relay(NAME, &self.node, &batch.next, self.config.lease)
                .await?;
            if kept {
                held = Some((batch.next, Instant::now()));
            } else {
                tracing::warn!("NATS relay lost its lease; another process relays now");
            }
        }
    }

    /// Publishes one change and waits for JetStream's acknowledgement, so that the stream holds
    /// the changes in feed order even when a publish fails.
    async fn publish(
        &self,
        js: &jetstream::Context,
        change: &StoredChange,
    ) -> Result<(), RelayError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", message_id(change).as_str());
        // Source systems hold no control characters (resources refuse them); one that did could
        // not be a header value, and its subject token still names it exactly.
        if let Some(source) = change
            .source_system
            .as_deref()
            .filter(|s| !s.is_empty() && !s.chars().any(char::is_control))
        {
            headers.insert(SOURCE_HEADER, source);
        }
        let mut item = ChangeItem::notice(change);
        item.changes = change.attrs.clone();
        let payload = serde_json::to_vec(&item).map_err(nats)?;
        js.publish_with_headers(
            subject(&self.config.subject_prefix, change),
            headers,
            payload.into(),
        )
        .await
        .map_err(nats)?
        .await
        .map_err(nats)?;
        Ok(())
    }
}

/// The position of the newest message in the stream (its `Nats-Msg-Id`), if any.
async fn last_published(stream: &mut stream::Stream) -> Result<Option<Cursor>, RelayError> {
    let state = stream.info().await.map_err(nats)?.state.clone();
    if state.messages == 0 {
        return Ok(None);
    }
    let message = stream
        .get_raw_message(state.last_sequence)
        .await
        .map_err(nats)?;
    Ok(message
        .headers
        .get("Nats-Msg-Id")
        .and_then(|id| Cursor::decode(id.as_str()).ok()))
}

/// The de-duplication id of a change: its position in the log.
pub fn message_id(change: &StoredChange) -> String {
    change.cursor.encode()
}

/// `<prefix>.<kind>.<source token>`, e.g. `roster.membership.removed.corp_2Eexample`.
pub fn subject(prefix: &str, change: &StoredChange) -> String {
    format!(
        "{prefix}.{}.{}",
        change.kind.name(),
        source_token(change.source_system.as_deref())
    )
}

/// A source system as one subject token, so that two source systems never share a subject:
/// `A`–`Z`, `a`–`z`, `0`–`9` and `-` stand for themselves, and every other byte of its UTF-8 form,
/// the escape character `_` included, becomes `_` and two upper-case hex digits (`a.b` is
/// `a_2Eb`, `a_b` is `a_5Fb`). A change without a source system is `_` alone, which no source
/// system encodes to.
pub fn source_token(source: Option<&str>) -> String {
    let source = match source {
        None | Some("") => return "_".to_owned(),
        Some(s) => s,
    };
    let mut token = String::with_capacity(source.len());
    for byte in source.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            token.push(char::from(byte));
        } else {
            token.push_str(&format!("_{byte:02X}"));
        }
    }
    token
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::change::ChangeKind;

    fn change(source: Option<&str>) -> StoredChange {
        StoredChange {
            cursor: Cursor::at_seq(7),
            seq: 7,
            at: chrono::Utc::now(),
            kind: ChangeKind::MembershipRemoved,
            resource_id: None,
            group_id: None,
            member_id: None,
            source_system: source.map(str::to_owned),
            operation_id: None,
            token_name: None,
            attrs: None,
        }
    }

    /// The inverse of [`source_token`], as a consumer would write it.
    fn decode(token: &str) -> Option<String> {
        if token == "_" {
            return None;
        }
        let mut bytes = Vec::new();
        let mut rest = token.as_bytes();
        while let Some((&first, tail)) = rest.split_first() {
            if first == b'_' {
                let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                rest = &tail[2..];
            } else {
                bytes.push(first);
                rest = tail;
            }
        }
        String::from_utf8(bytes).ok()
    }

    #[test]
    fn subjects_keep_to_one_token_per_part() {
        assert_eq!(
            subject("roster", &change(Some("corp.example com>*"))),
            "roster.membership.removed.corp_2Eexample_20com_3E_2A"
        );
        assert_eq!(
            subject("roster", &change(Some("entra-foo"))),
            "roster.membership.removed.entra-foo"
        );
        assert_eq!(subject("r", &change(None)), "r.membership.removed._");
    }

    #[test]
    fn source_tokens_are_distinct_for_distinct_sources() {
        let sources = [
            "a.b", "a_b", "a b", "a*b", "a>b", "a_2Eb", "a%2Eb", "_", "-", "_5F", "é", "_C3_A9",
            "A.B", "a\tb", "a/b", "a:b", "ab", "AB",
        ];
        let tokens: std::collections::HashSet<String> =
            sources.iter().map(|s| source_token(Some(s))).collect();
        assert_eq!(tokens.len(), sources.len(), "{tokens:?}");
        assert!(!tokens.contains(&source_token(None)));
        assert_eq!(source_token(Some("a.b")), "a_2Eb");
        assert_eq!(source_token(Some("a_b")), "a_5Fb");
        assert_eq!(source_token(Some("é")), "_C3_A9");
        for source in sources {
            let token = source_token(Some(source));
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{token}"
            );
            assert_eq!(decode(&token).as_deref(), Some(source), "{token}");
        }
        assert_eq!(decode(&source_token(None)), None);
    }
}
