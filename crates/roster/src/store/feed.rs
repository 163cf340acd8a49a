//! What both backends share of the change feed: the change row, the filter clause and the export
//! paging. The reading rules (the fence, snapshots) are each backend's own.

use super::{StoreError, StoreResult};
use crate::domain::change::ChangeKind;
use crate::domain::feed::{ChangeFilter, Cursor, ExportScope, StoredChange, UNRENDERABLE};
use crate::domain::membership::Membership;
use crate::domain::resource::Resource;
use crate::domain::ResourceId;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

/// Rows per statement while an export pages through its snapshot.
pub const EXPORT_PAGE: i64 = 1000;

/// The columns of `change` (alias `c`) that [`ChangeRow`] reads, after the backend's `tx`
/// expression.
pub const CHANGE_COLUMNS: &str = "c.seq, c.at, c.kind, c.resource_id, c.group_id, c.member_id, \
     c.source_system, c.operation_id, c.token_name, c.attrs";

#[derive(sqlx::FromRow)]
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

/// A value a filter clause binds.
pub enum FilterBind {
    Text(String),
    Id(Uuid),
}

/// Binds a filter clause's values to `query`, in order.
pub fn bind_filter<'q, DB, O>(
    query: sqlx::query::QueryAs<'q, DB, O, <DB as sqlx::Database>::Arguments<'q>>,
    binds: Vec<FilterBind>,
) -> sqlx::query::QueryAs<'q, DB, O, <DB as sqlx::Database>::Arguments<'q>>
where
    DB: sqlx::Database,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Uuid: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    binds.into_iter().fold(query, |query, bind| match bind {
        FilterBind::Text(text) => query.bind(text),
        FilterBind::Id(id) => query.bind(id),
    })
}

/// The `AND …` conditions of a filter, with placeholders numbered from `first` in the backend's
/// style (`$n` or `?n`), and what they bind.
pub fn filter_clause(filter: &ChangeFilter, first: usize, mark: char) -> (String, Vec<FilterBind>) {
    let mut sql = String::new();
    let mut binds = Vec::new();
    if let Some(source) = &filter.source_system {
        binds.push(FilterBind::Text(source.clone()));
        sql.push_str(&format!(
            " AND c.source_system = {mark}{}",
            first + binds.len() - 1
        ));
    }
    if let Some(group) = filter.group_id {
        binds.push(FilterBind::Id(group.0));
        let n = first + binds.len() - 1;
        sql.push_str(&format!(
            " AND (c.group_id = {mark}{n} OR c.resource_id = {mark}{n})"
        ));
    }
    if let Some(source) = &filter.member_source {
        binds.push(FilterBind::Text(source.clone()));
        // A purged member has no row left to say its source: its changes are left out.
        sql.push_str(&format!(
            " AND (c.member_id IS NULL OR EXISTS (SELECT 1 FROM resource m \
             WHERE m.id = c.member_id AND m.source_system = {mark}{}))",
            first + binds.len() - 1
        ));
    }
    if !filter.kinds.is_empty() {
        let codes: Vec<String> = filter.kinds.iter().map(|k| k.code().to_string()).collect();
        sql.push_str(&format!(" AND c.kind IN ({})", codes.join(", ")));
    }
    (sql, binds)
}

/// One item of an export, in the order it is written.
#[derive(Debug, Clone)]
pub enum ExportItem {
    Resource(Resource),
    Membership(Membership),
    /// The last item: where to follow the feed from.
    End(Cursor),
}

/// The statements an export pages with: resources, then active memberships, each by key. `mark`
/// is the backend's placeholder (`$` or `?`): the first binds the scope, the second the key to
/// continue after, the third the page size; with `member_source`, the fourth binds the source
/// system the memberships' members must be of (a reader bound to it).
pub fn export_statements(
    scope: &ExportScope,
    columns: (&str, &str),
    mark: char,
    member_source: bool,
) -> (String, String) {
    let (resource_columns, membership_columns) = columns;
    let members = if member_source {
        format!(" AND member_id IN (SELECT id FROM resource WHERE source_system = {mark}4)")
    } else {
        String::new()
    };
    match scope {
        ExportScope::Source(_) => (
            format!(
                "SELECT {resource_columns} FROM resource WHERE source_system = {mark}1 \
                 AND NOT deleted AND id > {mark}2 ORDER BY id LIMIT {mark}3"
            ),
            format!(
                "SELECT {membership_columns} FROM group_member WHERE NOT removed \
                 AND group_id IN (SELECT id FROM resource WHERE source_system = {mark}1 \
                 AND NOT deleted){members} AND id > {mark}2 ORDER BY id LIMIT {mark}3"
            ),
        ),
        ExportScope::Group(_) => (
            format!(
                "SELECT {resource_columns} FROM resource WHERE id = {mark}1 AND NOT deleted \
                 AND id > {mark}2 ORDER BY id LIMIT {mark}3"
            ),
            format!(
                "SELECT {membership_columns} FROM group_member WHERE group_id = {mark}1 \
                 AND NOT removed{members} AND id > {mark}2 ORDER BY id LIMIT {mark}3"
            ),
        ),
    }
}

