//! The change feed, written once: reading the log in order by cursor, history, exports from one
//! snapshot, trimming, and the relay's lease. What differs is how a position is kept: on
//! PostgreSQL every transaction that wrote changes takes, just before it commits and under a short
//! lock, the next commit position (`change_commit`, see `db::COMMIT_STAMP`), so positions are
//! handed out in commit order and any snapshot sees a prefix of them; changes are read in
//! `(position, seq)` order, so a consumer that continues after the last change it read never skips
//! a transaction that took its sequence numbers early and committed late. SQLite has one writer:
//! commit order is sequence order.

use super::db::{Dialect, Tx};
use super::query::Sql;
use super::rows::{MembershipRow, ResourceRow, MEMBERSHIP_COLUMNS, RESOURCE_COLUMNS};
use super::{StoreError, StoreResult};
use crate::domain::change::ChangeKind;
use crate::domain::feed::ChangeBatch;
use crate::domain::feed::{ChangeFilter, Cursor, ExportScope, StoredChange, UNRENDERABLE};
use crate::domain::membership::Membership;
use crate::domain::page::PageRequest;
use crate::domain::resource::Resource;
use crate::domain::ResourceId;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use std::time::Duration;
use tokio::sync::mpsc::Sender;
use uuid::Uuid;

/// Rows per statement while an export pages through its snapshot.
pub const EXPORT_PAGE: i64 = 1000;

/// The columns of `change` (alias `c`) that [`ChangeRow`] reads, after the backend's `tx`
/// expression, in the order it reads them.
pub const CHANGE_COLUMNS: &str = "c.seq, c.at, c.kind, c.resource_id, c.group_id, c.member_id, \
     c.source_system, c.operation_id, c.token_name, c.attrs";

/// A row of `tx, CHANGE_COLUMNS`. (Read by position: a page of the feed is a thousand rows, and
/// finding each column by name took a fifth of the time spent decoding them.)
pub struct ChangeRow {
    tx: i64,
    seq: i64,
    at: DateTime<Utc>,
    kind: i16,
    resource_id: Option<Uuid>,
    group_id: Option<Uuid>,
    member_id: Option<Uuid>,
    source_system: Option<String>,
    operation_id: Option<i64>,
    token_name: Option<String>,
    /// Read as raw text, which never fails on depth, then parsed by [`readable_attrs`].
    attrs: Option<Json<Box<serde_json::value::RawValue>>>,
}

impl<'r, R> sqlx::FromRow<'r, R> for ChangeRow
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i16: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Json<Box<serde_json::value::RawValue>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(Self {
            tx: row.try_get(0)?,
            seq: row.try_get(1)?,
            at: row.try_get(2)?,
            kind: row.try_get(3)?,
            resource_id: row.try_get(4)?,
            group_id: row.try_get(5)?,
            member_id: row.try_get(6)?,
            source_system: row.try_get(7)?,
            operation_id: row.try_get(8)?,
            token_name: row.try_get(9)?,
            attrs: row.try_get(10)?,
        })
    }
}

impl ChangeRow {
    /// The stored change.
    pub fn into_change(self) -> StoreResult<StoredChange> {
        let kind = ChangeKind::from_code(self.kind).ok_or_else(|| {
            StoreError::Database(sqlx::Error::Decode(
                format!("change {} has unknown kind {}", self.seq, self.kind).into(),
            ))
        })?;
        let cursor = Cursor {
            tx: u64::try_from(self.tx).unwrap_or_default(),
            seq: self.seq,
        };
        Ok(StoredChange {
            cursor,
            seq: self.seq,
            at: self.at,
            kind,
            resource_id: self.resource_id.map(ResourceId),
            group_id: self.group_id.map(ResourceId),
            member_id: self.member_id.map(ResourceId),
            source_system: self.source_system,
            operation_id: self.operation_id,
            token_name: self.token_name,
            attrs: self.attrs.map(|j| readable_attrs(self.seq, &j.0)),
        })
    }
}

