//! Fan-out of the change log to NATS JetStream.
//!
//! One relay runs at a time across every roster process on a database: it holds the lease of the
//! `relay` row named `nats` (renewed as it works, taken over by another process once it expires).
//! It reads the feed after its stored position, publishes each change to
//! `<prefix>.<kind>.<source_system>` with `Nats-Msg-Id` set from the change's position, one at a
//! time, each acknowledged before the next, and then stores its new position. A relay that starts
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

/// Where and how to relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The NATS server, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// The JetStream stream, created when missing.
    pub stream: String,
    /// The first subject token: subjects are `<prefix>.<kind>.<source_system>`.
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
    store: Arc<dyn Store>,
    config: RelayConfig,
    node: String,
}

impl Relay {
    pub fn new(store: Arc<dyn Store>, config: RelayConfig, node: String) -> Arc<Self> {
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

/// `<prefix>.<kind>.<source_system>`; characters a subject token cannot hold become `_`, and a
/// change without a source system goes to `-`.
pub fn subject(prefix: &str, change: &StoredChange) -> String {
    let source: String = match change.source_system.as_deref() {
        None | Some("") => "-".to_owned(),
        Some(s) => s
            .chars()
            .map(|c| {
                if c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect(),
    };
    format!("{prefix}.{}.{source}", change.kind.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::change::ChangeKind;

    #[test]
    fn subjects_keep_to_one_token_per_part() {
        let change = StoredChange {
            cursor: Cursor::at_seq(7),
            seq: 7,
            at: chrono::Utc::now(),
            kind: ChangeKind::MembershipRemoved,
            resource_id: None,
            group_id: None,
            member_id: None,
            source_system: Some("corp.example com>*".to_owned()),
            operation_id: None,
            token_name: None,
            attrs: None,
        };
        assert_eq!(
            subject("roster", &change),
            "roster.membership.removed.corp_example_com__"
        );
        let none = StoredChange {
            source_system: None,
            ..change
        };
        assert_eq!(subject("r", &none), "r.membership.removed.-");
    }
}
