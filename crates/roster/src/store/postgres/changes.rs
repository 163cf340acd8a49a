//! The change feed on PostgreSQL. Changes are read in `(xid, seq)` order and only below the
//! fence `pg_snapshot_xmin(pg_current_snapshot())`: every transaction with a smaller id has ended,
//! so nothing can still appear below the fence, and a consumer that continues after the last
//! change it read never skips a transaction that committed late.

use super::{MembershipRow, PgStore, Row};
use crate::domain::feed::{ChangeBatch, ChangeFilter, Cursor, ExportScope, StoredChange};
use crate::domain::page::PageRequest;
use crate::domain::ResourceId;
use crate::store::feed::{
    export_statements, filter_clause, gone, members_at, relay_position, ChangeRow, ExportItem,
    FilterBind, CHANGE_COLUMNS, EXPORT_PAGE,
};
use crate::store::rows::{MEMBERSHIP_COLUMNS, RESOURCE_COLUMNS};
use crate::store::{ChangeStore, StoreResult};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use std::time::Duration;
use tokio::sync::mpsc::Sender;
use uuid::Uuid;

/// The transactions that have ended: everything below this id is final.
const FENCE: &str = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text";

impl PgStore {
    /// The exact position of this transaction's snapshot: every change it sees is before it.
    async fn snapshot_cursor(tx: &mut Transaction<'_, Postgres>) -> StoreResult<Cursor> {
        let (snapshot, xmin): (String, String) = sqlx::query_as(
            "SELECT pg_current_snapshot()::text, pg_snapshot_xmin(pg_current_snapshot())::text",
        )
        .fetch_one(&mut **tx)
        .await?;
        let xmin: u64 = xmin.parse().unwrap_or_default();
        Ok(Cursor {
            snapshot: Some(snapshot),
            ..Cursor::before_xid(xmin)
        }
        .settled())
    }