/// The body of a backend's `export`: pages through `$scope` on `$tx` (a read transaction, one
/// snapshot) with `$row` resource rows and `$mark` placeholders, memberships only of members of
/// `$members` (an `Option<&str>` source system) when it names one, sends each item to `$sink`
/// (and returns early when the receiver has gone), commits, then sends `$cursor`.
macro_rules! export_body {
    ($tx:ident, $scope:ident, $members:ident, $sink:ident, $cursor:expr, $mark:expr, $row:ty) => {{
        use crate::domain::feed::ExportScope;
        use crate::store::feed::{ExportItem, EXPORT_PAGE};
        use crate::store::rows::{MembershipRow, MEMBERSHIP_COLUMNS, RESOURCE_COLUMNS};
        let (resources, memberships) = crate::store::feed::export_statements(
            $scope,
            (RESOURCE_COLUMNS, MEMBERSHIP_COLUMNS),
            $mark,
            $members.is_some(),
        );
        let mut after = uuid::Uuid::nil();
        loop {
            let query = sqlx::query_as::<_, $row>(&resources);
            let query = match $scope {
                ExportScope::Source(source) => query.bind(source.clone()),
                ExportScope::Group(group) => query.bind(*group),
            };
            let rows = query
                .bind(after)
                .bind(EXPORT_PAGE)
                .fetch_all(&mut *$tx)
                .await?;
            let Some(last) = rows.last().map(|r| r.id()) else {
                break;
            };
            after = last;
            for row in rows {
                let item = row.try_into().map(ExportItem::Resource);
                if $sink.send(item).await.is_err() {
                    return Ok(());
                }
            }
        }
        let mut after = 0_i64;
        loop {
            let query = sqlx::query_as::<_, MembershipRow>(&memberships);
            let query = match $scope {
                ExportScope::Source(source) => query.bind(source.clone()),
                ExportScope::Group(group) => query.bind(*group),
            };
            let query = query.bind(after).bind(EXPORT_PAGE);
            let query = match $members {
                Some(source) => query.bind(source.to_owned()),
                None => query,
            };
            let rows = query.fetch_all(&mut *$tx).await?;
            let Some(last) = rows.last().map(MembershipRow::id) else {
                break;
            };
            after = last;
            for row in rows {
                if $sink
                    .send(Ok(ExportItem::Membership(row.into())))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
        }
        $tx.commit().await?;
        // The receiver may have gone; there is nothing left to tell it.
        let _ = $sink.send(Ok(ExportItem::End($cursor))).await;
        Ok(())
    }};
}

pub(crate) use export_body;

/// The members of group `1` active at time `2`, by member id after `3`, at most `4` (with
/// `member_source`, only members of source system `5`): each member's last membership change up
/// to then, where it is an addition. `mark` is the backend's placeholder.
pub fn members_at(mark: char, member_source: bool) -> String {
    let members = if member_source {
        format!(" AND member_id IN (SELECT id FROM resource WHERE source_system = {mark}5)")
    } else {
        String::new()
    };
    format!(
        "SELECT member_id, at FROM (SELECT member_id, kind, at, row_number() OVER \
           (PARTITION BY member_id ORDER BY seq DESC) AS k FROM change \
           WHERE group_id = {mark}1 AND kind IN ({}, {}) AND at <= {mark}2) latest \
         WHERE k = 1 AND kind = {} AND member_id > {mark}3{members} \
         ORDER BY member_id LIMIT {mark}4",
        ChangeKind::MembershipAdded.code(),
        ChangeKind::MembershipRemoved.code(),
        ChangeKind::MembershipAdded.code(),
    )
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
         retention was deleted. Export a fresh snapshot (GET /api/v1/export) and follow the \
         feed from its cursor",
        after.encode()
    ))
}
