//! SQL that both backends run unchanged (SQLite accepts `$N` parameters and `RETURNING`), and
//! the list queries, built for either backend.

use super::db::Dialect;
use super::query::Sql;
use super::rows::{
    AUDIT_COLUMNS, MEMBERSHIP_COLUMNS, OPERATION_COLUMNS, RESOURCE_COLUMNS, TOKEN_COLUMNS,
};
use crate::domain::audit::AuditFilter;
use crate::domain::membership::MembershipFilter;
use crate::domain::operation::OperationFilter;
use crate::domain::page::PageRequest;
use crate::domain::resource::ResourceFilter;
use crate::domain::ResourceId;
use std::sync::LazyLock;
use uuid::Uuid;

/// Builds a statement once, with the column lists filled in.
macro_rules! statement {
    ($name:ident, $($part:expr),+ $(,)?) => {
        pub static $name: LazyLock<String> = LazyLock::new(|| [$($part),+].concat());
    };
}

statement!(
    INSERT_RESOURCE,
    "INSERT INTO resource (id, type, typename, subtype, source_system, identifier, external_id, \
     displayname, description, notes, tags, active, expires_at, created, modified) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14) RETURNING ",
    RESOURCE_COLUMNS
);

statement!(
    SELECT_RESOURCE,
    "SELECT ",
    RESOURCE_COLUMNS,
    " FROM resource WHERE id = $1"
);

statement!(
    UPDATE_RESOURCE,
    "UPDATE resource SET subtype = $2, identifier = $3, external_id = $4, displayname = $5, \
     description = $6, notes = $7, tags = $8, active = $9, expires_at = $10, modified = $11, \
     deactivation_reason = CASE WHEN $9 THEN NULL ELSE deactivation_reason END \
     WHERE id = $1 RETURNING ",
    RESOURCE_COLUMNS
);

statement!(
    SOFT_DELETE_RESOURCE,
    "UPDATE resource SET deleted = true, deleted_at = $2, modified = $2 \
     WHERE id = $1 AND NOT deleted RETURNING ",
    RESOURCE_COLUMNS
);

statement!(
    RESTORE_RESOURCE,
    "UPDATE resource SET deleted = false, deleted_at = NULL, modified = $2 \
     WHERE id = $1 AND deleted RETURNING ",
    RESOURCE_COLUMNS
);

/// Ends every active membership in which the resource is the group or the member.
pub const END_MEMBERSHIPS_OF: &str = "UPDATE group_member \
     SET removed = true, removed_timestamp = $2, last_operation_id = $3 \
     WHERE (group_id = $1 OR member_id = $1) AND NOT removed";

statement!(
    SELECT_MEMBERSHIP,
    "SELECT ",
    MEMBERSHIP_COLUMNS,
    " FROM group_member WHERE group_id = $1 AND member_id = $2"
);

// Adds, re-activates or confirms a membership. Omitted attributes keep their stored value.
statement!(
    UPSERT_MEMBERSHIP,
    "INSERT INTO group_member (source, group_id, member_id, member_name, contributing, \
     last_operation_id, created_timestamp) VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (group_id, member_id) DO UPDATE SET \
     removed = false, removed_timestamp = NULL, \
     member_name = COALESCE(excluded.member_name, group_member.member_name), \
     contributing = CASE WHEN group_member.removed THEN excluded.contributing \
       ELSE COALESCE(excluded.contributing, group_member.contributing) END, \
     last_operation_id = excluded.last_operation_id RETURNING ",
    MEMBERSHIP_COLUMNS
);

/// Records an operation that is already complete when it is created (single writes, deletes).
pub const INSERT_COMPLETED_OPERATION: &str = "INSERT INTO operation \
     (type, status, group_id, source_system, token_name, created, modified, completed) \
     VALUES ($1, 'complete', $2, $3, $4, $5, $5, $5) RETURNING id";

