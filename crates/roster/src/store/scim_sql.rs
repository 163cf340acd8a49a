//! SCIM reads' SQL, shared by both backends: a resolved filter becomes a WHERE clause whose
//! values are all bound, never spliced. Columns serve the attributes roster keeps in columns; the
//! rest are read from the resource's SCIM document with each dialect's JSON functions. An
//! attribute without a value makes a comparison null, which a WHERE clause takes for false, as
//! SCIM does; under `not` the operand is made two-valued first (`NOT coalesce(…, FALSE)`). Positive
//! comparisons stay plain (`lower(r.identifier) = lower($1)`), so that indexes serve them.

use super::query::Sql;
use crate::domain::change::ChangeKind;
use crate::domain::resource::ResourceType;
use crate::domain::scim::{Attr, CompValue, CompareOp, Cond, List, ScimQuery, ScimType, ScimWrite};
use crate::domain::{OperationId, ResourceId};
use crate::store::query::TextList;
use crate::store::resource_sql::Dialect;
use crate::store::rows::RESOURCE_COLUMNS;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The resource columns, read through the alias `r`, then the SCIM document.
pub fn columns() -> String {
    let mut out: Vec<String> = RESOURCE_COLUMNS
        .split(',')
        .map(|c| format!("r.{}", c.trim()))
        .collect();
    out.push("r.scim".to_owned());
    out.join(", ")
}

/// A sort key: the column or document value a list is ordered by, without regard to case where
/// SCIM compares without it.
fn sort_expression(d: Dialect, attr: &Attr) -> String {
    match attr {
        Attr::Id | Attr::ExternalId | Attr::Active | Attr::Created | Attr::LastModified => {
            text(d, attr)
        }
        _ => format!("lower({})", text(d, attr)),
    }
}

/// Appends `cond` to `q`.
pub fn push_cond(q: &mut Sql, d: Dialect, cond: &Cond) {
    match cond {
        Cond::And(a, b) | Cond::Or(a, b) => {
            q.push("(");
            push_cond(q, d, a);
            q.push(if matches!(cond, Cond::And(..)) {
                " AND "
            } else {
                " OR "
            });
            push_cond(q, d, b);
            q.push(")");
        }
        Cond::Not(a) => {
            q.push("NOT coalesce(");
            push_cond(q, d, a);
            q.push(", FALSE)");
        }
        Cond::Never => {
            q.push("FALSE");
        }
        Cond::Present(attr) => {
            q.push(present(d, attr));
        }
        Cond::Any(list, inner) => {
            q.push(exists(d, list));
            push_cond(q, d, inner);
            q.push(")");
        }
        Cond::Compare(attr, op, value) => {
            q.push("(");
            push_compare(q, d, attr, *op, value);
            q.push(")");
        }
    }
}

fn push_compare(q: &mut Sql, d: Dialect, attr: &Attr, op: CompareOp, value: &CompValue) {
    let negate = op == CompareOp::Ne;
    match value {
        CompValue::Null => {
            let test = if negate { "IS NOT NULL" } else { "IS NULL" };
            q.push(format!("{} {test}", text(d, attr)));
        }
        CompValue::Bool(b) => {
            let test = boolean(d, attr, *b);
            if negate {
                q.push(format!("NOT coalesce({test}, FALSE)"));
            } else {
                q.push(test);
            }
        }
        CompValue::Num(n) => {
            if negate {
                q.push("NOT coalesce(");
            }
            q.push(format!("{} {} ", number(d, attr), sql_op(op)))
                .push_bind(*n);
            if negate {
                q.push(", FALSE)");
            }
        }
        CompValue::Str(s) => push_string(q, d, attr, op, s),
    }
}