/// The attribute values of a stored change, or, when they cannot be rendered (a document nested
/// deeper than a JSON reader accepts, stored before roster bounded depth on writes), a marker that
/// says so: one such change must never stop a reader of the feed.
pub fn readable_attrs(seq: i64, raw: &serde_json::value::RawValue) -> serde_json::Value {
    serde_json::from_str(raw.get()).unwrap_or_else(|e| {
        tracing::warn!(seq, error = %e, "a change's attribute values cannot be rendered");
        serde_json::json!({ UNRENDERABLE: format!("the attribute values of this change cannot be rendered ({e}); the resource itself has its current values") })
    })
}

/// Appends the `AND …` conditions of a filter on the change alias `c`.
fn push_filter(q: &mut Sql, filter: &ChangeFilter) {
    if let Some(source) = &filter.source_system {
        q.push(" AND c.source_system = ").push_bind(source);
    }
    if let Some(group) = filter.group_id {
        q.push(" AND (c.group_id = ")
            .push_bind(group)
            .push(" OR c.resource_id = ")
            .push_bind(group)
            .push(")");
    }
    if let Some(source) = &filter.member_source {
        // A purged member has no row left to say its source: its changes are left out.
        q.push(
            " AND (c.member_id IS NULL OR EXISTS (SELECT 1 FROM resource m \
             WHERE m.id = c.member_id AND m.source_system = ",
        )
        .push_bind(source)
        .push("))");
    }
    if !filter.kinds.is_empty() {
        let codes: Vec<String> = filter.kinds.iter().map(|k| k.code().to_string()).collect();
        q.push(format!(" AND c.kind IN ({})", codes.join(", ")));
    }
}

/// The newest position a snapshot sees (or where trimmed history ended, when nothing newer is
/// left): every change it sees is at or before it.
pub(super) async fn snapshot_cursor(tx: &mut Tx) -> StoreResult<Cursor> {
    let d = tx.dialect();
    let head = tx.scalar(&Sql::new(format!("SELECT {}", head(d)))).await?;
    Ok(head_cursor(d, head))
}

/// An expression for the head a snapshot sees, as [`head_cursor`] reads it: a statement that
/// selects it beside its rows reads both in one snapshot.
pub(super) fn head(d: Dialect) -> &'static str {
    match d {
        Dialect::Postgres => POSTGRES_HEAD,
        Dialect::Sqlite => SQLITE_HEAD,
    }
}

/// The cursor of a head that [`head`] selected.
pub(super) fn head_cursor(d: Dialect, head: i64) -> Cursor {
    match d {
        Dialect::Postgres => Cursor::after_tx(u64::try_from(head).unwrap_or_default()),
        Dialect::Sqlite => Cursor::at_seq(head),
    }
}

/// SQLite: the newest sequence number, or where trimmed history ended when nothing newer is left.
const SQLITE_HEAD: &str = "max(coalesce((SELECT max(seq) FROM change), 0), \
     coalesce((SELECT seq FROM change_horizon), 0))";

/// PostgreSQL: the newest commit position, or where trimmed history ended when nothing newer is
/// left.
const POSTGRES_HEAD: &str = "greatest(coalesce((SELECT max(position) FROM change_commit), 0), \
     coalesce((SELECT position FROM change_horizon), 0))";

/// A commit position as PostgreSQL stores it.
fn position(tx: u64) -> i64 {
    i64::try_from(tx).unwrap_or(i64::MAX)
}

/// A change read with where trimmed history ended, as the same statement's snapshot saw it.
struct FeedRow {
    change: ChangeRow,
    horizon: Option<(i64, i64)>,
}

impl<'r, R> sqlx::FromRow<'r, R> for FeedRow
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    ChangeRow: sqlx::FromRow<'r, R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        let position: Option<i64> = row.try_get(11)?;
        let seq: Option<i64> = row.try_get(12)?;
        Ok(Self {
            change: ChangeRow::from_row(row)?,
            horizon: position.zip(seq),
        })
    }
}

