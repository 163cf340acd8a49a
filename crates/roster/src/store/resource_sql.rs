//! Account sync's SQL, shared by both backends: full-updates and partial-updates of resources.
//! Statements are assembled from fragments that name each value by its fixed position in
//! [`Values`]. PostgreSQL writes each step and its change records in one
//! statement (`WITH … RETURNING`); SQLite, which has no data-modifying CTEs, selects the change
//! records with the step's predicate and then writes, in the same transaction.

use super::query::Sql;
use crate::domain::change::ChangeKind;
use crate::domain::resource::{ResourceType, Subtype};
use crate::domain::resource_sync::present;
use crate::store::engine_sql::Staging;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use super::db::Dialect;

/// The values a resource or lifecycle operation's statements bind. Every such statement binds
/// all of them, always in this order, so that the fragments it is assembled from can name a value
/// by its fixed position (PostgreSQL and SQLite both accept parameters a statement does not use):
///
/// `$1` source, `$2` op, `$3` at, `$4` token, `$5` fence, `$6` type, `$7` subtype, `$8` after_id,
/// `$9` after_chunk, `$10` after_line, `$11` limit, `$12` id, `$13` other, `$14` bound,
/// `$15` reason, `$16` cause.
#[derive(Debug, Clone)]
pub struct Values {
    pub source: String,
    pub op: i64,
    pub at: DateTime<Utc>,
    pub token: Option<String>,
    pub fence: DateTime<Utc>,
    pub ty: Option<i16>,
    pub subtype: Option<i16>,
    pub after_id: Uuid,
    pub after_chunk: i32,
    pub after_line: i32,
    pub limit: i64,
    pub id: Uuid,
    pub other: Option<Uuid>,
    pub bound: Option<String>,
    pub reason: Option<String>,
    pub cause: i64,
}

impl Values {
    /// `text` with every value bound at its position (see [`Values`]).
    pub fn sql(&self, text: &str) -> Sql {
        Sql::new(text.to_owned())
            .bind(self.source.as_str())
            .bind(self.op)
            .bind(self.at)
            .bind(self.token.as_deref())
            .bind(self.fence)
            .bind(self.ty)
            .bind(self.subtype)
            .bind(self.after_id)
            .bind(self.after_chunk)
            .bind(self.after_line)
            .bind(self.limit)
            .bind(self.id)
            .bind(self.other)
            .bind(self.bound.as_deref())
            .bind(self.reason.as_deref())
            .bind(self.cause)
    }

    /// Values for statements about resource `id` (and `other`), written at `at` by `token`.
    pub fn about(id: Uuid, other: Option<Uuid>, at: DateTime<Utc>, token: Option<&str>) -> Self {
        Self {
            source: String::new(),
            op: 0,
            at,
            token: token.map(str::to_owned),
            fence: at,
            ty: None,
            subtype: None,
            after_id: Uuid::nil(),
            after_chunk: -1,
            after_line: -1,
            limit: 0,
            id,
            other,
            bound: None,
            reason: None,
            cause: 0,
        }
    }
}

/// The columns a resource line is loaded into, in the order the backends write them.
pub const STAGING_COLUMNS: &str = "chunk, line, new_id, external_id, identifier, type, subtype, \
     displayname, description, notes, tags, active, expires_at, present, remove";

impl Dialect {
    pub(super) fn uuid(self) -> &'static str {
        match self {
            Self::Postgres => "uuid",
            Self::Sqlite => "BLOB",
        }
    }

    pub(super) fn boolean(self) -> &'static str {
        match self {
            Self::Postgres => "boolean",
            Self::Sqlite => "INTEGER",
        }
    }

    fn tags(self) -> &'static str {
        match self {
            Self::Postgres => "text[]",
            Self::Sqlite => "TEXT",
        }
    }

    /// No tags, as a literal of the [`Dialect::tags`] type.
    fn no_tags(self) -> &'static str {
        match self {
            Self::Postgres => "'{}'::text[]",
            Self::Sqlite => "'[]'",
        }
    }

    fn time(self) -> &'static str {
        match self {
            Self::Postgres => "timestamptz",
            Self::Sqlite => "TEXT",
        }
    }

    /// `a` and `b` differ, nulls compared as values.
    fn differ(self, a: &str, b: &str) -> String {
        match self {
            Self::Postgres => format!("{a} IS DISTINCT FROM {b}"),
            Self::Sqlite => format!("{a} IS NOT {b}"),
        }
    }
}

/// What resolving a line records of the resource it names, as that resource was then: its
/// type, keys and deletion, and whether the line changes any of its attributes. The checks and
/// the apply read these instead of joining every line with its resource again.
const RESOLVED_COLUMNS: &str = "was_type, was_identifier, was_external_id, was_deleted, differs";

