//! The change feed on PostgreSQL. Every transaction that writes changes takes, just before it
//! commits and under a short lock, the next commit position (`change_commit`), so positions are
//! handed out in commit order and any snapshot sees a prefix of them. Changes are read in
//! `(position, seq)` order: a consumer that continues after the last change it read never skips a
//! transaction that took its sequence numbers early and committed late, and sees conflicting
//! transactions in the order they committed.

use super::{PgStore, Row};
use crate::domain::feed::{ChangeBatch, ChangeFilter, Cursor, ExportScope, StoredChange};
use crate::domain::page::PageRequest;
use crate::domain::ResourceId;
use crate::store::feed::{
    bind_filter, filter_clause, gone, members_at, relay_position, ChangeRow, ExportItem,
    CHANGE_COLUMNS,
};
use crate::store::{ChangeStore, StoreResult};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Executor, Postgres, Transaction};
use std::time::Duration;
use tokio::sync::mpsc::Sender;
use uuid::Uuid;

/// The newest commit position a snapshot sees (or where trimmed history ended, when nothing newer
/// is left): every change it sees is at or before it.
const HEAD: &str = "SELECT greatest(coalesce((SELECT max(position) FROM change_commit), 0), \
     coalesce((SELECT position FROM change_horizon), 0))";

/// Stamps a transaction that wrote changes with the next commit position; run just before commit.
/// The advisory lock is held until the commit is visible, so the next transaction's position is
/// taken after it: positions follow commit order.
pub const STAMP: &str = "WITH mine AS (SELECT pg_current_xact_id_if_assigned() AS xid), \
     wrote AS (SELECT xid FROM mine WHERE xid IS NOT NULL \
       AND EXISTS (SELECT 1 FROM change c WHERE c.xid = mine.xid)), \
     locked AS (SELECT xid, pg_advisory_xact_lock(7234101) FROM wrote) \
     INSERT INTO change_commit (xid, position) \
     SELECT xid, nextval('change_commit_seq') FROM locked";