// Sets the counts of an operation once its writes are known.
statement!(
    SET_OPERATION_COUNTS,
    "UPDATE operation SET added = $2, reactivated = $3, removed = $4, updated = $5, \
     unchanged = $6, rejected = $7 WHERE id = $1 RETURNING ",
    OPERATION_COLUMNS
);

/// Appends change records: the rows of values follow (see `records::log_changes`). Bulk applies
/// append theirs set-based instead.
pub const INSERT_CHANGE: &str = "INSERT INTO change \
     (at, kind, resource_id, group_id, member_id, source_system, operation_id, token_name, attrs) \
     VALUES ";

statement!(
    SELECT_OPERATION,
    "SELECT ",
    OPERATION_COLUMNS,
    " FROM operation WHERE id = $1"
);

/// Appends audit entries: the rows of values follow (see `records::audit_all`); runs inside the
/// transaction of the writes it records.
pub const INSERT_AUDIT: &str = "INSERT INTO audit \
     (at, token_id, token_name, action, target, request_id, detail) VALUES ";

statement!(
    INSERT_TOKEN,
    "INSERT INTO api_token (id, name, secret_hash, scopes, source_system, expires_at, created, \
     read_scope) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
    TOKEN_COLUMNS
);

/// Inserts the bootstrap token only while no token exists.
pub const INSERT_BOOTSTRAP_TOKEN: &str = "INSERT INTO api_token \
     (id, name, secret_hash, scopes, source_system, expires_at, created) \
     SELECT $1, $2, $3, $4, NULL, NULL, $5 WHERE NOT EXISTS (SELECT 1 FROM api_token) \
     ON CONFLICT DO NOTHING";

statement!(
    SELECT_TOKEN,
    "SELECT ",
    TOKEN_COLUMNS,
    " FROM api_token WHERE id = $1"
);

statement!(
    SELECT_TOKEN_BY_NAME,
    "SELECT ",
    TOKEN_COLUMNS,
    " FROM api_token WHERE name = $1"
);

statement!(
    SELECT_TOKEN_BY_HASH,
    "SELECT ",
    TOKEN_COLUMNS,
    ", secret_hash FROM api_token WHERE secret_hash = $1"
);

statement!(
    LIST_TOKENS,
    "SELECT ",
    TOKEN_COLUMNS,
    " FROM api_token WHERE $1 IS NULL OR id > $1 ORDER BY id LIMIT $2"
);

statement!(
    REVOKE_TOKEN,
    "UPDATE api_token SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING ",
    TOKEN_COLUMNS
);

/// Records use at most once a minute per token, so reads do not turn into writes.
pub const TOUCH_TOKEN: &str = "UPDATE api_token SET last_used_at = $2 \
     WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)";