fn push_string(q: &mut Sql, d: Dialect, attr: &Attr, op: CompareOp, s: &str) {
    let negate = op == CompareOp::Ne;
    if negate {
        q.push("NOT coalesce(");
    }
    match attr {
        Attr::Id | Attr::MemberId | Attr::GroupId => match Uuid::parse_str(s) {
            Ok(id) => {
                q.push(format!("{} = ", column(attr))).push_bind(id);
            }
            Err(_) => {
                q.push("FALSE");
            }
        },
        Attr::Created | Attr::LastModified => {
            match DateTime::parse_from_rfc3339(s) {
                Ok(at) => {
                    let op = if negate { CompareOp::Eq } else { op };
                    q.push(format!("{} {} ", column(attr), sql_op(op)))
                        .push_bind(at.with_timezone(&Utc));
                }
                Err(_) => {
                    q.push("FALSE");
                }
            };
        }
        _ if s.is_empty() && op.is_substring() => {
            q.push(format!("{} IS NOT NULL", text(d, attr)));
        }
        _ => {
            let exact = matches!(attr, Attr::ExternalId);
            let left = if exact {
                text(d, attr)
            } else {
                format!("lower({})", text(d, attr))
            };
            let right = |q: &mut Sql| {
                if exact {
                    q.push("(").push_bind(s.to_owned()).push(")");
                } else {
                    q.push("lower(").push_bind(s.to_owned()).push(")");
                }
            };
            match op {
                CompareOp::Co => {
                    q.push(match d {
                        Dialect::Postgres => format!("strpos({left}, "),
                        Dialect::Sqlite => format!("instr({left}, "),
                    });
                    right(q);
                    q.push(") > 0");
                }
                CompareOp::Sw => {
                    q.push(format!("substr({left}, 1, length("));
                    right(q);
                    q.push(")) = ");
                    right(q);
                }
                CompareOp::Ew => {
                    q.push(match d {
                        Dialect::Postgres => format!("right({left}, length("),
                        Dialect::Sqlite => format!("substr({left}, -length("),
                    });
                    right(q);
                    q.push(")) = ");
                    right(q);
                }
                CompareOp::Ne => {
                    q.push(format!("{left} = "));
                    right(q);
                }
                _ => {
                    q.push(format!("{left} {} ", sql_op(op)));
                    right(q);
                }
            }
        }
    }
    if negate {
        q.push(", FALSE)");
    }
}

fn sql_op(op: CompareOp) -> &'static str {
    match op {
        CompareOp::Gt => ">",
        CompareOp::Ge => ">=",
        CompareOp::Lt => "<",
        CompareOp::Le => "<=",
        _ => "=",
    }
}

/// The column of an attribute kept in one.
fn column(attr: &Attr) -> &'static str {
    match attr {
        Attr::Id => "r.id",
        Attr::ExternalId => "r.external_id",
        Attr::UserName => "r.identifier",
        Attr::DisplayName => "r.displayname",
        Attr::Active => "r.active",
        Attr::Created => "r.created",
        Attr::LastModified => "r.modified",
        Attr::MemberId => "gm.member_id",
        Attr::GroupId => "gm.group_id",
        Attr::MemberDisplay => "coalesce(gm.member_name, m.displayname)",
        Attr::Doc(_) | Attr::Element(_) => "NULL",
    }
}

/// `'{"a","b"}'` (PostgreSQL) or `'$."a"."b"'` (SQLite). The keys come from validated attribute
/// names and schema URNs, which hold no quotes, braces or backslashes.
fn json_path(d: Dialect, keys: &[String]) -> String {
    let quoted: Vec<String> = keys
        .iter()
        .map(|k| format!("\"{}\"", k.replace(['"', '\'', '\\', '{', '}'], "")))
        .collect();
    match d {
        Dialect::Postgres => format!("'{{{}}}'", quoted.join(",")),
        Dialect::Sqlite => format!("'$.{}'", quoted.join(".")),
    }
}