    /// Refuses a cursor older than the retained history.
    async fn check_horizon(&self, after: &Cursor) -> StoreResult<()> {
        let horizon: Option<(String, i64)> =
            sqlx::query_as("SELECT xid::text, seq FROM change_horizon")
                .fetch_optional(&self.pool)
                .await?;
        match horizon {
            Some((xid, seq)) if (after.xid, after.seq) < (xid.parse().unwrap_or(u64::MAX), seq) => {
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
        let fence: String = sqlx::query_scalar(FENCE).fetch_one(&self.pool).await?;
        let (conditions, binds) = filter_clause(filter, 5, '$');
        let seen = if after.snapshot.is_some() {
            " AND NOT pg_visible_in_snapshot(xid, $4::text::pg_snapshot)"
        } else {
            " AND $4::text IS NULL"
        };
        let sql = format!(
            "SELECT xid::text AS xid, {CHANGE_COLUMNS} FROM change \
             WHERE (xid, seq) > ($1::text::xid8, $2) AND xid < $3::text::xid8{seen}{conditions} \
             ORDER BY change.xid, change.seq LIMIT {limit}"
        );
        let mut query = sqlx::query_as::<_, ChangeRow>(&sql)
            .bind(after.xid.to_string())
            .bind(after.seq)
            .bind(&fence)
            .bind(after.snapshot.clone());
        for b in binds {
            query = match b {
                FilterBind::Text(t) => query.bind(t),
                FilterBind::Id(id) => query.bind(id),
            };
        }
        let rows = query.fetch_all(&self.pool).await?;
        // Checked after the read: a trim that committed meanwhile is seen, never skipped over.
        self.check_horizon(after).await?;
        let items = rows
            .into_iter()
            .map(|r| r.into_change(after.snapshot.as_deref()))
            .collect::<StoreResult<Vec<_>>>()?;
        let last = items.last().map(|c| c.cursor.clone());
        let next = match last {
            Some(last) if items.len() == limit as usize => last,
            last => {
                let fence = Cursor::before_xid(fence.parse().unwrap_or_default());
                last.unwrap_or_else(|| after.clone())
                    .max(after.clone())
                    .max(fence)
            }
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
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<StoredChange>> {
        let sql = format!(
            "SELECT xid::text AS xid, {CHANGE_COLUMNS} FROM change \
             WHERE (resource_id = $1 OR group_id = $1 OR member_id = $1) AND seq > $2 \
             ORDER BY seq LIMIT $3"
        );
        let rows: Vec<ChangeRow> = sqlx::query_as(&sql)
            .bind(id)
            .bind(after.unwrap_or(0))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(|r| r.into_change(None)).collect()
    }

    async fn members_at(
        &self,
        id: ResourceId,
        at: DateTime<Utc>,
        page: &PageRequest<Uuid>,
    ) -> StoreResult<Vec<(ResourceId, DateTime<Utc>)>> {
        let rows: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(&members_at('$'))
            .bind(id)
            .bind(at)
            .bind(page.after.unwrap_or_default())
            .bind(page.fetch())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(m, t)| (ResourceId(m), t)).collect())
    }

    async fn export(
        &self,
        scope: &ExportScope,
        sink: Sender<StoreResult<ExportItem>>,
    ) -> StoreResult<()> {
        let mut tx = self.read_tx().await?;
        let cursor = Self::snapshot_cursor(&mut tx).await?;
        let (resources, memberships) =
            export_statements(scope, (RESOURCE_COLUMNS, MEMBERSHIP_COLUMNS), '$');
        let mut after = Uuid::nil();
        loop {
            let rows: Vec<Row> = bind_scope(sqlx::query_as(&resources), scope)
                .bind(after)
                .bind(EXPORT_PAGE)
                .fetch_all(&mut *tx)
                .await?;
            let Some(last) = rows.last().map(|r| r.id()) else {
                break;
            };
            after = last;
            for row in rows {
                if sink
                    .send(row.try_into().map(ExportItem::Resource))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
        }
        let mut after = 0_i64;
        loop {
            let rows: Vec<MembershipRow> = bind_scope(sqlx::query_as(&memberships), scope)
                .bind(after)
                .bind(EXPORT_PAGE)
                .fetch_all(&mut *tx)
                .await?;
            let Some(last) = rows.last().map(MembershipRow::id) else {
                break;
            };
            after = last;
            for row in rows {
                if sink
                    .send(Ok(ExportItem::Membership(row.into())))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
        }
        tx.commit().await?;
        // The receiver may have gone; there is nothing left to tell it.
        let _ = sink.send(Ok(ExportItem::End(cursor))).await;
        Ok(())
    }

    async fn trim_history(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let last: Option<(String, i64)> = sqlx::query_as(
            "SELECT xid::text, seq FROM change WHERE at < $1 \
             ORDER BY change.xid DESC, change.seq DESC LIMIT 1",
        )
        .bind(before)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((xid, seq)) = last else {
            return Ok(0);
        };
        let deleted = sqlx::query("DELETE FROM change WHERE (xid, seq) <= ($1::text::xid8, $2)")
            .bind(&xid)
            .bind(seq)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "INSERT INTO change_horizon (id, xid, seq, at) VALUES (1, $1::text::xid8, $2, now()) \
             ON CONFLICT (id) DO UPDATE SET xid = excluded.xid, seq = excluded.seq, at = now() \
             WHERE (change_horizon.xid, change_horizon.seq) < (excluded.xid, excluded.seq)",
        )
        .bind(&xid)
        .bind(seq)
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

/// Binds the scope of an export: a source system's name or a group's id.
fn bind_scope<'q, T>(
    query: sqlx::query::QueryAs<'q, Postgres, T, sqlx::postgres::PgArguments>,
    scope: &ExportScope,
) -> sqlx::query::QueryAs<'q, Postgres, T, sqlx::postgres::PgArguments> {
    match scope {
        ExportScope::Source(source) => query.bind(source.clone()),
        ExportScope::Group(group) => query.bind(*group),
    }
}