/// `CREATE TABLE` for the staging table of a resource operation. A line that cannot apply is
/// marked `rejected`, not removed: the resource it names is then neither written nor deleted.
/// SQLite's [`Resolved`] copy is created by it too.
pub fn create_staging(d: Dialect, name: &dyn std::fmt::Display) -> String {
    let (uuid, boolean, tags, time) = (d.uuid(), d.boolean(), d.tags(), d.time());
    format!(
        "CREATE TABLE {name} (chunk integer NOT NULL, line integer NOT NULL, \
         new_id {uuid} NOT NULL, resource_id {uuid}, external_id text, identifier text, \
         type smallint NOT NULL, subtype smallint, displayname text, description text, \
         notes text, tags {tags}, active {boolean} NOT NULL, expires_at {time}, \
         present smallint NOT NULL, remove {boolean} NOT NULL, \
         rejected {boolean} NOT NULL DEFAULT false, was_type smallint, was_identifier text, \
         was_external_id text, was_deleted {boolean}, differs {boolean})"
    )
}

/// The values of [`RESOLVED_COLUMNS`] for line `s` resolved to resource `r`, in that order.
fn resolved_values(d: Dialect) -> String {
    resolved_outputs(d)
        .into_iter()
        .map(|(value, _)| value)
        .collect::<Vec<_>>()
        .join(", ")
}

/// [`RESOLVED_COLUMNS`], each with its value for line `s` resolved to resource `r`.
fn resolved_outputs(d: Dialect) -> Vec<(String, &'static str)> {
    vec![
        ("r.type".to_owned(), "was_type"),
        ("r.identifier".to_owned(), "was_identifier"),
        ("r.external_id".to_owned(), "was_external_id"),
        ("r.deleted".to_owned(), "was_deleted"),
        (differs(d), "differs"),
    ]
}

/// Whether line `s` changes any attribute of resource `r`.
fn differs(d: Dialect) -> String {
    let differs: Vec<String> = ATTRIBUTES
        .iter()
        .map(|(name, bit, _)| d.differ(&new_value(name, *bit), &format!("r.{name}")))
        .collect();
    format!("({})", differs.join(" OR "))
}

/// The live resources of the scope, as `r`.
const IN_SCOPE: &str = "r.source_system = $1 AND NOT r.deleted \
     AND ($6 IS NULL OR r.type = $6) AND ($7 IS NULL OR r.subtype = $7)";

/// The table a resource operation's staging table is copied into as its lines are resolved.
pub struct Resolved<'a>(pub &'a Staging);

impl std::fmt::Display for Resolved<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_resolved", self.0)
    }
}

/// The name the uploaded lines are kept under while the [`Resolved`] copy stands in for them.
struct Uploaded<'a>(&'a Staging);

impl std::fmt::Display for Uploaded<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_uploaded", self.0)
    }
}

/// A table that lives only inside the transaction that makes it (dropped before it commits, or
/// rolled back with it), filled by one select that binds [`Values`]. PostgreSQL makes it an
/// unlogged table (writing a million lines to the write-ahead log again would buy nothing)
/// created from the select (`CREATE TABLE … AS`, whose select may run in parallel workers,
/// which an `INSERT … SELECT`'s may not); SQLite creates it, then inserts the select's rows.
pub struct Filled {
    /// Creates the table empty, binding nothing (SQLite).
    pub create: Option<String>,
    /// Fills the table (PostgreSQL: creates it, filled).
    pub fill: String,
}

impl Filled {
    /// Table `name` of the rows of `select`, whose outputs are named `columns`; `create` makes
    /// it empty on SQLite.
    fn new(
        d: Dialect,
        name: &dyn std::fmt::Display,
        create: String,
        columns: &str,
        select: &str,
    ) -> Self {
        match d {
            Dialect::Postgres => Self {
                create: None,
                fill: format!("CREATE UNLOGGED TABLE {name} AS {select}"),
            },
            Dialect::Sqlite => Self {
                create: Some(create),
                fill: format!("INSERT INTO {name} ({columns}) {select}"),
            },
        }
    }
}