/// The JSON value of a document attribute or an element's sub-attribute (PostgreSQL: `jsonb`).
fn json(d: Dialect, attr: &Attr) -> Option<String> {
    Some(match (attr, d) {
        (Attr::Doc(keys), Dialect::Postgres) => format!("(r.scim #> {})", json_path(d, keys)),
        (Attr::Doc(keys), Dialect::Sqlite) => {
            format!("json_extract(r.scim, {})", json_path(d, keys))
        }
        (Attr::Element(Some(sub)), Dialect::Postgres) => {
            format!("(e.value -> {})", quote(sub))
        }
        // A list may hold plain values, which are not JSON documents to look into.
        (Attr::Element(Some(sub)), Dialect::Sqlite) => format!(
            "CASE WHEN e.type = 'object' THEN json_extract(e.value, {}) END",
            json_path(d, std::slice::from_ref(sub))
        ),
        (Attr::Element(None), _) => "e.value".to_owned(),
        _ => return None,
    })
}

/// A SQL string literal of a validated name.
fn quote(name: &str) -> String {
    format!("'{}'", name.replace('\'', ""))
}

/// The attribute as text: a string value only, on both backends.
fn text(d: Dialect, attr: &Attr) -> String {
    match (json(d, attr), d) {
        (Some(j), Dialect::Postgres) => {
            format!("(CASE WHEN jsonb_typeof({j}) = 'string' THEN {j} #>> '{{}}' END)")
        }
        (Some(j), Dialect::Sqlite) => {
            format!("(CASE WHEN {} = 'text' THEN {j} END)", json_kind(d, attr))
        }
        (None, _) => column(attr).to_owned(),
    }
}

/// The arguments of SQLite's `json_type` for a document attribute or an element's sub-attribute.
fn json_type_args(d: Dialect, attr: &Attr) -> String {
    match attr {
        Attr::Doc(keys) => format!("r.scim, {}", json_path(d, keys)),
        Attr::Element(Some(sub)) => {
            format!("e.value, {}", json_path(d, std::slice::from_ref(sub)))
        }
        _ => "NULL".to_owned(),
    }
}

/// The JSON type name of a document value: PostgreSQL's `jsonb_typeof` names, SQLite's
/// `json_type` ones (`true`, `false`, `integer`, `real`, `text`, `array`, `object`, `null`).
fn json_kind(d: Dialect, attr: &Attr) -> String {
    match (d, attr) {
        (Dialect::Sqlite, Attr::Element(None)) => "e.type".to_owned(),
        (Dialect::Sqlite, Attr::Element(Some(_))) => format!(
            "CASE WHEN e.type = 'object' THEN json_type({}) END",
            json_type_args(d, attr)
        ),
        (Dialect::Sqlite, _) => format!("json_type({})", json_type_args(d, attr)),
        (Dialect::Postgres, _) => format!(
            "jsonb_typeof({})",
            json(d, attr).unwrap_or_else(|| "NULL::jsonb".to_owned())
        ),
    }
}

/// A test that the attribute is the boolean `b`.
fn boolean(d: Dialect, attr: &Attr, b: bool) -> String {
    match attr {
        Attr::Active => format!("r.active = {}", if b { "TRUE" } else { "FALSE" }),
        Attr::Doc(_) | Attr::Element(_) => match d {
            Dialect::Postgres => format!(
                "coalesce({} = '{b}'::jsonb, FALSE)",
                json(d, attr).unwrap_or_default()
            ),
            Dialect::Sqlite => format!("coalesce({} = '{b}', FALSE)", json_kind(d, attr)),
        },
        _ => "FALSE".to_owned(),
    }
}

/// The attribute as a number, or null when it is not one.
fn number(d: Dialect, attr: &Attr) -> String {
    match (d, json(d, attr)) {
        (Dialect::Postgres, Some(j)) => {
            format!("(CASE WHEN jsonb_typeof({j}) = 'number' THEN ({j} #>> '{{}}')::float8 END)")
        }
        (Dialect::Sqlite, Some(j)) => format!(
            "(CASE WHEN {} IN ('integer', 'real') THEN {j} END)",
            json_kind(d, attr)
        ),
        (_, None) => "NULL".to_owned(),
    }
}

