//! What the metrics read from the database at each scrape: work waiting for people, the feed's
//! head, how far behind each follower of the feed is, and the pools.

use super::db::{Dialect, PoolUse};
use super::query::Sql;
use super::{feed, StoreResult};
use crate::domain::feed::{ChangeFilter, Cursor};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The state the metrics show, as of one scrape.
#[derive(Debug, Clone)]
pub struct Gauges {
    /// Operations held for an admin's decision.
    pub pending_operations: i64,
    /// The feed's head: the last commit position (PostgreSQL) or sequence number (SQLite).
    pub head: i64,
    /// Webhook subscriptions, in id order.
    pub subscriptions: Vec<SubscriptionGauge>,
    /// Relays of the feed (the NATS relay), by name.
    pub relays: Vec<RelayGauge>,
    pub pools: Vec<PoolUse>,
    /// Callers waiting for a database connection.
    pub waiting: u64,
}

#[derive(Debug, Clone)]
pub struct SubscriptionGauge {
    pub id: Uuid,
    /// Seconds since the oldest change it has not been sent was written; 0 when it has them all.
    pub lag_seconds: f64,
    /// Consecutive failed deliveries.
    pub failures: i64,
    pub paused: bool,
}

#[derive(Debug, Clone)]
pub struct RelayGauge {
    pub name: String,
    /// Seconds since the oldest change it has not relayed was written; 0 when it has them all.
    pub lag_seconds: f64,
}

impl super::Store {
    /// Reads the gauges; a follower whose stored cursor cannot be read is left out.
    pub async fn gauges(&self) -> StoreResult<Gauges> {
        let now = Utc::now();
        let mut tx = self.db().read().await?;
        let pending = Sql::new("SELECT count(*) FROM operation WHERE status = 'pending'");
        let pending_operations: i64 = tx.scalar(&pending).await?;
        let head = feed::snapshot_cursor(&mut tx).await?;
        let subscriptions: Vec<(Uuid, String, String, i32)> = tx
            .fetch_all(&Sql::new(
                "SELECT id, status, cursor, failures FROM subscription ORDER BY id",
            ))
            .await?;
        let relays: Vec<(String, String)> = tx
            .fetch_all(&Sql::new("SELECT name, position FROM relay ORDER BY name"))
            .await?;
        let dialect = tx.dialect();
        drop(tx);
        let mut gauges = Gauges {
            pending_operations,
            head: match dialect {
                Dialect::Postgres => i64::try_from(head.tx).unwrap_or(i64::MAX),
                Dialect::Sqlite => head.seq,
            },
            subscriptions: Vec::with_capacity(subscriptions.len()),
            relays: Vec::with_capacity(relays.len()),
            pools: Vec::new(),
            waiting: 0,
        };
        for (id, status, cursor, failures) in subscriptions {
            let Ok(cursor) = Cursor::decode(&cursor) else {
                continue;
            };
            gauges.subscriptions.push(SubscriptionGauge {
                id,
                lag_seconds: self.lag(&cursor, now).await?,
                failures: i64::from(failures),
                paused: status == "paused",
            });
        }
        for (name, position) in relays {
            let Ok(cursor) = feed::relay_position(&position) else {
                continue;
            };
            gauges.relays.push(RelayGauge {
                name,
                lag_seconds: self.lag(&cursor, now).await?,
            });
        }
        (gauges.pools, gauges.waiting) = self.db().pool_use();
        Ok(gauges)
    }

    /// How long ago the first change after `cursor` was written (0 when there is none).
    async fn lag(&self, cursor: &Cursor, now: DateTime<Utc>) -> StoreResult<f64> {
        let next = self.changes(cursor, &ChangeFilter::default(), 1).await?;
        Ok(next.items.first().map_or(0.0, |change| {
            (now - change.at).num_milliseconds().max(0) as f64 / 1000.0
        }))
    }
}