/// The columns of [`resolved_copy`] with their values: the staging table's, each line that names
/// no resource yet resolved to the live resource with its external id, and what it records of it.
fn resolved_copy_outputs(d: Dialect) -> Vec<(String, &'static str)> {
    // Every loaded column (so that one added to the loader is copied too), then those resolving
    // writes.
    let mut outputs: Vec<(String, &'static str)> = STAGING_COLUMNS
        .split(", ")
        .map(|column| (format!("s.{column}"), column))
        .collect();
    outputs.push(("s.rejected".to_owned(), "rejected"));
    outputs.push(("coalesce(s.resource_id, r.id)".to_owned(), "resource_id"));
    outputs.extend(resolved_outputs(d));
    outputs
}

/// Copies the staging table into [`Resolved`], each line resolved as [`resolved_copy_outputs`]
/// says. One join that writes each line once: updating every line in place costs PostgreSQL
/// about twice as much (a new version of each row, the old one left behind). The caller then
/// swaps the copy in. The uploaded lines stay in their logged table, as uploaded, whatever
/// befalls the apply.
pub fn resolved_copy(d: Dialect, staging: &Staging) -> Filled {
    let resolved = Resolved(staging);
    let outputs = resolved_copy_outputs(d);
    let select: Vec<String> = outputs
        .iter()
        .map(|(value, column)| format!("{value} AS {column}"))
        .collect();
    let columns: Vec<&str> = outputs.iter().map(|(_, column)| *column).collect();
    let select = format!(
        "SELECT {} FROM {staging} s \
         LEFT JOIN resource r ON s.resource_id IS NULL AND s.external_id IS NOT NULL \
         AND r.source_system = $1 AND r.external_id = s.external_id AND NOT r.deleted",
        select.join(", ")
    );
    let create = create_staging(d, &resolved);
    Filled::new(d, &resolved, create, &columns.join(", "), &select)
}

/// Puts the [`Resolved`] copy in the staging table's place (the statements that follow name
/// the staging table), keeping the uploaded lines aside.
pub fn swap_resolved(staging: &Staging) -> [String; 2] {
    [
        format!("ALTER TABLE {staging} RENAME TO {}", Uploaded(staging)),
        format!("ALTER TABLE {} RENAME TO {staging}", Resolved(staging)),
    ]
}

/// Drops the [`Resolved`] copy and puts the uploaded lines back, before the transaction that
/// resolved them commits: an operation claimed again (after a crash between the apply's commit
/// and its outcome's), approved after a hold, or previewed resolves them afresh from the lines as
/// uploaded, and an unlogged table emptied by a crash never stands for them.
pub fn restore_uploaded(staging: &Staging) -> [String; 2] {
    [
        format!("DROP TABLE {staging}"),
        format!("ALTER TABLE {} RENAME TO {staging}", Uploaded(staging)),
    ]
}

/// Resolves the lines still unresolved to the live resource with their identifier and type
/// (adopting a resource that has no external id yet).
pub fn resolve_by_identifier(d: Dialect, staging: &Staging) -> String {
    format!(
        "UPDATE {staging} AS s SET ({RESOLVED_COLUMNS}, resource_id) = ({}, r.id) \
         FROM resource r \
         WHERE s.resource_id IS NULL AND s.identifier IS NOT NULL \
         AND r.source_system = $1 AND r.identifier = s.identifier AND r.type = s.type \
         AND NOT r.deleted AND (s.external_id IS NULL OR r.external_id IS NULL)",
        resolved_values(d)
    )
}

/// Whether the source system has deleted resources (that a line might restore).
pub fn has_deleted() -> String {
    "SELECT EXISTS (SELECT 1 FROM resource WHERE source_system = $1 AND deleted)".to_owned()
}

/// Resolves the lines still unresolved to the most recently deleted resource they name.
pub fn resolve_deleted(staging: &Staging) -> [String; 2] {
    let newest = "ORDER BY r.deleted_at DESC LIMIT 1";
    [
        format!(
            "UPDATE {staging} SET resource_id = (SELECT r.id FROM resource r \
             WHERE r.source_system = $1 AND r.deleted \
             AND r.external_id = {staging}.external_id {newest}) \
             WHERE resource_id IS NULL AND external_id IS NOT NULL"
        ),
        format!(
            "UPDATE {staging} SET resource_id = (SELECT r.id FROM resource r \
             WHERE r.source_system = $1 AND r.deleted \
             AND r.identifier = {staging}.identifier AND r.type = {staging}.type {newest}) \
             WHERE resource_id IS NULL AND external_id IS NULL"
        ),
    ]
}

/// Records what the lines resolved by other means than the copy's join (to a deleted resource,
/// or by a staging table uploaded before resolving recorded it) resolved to.
pub fn record_resolved(d: Dialect, staging: &Staging) -> String {
    format!(
        "UPDATE {staging} AS s SET ({RESOLVED_COLUMNS}) = ({}) FROM resource r \
         WHERE r.id = s.resource_id AND s.was_type IS NULL",
        resolved_values(d)
    )
}

/// Indexes the [`Resolved`] copy (swapped in) by resource; the index goes with the copy.
pub fn index_staging(staging: &Staging) -> String {
    format!(
        "CREATE INDEX IF NOT EXISTS {}_resource ON {staging} (resource_id)",
        Resolved(staging)
    )
}

fn reject(select: &str) -> String {
    format!(
        "INSERT INTO operation_rejection (operation_id, chunk, line, reason) \
         SELECT $2, chunk, line, reason FROM ({select}) checked WHERE reason IS NOT NULL \
         ON CONFLICT DO NOTHING"
    )
}

/// Whether the source system has live resources (that a line's keys could collide with).
pub fn has_live() -> String {
    "SELECT EXISTS (SELECT 1 FROM resource WHERE source_system = $1 AND NOT deleted)".to_owned()
}

/// A key no two lines of an upload may share: which lines it binds (a condition on the staging
/// table as `s`), the key, and on PostgreSQL a 64-bit hash of it, never null (equal keys have
/// equal hashes).
struct Repeat {
    lines: String,
    key: String,
    hash: String,
}

/// Whether a line gives its resource a value of `column` it does not have yet (new lines,
/// restores, renames, adoptions): unchanged keys are unique already.
fn changes(column: &str) -> String {
    format!(
        "(s.resource_id IS NULL OR s.was_deleted OR coalesce(s.{column}, s.was_{column}) \
         IS DISTINCT FROM s.was_{column})"
    )
}

/// The keys lines may not share, in the order they are checked: the resource a line names (its
/// id, else its external id, else its identifier and type), then an external_id, then an
/// identifier of one type given to different resources.
fn repeats() -> [Repeat; 3] {
    let shared = |column: &str, same_type: &str, seed: &str| {
        let value = format!("coalesce(s.{column}, s.was_{column})");
        Repeat {
            lines: format!(
                "NOT s.remove AND NOT s.rejected AND {value} IS NOT NULL AND {}",
                changes(column)
            ),
            hash: format!("coalesce(hashtextextended({value}, {seed}), 0)"),
            key: format!("{value}{same_type}"),
        }
    };
    [
        Repeat {
            lines: "NOT s.rejected".to_owned(),
            key: "s.resource_id, CASE WHEN s.resource_id IS NULL THEN s.external_id END, \
                  CASE WHEN s.resource_id IS NULL AND s.external_id IS NULL THEN s.identifier \
                  END, CASE WHEN s.resource_id IS NULL AND s.external_id IS NULL THEN s.type END"
                .to_owned(),
            hash: "coalesce(CASE WHEN s.resource_id IS NOT NULL \
                   THEN uuid_hash_extended(s.resource_id, 0) \
                   WHEN s.external_id IS NOT NULL THEN hashtextextended(s.external_id, 1) \
                   ELSE hashtextextended(s.identifier, 2 + s.type) END, 0)"
                .to_owned(),
        },
        shared("external_id", "", "0"),
        shared("identifier", ", s.type", "s.type"),
    ]
}

/// Which of the [`repeats`] two lines may share, as three booleans. No line shares one in
/// nearly every upload, so the checks that find which lines do, a window over every line each,
/// run only when this says they may. On PostgreSQL one pass counts the distinct hashes of each
/// key (sorting a million integers is some three times faster than hashing a million keys);
/// two keys that share a hash only make their check run. SQLite groups by each key.
pub fn repeated(d: Dialect, staging: &Staging) -> String {
    let repeats = repeats();
    match d {
        Dialect::Postgres => {
            let counts: Vec<String> = repeats
                .iter()
                .map(|r| {
                    format!(
                        "count(*) FILTER (WHERE {lines}) > count(DISTINCT {}) \
                         FILTER (WHERE {lines})",
                        r.hash,
                        lines = r.lines
                    )
                })
                .collect();
            format!("SELECT {} FROM {staging} s", counts.join(", "))
        }
        Dialect::Sqlite => {
            let exists: Vec<String> = repeats
                .iter()
                .map(|r| {
                    format!(
                        "EXISTS (SELECT 1 FROM {staging} s WHERE {} GROUP BY {} \
                         HAVING count(*) > 1)",
                        r.lines, r.key
                    )
                })
                .collect();
            format!("SELECT {}", exists.join(", "))
        }
    }
}

/// The checks that need stored data, in order; the lines each one rejects are marked before the
/// next runs. `partial`: the lines of a partial-update; `live`: the source has live resources;
/// `repeated`: which keys lines may share, as [`repeated`] found.
pub fn checks(staging: &Staging, partial: bool, live: bool, repeated: [bool; 3]) -> Vec<String> {
    // Whether the live resource `h` stays after this operation.
    let stays = if partial {
        format!("NOT EXISTS (SELECT 1 FROM {staging} o WHERE o.resource_id = h.id AND o.remove)")
    } else {
        format!(
            "(h.modified > $5 OR NOT (($6 IS NULL OR h.type = $6) \
             AND ($7 IS NULL OR h.subtype = $7)) \
             OR EXISTS (SELECT 1 FROM {staging} o WHERE o.resource_id = h.id))"
        )
    };
    let held = |column: &str, same_type: &str| {
        reject(&format!(
            "SELECT s.chunk, s.line, CASE WHEN EXISTS (SELECT 1 FROM resource h \
             WHERE h.source_system = $1 AND h.{column} = coalesce(s.{column}, s.was_{column})\
             {same_type} AND NOT h.deleted AND (s.resource_id IS NULL OR h.id <> s.resource_id) \
             AND {stays}) THEN 'another live resource of the source system has this {column} \
             and keeps it' END AS reason FROM {staging} s WHERE NOT s.remove AND NOT s.rejected \
             AND {}",
            changes(column)
        ))
    };
    let [named, external_id, identifier] = repeats();
    let mut checks = vec![reject(&format!(
        "SELECT chunk, line, CASE WHEN was_type <> type THEN 'the resource with this \
         external_id is a ' || coalesce({}, 'resource') || ', not of the line''s type' END \
         AS reason FROM {staging} WHERE resource_id IS NOT NULL",
        typename("was_type")
    ))];
    if repeated[0] {
        checks.push(reject(&format!(
            "SELECT chunk, line, CASE WHEN n > 1 THEN 'a later line of the upload names the same \
             resource' END AS reason FROM (SELECT s.chunk, s.line, row_number() OVER (PARTITION \
             BY {} ORDER BY s.chunk DESC, s.line DESC) AS n FROM {staging} s WHERE {}) d",
            named.key, named.lines
        )));
    }
    for (repeat, what, on) in [
        (external_id, "external_id", repeated[1]),
        (identifier, "identifier", repeated[2]),
    ] {
        if on {
            checks.push(reject(&format!(
                "SELECT chunk, line, CASE WHEN n > 1 THEN 'several lines of the upload give \
                 this {what} to different resources' END AS reason FROM (SELECT s.chunk, \
                 s.line, count(*) OVER (PARTITION BY {}) AS n FROM {staging} s WHERE {}) d",
                repeat.key, repeat.lines
            )));
        }
    }
    if live {
        checks.push(held("identifier", " AND h.type = s.type"));
        checks.push(held("external_id", ""));
    }
    checks
}

/// Marks the rejected lines of the staging table.
pub fn mark_rejected(staging: &Staging) -> String {
    format!(
        "UPDATE {staging} SET rejected = true WHERE NOT rejected AND EXISTS (SELECT 1 \
         FROM operation_rejection j WHERE j.operation_id = $2 AND j.chunk = {staging}.chunk \
         AND j.line = {staging}.line)"
    )
}

/// Which live resources an operation deletes, as `r`: for a full-update, those of its scope
/// that the snapshot leaves out and nothing newer wrote; for a partial-update, those its delete
/// lines name.
fn deleted(staging: &Staging, partial: bool) -> String {
    if partial {
        format!(
            "NOT r.deleted AND r.id IN (SELECT resource_id FROM {staging} \
             WHERE remove AND NOT rejected AND resource_id IS NOT NULL)"
        )
    } else {
        format!(
            "{IN_SCOPE} AND r.modified <= $5 \
             AND NOT EXISTS (SELECT 1 FROM {staging} s WHERE s.resource_id = r.id)"
        )
    }
}

/// The resources a full-update deletes, found once by its apply (the threshold counts them, the
/// delete writes them) in the transaction that resolved its lines, which drops the table before
/// it ends.
struct Doomed<'a>(&'a Staging);