/// A test that the attribute has a value: not null, not an empty string, array or object.
fn present(d: Dialect, attr: &Attr) -> String {
    match attr {
        Attr::Active
        | Attr::Created
        | Attr::LastModified
        | Attr::Id
        | Attr::MemberId
        | Attr::GroupId => "TRUE".to_owned(),
        Attr::Doc(_) | Attr::Element(_) => {
            let kind = json_kind(d, attr);
            let empty = match d {
                Dialect::Postgres => format!(
                    "{} IN ('\"\"'::jsonb, '[]'::jsonb, '{{}}'::jsonb)",
                    json(d, attr).unwrap_or_default()
                ),
                Dialect::Sqlite => format!(
                    "coalesce({}, '') IN ('', '[]', '{{}}')",
                    json(d, attr).unwrap_or_default()
                ),
            };
            format!("coalesce({kind} <> 'null' AND NOT ({empty}), FALSE)")
        }
        _ => format!("coalesce({} <> '', FALSE)", column(attr)),
    }
}

/// The opening of an `EXISTS` over the elements of a multi-valued attribute; the caller closes it.
/// A group's members (`m`) and a user's groups (`g`) are only the users and groups of the
/// resource's own source, which is the base's: a filter never looks into another source.
fn exists(d: Dialect, list: &List) -> String {
    let (user, group) = (ResourceType::User.code(), ResourceType::Group.code());
    match (list, d) {
        (List::Members, _) => format!(
            "EXISTS (SELECT 1 FROM group_member gm JOIN resource m ON m.id = gm.member_id \
             WHERE gm.group_id = r.id AND NOT gm.removed \
             AND m.source_system = r.source_system AND m.type IN ({user}, {group}) AND "
        ),
        (List::Groups, _) => format!(
            "EXISTS (SELECT 1 FROM group_member gm JOIN resource g ON g.id = gm.group_id \
             WHERE gm.member_id = r.id AND NOT gm.removed \
             AND g.source_system = r.source_system AND g.type = {group} AND "
        ),
        (List::Doc(keys), Dialect::Postgres) => {
            let j = format!("(r.scim #> {})", json_path(d, keys));
            format!(
                "EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof({j}) = 'array' \
                 THEN {j} ELSE '[]'::jsonb END) AS e(value) WHERE "
            )
        }
        (List::Doc(keys), Dialect::Sqlite) => {
            let path = json_path(d, keys);
            format!(
                "EXISTS (SELECT 1 FROM json_each(r.scim, {path}) AS e \
                 WHERE json_type(r.scim, {path}) = 'array' AND "
            )
        }
    }
}

/// `r.source_system = … AND r.type = … AND NOT r.deleted`, then the filter.
pub fn push_scope(q: &mut Sql, d: Dialect, source: &str, ty: ScimType, cond: Option<&Cond>) {
    // The type is written out, not bound, so that the partial indexes of SCIM's lookups apply.
    q.push("r.source_system = ")
        .push_bind(source.to_owned())
        .push(format!(
            " AND r.type = {} AND NOT r.deleted",
            ty.resource_type().code()
        ));
    if let Some(cond) = cond {
        q.push(" AND ");
        push_cond(q, d, cond);
    }
}

/// A statement reading the sort key of one row (bound by id) as text, for a cursor to carry.
pub fn sort_key_of(attr: &Attr, d: Dialect) -> String {
    format!(
        "SELECT CAST({} AS {}) FROM resource r WHERE r.id = {}",
        sort_expression(d, attr),
        if d == Dialect::Postgres {
            "text"
        } else {
            "TEXT"
        },
        if d == Dialect::Postgres { "$1" } else { "?1" }
    )
}

/// A cursor's key bound back as the type of the sort expression.
fn typed_key(d: Dialect, attr: &Attr) -> (&'static str, &'static str) {
    match (d, attr) {
        (Dialect::Postgres, Attr::Active) => ("CAST(", " AS boolean)"),
        (Dialect::Postgres, Attr::Created | Attr::LastModified) => ("CAST(", " AS timestamptz)"),
        (Dialect::Sqlite, Attr::Active) => ("CAST(", " AS INTEGER)"),
        _ => ("", ""),
    }
}