/// Where trimmed history ended, as columns of a statement (so as its snapshot saw it).
const HORIZON_COLUMNS: &str =
    "(SELECT position FROM change_horizon), (SELECT seq FROM change_horizon)";

/// PostgreSQL: the changes after `after`, by commit position then sequence number.
///
/// First the rest of the cursor's transaction, read in `seq` order from the (xid, seq) key: a
/// transaction of a million changes is paged through, never read whole, and a page inside it is
/// this one statement. A page that reaches the transaction's end reads the head, then the
/// transactions after the cursor's up to it (at most `limit` of them), in order: each is read
/// from its key up to `limit` changes, and an incremental sort over them lets PostgreSQL stop at
/// the page's end rather than read every later transaction. A follower polling at the head
/// (its cursor ends a transaction) reads one statement.
async fn changes_by_position(
    tx: &mut Tx,
    after: &Cursor,
    filter: &ChangeFilter,
    limit: u32,
) -> StoreResult<ChangeBatch> {
    let from = position(after.tx);
    let mut rows = if after.seq == i64::MAX {
        Vec::new()
    } else {
        let mut q = Sql::new(format!(
            "SELECT $1::bigint AS tx, {CHANGE_COLUMNS} FROM change c \
             WHERE c.xid = (SELECT xid FROM change_commit WHERE position = $1) AND c.seq > $2"
        ))
        .bind(from)
        .bind(after.seq);
        push_filter(&mut q, filter);
        q.push(format!(" ORDER BY c.seq LIMIT {limit}"));
        into_changes(tx.fetch_all(&q).await?)?
    };
    if rows.len() == limit as usize {
        // Trimming deletes whole transactions with their positions: a snapshot that still saw
        // the cursor's transaction saw history end before it, so the page needs no check.
        let next = rows.last().map_or(*after, |last| last.cursor);
        return Ok(ChangeBatch { items: rows, next });
    }
    // The head (rows are read up to it, so `next` never passes a change not returned), the
    // `limit`th transaction after the cursor's up to it, and where trimmed history ended.
    let window = Sql::new(format!(
        "WITH head AS (SELECT {POSTGRES_HEAD} AS at) \
         SELECT coalesce((SELECT position FROM change_commit WHERE position > $1 \
         AND position <= head.at ORDER BY position OFFSET $2 LIMIT 1), head.at), \
         {HORIZON_COLUMNS} FROM head"
    ))
    .bind(from)
    .bind(i64::from(limit) - 1);
    let (last, position, seq): (i64, Option<i64>, Option<i64>) = tx.fetch_one(&window).await?;
    // Where history ended as the last statement that read changes saw it, so that a trim
    // committed before it is seen, never skipped over; read after a statement that found none.
    let mut horizon = position.zip(seq);
    if last > from {
        let later = later_changes(tx, from, last, filter, limit).await?;
        horizon = match later.last() {
            Some(row) => row.horizon,
            None => {
                tx.fetch_optional(&Sql::new("SELECT position, seq FROM change_horizon"))
                    .await?
            }
        };
        for row in later.into_iter().take(limit as usize - rows.len()) {
            rows.push(row.change.into_change()?);
        }
    }
    if let Some((tx, seq)) = horizon {
        if (after.tx, after.seq) < (u64::try_from(tx).unwrap_or(0), seq) {
            return Err(gone(after));
        }
    }
    // A page that is not full read every change up to the window.
    let read_to = Cursor::after_tx(u64::try_from(last).unwrap_or_default());
    let next = match rows.last() {
        Some(end) if rows.len() == limit as usize => end.cursor,
        end => end.map_or(*after, |c| c.cursor).max(*after).max(read_to),
    };
    Ok(ChangeBatch { items: rows, next })
}