impl std::fmt::Display for Doomed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_doomed", self.0)
    }
}

/// [`Doomed`], filled with the resources the full-update deletes: one anti-join of the scope's
/// resources with the lines.
pub fn doomed(d: Dialect, staging: &Staging) -> Filled {
    let doomed = Doomed(staging);
    let create = format!("CREATE TABLE {doomed} (id {} NOT NULL)", d.uuid());
    let select = format!(
        "SELECT r.id FROM resource r WHERE {}",
        deleted(staging, false)
    );
    Filled::new(d, &doomed, create, "id", &select)
}

/// Drops [`Doomed`].
pub fn drop_doomed(staging: &Staging) -> String {
    format!("DROP TABLE {}", Doomed(staging))
}

/// How many resources a full-update would delete (for a preview; the apply counts [`Doomed`]).
pub fn count_removals(staging: &Staging) -> String {
    format!(
        "SELECT count(*) FROM resource r WHERE {}",
        deleted(staging, false)
    )
}

/// Live resources of the scope, snapshot lines, and resources the full-update deletes (in
/// [`Doomed`]).
pub fn threshold_counts(staging: &Staging) -> String {
    format!(
        "SELECT (SELECT count(*) FROM resource r WHERE {IN_SCOPE}), \
         (SELECT count(*) FROM {staging} WHERE NOT remove AND NOT rejected), \
         (SELECT count(*) FROM {})",
        Doomed(staging)
    )
}

