//! Fan-out of the change log to NATS JetStream.
//!
//! One relay runs at a time across every roster process on a database: it holds the lease of the
//! `relay` row named `nats` (renewed as it works, taken over by another process once it expires).
//! It reads the feed after its stored position, publishes each change to
//! `<prefix>.<kind>.<source_system>` with `Nats-Msg-Id` set from the change's position, waits for
//! JetStream's acknowledgements, and only then stores its new position. A relay that dies between
//! publishing and storing publishes those changes again from the stored position, and JetStream
//! drops the repeats (within the stream's duplicate window), so every change is in the stream
//! once.

use crate::domain::feed::{ChangeFilter, ChangeItem, Cursor, StoredChange};
use crate::store::{Store, StoreError};
use async_nats::jetstream::{self, stream};
use std::sync::Arc;
use std::time::Duration;

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
        js.get_or_create_stream(stream::Config {
            name: self.config.stream.clone(),
            subjects: vec![format!("{}.>", self.config.subject_prefix)],
            max_age: self.config.max_age.unwrap_or_default(),
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(nats)?;
        tracing::info!(stream = %self.config.stream, "NATS relay connected");
        loop {
            let Some(position) = self
                .store
                .claim_relay(NAME, &self.node, self.config.lease)
                .await?
            else {
                tokio::time::sleep(self.config.lease / 3).await;
                continue;
            };
            let batch = self
                .store
                .changes(&position, &ChangeFilter::default(), BATCH)
                .await?;
            if !batch.items.is_empty() {
                self.publish(&js, &batch.items).await?;
            }
            if batch.next != position {
                let held = self
                    .store
                    .advance_relay(NAME, &self.node, &batch.next, self.config.lease)
                    .await?;
                if !held {
                    tracing::warn!("NATS relay lost its lease; another process relays now");
                }
            }
            if batch.items.is_empty() {
                tokio::time::sleep(POLL).await;
            }
        }
    }

    /// Publishes a batch and waits until JetStream has acknowledged all of it.
    async fn publish(
        &self,
        js: &jetstream::Context,
        changes: &[StoredChange],
    ) -> Result<(), RelayError> {
        let mut acks = Vec::with_capacity(changes.len());
        for change in changes {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", message_id(change).as_str());
            let mut item = ChangeItem::notice(change);
            item.changes = change.attrs.clone();
            let payload = serde_json::to_vec(&item).map_err(nats)?;
            let ack = js
                .publish_with_headers(
                    subject(&self.config.subject_prefix, change),
                    headers,
                    payload.into(),
                )
                .await
                .map_err(nats)?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(nats)?;
        }
        Ok(())
    }
}

/// The de-duplication id of a change: its position in the log, without an export's snapshot.
pub fn message_id(change: &StoredChange) -> String {
    Cursor {
        snapshot: None,
        ..change.cursor.clone()
    }
    .encode()
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