/// PostgreSQL: up to `limit` changes of the transactions after position `from` up to `last`.
async fn later_changes(
    tx: &mut Tx,
    from: i64,
    last: i64,
    filter: &ChangeFilter,
    limit: u32,
) -> StoreResult<Vec<FeedRow>> {
    let mut q = Sql::new(format!(
        "SELECT k.position AS tx, {CHANGE_COLUMNS}, {HORIZON_COLUMNS} FROM change_commit k \
         CROSS JOIN LATERAL (SELECT * FROM change c WHERE c.xid = k.xid"
    ))
    .bind(from)
    .bind(last);
    push_filter(&mut q, filter);
    q.push(format!(
        " ORDER BY c.seq LIMIT {limit}) c WHERE k.position > $1 AND k.position <= $2 \
         ORDER BY k.position, c.seq LIMIT {limit}"
    ));
    tx.fetch_all(&q).await
}

/// SQLite: the changes after `after`, by sequence number (one writer: commit order).
async fn changes_by_seq(
    tx: &mut Tx,
    after: &Cursor,
    filter: &ChangeFilter,
    limit: u32,
) -> StoreResult<ChangeBatch> {
    let fence = snapshot_cursor(tx).await?;
    let horizon: Option<(i64,)> = tx
        .fetch_optional(&Sql::new("SELECT seq FROM change_horizon"))
        .await?;
    if horizon.is_some_and(|(h,)| after.seq < h) {
        return Err(gone(after));
    }
    let mut q = Sql::new(format!(
        "SELECT 0 AS tx, {CHANGE_COLUMNS} FROM change c WHERE c.seq > $1"
    ))
    .bind(after.seq);
    push_filter(&mut q, filter);
    q.push(format!(" ORDER BY c.seq LIMIT {limit}"));
    let items = into_changes(tx.fetch_all(&q).await?)?;
    let next = match items.last() {
        Some(last) if items.len() == limit as usize => last.cursor,
        _ => fence.max(*after),
    };
    Ok(ChangeBatch { items, next })
}

fn into_changes(rows: Vec<ChangeRow>) -> StoreResult<Vec<StoredChange>> {
    rows.into_iter().map(ChangeRow::into_change).collect()
}

/// The statements an export pages with: resources, then active memberships, each by key; the
/// first binds the scope, the second the key to continue after, the third the page size; with
/// `member_source`, the fourth the source system the memberships' members must be of.
fn export_statements(scope: &ExportScope, member_source: bool) -> (String, String) {
    let members = if member_source {
        " AND member_id IN (SELECT id FROM resource WHERE source_system = $4)"
    } else {
        ""
    };
    match scope {
        ExportScope::Source(_) => (
            format!(
                "SELECT {RESOURCE_COLUMNS} FROM resource WHERE source_system = $1 \
                 AND NOT deleted AND id > $2 ORDER BY id LIMIT $3"
            ),
            format!(
                "SELECT {MEMBERSHIP_COLUMNS} FROM group_member WHERE NOT removed \
                 AND group_id IN (SELECT id FROM resource WHERE source_system = $1 \
                 AND NOT deleted){members} AND id > $2 ORDER BY id LIMIT $3"
            ),
        ),
        ExportScope::Group(_) => (
            format!(
                "SELECT {RESOURCE_COLUMNS} FROM resource WHERE id = $1 AND NOT deleted \
                 AND id > $2 ORDER BY id LIMIT $3"
            ),
            format!(
                "SELECT {MEMBERSHIP_COLUMNS} FROM group_member WHERE group_id = $1 \
                 AND NOT removed{members} AND id > $2 ORDER BY id LIMIT $3"
            ),
        ),
    }
}

/// A statement of an export with its scope bound first.
fn scoped(text: &str, scope: &ExportScope) -> Sql {
    let sql = Sql::new(text.to_owned());
    match scope {
        ExportScope::Source(source) => sql.bind(source.as_str()),
        ExportScope::Group(group) => sql.bind(*group),
    }
}