const RESOURCE_CHANGE: &str =
    "INSERT INTO change (at, kind, resource_id, source_system, operation_id, token_name";

/// The memberships (as member or as group) of the resources matching `which` (over `r`).
fn memberships_of(which: &str) -> String {
    format!(
        "SELECT m.id FROM group_member m JOIN resource r ON m.member_id = r.id WHERE {which} \
         UNION SELECT m.id FROM group_member m JOIN resource r ON m.group_id = r.id WHERE {which}"
    )
}

/// Soft-deletes resources and ends their memberships, with the change records. Like every apply
/// step, its last statement's row count is the number of resources it wrote.
///
/// A full-update deletes the resources in [`Doomed`] ([`doomed`] must have filled it), checked
/// again as they are written (the source's lock keeps other operations out, not a PATCH or
/// SCIM's writes).
pub fn delete(d: Dialect, staging: &Staging, partial: bool) -> Vec<String> {
    let which = if partial {
        deleted(staging, true)
    } else {
        format!(
            "{IN_SCOPE} AND r.modified <= $5 AND r.id IN (SELECT id FROM {})",
            Doomed(staging)
        )
    };
    let removed = ChangeKind::MembershipRemoved.code();
    let gone = ChangeKind::ResourceDeleted.code();
    let membership_change = "INSERT INTO change (at, kind, group_id, member_id, source_system, \
         operation_id, token_name)";
    match d {
        Dialect::Postgres => vec![format!(
            "WITH gone AS (UPDATE resource r SET deleted = true, deleted_at = $3, modified = $3 \
             WHERE {which} RETURNING r.id, r.source_system), \
             ended AS (UPDATE group_member gm SET removed = true, removed_timestamp = $3, \
             last_operation_id = $2 WHERE NOT gm.removed AND gm.id IN ( \
               SELECT m.id FROM group_member m JOIN gone ON m.member_id = gone.id \
               UNION SELECT m.id FROM group_member m JOIN gone ON m.group_id = gone.id) \
             RETURNING gm.group_id, gm.member_id, gm.source), \
             logged AS ({membership_change} SELECT $3, {removed}, group_id, member_id, source, \
             $2, $4 FROM ended) \
             {RESOURCE_CHANGE}) SELECT $3, {gone}, id, source_system, $2, $4 FROM gone"
        )],
        Dialect::Sqlite => {
            let ended = format!("NOT gm.removed AND gm.id IN ({})", memberships_of(&which));
            vec![
                format!(
                    "{membership_change} SELECT $3, {removed}, gm.group_id, gm.member_id, \
                     gm.source, $2, $4 FROM group_member gm WHERE {ended}"
                ),
                format!(
                    "UPDATE group_member AS gm SET removed = true, removed_timestamp = $3, \
                     last_operation_id = $2 WHERE {ended}"
                ),
                format!(
                    "{RESOURCE_CHANGE}) SELECT $3, {gone}, r.id, r.source_system, $2, $4 \
                     FROM resource r WHERE {which}"
                ),
                format!(
                    "UPDATE resource AS r SET deleted = true, deleted_at = $3, modified = $3 \
                     WHERE {which}"
                ),
            ]
        }
    }
}