/// ` AND ` the rows after a cursor's row in the order of [`push_order`] (missing values last,
/// then by id).
pub fn push_after(q: &mut Sql, d: Dialect, query: &ScimQuery) {
    let Some(after) = &query.after else {
        return;
    };
    let sort = query.sort.as_ref().filter(|a| **a != Attr::Id);
    match (sort, &after.key) {
        (None, _) => {
            let past = if query.descending && query.sort.is_some() {
                " AND r.id < "
            } else {
                " AND r.id > "
            };
            q.push(past).push_bind(after.id);
        }
        (Some(attr), None) => {
            q.push(format!(
                " AND {} IS NULL AND r.id > ",
                sort_expression(d, attr)
            ))
            .push_bind(after.id);
        }
        (Some(attr), Some(key)) => {
            let e = sort_expression(d, attr);
            let (open, close) = typed_key(d, attr);
            let beyond = if query.descending { "<" } else { ">" };
            q.push(format!(" AND ({e} {beyond} {open}"))
                .push_bind(key.clone())
                .push(format!("{close} OR ({e} = {open}"))
                .push_bind(key.clone())
                .push(format!("{close} AND r.id > "))
                .push_bind(after.id)
                .push(format!(") OR {e} IS NULL)"));
        }
    }
}

/// `ORDER BY` the sort key (missing values last), then id; the page.
pub fn push_order(q: &mut Sql, d: Dialect, query: &ScimQuery) {
    q.push(" ORDER BY ");
    if let Some(attr) = &query.sort {
        let direction = if query.descending { "DESC" } else { "ASC" };
        q.push(format!(
            "{} {direction} NULLS LAST, ",
            sort_expression(d, attr)
        ));
    }
    // One row more than the page tells whether another page follows.
    q.push("r.id LIMIT ")
        .push_bind(query.count + 1)
        .push(" OFFSET ")
        .push_bind(query.offset);
}

/// What a membership edit's statements bind.
pub struct MemberStep<'s> {
    pub group: ResourceId,
    pub op: OperationId,
    pub at: DateTime<Utc>,
    pub source: &'s str,
    pub token: Option<&'s str>,
}

/// `WITH input(member_id) AS (VALUES (…), …) ` over the named members.
fn push_input(q: &mut Sql, ids: &[ResourceId]) {
    q.push("WITH input(member_id) AS (VALUES ");
    for (i, id) in ids.iter().enumerate() {
        q.push(if i == 0 { "(" } else { ", (" })
            .push_bind(*id)
            .push(")");
    }
    q.push(") ");
}

/// The named members that are not live users or groups of the group's source, or the group.
pub fn push_invalid_members(q: &mut Sql, step: &MemberStep<'_>, ids: &[ResourceId]) {
    push_input(q, ids);
    q.push(
        "SELECT i.member_id FROM input i LEFT JOIN resource m ON m.id = i.member_id \
         AND NOT m.deleted AND m.type IN (1, 2) AND m.source_system = ",
    )
    .push_bind(step.source.to_owned())
    .push(" WHERE m.id IS NULL OR m.id = ")
    .push_bind(step.group.0);
}

/// How many of the named members have no membership row yet, and how many an ended one.
pub fn push_count_fresh(q: &mut Sql, step: &MemberStep<'_>, ids: &[ResourceId]) {
    push_input(q, ids);
    q.push(
        "SELECT coalesce(sum(CASE WHEN gm.member_id IS NULL THEN 1 ELSE 0 END), 0), \
         coalesce(sum(CASE WHEN gm.removed THEN 1 ELSE 0 END), 0) \
         FROM input i LEFT JOIN group_member gm ON gm.member_id = i.member_id AND gm.group_id = ",
    )
    .push_bind(step.group.0);
}