/// `SELECT … FROM audit` newest first, before the cursor, one row past the page.
pub fn audit_list(filter: &AuditFilter, page: &PageRequest<i64>) -> Sql {
    let mut q = Sql::new(format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE true"));
    if let Some(after) = page.after {
        q.push(" AND id < ").push_bind(after);
    }
    if let Some(target) = &filter.target {
        q.push(" AND target = ").push_bind(target);
    }
    if let Some(name) = &filter.token_name {
        q.push(" AND token_name = ").push_bind(name);
    }
    if let Some(since) = filter.since {
        q.push(" AND at >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        q.push(" AND at < ").push_bind(until);
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(page.fetch());
    q
}

/// `SELECT … FROM resource` with the filter, in id order after the cursor, one row past the page.
pub fn resource_list(d: Dialect, filter: &ResourceFilter, page: &PageRequest<Uuid>) -> Sql {
    let mut q = Sql::new(format!(
        "SELECT {RESOURCE_COLUMNS} FROM resource WHERE true"
    ));
    if let Some(after) = page.after {
        q.push(" AND id > ").push_bind(after);
    }
    if !filter.include_deleted {
        q.push(" AND NOT deleted");
    }
    if let Some(ty) = filter.ty {
        q.push(" AND type = ").push_bind(ty.code());
    }
    if let Some(subtype) = filter.subtype {
        q.push(" AND subtype = ").push_bind(subtype.code());
    }
    for (column, value) in [
        ("source_system", &filter.source_system),
        ("identifier", &filter.identifier),
        ("external_id", &filter.external_id),
    ] {
        if let Some(v) = value {
            q.push(format!(" AND {column} = ")).push_bind(v);
        }
    }
    if let Some(v) = filter.active {
        q.push(" AND active = ").push_bind(v);
    }
    if let Some(at) = filter.expires_before {
        q.push(" AND expires_at IS NOT NULL AND expires_at < ")
            .push_bind(at);
    }
    if let Some(tag) = &filter.tag {
        let (before, after) = d.tag_test();
        q.push(" AND ").push(before).push_bind(tag).push(after);
    }
    q.push(" ORDER BY id LIMIT ").push_bind(page.fetch());
    q
}

/// Which side of the membership table a list reads.
#[derive(Debug, Clone, Copy)]
pub enum MembershipSide {
    /// The members of this group, in member-id order.
    MembersOf(ResourceId),
    /// The groups of this member, in group-id order.
    GroupsOf(ResourceId),
}

/// `SELECT … FROM group_member` for one side, after the cursor, one row past the page.
/// With `head`, each row also carries that expression as `head` (the feed's head, read in the
/// rows' snapshot).
pub fn membership_list(
    side: MembershipSide,
    filter: &MembershipFilter,
    page: &PageRequest<Uuid>,
    head: Option<&str>,
) -> Sql {
    let (fixed, ordered, id) = match side {
        MembershipSide::MembersOf(id) => ("group_id", "member_id", id),
        MembershipSide::GroupsOf(id) => ("member_id", "group_id", id),
    };
    let columns = MEMBERSHIP_COLUMNS
        .split(", ")
        .map(|c| format!("m.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    // The member's state is looked up for the rows of the page only (a scalar subquery by
    // primary key), never by joining the member table as a whole.
    let member_active = "(SELECT a.active FROM resource a WHERE a.id = m.member_id)";
    let head = head.map(|h| format!(", {h} AS head")).unwrap_or_default();
    let mut q = Sql::new(format!(
        "SELECT {columns}, {member_active} AS member_active{head} FROM group_member m"
    ));
    if filter.ty.is_some() || filter.source_system.is_some() {
        q.push(format!(" JOIN resource r ON r.id = m.{ordered}"));
    }
    q.push(format!(" WHERE m.{fixed} = ")).push_bind(id);
    if let Some(after) = page.after {
        q.push(format!(" AND m.{ordered} > ")).push_bind(after);
    }
    if !filter.include_removed {
        q.push(" AND NOT m.removed");
    }
    if let Some(ty) = filter.ty {
        q.push(" AND r.type = ").push_bind(ty.code());
    }
    if let Some(source) = &filter.source_system {
        q.push(" AND r.source_system = ").push_bind(source);
    }
    match filter.active {
        Some(true) => q.push(format!(" AND {member_active}")),
        Some(false) => q.push(format!(" AND NOT {member_active}")),
        None => &mut q,
    };
    q.push(format!(" ORDER BY m.{ordered} LIMIT "))
        .push_bind(page.fetch());
    q
}

/// `SELECT … FROM operation` newest first, before the cursor, one row past the page.
pub fn operation_list(filter: &OperationFilter, page: &PageRequest<i64>) -> Sql {
    let mut q = Sql::new(format!(
        "SELECT {OPERATION_COLUMNS} FROM operation WHERE true"
    ));
    if let Some(after) = page.after {
        q.push(" AND id < ").push_bind(after);
    }
    if let Some(ty) = filter.ty {
        q.push(" AND type = ").push_bind(ty.name());
    }
    if let Some(status) = filter.status {
        q.push(" AND status = ").push_bind(status.name());
    }
    if let Some(source) = &filter.source_system {
        q.push(" AND source_system = ").push_bind(source);
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(page.fetch());
    q
}