/// A commit position as PostgreSQL stores it.
fn position(tx: u64) -> i64 {
    i64::try_from(tx).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Commits a write transaction, stamping its changes with their commit position.
    pub(super) async fn finish(mut tx: Transaction<'_, Postgres>) -> StoreResult<()> {
        tx.execute(STAMP).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The position of this transaction's snapshot.
    async fn snapshot_cursor<'e>(executor: impl sqlx::PgExecutor<'e>) -> StoreResult<Cursor> {
        let position: i64 = sqlx::query_scalar(HEAD).fetch_one(executor).await?;
        Ok(Cursor::after_tx(
            u64::try_from(position).unwrap_or_default(),
        ))
    }

    /// Refuses a cursor older than the retained history.
    async fn check_horizon(&self, after: &Cursor) -> StoreResult<()> {
        let horizon: Option<(i64, i64)> =
            sqlx::query_as("SELECT position, seq FROM change_horizon")
                .fetch_optional(&self.pool)
                .await?;
        match horizon {
            Some((tx, seq)) if (after.tx, after.seq) < (u64::try_from(tx).unwrap_or(0), seq) => {
                Err(gone(after))
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl ChangeStore for PgStore {
    async fn changes(
        &self,
        after: &Cursor,
        filter: &ChangeFilter,
        limit: u32,
    ) -> StoreResult<ChangeBatch> {
        // The head first: rows are read up to it, so `next` never passes a change not returned.
        let head = Self::snapshot_cursor(&self.pool).await?;
        let (from, to) = (position(after.tx), position(head.tx));
        // Up to `limit` transactions after the cursor's are read per answer; `window` is the last.
        let window: i64 = sqlx::query_scalar(
            "SELECT coalesce((SELECT position FROM change_commit WHERE position > $1 \
             AND position <= $2 ORDER BY position OFFSET $3 LIMIT 1), $2)",
        )
        .bind(from)
        .bind(to)
        .bind(i64::from(limit) - 1)
        .fetch_one(&self.pool)
        .await?;
        // The rest of the cursor's transaction, then each later one in the window, each read in
        // `seq` order from the (xid, seq) key: a transaction of a million changes is paged
        // through, not read whole for every page.
        let (conditions, binds) = filter_clause(filter, 4, '$');
        let sql = format!(
            "(SELECT $1::bigint AS tx, {CHANGE_COLUMNS} FROM change c \
               WHERE c.xid = (SELECT xid FROM change_commit WHERE position = $1) \
               AND c.seq > $2{conditions} ORDER BY c.seq LIMIT {limit}) \
             UNION ALL \
             (SELECT k.position AS tx, {CHANGE_COLUMNS} FROM change_commit k \
               CROSS JOIN LATERAL (SELECT * FROM change c WHERE c.xid = k.xid{conditions} \
                 ORDER BY c.seq LIMIT {limit}) c \
               WHERE k.position > $1 AND k.position <= $3) \
             ORDER BY 1, 2 LIMIT {limit}"
        );
        let query = sqlx::query_as::<_, ChangeRow>(&sql)
            .bind(from)
            .bind(after.seq)
            .bind(window);
        let query = bind_filter(query, binds);
        let rows = query.fetch_all(&self.pool).await?;
        // Checked after the read: a trim that committed meanwhile is seen, never skipped over.
        self.check_horizon(after).await?;
        let items = rows
            .into_iter()
            .map(ChangeRow::into_change)
            .collect::<StoreResult<Vec<_>>>()?;
        let next = match items.last() {
            Some(last) if items.len() == limit as usize => last.cursor,
            last => last
                .map(|c| c.cursor)
                .unwrap_or(*after)
                .max(*after)
                .max(Cursor::after_tx(u64::try_from(window).unwrap_or_default())),
        };
        Ok(ChangeBatch { items, next })
    }

    async fn head(&self) -> StoreResult<Cursor> {
        Self::snapshot_cursor(&self.pool).await
    }

    async fn history(
        &self,
        id: ResourceId,
        filter: &ChangeFilter,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<StoredChange>> {
        let (conditions, binds) = filter_clause(filter, 4, '$');
        let sql = format!(
            "SELECT k.position AS tx, {CHANGE_COLUMNS} FROM change c \
             JOIN change_commit k ON k.xid = c.xid \
             WHERE (c.resource_id = $1 OR c.group_id = $1 OR c.member_id = $1) AND c.seq > $2{conditions} \
             ORDER BY c.seq LIMIT $3"
        );
        let query = sqlx::query_as::<_, ChangeRow>(&sql)
            .bind(id)
            .bind(after.unwrap_or(0))
            .bind(i64::from(limit));
        let query = bind_filter(query, binds);
        let rows = query.fetch_all(&self.pool).await?;
        rows.into_iter().map(ChangeRow::into_change).collect()
    }

    async fn members_at(
        &self,
        id: ResourceId,
        at: DateTime<Utc>,
        member_source: Option<&str>,
        page: &PageRequest<Uuid>,
    ) -> StoreResult<Vec<(ResourceId, DateTime<Utc>)>> {
        let sql = members_at('$', member_source.is_some());
        let query = sqlx::query_as::<_, (Uuid, DateTime<Utc>)>(&sql)
            .bind(id)
            .bind(at)
            .bind(page.after.unwrap_or_default())
            .bind(page.fetch());
        let query = match member_source {
            Some(source) => query.bind(source.to_owned()),
            None => query,
        };
        let rows = query.fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|(m, t)| (ResourceId(m), t)).collect())
    }

    async fn export(
        &self,
        scope: &ExportScope,
        member_source: Option<&str>,
        sink: Sender<StoreResult<ExportItem>>,
    ) -> StoreResult<()> {
        let mut tx = self.read_tx().await?;
        let cursor = Self::snapshot_cursor(&mut *tx).await?;
        crate::store::feed::export_body!(tx, scope, member_source, sink, cursor, '$', Row)
    }

    async fn trim_history(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        // Whole transactions, oldest first, up to the first one with a change at or after
        // `before`.
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM change WHERE at >= $1) \
             THEN (SELECT min(k.position) - 1 FROM change_commit k \
                   JOIN change c ON c.xid = k.xid WHERE c.at >= $1) \
             ELSE (SELECT max(position) FROM change_commit) END",
        )
        .bind(before)
        .fetch_one(&mut *tx)
        .await?;
        let Some(position) = last.filter(|p| *p > 0) else {
            return Ok(0);
        };
        let deleted = sqlx::query(
            "DELETE FROM change c USING change_commit k WHERE k.xid = c.xid AND k.position <= $1",
        )
        .bind(position)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM change_commit WHERE position <= $1")
            .bind(position)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO change_horizon (id, position, seq, at) VALUES (1, $1, $2, now()) \
             ON CONFLICT (id) DO UPDATE SET position = excluded.position, seq = excluded.seq, \
             at = now() WHERE (change_horizon.position, change_horizon.seq) \
             < (excluded.position, excluded.seq)",
        )
        .bind(position)
        .bind(i64::MAX)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn claim_relay(
        &self,
        name: &str,
        holder: &str,
        lease: Duration,
    ) -> StoreResult<Option<Cursor>> {
        let position: Option<String> = sqlx::query_scalar(
            "INSERT INTO relay (name, holder, until) \
             VALUES ($1, $2, now() + $3 * interval '1 millisecond') \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
             WHERE relay.holder = excluded.holder OR relay.until < now() RETURNING position",
        )
        .bind(name)
        .bind(holder)
        .bind(millis(lease))
        .fetch_optional(&self.pool)
        .await?;
        position.as_deref().map(relay_position).transpose()
    }

    async fn advance_relay(
        &self,
        name: &str,
        holder: &str,
        position: &Cursor,
        lease: Duration,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE relay SET position = $3, until = now() + $4 * interval '1 millisecond' \
             WHERE name = $1 AND holder = $2",
        )
        .bind(name)
        .bind(holder)
        .bind(position.encode())
        .bind(millis(lease))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