/// Pages through an export's scope on `tx` (one snapshot), sending each item to `sink`; false
/// when the receiver went away.
async fn export_items(
    tx: &mut Tx,
    scope: &ExportScope,
    member_source: Option<&str>,
    sink: &Sender<StoreResult<ExportItem>>,
) -> StoreResult<bool> {
    let (resources, memberships) = export_statements(scope, member_source.is_some());
    let mut after = Uuid::nil();
    loop {
        let page = scoped(&resources, scope).bind(after).bind(EXPORT_PAGE);
        let rows: Vec<ResourceRow> = tx.fetch_all(&page).await?;
        let Some(last) = rows.last().map(ResourceRow::id) else {
            break;
        };
        after = last;
        for row in rows {
            if sink
                .send(row.try_into().map(ExportItem::Resource))
                .await
                .is_err()
            {
                return Ok(false);
            }
        }
    }
    let mut after = 0_i64;
    loop {
        let mut page = scoped(&memberships, scope).bind(after).bind(EXPORT_PAGE);
        if let Some(source) = member_source {
            page = page.bind(source);
        }
        let rows: Vec<MembershipRow> = tx.fetch_all(&page).await?;
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
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// The members of group `1` active at time `2`, by member id after `3`, at most `4` (with
/// `member_source`, only members of source system `5`): each member's last membership change up
/// to then, where it is an addition.
fn members_at(member_source: bool) -> String {
    let members = if member_source {
        " AND member_id IN (SELECT id FROM resource WHERE source_system = $5)"
    } else {
        ""
    };
    format!(
        "SELECT member_id, at FROM (SELECT member_id, kind, at, row_number() OVER \
           (PARTITION BY member_id ORDER BY seq DESC) AS k FROM change \
           WHERE group_id = $1 AND kind IN ({}, {}) AND at <= $2) latest \
         WHERE k = 1 AND kind = {} AND member_id > $3{members} \
         ORDER BY member_id LIMIT $4",
        ChangeKind::MembershipAdded.code(),
        ChangeKind::MembershipRemoved.code(),
        ChangeKind::MembershipAdded.code(),
    )
}

/// PostgreSQL: deletes whole transactions, oldest first, up to the first one with a change at or
/// after `before`.
async fn trim_by_position(tx: &mut Tx, before: DateTime<Utc>) -> StoreResult<u64> {
    let last = Sql::new(
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM change WHERE at >= $1) \
         THEN (SELECT min(k.position) - 1 FROM change_commit k \
               JOIN change c ON c.xid = k.xid WHERE c.at >= $1) \
         ELSE (SELECT max(position) FROM change_commit) END",
    )
    .bind(before);
    let last: Option<i64> = tx.scalar(&last).await?;
    let Some(position) = last.filter(|p| *p > 0) else {
        return Ok(0);
    };
    let delete = Sql::new(
        "DELETE FROM change c USING change_commit k WHERE k.xid = c.xid AND k.position <= $1",
    )
    .bind(position);
    let deleted = tx.execute(&delete).await?;
    tx.execute(&Sql::new("DELETE FROM change_commit WHERE position <= $1").bind(position))
        .await?;
    let horizon = Sql::new(
        "INSERT INTO change_horizon (id, position, seq, at) VALUES (1, $1, $2, now()) \
         ON CONFLICT (id) DO UPDATE SET position = excluded.position, seq = excluded.seq, \
         at = now() WHERE (change_horizon.position, change_horizon.seq) \
         < (excluded.position, excluded.seq)",
    )
    .bind(position)
    .bind(i64::MAX);
    tx.execute(&horizon).await?;
    Ok(deleted)
}

/// SQLite: deletes the changes recorded before `before`.
async fn trim_by_seq(tx: &mut Tx, before: DateTime<Utc>) -> StoreResult<u64> {
    let last = Sql::new("SELECT max(seq) FROM change WHERE at < $1").bind(before);
    let Some(seq) = tx.scalar::<Option<i64>>(&last).await? else {
        return Ok(0);
    };
    let deleted = tx
        .execute(&Sql::new("DELETE FROM change WHERE seq <= $1").bind(seq))
        .await?;
    let horizon = Sql::new(
        "INSERT INTO change_horizon (id, xid, seq, at) VALUES (1, 0, $1, $2) \
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, at = excluded.at \
         WHERE change_horizon.seq < excluded.seq",
    )
    .bind(seq)
    .bind(super::now());
    tx.execute(&horizon).await?;
    Ok(deleted)
}

/// The relay's lease statements: on PostgreSQL by the database's clock (every node agrees on
/// it); SQLite is one process's file, so its clock is the caller's.
fn relay_lease(d: Dialect, claim: bool, name: &str, holder: &str, lease: Duration) -> Sql {
    let now = super::now();
    let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
    let millis = lease.as_secs_f64() * 1000.0;
    match (d, claim) {
        (Dialect::Postgres, true) => Sql::new(
            "INSERT INTO relay (name, holder, until) \
             VALUES ($1, $2, now() + $3 * interval '1 millisecond') \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
             WHERE relay.holder = excluded.holder OR relay.until < now() RETURNING position",
        )
        .bind(name)
        .bind(holder)
        .bind(millis),
        (Dialect::Sqlite, true) => Sql::new(
            "INSERT INTO relay (name, holder, until) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
             WHERE relay.holder = excluded.holder OR relay.until < $4 RETURNING position",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(now),
        (Dialect::Postgres, false) => Sql::new(
            "UPDATE relay SET until = now() + $3 * interval '1 millisecond', position = $4 \
             WHERE name = $1 AND holder = $2",
        )
        .bind(name)
        .bind(holder)
        .bind(millis),
        (Dialect::Sqlite, false) => {
            Sql::new("UPDATE relay SET until = $3, position = $4 WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder)
                .bind(until)
        }
    }
}

/// The change feed: the log read in order by cursor, exports, history.
impl super::Store {
    /// The changes after `after` that match `filter` (at most `limit`), and where to continue. A
    /// cursor older than the retained history is [`StoreError::Gone`].
    pub async fn changes(
        &self,
        after: &Cursor,
        filter: &ChangeFilter,
        limit: u32,
    ) -> StoreResult<ChangeBatch> {
        match self.db().dialect() {
            Dialect::Postgres => {
                changes_by_position(&mut self.db().read().await?, after, filter, limit).await
            }
            Dialect::Sqlite => {
                changes_by_seq(&mut self.db().snapshot().await?, after, filter, limit).await
            }
        }
    }

    /// The cursor of "now": following from it gets every change not yet committed.
    pub async fn head(&self) -> StoreResult<Cursor> {
        snapshot_cursor(&mut self.db().lookup().await?).await
    }

    /// The changes of a resource and of its memberships (as group or as member) that match
    /// `filter`, oldest first, after sequence number `after`.
    pub async fn history(
        &self,
        id: ResourceId,
        filter: &ChangeFilter,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<StoredChange>> {
        let mut tx = self.db().read().await?;
        let from = match tx.dialect() {
            Dialect::Postgres => {
                "k.position AS tx, {} FROM change c \
                 JOIN change_commit k ON k.xid = c.xid"
            }
            Dialect::Sqlite => "0 AS tx, {} FROM change c",
        };
        let mut q = Sql::new(format!(
            "SELECT {} WHERE (c.resource_id = $1 OR c.group_id = $1 OR c.member_id = $1) \
             AND c.seq > $2",
            from.replace("{}", CHANGE_COLUMNS)
        ))
        .bind(id)
        .bind(after.unwrap_or(0))
        .bind(i64::from(limit));
        push_filter(&mut q, filter);
        q.push(" ORDER BY c.seq LIMIT $3");
        into_changes(tx.fetch_all(&q).await?)
    }

    /// The members of group `id` (of source system `member_source` only, when it names one) that
    /// were active at `at`, from the log, by member id after `page.after`; each with the time it
    /// (last) joined.
    pub async fn members_at(
        &self,
        id: ResourceId,
        at: DateTime<Utc>,
        member_source: Option<&str>,
        page: &PageRequest<Uuid>,
    ) -> StoreResult<Vec<(ResourceId, DateTime<Utc>)>> {
        let mut q = Sql::new(members_at(member_source.is_some()))
            .bind(id)
            .bind(at)
            .bind(page.after.unwrap_or_default())
            .bind(page.fetch());
        if let Some(source) = member_source {
            q = q.bind(source);
        }
        let rows: Vec<(Uuid, DateTime<Utc>)> = self.db().read().await?.fetch_all(&q).await?;
        Ok(rows.into_iter().map(|(m, t)| (ResourceId(m), t)).collect())
    }

    /// Sends `scope`'s resources and active memberships (of members of source system
    /// `member_source` only, when it names one), read in one snapshot, then the cursor to follow
    /// from; stops early when the receiver goes away.
    pub async fn export(
        &self,
        scope: &ExportScope,
        member_source: Option<&str>,
        sink: Sender<StoreResult<ExportItem>>,
    ) -> StoreResult<()> {
        let mut tx = self.db().snapshot().await?;
        let cursor = snapshot_cursor(&mut tx).await?;
        if export_items(&mut tx, scope, member_source, &sink).await? {
            tx.commit().await?;
            // The receiver may have gone; there is nothing left to tell it.
            let _ = sink.send(Ok(ExportItem::End(cursor))).await;
        }
        Ok(())
    }

    /// Deletes changes recorded before `before`; cursors before them answer Gone from then on.
    pub async fn trim_history(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.db().write().await?;
        let deleted = match tx.dialect() {
            Dialect::Postgres => trim_by_position(&mut tx, before).await?,
            Dialect::Sqlite => trim_by_seq(&mut tx, before).await?,
        };
        tx.commit().await?;
        Ok(deleted)
    }

    /// Takes or renews relay `name`'s lease for `holder`; its stored position when `holder`
    /// holds it now, none while another holder's lease runs.
    pub async fn claim_relay(
        &self,
        name: &str,
        holder: &str,
        lease: Duration,
    ) -> StoreResult<Option<Cursor>> {
        let mut tx = self.db().autocommit().await?;
        let claim = relay_lease(tx.dialect(), true, name, holder, lease);
        let position: Option<(String,)> = tx.fetch_optional(&claim).await?;
        position.map(|(p,)| relay_position(&p)).transpose()
    }

    /// Stores relay `name`'s position (renewing the lease); false when `holder` lost the lease.
    pub async fn advance_relay(
        &self,
        name: &str,
        holder: &str,
        position: &Cursor,
        lease: Duration,
    ) -> StoreResult<bool> {
        let mut tx = self.db().autocommit().await?;
        let advance = relay_lease(tx.dialect(), false, name, holder, lease).bind(position.encode());
        Ok(tx.execute(&advance).await? == 1)
    }
}

/// One item of an export, in the order it is written.
#[derive(Debug, Clone)]
pub enum ExportItem {
    Resource(Resource),
    Membership(Membership),
    /// The last item: where to follow the feed from.
    End(Cursor),
}

/// A relay's stored position: empty is the start of the log.
pub fn relay_position(text: &str) -> StoreResult<Cursor> {
    if text.is_empty() {
        return Ok(Cursor::start());
    }
    Cursor::decode(text).map_err(|e| {
        StoreError::Database(sqlx::Error::Decode(
            format!("a relay's stored position: {e}").into(),
        ))
    })
}

/// What a consumer reading history was told when its cursor fell behind the retained history.
pub fn gone(after: &Cursor) -> StoreError {
    StoreError::Gone(format!(
        "the change log no longer holds what follows cursor {}: history older than the \
         retention was deleted",
        after.encode()
    ))
}