/// A statement of a membership edit, written into an empty builder.
pub type MemberStatement = fn(&mut Sql, &MemberStep<'_>, &[ResourceId]);

/// The change record of each named member that `predicate` (on `gm`, with the group bound
/// first) selects, as the SQLite form writes it before the write itself.
fn push_log_of(q: &mut Sql, step: &MemberStep<'_>, kind: ChangeKind, from: &str) {
    q.push("INSERT INTO change (at, kind, group_id, member_id, source_system, operation_id, token_name) SELECT ")
        .push_bind(step.at)
        .push(format!(", {}, ", kind.code()))
        .push_bind(step.group.0)
        .push(", member_id, ")
        .push_bind(step.source.to_owned())
        .push(", ")
        .push_bind(step.op.0)
        .push(", ")
        .push_bind(step.token.map(str::to_owned))
        .push(format!(" FROM {from}"));
}

/// SQLite: the change record of each named member whose membership is active (or is not), written
/// before the write that changes it.
fn push_sqlite_log(
    q: &mut Sql,
    step: &MemberStep<'_>,
    ids: &[ResourceId],
    kind: ChangeKind,
    active: bool,
) {
    push_input(q, ids);
    let test = if active { "EXISTS" } else { "NOT EXISTS" };
    push_log_of(
        q,
        step,
        kind,
        &format!(
            "input i WHERE {test} (SELECT 1 FROM group_member gm \
             WHERE gm.member_id = i.member_id AND NOT gm.removed AND gm.group_id = "
        ),
    );
    q.push_bind(step.group.0).push(") AND i.member_id");
    push_of_source(q, step);
}

/// ` IN (…)` the resources of the step's source: a SCIM edit touches no member of another
/// source, which its base does not show.
fn push_of_source(q: &mut Sql, step: &MemberStep<'_>) {
    q.push(" IN (SELECT s.id FROM resource s WHERE s.source_system = ")
        .push_bind(step.source.to_owned())
        .push(")");
}

/// The statements that add the named members (new or re-activated), each with its change record:
/// one on PostgreSQL (`WITH … RETURNING` into the log), two on SQLite (the log, then the write).
pub fn add_statements(d: Dialect) -> Vec<MemberStatement> {
    match d {
        Dialect::Postgres => vec![|q, step, ids| {
            push_input(q, ids);
            q.push(", ins AS (");
            push_upsert(q, step);
            q.push(" RETURNING member_id) ");
            push_log_of(q, step, ChangeKind::MembershipAdded, "ins");
        }],
        Dialect::Sqlite => vec![
            |q, step, ids| push_sqlite_log(q, step, ids, ChangeKind::MembershipAdded, false),
            |q, step, ids| {
                push_input(q, ids);
                push_upsert(q, step);
            },
        ],
    }
}

/// Inserts a membership for each input member, or re-activates its ended one.
fn push_upsert(q: &mut Sql, step: &MemberStep<'_>) {
    q.push(
        "INSERT INTO group_member (source, group_id, member_id, last_operation_id, \
         created_timestamp) SELECT ",
    )
    .push_bind(step.source.to_owned())
    .push(", ")
    .push_bind(step.group.0)
    .push(", member_id, ")
    .push_bind(step.op.0)
    .push(", ")
    .push_bind(step.at)
    .push(
        " FROM input WHERE true ORDER BY member_id ON CONFLICT (group_id, member_id) DO UPDATE \
         SET removed = false, removed_timestamp = NULL, \
         last_operation_id = excluded.last_operation_id WHERE group_member.removed",
    );
}

/// The statements that end the named members' active memberships (of members of the step's
/// source only), each with its change record; the last one's row count is the number ended.
pub fn remove_statements(d: Dialect) -> Vec<MemberStatement> {
    match d {
        Dialect::Postgres => vec![|q, step, ids| {
            push_input(q, ids);
            q.push(", gone AS (UPDATE group_member gm SET removed = true, removed_timestamp = ")
                .push_bind(step.at)
                .push(", last_operation_id = ")
                .push_bind(step.op.0)
                .push(" FROM input i WHERE gm.member_id = i.member_id AND NOT gm.removed AND gm.group_id = ")
                .push_bind(step.group.0)
                .push(" AND gm.member_id");
            push_of_source(q, step);
            q.push(" RETURNING gm.member_id) ");
            push_log_of(q, step, ChangeKind::MembershipRemoved, "gone");
        }],
        Dialect::Sqlite => vec![
            |q, step, ids| push_sqlite_log(q, step, ids, ChangeKind::MembershipRemoved, true),
            |q, step, ids| {
                push_input(q, ids);
                q.push("UPDATE group_member SET removed = true, removed_timestamp = ")
                    .push_bind(step.at)
                    .push(", last_operation_id = ")
                    .push_bind(step.op.0)
                    .push(" WHERE NOT removed AND member_id IN (SELECT member_id FROM input) AND group_id = ")
                    .push_bind(step.group.0)
                    .push(" AND member_id");
                push_of_source(q, step);
            },
        ],
    }
}

/// Inserts users and groups with their SCIM documents, all created and modified `at`, and returns
/// the rows written (`RESOURCE_COLUMNS`). A row whose key a live resource already has (one written
/// by a transaction that committed meanwhile) is skipped.
pub fn insert_resources(rows: &[(ResourceId, &ScimWrite)], at: DateTime<Utc>) -> Sql {
    let mut q = Sql::new(
        "INSERT INTO resource (id, type, typename, source_system, identifier, external_id, \
         displayname, tags, active, created, modified, scim) VALUES ",
    );
    for (i, (id, write)) in rows.iter().enumerate() {
        let ty = write.ty.resource_type();
        q.push(if i == 0 { "(" } else { ", (" })
            .push_bind(*id)
            .push(format!(", {}, '{}', ", ty.code(), ty.name()))
            .push_bind(write.source_system.as_str())
            .push(", ")
            .push_bind(write.identifier.as_deref())
            .push(", ")
            .push_bind(write.external_id.as_deref())
            .push(", ")
            .push_bind(write.displayname.as_deref())
            .push(", ")
            .push_bind(TextList::default())
            .push(", ")
            .push_bind(write.active.unwrap_or(true))
            .push(", ")
            .push_bind(at)
            .push(", ")
            .push_bind(at)
            .push(", ")
            .push_bind(serde_json::Value::Object(write.doc.clone()))
            .push(")");
    }
    q.push(format!(
        " ON CONFLICT DO NOTHING RETURNING {RESOURCE_COLUMNS}"
    ));
    q
}

/// For each of the writes numbered `asked`: its number, whether a live user of its source has its
/// `userName` (a user's, without regard to case) and whether a live resource of its source has its
/// `externalId`. Planned with its arguments each time (see [`Sql::replanned`]).
pub fn taken(writes: &[ScimWrite], asked: &[usize]) -> Sql {
    let mut q = Sql::new("WITH asked(i, source_system, name, external_id) AS (VALUES ");
    let asked = asked.iter().filter_map(|&i| writes.get(i).map(|w| (i, w)));
    for (n, (i, write)) in asked.enumerate() {
        let name = write
            .identifier
            .as_deref()
            .filter(|_| write.ty == ScimType::User);
        q.push(if n == 0 { "(" } else { ", (" })
            .push(i)
            .push(", ")
            .push_bind(write.source_system.as_str())
            .push(", ")
            .push_bind(name)
            .push(", ")
            .push_bind(write.external_id.as_deref())
            .push(")");
    }
    q.push(
        ") SELECT a.i, \
         EXISTS (SELECT 1 FROM resource r WHERE r.source_system = a.source_system AND r.type = 1 \
           AND NOT r.deleted AND lower(r.identifier) = lower(a.name)), \
         EXISTS (SELECT 1 FROM resource r WHERE r.source_system = a.source_system \
           AND NOT r.deleted AND r.external_id = a.external_id) \
         FROM asked a",
    );
    q.replanned()
}
