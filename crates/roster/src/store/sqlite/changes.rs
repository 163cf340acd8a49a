//! The change feed on SQLite. One writer commits at a time and takes its sequence numbers inside
//! its transaction, so a reader's snapshot always holds a prefix of the log: `seq` alone is a
//! gapless cursor, and the newest sequence number a snapshot sees is its exact position.

use super::{Row, SqliteStore};
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
use sqlx::{Sqlite, Transaction};
use std::time::Duration;
use tokio::sync::mpsc::Sender;
use uuid::Uuid;

impl SqliteStore {
    /// The position of this transaction's snapshot.
    async fn snapshot_cursor(tx: &mut Transaction<'_, Sqlite>) -> StoreResult<Cursor> {
        // The newest change, or where trimmed history ended when nothing newer is left.
        let seq: i64 = sqlx::query_scalar(
            "SELECT max(coalesce((SELECT max(seq) FROM change), 0), \
             coalesce((SELECT seq FROM change_horizon), 0))",
        )
        .fetch_one(&mut **tx)
        .await?;
        Ok(Cursor::at_seq(seq))
    }
}

#[async_trait]
impl ChangeStore for SqliteStore {
    async fn changes(
        &self,
        after: &Cursor,
        filter: &ChangeFilter,
        limit: u32,
    ) -> StoreResult<ChangeBatch> {
        let mut tx = self.read_tx().await?;
        let fence = Self::snapshot_cursor(&mut tx).await?;
        let horizon: Option<i64> = sqlx::query_scalar("SELECT seq FROM change_horizon")
            .fetch_optional(&mut *tx)
            .await?;
        if horizon.is_some_and(|h| after.seq < h) {
            return Err(gone(after));
        }
        let (conditions, binds) = filter_clause(filter, 2, '?');
        let sql = format!(
            "SELECT 0 AS tx, {CHANGE_COLUMNS} FROM change c WHERE c.seq > ?1{conditions} \
             ORDER BY c.seq LIMIT {limit}"
        );
        let query = sqlx::query_as::<_, ChangeRow>(&sql).bind(after.seq);
        let query = bind_filter(query, binds);
        let rows = query.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let items = rows
            .into_iter()
            .map(ChangeRow::into_change)
            .collect::<StoreResult<Vec<_>>>()?;
        let next = match items.last() {
            Some(last) if items.len() == limit as usize => last.cursor,
            _ => fence.max(*after),
        };
        Ok(ChangeBatch { items, next })
    }

    async fn head(&self) -> StoreResult<Cursor> {
        let mut tx = self.read_tx().await?;
        let cursor = Self::snapshot_cursor(&mut tx).await?;
        tx.commit().await?;
        Ok(cursor)
    }

    async fn history(
        &self,
        id: ResourceId,
        filter: &ChangeFilter,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<StoredChange>> {
        let (conditions, binds) = filter_clause(filter, 4, '?');
        let sql = format!(
            "SELECT 0 AS tx, {CHANGE_COLUMNS} FROM change c \
             WHERE (c.resource_id = ?1 OR c.group_id = ?1 OR c.member_id = ?1) AND c.seq > ?2{conditions} \
             ORDER BY c.seq LIMIT ?3"
        );
        let query = sqlx::query_as::<_, ChangeRow>(&sql)
            .bind(id)
            .bind(after.unwrap_or(0))
            .bind(i64::from(limit));
        let query = bind_filter(query, binds);
        let rows = query.fetch_all(&self.reader).await?;
        rows.into_iter().map(ChangeRow::into_change).collect()
    }

    async fn members_at(
        &self,
        id: ResourceId,
        at: DateTime<Utc>,
        member_source: Option<&str>,
        page: &PageRequest<Uuid>,
    ) -> StoreResult<Vec<(ResourceId, DateTime<Utc>)>> {
        let sql = members_at('?', member_source.is_some());
        let query = sqlx::query_as::<_, (Uuid, DateTime<Utc>)>(&sql)
            .bind(id)
            .bind(at)
            .bind(page.after.unwrap_or_default())
            .bind(page.fetch());
        let query = match member_source {
            Some(source) => query.bind(source.to_owned()),
            None => query,
        };
        let rows = query.fetch_all(&self.reader).await?;
        Ok(rows.into_iter().map(|(m, t)| (ResourceId(m), t)).collect())
    }

    async fn export(
        &self,
        scope: &ExportScope,
        member_source: Option<&str>,
        sink: Sender<StoreResult<ExportItem>>,
    ) -> StoreResult<()> {
        let mut tx = self.read_tx().await?;
        let cursor = Self::snapshot_cursor(&mut tx).await?;
        crate::store::feed::export_body!(tx, scope, member_source, sink, cursor, '?', Row)
    }

    async fn trim_history(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let last: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM change WHERE at < ?1")
            .bind(before)
            .fetch_one(&mut *tx)
            .await?;
        let Some(seq) = last else {
            return Ok(0);
        };
        let deleted = sqlx::query("DELETE FROM change WHERE seq <= ?1")
            .bind(seq)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "INSERT INTO change_horizon (id, xid, seq, at) VALUES (1, 0, ?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, at = excluded.at \
             WHERE change_horizon.seq < excluded.seq",
        )
        .bind(seq)
        .bind(crate::store::now())
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
        let now = crate::store::now();
        let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::zero());
        let mut tx = self.begin().await?;
        let position: Option<String> = sqlx::query_scalar(
            "INSERT INTO relay (name, holder, until) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
             WHERE relay.holder = excluded.holder OR relay.until < ?4 RETURNING position",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        position.as_deref().map(relay_position).transpose()
    }

    async fn advance_relay(
        &self,
        name: &str,
        holder: &str,
        position: &Cursor,
        lease: Duration,
    ) -> StoreResult<bool> {
        let until = crate::store::now()
            + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::zero());
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE relay SET position = ?3, until = ?4 WHERE name = ?1 AND holder = ?2",
        )
        .bind(name)
        .bind(holder)
        .bind(position.encode())
        .bind(until)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }
}