/// How an attribute is shown in a change record's `attrs`.
#[derive(Clone, Copy)]
enum Json {
    Text,
    Tags,
    Boolean,
    Subtype,
}

/// The attributes a line can change: name, presence bit (0: set whenever the line gives it), and
/// how it reads in `attrs`.
const ATTRIBUTES: [(&str, i16, Json); 9] = [
    ("identifier", 0, Json::Text),
    ("external_id", 0, Json::Text),
    ("subtype", present::SUBTYPE, Json::Subtype),
    ("displayname", present::DISPLAYNAME, Json::Text),
    ("description", present::DESCRIPTION, Json::Text),
    ("notes", present::NOTES, Json::Text),
    ("tags", present::TAGS, Json::Tags),
    ("active", present::ACTIVE, Json::Boolean),
    ("expires_at", present::EXPIRES_AT, Json::Text),
];

/// The value attribute `name` takes from line `s` over resource `r`. An account roster
/// deactivated (its `deactivation_reason` is set) stays inactive whatever its source reports,
/// until a person activates it.
fn new_value(name: &str, bit: i16) -> String {
    if name == "active" {
        format!(
            "CASE WHEN r.deactivation_reason IS NOT NULL THEN r.active \
             WHEN (s.present & {bit}) <> 0 THEN s.active ELSE r.active END"
        )
    } else if bit == 0 {
        format!("coalesce(s.{name}, r.{name})")
    } else {
        format!("CASE WHEN (s.present & {bit}) <> 0 THEN s.{name} ELSE r.{name} END")
    }
}

fn subtype_name(expr: &str) -> String {
    let arms: String = Subtype::ALL
        .iter()
        .map(|s| format!(" WHEN {} THEN '{}'", s.code(), s.name()))
        .collect();
    format!("CASE {expr}{arms} END")
}

pub fn typename(expr: &str) -> String {
    let arms: String = ResourceType::ALL
        .iter()
        .map(|t| format!(" WHEN {} THEN '{}'", t.code(), t.name()))
        .collect();
    format!("CASE {expr}{arms} END")
}

/// `{"attribute": {"old": …, "new": …}}` for the attributes whose `old(name)` and `new(name)`
/// expressions differ.
fn attrs(d: Dialect, old: impl Fn(&str) -> String, new: impl Fn(&str) -> String) -> String {
    let json = |kind: Json, expr: String| match (d, kind) {
        (_, Json::Subtype) => subtype_name(&expr),
        (Dialect::Sqlite, Json::Tags) => format!("json({expr})"),
        (Dialect::Sqlite, Json::Boolean) => {
            format!("CASE {expr} WHEN 1 THEN json('true') WHEN 0 THEN json('false') END")
        }
        _ => expr,
    };
    match d {
        Dialect::Postgres => {
            let parts: Vec<String> = ATTRIBUTES
                .iter()
                .map(|(name, _, kind)| {
                    format!(
                        "CASE WHEN {} THEN jsonb_build_object('{name}', jsonb_build_object('old', \
                         {}, 'new', {})) ELSE '{{}}'::jsonb END",
                        d.differ(&old(name), &new(name)),
                        json(*kind, old(name)),
                        json(*kind, new(name))
                    )
                })
                .collect();
            format!("({})", parts.join(" || "))
        }
        Dialect::Sqlite => {
            let mut out = "'{}'".to_owned();
            for (name, _, kind) in ATTRIBUTES {
                out = format!(
                    "json_set({out}, CASE WHEN {} THEN '$.{name}' ELSE '$._' END, \
                     json_object('old', {}, 'new', {}))",
                    d.differ(&old(name), &new(name)),
                    json(kind, old(name)),
                    json(kind, new(name))
                );
            }
            format!("json_remove({out}, '$._')")
        }
    }
}

fn assignments() -> String {
    ATTRIBUTES
        .iter()
        .map(|(name, bit, _)| format!("{name} = {}", new_value(name, *bit)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Restores the deleted resources that lines name (unless deleted after the operation began),
/// with the lines' attributes; the change record carries the attributes that changed.
pub fn restore(d: Dialect, staging: &Staging) -> Vec<String> {
    let which = "s.was_deleted AND s.resource_id = r.id AND NOT s.remove AND NOT s.rejected \
                 AND r.deleted AND r.deleted_at <= $5";
    rewrite(
        d,
        staging,
        which,
        "deleted = false, deleted_at = NULL, ",
        ChangeKind::ResourceRestored,
    )
}

/// Writes the lines' attributes (after `extra`, assignments ending in a comma) to the resources
/// `which` (over `s` and `r`) selects, with one change record of `kind` each carrying the old
/// and new values of what changed.
fn rewrite(
    d: Dialect,
    staging: &Staging,
    which: &str,
    extra: &str,
    kind: ChangeKind,
) -> Vec<String> {
    let set = format!("{extra}modified = $3, {}", assignments());
    // An update that flips `active` is recorded as a deactivation or an activation.
    let kind_of = |old: &str, new: &str| match kind {
        ChangeKind::ResourceUpdated => format!(
            "CASE WHEN {old} = {new} THEN {} WHEN {new} THEN {} ELSE {} END",
            kind.code(),
            ChangeKind::ResourceActivated.code(),
            ChangeKind::ResourceDeactivated.code()
        ),
        _ => kind.code().to_string(),
    };
    match d {
        Dialect::Postgres => {
            // The rows to write, with their old and new values, found in one join; the UPDATE
            // then touches only them.
            let columns: Vec<String> = ATTRIBUTES
                .iter()
                .map(|(name, bit, _)| {
                    format!(
                        "r.{name} AS old_{name}, {} AS new_{name}",
                        new_value(name, *bit)
                    )
                })
                .collect();
            let set: Vec<String> = ATTRIBUTES
                .iter()
                .map(|(name, _, _)| format!("{name} = c.new_{name}"))
                .collect();
            let changed = attrs(d, |n| format!("c.old_{n}"), |n| format!("c.new_{n}"));
            vec![format!(
                "WITH c AS MATERIALIZED (SELECT r.id, {} FROM {staging} s \
                 JOIN resource r ON s.resource_id = r.id WHERE {which}), \
                 upd AS (UPDATE resource r SET {extra}modified = $3, {} FROM c WHERE r.id = c.id \
                 RETURNING r.id, r.source_system, {changed} AS attrs, c.old_active, c.new_active) \
                 {RESOURCE_CHANGE}, attrs) SELECT $3, {}, id, source_system, $2, $4, \
                 attrs FROM upd",
                columns.join(", "),
                set.join(", "),
                kind_of("old_active", "new_active")
            )]
        }
        Dialect::Sqlite => {
            let changed = attrs(
                d,
                |n| format!("r.{n}"),
                |n| {
                    let bit = ATTRIBUTES
                        .iter()
                        .find(|(name, _, _)| *name == n)
                        .map_or(0, |(_, bit, _)| *bit);
                    new_value(n, bit)
                },
            );
            let kind = kind_of("r.active", &new_value("active", present::ACTIVE));
            vec![
                format!(
                    "{RESOURCE_CHANGE}, attrs) SELECT $3, {kind}, r.id, r.source_system, $2, \
                     $4, {changed} FROM resource r JOIN {staging} s ON {which}"
                ),
                format!("UPDATE resource AS r SET {set} FROM {staging} AS s WHERE {which}"),
            ]
        }
    }
}

/// Updates the live resources whose attributes a line changes (unless written after the
/// operation began), recording old and new values. Only the lines that changed their resource
/// when resolved are joined with it. A resource written since then (by a writer that does not
/// hold the source's lock: a PATCH, SCIM, a lifecycle action) carries a `modified` later than
/// the operation's creation, which the fence already leaves alone, unless the writer's clock ran
/// behind (see "Written after" in docs/operations.md).
pub fn update(d: Dialect, staging: &Staging) -> Vec<String> {
    let which = format!(
        "s.differs AND s.resource_id = r.id AND NOT s.remove AND NOT s.rejected \
         AND NOT r.deleted AND r.modified <= $5 AND {}",
        differs(d)
    );
    rewrite(d, staging, &which, "", ChangeKind::ResourceUpdated)
}

/// Creates the resources of the lines that name none.
pub fn insert(d: Dialect, staging: &Staging) -> Vec<String> {
    let which = "s.resource_id IS NULL AND NOT s.remove AND NOT s.rejected";
    let kind = ChangeKind::ResourceCreated.code();
    let write = format!(
        "INSERT INTO resource (id, type, typename, subtype, source_system, identifier, \
         external_id, displayname, description, notes, tags, active, expires_at, deleted, \
         created, modified) \
         SELECT s.new_id, s.type, {}, s.subtype, $1, s.identifier, s.external_id, \
         s.displayname, s.description, s.notes, coalesce(s.tags, {}), s.active, s.expires_at, \
         false, $3, $3 FROM {staging} s WHERE {which}",
        typename("s.type"),
        d.no_tags()
    );
    match d {
        Dialect::Postgres => vec![format!(
            "WITH ins AS ({write} RETURNING id) \
             {RESOURCE_CHANGE}) SELECT $3, {kind}, id, $1, $2, $4 FROM ins"
        )],
        Dialect::Sqlite => vec![
            format!(
                "{RESOURCE_CHANGE}) SELECT $3, {kind}, s.new_id, $1, $2, $4 \
                 FROM {staging} s WHERE {which}"
            ),
            write,
        ],
    }
}

/// A page of what a full-update of resources would delete, in id order.
pub fn preview_removals(staging: &Staging) -> String {
    format!(
        "SELECT r.id, r.identifier, r.external_id FROM resource r WHERE {} AND r.id > $8 \
         ORDER BY r.id LIMIT $11",
        deleted(staging, false)
    )
}

/// A page of the lines that would create or restore a resource, in (chunk, line) order.
pub fn preview_additions(staging: &Staging) -> String {
    format!(
        "SELECT s.chunk, s.line, s.resource_id, s.identifier, s.external_id FROM {staging} s \
         LEFT JOIN resource r ON r.id = s.resource_id WHERE NOT s.remove AND NOT s.rejected \
         AND (s.resource_id IS NULL OR (r.deleted AND r.deleted_at <= $5)) \
         AND (s.chunk > $9 OR (s.chunk = $9 AND s.line > $10)) \
         ORDER BY s.chunk, s.line LIMIT $11"
    )
}

/// How many resources a full-update would create or restore.
pub fn count_additions(staging: &Staging) -> String {
    format!(
        "SELECT count(*) FROM {staging} s LEFT JOIN resource r ON r.id = s.resource_id \
         WHERE NOT s.remove AND NOT s.rejected AND (s.resource_id IS NULL OR (r.deleted AND r.deleted_at <= $5))"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OperationId;

    /// Resolving copies every column of the staging table: none is left behind as the copy is
    /// swapped in.
    #[test]
    fn the_resolved_copy_has_every_staging_column() {
        let staging = Staging(OperationId(7));
        let created = create_staging(Dialect::Postgres, &staging);
        let definitions = created
            .split_once('(')
            .and_then(|(_, rest)| rest.strip_suffix(')'))
            .expect("a column list");
        let mut columns: Vec<&str> = definitions
            .split(", ")
            .filter_map(|definition| definition.split_whitespace().next())
            .collect();
        columns.sort_unstable();
        for d in [Dialect::Postgres, Dialect::Sqlite] {
            let mut copied: Vec<&str> = resolved_copy_outputs(d)
                .into_iter()
                .map(|(_, column)| column)
                .collect();
            copied.sort_unstable();
            assert_eq!(columns, copied);
        }
    }

    /// What resolving records is named as [`RESOLVED_COLUMNS`] lists it, in its order.
    #[test]
    fn resolving_records_the_resolved_columns() {
        for d in [Dialect::Postgres, Dialect::Sqlite] {
            let names: Vec<&str> = resolved_outputs(d).into_iter().map(|(_, c)| c).collect();
            assert_eq!(names.join(", "), RESOLVED_COLUMNS);
        }
    }

    /// PostgreSQL creates the filled tables from their select, SQLite creates them and then
    /// inserts into them.
    #[test]
    fn filled_tables_are_created_from_their_select_on_postgres_only() {
        let staging = Staging(OperationId(7));
        for filled in [
            resolved_copy(Dialect::Postgres, &staging),
            doomed(Dialect::Postgres, &staging),
        ] {
            assert!(filled.create.is_none());
            assert!(filled.fill.starts_with("CREATE UNLOGGED TABLE staging_7_"));
        }
        for filled in [
            resolved_copy(Dialect::Sqlite, &staging),
            doomed(Dialect::Sqlite, &staging),
        ] {
            let create = filled.create.expect("a CREATE TABLE");
            assert!(create.starts_with("CREATE TABLE staging_7_"));
            assert!(filled.fill.starts_with("INSERT INTO staging_7_"));
        }
    }

    /// Every resource statement names only positions that [`Values`] binds.
    #[test]
    fn statements_stay_within_the_values_positions() {
        let staging = Staging(OperationId(7));
        let bound = Values::about(Uuid::nil(), None, Utc::now(), None)
            .sql("")
            .args_len();
        let mut statements = vec![
            has_deleted(),
            index_staging(&staging),
            has_live(),
            mark_rejected(&staging),
            threshold_counts(&staging),
            count_removals(&staging),
            drop_doomed(&staging),
            preview_removals(&staging),
            preview_additions(&staging),
            count_additions(&staging),
        ];
        statements.extend(swap_resolved(&staging));
        statements.extend(restore_uploaded(&staging));
        statements.extend(resolve_deleted(&staging));
        for partial in [true, false] {
            for live in [true, false] {
                statements.extend(checks(&staging, partial, live, [true; 3]));
            }
        }
        for d in [Dialect::Postgres, Dialect::Sqlite] {
            statements.push(create_staging(d, &staging));
            statements.push(repeated(d, &staging));
            for filled in [resolved_copy(d, &staging), doomed(d, &staging)] {
                statements.extend(filled.create);
                statements.push(filled.fill);
            }
            statements.push(resolve_by_identifier(d, &staging));
            statements.push(record_resolved(d, &staging));
            statements.extend(restore(d, &staging));
            statements.extend(update(d, &staging));
            statements.extend(insert(d, &staging));
            for partial in [true, false] {
                statements.extend(delete(d, &staging, partial));
            }
        }
        for text in statements {
            let highest = Sql::highest_placeholder(&text);
            assert!(highest <= bound, "${highest} in {text}");
        }
    }
}
